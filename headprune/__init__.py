"""headprune: clean backdoored transformer classifiers by pruning attention heads, without knowing the trigger.

The package has one head engine (:mod:`headprune.engine`: gating, scoring, statistics, the pre-trained
reference, fine-tuning, export, metrics) and one defender's workbench (:class:`headprune.workbench.Workbench`:
the model, the defender's data split, head statistics, scorer, floor and budget) that every other part uses:
the defenses and ``defend`` (:mod:`headprune.defenses`), ``clean`` (:mod:`headprune.clean`), the Gymnasium
environment, a view over a workbench (:mod:`headprune.envs`), and the RL agents (:mod:`headprune.agents`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from headprune.envs.registration import register_envs as _register_envs

_register_envs()  # HeadPrune-v0 (idempotent; the env module itself is imported lazily by gym.make)
