"""Deprecated: the defenses moved to :mod:`headprune.defenses` (one protocol, one registry). This package
re-exports their old names for one release (loaded on first use, so :mod:`headprune.defenses.head_groups`
imports without the defenses); :func:`defend` keeps its old signature here."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_EXPORTS = {
    "STRATEGIES": "headprune.baselines.registry", "get_strategy": "headprune.baselines.registry",
    "strategy_names": "headprune.baselines.registry", "DefenseResult": "headprune.baselines.defend",
    "defend": "headprune.baselines.defend", "pure_prune": "headprune.baselines.defend",
    **{name: "headprune.baselines.policies" for name in (
        "EnsemblePolicy", "EpsilonGreedyPolicy", "GradientPolicy", "LayerwiseVariancePolicy", "MCDropoutPolicy",
        "RandomPolicy", "ScriptedPolicy", "SparsificationPolicy")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'headprune.baselines' has no attribute {name!r}")
    warnings.warn(f"headprune.baselines.{name} is deprecated; use headprune.defenses", DeprecationWarning,
                  stacklevel=2)
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # importing headprune.baselines.defend set the name to the submodule
    return value
