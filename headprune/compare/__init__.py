"""Experiment runner: agents and baselines over a (victim, defense, seed) grid, one JSONL record per run,
resumable, in process, over processes or on Ray. ``headprune compare`` is its command line.

* :mod:`headprune.compare.grid`: :func:`run_grid`, :class:`RunSettings`, defenses and the per-run worker;
* :mod:`headprune.compare.executors`: the :class:`Executor` protocol and its local / process / Ray engines;
* :mod:`headprune.compare.records`: the JSONL store, loading and the mean ± std summary.
"""

from headprune.compare.executors import (
    Executor,
    LocalExecutor,
    ProcessExecutor,
    RayExecutor,
    make_executor,
    pin_threads,
)
from headprune.compare.grid import (
    DEFEND_SETTINGS,
    GridReport,
    RunSettings,
    RunSpec,
    canonical_defense,
    fast_options,
    parse_defense,
    plan_grid,
    run_cell,
    run_grid,
)
from headprune.compare.records import (
    CLEAN_MODEL,
    POLICY_PREFIX,
    SUMMARY_COLUMNS,
    SUMMARY_DIGITS,
    RecordStore,
    configuration,
    fine_tune_rows,
    format_stat,
    grid_shape,
    head_frequency,
    load_records,
    mean_std,
    defense_label,
    record_attack,
    summary_markdown,
    summary_rows,
)

__all__ = [
    "CLEAN_MODEL",
    "DEFEND_SETTINGS",
    "POLICY_PREFIX",
    "SUMMARY_COLUMNS",
    "SUMMARY_DIGITS",
    "Executor",
    "GridReport",
    "LocalExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "RecordStore",
    "RunSettings",
    "RunSpec",
    "canonical_defense",
    "configuration",
    "fast_options",
    "fine_tune_rows",
    "format_stat",
    "grid_shape",
    "head_frequency",
    "load_records",
    "make_executor",
    "mean_std",
    "defense_label",
    "parse_defense",
    "pin_threads",
    "plan_grid",
    "record_attack",
    "run_cell",
    "run_grid",
    "summary_markdown",
    "summary_rows",
]
