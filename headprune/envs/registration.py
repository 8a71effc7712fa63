"""Registration of ``HeadPrune-v0`` with Gymnasium.

:func:`register_envs` runs when :mod:`headprune` is imported, so ``import headprune`` followed by
``gym.make("HeadPrune-v0", ...)`` works, and so does ``gym.make("headprune:HeadPrune-v0", ...)``
(Gymnasium imports the module named before the colon). It is idempotent: it registers only ids that
are not in ``gym.registry`` yet, so re-imports, ``importlib.reload`` and subprocess workers (fork or
spawn, e.g. SB3's ``SubprocVecEnv``, whose workers import :mod:`headprune` when they unpickle the
env factory) never see a "already registered" warning. The entry point is a string, so nothing heavy
(torch, transformers) is imported until an env is made.
"""

from __future__ import annotations

import gymnasium as gym

__all__ = ["ENTRY_POINT", "ENV_ID", "register_envs"]

ENV_ID = "HeadPrune-v0"
"""The id users pass to ``gym.make``."""

ENTRY_POINT = "headprune.envs.headprune_env:HeadPruneEnv"
"""Where Gymnasium finds the class (imported lazily by ``gym.make``)."""


def register_envs() -> None:
    """Register :data:`ENV_ID` unless it already is (safe to call any number of times)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point=ENTRY_POINT)
