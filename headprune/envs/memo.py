"""The one memo of values by head state: keys (:func:`state_key`) and a bounded LRU map (:class:`StateMemo`).

A state is a 0/1 gate mask and, with reset operations, the set of heads reset to the pre-trained
reference and, with the ``mix`` operation, the per-block mixing levels toward it. The mask scorer (accuracy
and proxy), every proxy and the LFR wrapper memoise by it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

import numpy as np
import torch

__all__ = ["StateMemo", "mask_key", "state_key"]

V = TypeVar("V")


def mask_key(mask: torch.Tensor | np.ndarray) -> bytes:
    """Memo key of a 0/1 mask of any shape: the bytes of its flattened boolean form."""
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return np.ascontiguousarray(arr.reshape(-1) != 0).tobytes()


def state_key(mask: torch.Tensor | np.ndarray, reset: torch.Tensor | np.ndarray | None = None,
              mix: torch.Tensor | np.ndarray | None = None) -> bytes:
    """Memo key of a state (a gate mask, the set of reset heads and the per-block mixing levels of
    :mod:`headprune.envs.mixing`): :func:`mask_key` of the mask when no head is reset and no block mixed (so
    prune-only keys are unchanged); with resets and no mixing, that followed by ``b"|"`` and the reset set's
    :func:`mask_key`; with mixing, the mask's key, ``b"|"``, the reset set's key (all zero bytes when none),
    ``b"#"`` and one byte per block level. The three forms have different lengths and the parts fixed ones,
    so keys of different states never collide."""
    key = mask_key(mask)
    reset_bytes = None if reset is None else mask_key(reset)
    levels = None if mix is None else (mix.detach().cpu().numpy() if isinstance(mix, torch.Tensor) else np.asarray(mix))
    if levels is not None and levels.any():
        if levels.min() < 0 or levels.max() > 255:
            raise ValueError(f"mix levels must be in [0, 255], got {levels.tolist()}")
        return key + b"|" + (reset_bytes or bytes(len(key))) + b"#" + levels.astype(np.uint8).reshape(-1).tobytes()
    if reset_bytes is None:
        return key
    return key if not any(reset_bytes) else key + b"|" + reset_bytes


class StateMemo(Generic[V]):
    """Values by state key, least recently used dropped first beyond ``size`` entries.

    :param size: entries kept (0: nothing is stored).
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"a memo size must be >= 0, got {size}")
        self.size = int(size)
        self._values: OrderedDict[bytes, V] = OrderedDict()

    def get(self, key: bytes) -> V | None:
        """The value stored under ``key`` (marked as recently used), or None."""
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    def __setitem__(self, key: bytes, value: V) -> None:
        if self.size == 0:
            return
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self.size:
            self._values.popitem(last=False)

    def __getitem__(self, key: bytes) -> V:
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._values)

    def clear(self) -> None:
        """Forget every value."""
        self._values.clear()
