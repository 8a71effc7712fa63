"""Benchmark: env-steps/s of the one-model vector env (scoring batched or incremental) vs SubprocVecEnv
(fork) vs DummyVecEnv.

For each env id (``--env-id``, default ``HeadPrune-Tiny-v0``; the lead runs ``HeadPrune-v0`` for
MiniLM) and each ``N`` in ``--num-envs`` (default 1 2 4 8), the four SB3 vector envs run the same
seeded action sequence (a uniform valid action per env, drawn from one generator) for ``--steps``
vector steps after a warm-up reset. Transitions are identical across the four (asserted: the summed
rewards must be equal to the last bit), so the comparison is on the same work. Reported per row:
env-steps/s (``N * steps / seconds``), RSS of the process plus its live children (MiB, after the
run, each row in a fresh forked process; SubprocVecEnv holds one model per worker, the batched env
one model), and whether the rewards match the DummyVecEnv's. Threads: one torch thread per process
(``--threads``); ``--one-model-threads`` gives the one-model envs their own count, so that one process
with two threads can be set against ``N`` single-thread SubprocVecEnv workers on the same two cores.
``--kinds`` picks the vector envs to time (DummyVecEnv always runs: its rewards are the reference).

    .venv/bin/python benchmarks/bench_vector_env.py [--env-id HeadPrune-Tiny-v0] [--num-envs 1 2 4 8]
        [--steps 64] [--cache DIR] [--threads 1] [--one-model-threads 2] [--kinds subproc one-model-incremental]
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import struct
import time
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import psutil
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

import headprune  # noqa: F401
from headprune.envs.vector import SB3BatchedVecEnv


KINDS: tuple[str, ...] = ("dummy", "subproc", "one-model-batched", "one-model-incremental")
"""The vector envs timed: DummyVecEnv (the reference), SubprocVecEnv (fork), the one-model env's two scorings."""


def _make(env_id: str, threads: int, kwargs: dict[str, Any]) -> gym.Env:
    torch.set_num_threads(threads)
    import headprune  # noqa: F401,F811  (registers the ids in a worker)

    return gym.make(env_id, **kwargs)


def build(kind: str, env_id: str, n: int, threads: int, kwargs: dict[str, Any]) -> VecEnv:
    """One of ``one-model-batched``, ``one-model-incremental``, ``subproc`` (fork) or ``dummy`` with ``n`` envs."""
    if kind.startswith("one-model"):  # one-model-batched / one-model-incremental
        return SB3BatchedVecEnv.from_env_id(env_id, n, scoring=kind.rpartition("-")[2], **kwargs)
    fns = [functools.partial(_make, env_id, threads, kwargs) for _ in range(n)]
    return SubprocVecEnv(fns, start_method="fork") if kind == "subproc" else DummyVecEnv(fns)


def rss_mib() -> float:
    me = psutil.Process()
    return (me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))) / 2**20


def run(env: VecEnv, steps: int) -> tuple[float, float]:
    """``(env-steps/s, sum of rewards)`` over ``steps`` vector steps of seeded uniform valid actions."""
    rng = np.random.default_rng(0)
    env.seed(0)
    env.reset()
    total = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        masks = np.stack(env.env_method("action_masks"))
        actions = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
        _, rewards, _, _ = env.step(actions)
        total += float(np.sum(rewards.astype(np.float32).astype(np.float64)))  # DummyVecEnv keeps float32
    seconds = time.perf_counter() - start
    return env.num_envs * steps / seconds, total


def _measure(queue: Any, kind: str, env_id: str, n: int, threads: int, kwargs: dict[str, Any], steps: int) -> None:
    torch.set_num_threads(threads)
    env = build(kind, env_id, n, threads, kwargs)
    speed, total = run(env, steps)
    queue.put((speed, total, rss_mib()))
    env.close()


def in_fresh_process(kind: str, env_id: str, n: int, threads: int, kwargs: dict[str, Any], steps: int
                     ) -> tuple[float, float, float]:
    """:func:`run` in a forked child (so each row's RSS is its own): ``(env-steps/s, reward sum, RSS MiB)``."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_measure, args=(queue, kind, env_id, n, threads, kwargs, steps))
    child.start()
    result = queue.get()
    child.join()
    return result


def _rate(per_second: float) -> str:
    """Three significant figures without an exponent: ``286``, ``12.4``, ``1.23`` (MiniLM rates are ~1/s)."""
    return f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="HeadPrune-Tiny-v0")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each process (default 1)")
    parser.add_argument("--one-model-threads", type=int, default=None,
                        help="torch threads of the one-model envs' process (default: --threads)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS[1:], default=list(KINDS[1:]),
                        help="vector envs to time besides DummyVecEnv (default: all)")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--device", default=None, help="device of the batched env's model (cuda, mps, ...)")
    args = parser.parse_args()
    if args.threads < 1 or (args.one_model_threads is not None and args.one_model_threads < 1):
        parser.error("--threads and --one-model-threads must be >= 1")
    one_model_threads = args.threads if args.one_model_threads is None else args.one_model_threads
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    kwargs: dict[str, Any] = {"progress": False, **({"cache": args.cache} if args.cache else {})}
    gym.make(args.env_id, **kwargs).close()  # build/cache the victim and statistics once, outside the timings
    print("| env id | N | vector env | env-steps/s | RSS MiB | rewards = DummyVecEnv's |")
    print("|---|---|---|---|---|---|")
    for n in args.num_envs:
        reference = None
        for kind in ("dummy", *(k for k in KINDS[1:] if k in args.kinds)):
            one_model = kind.startswith("one-model")
            extra = {"device": args.device} if one_model and args.device else {}
            threads = one_model_threads if one_model else args.threads
            speed, total, rss = in_fresh_process(kind, args.env_id, n, threads, {**kwargs, **extra}, args.steps)
            if reference is None:
                reference = total
            same = struct.pack("<d", total) == struct.pack("<d", reference)
            label = f"{kind}, {threads} threads" if threads != args.threads else kind
            print(f"| {args.env_id} | {n} | {label} | {_rate(speed)} | {rss:,.0f} | {'yes' if same else 'NO'} |",
                  flush=True)


if __name__ == "__main__":
    main()
