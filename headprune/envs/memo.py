"""The one memo of values by head state: keys (:func:`state_key`) and a bounded LRU map (:class:`StateMemo`).

A head state is a 0/1 gate mask and, with reset operations, the set of heads reset to the pre-trained
reference. The mask scorer (accuracy and proxy), every proxy and the LFR wrapper memoise by it.
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


def state_key(mask: torch.Tensor | np.ndarray, reset: torch.Tensor | np.ndarray | None = None) -> bytes:
    """Memo key of a state (a gate mask and the set of reset heads): :func:`mask_key` of the mask when
    no head is reset (so prune-only keys are unchanged), else that followed by ``b"|"`` and the reset
    set's :func:`mask_key` (the two lengths are equal, so keys of different states never collide)."""
    key = mask_key(mask)
    if reset is None:
        return key
    reset_bytes = mask_key(reset)
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
