"""Where models and tensors run: :func:`resolve_device` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``,
``"auto"``) and :func:`model_on` (a model on a device, the caller's object left where it was)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["DEVICE_CHOICES", "model_on", "resolve_device"]

DEVICE_CHOICES = ("cpu", "cuda", "cuda:<i>", "mps", "auto")
"""What ``device=`` accepts."""


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """The torch device named by ``spec``; ``None`` means ``"cpu"``; ``"auto"`` picks cuda, then mps, then cpu.

    :param spec: see :data:`DEVICE_CHOICES`.
    :raises ValueError: an unknown name, or a device this machine does not have (the message says which).
    """
    if spec is None:
        return torch.device("cpu")
    if isinstance(spec, torch.device):
        device = spec
    elif not isinstance(spec, str):
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {spec!r}")
    elif spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    else:
        try:
            device = torch.device(spec)
        except RuntimeError:
            raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {spec!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.index is not None and device.index >= count or count == 0:
            raise ValueError(f"device {spec!r}: this machine has {count} CUDA device(s)")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {spec!r}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {spec!r}")
    return device


def model_on(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` itself when its parameters are already on ``device``, else a deep copy moved there
    (a shared victim's model is never moved under its other users)."""
    current = next(model.parameters()).device
    if current == device or (device.type == current.type and device.index is None):
        return model
    return copy.deepcopy(model).to(device)
