"""Baseline head-pruning defenses: scripted policies for ``HeadPrune-v0``, whole defenses (FT, FTH,
MEFT, PURE), one registry and one :func:`defend` API. See :mod:`headprune.baselines.policies`,
:mod:`headprune.baselines.registry` and :mod:`headprune.baselines.defend`."""

from headprune.baselines.defend import DefenseResult, defend, pure_prune
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
from headprune.baselines.registry import STRATEGIES, Strategy, get_strategy, strategy_names

__all__ = [
    "STRATEGIES",
    "DefenseResult",
    "EnsemblePolicy",
    "EpsilonGreedyPolicy",
    "GradientPolicy",
    "LayerwiseVariancePolicy",
    "MCDropoutPolicy",
    "RandomPolicy",
    "ScriptedPolicy",
    "SparsificationPolicy",
    "Strategy",
    "defend",
    "get_strategy",
    "pure_prune",
    "strategy_names",
]
