"""The registered HeadPrune ids: every one constructible, limited, vectorisable; checkers on the fast ones."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import gymnasium as gym
import pytest

import headprune  # noqa: F401  (registers the ids)
from headprune.envs.factory import announce_victim_build
from headprune.envs.registration import ENV_ID, VARIANTS, register_envs
from headprune.victims import CONFIRM_PRESETS, PRESETS, Victim


def _load(entry_point: str) -> object:
    module, name = entry_point.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.env_id)
def test_every_id_is_registered_with_limit_and_vector_entry_point(variant) -> None:
    spec = gym.spec(variant.env_id)
    assert spec.max_episode_steps == variant.max_episode_steps > 0
    assert spec.kwargs["victim"] in PRESETS  # a preset: built (announced) on first make, then cached
    assert callable(_load(spec.entry_point)) and callable(_load(spec.vector_entry_point))
    assert set(variant.kwargs) <= set(spec.kwargs)


def test_ids_cover_every_minilm_preset_but_the_confirm_ones_and_default_is_unchanged() -> None:
    minilm = {v.victim for v in VARIANTS if v.victim.startswith("minilm-")}
    assert minilm == {name for name in PRESETS if name.startswith("minilm-") and name not in CONFIRM_PRESETS}
    assert set(CONFIRM_PRESETS) <= set(PRESETS)  # held out from agent training: no id
    default = gym.spec(ENV_ID)
    assert default.kwargs == {"victim": "minilm-syntactic"}  # HeadPruneEnv's own default victim and config
    assert gym.spec("HeadPrune-Fast-v0").kwargs["val_size"] < 256


def test_register_envs_is_idempotent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_envs()
        register_envs()


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.builds_in_seconds], ids=lambda v: v.env_id)
def test_checkers_on_fast_ids(variant, tiny_victim: Victim, victim_cache: Path) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    assert variant.victim == "tiny"  # the session's tiny victim is the one this id builds: same cache folder
    env = gym.make(variant.env_id, cache=victim_cache, progress=False, render_mode="rgb_array")
    assert env.unwrapped.victim.name == tiny_victim.name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped, warn=True)
    # the one expected SB3 warning: "head_stats" is 2-D ([heads, features]) on purpose (tests/test_env.py)
    assert [str(w.message) for w in caught if "head_stats has an unconventional shape" not in str(w.message)] == []
    env.reset(seed=0)
    steps = 0
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(int(info_action(env)))
        steps += 1
        done = terminated or truncated
    assert steps <= variant.max_episode_steps and "is_success" in info


def info_action(env: gym.Env) -> int:
    return int(env.unwrapped.action_masks().nonzero()[0][0])


def test_uncached_victim_is_announced(tmp_path: Path, capsys: pytest.CaptureFixture[str], victim_cache: Path,
                                      tiny_victim: Victim) -> None:
    assert announce_victim_build("minilm-style", tmp_path)
    assert "not cached yet" in capsys.readouterr().err
    assert not announce_victim_build("tiny", victim_cache)  # cached: silent
    assert not announce_victim_build(tiny_victim, tmp_path)  # an object is never trained
