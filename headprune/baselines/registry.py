"""The ONE registry of defense strategies, looked up by name by :func:`headprune.baselines.defend`,
the CLI and the benchmark.

Kinds:

* ``"prune"``: a scripted policy of :mod:`headprune.baselines.policies`, run inside ``HeadPrune-v0``,
  then clean fine-tuning with the pruned heads held at zero;
* ``"pure"``: PURE (Zhao et al., ICML 2024): variance pruning in chunks with backtracking, then
  attention-normalised fine-tuning;
* ``"finetune"``: a whole fine-tuning defense (FT, FTH, MEFT), no pruning;
* ``"none"``: no defense (the model as it is), the reference row of tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from headprune.baselines.policies import (
    EnsemblePolicy,
    EpsilonGreedyPolicy,
    GradientPolicy,
    LayerwiseVariancePolicy,
    MCDropoutPolicy,
    RandomPolicy,
    ScriptedPolicy,
    SparsificationPolicy,
)

__all__ = ["STRATEGIES", "Strategy", "get_strategy", "strategy_names"]


@dataclass(frozen=True)
class Strategy:
    """A named defense.

    Attributes:
        name: registry key.
        kind: ``"prune"``, ``"pure"``, ``"finetune"`` or ``"none"``.
        description: one line for ``--help`` and reports.
        policy: the policy class of a ``"prune"`` strategy.
        defaults: default options (policy keyword arguments, or the fine-tuning recipe).
    """

    name: str
    kind: str
    description: str
    policy: type[ScriptedPolicy] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("random", "prune", "prune seeded random active heads", RandomPolicy),
    Strategy("gradient", "prune", "prune the least gate-gradient-important head, re-estimated as heads go",
             GradientPolicy),
    Strategy("layerwise", "prune", "PURE variance with per-layer rates 20%->80%", LayerwiseVariancePolicy),
    Strategy("sparsify", "prune", "group-lasso fine-tune of a copy, prune the smallest head groups",
             SparsificationPolicy),
    Strategy("ensemble", "prune", "majority vote of seeded random masks that keep the floor", EnsemblePolicy),
    Strategy("mcdropout", "prune", "MC-dropout importance, prune the lowest upper confidence bound",
             MCDropoutPolicy),
    Strategy("egreedy", "prune", "epsilon-greedy on PURE variance (the authors' 'RL-guided')",
             EpsilonGreedyPolicy),
    Strategy("pure", "pure", "PURE: variance pruning in chunks of 10 with backtracking + attention normalisation",
             defaults={"chunk": 10, "penalty": 0.15}),
    Strategy("ft", "finetune", "fine-tune on clean data (lr 2e-5)", defaults={"lr": 2e-5}),
    Strategy("fth", "finetune", "fine-tune on clean data with a higher learning rate (1e-4)", defaults={"lr": 1e-4}),
    Strategy("meft", "finetune", "max-entropy fine-tuning, then cross-entropy recovery",
             defaults={"lr": 2e-5, "entropy_epochs": 1.0}),
    Strategy("none", "none", "no defense (reference row)"),
)}
"""Every strategy by name."""


def strategy_names() -> list[str]:
    """The registered names, in registry order."""
    return list(STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; ValueError naming the valid ones otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGIES)}") from None
