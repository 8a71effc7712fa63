"""Experiment runner: agents and baselines over a (victim, method, seed) grid, one JSONL record per run,
resumable, in process, over processes or on Ray. ``headprune compare`` is its command line.

* :mod:`headprune.compare.grid`: :func:`run_grid`, :class:`RunSettings`, methods and the per-run worker;
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
    add_run_settings_arguments,
    canonical_method,
    fast_options,
    parse_method,
    plan_grid,
    run_cell,
    run_grid,
    run_settings_from_args,
)
from headprune.compare.records import (
    CLEAN_MODEL,
    POLICY_PREFIX,
    SUMMARY_COLUMNS,
    SUMMARY_DIGITS,
    RecordStore,
    format_stat,
    grid_shape,
    head_frequency,
    load_records,
    mean_std,
    method_label,
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
    "add_run_settings_arguments",
    "canonical_method",
    "fast_options",
    "format_stat",
    "grid_shape",
    "head_frequency",
    "load_records",
    "make_executor",
    "mean_std",
    "method_label",
    "parse_method",
    "pin_threads",
    "plan_grid",
    "record_attack",
    "run_cell",
    "run_grid",
    "run_settings_from_args",
    "summary_markdown",
    "summary_rows",
]
