"""The observation space of per-head flags that knows its head grid.

``HeadPrune-v0``'s ``"mask"`` (and, with a reset operation, ``"reset"``) entry holds one 0/1 flag per
attention head, flattened row-major over the ``L x H`` grid. A flat ``MultiBinary(n)`` does not say how
``n`` splits into layers and heads, which a size-agnostic policy needs (its head positions); so the entry is
a :class:`HeadFlags`: a ``MultiBinary(n)`` in every respect (samples, ``contains``, batching, SB3's
preprocessing and checkers) that also carries ``head_shape = (L, H)``. A policy built from the observation
space alone (rl-baselines3-zoo builds it from the env's spaces and the YAML's ``policy_kwargs``) reads the
grid from there, so no ``head_shape`` has to be written into a hyperparameter file.

The observation layout is unchanged (``[n]`` int8), so policies trained before this space existed load as
they did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = ["HeadFlags", "head_shape_of"]


class HeadFlags(spaces.MultiBinary):
    """``MultiBinary(L * H)`` whose ``head_shape`` is ``(L, H)`` (flags flattened row-major: head ``(l, h)`` is
    entry ``l * H + h``).

    :param head_shape: ``(L, H)``, two positive integers.
    :param seed: as ``MultiBinary``'s.
    :raises ValueError: ``head_shape`` is not two positive integers.
    """

    def __init__(self, head_shape: Sequence[int], seed: int | np.random.Generator | None = None) -> None:
        shape = tuple(head_shape)
        if len(shape) != 2 or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 1
                                      for x in shape):
            raise ValueError(f"head_shape must be two positive integers (L, H), got {head_shape!r}")
        self.head_shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        super().__init__(self.head_shape[0] * self.head_shape[1], seed=seed)

    def __repr__(self) -> str:
        return f"HeadFlags(head_shape={self.head_shape})"

    def __eq__(self, other: Any) -> bool:
        """Equal to a ``MultiBinary`` of the same ``n`` (what it is to every consumer); to another
        ``HeadFlags`` only with the same grid."""
        if isinstance(other, HeadFlags) and other.head_shape != self.head_shape:
            return False
        return super().__eq__(other)


def head_shape_of(observation_space: spaces.Space[Any], head_shape: Sequence[int] | None = None) -> tuple[int, int]:
    """``(L, H)`` of a ``HeadPrune-v0`` observation space: its ``"mask"`` entry's grid, or ``head_shape`` when
    given (then it must agree with the space's grid where the space has one).

    :param observation_space: the env's ``Dict`` observation space.
    :param head_shape: an explicit ``(L, H)`` (a policy file's, or a caller's), or ``None``.
    :raises ValueError: neither the space nor the caller gives a grid, or the two disagree (both named).
    """
    mask = observation_space.spaces.get("mask") if isinstance(observation_space, spaces.Dict) else None
    derived = mask.head_shape if isinstance(mask, HeadFlags) else None
    if head_shape is None:
        if derived is None:
            raise ValueError("head_shape (L, H): the observation space's 'mask' entry is not a HeadFlags space "
                             "(a wrapper replaced it?), so pass policy_kwargs={'head_shape': [L, H]}")
        return derived
    explicit = (int(head_shape[0]), int(head_shape[1])) if len(head_shape) == 2 else None
    if explicit is None:
        raise ValueError(f"head_shape must be (L, H), got {tuple(head_shape)!r}")
    if derived is not None and explicit != derived:
        raise ValueError(f"head_shape {explicit} disagrees with the observation space's grid {derived}")
    return explicit
