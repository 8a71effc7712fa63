"""Every config refuses NaN and infinite numbers in any field at construction (one shared check,
``headprune.victims.card.check_finite_fields``), nested mappings such as ``reward_weights`` included (issue 25)."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest

import headprune  # noqa: F401  (registers the env ids)
from headprune.clean import CleanSettings
from headprune.compare.grid import RunSettings
from headprune.defenses.base import DefenseFineTune
from headprune.envs.config import HeadPruneConfig
from headprune.envs.reward import RewardWeights
from headprune.engine.finetuning import FineTuneConfig
from headprune.common.finite import check_finite_fields

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("build, field", [
    (lambda: HeadPruneConfig(reward_weights={"accuracy": NAN}), "reward_weights.accuracy"),
    (lambda: HeadPruneConfig(reward_weights={"proxy": INF}), "reward_weights.proxy"),
    (lambda: HeadPruneConfig(proxy_kwargs={"scale": [1.0, -INF]}), "proxy_kwargs.scale[1]"),
    (lambda: HeadPruneConfig(accuracy_floor=NAN), "accuracy_floor"),
    (lambda: RewardWeights(floor=NAN), "reward weight floor"),
    (lambda: CleanSettings(finetune_epochs=INF), "finetune_epochs"),
    (lambda: CleanSettings(holdout_fraction=NAN), "holdout_fraction"),
    (lambda: DefenseFineTune(epochs=INF), "finetune_epochs"),
    (lambda: DefenseFineTune(lr=NAN), "finetune_lr"),
    (lambda: FineTuneConfig(warmup_ratio=NAN), "warmup_ratio"),
    (lambda: RunSettings(env=HeadPruneConfig(max_accuracy_drop=0.05), finetune=DefenseFineTune(),
                         options={"gradient": {"n_rows": INF}}), "options.gradient.n_rows"),
])
def test_non_finite_fields_are_refused_naming_the_field(build, field):
    with pytest.raises(ValueError, match=f"^{field.replace('[', '.').replace(']', '.')} must be a finite number"):
        build()


def test_gym_make_refuses_nan_reward_weights_before_building_anything():
    with pytest.raises(ValueError, match="reward_weights.accuracy must be a finite number, got nan"):
        gym.make("HeadPrune-Tiny-v0", reward_weights={"accuracy": NAN})


def test_the_shared_check_walks_nested_values_and_skips_non_numbers():
    check_finite_fields(HeadPruneConfig(proxy_kwargs={"name": "x", "flags": [True, 1, 2.5]}))  # no error
    assert HeadPruneConfig(reward_weights={"accuracy": 2}).reward_weights == {"accuracy": 2}
