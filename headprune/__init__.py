"""headprune: clean backdoored transformer classifiers by pruning attention heads, without knowing the trigger.

The package has one head-gating engine (:mod:`headprune.engine.gating`) that every other part uses: the
Gymnasium environment (:mod:`headprune.envs`), the defenses (:mod:`headprune.defenses`)
and the RL agents (:mod:`headprune.agents`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from headprune.envs.registration import register_envs as _register_envs

_register_envs()  # HeadPrune-v0 (idempotent; the env module itself is imported lazily by gym.make)
