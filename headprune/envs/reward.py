"""The reward of HeadPrune-v0: clean accuracy traded against a trigger-agnostic backdoor proxy.

With ``acc`` the clean accuracy on the defender's held-out evaluation rows (``correct / N``), ``p``
the backdoor proxy (higher = more backdoor-like; see :mod:`headprune.envs.proxies`) and the
potential::

    Phi(s) = w_acc * acc(s) - w_proxy * p(s)

a step from state ``s_{t-1}`` to ``s_t`` earns::

    r_t = w_acc * (acc_t - acc_{t-1})          # accuracy term   (<= 0 when pruning hurts)
        - w_proxy * (p_t - p_{t-1})            # proxy term      (> 0 when the model looks less backdoored)
        - c_invalid * [action pruned an already pruned head]
        - c_floor   * [acc_t < floor]          # the step that crosses the accuracy floor

The first two terms are ``Phi(s_t) - Phi(s_{t-1})``: potential differences, so an episode's return
telescopes to ``Phi(s_T) - Phi(s_0)`` minus the penalties (the agent is paid for where it ends, not
for the path), and an invalid action (a no-op) earns exactly ``-c_invalid``. Every input is a
count-based rate or the proxy's float, and the terms are summed in a fixed order, so two code paths
that agree on the counts (the incremental env and a naive full forward) give bit-identical rewards.

With ``finetune_terminal`` the env adds ``Phi(s_T^ft) - Phi(s_T)`` at the last step, where
``s_T^ft`` is the final mask after a short clean fine-tune: the return then telescopes to
``Phi(s_T^ft) - Phi(s_0)`` minus the penalties.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["RewardTerms", "RewardWeights", "potential", "step_reward"]


@dataclass(frozen=True)
class RewardWeights:
    """Weights and penalties of the reward (all non-negative).

    Attributes:
        accuracy: ``w_acc``, weight of the clean-accuracy change.
        proxy: ``w_proxy``, weight of the proxy change.
        invalid_action: ``c_invalid``, penalty for pruning an already pruned head (a no-op).
        floor: ``c_floor``, penalty on the step whose accuracy falls below the floor.
    """

    accuracy: float = 1.0
    proxy: float = 1.0
    invalid_action: float = 0.05
    floor: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"reward weight {f.name} must be a non-negative number, got {value!r}")
            object.__setattr__(self, f.name, float(value))

    @classmethod
    def coerce(cls, value: RewardWeights | Mapping[str, float] | None) -> RewardWeights:
        """``value`` itself, the defaults (``None``), or weights from a mapping of field names."""
        if value is None:
            return cls()
        if isinstance(value, RewardWeights):
            return value
        known = {f.name for f in fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown reward weights {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**dict(value))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def potential(accuracy: float, proxy: float, weights: RewardWeights) -> float:
    """``Phi = w_acc * accuracy - w_proxy * proxy``."""
    return weights.accuracy * accuracy - weights.proxy * proxy


@dataclass(frozen=True)
class RewardTerms:
    """The terms of one step's reward (penalties stored as positive numbers).

    Attributes:
        accuracy: ``w_acc * (acc_t - acc_{t-1})``.
        proxy: ``-w_proxy * (p_t - p_{t-1})``.
        invalid_action: ``c_invalid`` or 0.
        floor: ``c_floor`` or 0.
    """

    accuracy: float
    proxy: float
    invalid_action: float
    floor: float

    @property
    def total(self) -> float:
        """``accuracy + proxy - invalid_action - floor``, summed in that order."""
        return self.accuracy + self.proxy - self.invalid_action - self.floor

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def step_reward(
    prev_accuracy: float,
    prev_proxy: float,
    accuracy: float,
    proxy: float,
    *,
    invalid: bool,
    crossed_floor: bool,
    weights: RewardWeights,
) -> RewardTerms:
    """The reward terms of a step from ``(prev_accuracy, prev_proxy)`` to ``(accuracy, proxy)``.

    Args:
        invalid: the action pruned an already pruned head (the state did not change).
        crossed_floor: ``accuracy`` is below the accuracy floor (the episode terminates).
    """
    return RewardTerms(
        accuracy=weights.accuracy * (accuracy - prev_accuracy),
        proxy=-weights.proxy * (proxy - prev_proxy),
        invalid_action=weights.invalid_action if invalid else 0.0,
        floor=weights.floor if crossed_floor else 0.0,
    )
