"""The operations of ``HeadPrune-v0`` (``prune``, ``reset``, ``mix``, combined): action layout and validity.

A state is two int8 vectors over the ``n = L * H`` heads (row-major), ``mask`` (1 = active, 0 = pruned) and
``reset`` (1 = the head carries the pre-trained reference's weights), and one int8 vector ``mix`` over the ``B``
blocks of :mod:`headprune.envs.mixing` (each block's mixing level, ``0..K``). A head is *untouched* when it is
active and not reset. The action space is one block of actions per operation, in the order of
:attr:`HeadOperations.ops` (always ``prune``, ``reset``, ``mix`` order, whatever order ``operation`` names them in):
``"prune"`` -> ``n`` actions, prune head ``a``; ``"reset"`` -> ``n`` actions, reset head ``a``; ``"mix"`` -> ``B``
actions, raise block ``b``'s level by one. So ``"both"`` (= ``"prune+reset"``) is ``Discrete(2n)``, ``a < n``
prunes head ``a`` and ``a >= n`` resets head ``a - n``, and ``"prune+mix"`` is ``Discrete(n + B)``.

Validity rules: a head action (prune or reset) is valid only on an untouched head. So a pruned head cannot be reset
(its output is gated off; resetting it would change nothing) and a reset head cannot be pruned (the episode would
have spent two steps on what one prune does). A mix action is valid only on a block below level ``K`` (a fully
mixed block is the reference's and cannot move further). Mixing and head operations do not exclude each other: a
pruned head's block can still be mixed (the other heads and the feed-forward move), and a reset head's values stay
the reference's under any mix. Invalid actions are no-ops that cost ``c_invalid``, as in the prune-only env.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headprune.envs.config import operation_units

__all__ = ["HeadOperations"]


@dataclass(frozen=True)
class HeadOperations:
    """Action layout and masks of one ``operation`` over ``n`` heads (and ``num_blocks`` mixing blocks).

    :param operation: ``"prune"``, ``"reset"``, ``"mix"``, ``"both"`` or a ``+`` combination
        (:func:`~headprune.envs.config.operation_units`).
    :param n: number of heads ``L * H``.
    :param num_blocks: ``B``, the mixing blocks (needed, ``>= 1``, only with ``"mix"``).
    :param mix_levels: ``K``, the steps from a block's own weights to the reference's.
    """

    operation: str
    n: int
    num_blocks: int = 0
    mix_levels: int = 1

    def __post_init__(self) -> None:
        units = operation_units(self.operation)  # ValueError naming the valid values
        if "mix" in units and self.num_blocks < 1:
            raise ValueError(f"operation={self.operation!r} needs the mixing blocks (num_blocks >= 1)")

    @property
    def ops(self) -> tuple[str, ...]:
        """The operation of each block of actions, in action order."""
        return operation_units(self.operation)

    @property
    def resets(self) -> bool:
        """Whether heads can be reset (the observation then carries the reset flags)."""
        return "reset" in self.ops

    @property
    def acts_on_heads(self) -> bool:
        """Whether a head operation (prune or reset) is among the actions (``False`` for ``"mix"`` alone)."""
        return "prune" in self.ops or self.resets

    @property
    def mixes(self) -> bool:
        """Whether blocks can be mixed (the observation then carries the mixing levels)."""
        return "mix" in self.ops

    def block_size(self, op: str) -> int:
        """Actions of operation ``op``: ``n`` for a head operation, ``B`` for ``"mix"``."""
        return self.num_blocks if op == "mix" else self.n

    @property
    def num_actions(self) -> int:
        """The sum of :meth:`block_size` over :attr:`ops`."""
        return sum(self.block_size(op) for op in self.ops)

    def decode(self, action: int) -> tuple[str, int]:
        """``(operation, head or block)`` of ``action`` in ``[0, num_actions)``."""
        if not 0 <= action < self.num_actions:
            raise ValueError(f"action must be an integer in [0, {self.num_actions}), got {action}")
        for op in self.ops:
            if action < self.block_size(op):
                return op, action
            action -= self.block_size(op)
        raise AssertionError("unreachable")

    @staticmethod
    def untouched(mask: np.ndarray, reset: np.ndarray) -> np.ndarray:
        """``[n]`` bool: active and not reset."""
        return (mask == 1) & (reset == 0)

    def valid(self, op: str, index: int, mask: np.ndarray, reset: np.ndarray, mix: np.ndarray) -> bool:
        """Whether operation ``op`` on head (or block) ``index`` changes the state (the module's rules)."""
        if op == "mix":
            return int(mix[index]) < self.mix_levels
        return bool(mask[index] == 1 and reset[index] == 0)

    def action_mask(self, mask: np.ndarray, reset: np.ndarray, mix: np.ndarray | None = None) -> np.ndarray:
        """``[num_actions]`` bool, True for the valid actions (head actions on untouched heads, mix actions on
        blocks below level ``K``)."""
        parts = []
        for op in self.ops:
            if op == "mix":
                levels = np.zeros(self.num_blocks, np.int64) if mix is None else np.asarray(mix)
                parts.append(levels < self.mix_levels)
            else:
                parts.append(self.untouched(mask, reset))
        return np.concatenate(parts)
