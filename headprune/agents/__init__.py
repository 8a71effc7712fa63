"""RL agents for ``HeadPrune-v0``: SB3 training with zoo-style hyperparameters, a size-agnostic
policy that transfers across models, loading and evaluation as a defense (:func:`headprune.defenses.defend`).

* :func:`train` / :func:`resume` (:mod:`headprune.agents.rl_training`; command line ``headprune train``
  and ``python -m headprune.agents``); hyperparameters in :mod:`headprune.agents.hyperparams`
  and the shipped ``configs/*.yml``;
* :class:`MaskableHeadScoringPolicy` / :class:`HeadScoringPolicy` (:mod:`headprune.agents.policy_network`);
* :func:`load_policy` and :func:`evaluate_agent` (:mod:`headprune.agents.evaluation`; ``headprune evaluate``);
  :func:`load`, the SB3 model of a policy file (what ``MaskablePPO.load`` gives for SB3's own zips).

The names are imported on first access (SB3 and torch load then), so the ``headprune`` command line
stays quick to start.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ALGOS": "headprune.agents.hyperparams",
    "load_hyperparams": "headprune.agents.hyperparams",
    "HeadFeaturesExtractor": "headprune.agents.policy_network",
    "HeadScoringPolicy": "headprune.agents.policy_network",
    "MaskableHeadScoringPolicy": "headprune.agents.policy_network",
    "TrainResult": "headprune.agents.rl_training",
    "latest_checkpoint": "headprune.agents.rl_training",
    "resume": "headprune.agents.rl_training",
    "train": "headprune.agents.rl_training",
    "AgentPolicy": "headprune.agents.evaluation",
    "AgentDefense": "headprune.agents.evaluation",
    "evaluate": "headprune.agents.evaluation",
    "evaluate_agent": "headprune.agents.evaluation",
    "load_policy": "headprune.agents.evaluation",
    "load": "headprune.agents.evaluation",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # cached; also wins over a submodule of the same name (``train``)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
