"""Keeping a training run folder whole across kills and resumes (used by :mod:`headprune.agents.rl_training`).

A session may die anywhere (Ctrl-C, an exception, SIGKILL, a full disk). What it leaves and what
``resume`` does with it:

* **Checkpoints** are written atomically (:class:`PolicyCheckpoint`: a temporary file renamed into place),
  in the headprune policy format (:mod:`headprune.agents.policy_io`, never pickled). A checkpoint broken
  from outside (truncated, corrupted) is skipped by :func:`newest_readable_checkpoint`, which says which.
* **Rows written after the checkpoint** the resume starts from are dropped, because the resumed session
  replays those timesteps: Monitor rows (:func:`trim_monitor_files`: per env, the episodes whose cumulative
  length is within the checkpoint's steps per env; vectorised envs step in lockstep, so this is exact),
  ``progress.jsonl`` rows past the checkpoint's timesteps (:func:`trim_progress`), and evaluations past it
  (:class:`HistoryEvalCallback` reloads ``eval/evaluations.npz`` up to the checkpoint and appends to it;
  each write is a temporary file renamed into place).
* **best_model.zip** is replaced only by a better mean evaluation reward than the best recorded in
  ``eval/best_model.json`` (whichever session wrote it).
* **run.json** sessions still marked ``"running"`` (their process died without recording an end) are
  marked ``"interrupted"`` by :func:`mark_killed_sessions`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from stable_baselines3.common.callbacks import BaseCallback

from headprune.agents.policy_io import (
    PickledPolicyError,
    PolicyFileError,
    is_pickled_sb3,
    read_policy_file,
    save_policy,
)

__all__ = ["CHECKPOINT_PREFIX", "HistoryEvalCallback", "PolicyCheckpoint", "checkpoints", "mark_killed_sessions",
           "newest_readable_checkpoint", "resume_point", "trim_monitor_files", "trim_progress"]

CHECKPOINT_PREFIX = "rl_model"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}_(\d+)_steps\.zip$")
BEST_MODEL = "best_model.zip"
BEST_RECORD = "best_model.json"
EVALUATIONS = "evaluations.npz"
_EVAL_TMP = ".evaluations.tmp"


def checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(timesteps, path)`` of the run's ``checkpoints/rl_model_<timesteps>_steps.zip``, newest first."""
    folder = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("*.zip") if (m := _CHECKPOINT_RE.match(p.name))]
    return sorted(found, reverse=True)


def newest_readable_checkpoint(run_dir: str | os.PathLike[str], *, trust_pickle: bool = False
                               ) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that reads whole (a headprune policy file with its optimizer state, or with
    ``trust_pickle`` an SB3 zip that opens), and one message per newer checkpoint skipped as unreadable.

    :raises PickledPolicyError: the newest readable candidate is an SB3 pickled zip and not ``trust_pickle``.
    """
    skipped: list[str] = []
    for _, path in checkpoints(run_dir):
        try:
            if is_pickled_sb3(path):
                if not trust_pickle:
                    raise PickledPolicyError(f"checkpoint {path} is an SB3 pickled zip, refused: resume it with "
                                             "--trust-pickle (runs any code in it) or convert it")
                return path, skipped
            saved = read_policy_file(path)
            if saved.optimizer is None:
                raise PolicyFileError(f"policy: {path} has no optimizer state")
            return path, skipped
        except PickledPolicyError:
            raise
        except PolicyFileError as err:
            skipped.append(f"skipped unreadable checkpoint {path.name}: {err}")
    return None, skipped


def mark_killed_sessions(run: dict[str, Any]) -> list[int]:
    """Mark the sessions of ``run`` (``run.json``) still ``"running"`` as ``"interrupted"`` (their process
    died without recording an end: SIGKILL, power loss); returns their indices."""
    killed = []
    for i, session in enumerate(run.get("sessions", [])):
        if session.get("end") == "running":
            session["end"] = "interrupted"
            session["end_note"] = "the process stopped without recording its end (killed)"
            killed.append(i)
    return killed


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines))
    os.replace(tmp, path)


def trim_monitor_files(monitor_dir: str | os.PathLike[str], steps_per_env: int) -> int:
    """Drop the Monitor rows of episodes that ended after ``steps_per_env`` env steps (and a torn last
    line) from every ``<rank>.monitor.csv``; returns the number of rows dropped.

    :param monitor_dir: the run's ``monitor/`` folder.
    :param steps_per_env: the checkpoint's timesteps divided by ``n_envs`` (envs step in lockstep).
    """
    dropped = 0
    for path in sorted(Path(monitor_dir).glob("*.monitor.csv")):
        lines = path.read_text().splitlines(keepends=True)
        if len(lines) < 2:
            continue
        kept, steps = lines[:2], 0
        column = lines[1].strip().split(",").index("l")
        for line in lines[2:]:
            fields = line.rstrip("\n").split(",")
            if not line.endswith("\n") or len(fields) <= column:
                break  # torn last line
            steps += int(float(fields[column]))
            if steps > steps_per_env:
                break
            kept.append(line)
        dropped += len(lines) - len(kept)
        if len(kept) != len(lines):
            _write_lines(path, kept)
    return dropped


def trim_progress(path: str | os.PathLike[str], timesteps: int) -> int:
    """Drop the ``progress.jsonl`` rows past ``timesteps`` (and a torn last line); returns how many."""
    p = Path(path)
    if not p.is_file():
        return 0
    lines = p.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            if line.endswith("\n") and int(json.loads(line)["num_timesteps"]) <= timesteps:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    if len(kept) != len(lines):
        _write_lines(p, kept)
    return len(lines) - len(kept)


class PolicyCheckpoint(BaseCallback):
    """Every ``save_freq`` calls, write ``<folder>/rl_model_<timesteps>_steps.zip`` (a headprune policy file
    with the optimizer state, written atomically): SB3's ``CheckpointCallback`` without pickles."""

    def __init__(self, save_freq: int, folder: str | os.PathLike[str]) -> None:
        super().__init__()
        self.save_freq = int(save_freq)
        self.folder = Path(folder)

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            save_policy(self.model, self.folder / f"{CHECKPOINT_PREFIX}_{self.num_timesteps}_steps.zip")
        return True


class HistoryEvalCallback(MaskableEvalCallback):
    """``MaskableEvalCallback`` that continues a run's evaluation history and keeps its best model.

    On start it reloads ``<folder>/evaluations.npz`` rows up to ``start_timesteps`` (later rows came from
    timesteps the session replays) and the best mean reward of ``best_model.json``; ``best_model.zip`` is
    written (headprune format) only when a mean reward beats it.

    :param eval_env: the evaluation env.
    :param folder: the run's ``eval/`` folder.
    :param start_timesteps: the timesteps this session starts from (0 for a new run).
    :param kwargs: ``MaskableEvalCallback``'s other arguments (``n_eval_episodes``, ``eval_freq``, ...).
    """

    def __init__(self, eval_env: Any, folder: Path, start_timesteps: int, **kwargs: Any) -> None:
        super().__init__(eval_env, log_path=str(folder), best_model_save_path=None, **kwargs)
        self.folder = folder
        self.log_path = str(folder / _EVAL_TMP)  # np.savez writes here (adding .npz), then it is renamed into place
        self.dropped_rows = self._reload_history(start_timesteps) if start_timesteps > 0 else 0
        record = folder / BEST_RECORD
        if (folder / BEST_MODEL).is_file() and record.is_file():
            try:
                self.best_mean_reward = float(json.loads(record.read_text())["mean_reward"])
            except (ValueError, KeyError, TypeError, OSError):
                warnings.warn(f"{record} is unreadable: the next evaluation replaces {BEST_MODEL}", stacklevel=2)

    def _reload_history(self, start_timesteps: int) -> int:
        path = self.folder / EVALUATIONS
        if not path.is_file():
            return 0
        try:
            with np.load(path, allow_pickle=False) as saved:
                timesteps, results, lengths = saved["timesteps"], saved["results"], saved["ep_lengths"]
        except (OSError, ValueError, KeyError, EOFError) as err:
            warnings.warn(f"{path} is unreadable ({err}); the evaluation history restarts", stacklevel=2)
            return 0
        keep = timesteps <= start_timesteps
        self.evaluations_timesteps = [int(t) for t in timesteps[keep]]
        self.evaluations_results = [list(map(float, r)) for r in results[keep]]
        self.evaluations_length = [list(map(int, n)) for n in lengths[keep]]
        return int((~keep).sum())

    def _on_step(self) -> bool:
        best = self.best_mean_reward
        keep_going = super()._on_step()
        written = self.folder / f"{_EVAL_TMP}.npz"
        if written.is_file():
            os.replace(written, self.folder / EVALUATIONS)
        if self.best_mean_reward > best:
            save_policy(self.model, self.folder / BEST_MODEL, with_optimizer=False)
            (self.folder / BEST_RECORD).write_text(json.dumps(
                {"mean_reward": self.best_mean_reward, "timesteps": int(self.num_timesteps)}) + "\n")
        return keep_going


def resume_point(folder: Path, run: dict[str, Any], trust_pickle: bool) -> tuple[Path, int, dict[str, Any]]:
    """The checkpoint to resume ``run`` (``run.json``) in ``folder`` from (the newest readable one), its
    timesteps and what was repaired: killed sessions marked interrupted, unreadable newer checkpoints
    skipped (each said on stderr).

    :raises FileNotFoundError: no readable checkpoint (naming the ones skipped).
    :raises PickledPolicyError: the checkpoint is an SB3 pickled zip and not ``trust_pickle``.
    """
    checkpoint, skipped = newest_readable_checkpoint(folder, trust_pickle=trust_pickle)
    for message in skipped:
        print(f"headprune: {message}", file=sys.stderr)
    if checkpoint is None:
        found = "; ".join(skipped) or f"no {CHECKPOINT_PREFIX}_<steps>_steps.zip"
        again = ("" if skipped else f"; the run saved none, so there is nothing to resume: start it again "
                 f"(remove {folder} or choose another --out, then headprune train ...)")
        raise FileNotFoundError(f"{folder / 'checkpoints'}: no readable checkpoint to resume from ({found}){again}")
    if skipped:
        print(f"headprune: resuming from {checkpoint.name}", file=sys.stderr)
    steps = int(next(t for t, p in checkpoints(folder) if p == checkpoint))
    if not is_pickled_sb3(checkpoint):
        steps = int(read_policy_file(checkpoint).meta["num_timesteps"])
    repaired = {"interrupted_sessions": mark_killed_sessions(run), "skipped_checkpoints": skipped}
    return checkpoint, steps, repaired
