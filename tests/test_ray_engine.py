"""``headprune compare --engine ray`` on a local Ray cluster (``ray.init(num_cpus=2)``): the records equal
the local executor's, and a task whose worker is killed mid-run is retried without duplicating a record.

Ray is an optional extra (``pip install 'headprune[ray]'``) that the ``test`` extra installs, so CI runs
this file; without Ray it is skipped with that reason."""

from __future__ import annotations

import functools
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'headprune[ray]' (the test extra has it)")

from headprune.cli import main  # noqa: E402
from headprune.compare import RecordStore, RunSettings, plan_grid, run_grid  # noqa: E402
from headprune.compare.executors import RayExecutor  # noqa: E402
from headprune.compare.grid import run_cell  # noqa: E402

SETTINGS = RunSettings.from_values(finetune_epochs=0, val_size=64, stats_size=48, clean_rows=160, test_limit=60,
                                   fast=True)
NUMBERS = ("acc", "lfr", "acc_pruned", "lfr_pruned", "heads_pruned", "mask", "pruned_heads", "validation")


def _numbers(records: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[str, ...]]:
    return {(r["defense"], r["seed"]): tuple(json.dumps(r.get(k)) for k in NUMBERS) for r in records}


@pytest.fixture(scope="module")
def executor(tiny_victim):
    """A local 2-CPU Ray cluster for this module; its workers import this checkout and this test module
    (``_die_once``) through PYTHONPATH."""
    here = Path(__file__).parent
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(here.parent), str(here), old) if p)
    ex = RayExecutor(num_cpus=2)
    yield ex
    ray.shutdown()
    if old is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = old


def test_ray_records_equal_the_local_executor(executor, victim_cache, tmp_path):
    methods, seeds = ["random", "gradient"], [0, 1]
    local = run_grid(["tiny"], methods, seeds, tmp_path / "local.jsonl", SETTINGS, cache=victim_cache,
                     progress=False, log=lambda _: None)
    remote = run_grid(["tiny"], methods, seeds, tmp_path / "ray.jsonl", SETTINGS, executor=executor,
                      cache=victim_cache, progress=False, log=lambda _: None)
    assert not local.failed and not remote.failed, remote.failed
    assert len(remote.ran) == 4 and _numbers(remote.records) == _numbers(local.records)


def _die_once(marker: str, spec: Any) -> dict[str, Any]:
    """``run_cell``, but the first worker to run seed 0 SIGKILLs itself mid-task (once: the marker)."""
    if spec.seed == 0 and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return run_cell(spec)


def test_a_killed_worker_is_retried_without_a_duplicate_record(executor, victim_cache, tmp_path):
    specs = plan_grid(["tiny"], ["random"], [0, 1], SETTINGS, cache=str(victim_cache))
    marker = tmp_path / "killed"
    store = RecordStore(tmp_path / "runs.jsonl")
    outcomes = list(executor.map_unordered(functools.partial(_die_once, str(marker)), specs))
    assert marker.is_file()  # a worker really died mid-task
    assert len(outcomes) == len(specs) and all(isinstance(o, dict) for _, o in outcomes), outcomes
    for _, record in outcomes:
        store.append(record)
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == 2 and len(RecordStore(tmp_path / "runs.jsonl")) == 2
    local = [run_cell(s) for s in specs]
    assert _numbers([o for _, o in outcomes]) == _numbers(local)


def test_cli_engine_ray(executor, victim_cache, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--victims", "tiny", "--defenses", "none", "--seeds", "2", "--engine", "ray",
                 "--out", str(out), "--cache", str(victim_cache), "--quiet", "--finetune-epochs", "0",
                 "--val-size", "64", "--stats-size", "48", "--test-limit", "40"])
    assert code == 0, capsys.readouterr().err
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2
