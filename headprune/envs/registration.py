"""Registration of the ``HeadPrune`` family with Gymnasium (MiniGrid / HighwayEnv style variants).

:func:`register_envs` runs when :mod:`headprune` is imported, so ``import headprune`` followed by
``gym.make("HeadPrune-v0", ...)`` works, and so does ``gym.make("headprune:HeadPrune-Tiny-v0")``
(Gymnasium imports the module named before the colon). It is idempotent: it registers only ids that
are not in ``gym.registry`` yet, so re-imports, ``importlib.reload`` and subprocess workers never see
an "already registered" warning. Entry points are strings, so nothing heavy (torch, transformers) is
imported until an env is made.

Registered ids (:data:`VARIANTS`, derived from :data:`headprune.presets.PRESET_LIST`, the one list of presets and
their ids; every one has ``max_episode_steps`` = the env's own default step
limit, ``2 * budget`` with ``budget = L * H // 2``, and ``reward_threshold`` =
:data:`~headprune.envs.reset_options.SUCCESS_RETURN`, the return ``info["is_success"]`` asks for). The step
limit counts invalid actions (no-ops on a pruned head); an episode of valid actions only, as MaskablePPO or a
masked random policy takes, truncates at the pruning budget first: ``HeadPrune-Tiny-v0``'s spec says 8 steps and
its valid episodes take 4. Kept on purpose: the budget bounds the heads pruned, the step limit bounds an unmasked
policy's (plain PPO's) wasted steps:

* ``HeadPrune-v0``: the default victim (``minilm-syntactic``), default config (unchanged);
* ``HeadPrune-Tiny-v0``: the ``tiny`` preset (2 x 4 heads; trained once, then cached, steps take
  milliseconds) with 64 validation and 64 statistics rows: for algorithm development and tests;
* ``HeadPrune-MiniLM-{Syntactic,Style,BadNets,AddSent,Syntactic-Fast}-v0``: one per shipped MiniLM preset but
  :data:`headprune.victims.CONFIRM_PRESETS` (the attack families kept for confirming a defense: no agent is
  trained on them, so they get no id);
* ``HeadPrune-Tiny-Mix-v0``: ``HeadPrune-Tiny-v0`` with ``operation="prune+mix"`` (:mod:`headprune.envs.mixing`:
  ``Discrete(8 + 5)``, the 8 heads and 5 blocks, embeddings and each layer's attention and feed-forward),
  ``mix_levels=4`` (a step raises a block's mixing probability by 0.25) and ``budget=8`` (heads pruned plus mix
  steps; step limit 16);
* ``HeadPrune-MiniLM-Syntactic-Mix-v0``: ``HeadPrune-MiniLM-Syntactic-v0`` with ``operation="prune+mix"``
  (``Discrete(72 + 13)``: the embeddings and each layer's attention and feed-forward), ``mix_levels=10`` and the
  default budget (36 heads pruned or mix steps; step limit 72);
* ``HeadPrune-Fast-v0``: the default victim with 64 validation and 64 statistics rows (a step costs
  about a quarter of ``HeadPrune-v0``'s; accuracy is coarser, 1/64), in the spirit of ``highway-fast-v0``.

A victim that is not cached yet is trained on the first ``gym.make`` of its id, with progress bars, and
for every id but ``HeadPrune-v0`` (whose entry point stays the class) announced on stderr first
(:func:`headprune.envs.factory.make_registered_env`).
The vector entry point (``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")``) is
:class:`headprune.envs.vector.BatchedHeadPruneVectorEnv`: one model scores all ``N`` envs' masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from headprune.envs.config import episode_step_limit
from headprune.envs.reset_options import SUCCESS_RETURN
from headprune.presets import PRESET_LIST

__all__ = ["ENTRY_POINT", "ENV_ID", "FACTORY_ENTRY_POINT", "VARIANTS", "VECTOR_ENTRY_POINT", "EnvVariant",
           "register_envs", "step_limit"]

ENV_ID = "HeadPrune-v0"
"""The id of the default env."""

ENTRY_POINT = "headprune.envs.headprune_env:HeadPruneEnv"
"""Where Gymnasium finds ``HeadPrune-v0``'s class (imported lazily by ``gym.make``)."""

FACTORY_ENTRY_POINT = "headprune.envs.factory:make_registered_env"
"""The entry point of the other ids: the class behind an announcement of a victim build."""

VECTOR_ENTRY_POINT = "headprune.envs.vector:BatchedHeadPruneVectorEnv"
"""Where ``gym.make_vec(..., vectorization_mode="vector_entry_point")`` finds the batched vector env."""

_STEPS = {"minilm": 72, "tiny": 8}  # 2 * (L * H // 2): 6 x 12 and 2 x 4 heads
_IN_SECONDS = frozenset({"tiny"})  # the models a victim of trains in seconds on a CPU


@dataclass(frozen=True)
class EnvVariant:
    """One registered id: its victim preset, config fields and step limit.

    :param env_id: the Gymnasium id.
    :param victim: a preset name of :data:`headprune.victims.PRESETS`.
    :param max_episode_steps: Gymnasium's ``TimeLimit`` (the env's own default step limit, invalid actions
        included; valid-only episodes end at the budget, half of it).
    :param kwargs: :class:`~headprune.envs.config.HeadPruneConfig` fields of the variant.
    :param builds_in_seconds: whether the victim trains in seconds on a CPU (the checkers' tests).
    :param entry_point: the Gymnasium entry point (the announcing factory unless said).
    """

    env_id: str
    victim: str
    max_episode_steps: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    builds_in_seconds: bool = False
    entry_point: str = FACTORY_ENTRY_POINT


VARIANTS: tuple[EnvVariant, ...] = tuple(
    EnvVariant(env.env_id, preset.name, env.max_episode_steps or _STEPS[preset.config["model"]], dict(env.kwargs),
               builds_in_seconds=preset.config["model"] in _IN_SECONDS,
               entry_point=ENTRY_POINT if env.class_entry_point else FACTORY_ENTRY_POINT)
    for preset in PRESET_LIST for env in preset.envs
)
"""Every registered id, in registration order: the ids of :data:`headprune.presets.PRESET_LIST`."""


def step_limit(env_id: str, kwargs: Mapping[str, Any]) -> int | None:
    """The ``TimeLimit`` for ``gym.make(env_id, **kwargs)``: the id's ``max_episode_steps``, unless ``kwargs`` set
    ``max_steps`` or ``budget`` (then the env's own step limit: ``max_steps``, else ``2 * budget``), so an episode
    with a larger budget than the id's is not cut at the id's limit before the env ends it (pass the result as
    ``gym.make(..., max_episode_steps=...)``)."""
    limit = episode_step_limit(kwargs.get("budget"), kwargs.get("max_steps"))
    return gym.spec(env_id).max_episode_steps if limit is None else limit


def register_envs() -> None:
    """Register every :data:`VARIANTS` id unless it already is (safe to call any number of times)."""
    for variant in VARIANTS:
        if variant.env_id not in gym.registry:
            gym.register(id=variant.env_id, entry_point=variant.entry_point, vector_entry_point=VECTOR_ENTRY_POINT,
                         max_episode_steps=variant.max_episode_steps, reward_threshold=SUCCESS_RETURN,
                         kwargs={"victim": variant.victim, **variant.kwargs})
