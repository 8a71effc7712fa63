"""Fault injection: ``headprune train`` and ``headprune compare`` (subprocesses on the tiny victim) are
SIGKILLed at seeded random points, a bounded number of times within a bounded time, then resumed to the
end; the resumed run must lose and duplicate nothing (records unique by key and complete, Monitor rows
not counted twice, timesteps continuing, killed sessions marked interrupted)."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

KILLS = 2
DEADLINE_S = 240.0


def _headprune(*args: str, cache: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HEADPRUNE_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "headprune.cli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], delay: float, deadline: float) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` holds; False if it finished first."""
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    end = time.monotonic() + delay
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def _sessions(run: Path) -> list[dict]:
    try:
        return list(json.loads((run / "run.json").read_text())["sessions"])
    except (OSError, ValueError, KeyError):
        return []


def _finish(proc: subprocess.Popen[bytes], deadline: float) -> None:
    _, err = proc.communicate(timeout=max(deadline - time.monotonic(), 10))
    assert proc.returncode == 0, err.decode()


def test_killed_training_resumes_without_losing_or_duplicating(tiny_victim, victim_cache, tmp_path):
    rng = random.Random(16)
    deadline = time.monotonic() + DEADLINE_S
    run = tmp_path / "run"
    first = ["train", "--model", "tiny", "--cache", str(victim_cache), "--out", str(run), "--n-timesteps", "96",
             "--no-tensorboard", "--hyperparams", "n_steps=8", "batch_size=8", "n_epochs=1", "eval_freq=8",
             "n_eval_episodes=1", "checkpoint_freq=8", "--env-kwargs", "val_size=80", "stats_size=64",
             "progress=false"]
    kills = late_kills = 0
    args = first
    for _ in range(KILLS):
        before = len(_sessions(run))
        proc = _headprune(*args, cache=victim_cache)

        def training() -> bool:  # a session of this process has started and a checkpoint exists to resume from
            return len(_sessions(run)) > before and any((run / "checkpoints").glob("rl_model_*_steps.zip"))

        landed = _kill_when(proc, training, rng.uniform(0.0, 1.0), deadline)
        kills += landed
        if landed and _sessions(run)[-1]["end"] == "done":  # killed while exiting, after the run was complete
            late_kills += 1
            break
        if proc.returncode == 0:
            break
        args = ["train", "--resume", str(run)]
    assert kills >= 1, "no kill landed before the run finished"
    if kills:
        _finish(_headprune("train", "--resume", str(run), cache=victim_cache), deadline)
    info = json.loads((run / "run.json").read_text())
    sessions = info["sessions"]
    assert sessions[-1]["end"] == "done" and sessions[-1]["end_timesteps"] == 96
    assert all(s["end"] in ("interrupted", "done") for s in sessions)  # none left "running"
    assert sum(s["end"] == "interrupted" for s in sessions) == kills - late_kills
    for prev, nxt in zip(sessions, sessions[1:]):  # timesteps continue from the checkpoint resumed
        assert nxt["resumed_from"].endswith(f"rl_model_{nxt['start_timesteps']}_steps.zip")
    lines = (run / "monitor" / "0.monitor.csv").read_text().splitlines()[1:]
    assert sum(int(r["l"]) for r in csv.DictReader(lines)) <= 96  # no env step in two Monitor rows
    progress = [json.loads(x)["num_timesteps"] for x in (run / "progress.jsonl").read_text().splitlines()]
    assert progress == sorted(set(progress)) and progress[-1] == 96
    evaluations = np.load(run / "eval" / "evaluations.npz")["timesteps"].tolist()
    assert evaluations == list(range(8, 97, 8))  # the whole history, each evaluation once


def test_killed_compare_resumes_without_losing_or_duplicating(tiny_victim, victim_cache, tmp_path):
    rng = random.Random(61)
    deadline = time.monotonic() + DEADLINE_S
    out = tmp_path / "cmp"
    args = ["compare", "--victims", "tiny", "--defenses", "random", "none", "--seeds", "4", "--out", str(out),
            "--cache", str(victim_cache), "--quiet", "--finetune-epochs", "0", "--val-size", "80", "--stats-size",
            "64", "--test-limit", "40"]
    records = out / "runs.jsonl"
    kills = 0
    for _ in range(KILLS):
        proc = _headprune(*args, cache=victim_cache)
        started = lambda: records.is_file() and records.stat().st_size > 0  # noqa: E731
        if not _kill_when(proc, started, rng.uniform(0.0, 1.5), deadline):
            break
        kills += 1
    assert kills >= 1, "no kill landed before the grid finished"
    _finish(_headprune(*args, cache=victim_cache), deadline)
    keys = [(r["victim"], r["defense"], r["seed"], r["config_hash"])
            for r in map(json.loads, records.read_text().splitlines())]
    assert len(keys) == len(set(keys)) == 8  # every run once: none lost, none twice
    assert sorted((k[1], k[2]) for k in keys) == sorted((m, s) for m in ("random", "none") for s in range(4))
    if not records.read_bytes().endswith(b"\n"):
        pytest.fail("records file ends in a torn line")
