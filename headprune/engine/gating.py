"""The one head-gating engine of headprune.

transformers 5.x removed ``head_mask`` and ``prune_heads`` (a ``head_mask=`` keyword is silently
ignored), so headprune gates heads itself. Every self-attention block of a transformer ends in an
*output projection* whose input is the concatenation of the heads' outputs::

    x: [batch, seq, num_heads * head_dim]  ->  out_proj(x): [batch, seq, hidden]

A forward pre-hook on that projection multiplies head ``h``'s slice ``x[..., h*d:(h+1)*d]`` by a gate
value ``g[layer, h]``. A gate of 0 removes the head exactly as if the matching input columns of the
projection were zero; a gate of 1 leaves the computation bit-identical; any float in between scales
the head, and a gate tensor with ``requires_grad`` gives the gradient importance of Michel et al.
(2019), ``|dL/dg|``.

Supported blocks (found by structure, not by class name, so relatives such as XLM-R, CamemBERT or
Qwen2 work too) are those of the adapters in :mod:`headprune.architectures`, which also define
:class:`AttentionSite`, :func:`find_attention_sites` and :class:`UnsupportedArchitectureError`
(re-exported here).

Masks are ``[num_layers, num_heads]`` (one mask for the whole batch) or
``[batch, num_layers, num_heads]`` (one mask per example, so many candidate masks are scored in one
forward). ``1`` means the head is active, ``0`` pruned.

Example::

    with HeadGate(model, mask):          # hooks live only inside the block
        logits = model(**batch).logits
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from headprune.architectures import AttentionSite, UnsupportedArchitectureError, find_attention_sites

__all__ = [
    "AttentionSite",
    "HeadGate",
    "UnsupportedArchitectureError",
    "find_attention_sites",
    "head_grid_shape",
    "mask_from_pruned",
    "pruned_from_mask",
]


def head_grid_shape(model_or_sites: nn.Module | Sequence[AttentionSite]) -> tuple[int, int]:
    """``(num_layers, num_heads)`` of a model whose layers all have the same number of heads."""
    sites = find_attention_sites(model_or_sites) if isinstance(model_or_sites, nn.Module) else list(model_or_sites)
    heads = {s.num_heads for s in sites}
    if len(heads) != 1:
        raise UnsupportedArchitectureError(
            f"layers have different numbers of heads ({sorted(heads)}); head masks need a uniform grid "
            "(was the model already compacted?)"
        )
    return len(sites), heads.pop()


def mask_from_pruned(pruned: Mapping[int, Sequence[int]], shape: tuple[int, int]) -> torch.Tensor:
    """Mask ``[layers, heads]`` of ones with zeros at ``pruned[layer] = [head, ...]``."""
    mask = torch.ones(shape)
    for layer, heads in pruned.items():
        for head in heads:
            if not (0 <= int(layer) < shape[0] and 0 <= int(head) < shape[1]):
                raise ValueError(f"head ({layer}, {head}) is outside the grid {shape}")
            mask[int(layer), int(head)] = 0.0
    return mask


def pruned_from_mask(mask: torch.Tensor) -> dict[int, list[int]]:
    """``{layer: [heads with gate 0]}`` for a ``[layers, heads]`` mask (layers with none pruned omitted)."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be [layers, heads], got shape {tuple(mask.shape)}")
    out: dict[int, list[int]] = {}
    for layer, head in (mask == 0).nonzero().tolist():
        out.setdefault(layer, []).append(head)
    return out


class HeadGate:
    """Gate attention heads of a model through forward pre-hooks on the output projections.

    The hooks are installed by :meth:`attach` (or on entering the ``with`` block) and removed by
    :meth:`detach` (or on leaving it); the model's parameters are never touched, so after
    :meth:`detach` the model is exactly as it was.

    Args:
        model: any module :func:`find_attention_sites` understands.
        mask: optional initial mask, ``[layers, heads]`` or ``[batch, layers, heads]``.

    Shapes:
        ``mask``: ``[L, H]`` applies to every example; ``[B, L, H]`` applies row ``b`` to example ``b``
        of the batch (the hook raises if the batch size differs). A tensor that requires grad is used
        as is, so gradients reach it (see :meth:`differentiable_gates`).
    """

    def __init__(self, model: nn.Module, mask: torch.Tensor | None = None) -> None:
        self.model = model
        self.sites = find_attention_sites(model)
        self.num_layers, self.num_heads = head_grid_shape(self.sites)
        self._mask: torch.Tensor | None = None
        self._active_layers: list[bool] = [False] * self.num_layers
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.set_mask(mask)

    # ----------------------------------------------------------------------------------- masks
    @property
    def shape(self) -> tuple[int, int]:
        """``(num_layers, num_heads)``."""
        return self.num_layers, self.num_heads

    @property
    def mask(self) -> torch.Tensor | None:
        """The mask in use (``None``: no gating)."""
        return self._mask

    def set_mask(self, mask: torch.Tensor | Sequence[Any] | None) -> None:
        """Use ``mask`` from the next forward on; ``None`` turns gating off.

        Raises:
            ValueError: if the trailing dimensions are not ``(num_layers, num_heads)``.
        """
        if mask is None:
            self._mask = None
            self._active_layers = [False] * self.num_layers
            return
        tensor = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(mask)
        if tensor.dim() not in (2, 3) or tuple(tensor.shape[-2:]) != self.shape:
            raise ValueError(
                f"mask must have shape [{self.num_layers}, {self.num_heads}] or [batch, {self.num_layers}, "
                f"{self.num_heads}] for {type(self.model).__name__}, got {tuple(tensor.shape)}"
            )
        if not tensor.is_floating_point():
            tensor = tensor.float()
        self._mask = tensor
        if tensor.requires_grad:
            self._active_layers = [True] * self.num_layers
        else:
            per_layer = tensor.reshape(-1, self.num_layers, self.num_heads).ne(1).any(dim=(0, 2))
            self._active_layers = per_layer.tolist()

    def differentiable_gates(self, initial: torch.Tensor | None = None) -> torch.Tensor:
        """Install and return a leaf gate tensor ``[L, H]`` (ones, or ``initial``) that requires grad.

        After ``loss.backward()``, ``gates.grad[l, h]`` is ``dL/dg_{l,h}``: the gradient importance of
        Michel et al. (2019) when taken in absolute value and summed over examples.
        """
        base = torch.ones(self.shape) if initial is None else initial.detach().clone().float()
        device = next(self.model.parameters()).device
        gates = base.to(device).requires_grad_(True)
        self.set_mask(gates)
        return gates

    # ----------------------------------------------------------------------------------- hooks
    def _make_hook(self, site: AttentionSite):
        layer, heads, head_dim = site.layer, site.num_heads, site.head_dim

        def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            mask = self._mask
            if mask is None or not self._active_layers[layer]:
                return None
            x = args[0]  # [batch, seq, heads * head_dim]
            if mask.dim() == 2:
                gate = mask[layer].to(dtype=x.dtype, device=x.device).view(heads, 1)
            else:
                if mask.shape[0] != x.shape[0]:
                    raise ValueError(
                        f"per-example mask has batch {mask.shape[0]} but layer {layer} got a batch of {x.shape[0]}"
                    )
                gate = mask[:, layer].to(dtype=x.dtype, device=x.device)
                gate = gate.view(x.shape[0], *([1] * (x.dim() - 2)), heads, 1)
            gated = (x.unflatten(-1, (heads, head_dim)) * gate).flatten(-2)
            return (gated, *args[1:])

        return hook

    def attach(self) -> HeadGate:
        """Install the hooks (idempotent)."""
        if not self._handles:
            self._handles = [s.out_proj.register_forward_pre_hook(self._make_hook(s)) for s in self.sites]
        return self

    def detach(self) -> None:
        """Remove the hooks; the model is then exactly as before :meth:`attach`."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def attached(self) -> bool:
        """Whether the hooks are installed."""
        return bool(self._handles)

    def __enter__(self) -> HeadGate:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __iter__(self) -> Iterator[AttentionSite]:
        return iter(self.sites)
