"""The registered HeadPrune ids: every one constructible, limited, vectorisable; checkers on the fast ones."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
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


# ------------------------------------------------------------------ every registered id, MiniGrid style
FAST_IDS: tuple[str, ...] = tuple(v.env_id for v in VARIANTS if v.builds_in_seconds)
"""Ids whose victim builds in seconds (the tiny preset): made, checked, rolled out and pickled below."""

SLOW_IDS: tuple[str, ...] = (
    "HeadPrune-v0",
    "HeadPrune-MiniLM-Syntactic-v0",
    "HeadPrune-MiniLM-Style-v0",
    "HeadPrune-MiniLM-BadNets-v0",
    "HeadPrune-MiniLM-AddSent-v0",
    "HeadPrune-MiniLM-Syntactic-Fast-v0",
    "HeadPrune-MiniLM-Syntactic-Mix-v0",
    "HeadPrune-MiniLM-Syntactic-MixOnly-v0",
    "HeadPrune-Fast-v0",
)
"""Ids whose victim is a MiniLM trained for 10-40 minutes on a 2-core CPU (or loaded from a cache the test
machine does not have): their specs are checked and serialised here, but they are not made."""


def test_every_id_is_either_fast_or_listed_as_slow() -> None:
    ids = [v.env_id for v in VARIANTS]
    assert sorted(FAST_IDS + SLOW_IDS) == sorted(ids) and not set(FAST_IDS) & set(SLOW_IDS)
    assert all(gym.spec(env_id).kwargs["victim"] == "tiny" for env_id in FAST_IDS)


@pytest.mark.parametrize("env_id", [v.env_id for v in VARIANTS])
def test_spec_serialises_to_json_and_back(env_id: str) -> None:
    from gymnasium.envs.registration import EnvSpec

    spec = gym.spec(env_id)
    assert EnvSpec.from_json(spec.to_json()) == spec


def _rollout(env: gym.Env, seed: int, steps: int) -> list[tuple]:
    """``steps`` steps of seeded valid random actions (episodes restarted), as comparable tuples."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    out: list[tuple] = [(tuple(np.asarray(v).tobytes() for v in obs.values()), info["clean_accuracy"])]
    for _ in range(steps):
        valid = np.flatnonzero(env.unwrapped.action_masks())
        obs, reward, terminated, truncated, info = env.step(int(rng.choice(valid)))
        out.append((tuple(np.asarray(v).tobytes() for v in obs.values()), float(reward), terminated, truncated,
                    info["clean_accuracy"], info["proxy"], info["best_mask"].tobytes()))
        if terminated or truncated:
            obs, info = env.reset()
    return out


@pytest.mark.parametrize("env_id", FAST_IDS)
def test_fast_ids_roll_out_deterministically(env_id: str, tiny_victim: Victim, victim_cache: Path) -> None:
    """Two envs of one id and seed give bit-identical observations, rewards, ends and infos."""
    first = _rollout(gym.make(env_id, cache=victim_cache, progress=False), seed=3, steps=12)
    second = _rollout(gym.make(env_id, cache=victim_cache, progress=False), seed=3, steps=12)
    assert first == second and len(first) == 13


@pytest.mark.parametrize("env_id", FAST_IDS)
def test_fast_ids_pickle_mid_episode(env_id: str, tiny_victim: Victim, victim_cache: Path) -> None:
    """An env pickled mid-episode continues exactly as the original (the MiniGrid test)."""
    import pickle

    env = gym.make(env_id, cache=victim_cache, progress=False)
    env.reset(seed=0)
    env.step(info_action(env))
    clone = pickle.loads(pickle.dumps(env))
    for _ in range(2):
        action = info_action(env)
        a, b = env.step(action), clone.step(action)
        assert all(np.array_equal(a[0][k], b[0][k]) for k in a[0]) and a[1:4] == b[1:4]
        assert a[4]["clean_accuracy"] == b[4]["clean_accuracy"] and np.array_equal(a[4]["best_mask"], b[4]["best_mask"])
