"""The clean-data budget curve of issue 13: LFR (after the defense and the protocol's clean fine-tune)
against the number of clean rows the defender owns, for a few defenses on a few victims.

A budget of ``N`` rows is the first ``N`` rows of the defender pool ``sst2-dev+glue-train``
(:mod:`headprune.data.pools`: the 872 SST-2 dev rows, then GLUE SST-2 train in a fixed permutation, no test
or dev sentence); 256 of them are held out for validation, so budgets 872 / 2256 / 8256 fine-tune on
616 / 2,000 / 8,000 rows. The 872-row point IS the default protocol: its runs are read from (and, if missing,
written to) the main table's records (``--main-jsonl``), larger budgets go to ``--jsonl``. Every other setting
is ``defend``'s default (3 epochs of fine-tuning at the defense's lr, 5-point floor). The runner resumes: a
cell already recorded is skipped.

    python benchmarks/clean_budget.py --victims minilm-syntactic minilm-style \\
        --defenses ft fth layerwise finemix --budgets 872 2256 8256 --seeds 0
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from _start import start

from headprune.cli.settings import add_setting_arguments
from headprune.compare import RecordStore, make_executor, plan_grid, run_grid
from headprune.compare.records import DEFAULT_DEFENDER_ROWS
from headprune.compare.records import configuration, format_stat, mean_std

POOL = "sst2-dev+glue-train"


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--victims", nargs="+", default=["minilm-syntactic", "minilm-style"])
    p.add_argument("--defenses", nargs="+", default=["ft", "fth", "layerwise", "finemix"])
    p.add_argument("--budgets", nargs="+", type=int, default=[DEFAULT_DEFENDER_ROWS, 2256, 8256],
                   help="defender rows (the first N of the pool; 256 of them validation)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    add_setting_arguments(p)
    p.add_argument("--jsonl", default="benchmarks/results/clean_budget_runs.jsonl")
    p.add_argument("--main-jsonl", default="benchmarks/results/defense_runs.jsonl",
                   help="the main table's records, where the default protocol's (872-row) runs live")
    p.add_argument("--cache", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: print the curve of the runs already recorded (missing cells shown as —)")
    args = p.parse_args()
    if args.clean_rows is not None or args.clean_pool is not None:
        p.error("--clean-rows / --clean-pool are set per budget by this script; give --budgets")
    for b in args.budgets:
        if b < DEFAULT_DEFENDER_ROWS:
            p.error(f"--budgets: {b} is below the default protocol's {DEFAULT_DEFENDER_ROWS} rows")
    return args


def main() -> int:
    args = _parse()
    command, settings = start("benchmarks/clean_budget.py", args, args.defenses)
    print(f"Command: `{command}`", flush=True)
    curve: dict[tuple[str, str, int], list[dict]] = {}
    status = 0
    for budget in args.budgets:
        if budget == DEFAULT_DEFENDER_ROWS:
            s, path = settings, args.main_jsonl
        else:
            s, path = dataclasses.replace(settings, clean_rows=budget, clean_pool=POOL), args.jsonl
        if args.report_only:
            store = RecordStore(path) if Path(path).is_file() else None
            cells = plan_grid(args.victims, args.defenses, args.seeds, s, cache=args.cache)
            found = [store.records[c.key] for c in cells if store is not None and c.key in store]
        else:
            report = run_grid(args.victims, args.defenses, args.seeds, path, s,
                              executor=make_executor("auto", args.workers), cache=args.cache, progress=False,
                              log=lambda line: print(line, flush=True))
            status |= report.report_failures()
            found = report.records
        for r in found:
            curve.setdefault((r["victim"], configuration(r), budget), []).append(r)
    print(_table(curve, args.budgets, settings.env.val_size))
    return status


def _table(curve: dict[tuple[str, str, int], list[dict]], budgets: list[int], val_size: int) -> str:
    """Markdown: one row per (victim, configuration: the strategy and its options), one column per budget,
    ``LFR (ACC)`` mean ± std over seeds."""
    head = "| victim | defense | " + " | ".join(f"{b} rows ({b - val_size} FT)" for b in budgets) + " |"
    lines = [head, "|" + "---|" * (2 + len(budgets))]
    for victim, strategy in dict.fromkeys((v, s) for v, s, _ in curve):
        cells = []
        for b in budgets:
            runs = curve.get((victim, strategy, b), [])
            lfr, acc = mean_std(r["lfr"] for r in runs), mean_std(r["acc"] for r in runs)
            cells.append(f"{format_stat(lfr)} ({format_stat(acc)}; n={lfr[2]})" if runs else "—")
        lines.append(f"| {victim} | {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
