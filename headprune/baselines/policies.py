"""Deprecated: the scripted policies moved to :mod:`headprune.defenses` (one module per defense)."""

from headprune.defenses import (
    EnsemblePolicy,
    EpsilonGreedyPolicy,
    GradientPolicy,
    LayerwiseVariancePolicy,
    MCDropoutPolicy,
    RandomPolicy,
    ScriptedPolicy,
    ScriptedPolicyDefense,
    SparsificationPolicy,
    layer_rates,
)
from headprune.defenses.base import DEFENSES

POLICIES: dict[str, type[ScriptedPolicy]] = {
    name: cls.policy_class for name, cls in DEFENSES.items() if issubclass(cls, ScriptedPolicyDefense)
}
"""The scripted pruning policies by defense name."""

__all__ = ["POLICIES", "EnsemblePolicy", "EpsilonGreedyPolicy", "GradientPolicy", "LayerwiseVariancePolicy",
           "MCDropoutPolicy", "RandomPolicy", "ScriptedPolicy", "SparsificationPolicy", "layer_rates"]
