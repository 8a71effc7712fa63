"""The Gymnasium environment of headprune and its parts.

* :mod:`headprune.envs.config`: :class:`HeadPruneConfig`, the env's one configuration object;
* :mod:`headprune.envs.headprune_env`: :class:`HeadPruneEnv`, registered as ``HeadPrune-v0``;
* :mod:`headprune.envs.wrappers`: LFR in ``info`` (evaluation only) and the terminal fine-tune, as
  ``gym.Wrapper``s, and :func:`make_headprune_env` (the env with the wrappers its keywords ask for);
* :mod:`headprune.envs.reward`: the reward as named terms (potential differences of accuracy and
  proxy, penalties, the terminal fine-tune bonus);
* :mod:`headprune.envs.proxies`: trigger-agnostic backdoor proxies;
* :mod:`headprune.envs.incremental`: exact incremental scoring of masks, memoised;
* :mod:`headprune.envs.registration`: the idempotent ``gym.register`` call run by ``import headprune``.

This package module stays light (``import headprune`` imports it to register the env): the heavy
modules are imported on first access of their names, e.g. ``headprune.envs.HeadPruneEnv``.
"""

from __future__ import annotations

import importlib
from typing import Any

from headprune.envs.registration import ENV_ID, register_envs

__all__ = ["ENV_ID", "HeadFlags", "HeadPruneConfig", "HeadPruneEnv", "LabelFlipRateInfo", "TerminalFineTune",
           "make_headprune_env", "register_envs"]

_LAZY = {
    "HeadFlags": "headprune.envs.head_space",
    "HeadPruneConfig": "headprune.envs.config",
    "HeadPruneEnv": "headprune.envs.headprune_env",
    "LabelFlipRateInfo": "headprune.envs.wrappers",
    "TerminalFineTune": "headprune.envs.wrappers",
    "make_headprune_env": "headprune.envs.wrappers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
