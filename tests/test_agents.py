"""RL agents on the tiny victim: zoo-style YAML, training runs and their folders, resume, masking,
plain PPO, the size-agnostic policy and its transfer to a model of another size, ``headprune
evaluate`` and determinism. Runs are a few dozen env steps (seconds); torch is pinned to 1 thread."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from tiny_models import write_labelled_tsv

from headprune.agents import (
    AgentPolicy,
    HeadScoringPolicy,
    MaskableHeadScoringPolicy,
    evaluate_agent,
    latest_checkpoint,
    load_hyperparams,
    load_policy,
    resume,
    train,
)
from headprune.agents.hyperparams import CONFIG_DIR, algo_kwargs
from headprune.agents.rl_training import INFO_KEYWORDS
from headprune.defenses import DefenseFineTune, defend
from headprune.envs.config import HeadPruneConfig
from headprune.cli import main
from headprune.envs.head_space import HeadFlags
from headprune.envs.headprune_env import HeadPruneEnv
from headprune.engine.head_stats import FEATURE_NAMES
from headprune.engine.models import build_tiny_classifier
from headprune.victims import VictimConfig

# a few steps per rollout, one epoch: each run is seconds on the tiny victim
FAST_HP: dict[str, Any] = {"n_steps": 8, "batch_size": 8, "n_epochs": 1, "eval_freq": 0, "checkpoint_freq": 8}


@pytest.fixture(scope="module")
def env_kwargs(tiny_victim, victim_cache: Path) -> dict[str, Any]:
    """Env keyword arguments for the tiny victim (a preset name, so run folders stay serialisable)."""
    return {"victim": "tiny", "cache": str(victim_cache), "val_size": 80, "stats_size": 64, "progress": False}


class InvalidActionCounter(BaseCallback):
    """Counts env steps whose action pruned an already pruned head."""

    def __init__(self) -> None:
        super().__init__()
        self.invalid = 0
        self.steps = 0

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            self.steps += 1
            self.invalid += bool(info.get("invalid_action", False))
        return True


class Crash(BaseCallback):
    """Raises at ``at`` timesteps: a run that dies between checkpoints."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.at:
            raise RuntimeError("simulated kill")
        return True


@pytest.fixture(scope="module")
def trained(env_kwargs, tmp_path_factory) -> tuple[Any, InvalidActionCounter]:
    """A MaskablePPO run of 24 steps (checkpoints every 8, evaluation at 16) and its invalid-action count."""
    counter = InvalidActionCounter()
    run_dir = tmp_path_factory.mktemp("agents") / "maskable"
    result = train("maskable_ppo", run_dir=run_dir, seed=0, env_kwargs=env_kwargs,
                   hyperparams={**FAST_HP, "eval_freq": 16}, n_timesteps=24, callbacks=[counter])
    return result, counter


@pytest.fixture(scope="module")
def other_victim(tmp_path_factory, env_kwargs) -> Path:
    """A victim folder holding a random-init 3-layer x 2-head BERT (6 heads; the tiny victim has 2 x 4)."""
    from headprune.victims import CARD_FILE

    folder = tmp_path_factory.mktemp("victims") / "tiny-3x2"
    model, tokenizer = build_tiny_classifier(seed=1, num_layers=3, num_heads=2, hidden=32)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    config = VictimConfig(model="tiny", attack="badnets", epochs=0.0, lr=1e-3, batch_size=32, max_length=64, seed=1)
    (folder / CARD_FILE).write_text(json.dumps({"name": "tiny-3x2", "config": asdict(config)}))
    return folder


def _episode(policy: AgentPolicy, env: HeadPruneEnv, deterministic: bool = True) -> tuple[list[int], bool]:
    """Actions of one episode with masks, and whether every action was valid."""
    obs, _ = env.reset(seed=0)
    actions, valid = [], True
    while True:
        mask = env.action_masks()
        action, _ = policy.predict(obs, deterministic=deterministic, action_masks=mask)
        a = int(action)
        actions.append(a)
        valid &= bool(mask[a])
        obs, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            return actions, valid


def _dict_space(n: int) -> spaces.Dict:
    f = len(FEATURE_NAMES)
    return spaces.Dict({"mask": spaces.MultiBinary(n),
                        "head_stats": spaces.Box(-np.sqrt(n), np.sqrt(n), (n, f), np.float32),
                        "summary": spaces.Box(-1.0, 1.0, (6,), np.float32)})


# ------------------------------------------------------------------------------------------ YAML
def test_shipped_yaml_loads_and_schedules_parse():
    for algo in ("maskable_ppo", "ppo"):
        hp = load_hyperparams(algo)
        assert hp["n_envs"] >= 1 and hp["n_timesteps"] >= 1 and hp["policy"] == "HeadScoringPolicy"
        assert hp["env_kwargs"]["victim"] == "minilm-syntactic"
        kwargs = algo_kwargs(hp, algo)
        lr = kwargs["learning_rate"]
        assert lr(1.0) == pytest.approx(3e-4) and lr(0.5) == pytest.approx(1.5e-4) and lr(0.0) == 0.0
        assert kwargs["policy"] is (MaskableHeadScoringPolicy if algo == "maskable_ppo" else HeadScoringPolicy)
        assert not {"n_envs", "n_timesteps", "env_kwargs", "checkpoint_freq"} & set(kwargs)
    assert load_hyperparams(overrides={"env_kwargs": {"budget": 3}})["env_kwargs"] == {
        **load_hyperparams()["env_kwargs"], "budget": 3}  # env_kwargs merge key by key
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"agents/configs/*.yml"' in pyproject and (CONFIG_DIR / "maskable_ppo.yml").is_file()


def test_bad_hyperparameters_are_named(tmp_path):
    with pytest.raises(ValueError, match="learning_rate"):
        algo_kwargs({**load_hyperparams(), "learning_rate": "lin_fast"}, "maskable_ppo")
    with pytest.raises(ValueError, match="n_stepz"):
        load_hyperparams(overrides={"n_stepz": 8})
    with pytest.raises(ValueError, match="algo"):
        load_hyperparams("dqn")
    with pytest.raises(FileNotFoundError, match="conf_file"):
        load_hyperparams(conf_file=tmp_path / "none.yml")
    (tmp_path / "other.yml").write_text("CartPole-v1:\n  n_timesteps: 10\n")
    with pytest.raises(ValueError, match="HeadPrune-v0"):
        load_hyperparams(conf_file=tmp_path / "other.yml")
    with pytest.raises(ValueError, match="poisoned_eval"):
        train(run_dir=tmp_path / "r", env_kwargs={"poisoned_eval": "p.tsv"})
    with pytest.raises(ValueError, match="env_kwargs.victim"):
        train(run_dir=tmp_path / "r", env_kwargs={"victim": object()})
    with pytest.raises(ValueError, match=r"disagree on \['victim'\]"):
        train(run_dir=tmp_path / "r", env_kwargs={"victim": "tiny"}, hyperparams={"env_kwargs": {"victim": "x"}})


# ------------------------------------------------------------------------------------------ training runs
def test_training_saves_config_seed_versions_command(trained):
    result, _ = trained
    run = result.run_dir
    assert result.end == "done" and result.num_timesteps == 24
    config = yaml.safe_load((run / "config.yml").read_text())["HeadPrune-v0"]
    assert config["n_timesteps"] == 24 and config["n_steps"] == 8 and config["learning_rate"] == "lin_3e-4"
    assert config["env_kwargs"]["victim"] == "tiny"
    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == 0 and info["algo"] == "maskable_ppo"
    assert info["versions"]["versions"]["stable-baselines3"] and info["versions"]["versions"]["torch"]
    (session,) = info["sessions"]
    assert session["command"].startswith("headprune.agents.train(") and session["end"] == "done"
    assert session["start_timesteps"] == 0 and session["end_timesteps"] == 24
    assert (run / "model.zip").is_file() and latest_checkpoint(run).name == "rl_model_24_steps.zip"
    assert (run / "checkpoints" / "rl_model_8_steps.zip").is_file()
    lines = (run / "monitor" / "0.monitor.csv").read_text().splitlines()
    header = next(csv.reader(lines[1:2]))
    assert set(INFO_KEYWORDS) <= set(header) and len(lines) > 2  # episodes with clean accuracy, proxy, heads pruned
    assert any((run / "tb").rglob("events.out.tfevents.*"))
    assert (run / "eval" / "evaluations.npz").is_file()
    rows = [json.loads(x) for x in (run / "progress.jsonl").read_text().splitlines()]
    assert [r["num_timesteps"] for r in rows] == [8, 16, 24]
    with pytest.raises(ValueError, match="already holds a run"):
        train(run_dir=run)


def test_maskable_ppo_never_picks_a_masked_action(trained, env_kwargs):
    result, counter = trained
    assert counter.steps == 24 and counter.invalid == 0  # during training (stochastic actions)
    env = HeadPruneEnv(**env_kwargs)
    policy = load_policy(result.run_dir, env)
    assert policy.mask_aware
    for _ in range(3):
        _, valid = _episode(policy, env, deterministic=False)
        assert valid
    # the masked distribution puts zero probability on pruned heads
    obs, _ = env.reset(seed=0)
    for a in (0, 5):
        obs, *_ = env.step(a)
    t_obs, _ = policy.policy.obs_to_tensor(obs)
    with torch.no_grad():
        probs = policy.policy.get_distribution(t_obs, action_masks=env.action_masks()).distribution.probs[0]
    assert float(probs[0]) == 0.0 and float(probs[5]) == 0.0 and float(probs.sum()) == pytest.approx(1.0)


def test_plain_ppo_runs(env_kwargs, tmp_path):
    weights = {"proxy": 0.5}  # env_kwargs given both ways are merged, none dropped
    result = train("ppo", run_dir=tmp_path / "ppo", seed=0, env_kwargs=env_kwargs, n_timesteps=8, tensorboard=False,
                   hyperparams={**FAST_HP, "checkpoint_freq": 0, "env_kwargs": {"reward_weights": weights}})
    assert result.end == "done" and result.num_timesteps == 8
    (saved,) = yaml.safe_load((tmp_path / "ppo" / "config.yml").read_text()).values()
    assert saved["env_kwargs"]["reward_weights"] == weights
    assert saved["env_kwargs"]["victim"] == env_kwargs["victim"]
    env = HeadPruneEnv(**env_kwargs)
    policy = load_policy(result.model_path, env)
    assert isinstance(policy.policy, HeadScoringPolicy) and not policy.mask_aware
    obs, _ = env.reset(seed=0)
    action, _ = policy.predict(obs, action_masks=env.action_masks())  # masks accepted, not used
    assert 0 <= int(action) < env.action_space.n


def test_resume_continues_from_the_last_checkpoint(env_kwargs, tmp_path):
    run = tmp_path / "crash"
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(run_dir=run, seed=0, env_kwargs=env_kwargs, hyperparams=FAST_HP, n_timesteps=24,
              tensorboard=True, callbacks=[Crash(at=12)])
    info = json.loads((run / "run.json").read_text())
    assert info["sessions"][0]["end"].startswith("error: RuntimeError")
    assert latest_checkpoint(run).name == "rl_model_8_steps.zip"
    episodes_before = len((run / "monitor" / "0.monitor.csv").read_text().splitlines())

    assert main(["train", "--resume", str(run)]) == 0  # the CLI path of resume
    info = json.loads((run / "run.json").read_text())
    _, second = info["sessions"]
    assert second["resumed_from"].endswith("rl_model_8_steps.zip") and second["start_timesteps"] == 8
    assert second["end"] == "done" and second["end_timesteps"] == 24
    assert second["command"].startswith(f"headprune train --algo maskable_ppo --env HeadPrune-v0 --resume {run}")
    rows = [json.loads(x) for x in (run / "progress.jsonl").read_text().splitlines()]
    assert [(r["session"], r["num_timesteps"]) for r in rows] == [(0, 8), (1, 16), (1, 24)]
    assert latest_checkpoint(run).name == "rl_model_24_steps.zip"
    assert len((run / "monitor" / "0.monitor.csv").read_text().splitlines()) > episodes_before  # appended
    assert len(list((run / "tb").iterdir())) == 1  # the same TensorBoard run continues
    # a finished run has nothing left to do; a longer target continues it
    assert resume(run).num_timesteps == 24
    assert resume(run, n_timesteps=32).num_timesteps == 32
    with pytest.raises(FileNotFoundError, match="run.json"):
        resume(tmp_path)


# ------------------------------------------------------------------------------------------ size-agnostic policy
def test_policy_parameters_do_not_depend_on_the_number_of_heads():
    shapes = {}
    for head_shape in ((2, 4), (3, 2), (6, 12), (1, 1)):
        n = head_shape[0] * head_shape[1]
        for cls in (MaskableHeadScoringPolicy, HeadScoringPolicy):
            policy = cls(_dict_space(n), spaces.Discrete(n), lambda _: 1e-3, head_shape=head_shape)
            shapes.setdefault(cls, set()).add(tuple((k, tuple(v.shape)) for k, v in policy.state_dict().items()))
            logits = policy.get_distribution(policy.obs_to_tensor(_dict_space(n).sample())[0]).distribution.logits
            assert logits.shape == (1, n)
    assert all(len(s) == 1 for s in shapes.values())  # identical state-dict keys and shapes for every L x H
    with pytest.raises(ValueError, match="head_shape"):
        MaskableHeadScoringPolicy(_dict_space(8), spaces.Discrete(8), lambda _: 1e-3, head_shape=(3, 2))
    with pytest.raises(ValueError, match="not a HeadFlags"):  # a flat MultiBinary does not say (L, H)
        MaskableHeadScoringPolicy(_dict_space(8), spaces.Discrete(8), lambda _: 1e-3)


def test_rl_zoo3_trains_the_exported_entry(tiny_victim, victim_cache, tmp_path):
    """rl-baselines3-zoo's own trainer (``python -m rl_zoo3.train``, optional: ``pip install -e '.[zoo]'``)
    trains plain PPO from the exported entry and saves a model: the zoo route of the README."""
    pytest.importorskip("rl_zoo3")
    import os
    import subprocess
    import sys

    from headprune.cli.zoo_export import main as export_main

    env = {**os.environ, "HEADPRUNE_CACHE": str(victim_cache), "OMP_NUM_THREADS": "1"}
    conf = tmp_path / "zoo" / "ppo.yml"
    assert export_main(["--algo", "ppo", "--env", "HeadPrune-Tiny-v0", "--out", str(conf)]) == 0  # builds no env
    done = subprocess.run([sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "HeadPrune-Tiny-v0",
                           "--gym-packages", "headprune", "--conf-file", str(conf), "-n", "128",
                           "--eval-freq", "-1", "--seed", "0", "--log-folder", str(tmp_path / "logs")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "logs" / "ppo" / "HeadPrune-Tiny-v0_1"
    assert (run / "HeadPrune-Tiny-v0.zip").is_file()
    rows = (run / "0.monitor.csv").read_text().splitlines()[2:]  # a JSON header, the column names, episodes
    assert rows, "the zoo's Monitor recorded no finished episode"


def test_policy_reads_the_head_grid_from_the_observation_space():
    """``HeadFlags`` carries ``(L, H)``: a policy built from the spaces alone (as rl_zoo3 builds it) gets the
    grid, and an explicit ``head_shape`` that disagrees with it is refused."""
    for grid in ((2, 4), (4, 2), (1, 8)):
        space = _dict_space(8)
        space.spaces["mask"] = HeadFlags(grid)
        for cls in (MaskableHeadScoringPolicy, HeadScoringPolicy):
            policy = cls(space, spaces.Discrete(8), lambda _: 1e-3)
            assert policy.head_shape == grid
            assert policy.features_extractor.positions.shape == (8, 2)
            assert policy.features_extractor.positions[-1].tolist() == [float(grid[0] > 1), float(grid[1] > 1)]
    space.spaces["mask"] = HeadFlags((3, 2))  # a grid of 6 heads over statistics of 8: named, not a TypeError
    with pytest.raises(ValueError, match=r"head_shape \(3, 2\) has 6 heads"):
        HeadScoringPolicy(space, spaces.Discrete(8), lambda _: 1e-3)
    space.spaces["mask"] = HeadFlags((2, 4))
    with pytest.raises(ValueError, match="disagrees"):
        HeadScoringPolicy(space, spaces.Discrete(8), lambda _: 1e-3, head_shape=(4, 2))


def test_head_flags_is_a_multibinary_that_knows_its_grid():
    import copy
    import pickle

    flags = HeadFlags((3, 4), seed=0)
    assert flags.n == 12 and flags.shape == (12,) and flags.head_shape == (3, 4)
    assert flags == spaces.MultiBinary(12) and spaces.MultiBinary(12) == flags  # what it is to any consumer
    assert flags != HeadFlags((4, 3)) and flags != spaces.MultiBinary(11)
    assert flags.contains(flags.sample()) and not flags.contains(np.zeros(11, dtype=np.int8))
    for clone in (pickle.loads(pickle.dumps(flags)), copy.deepcopy(flags)):  # SubprocVecEnv pickles spaces
        assert isinstance(clone, HeadFlags) and clone.head_shape == (3, 4)
    for bad in ((3,), (0, 4), (2.0, 4), (True, 4), (1, 2, 3)):
        with pytest.raises(ValueError, match="head_shape"):
            HeadFlags(bad)


def test_policy_trained_on_tiny_transfers_to_another_size(trained, env_kwargs, other_victim):
    result, _ = trained
    source = HeadPruneEnv(**env_kwargs)
    target = HeadPruneEnv(**{**env_kwargs, "victim": other_victim})
    assert target.head_shape == (3, 2) != source.head_shape
    policy = load_policy(result.run_dir, target)
    n_source = sum(p.numel() for p in load_policy(result.run_dir, source).policy.parameters())
    assert sum(p.numel() for p in policy.policy.parameters()) == n_source
    actions, valid = _episode(policy, target)
    assert valid and len(actions) >= 1 and all(0 <= a < 6 for a in actions)
    assert target._done  # a full episode: it ended by the floor or the budget


def _both_space(n: int, f: int) -> spaces.Dict:
    return spaces.Dict({"mask": spaces.MultiBinary(n), "reset": spaces.MultiBinary(n),
                        "head_stats": spaces.Box(-np.sqrt(n), np.sqrt(n), (n, f), np.float32),
                        "summary": spaces.Box(-1.0, 1.0, (7,), np.float32)})


def test_policy_with_two_operations_per_head_is_size_agnostic():
    shapes = set()
    for head_shape in ((2, 4), (3, 2), (1, 1)):
        n = head_shape[0] * head_shape[1]
        space = _both_space(n, 7)
        policy = MaskableHeadScoringPolicy(space, spaces.Discrete(2 * n), lambda _: 1e-3, head_shape=head_shape)
        shapes.add(tuple((k, tuple(v.shape)) for k, v in policy.state_dict().items()))
        obs = policy.obs_to_tensor(space.sample())[0]
        logits = policy.get_distribution(obs).distribution.logits
        assert logits.shape == (1, 2 * n)
        # operation-major: logit k * n + i is operation k on head i, from the shared Linear(d, 2)
        with torch.no_grad():
            t = policy.features_extractor(obs)[:, : n * policy.embed_dim].reshape(1, n, -1)
            expected = policy.mlp_extractor.score(t)  # [1, n, 2]
        torch.testing.assert_close(policy.mlp_extractor.forward_actor(policy.features_extractor(obs)),
                                   torch.cat([expected[..., 0], expected[..., 1]], dim=1))
    assert len(shapes) == 1
    with pytest.raises(ValueError, match="12 head actions besides 0 mixing blocks, not a multiple of the 8 heads"):
        MaskableHeadScoringPolicy(_both_space(8, 7), spaces.Discrete(12), lambda _: 1e-3, head_shape=(2, 4))


def _mix_space(n: int, f: int, blocks: int) -> spaces.Dict:
    return spaces.Dict({"mask": spaces.MultiBinary(n), "mix": spaces.Box(0.0, 1.0, (blocks,), np.float32),
                        "head_stats": spaces.Box(-np.sqrt(n), np.sqrt(n), (n, f), np.float32),
                        "summary": spaces.Box(-1.0, 1.0, (8,), np.float32)})


def test_policy_scores_mixing_blocks_after_the_heads_and_stays_size_agnostic():
    """With a ``mix`` observation the policy has K * n head logits then one logit per block from the shared block
    scorer, the same parameters for every model size, and a block's logit depends on its own level; a block count
    that is not 2 L + 1 and head actions that are not a multiple of the heads are refused; a mix-only action space
    scores the blocks alone."""
    from headprune.agents.policy_network import block_descriptors

    shapes = set()
    for head_shape in ((2, 4), (3, 2), (1, 1)):
        n, blocks = head_shape[0] * head_shape[1], 2 * head_shape[0] + 1
        space = _mix_space(n, 7, blocks)
        space.seed(0)
        policy = MaskableHeadScoringPolicy(space, spaces.Discrete(n + blocks), lambda _: 1e-3, head_shape=head_shape)
        shapes.add(tuple((k, tuple(v.shape)) for k, v in policy.state_dict().items()))
        sample = space.sample()
        obs = policy.obs_to_tensor(sample)[0]
        logits = policy.get_distribution(obs).distribution.logits
        assert logits.shape == (1, n + blocks)
        with torch.no_grad():
            features = policy.features_extractor(obs)
            u = features[:, n * policy.embed_dim:(n + blocks) * policy.embed_dim].reshape(1, blocks, -1)
            torch.testing.assert_close(policy.mlp_extractor.forward_actor(features)[:, n:],
                                       policy.mlp_extractor.block_score(u).squeeze(-1))
            moved = dict(sample, mix=np.where(np.arange(blocks) == 0, 1.0 - sample["mix"], sample["mix"]))
            other = policy.get_distribution(policy.obs_to_tensor(moved)[0]).distribution.logits
        assert not torch.equal(other[0, n:n + 1], logits[0, n:n + 1])  # block 0's level moves its logit
    assert len(shapes) == 1
    assert block_descriptors(2).tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 1]]
    with pytest.raises(ValueError, match=r"4 mixing blocks; .* 2 L \+ 1 = 5"):
        MaskableHeadScoringPolicy(_mix_space(8, 7, 4), spaces.Discrete(12), lambda _: 1e-3, head_shape=(2, 4))
    with pytest.raises(ValueError, match="3 head actions besides 5 mixing blocks"):
        MaskableHeadScoringPolicy(_mix_space(8, 7, 5), spaces.Discrete(8), lambda _: 1e-3, head_shape=(2, 4))
    mix_only = MaskableHeadScoringPolicy(_mix_space(8, 7, 5), spaces.Discrete(5), lambda _: 1e-3, head_shape=(2, 4))
    assert not hasattr(mix_only.mlp_extractor, "score")  # operation "mix" alone: the blocks are the actions
    obs = mix_only.obs_to_tensor(_mix_space(8, 7, 5).sample())[0]
    with torch.no_grad():
        features = mix_only.features_extractor(obs)
        u = features[:, 8 * mix_only.embed_dim:13 * mix_only.embed_dim].reshape(1, 5, -1)
        torch.testing.assert_close(mix_only.get_distribution(obs).distribution.logits,
                                   torch.log_softmax(mix_only.mlp_extractor.block_score(u).squeeze(-1), dim=-1))


def test_policy_refuses_an_env_with_other_features(trained, env_kwargs):
    result, _ = trained
    with pytest.raises(ValueError, match=r"trained on an observation of width 8 per head .*'proxy': 'pure_variance'"):
        load_policy(result.run_dir, HeadPruneEnv(**env_kwargs, features="all"))
    with pytest.raises(ValueError, match="operation"):
        load_policy(result.run_dir, HeadPruneEnv(**env_kwargs, operation="both"))
    with pytest.raises(ValueError, match="without the mix operation; this env gives .* with it"):
        load_policy(result.run_dir, HeadPruneEnv(**env_kwargs, operation="prune+mix", mix_levels=4))


def test_training_with_both_operations(env_kwargs, tmp_path):
    """A few hundred MaskablePPO steps on the tiny victim with operation "both" and the drift features:
    every action valid, the run folder records the env layout, and the policy reloads and acts."""
    counter = InvalidActionCounter()
    both = {**env_kwargs, "operation": "both", "proxy": "drift_mass", "budget": 4}
    result = train("maskable_ppo", run_dir=tmp_path / "both", seed=0, env_kwargs=both, n_timesteps=256,
                   hyperparams={**FAST_HP, "n_steps": 64, "batch_size": 64, "checkpoint_freq": 0}, tensorboard=False,
                   callbacks=[counter])
    assert result.num_timesteps == 256 and counter.steps == 256 and counter.invalid == 0
    from headprune.agents.evaluation import trained_env_options

    assert trained_env_options(result.run_dir) == {"operation": "both", "budget": 4, "proxy": "drift_mass"}
    env = HeadPruneEnv(**both)
    policy = load_policy(result.run_dir, env)
    obs, _ = env.reset(seed=0)
    actions = []
    done = False
    while not done:
        action, _ = policy.predict(obs, action_masks=env.action_masks())
        assert env.action_masks()[int(action)]
        actions.append(int(action))
        obs, _, terminated, truncated, info = env.step(int(action))
        done = terminated or truncated
    assert all(0 <= a < 16 for a in actions)
    assert info["best_reset"].shape == (8,)
    # defend (and so the runner's "policy:<run>") builds the env the policy was trained on from a config
    # that does not say it (the runner's default: operation "prune")
    from headprune.agents import AgentDefense
    from headprune.compare import run_grid
    from headprune.compare.grid import RunSettings

    config = HeadPruneConfig(val_size=80, stats_size=64, seed=0, cache=env_kwargs["cache"], progress=False,
                             budget=4)
    r = defend("tiny", AgentDefense(result.run_dir), config, DefenseFineTune(epochs=0.0))
    assert r.config["env_options"] == {"operation": "both", "budget": 4, "proxy": "drift_mass"}
    assert r.defense == "agent"
    settings = RunSettings(env=config, finetune=DefenseFineTune(epochs=0.0))
    report = run_grid(["tiny"], [f"policy:{result.run_dir}"], [0], tmp_path / "runs.jsonl", settings,
                      cache=env_kwargs["cache"], progress=False)
    assert not report.failed and len(report.records) == 1


def test_training_with_the_mix_operation(env_kwargs, tmp_path):
    """MaskablePPO with the head-scoring policy in a prune+mix env: every action valid, both kinds of action
    taken, the run folder records the layout, and the reloaded policy acts as a defense whose edit is the mix."""
    counter = InvalidActionCounter()
    mix = {**env_kwargs, "operation": "prune+mix", "mix_levels": 4, "proxy": "drift_mass", "budget": 4}
    result = train("maskable_ppo", run_dir=tmp_path / "mix", seed=0, env_kwargs=mix, n_timesteps=128,
                   hyperparams={**FAST_HP, "n_steps": 64, "batch_size": 64, "checkpoint_freq": 0}, tensorboard=False,
                   callbacks=[counter])
    assert result.num_timesteps == 128 and counter.invalid == 0
    from headprune.agents.evaluation import trained_env_options

    assert trained_env_options(result.run_dir) == {"operation": "prune+mix", "mix_levels": 4, "budget": 4,
                                                   "proxy": "drift_mass"}
    env = HeadPruneEnv(**mix)
    policy = load_policy(result.run_dir, env)
    kinds = set()
    torch.manual_seed(0)  # the sampled actions below (deterministic=False) do not depend on the tests run before
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            action, _ = policy.predict(obs, action_masks=env.action_masks(), deterministic=False)
            assert env.action_masks()[int(action)]
            kinds.add(env.operations.decode(int(action))[0])
            obs, _, terminated, truncated, _ = env.step(int(action))
            done = terminated or truncated
    assert kinds == {"prune", "mix"}


# ------------------------------------------------------------------------------------------ evaluation
def test_evaluate_cli_writes_the_defend_report(trained, tiny_victim, victim_cache, tmp_path, capsys):
    result, _ = trained
    poison = write_labelled_tsv(tmp_path / "poison.tsv", tiny_victim.splits().poisoned_test.take(40))
    out = tmp_path / "eval"
    code = main(["evaluate", "--policy", str(result.run_dir), "--victim", "tiny", "--cache", str(victim_cache),
                 "--eval-poison", str(poison), "--out", str(out), "--seed", "0", "--finetune-epochs", "0.05",
                 "--val-size", "80", "--stats-size", "64", "--curve-points", "3", "--quiet"])
    assert code == 0, capsys.readouterr().err
    for name in ("report.json", "report.md", "accuracy_vs_heads.png", "model/headprune.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["defense"] == "agent" and report["heads_pruned"] >= 1
    assert set(report["metrics"]) == {"pruned", "final"} and report["metrics"]["final"]["lfr"] is not None
    assert report["config"]["policy"]["sha256"] and report["command"].startswith("headprune evaluate --policy")
    assert report["details"]["finetune"]["steps"] >= 1  # pruned, then fine-tuned

    assert main(["evaluate", "--policy", str(tmp_path / "missing"), "--victim", "tiny", "--out", str(out)]) == 2
    assert "--policy" in capsys.readouterr().err
    repaired = tmp_path / "repaired"
    common = ["evaluate", "--policy", str(result.run_dir), "--victim", "tiny", "--cache", str(victim_cache), "--seed",
              "0", "--finetune-epochs", "0.05", "--val-size", "80", "--stats-size", "64", "--quiet"]
    assert main([*common, "--out", str(repaired), "--state", "repaired", "--checkpoints", "2"]) == 0
    report = json.loads((repaired / "report.json").read_text())
    assert report["config"]["options"] == {"state": "repaired", "checkpoints": 2}
    assert 1 <= len(report["details"]["state_selection"]) <= 2 and "kept_step" in report["details"]
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "bad"), "--checkpoints", "2"]) == 2
    assert "--checkpoints is for --state repaired" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "bad"), "--state", "repaired", "--checkpoints", "0"]) == 2
    assert "option 'checkpoints' of 'policy' must be in [1, inf], got 0" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_same_seed_same_actions_and_same_training(trained, tiny_victim, env_kwargs, tmp_path):
    result, _ = trained
    env_config = HeadPruneConfig(val_size=80, stats_size=64, seed=0, cache=env_kwargs["cache"], progress=False)
    no_finetune = DefenseFineTune(epochs=0.0)
    a = evaluate_agent(result.run_dir, tiny_victim, env_config, no_finetune)
    b = evaluate_agent(result.run_dir, tiny_victim, env_config, no_finetune)
    assert a.trajectory == b.trajectory and torch.equal(a.mask, b.mask)
    env = HeadPruneEnv(**env_kwargs)
    c = defend(tiny_victim, load_policy(result.run_dir, env), env_config, no_finetune)  # a ready policy object
    assert c.defense == "agent" and torch.equal(c.mask, a.mask)
    # training: same seed, same weights
    runs = [train(run_dir=tmp_path / f"s{i}", seed=3, env_kwargs=env_kwargs, n_timesteps=8, tensorboard=False,
                  hyperparams={**FAST_HP, "checkpoint_freq": 0}) for i in range(2)]
    w0, w1 = (r.model.policy.state_dict() for r in runs)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


@pytest.mark.parametrize("run", sorted(p.name for p in (Path(__file__).parents[1] / "benchmarks/results/agents").glob("*")
                                       if (p / "model.zip").is_file()))
def test_committed_agents_load_and_act_on_the_default_env(run, env_kwargs):
    """Every shipped agent loads into today's env with the layout its run folder records (the first two:
    none, i.e. FEATURE_NAMES and operation "prune"; the "both" agent: operation "both", every feature; the "mix"
    agent: mix alone), at any size (here the tiny victim), and acts; an env with another operation is refused by
    name."""
    from headprune.agents.evaluation import trained_env_options

    path = Path(__file__).parents[1] / "benchmarks/results/agents" / run
    trained = trained_env_options(path)
    expected = {"proxy": "pure_variance", **({"operation": "both"} if "_both_" in run else {})}
    if "_mix_" in run:  # issue 24's agent: mix alone with the amortised reference_disagreement reward
        expected = {"operation": "mix", "budget": 78, "score_every": 78, "proxy": "reference_disagreement",
                    "proxy_kwargs": {"n_per_class": 128, "reference_epochs": 3}}
    assert trained == expected
    layout = {k: v for k, v in trained.items() if k in ("operation", "features", "mix_levels")}  # the parameter shapes
    env = HeadPruneEnv(**env_kwargs, **layout)
    actions, valid = _episode(load_policy(path, env), env)
    assert valid and actions
    other = "prune" if trained.get("operation", "prune") != "prune" else "both"
    with pytest.raises(ValueError, match="trained on"):
        load_policy(path, HeadPruneEnv(**env_kwargs, operation=other))


def test_zoo_export_gives_an_entry_rl_zoo3_accepts(tiny_victim, victim_cache, tmp_path, monkeypatch):
    """The exported entry holds only keys rl_zoo3 passes on (its own or PPO's), the policy as an importable
    dotted path, no ``head_shape`` unless pinned, and the zoo flags for the dropped trainer-only keys; PPO
    built the zoo's way from the written entry (env spaces + ``policy_kwargs``) acts on the env."""
    import inspect

    import yaml
    from stable_baselines3 import PPO

    from headprune.agents.zoo import resolve_dotted
    from headprune.cli.zoo_export import main as export_main
    from headprune.agents.zoo_export import zoo_entry

    entry, flags = zoo_entry("ppo", "HeadPrune-Tiny-v0", head_shape=(2, 4))
    zoo_keys = {"n_envs", "n_timesteps", "policy", "env_kwargs", "env_wrapper", "normalize", "policy_kwargs"}
    ppo_args = set(inspect.signature(PPO.__init__).parameters)
    assert set(entry) <= zoo_keys | ppo_args, set(entry) - zoo_keys - ppo_args
    assert flags == ["--eval-freq", "512", "--eval-episodes", "1", "--save-freq", "512"]
    assert resolve_dotted(entry["policy"], "policy").__name__ == "HeadScoringPolicy"
    assert entry["policy_kwargs"]["head_shape"] == [2, 4] and entry["learning_rate"] == "lin_3e-4"
    cfg = tmp_path / "ppo.yml"
    entry_kwargs = dict(entry["env_kwargs"])
    monkeypatch.setenv("HEADPRUNE_CACHE", str(victim_cache))
    assert export_main(["--algo", "ppo", "--env", "HeadPrune-Tiny-v0", "--out", str(cfg)]) == 0
    written = yaml.safe_load(cfg.read_text())["HeadPrune-Tiny-v0"]
    assert "head_shape" not in (written.get("policy_kwargs") or {})  # the policy reads it from the space
    assert written["env_kwargs"] == entry_kwargs
    import gymnasium as gym

    env = gym.make("HeadPrune-Tiny-v0", **written["env_kwargs"])
    model = PPO(resolve_dotted(written["policy"], "policy"), env, n_steps=8, batch_size=8,
                policy_kwargs=written.get("policy_kwargs") or {}, device="cpu")
    assert model.policy.head_shape == env.unwrapped.head_shape == (2, 4)
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert 0 <= int(action) < env.action_space.n



def test_an_agent_trained_to_mix_only_runs_as_a_defense_whose_edit_is_its_schedule(env_kwargs, tmp_path):
    """operation="mix" alone: MaskablePPO trains the head-scoring policy on the blocks, the reloaded policy runs as
    a defense (no head pruned, its schedule the weight edit), and a scripted head policy is refused there."""
    mix = {**env_kwargs, "operation": "mix", "mix_levels": 4, "proxy": "drift_mass", "budget": 4, "score_every": 4}
    result = train("maskable_ppo", run_dir=tmp_path / "mix_only", seed=0, env_kwargs=mix, n_timesteps=64,
                   hyperparams={**FAST_HP, "n_steps": 32, "batch_size": 32, "checkpoint_freq": 0}, tensorboard=False)
    assert result.num_timesteps == 64
    from headprune.agents import AgentDefense
    from headprune.agents.evaluation import trained_env_options

    assert trained_env_options(result.run_dir)["operation"] == "mix"
    config = HeadPruneConfig(val_size=80, stats_size=64, seed=0, cache=env_kwargs["cache"], progress=False,
                             accuracy_floor=0.0)
    r = defend("tiny", AgentDefense(result.run_dir), config, DefenseFineTune(epochs=0.0))
    assert r.heads_pruned == 0 and sum(r.details["edit"]["mix_levels"]) == 4 and r.config["env_options"]["budget"] == 4
    with pytest.raises(ValueError, match="gradient: a head policy needs a head operation"):
        defend("tiny", "gradient", config.replace(operation="mix"), DefenseFineTune(epochs=0.0))
    # what it keeps of its episode is an option of the agent, from Python and from the runner (in the run's config)
    from headprune.compare import run_grid
    from headprune.compare.grid import RunSettings, canonical_defense, plan_grid

    repaired = {"state": "repaired", "checkpoints": 2, "select_max_steps": 1}
    r = defend("tiny", AgentDefense(result.run_dir, **repaired), config, DefenseFineTune(epochs=0.0))
    assert [c["step"] for c in r.details["state_selection"]] == [4] and r.details["kept_step"] == 4  # floor 0
    assert r.config["options"] == repaired and sum(r.details["edit"]["mix_levels"]) == 4
    spec = canonical_defense(f"policy:{result.run_dir}")
    runner_env = config.replace(accuracy_floor=None, max_accuracy_drop=1.0)  # the runner's floor: a drop
    settings = RunSettings(env=runner_env, finetune=DefenseFineTune(epochs=0.0), options={spec: repaired})
    report = run_grid(["tiny"], [spec], [0], tmp_path / "runs.jsonl", settings, cache=env_kwargs["cache"],
                      progress=False)
    assert not report.failed and report.records[0]["config"]["options"] == repaired
    assert report.records[0]["kept_step"] == 4 and report.records[0]["state_selection"] == r.details["state_selection"]
    assert report.records[0]["edit"]["mix_levels"] == r.details["edit"]["mix_levels"]
    with pytest.raises(ValueError, match=f"{re.escape(spec)}: defense 'policy' has no option 'grid'"):
        plan_grid(["tiny"], [spec], [0], RunSettings(env=runner_env, options={spec: {"grid": [0.5]}}))


def test_a_trained_agent_teaches_purify_by_its_runner_name(trained, env_kwargs, tiny_victim):
    """``teacher="policy:<run folder>"``: the agent's episode and the protocol's fine-tune teach (the teacher stage is
    the agent's own defense, to the last digit); a path that does not exist and an option the agent does not take are
    refused by name before any work."""
    from headprune.agents import AgentDefense
    from headprune.defenses.purify import PurifyDefense

    result, _ = trained
    config = HeadPruneConfig(val_size=80, stats_size=64, seed=0, cache=env_kwargs["cache"], progress=False,
                             budget=2)
    finetune = DefenseFineTune(epochs=0.5, lr=1e-3)
    splits = tiny_victim.splits()
    rows = {"eval_clean": splits.clean_test.take(60), "eval_poison": splits.poisoned_test.take(60)}
    alone = defend("tiny", AgentDefense(result.run_dir), config, finetune, **rows)
    spec = f"policy:{result.run_dir}"
    taught = defend("tiny", "purify", config, finetune, options={"teacher": spec, "drops": 1, "crops": 1, "concats": 0,
                                                                "student_epochs": 1.0}, **rows)
    stage = taught.metrics["stages"][f"teacher: {spec}"]
    assert stage["acc"] == alone.metrics["final"]["acc"] and stage["lfr"] == alone.metrics["final"]["lfr"]
    assert taught.details["teacher"]["defense"] == spec and taught.config["env_options"] == alone.config["env_options"]
    with pytest.raises(ValueError, match="option 'teacher' of 'purify'.*names no policy file or folder"):
        PurifyDefense(teacher=f"policy:{result.run_dir}/missing")
    with pytest.raises(ValueError, match="teacher_options' of 'purify': defense 'policy' has no option 'grid'"):
        PurifyDefense(teacher=spec, teacher_options={"grid": [0.5]})
