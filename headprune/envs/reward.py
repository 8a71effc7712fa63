"""The reward of HeadPrune-v0 as named terms: clean accuracy traded against a backdoor proxy.

With ``acc`` the clean accuracy on the defender's held-out validation rows (``correct / N``), ``p``
the backdoor proxy (higher = more backdoor-like; see :mod:`headprune.envs.proxies`) and the
potential::

    Phi(s) = w_acc * acc(s) - w_proxy * p(s)

a step from state ``s_{t-1}`` to ``s_t`` earns the sum of the named terms in :data:`REWARD_TERMS`::

    r_t = w_acc * (acc_t - acc_{t-1})          # "accuracy"        (<= 0 when pruning hurts)
        - w_proxy * (p_t - p_{t-1})            # "proxy"           (> 0 when the model looks less backdoored)
        - c_invalid * [action pruned an already pruned head]        # "invalid_action" (a penalty)
        - c_floor   * [acc_t < floor]          # "floor"           (a penalty, the step crossing the floor)
        + Phi(s_T^ft) - Phi(s_T)               # "finetune"        (last step, TerminalFineTune wrapper only)

The first two terms are ``Phi(s_t) - Phi(s_{t-1})``: potential differences, so an episode's return
telescopes to ``Phi(s_T) - Phi(s_0)`` minus the penalties (the agent is paid for where it ends, not
for the path), and an invalid action (a no-op) earns exactly ``-c_invalid``. With the
:class:`~headprune.envs.wrappers.TerminalFineTune` wrapper, ``s_T^ft`` is the final mask after a
short clean fine-tune and the return telescopes to ``Phi(s_T^ft) - Phi(s_0)`` minus the penalties.

Every term is reported as a non-negative magnitude for penalties and a signed value otherwise
(``info["reward_terms"]``, with ``"total"``); the reward returned IS ``"total"``: the terms times
their signs, summed in the order of :data:`REWARD_TERMS`. Every input is a count-based rate or the
proxy's float, so two code paths that agree on the counts give bit-identical rewards.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from headprune.common.finite import check_finite_fields
from headprune.common.registry import Registry

__all__ = [
    "REWARD_TERMS",
    "AccuracyChange",
    "FineTuneBonus",
    "FloorPenalty",
    "InvalidActionPenalty",
    "ProxyChange",
    "RewardTerm",
    "RewardTerms",
    "RewardWeights",
    "StepChange",
    "potential",
    "step_reward",
]


@dataclass(frozen=True)
class RewardWeights:
    """Weights and penalties of the reward (all non-negative).

    :param accuracy: ``w_acc``, weight of the clean-accuracy change.
    :param proxy: ``w_proxy``, weight of the proxy change.
    :param invalid_action: ``c_invalid``, penalty for pruning an already pruned head (a no-op).
    :param floor: ``c_floor``, penalty on the step whose accuracy falls below the floor.
    """

    accuracy: float = 1.0
    proxy: float = 1.0
    invalid_action: float = 0.05
    floor: float = 1.0

    def __post_init__(self) -> None:
        check_finite_fields(self, "reward weight ")
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


# ------------------------------------------------------------------------------------------ terms
@dataclass(frozen=True)
class StepChange:
    """What a reward term sees of one step.

    :param prev_accuracy: validation accuracy before the step.
    :param prev_proxy: proxy before the step.
    :param accuracy: validation accuracy after the step.
    :param proxy: proxy after the step.
    :param invalid: the action pruned an already pruned head (the state did not change).
    :param crossed_floor: ``accuracy`` is below the accuracy floor (the episode terminates).
    :param finetuned: ``(accuracy, proxy)`` of the final mask after the terminal fine-tune, or None.
    """

    prev_accuracy: float
    prev_proxy: float
    accuracy: float
    proxy: float
    invalid: bool = False
    crossed_floor: bool = False
    finetuned: tuple[float, float] | None = None


class RewardTerm(ABC):
    """One named term of the reward (as CompilerGym's reward spaces): its name, sign and value.

    ``value`` is what ``info["reward_terms"][name]`` reports (a magnitude for a penalty); the term
    adds ``sign * value`` to the reward.
    """

    name: ClassVar[str]
    sign: ClassVar[float] = 1.0

    @abstractmethod
    def value(self, change: StepChange, weights: RewardWeights) -> float:
        """The reported value of this term for ``change``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, sign={self.sign:+g})"


REWARD_TERMS: Registry[RewardTerm] = Registry("reward term")
"""Every reward term (one instance each) by name, in the order the reward sums them."""


def _registered(cls: type[RewardTerm]) -> type[RewardTerm]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    REWARD_TERMS.add(cls.name, cls())
    return cls


@_registered
class AccuracyChange(RewardTerm):
    """``w_acc * (acc_t - acc_{t-1})``."""

    name = "accuracy"

    def value(self, change: StepChange, weights: RewardWeights) -> float:
        return weights.accuracy * (change.accuracy - change.prev_accuracy)


@_registered
class ProxyChange(RewardTerm):
    """``-w_proxy * (p_t - p_{t-1})`` (positive when the model looks less backdoored)."""

    name = "proxy"

    def value(self, change: StepChange, weights: RewardWeights) -> float:
        return -weights.proxy * (change.proxy - change.prev_proxy)


class Penalty(RewardTerm):
    """A fixed penalty: the weight :attr:`weight` of :class:`RewardWeights` on the steps where the flag
    :attr:`flag` of :class:`StepChange` is true, else 0."""

    sign = -1.0
    flag: ClassVar[str]
    weight: ClassVar[str]

    def value(self, change: StepChange, weights: RewardWeights) -> float:
        return float(getattr(weights, self.weight)) if getattr(change, self.flag) else 0.0


@_registered
class InvalidActionPenalty(Penalty):
    """Penalty ``c_invalid`` when the action chose a head that is no longer active, else 0."""

    name, flag, weight = "invalid_action", "invalid", "invalid_action"


@_registered
class FloorPenalty(Penalty):
    """Penalty ``c_floor`` on the step whose accuracy falls below the floor, else 0."""

    name, flag, weight = "floor", "crossed_floor", "floor"


@_registered
class FineTuneBonus(RewardTerm):
    """``Phi(s_T^ft) - Phi(s_T)`` on the last step under :class:`~headprune.envs.wrappers.TerminalFineTune`."""

    name = "finetune"

    def value(self, change: StepChange, weights: RewardWeights) -> float:
        if change.finetuned is None:
            return 0.0
        return potential(*change.finetuned, weights) - potential(change.accuracy, change.proxy, weights)


STEP_TERMS: tuple[str, ...] = ("accuracy", "proxy", "invalid_action", "floor")
"""The terms the env itself computes on every step (``finetune`` is the wrapper's)."""


@dataclass(frozen=True)
class RewardTerms:
    """The named terms of one step's reward (penalties stored as positive numbers).

    :param accuracy: ``w_acc * (acc_t - acc_{t-1})``.
    :param proxy: ``-w_proxy * (p_t - p_{t-1})``.
    :param invalid_action: ``c_invalid`` or 0.
    :param floor: ``c_floor`` or 0.
    :param finetune: ``Phi(s_T^ft) - Phi(s_T)`` when the terminal fine-tune ran, else None (not reported).
    """

    accuracy: float
    proxy: float
    invalid_action: float
    floor: float
    finetune: float | None = None

    def values(self) -> dict[str, float]:
        """``{name: value}`` of the terms present, in :data:`REWARD_TERMS` order."""
        return {name: getattr(self, name) for name in REWARD_TERMS if getattr(self, name) is not None}

    @property
    def total(self) -> float:
        """The reward: ``sum(sign * value)`` over the terms present, in :data:`REWARD_TERMS` order
        (``accuracy + proxy - invalid_action - floor [+ finetune]``)."""
        total: float | None = None
        for name, value in self.values().items():
            signed = value if REWARD_TERMS.get(name).sign > 0 else -value
            total = signed if total is None else total + signed
        return 0.0 if total is None else total

    def with_finetune(self, bonus: float) -> RewardTerms:
        """These terms plus the terminal fine-tune bonus."""
        return dataclasses.replace(self, finetune=float(bonus))

    def to_dict(self) -> dict[str, Any]:
        """``{name: value, ..., "total": total}`` (what ``info["reward_terms"]`` reports)."""
        return {**self.values(), "total": self.total}


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

    :param invalid: the action pruned an already pruned head (the state did not change).
    :param crossed_floor: ``accuracy`` is below the accuracy floor (the episode terminates).
    :param weights: the reward's weights and penalties.
    """
    change = StepChange(prev_accuracy, prev_proxy, accuracy, proxy, invalid=invalid, crossed_floor=crossed_floor)
    return RewardTerms(**{name: REWARD_TERMS.get(name).value(change, weights) for name in STEP_TERMS})
