"""The RL conventions of issue 25 that Gymnasium, SB3 and sb3-contrib users expect: the step limit vs the pruning
budget in the spec, ``gym.make_vec`` options of the one-model vector env, and the 2-D ``head_stats`` SB3's
default policies take."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode

import headprune  # noqa: F401
from headprune.agents.policy_io import read_policy_file
from headprune.envs.vector import BatchedHeadPruneVectorEnv
from headprune.victims import Victim

ENV = "HeadPrune-Tiny-v0"
README = (Path(__file__).parents[1] / "README.md").read_text()


@pytest.fixture(scope="module")
def kwargs(tiny_victim: Victim, victim_cache: Path) -> dict[str, Any]:
    return {"victim": tiny_victim, "cache": victim_cache, "progress": False}


def test_spec_step_limit_counts_invalid_actions_and_valid_episodes_end_at_the_budget(kwargs):
    """Tiny's spec says max_episode_steps=8 and valid episodes end after 4 steps: the spec's limit is the env's
    max_steps (2 x budget, invalid actions included), kept on purpose and said in the README."""
    env = gym.make(ENV, accuracy_floor=0.0, **kwargs)  # no floor: the episode ends by the budget or the limit
    inner = env.unwrapped
    assert env.spec.max_episode_steps == inner.max_steps == 2 * inner.budget == 8
    env.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, term, trunc, _ = env.step(int(inner.action_masks().nonzero()[0][0]))
        steps, done = steps + 1, term or trunc
    assert steps == inner.budget and trunc and not term
    env.reset(seed=0)
    env.step(0)
    steps, done = 1, False
    while not done:  # the same pruned head again and again: no-ops until the step limit
        _, _, term, trunc, info = env.step(0)
        steps, done = steps + 1, term or trunc
    assert steps == env.spec.max_episode_steps and info["invalid_action"] and info["heads_pruned"] == 1
    assert "counts invalid actions" in README and "Kept on purpose" in README


def _run(envs: gym.vector.VectorEnv, steps: int) -> list[tuple]:
    rng = np.random.default_rng(0)
    obs, _ = envs.reset(seed=3)
    out = []
    for _ in range(steps):
        masks = obs["mask"].astype(bool)
        actions = np.array([int(rng.choice(np.flatnonzero(m))) for m in masks])
        obs, reward, term, trunc, info = envs.step(actions)
        out.append((obs, reward, term, trunc, info))
    return out


def test_make_vec_same_step_autoreset_matches_sync_vector_env(kwargs):
    """autoreset_mode is a keyword of the vector_entry_point (Gymnasium's contract: only kwargs reach it):
    SAME_STEP gives exactly SyncVectorEnv's SAME_STEP transitions, final_obs / final_info included."""
    one = gym.make_vec(ENV, num_envs=2, vectorization_mode="vector_entry_point",
                       autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)
    assert isinstance(one, BatchedHeadPruneVectorEnv) and one.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    sync = gym.make_vec(ENV, num_envs=2, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **kwargs)
    ends = 0
    for a, b in zip(_run(one, 10), _run(sync, 10)):
        for x, y in zip(a, b):
            assert data_equivalence(x, y, exact=True)
        ends += int((a[2] | a[3]).sum())
        if (a[2] | a[3]).any():
            assert "final_obs" in a[4] and "final_info" in a[4]
    assert ends >= 2
    assert gym.make_vec(ENV, num_envs=2, autoreset_mode="NextStep", **kwargs).metadata["autoreset_mode"] == \
        AutoresetMode.NEXT_STEP


def test_make_vec_refusals_say_why_and_what_to_use(kwargs):
    with pytest.raises(ValueError, match="DISABLED is not supported .* per-lane reset.*vectorization_mode='sync'"):
        gym.make_vec(ENV, num_envs=2, autoreset_mode=AutoresetMode.DISABLED, **kwargs)
    with pytest.raises(ValueError, match=r"copy \(SyncVectorEnv/AsyncVectorEnv\).*mode='sync' or 'async'"):
        gym.make_vec(ENV, num_envs=2, copy=False, **kwargs)
    with pytest.raises(ValueError, match="autoreset_mode must be one of"):
        gym.make_vec(ENV, num_envs=2, autoreset_mode="later", **kwargs)
    # Gymnasium refuses these itself in vector_entry_point mode, before headprune's code; sync takes them
    with pytest.raises(gym.error.Error, match="wrappers"):
        gym.make_vec(ENV, num_envs=2, wrappers=[gym.wrappers.RecordEpisodeStatistics], **kwargs)
    with pytest.raises(gym.error.Error, match="vector_kwargs"):
        gym.make_vec(ENV, num_envs=2, vector_kwargs={"copy": False}, **kwargs)
    sync = gym.make_vec(ENV, num_envs=2, vectorization_mode="sync", wrappers=[gym.wrappers.RecordEpisodeStatistics],
                        **kwargs)
    assert isinstance(sync, gym.vector.SyncVectorEnv)
    assert "vectorization_mode=\"sync\"" in README and "autoreset_mode" in README


def test_default_sb3_policy_takes_the_2d_head_stats(kwargs):
    """SB3's check_env warns that head_stats is 2-D; the layout is deliberate (one row per head, read by
    HeadScoringPolicy) and SB3's default MultiInputPolicy takes it as it is (its extractor flattens it)."""
    from stable_baselines3 import PPO

    env = gym.make(ENV, **kwargs)
    assert len(env.observation_space["head_stats"].shape) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning from building or running the default policy
        model = PPO("MultiInputPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0, device="cpu")
        model.learn(8)
        obs, _ = env.reset(seed=0)
        action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))
    assert "2-D on purpose" in README and "MultiInputPolicy" in README


def _train(tmp_path: Path, victim_cache: Path, vec_env: str, n_envs: int) -> Any:
    import yaml

    from headprune.agents import train
    from headprune.agents.hyperparams import CONFIG_DIR

    entry = yaml.safe_load((CONFIG_DIR / "maskable_ppo.yml").read_text())["HeadPrune-v0"]
    conf = tmp_path / f"conf-{vec_env}.yml"
    conf.write_text(yaml.safe_dump({ENV: entry}))
    return train("maskable_ppo", ENV, run_dir=tmp_path / vec_env, seed=0, n_timesteps=32,
                 env_kwargs={"victim": "tiny", "cache": str(victim_cache), "progress": False},
                 hyperparams={"n_envs": n_envs, "vec_env": vec_env, "n_steps": 8, "batch_size": 8, "n_epochs": 1,
                              "eval_freq": 0, "checkpoint_freq": 0},
                 tensorboard=False, conf_file=conf)


def _monitor_header(path: Path) -> list[str]:
    return path.read_text().splitlines()[1].split(",")


def test_batched_training_writes_the_same_run_folder_and_load_returns_the_sb3_model(tiny_victim, victim_cache,
                                                                                     tmp_path):
    """vec_env=batched wrote no monitor/ and no accuracy / proxy / heads-pruned columns (issue 25, item 16); and
    MaskablePPO.load(run/model.zip) failed with "No data found" (item 17): headprune.agents.load returns the model,
    and SB3's loader names it."""
    from sb3_contrib import MaskablePPO

    import headprune.agents as agents
    from headprune.agents.callbacks import INFO_KEYWORDS

    batched = _train(tmp_path, victim_cache, "batched", 2)
    dummy = _train(tmp_path, victim_cache, "dummy", 1)
    files = sorted(p.name for p in (batched.run_dir / "monitor").iterdir())
    assert files == ["0.monitor.csv", "1.monitor.csv"]
    header = _monitor_header(batched.run_dir / "monitor" / "0.monitor.csv")
    assert header == _monitor_header(dummy.run_dir / "monitor" / "0.monitor.csv")
    assert {"r", "l", "t", "clean_accuracy", "proxy", "heads_pruned"} <= set(header)
    assert set(INFO_KEYWORDS) <= set(header)
    rows = (batched.run_dir / "monitor" / "0.monitor.csv").read_text().splitlines()[2:]
    assert rows and all(len(r.split(",")) == len(header) for r in rows)
    progress = [json.loads(line) for line in (batched.run_dir / "progress.jsonl").read_text().splitlines()]
    assert "clean_accuracy" in json.dumps(progress[-1]) and "heads_pruned" in json.dumps(progress[-1])

    model = agents.load(batched.run_dir)  # the run's env and hyperparameters
    assert isinstance(model, MaskablePPO) and model.num_timesteps == batched.num_timesteps
    saved = read_policy_file(batched.run_dir / "model.zip")
    for name, tensor in model.policy.state_dict().items():
        assert torch.equal(tensor.cpu(), saved.weights[name]), name
    env = gym.make(ENV, victim=tiny_victim, cache=victim_cache, progress=False)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, action_masks=env.unwrapped.action_masks(), deterministic=True)
    assert env.unwrapped.action_masks()[int(action)]
    assert isinstance(agents.load(batched.run_dir / "model.zip", env), MaskablePPO)
    for path in (batched.run_dir / "model.zip", batched.run_dir / "model"):  # SB3 adds the .zip itself
        with pytest.raises(ValueError, match=r"headprune policy file .* headprune.agents.load\(path\)"):
            MaskablePPO.load(path)
    lone = tmp_path / "lone.zip"
    lone.write_bytes((batched.run_dir / "model.zip").read_bytes())
    with pytest.raises(ValueError, match="pass env="):
        agents.load(lone)
    assert "headprune.agents.load" in README
