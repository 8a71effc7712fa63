"""Where the runs of a grid execute. A grid cell is a picklable :class:`~headprune.compare.grid.RunSpec`
and a run is the module-level function ``run_cell(spec) -> record``, so any engine that can call a
function on a picklable argument runs the same grid, with no change to defenses:

* :class:`LocalExecutor` (the default): in this process, one run after another;
* :class:`ProcessExecutor`: a :class:`concurrent.futures.ProcessPoolExecutor` (spawned workers, each
  pinned to one torch thread so ``N`` workers use ``N`` cores);
* :class:`RayExecutor`: Ray tasks (one CPU each) on a local Ray cluster or an existing one
  (``--ray-address``), with tasks retried when their worker dies; needs the ``ray`` extra
  (``pip install 'headprune[ray]'``; the ``test`` extra installs it and the tests run a local cluster).

Executors only compute: they yield ``(spec, record or exception)`` as runs finish, and the caller (the
parent process) is the only writer of the records file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Protocol, TypeVar

__all__ = ["Executor", "LocalExecutor", "ProcessExecutor", "RayExecutor", "make_executor", "pin_threads"]

T = TypeVar("T")
Outcome = tuple[T, "dict[str, Any] | BaseException"]


class Executor(Protocol):
    """Runs ``fn`` on every task and yields ``(task, result or the exception it raised)`` in
    completion order. ``fn`` and the tasks must be picklable for out-of-process engines."""

    name: str

    def map_unordered(self, fn: Callable[[T], dict[str, Any]], tasks: Sequence[T]) -> Iterator[Outcome[T]]: ...


def pin_threads(threads: int = 1) -> None:
    """Limit torch (and the BLAS/OpenMP pools of libraries started later) to ``threads`` threads."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set, or parallel work already started in this process
        pass


class LocalExecutor:
    """Runs every task in this process, in order."""

    name = "local"

    def map_unordered(self, fn: Callable[[T], dict[str, Any]], tasks: Sequence[T]) -> Iterator[Outcome[T]]:
        for task in tasks:
            try:
                yield task, fn(task)
            except Exception as err:  # noqa: BLE001 - reported per run by the caller
                yield task, err


class ProcessExecutor:
    """Spreads tasks over ``workers`` spawned processes, each pinned to ``threads`` torch threads.

    Spawn (not fork) so workers never inherit a parent's OpenMP state; each worker imports headprune
    once and keeps its loaded victims between tasks.
    """

    name = "process"

    def __init__(self, workers: int, threads: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = int(workers)
        self.threads = int(threads)

    def map_unordered(self, fn: Callable[[T], dict[str, Any]], tasks: Sequence[T]) -> Iterator[Outcome[T]]:
        if not tasks:
            return
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)), mp_context=mp.get_context("spawn"),
                                 initializer=pin_threads, initargs=(self.threads,)) as pool:
            pending: dict[Future[dict[str, Any]], T] = {pool.submit(fn, t): t for t in tasks}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = pending.pop(fut)
                    err = fut.exception()
                    yield (task, err) if err is not None else (task, fut.result())


class RayExecutor:
    """Ray tasks of ``threads`` CPUs each, on an existing cluster (``address``, e.g. ``"ray://head:10001"``
    or ``"auto"``) or, with ``address=None``, a local one of ``num_cpus`` CPUs started here.

    A task whose worker process dies (killed, out of memory, a lost node) is retried by Ray up to
    ``max_retries`` times; an exception raised by the run itself is not retried (it is reported). Each
    task yields exactly one outcome, and only the parent writes records, so a retry never duplicates a
    record. Workers must see the same headprune version, data folder and victim cache (or build victims
    themselves from their presets).

    :param address: the cluster to join (``None``: start a local one).
    :param threads: torch threads (and Ray CPUs) per task.
    :param num_cpus: CPUs of a local cluster (ignored when joining one).
    :param max_retries: retries of a task whose worker died.
    """

    name = "ray"

    def __init__(self, address: str | None = None, threads: int = 1, *, num_cpus: int | None = None,
                 max_retries: int = 3) -> None:
        try:
            import ray
        except ImportError as err:
            raise ValueError("--engine ray needs the 'ray' package: pip install 'headprune[ray]'") from err
        self._ray = ray
        self.threads = int(threads)
        self.max_retries = int(max_retries)
        if not ray.is_initialized():
            if address is None:
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)

    def map_unordered(self, fn: Callable[[T], dict[str, Any]], tasks: Sequence[T]) -> Iterator[Outcome[T]]:
        ray = self._ray
        remote = ray.remote(num_cpus=self.threads, max_retries=self.max_retries, retry_exceptions=False)(_ray_call)
        refs = {remote.remote(fn, t, self.threads): t for t in tasks}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                task = refs.pop(ref)
                try:
                    yield task, ray.get(ref)
                except Exception as err:  # noqa: BLE001 - ray wraps the task's exception
                    yield task, getattr(err, "cause", None) or err


def _ray_call(fn: Callable[[T], dict[str, Any]], task: T, threads: int) -> dict[str, Any]:
    """One Ray task: pin the worker's threads, then run ``fn(task)`` (module level, so Ray ships it by name)."""
    pin_threads(threads)
    return fn(task)


def make_executor(engine: str = "auto", workers: int = 1, *, threads: int = 1, address: str | None = None) -> Executor:
    """The executor for ``engine``: ``"local"``, ``"process"``, ``"ray"``, or ``"auto"`` (process when
    ``workers > 1``, else local)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if engine == "auto":
        engine = "process" if workers > 1 else "local"
    if engine == "local":
        return LocalExecutor()
    if engine == "process":
        return ProcessExecutor(workers, threads)
    if engine == "ray":
        return RayExecutor(address, threads, num_cpus=None if address is not None else workers * threads)
    raise ValueError(f"unknown engine {engine!r}; valid: auto, local, process, ray")
