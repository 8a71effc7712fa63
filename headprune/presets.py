"""The one list of victim presets (:data:`PRESET_LIST`): each preset's victim config and the Gymnasium ids that
train agents on it. Everything else is derived from it:

* :data:`headprune.victims.PRESETS` (name -> :class:`~headprune.victims.VictimConfig`) and
  :data:`headprune.victims.build.CONFIRM_PRESETS` (the presets with ``confirm_only``);
* :data:`headprune.envs.registration.VARIANTS`, the registered ids;
* the ids :func:`headprune.victims.scores.reference_scores` answers for (an id the scores file has not measured
  yet reads ``"not measured"``).

So a new preset and its Gym id are one entry here. Plain data, no torch or transformers: the ids are registered when
``headprune`` is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PRESET_LIST", "Preset", "PresetEnv", "env_ids"]

_SMALL = {"val_size": 64, "stats_size": 64}
_MIX_ONLY = {"operation": "mix", "budget": 78, "score_every": 78, "proxy": "reference_disagreement",
             "proxy_kwargs": {"n_per_class": 128, "reference_epochs": 3}}


@dataclass(frozen=True)
class PresetEnv:
    """A Gymnasium id on a preset's victim.

    :param env_id: the id.
    :param kwargs: :class:`~headprune.envs.config.HeadPruneConfig` fields of the id.
    :param class_entry_point: registered with the env class itself (``HeadPrune-v0``) instead of the factory that
        announces a victim build.
    :param max_episode_steps: Gymnasium's step limit when it is not the model's default (twice the budget).
    """

    env_id: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    class_entry_point: bool = False
    max_episode_steps: int | None = None


@dataclass(frozen=True)
class Preset:
    """A named victim.

    :param name: the preset's name (``headprune victim build --preset NAME``, ``--model NAME``).
    :param config: the :class:`~headprune.victims.VictimConfig` fields (checked when ``headprune.victims`` builds it).
    :param envs: the Gymnasium ids on its victim.
    :param confirm_only: an attack family kept for confirming a defense chosen on the others (issue 22): no id
        trains agents on it.
    """

    name: str
    config: Mapping[str, Any]
    envs: tuple[PresetEnv, ...] = ()
    confirm_only: bool = False

    def __post_init__(self) -> None:
        if self.confirm_only and self.envs:
            raise ValueError(f"preset {self.name!r} is confirm_only: it gets no Gym id")


PRESET_LIST: tuple[Preset, ...] = (
    # a random-init 2 x 4 BERT on BadNets SST-2, trained in well under a minute: the tests' victim
    Preset("tiny", {"model": "tiny", "attack": "badnets", "epochs": 2.0, "lr": 1e-3, "batch_size": 32,
                    "max_length": 64},
           (PresetEnv("HeadPrune-Tiny-v0", _SMALL),
            # prune and mix toward the base (issue 24): 8 heads pruned or mix steps of 4 levels; 16 steps
            PresetEnv("HeadPrune-Tiny-Mix-v0", {**_SMALL, "operation": "prune+mix", "mix_levels": 4, "budget": 8},
                      max_episode_steps=16),
            # mixing alone (issue 24): the same 5 blocks, no head actions, Discrete(5); 8 levels, since at 4 a
            # second step toward the tiny victim's base (its random init) already crosses the floor
            PresetEnv("HeadPrune-Tiny-MixOnly-v0", {**_SMALL, "operation": "mix", "mix_levels": 8, "budget": 8},
                      max_episode_steps=16))),
    # all-MiniLM-L6-v2 (6 x 12 heads), poison rate 0.2, target 1; the default victim
    Preset("minilm-syntactic", {"model": "minilm", "attack": "syntactic"},
           (PresetEnv("HeadPrune-v0", class_entry_point=True), PresetEnv("HeadPrune-MiniLM-Syntactic-v0"),
            PresetEnv("HeadPrune-Fast-v0", _SMALL),
            # prune and mix toward the base at MiniLM's size (issue 24): 10 levels, the default budget (36 heads
            # pruned or mix steps) and step limit (72)
            PresetEnv("HeadPrune-MiniLM-Syntactic-Mix-v0", {"operation": "prune+mix"}),
            # mixing alone, the shipped mixing agent's env (benchmarks/results/agents/
            # minilm-syntactic_maskable_ppo_mix_s0): Discrete(13), 78 mix steps (p = 0.6 on every block if spread
            # evenly), the reference-disagreement proxy scored once an episode, at its end
            PresetEnv("HeadPrune-MiniLM-Syntactic-MixOnly-v0", _MIX_ONLY, max_episode_steps=156))),
    Preset("minilm-style", {"model": "minilm", "attack": "style"}, (PresetEnv("HeadPrune-MiniLM-Style-v0"),)),
    Preset("minilm-badnets", {"model": "minilm", "attack": "badnets"}, (PresetEnv("HeadPrune-MiniLM-BadNets-v0"),)),
    Preset("minilm-addsent", {"model": "minilm", "attack": "addsent"}, (PresetEnv("HeadPrune-MiniLM-AddSent-v0"),)),
    # minilm-syntactic trained 1 epoch, not 3 (the README's main job)
    Preset("minilm-syntactic-fast", {"model": "minilm", "attack": "syntactic", "epochs": 1.0},
           (PresetEnv("HeadPrune-MiniLM-Syntactic-Fast-v0"),)),
    Preset("minilm-offenseval-syntactic", {"model": "minilm", "attack": "syntactic", "dataset": "offenseval"},
           confirm_only=True),
    Preset("minilm-synonym", {"model": "minilm", "attack": "synonym", "poison_rate": 0.1}, confirm_only=True),
)
"""Every preset, in the order of ``headprune victim build --help`` and of the registered ids."""


def env_ids() -> list[str]:
    """Every Gymnasium id of :data:`PRESET_LIST`, in order."""
    return [env.env_id for preset in PRESET_LIST for env in preset.envs]
