"""Train an SB3 agent in ``HeadPrune-v0``: ``headprune train`` / ``python -m headprune.agents``
(:func:`train`, :func:`resume`; the command line is :mod:`headprune.cli.train`).

A run folder holds everything needed to reproduce or continue the run::

    config.yml          the resolved hyperparameters, zoo format ({env_id: entry}; schedules as written)
    run.json            algo, env id, seed, library versions and one record per session (the exact
                        command, start/end timesteps, wall time, how it ended, the checkpoint resumed)
    model.zip           the last saved model (headprune policy format: JSON + safetensors, never pickled;
                        load_policy reads it)
    checkpoints/        rl_model_<timesteps>_steps.zip (the same format with the optimizer state, written
                        atomically every checkpoint_freq steps and at every session end)
    monitor/            <rank>.monitor.csv: per-episode return, length, clean accuracy, proxy, heads pruned
    progress.jsonl      one line per rollout: session, timesteps, episode means, seconds
    tb/                 TensorBoard logs (``tensorboard --logdir <run>/tb``)
    eval/               evaluations.npz (the whole history), best_model.zip and best_model.json

:func:`resume` continues a run from its newest readable checkpoint (a resumed session appends to the
monitor files, the progress log, the evaluation history and the TensorBoard run, after dropping what
the previous session wrote past that checkpoint: :mod:`headprune.agents.run_recovery`). Honesty: training never sees poisoned data, LFR or
trigger words (``env_kwargs`` may not carry ``poisoned_eval``); the reward is the env's.
"""

# over 400 lines: train, resume and the run folder they share; callbacks, recovery and policy files live apart
from __future__ import annotations

import datetime as _dt
import functools
import json
import multiprocessing
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper

from headprune.agents.hyperparams import ALGOS, TrainSettings, algo_kwargs, load_hyperparams, parse_assignments
from headprune.agents.zoo import env_wrapper_factory
from headprune.agents.callbacks import INFO_KEYWORDS, ProgressLog, WallClockLimit
from headprune.agents.policy_io import is_pickled_sb3, read_policy_file, restore_training_state, save_policy
from headprune.agents.run_recovery import (
    CHECKPOINT_PREFIX,
    HistoryEvalCallback,
    PolicyCheckpoint,
    checkpoints,
    resume_point,
    trim_monitor_files,
    trim_progress,
)
from headprune.envs.registration import ENV_ID, step_limit
from headprune.envs.wrappers import apply_wrappers, split_wrapper_options
from headprune.common.provenance import environment_info

__all__ = ["INFO_KEYWORDS", "LaneMonitor", "TrainResult", "latest_checkpoint", "make_env", "make_vec", "resume",
           "train"]


@dataclass(frozen=True)
class TrainResult:
    """What a training session produced.

    Attributes:
        run_dir: the run folder.
        model_path: ``run_dir / "model.zip"``.
        num_timesteps: env steps done by the run so far (all sessions).
        seconds: wall time of this session.
        end: ``"done"`` (reached ``n_timesteps``), ``"time limit"``, or ``"interrupted"`` (Ctrl-C).
        model: the trained SB3 model.
    """

    run_dir: Path
    model_path: Path
    num_timesteps: int
    seconds: float
    end: str
    model: BaseAlgorithm


# ------------------------------------------------------------------------------------------ envs
def _refuse_poisoned(env_kwargs: Mapping[str, Any]) -> None:
    if "poisoned_eval" in env_kwargs:
        raise ValueError("env_kwargs: poisoned_eval is not allowed in training (poisoned data is evaluation only)")


def make_env(env_id: str = ENV_ID, threads: int | None = None, **env_kwargs: Any) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)`` after pinning torch to ``threads`` (for SubprocVecEnv workers);
    ``finetune_terminal`` / ``finetune_config`` add the :class:`~headprune.envs.wrappers.TerminalFineTune`
    wrapper, and ``poisoned_eval`` is refused (training never sees poisoned data)."""
    _refuse_poisoned(env_kwargs)
    if threads is not None:
        torch.set_num_threads(int(threads))
    import headprune  # noqa: F401  (registers HeadPrune-v0 in a fresh worker)

    kwargs, wrapper_kwargs = split_wrapper_options(env_kwargs)
    return apply_wrappers(gym.make(env_id, max_episode_steps=step_limit(env_id, kwargs), **kwargs), **wrapper_kwargs)


def make_vec(env_id: str, env_kwargs: Mapping[str, Any], n_envs: int, seed: int, *,
             monitor_dir: str | os.PathLike[str] | None = None, append: bool = False,
             threads: int | None = None, vec_env: str = "auto", env_wrapper: Any = None) -> VecEnv:
    """``n_envs`` Monitor-wrapped envs: a ``DummyVecEnv`` for one, a ``SubprocVecEnv`` for more (``vec_env``
    ``"auto"``), or as ``vec_env`` says; ``"batched"`` is :class:`headprune.envs.vector.SB3BatchedVecEnv`
    (one model for all envs; no wrappers) under :class:`LaneMonitor`, which writes the same
    ``monitor/<rank>.monitor.csv`` files and episode infos as SB3's ``Monitor``, so a run folder is the same
    whatever the vector env.

    The Monitor records :data:`INFO_KEYWORDS` per episode; ``append`` continues existing monitor files
    (a resumed run). Worker ``i`` is reset with seed ``seed + i`` (SB3's ``make_vec_env``). SubprocVecEnv
    workers start by ``fork`` (about 1 s for 2 workers; forkserver/spawn re-import torch: 30 s) unless CUDA
    is initialised in this process (CUDA does not survive a fork), then by SB3's default (forkserver).
    ``env_wrapper`` is the zoo's entry (:func:`headprune.agents.zoo.env_wrapper_factory`).
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if vec_env == "batched":
        return _batched_vec(env_id, env_kwargs, n_envs, seed, env_wrapper, monitor_dir, append)
    factory = functools.partial(make_env, env_id, threads)
    subproc = vec_env == "subproc" or (vec_env == "auto" and n_envs > 1)
    fork = "fork" in multiprocessing.get_all_start_methods() and not torch.cuda.is_initialized()
    return make_vec_env(
        factory, n_envs=n_envs, seed=seed, env_kwargs=dict(env_kwargs),
        monitor_dir=None if monitor_dir is None else str(monitor_dir),
        monitor_kwargs={"info_keywords": INFO_KEYWORDS, "override_existing": not append},
        wrapper_class=env_wrapper_factory(env_wrapper),
        vec_env_cls=SubprocVecEnv if subproc else DummyVecEnv,
        vec_env_kwargs={"start_method": "fork"} if subproc and fork else None,
    )


class LaneMonitor(VecEnvWrapper):
    """SB3's ``Monitor`` for a vector env whose sub-envs cannot be wrapped one by one (the batched one): each
    finished episode's ``info["episode"]`` gets the :data:`INFO_KEYWORDS` columns, rounded as ``Monitor`` rounds
    them, and, with ``monitor_dir``, a row in ``<monitor_dir>/<rank>.monitor.csv`` (SB3's format and header).

    :param venv: a VecEnv that puts ``info["episode"]`` ``{r, l, t}`` at each episode's end.
    :param env_id: written in the files' header.
    :param monitor_dir: the folder of the files (None: infos only).
    :param append: continue existing files (a resumed run) instead of starting them anew.
    """

    def __init__(self, venv: VecEnv, env_id: str, monitor_dir: str | os.PathLike[str] | None = None,
                 append: bool = False) -> None:
        super().__init__(venv)
        self.writers: list[Any] = []
        if monitor_dir is not None:
            from stable_baselines3.common.monitor import ResultsWriter

            Path(monitor_dir).mkdir(parents=True, exist_ok=True)
            header = {"t_start": time.time(), "env_id": env_id}
            self.writers = [ResultsWriter(str(Path(monitor_dir) / str(rank)), header=header, extra_keys=INFO_KEYWORDS,
                                          override_existing=not append) for rank in range(venv.num_envs)]

    def reset(self) -> Any:
        return self.venv.reset()

    def step_wait(self) -> Any:
        observations, rewards, dones, infos = self.venv.step_wait()
        for rank, info in enumerate(infos):
            if dones[rank] and "episode" in info:
                episode = {"r": round(float(info["episode"]["r"]), 6), "l": int(info["episode"]["l"]),
                           "t": round(float(info["episode"]["t"]), 6), **{k: info[k] for k in INFO_KEYWORDS}}
                info["episode"] = episode
                if self.writers:
                    self.writers[rank].write_row(episode)
        return observations, rewards, dones, infos

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.venv.close()


def _batched_vec(env_id: str, env_kwargs: Mapping[str, Any], n_envs: int, seed: int, env_wrapper: Any,
                 monitor_dir: str | os.PathLike[str] | None = None, append: bool = False) -> VecEnv:
    from headprune.envs.vector import SB3BatchedVecEnv

    if env_wrapper is not None:
        raise ValueError("vec_env: batched runs the envs without wrappers; drop env_wrapper or use subproc")
    kwargs, wrapper_kwargs = split_wrapper_options(env_kwargs)
    if wrapper_kwargs:
        raise ValueError(f"vec_env: batched does not support the wrapper options {sorted(wrapper_kwargs)}")
    env = SB3BatchedVecEnv.from_env_id(env_id, n_envs, **kwargs)
    env.seed(seed)
    return LaneMonitor(env, env_id, monitor_dir, append)


# ------------------------------------------------------------------------------------------ run folder
def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the most timesteps in ``run_dir/checkpoints`` (``None`` if there is none)."""
    found = checkpoints(run_dir)
    return found[0][1] if found else None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _remove_unstarted_run(folder: Path, created: Sequence[Path]) -> None:
    """Undo a run that failed before its first session: ``run.json`` and ``config.yml``, and the folders
    ``created`` for it (only those; files of the user's in a folder that existed stay)."""
    import shutil

    for name in ("run.json", "config.yml"):
        (folder / name).unlink(missing_ok=True)
    for path in sorted(created, key=lambda p: len(p.parts), reverse=True):
        shutil.rmtree(path, ignore_errors=True)


def _read_run(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no run.json: not a headprune training run")
    return json.loads(path.read_text())


def _write_run(run_dir: Path, run: Mapping[str, Any]) -> None:
    tmp = run_dir / "run.json.tmp"
    tmp.write_text(json.dumps(run, indent=2, default=str) + "\n")
    os.replace(tmp, run_dir / "run.json")


def _api_command(name: str, **kwargs: Any) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if v is not None)
    return f"headprune.agents.{name}({args})"


# ------------------------------------------------------------------------------------------ train
# over 60 lines: mostly its documented keyword list; the work is in _build_model and _learn
def train(
    algo: str = "maskable_ppo",
    env_id: str = ENV_ID,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    conf_file: str | os.PathLike[str] | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    n_timesteps: int | None = None,
    max_minutes: float | None = None,
    progress_bar: bool = False,
    tensorboard: bool = True,
    threads: int | None = None,
    verbose: int = 0,
    callbacks: Sequence[BaseCallback] = (),
    command: str | None = None,
) -> TrainResult:
    """Train ``algo`` on ``env_id`` with the zoo-style hyperparameters and save a run folder.

    Args:
        algo: ``"maskable_ppo"`` (default; masks from ``env.action_masks()``) or ``"ppo"`` (no masks:
            invalid actions cost the env's penalty).
        env_id: the Gymnasium id (and the YAML entry).
        run_dir: the run folder (default ``runs/<algo>_<env_id>_s<seed>``); it must not hold a run yet
            (continue one with :func:`resume`).
        seed: seeds the algorithm (torch, numpy, action sampling) and the envs' resets.
        conf_file: a zoo-format YAML (default the shipped ``configs/<algo>.yml``).
        hyperparams: entry keys to override (``policy_kwargs`` and ``env_kwargs`` merged key by key).
        env_kwargs: ``HeadPruneEnv`` keyword arguments merged over the entry's (``victim``, ``cache``...)
            together with ``hyperparams["env_kwargs"]`` (a key in both must have the same value).
        n_timesteps: override the entry's ``n_timesteps``.
        max_minutes: stop after this much wall time (the run is saved and can be resumed).
        progress_bar: SB3's progress bar (tqdm + rich).
        tensorboard: write TensorBoard logs to ``run_dir/tb``.
        threads: pin torch (and every SubprocVecEnv worker) to this many threads.
        verbose: SB3 verbosity.
        callbacks: extra SB3 callbacks.
        command: the command recorded in ``run.json`` (the CLI passes its exact command line).
    """
    overrides = {**dict(hyperparams or {})}
    if env_kwargs:  # merged with hyperparams' own env_kwargs; a key given twice must agree
        given = dict(overrides.get("env_kwargs") or {})
        clash = sorted(k for k in set(given) & set(env_kwargs) if given[k] != env_kwargs[k])
        if clash:
            raise ValueError(f"env_kwargs and hyperparams['env_kwargs'] disagree on {clash}")
        overrides["env_kwargs"] = {**given, **dict(env_kwargs)}
    if n_timesteps is not None:
        overrides["n_timesteps"] = int(n_timesteps)
    hp = load_hyperparams(algo, env_id, conf_file=conf_file, overrides=overrides)
    settings = TrainSettings.from_hyperparams(hp)
    _refuse_poisoned(settings.env_kwargs)
    for key, value in settings.env_kwargs.items():  # the run folder must be able to rebuild the env
        try:
            yaml.safe_dump(value)
        except yaml.YAMLError:
            raise ValueError(f"env_kwargs.{key}: {type(value).__name__} cannot be saved in config.yml; pass a preset "
                             "name, a folder or a file path instead") from None
    algo_kwargs(hp, algo)  # schedules and policy_kwargs checked before the run folder exists
    folder = Path(run_dir) if run_dir is not None else Path("runs") / f"{algo}_{env_id}_s{seed}"
    if (folder / "run.json").exists():
        raise ValueError(f"run_dir {folder} already holds a run: resume it (headprune train --resume {folder}) "
                         "or choose another folder")
    created = [p for p in (folder, folder / "monitor", folder / "tb") if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yml").write_text(yaml.safe_dump({env_id: hp}, sort_keys=False))
    run = {"algo": algo, "env_id": env_id, "seed": int(seed),
           "conf_file": None if conf_file is None else str(conf_file), "versions": environment_info(), "sessions": []}
    _write_run(folder, run)
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:  # a run that cannot start (bad env or algorithm arguments) leaves no run behind, so it can start again
        env = make_vec(env_id, settings.env_kwargs, settings.n_envs, seed, monitor_dir=folder / "monitor",
                       threads=threads, vec_env=settings.vec_env, env_wrapper=settings.env_wrapper)
        model = _build_model(hp, algo, env, seed, verbose, str(folder / "tb") if tensorboard else None)
    except BaseException:
        _remove_unstarted_run(folder, created)
        raise
    command = command or _api_command("train", algo=algo, env_id=env_id, run_dir=str(folder), seed=seed,
                                      conf_file=conf_file, hyperparams=hyperparams, env_kwargs=env_kwargs,
                                      n_timesteps=n_timesteps, max_minutes=max_minutes)
    return _learn(model, folder, run, settings, checkpoint=None, command=command, max_minutes=max_minutes,
                  progress_bar=progress_bar, threads=threads, callbacks=callbacks)


def _build_model(hp: Mapping[str, Any], algo: str, env: VecEnv, seed: int, verbose: int,
                 tensorboard_log: str | None) -> BaseAlgorithm:
    """A fresh algorithm of the run's hyperparameters on ``env`` (train's model; resume loads a checkpoint in)."""
    head_shape = tuple(int(x) for x in env.get_attr("head_shape", indices=[0])[0])
    kwargs = algo_kwargs(hp, algo)
    if isinstance(kwargs["policy"], type):  # headprune's size-agnostic policies need the model's (L, H)
        kwargs["policy_kwargs"] = {**kwargs["policy_kwargs"], "head_shape": head_shape}
    return ALGOS[algo](env=env, seed=int(seed), verbose=verbose, tensorboard_log=tensorboard_log, **kwargs)


def resume(
    run_dir: str | os.PathLike[str],
    *,
    trust_pickle: bool = False,
    n_timesteps: int | None = None,
    max_minutes: float | None = None,
    progress_bar: bool = False,
    threads: int | None = None,
    verbose: int = 0,
    callbacks: Sequence[BaseCallback] = (),
    command: str | None = None,
) -> TrainResult:
    """Continue the run in ``run_dir`` from its newest readable checkpoint until ``n_timesteps`` (default
    the run's), with the run's saved hyperparameters, env and seed. The model is rebuilt from
    ``config.yml`` and the checkpoint's weights, optimizer state and counters are loaded into it
    (:func:`~headprune.agents.policy_io.restore_training_state`: nothing is unpickled). Monitor files,
    ``progress.jsonl``, the evaluation history and the TensorBoard run are continued, after dropping the
    rows written past the checkpoint (:mod:`~headprune.agents.run_recovery`). The algorithm's RNGs are
    re-seeded with ``seed + timesteps``.

    :param trust_pickle: resume from an SB3 pickled checkpoint (older runs), which RUNS ANY CODE IN IT.
    """
    folder = Path(run_dir)
    run = _read_run(folder)
    checkpoint, steps, repaired = resume_point(folder, run, trust_pickle)
    algo, env_id, seed = run["algo"], run["env_id"], int(run["seed"])
    hp = load_hyperparams(algo, env_id, conf_file=folder / "config.yml",
                          overrides=None if n_timesteps is None else {"n_timesteps": int(n_timesteps)})
    settings = TrainSettings.from_hyperparams(hp)
    if n_timesteps is not None:
        (folder / "config.yml").write_text(yaml.safe_dump({env_id: hp}, sort_keys=False))
    if threads is not None:
        torch.set_num_threads(int(threads))
    repaired["monitor_rows_dropped"] = trim_monitor_files(folder / "monitor", steps // settings.n_envs)
    repaired["progress_rows_dropped"] = trim_progress(folder / "progress.jsonl", steps)
    env = make_vec(env_id, settings.env_kwargs, settings.n_envs, seed, monitor_dir=folder / "monitor", append=True,
                   threads=threads, vec_env=settings.vec_env, env_wrapper=settings.env_wrapper)
    tb = str(folder / "tb") if (folder / "tb").is_dir() else None
    if is_pickled_sb3(checkpoint):  # trust_pickle was given (newest_readable_checkpoint refuses it otherwise)
        model = ALGOS[algo].load(checkpoint, env=env, tensorboard_log=tb, verbose=verbose)
    else:
        model = _build_model(hp, algo, env, seed, verbose, tb)
        restore_training_state(model, read_policy_file(checkpoint))
    model.set_random_seed(seed + int(model.num_timesteps))
    command = command or _api_command("resume", run_dir=str(folder), n_timesteps=n_timesteps, max_minutes=max_minutes)
    return _learn(model, folder, run, settings, checkpoint=checkpoint, command=command, max_minutes=max_minutes,
                  progress_bar=progress_bar, threads=threads, callbacks=callbacks, repaired=repaired)


# over 60 lines: one session's callbacks (progress, checkpoints, evaluation, limit) and its run.json record
def _learn(model: BaseAlgorithm, folder: Path, run: dict[str, Any], settings: TrainSettings, *,
           checkpoint: Path | None, command: str, max_minutes: float | None, progress_bar: bool,
           threads: int | None, callbacks: Sequence[BaseCallback], repaired: dict[str, Any] | None = None
           ) -> TrainResult:
    """One training session up to ``settings.n_timesteps``; records it in ``run.json`` and saves the
    model and a checkpoint at its end (also after Ctrl-C; an exception is recorded and re-raised)."""
    n_envs, start_steps = settings.n_envs, int(model.num_timesteps)
    session = {"command": command, "started_utc": _now(), "start_timesteps": start_steps,
               "resumed_from": None if checkpoint is None else str(checkpoint), "end": "running",
               "torch_threads": torch.get_num_threads()}
    if repaired:
        session["repaired"] = repaired
    run["sessions"].append(session)
    _write_run(folder, run)
    cbs: list[BaseCallback] = [ProgressLog(folder / "progress.jsonl", len(run["sessions"]) - 1)]
    eval_env: VecEnv | None = None
    if settings.eval_freq > 0:
        eval_env = make_vec(run["env_id"], settings.env_kwargs, 1, int(run["seed"]) + 10_000, threads=threads,
                            env_wrapper=settings.env_wrapper)
        evaluation = HistoryEvalCallback(eval_env, folder / "eval", start_steps,
                                         n_eval_episodes=settings.n_eval_episodes,
                                         eval_freq=max(settings.eval_freq // n_envs, 1), deterministic=True,
                                         use_masking=run["algo"] == "maskable_ppo", verbose=model.verbose)
        if repaired is not None:
            repaired["eval_rows_dropped"] = evaluation.dropped_rows
        cbs.append(evaluation)
    if settings.checkpoint_freq > 0:  # after the evaluation: a checkpoint at T implies T's evaluation is on disk,
        # so a session killed between the two resumes from the checkpoint before and replays that evaluation
        cbs.append(PolicyCheckpoint(max(settings.checkpoint_freq // n_envs, 1), folder / "checkpoints"))
    limit = WallClockLimit(60.0 * max_minutes) if max_minutes is not None else None
    if limit is not None:
        cbs.append(limit)
    cbs += list(callbacks)
    remaining = settings.n_timesteps - start_steps
    start = time.perf_counter()
    end = "done"
    try:
        if remaining > 0:
            with warnings.catch_warnings():  # the evaluation env is a DummyVecEnv by design
                warnings.filterwarnings("ignore", message="Training and eval env are not of the same type")
                model.learn(total_timesteps=remaining, callback=CallbackList(cbs),
                            reset_num_timesteps=checkpoint is None, tb_log_name="run", progress_bar=progress_bar)
        if limit is not None and limit.reached:
            end = "time limit"
    except KeyboardInterrupt:
        end = "interrupted"
    except BaseException as err:
        session.update(end=f"error: {type(err).__name__}: {err}", end_timesteps=int(model.num_timesteps),
                       seconds=round(time.perf_counter() - start, 3))
        _write_run(folder, run)
        raise
    finally:
        model.get_env().close()
        if eval_env is not None:
            eval_env.close()
    seconds = time.perf_counter() - start
    steps = int(model.num_timesteps)
    model_path = folder / "model.zip"
    save_policy(model, model_path)
    if settings.checkpoint_freq > 0:
        save_policy(model, folder / "checkpoints" / f"{CHECKPOINT_PREFIX}_{steps}_steps.zip")
    session.update(end=end, end_timesteps=steps, seconds=round(seconds, 3),
                   steps_per_second=round((steps - start_steps) / seconds, 3) if seconds > 0 else None)
    _write_run(folder, run)
    return TrainResult(run_dir=folder, model_path=model_path, num_timesteps=steps, seconds=seconds, end=end,
                       model=model)
