"""HeadPrune-v0 on the tiny victim: Gymnasium/SB3 conventions, dynamics, reward, honesty, vector envs."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence

import headprune
from headprune.data import LabelledTexts
from headprune.envs import ENV_ID, register_envs
from headprune.envs.config import HeadPruneConfig
from headprune.envs.headprune_env import SUMMARY_FIELDS, HeadPruneEnv
from headprune.envs.proxies import DEFAULT_PROXY
from headprune.envs.reward import REWARD_TERMS, RewardTerms, RewardWeights, potential, step_reward
from headprune.envs.wrappers import make_headprune_env
from headprune.victims import Victim

# "pure_variance" costs microseconds per mask, so the tests exercise the env, not a proxy; the
# default proxy is used where the test is about defaults (gym.make without a proxy).
FAST = {"val_size": 96, "stats_size": 96, "proxy": "pure_variance", "progress": False}



@pytest.fixture(scope="module")
def kwargs(tiny_victim: Victim, victim_cache: Path) -> dict[str, Any]:
    return {"victim": tiny_victim, "cache": victim_cache, **FAST}


def make(kwargs: dict[str, Any], **extra: Any) -> HeadPruneEnv:
    return HeadPruneEnv(**{**kwargs, **extra})


def assert_reward_is_sum_of_terms(reward: float, terms: dict[str, float]) -> None:
    """The reward returned equals ``terms["total"]``, the signed sum of the named terms in registry order."""
    named = {k: v for k, v in terms.items() if k != "total"}
    assert set(named) <= set(REWARD_TERMS) and list(named) == [k for k in REWARD_TERMS if k in named]
    total: float | None = None
    for name, value in named.items():
        signed = value if REWARD_TERMS.get(name).sign > 0 else -value
        total = signed if total is None else total + signed
    assert reward == terms["total"] == total


def rollout(env: gym.Env, actions: list[int], seed: int = 0) -> list[tuple[Any, ...]]:
    """``[(obs, info), (obs, reward, terminated, truncated, info), ...]`` for ``actions`` (stops at the end);
    every step's reward is checked to be the sum of its reported terms."""
    out: list[tuple[Any, ...]] = [env.reset(seed=seed)]
    for a in actions:
        out.append(env.step(a))
        assert_reward_is_sum_of_terms(out[-1][1], out[-1][-1]["reward_terms"])
        if out[-1][2] or out[-1][3]:
            break
    return out


# ------------------------------------------------------------------------------------ reward terms
def test_reward_terms() -> None:
    w = RewardWeights(accuracy=2.0, proxy=3.0, invalid_action=0.1, floor=0.5)
    assert potential(0.75, 0.5, w) == 2.0 * 0.75 - 3.0 * 0.5
    t = step_reward(0.75, 0.5, 0.5, 0.25, invalid=False, crossed_floor=False, weights=w)
    assert t == RewardTerms(accuracy=2.0 * (0.5 - 0.75), proxy=-3.0 * (0.25 - 0.5), invalid_action=0.0, floor=0.0)
    assert t.total == -0.5 + 0.75
    assert t.total == potential(0.5, 0.25, w) - potential(0.75, 0.5, w)  # a potential difference
    invalid = step_reward(0.75, 0.5, 0.75, 0.5, invalid=True, crossed_floor=False, weights=w)
    assert (invalid.accuracy, invalid.proxy, invalid.total) == (0.0, 0.0, -0.1)
    crossed = step_reward(0.75, 0.5, 0.5, 0.5, invalid=False, crossed_floor=True, weights=w)
    assert crossed.floor == 0.5 and crossed.total == -0.5 - 0.5
    assert crossed.to_dict()["total"] == crossed.total
    assert list(crossed.to_dict()) == ["accuracy", "proxy", "invalid_action", "floor", "total"]
    assert [REWARD_TERMS.get(k).sign for k in REWARD_TERMS] == [1.0, 1.0, -1.0, -1.0, 1.0]
    bonus = crossed.with_finetune(0.25)
    assert bonus.to_dict() == {**crossed.values(), "finetune": 0.25, "total": crossed.total + 0.25}
    assert RewardWeights.coerce({"proxy": 2}) == RewardWeights(proxy=2.0)
    with pytest.raises(ValueError, match="unknown reward weights"):
        RewardWeights.coerce({"lfr": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        RewardWeights(floor=-1.0)


# ------------------------------------------------------------------------------------ registration
def test_import_registers_lightly() -> None:
    code = ("import sys, gymnasium as gym, headprune; assert 'HeadPrune-v0' in gym.registry; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'import headprune is heavy'")
    subprocess.run([sys.executable, "-c", code], check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_envs()  # idempotent: no "overriding environment" warning
    assert gym.spec(ENV_ID).entry_point == "headprune.envs.headprune_env:HeadPruneEnv"


def test_gym_make_default_proxy(tiny_victim: Victim, victim_cache: Path) -> None:
    assert headprune.__version__
    for env_id, victim in ((ENV_ID, tiny_victim), ("headprune:HeadPrune-v0", str(tiny_victim.path))):
        env = gym.make(env_id, victim=victim, cache=victim_cache, val_size=96, stats_size=96, progress=False)
        assert isinstance(env.unwrapped, HeadPruneEnv)
        assert env.unwrapped.proxy.name == DEFAULT_PROXY
        obs, info = env.reset(seed=0)
        assert obs in env.observation_space
        obs, reward, terminated, truncated, info = env.step(0)
        assert obs in env.observation_space and isinstance(reward, float)
        env.close()


# ------------------------------------------------------------------------------------ checkers
def test_gymnasium_check_env(kwargs: dict[str, Any]) -> None:
    from gymnasium.utils.env_checker import check_env

    env = gym.make(ENV_ID, **{**kwargs, "accuracy_floor": 0.0})  # through gym.make: render modes are checked too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []


def test_sb3_check_env(kwargs: dict[str, Any]) -> None:
    from stable_baselines3.common.env_checker import check_env

    env = make(kwargs, accuracy_floor=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, warn=True)
    messages = [str(w.message) for w in caught]
    # The one expected warning: "head_stats" is 2-D ([heads, features]) on purpose, one row per head
    # for per-head (permutation-equivariant) policies; SB3's MultiInputPolicy flattens it anyway.
    expected = [m for m in messages if "observation head_stats has an unconventional shape" in m]
    assert len(expected) == 1 and [m for m in messages if m not in expected] == []


# ------------------------------------------------------------------------------------ spaces, determinism
def test_spaces_and_observation(kwargs: dict[str, Any]) -> None:
    env = make(kwargs, budget=3)
    L, H = env.head_shape
    n = L * H
    assert env.action_space == gym.spaces.Discrete(n)
    assert env.observation_space["mask"] == gym.spaces.MultiBinary(n)
    assert env.observation_space["head_stats"].shape == (n, len(env.head_stats.names))
    assert env.observation_space["summary"].shape == (len(SUMMARY_FIELDS),)
    obs, info = env.reset(seed=3)
    assert obs["mask"].dtype == np.int8 and obs["mask"].tolist() == [1] * n
    assert obs["head_stats"].dtype == np.float32 and obs["summary"].dtype == np.float32
    np.testing.assert_array_equal(obs["head_stats"], env.head_stats.normalised().as_features().numpy())
    acc0, p0 = info["clean_accuracy"], info["proxy"]
    assert acc0 == env.start_score.accuracy and info["heads_pruned"] == 0
    np.testing.assert_array_equal(obs["summary"], np.array([acc0, 0, p0, 0, 0, 1], dtype=np.float32))
    obs, _, _, _, info = env.step(5)
    expected = [info["clean_accuracy"], acc0 - info["clean_accuracy"], info["proxy"], info["proxy"] - p0,
                1 / n, 2 / 3]
    np.testing.assert_array_equal(obs["summary"], np.array(expected, dtype=np.float32))
    assert obs["mask"][5] == 0 and obs["mask"].sum() == n - 1
    # statistics, the proxy and the accuracy use disjoint rows of the defender's clean data
    assert not set(env.val_data.sentences) & set(env.stats_data.sentences)
    assert set(env.stats_data.sentences) <= set(env.train_data.sentences)


def test_same_seed_same_actions_identical(kwargs: dict[str, Any]) -> None:
    actions = [4, 1, 1, 7, 0, 2]
    a = rollout(make(kwargs, accuracy_floor=0.0), actions, seed=11)
    b = rollout(make(kwargs, accuracy_floor=0.0), actions, seed=11)
    assert len(a) == len(b) > 1
    for x, y in zip(a, b, strict=True):
        assert data_equivalence(x, y, exact=True)


def test_action_masks_and_invalid_action_is_penalised_noop(kwargs: dict[str, Any]) -> None:
    env = make(kwargs, accuracy_floor=0.0, budget=4)
    obs, info = env.reset(seed=0)
    assert env.action_masks().dtype == bool and env.action_masks().all()
    obs, r1, *_, info = env.step(2)
    np.testing.assert_array_equal(env.action_masks(), obs["mask"] == 1)
    np.testing.assert_array_equal(info["action_mask"], obs["mask"] == 1)
    assert not info["invalid_action"] and not env.action_masks()[2]
    obs2, r2, terminated, truncated, info2 = env.step(2)  # already pruned: no-op with a penalty
    assert info2["invalid_action"] and r2 == -env.weights.invalid_action
    assert not terminated and not truncated
    for key in ("mask", "summary", "head_stats"):
        np.testing.assert_array_equal(obs2[key], obs[key])
    assert info2["heads_pruned"] == 1 and info2["steps"] == 2
    assert info2["reward_terms"]["invalid_action"] == env.weights.invalid_action
    assert_reward_is_sum_of_terms(r1, info["reward_terms"])
    assert_reward_is_sum_of_terms(r2, info2["reward_terms"])


# ------------------------------------------------------------------------------------ episode ends
def test_truncation_at_budget_and_max_steps(kwargs: dict[str, Any]) -> None:
    env = make(kwargs, accuracy_floor=0.0, budget=3)
    env.reset(seed=0)
    ends = [env.step(a)[2:4] for a in (0, 1, 1, 2)]
    assert ends == [(False, False)] * 3 + [(False, True)]  # the 3rd distinct head ends it
    with pytest.raises(RuntimeError, match="reset"):
        env.step(3)
    env = make(kwargs, accuracy_floor=0.0, budget=3, max_steps=4)
    env.reset(seed=0)
    ends = [env.step(a)[2:4] for a in (0, 0, 0, 0)]
    assert ends == [(False, False)] * 3 + [(False, True)]  # invalid steps count toward max_steps


def test_termination_below_floor_and_best_mask(kwargs: dict[str, Any]) -> None:
    env = make(kwargs, max_accuracy_drop=0.0, budget=8)  # every head of the tiny 2 x 4 grid
    acc0 = env.start_score.accuracy
    assert env.accuracy_floor == acc0
    obs, info = env.reset(seed=0)
    rewards: list[float] = []
    for a in range(env.action_space.n):
        obs, reward, terminated, truncated, info = env.step(a)
        assert_reward_is_sum_of_terms(reward, info["reward_terms"])
        rewards.append(reward)
        if terminated or truncated:
            break
    assert terminated and not truncated, "pruning every head never lowered the tiny victim's accuracy"
    assert info["clean_accuracy"] < env.accuracy_floor
    assert info["reward_terms"]["floor"] == env.weights.floor
    assert info["best_mask"][a] == 1, "best_mask includes the step that crossed the floor"
    assert info["best_accuracy"] >= env.accuracy_floor
    # the return telescopes: Phi(s_T) - Phi(s_0) minus penalties
    phi = potential(info["clean_accuracy"], info["proxy"], env.weights) - potential(acc0, env.start_score.proxy, env.weights)
    assert math.isclose(sum(rewards), phi - env.weights.floor, abs_tol=1e-9)
    with pytest.raises(ValueError, match="not both"):
        make(kwargs, accuracy_floor=0.5, max_accuracy_drop=0.1)
    with pytest.raises(ValueError, match="already below"):
        make(kwargs, accuracy_floor=1.01)


def test_config_object_and_val_data(kwargs: dict[str, Any]) -> None:
    fields = {k: v for k, v in kwargs.items() if k != "victim"}
    env = HeadPruneEnv(kwargs["victim"], HeadPruneConfig(**fields, budget=3))
    assert env.config == HeadPruneConfig(**fields, budget=3) and env.budget == 3
    assert len(env.val_data) == 96
    assert not hasattr(env, "eval_data")
    with pytest.raises(ValueError, match="val_size must be in"):
        make(kwargs, val_size=10_000)
    for name in ("eval_size", "poisoned_eval", "finetune_terminal"):  # an old name; wrapper keywords
        with pytest.raises(ValueError, match=rf"unknown HeadPrune-v0 option\(s\) \['{name}'\]"):
            make(kwargs, **{name: None})
        with pytest.raises(ValueError, match=name):
            gym.make(ENV_ID, **kwargs, **{name: None})


# ------------------------------------------------------------------------------------ honesty
@pytest.mark.parametrize("operation", ["prune", "prune+reset+mix"])
def test_lfr_only_in_info_and_never_read(kwargs: dict[str, Any], tiny_victim: Victim, operation: str) -> None:
    poisoned = tiny_victim.splits().poisoned_dev.take(64)
    rng = np.random.default_rng(0)
    scrambled = LabelledTexts(poisoned.sentences, tuple(int(y) for y in rng.integers(0, 2, len(poisoned))))
    actions = [3, 6, 6, 0, 5] + ([16, 20, 9, 20] if "mix" in operation else [])  # mix blocks 0 and 4, reset head 1
    extra = {"operation": operation, "mix_levels": 3, "budget": 9} if "mix" in operation else {}
    runs = [rollout(make_headprune_env(**kwargs, accuracy_floor=0.0, poisoned_eval=p, **extra), actions, seed=5)
            for p in (None, poisoned, scrambled)]
    plain, with_lfr, with_scrambled = runs
    assert all("lfr" not in step[-1] for step in plain)
    assert all(0.0 <= step[-1]["lfr"] <= 1.0 for step in with_lfr)
    for other in (with_lfr, with_scrambled):
        for x, y in zip(plain, other, strict=True):
            assert data_equivalence(x[:-1], y[:-1], exact=True)  # observations (and rewards, ends)
            info = {k: v for k, v in y[-1].items() if k not in ("lfr", "best_lfr")}
            assert data_equivalence(x[-1], info, exact=True)


# ------------------------------------------------------------------------------------ render, stats cache
def test_render_ansi(kwargs: dict[str, Any]) -> None:
    env = make(kwargs, render_mode="ansi", accuracy_floor=0.0)
    env.reset(seed=0)
    env.step(1)
    env.step(6)
    text = env.render()
    assert isinstance(text, str)
    rows = [line.split() for line in text.splitlines() if line.startswith("L")]
    assert rows == [["L0", "#", ".", "#", "#"], ["L1", "#", "#", ".", "#"]]
    assert "h3" in text and "pruned 2/4" in text
    for mode in (None,):  # "rgb_array" renders frames now (issue 14): tests/test_rendering.py
        with pytest.warns(UserWarning, match="renders only render_mode='ansi'"):
            assert make(kwargs, render_mode=mode).render() is None


def test_head_stats_cached_on_disk(kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    env = make(kwargs)
    files = list((Path(kwargs["cache"]) / "head_stats").glob(f"{env.victim.name}-*.json"))
    assert files
    import headprune.envs.stats_cache as module

    def fail(*_a: Any, **_k: Any) -> None:
        raise AssertionError("head statistics were recomputed instead of read from the cache")

    monkeypatch.setattr(module, "compute_head_stats", fail)
    assert make(kwargs).head_stats == env.head_stats


# ------------------------------------------------------------------------------------ fine-tune option
def test_finetune_terminal(kwargs: dict[str, Any]) -> None:
    env = make_headprune_env(**{**kwargs, "proxy": "random_word_flip"}, accuracy_floor=0.0, budget=1,
                             finetune_terminal=True, finetune_config={"max_steps": 2, "batch_size": 16})
    plain = make(kwargs, accuracy_floor=0.0, budget=1, proxy="random_word_flip")
    env.reset(seed=0)
    plain.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(3)
    _, plain_reward, *_, plain_info = plain.step(3)
    assert truncated and not terminated
    ft = info["finetune"]
    assert ft["steps"] == 2 and ft["seconds"] > 0 and 0 <= ft["accuracy"] <= 1
    weights = env.unwrapped.weights
    adjust = potential(ft["accuracy"], ft["proxy"], weights) - potential(info["clean_accuracy"], info["proxy"], weights)
    assert reward == plain_info["reward_terms"]["total"] + adjust == plain_reward + adjust
    # the bonus is a named term: the reward returned is the total of the terms reported
    assert info["reward_terms"]["finetune"] == adjust and "finetune" not in plain_info["reward_terms"]
    assert_reward_is_sum_of_terms(reward, info["reward_terms"])
    assert env.unwrapped.model is kwargs["victim"].model  # the victim itself was not fine-tuned


# ------------------------------------------------------------------------------------ vector envs
def test_subproc_vec_env_spawn(kwargs: dict[str, Any], tiny_victim: Victim) -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    env_kwargs = {**kwargs, "victim": str(tiny_victim.path), "cache": str(kwargs["cache"]),
                  "accuracy_floor": 0.0, "budget": 2}
    vec = make_vec_env("headprune:HeadPrune-v0", n_envs=2, seed=0, env_kwargs=env_kwargs,
                       vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "spawn"})
    try:
        obs = vec.reset()
        assert obs["mask"].shape == (2, 8) and (obs["mask"] == 1).all()
        local = make(kwargs, accuracy_floor=0.0, budget=2)
        expected = rollout(local, [1, 4])
        obs, rewards, dones, infos = vec.step(np.array([1, 5]))
        assert rewards[0] == expected[1][1] and not dones.any()
        assert obs["mask"][0, 1] == 0 and obs["mask"][1, 5] == 0
        masks = vec.env_method("action_masks")
        assert not masks[0][1] and not masks[1][5] and masks[0].sum() == 7
        obs, rewards, dones, infos = vec.step(np.array([4, 4]))
        assert rewards[0] == expected[2][1]
        assert dones.all() and all(info["TimeLimit.truncated"] for info in infos)  # budget 2 reached
        assert (obs["mask"] == 1).all()  # auto-reset
        assert infos[0]["terminal_observation"]["mask"].sum() == 6
    finally:
        vec.close()
