"""The head operations of ``HeadPrune-v0`` (``prune``, ``reset``, ``both``): action layout and validity.

A state is two int8 vectors over the ``n = L * H`` heads (row-major): ``mask`` (1 = active, 0 = pruned)
and ``reset`` (1 = the head carries the pre-trained reference's weights). A head is *untouched* when it
is active and not reset. The action space is one block of ``n`` actions per operation, in the order of
:attr:`HeadOperations.ops`: ``"prune"`` -> ``Discrete(n)`` prune head ``a``; ``"reset"`` ->
``Discrete(n)`` reset head ``a``; ``"both"`` -> ``Discrete(2n)``, ``a < n`` prunes head ``a`` and
``a >= n`` resets head ``a - n``.

Validity rule (one for every operation): an action is valid only on an untouched head. So a pruned
head cannot be reset (its output is gated off; resetting it would change nothing) and a reset head
cannot be pruned (the episode would have spent two steps on what one prune does; pruning a head that
was reset first is the same state as pruning it directly, except for the reset flag). Invalid actions
are no-ops that cost ``c_invalid``, as in the prune-only env.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headprune.envs.config import OPERATIONS

__all__ = ["HeadOperations"]


@dataclass(frozen=True)
class HeadOperations:
    """Action layout and masks of one ``operation`` over ``n`` heads.

    :param operation: ``"prune"``, ``"reset"`` or ``"both"``.
    :param n: number of heads ``L * H``.
    """

    operation: str
    n: int

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {list(OPERATIONS)}, got {self.operation!r}")

    @property
    def ops(self) -> tuple[str, ...]:
        """The operation of each block of ``n`` actions, in action order."""
        return ("prune", "reset") if self.operation == "both" else (self.operation,)

    @property
    def resets(self) -> bool:
        """Whether heads can be reset (the observation then carries the reset flags)."""
        return "reset" in self.ops

    @property
    def num_actions(self) -> int:
        """``n`` per operation."""
        return self.n * len(self.ops)

    def decode(self, action: int) -> tuple[str, int]:
        """``(operation, head)`` of ``action`` in ``[0, num_actions)``."""
        if not 0 <= action < self.num_actions:
            raise ValueError(f"action must be an integer in [0, {self.num_actions}), got {action}")
        return self.ops[action // self.n], action % self.n

    @staticmethod
    def untouched(mask: np.ndarray, reset: np.ndarray) -> np.ndarray:
        """``[n]`` bool: active and not reset."""
        return (mask == 1) & (reset == 0)

    def action_mask(self, mask: np.ndarray, reset: np.ndarray) -> np.ndarray:
        """``[num_actions]`` bool, True for the valid actions (on untouched heads, every block)."""
        return np.tile(self.untouched(mask, reset), len(self.ops))
