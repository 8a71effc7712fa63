"""Untrusted policy files: an SB3 pickled zip never runs code unless the user says --trust-pickle; the
headprune policy format (JSON + safetensors) round-trips and refuses what is not in our registries."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from headprune.agents import load_policy, train
from headprune.agents.policy_io import (
    META_FILE,
    POLICY_CLASSES,
    PickledPolicyError,
    PolicyFileError,
    is_pickled_sb3,
    read_policy_file,
    save_policy,
)
from headprune.cli import main
from headprune.envs.headprune_env import HeadPruneEnv

REPO = Path(__file__).parents[1]
FAST_HP: dict[str, Any] = {"n_steps": 8, "batch_size": 8, "n_epochs": 1, "eval_freq": 0, "checkpoint_freq": 8}


class _RunsShell:
    """Unpickling this calls ``os.system(command)``: what a malicious ``policy_class`` entry does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (self.command,)


def evil_zip(path: Path, marker: Path) -> Path:
    """An SB3-format model zip whose serialized ``policy_class`` writes ``marker`` when unpickled."""
    payload = base64.b64encode(pickle.dumps(_RunsShell(f"touch {marker}"))).decode()
    data = {"policy_class": {":type:": "<class 'abc.ABCMeta'>", ":serialized:": payload},
            "policy_kwargs": {}, "num_timesteps": 8}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data", json.dumps(data))
        zf.writestr("policy.pth", b"not read")
        zf.writestr("_stable_baselines3_version", "2.9.2")
    return path


@pytest.fixture(scope="module")
def env_kwargs(tiny_victim, victim_cache: Path) -> dict[str, Any]:
    return {"victim": "tiny", "cache": str(victim_cache), "val_size": 80, "stats_size": 64, "progress": False}


@pytest.fixture()
def evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    return evil_zip(tmp_path / "evil.zip", marker), marker


def _one_error_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.startswith("headprune: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_evaluate_refuses_a_pickled_zip_without_running_it(evil, victim_cache, tmp_path, capsys):
    zip_path, marker = evil
    code = main(["evaluate", "--policy", str(zip_path), "--model", "tiny", "--cache", str(victim_cache),
                 "--out", str(tmp_path / "out"), "--quiet"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and not marker.exists()
    assert "pickled" in line and "--trust-pickle" in line and "convert-policy" in line
    assert not (tmp_path / "out").exists()


def test_compare_refuses_a_pickled_zip_without_running_it(evil, victim_cache, tmp_path, capsys):
    zip_path, marker = evil
    code = main(["compare", "--victims", "tiny", "--policies", str(zip_path), "--seeds", "1", "--cache",
                 str(victim_cache), "--out", str(tmp_path / "cmp"), "--quiet"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and not marker.exists() and "pickled" in line
    assert not (tmp_path / "cmp" / "runs.jsonl").exists()


def test_resume_refuses_a_pickled_checkpoint_without_running_it(evil, tmp_path, capsys):
    zip_path, marker = evil
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"algo": "maskable_ppo", "env_id": "HeadPrune-v0", "seed": 0,
                                              "sessions": []}))
    (run / "config.yml").write_text(yaml.safe_dump({"HeadPrune-v0": {"n_timesteps": 16}}))
    zip_path.rename(run / "checkpoints" / "rl_model_8_steps.zip")
    code = main(["train", "--resume", str(run)])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and not marker.exists() and "pickled" in line and "--trust-pickle" in line


def test_python_api_refuses_it_too(evil, env_kwargs):
    zip_path, marker = evil
    env = HeadPruneEnv(**env_kwargs)
    with pytest.raises(PickledPolicyError, match="runs any code"):
        load_policy(zip_path, env)
    with pytest.raises(PickledPolicyError):
        read_policy_file(zip_path)
    assert is_pickled_sb3(zip_path) and not marker.exists()


def test_the_code_runs_only_with_the_explicit_flag(evil, env_kwargs, victim_cache, tmp_path, capsys):
    zip_path, marker = evil
    main(["evaluate", "--policy", str(zip_path), "--model", "tiny", "--cache", str(victim_cache),
          "--out", str(tmp_path / "out"), "--quiet", "--trust-pickle"])
    assert marker.exists()  # the user said they trust it: SB3's loader unpickled it
    marker.unlink()
    with pytest.raises(Exception):  # noqa: B017 - whatever the payload returns is not a policy class
        load_policy(zip_path, HeadPruneEnv(**env_kwargs), trust_pickle=True)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(SystemExit):  # convert-policy requires --trust-pickle: argparse refuses, nothing loaded
        main(["convert-policy", str(zip_path), str(tmp_path / "new.zip")])
    assert not marker.exists()
    main(["convert-policy", "--trust-pickle", str(zip_path), str(tmp_path / "new.zip")])
    assert marker.exists()


def test_policy_file_round_trip_and_registry(env_kwargs, tmp_path):
    run = train("maskable_ppo", run_dir=tmp_path / "run", seed=0, env_kwargs=env_kwargs, n_timesteps=8,
                tensorboard=False, hyperparams=FAST_HP)
    saved = read_policy_file(run.model_path)
    assert not is_pickled_sb3(run.model_path)
    assert saved.meta["policy_class"] == "MaskableHeadScoringPolicy" and saved.meta["num_timesteps"] == 8
    assert saved.optimizer is not None and saved.meta["optimizer"]["param_groups"]
    weights = run.model.policy.state_dict()
    assert set(saved.weights) == set(weights) and all(torch.equal(saved.weights[k], weights[k]) for k in weights)
    with zipfile.ZipFile(run.model_path) as zf:
        assert sorted(zf.namelist()) == [META_FILE, "optimizer.safetensors", "policy.safetensors"]
        members = {n: zf.read(n) for n in zf.namelist()}
    # a class outside our registry, another algorithm, a bad activation: refused by name, nothing imported
    for key, value, match in (("policy_class", "os.system", "policy class"), ("algo", "dqn", "algo"),
                              ("policy_kwargs", {"activation_fn": "__import__"}, "activation_fn")):
        meta = {**json.loads(members[META_FILE]), key: value}
        bad = tmp_path / f"bad_{key}.zip"
        with zipfile.ZipFile(bad, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, json.dumps(meta) if name == META_FILE else data)
        with pytest.raises(PolicyFileError, match=match):
            read_policy_file(bad)
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(run.model_path.read_bytes()[:500])
    with pytest.raises(PolicyFileError, match="truncated"):
        read_policy_file(truncated)
    assert "MaskableHeadScoringPolicy" in POLICY_CLASSES and "os.system" not in POLICY_CLASSES
    assert save_policy(run.model, tmp_path / "again").name == "again.zip"


def test_committed_agent_runs_are_in_the_safe_format():
    runs = sorted((REPO / "benchmarks" / "results" / "agents").glob("*/model.zip"))
    assert {p.parent.name for p in runs} >= {"minilm-syntactic_maskable_ppo_s0",
                                             "minilm-syntactic_maskable_ppo_s0_accuracy_only",
                                             "minilm-syntactic_maskable_ppo_both_s0"}
    for path in runs:
        assert not is_pickled_sb3(path), path
        saved = read_policy_file(path)
        assert saved.meta["policy_class"] == "MaskableHeadScoringPolicy" and saved.meta["num_timesteps"] > 0
