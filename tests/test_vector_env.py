"""The batched vector env: one model, N lanes, exactly the transitions of N single envs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence

import headprune  # noqa: F401
from headprune.envs.vector import BatchedHeadPruneVectorEnv, SB3BatchedVecEnv
from headprune.victims import Victim

ENV = "HeadPrune-Tiny-v0"
N = 3


@pytest.fixture(scope="module")
def kwargs(tiny_victim: Victim, victim_cache: Path) -> dict[str, Any]:
    return {"victim": tiny_victim, "cache": victim_cache, "progress": False}


def _actions(rng: np.random.Generator, masks: np.ndarray, invalid_every: int, t: int) -> np.ndarray:
    """A valid action per env, except every ``invalid_every``-th step (an already pruned head when any)."""
    out = []
    for m in masks:
        pool = np.flatnonzero(~m) if t % invalid_every == 0 and (~m).any() else np.flatnonzero(m)
        out.append(int(rng.choice(pool)))
    return np.array(out)


def test_make_vec_gives_one_model_batched_vector_env(kwargs: dict[str, Any]) -> None:
    envs = gym.make_vec(ENV, num_envs=N, vectorization_mode="vector_entry_point", **kwargs)
    assert isinstance(envs, BatchedHeadPruneVectorEnv) and isinstance(envs, gym.vector.VectorEnv)
    lanes = envs.lanes.lanes
    assert len({id(lane.model) for lane in lanes}) == 1 and len({id(lane.evaluator) for lane in lanes}) == 1
    obs, info = envs.reset(seed=7)
    assert obs in envs.observation_space
    assert envs.lanes.lane_seeds == [7, 8, 9]  # distinct seeds, logged
    assert envs.action_masks().shape == (N, envs.single_action_space.n)
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    assert envs.lanes.scoring == "incremental"  # "auto" on the CPU
    assert len({id(lane.scorer.memo) for lane in lanes}) == 1  # one memo for all lanes
    envs.close()


@pytest.mark.parametrize("scoring", ["batched", "incremental"])
def test_rewards_identical_to_single_envs_to_the_last_bit(kwargs: dict[str, Any], scoring: str) -> None:
    batched = gym.make_vec(ENV, num_envs=N, vectorization_mode="vector_entry_point", scoring=scoring, **kwargs)
    assert batched.lanes.scoring == scoring
    sync = gym.make_vec(ENV, num_envs=N, vectorization_mode="sync", **kwargs)  # N separate envs (incremental forward)
    rng = np.random.default_rng(0)
    obs_b, _ = batched.reset(seed=3)
    obs_s, _ = sync.reset(seed=3)
    assert data_equivalence(obs_b, obs_s, exact=True)
    ends = 0
    for t in range(1, 25):  # several episodes per env (budget 4, limit 8): autoreset exercised
        masks = obs_s["mask"].astype(bool)
        actions = _actions(rng, masks, invalid_every=5, t=t)
        step_b = batched.step(actions)
        step_s = sync.step(actions)
        for x, y in zip(step_b[:4], step_s[:4]):
            assert data_equivalence(x, y, exact=True)
        assert step_b[1].tobytes() == step_s[1].tobytes()  # the rewards, bit for bit
        assert data_equivalence(step_b[4], step_s[4], exact=True)  # infos too (is_success, reward_terms, ...)
        obs_s = step_s[0]
        ends += int((step_b[2] | step_b[3]).sum())
    assert ends >= N  # every env finished at least one episode
    batched.close()
    sync.close()


def test_sb3_adapter_matches_dummy_vec_env_and_trains_maskable_ppo(kwargs: dict[str, Any]) -> None:
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks
    from stable_baselines3.common.vec_env import DummyVecEnv

    adapter = SB3BatchedVecEnv.from_env_id(ENV, N, scoring="batched", **kwargs)
    dummy = DummyVecEnv([lambda: gym.make(ENV, **kwargs) for _ in range(N)])
    adapter.seed(1)
    dummy.seed(1)
    obs_a, obs_d = adapter.reset(), dummy.reset()
    assert data_equivalence(obs_a, dict(obs_d), exact=True)
    rng = np.random.default_rng(1)
    saw_end = False
    for t in range(1, 13):
        masks = get_action_masks(adapter)
        assert np.array_equal(masks, get_action_masks(dummy))
        actions = _actions(rng, masks, invalid_every=7, t=t)
        a, d = adapter.step(actions), dummy.step(actions)
        assert data_equivalence(a[0], dict(d[0]), exact=True)
        assert a[1].tobytes() == d[1].tobytes() and np.array_equal(a[2], d[2])
        for ia, idd in zip(a[3], d[3]):
            if "terminal_observation" in idd:
                saw_end = True
                assert data_equivalence(ia["terminal_observation"], idd["terminal_observation"], exact=True)
                assert ia["episode"]["l"] >= 1 and "is_success" in ia
    assert saw_end
    model = MaskablePPO("MultiInputPolicy", adapter, n_steps=8, batch_size=12, n_epochs=1, seed=0)
    model.learn(total_timesteps=N * 8)
    assert model.num_timesteps >= N * 8 and len(model.ep_info_buffer) > 0
