"""``train --resume`` after a killed session: nothing lost, nothing counted twice (Monitor rows, progress
rows, evaluation history), the killed session marked interrupted, best_model.zip never replaced by a worse
one, and a truncated last checkpoint skipped for the newest readable one, saying which."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_agents import Crash  # raises at a given timestep: a session that dies between checkpoints

from headprune.agents import latest_checkpoint, resume, train
from headprune.agents.run_recovery import newest_readable_checkpoint, trim_monitor_files, trim_progress
from headprune.cli import main

FAST_HP: dict[str, Any] = {"n_steps": 8, "batch_size": 8, "n_epochs": 1, "eval_freq": 8, "n_eval_episodes": 1,
                           "checkpoint_freq": 8}


@pytest.fixture(scope="module")
def env_kwargs(tiny_victim, victim_cache: Path) -> dict[str, Any]:
    return {"victim": "tiny", "cache": str(victim_cache), "val_size": 80, "stats_size": 64, "progress": False}


def monitor_lengths(run: Path) -> list[int]:
    lines = (run / "monitor" / "0.monitor.csv").read_text().splitlines()[1:]
    return [int(row["l"]) for row in csv.DictReader(lines)]


def killed_run(env_kwargs: dict[str, Any], folder: Path, at: int = 21) -> Path:
    """A run killed at ``at`` timesteps as SIGKILL leaves it: run.json still says "running"."""
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(run_dir=folder, seed=0, env_kwargs=env_kwargs, hyperparams=FAST_HP, n_timesteps=32,
              tensorboard=False, callbacks=[Crash(at=at)])
    info = json.loads((folder / "run.json").read_text())
    info["sessions"][-1]["end"] = "running"
    (folder / "run.json").write_text(json.dumps(info))
    return folder


def test_resume_after_a_kill_keeps_history_and_counts_nothing_twice(env_kwargs, tmp_path, capsys):
    run = killed_run(env_kwargs, tmp_path / "run")
    assert sum(monitor_lengths(run)) > 16  # episodes past the last checkpoint (16) were recorded
    evaluations = np.load(run / "eval" / "evaluations.npz")["timesteps"].tolist()
    assert evaluations == [8, 16]
    (run / "checkpoints" / "rl_model_16_steps.zip").write_bytes(
        (run / "checkpoints" / "rl_model_16_steps.zip").read_bytes()[:300])  # a truncated last checkpoint

    assert main(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert "skipped unreadable checkpoint rl_model_16_steps.zip" in err and "resuming from rl_model_8_steps.zip" in err
    info = json.loads((run / "run.json").read_text())
    first, second = info["sessions"]
    assert first["end"] == "interrupted" and second["end"] == "done"
    assert second["start_timesteps"] == 8 and second["end_timesteps"] == 32
    assert second["resumed_from"].endswith("rl_model_8_steps.zip")
    assert second["repaired"]["interrupted_sessions"] == [0] and second["repaired"]["monitor_rows_dropped"] >= 1
    # each env step is in at most one Monitor row: the episodes recorded never exceed the timesteps
    assert sum(monitor_lengths(run)) <= 32
    progress = [(r["session"], r["num_timesteps"]) for r in map(json.loads, (run / "progress.jsonl").open())]
    assert [t for _, t in progress] == [8, 16, 24, 32] and progress[0] == (0, 8)
    evaluations = np.load(run / "eval" / "evaluations.npz")["timesteps"].tolist()
    assert evaluations == [8, 16, 24, 32]  # the history before the resume point is kept, none twice
    assert latest_checkpoint(run).name == "rl_model_32_steps.zip"


def test_best_model_is_not_replaced_by_a_worse_one(env_kwargs, tmp_path):
    run = killed_run(env_kwargs, tmp_path / "run", at=12)
    best = run / "eval" / "best_model.zip"
    assert best.is_file() and (run / "eval" / "best_model.json").is_file()
    (run / "eval" / "best_model.json").write_text(json.dumps({"mean_reward": 1e9, "timesteps": 8}))
    before = best.read_bytes()
    resume(run)
    assert best.read_bytes() == before
    assert json.loads((run / "eval" / "best_model.json").read_text())["mean_reward"] == 1e9


def test_no_readable_checkpoint_is_one_clear_error(env_kwargs, tmp_path, capsys):
    run = killed_run(env_kwargs, tmp_path / "run", at=12)
    for _, path in [(0, p) for p in (run / "checkpoints").glob("*.zip")]:
        path.write_bytes(b"PK\x03\x04 broken")
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no readable checkpoint" in err and "rl_model_8_steps.zip" in err and "Traceback" not in err
    assert newest_readable_checkpoint(run)[0] is None


def test_trimming_helpers(tmp_path):
    monitor = tmp_path / "monitor"
    monitor.mkdir()
    (monitor / "0.monitor.csv").write_text('#{"t_start": 0}\nr,l,t\n1,3,0.1\n1,4,0.2\n1,2,0.3\n1,5,0.')
    assert trim_monitor_files(monitor, 7) == 2  # the 3rd episode ends at step 9 > 7; the torn last line goes too
    assert (monitor / "0.monitor.csv").read_text().splitlines()[2:] == ["1,3,0.1", "1,4,0.2"]
    progress = tmp_path / "progress.jsonl"
    progress.write_text('{"num_timesteps": 8}\n{"num_timesteps": 16}\n{"num_timesteps": 2')
    assert trim_progress(progress, 8) == 2 and progress.read_text() == '{"num_timesteps": 8}\n'


def test_a_checkpoint_is_written_only_after_its_evaluation(env_kwargs, tmp_path, monkeypatch):
    """A kill between the two must not lose an evaluation: when ``rl_model_T_steps.zip`` is written,
    T's evaluation is already in ``evaluations.npz`` (a resume from it then keeps T's row; a kill before the
    checkpoint resumes from the one before and replays T's evaluation)."""
    import headprune.agents.run_recovery as recovery

    real_save = recovery.save_policy
    seen: list[tuple[int, list[int]]] = []

    def watching_save(model: Any, path: Path, **kwargs: Any) -> None:
        if Path(path).name.startswith("rl_model_"):
            npz = tmp_path / "run" / "eval" / "evaluations.npz"
            done = np.load(npz)["timesteps"].tolist() if npz.is_file() else []
            seen.append((int(model.num_timesteps), done))
        real_save(model, path, **kwargs)

    monkeypatch.setattr(recovery, "save_policy", watching_save)
    train(run_dir=tmp_path / "run", seed=0, env_kwargs=env_kwargs, hyperparams=FAST_HP, n_timesteps=24,
          tensorboard=False)
    periodic = [(t, done) for t, done in seen if t % 8 == 0]
    assert [t for t, _ in periodic][:3] == [8, 16, 24]
    assert all(t in done for t, done in periodic), periodic
