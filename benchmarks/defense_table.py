"""Regenerate the baseline-defense table of issue 5: every defense of the registry plus the
no-defense and clean-model rows, with ACC and LFR (after pruning and after pruning + fine-tuning), heads
pruned and wall time, mean +- std over seeds, for each victim.

A thin wrapper over the experiment runner (:func:`headprune.compare.run_grid`, also ``headprune
compare``): resumable, every finished run is appended to a JSONL file keyed by (victim, defense, seed,
config hash); a rerun skips the keys already there, so an interrupted sweep continues where it stopped
and the table is rebuilt from the file. The Markdown printed at the end starts with the exact command.

The full table (CPU: many hours; run it where MiniLM victims are already built)::

    .venv/bin/python benchmarks/defense_table.py --victims minilm-syntactic minilm-style --seeds 0 1 2

Smoke run (tiny victim, one seed, tiny budgets; about a minute)::

    .venv/bin/python benchmarks/defense_table.py --victims tiny --seeds 0 --finetune-epochs 0.5 \\
        --finetune-max-steps 3 --clean-rows 200 --val-size 80 --stats-size 64 --test-limit 200 --fast \\
        --jsonl /tmp/defense_smoke.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _start import start

from headprune.cli.settings import add_setting_arguments
from headprune.compare import (
    CLEAN_MODEL, RecordStore, make_executor, plan_grid, run_grid,
    summary_markdown,
)
from headprune.defenses import defense_names


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--victims", nargs="+", default=["minilm-syntactic", "minilm-style"])
    p.add_argument("--defenses", nargs="+", default=defense_names(), help="registry names ('none' = no defense)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add_setting_arguments(p)
    p.add_argument("--jsonl", default="benchmarks/results/defense_runs.jsonl")
    p.add_argument("--markdown-out", default=None, help="also write the Markdown table here")
    p.add_argument("--cache", default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription on busy CPUs)")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel processes (1 thread each)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: print the table of the runs already recorded and list the missing ones")
    return p.parse_args()


def main() -> int:
    args = _parse()
    command, settings = start("benchmarks/defense_table.py", args, args.defenses)
    if args.report_only:
        return _report_only(args, settings, command)
    report = run_grid(args.victims, args.defenses, args.seeds, args.jsonl, settings, reference=True,
                      executor=make_executor("auto", args.workers), cache=args.cache, progress=False,
                      log=lambda line: print(line, flush=True))
    return report.publish(_table(args, command, report.records), args.markdown_out)


def _table(args: argparse.Namespace, command: str, records: list[dict], missing: list[str] | None = None) -> str:
    """The Markdown table of ``records`` headed by the command and the protocol; ``missing`` grid cells listed."""
    rows = f"first {args.test_limit} rows" if args.test_limit else "all rows"
    note = (f"Seeds: {args.seeds}; runs stored in `{args.jsonl}`; ACC on clean test, LFR on poisoned test ({rows}); "
            "'pruned' = after pruning only, otherwise after pruning + fine-tuning. Mean ± std (ddof 1) over seeds. "
            f"The '{CLEAN_MODEL}' row is the clean model trained like the victim.")
    lines = [f"Command: `{command}`", "", note, "", summary_markdown(records)]
    if missing:
        lines += [f"Not run yet ({len(missing)} of the grid's runs): " + ", ".join(missing), ""]
    return "\n".join(lines)


def _report_only(args: argparse.Namespace, settings: object, command: str) -> int:
    """Print (and write) the table of the recorded runs of the grid, without running the missing ones."""
    cells = plan_grid(args.victims, args.defenses, args.seeds, settings, reference=True, cache=args.cache)
    store = RecordStore(args.jsonl)
    records = [store.records[c.key] for c in cells if c.key in store]
    missing = [c.label for c in cells if c.key not in store]
    text = _table(args, command, records, missing)
    print(text)
    if args.markdown_out:
        Path(args.markdown_out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
