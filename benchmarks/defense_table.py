"""Regenerate the baseline-defense table of issue 5: every strategy and defense of the registry plus the
no-defense and clean-model rows, with ACC and LFR (after pruning and after pruning + fine-tuning), heads
pruned and wall time, mean +- std over seeds, for each victim.

Resumable: every finished run is appended to a JSONL file keyed by (victim, strategy, seed, config hash);
a rerun skips the keys already there, so an interrupted sweep continues where it stopped and the table
is rebuilt from the file. The Markdown printed at the end starts with the exact command.

The full table (CPU: many hours; run it where MiniLM victims are already built)::

    .venv/bin/python benchmarks/defense_table.py --victims minilm-syntactic minilm-style --seeds 0 1 2

Smoke run (tiny victim, one seed, tiny budgets; about a minute)::

    .venv/bin/python benchmarks/defense_table.py --victims tiny --seeds 0 --finetune-epochs 0.5 \\
        --finetune-max-steps 3 --clean-rows 200 --eval-size 80 --stats-size 64 --test-limit 200 --fast \\
        --jsonl /tmp/defense_smoke.jsonl
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headprune.baselines import defend, strategy_names
from headprune.metrics import evaluate_defense
from headprune.provenance import config_hash, environment_info
from headprune.victims import build_victim, resolve_victim

FAST_OPTIONS = {"mcdropout": {"passes": 3, "n_rows": 48}, "sparsify": {"max_steps": 3, "n_rows": 64},
                "gradient": {"n_rows": 64}, "ensemble": {"n_members": 3, "n_rows": 64}}
CLEAN_MODEL = "clean model"


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--victims", nargs="+", default=["minilm-syntactic", "minilm-style"])
    p.add_argument("--strategies", nargs="+", default=strategy_names(), help="registry names ('none' = no defense)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--finetune-epochs", type=float, default=3.0)
    p.add_argument("--finetune-max-steps", type=int, default=None)
    p.add_argument("--budget", type=int, default=None)
    p.add_argument("--max-accuracy-drop", type=float, default=0.05)
    p.add_argument("--clean-rows", type=int, default=None, help="use only the first N defender clean rows")
    p.add_argument("--eval-size", type=int, default=256)
    p.add_argument("--stats-size", type=int, default=256)
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N clean/poisoned test rows")
    p.add_argument("--options", default="{}", help='JSON {"strategy": {option: value}} for strategy options')
    p.add_argument("--fast", action="store_true", help="small built-in strategy options (smoke runs)")
    p.add_argument("--jsonl", default="benchmarks/results/defense_runs.jsonl")
    p.add_argument("--markdown-out", default=None, help="also write the Markdown table here")
    p.add_argument("--cache", default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription on busy CPUs)")
    return p.parse_args()


def _load(path: Path) -> dict[tuple[str, str, int, str], dict[str, Any]]:
    done: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["victim"], r["strategy"], int(r["seed"]), r["config_hash"])] = r
    return done


def _append(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _ms(values: list[float | None]) -> str:
    xs = [v for v in values if v is not None]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{np.mean(xs):.3f} ± {np.std(xs, ddof=1):.3f}"


def main() -> int:
    args = _parse()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    command = "python benchmarks/defense_table.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    user_options = json.loads(args.options)
    path = Path(args.jsonl)
    done = _load(path)
    table: list[tuple[str, str, list[dict[str, Any]]]] = []

    for victim_name in args.victims:
        victim = resolve_victim(victim_name, cache=args.cache)
        splits = victim.splits()
        clean_test, poisoned_test = splits.clean_test, splits.poisoned_test
        if args.test_limit is not None:
            clean_test, poisoned_test = clean_test.take(args.test_limit), poisoned_test.take(args.test_limit)
        clean = victim.defender_clean_data()
        if args.clean_rows is not None:
            clean = clean.take(args.clean_rows)

        # clean-model reference row (no seed)
        ref_cfg = {"kind": CLEAN_MODEL, "test_limit": args.test_limit}
        key = (victim.name, CLEAN_MODEL, 0, config_hash(ref_cfg))
        if key not in done:
            ref = build_victim(config=victim.config.clean_reference(), cache=args.cache)
            t = time.perf_counter()
            rep = evaluate_defense(ref.model, ref.tokenizer, clean_test, poisoned_test, victim.config.target_label,
                                   max_length=victim.config.max_length)
            done[key] = {"victim": victim.name, "strategy": CLEAN_MODEL, "seed": 0, "config_hash": key[3],
                         "acc": rep.acc, "lfr": rep.lfr, "acc_pruned": None, "lfr_pruned": None, "heads_pruned": 0,
                         "wall_s": time.perf_counter() - t, "model": ref.name}
            _append(path, done[key])
        table.append((victim.name, CLEAN_MODEL, [done[key]]))

        for strategy in args.strategies:
            options = {**(FAST_OPTIONS.get(strategy, {}) if args.fast else {}), **user_options.get(strategy, {})}
            cfg = {"finetune_epochs": args.finetune_epochs, "finetune_max_steps": args.finetune_max_steps,
                   "budget": args.budget, "max_accuracy_drop": args.max_accuracy_drop, "clean_rows": args.clean_rows,
                   "eval_size": args.eval_size, "stats_size": args.stats_size, "test_limit": args.test_limit,
                   "options": options}
            h = config_hash(cfg)
            runs = []
            for seed in args.seeds:
                key = (victim.name, strategy, seed, h)
                if key not in done:
                    print(f"[run] {victim.name} {strategy} seed {seed} ({h})", flush=True)
                    r = defend(victim, clean, strategy, seed, finetune_epochs=args.finetune_epochs,
                               finetune_max_steps=args.finetune_max_steps, budget=args.budget,
                               max_accuracy_drop=args.max_accuracy_drop, eval_size=args.eval_size,
                               stats_size=args.stats_size, options=options, eval_clean=clean_test,
                               eval_poison=poisoned_test, cache=args.cache, progress=False)
                    done[key] = {"victim": victim.name, "strategy": strategy, "seed": seed, "config_hash": h,
                                 "config": cfg, "acc": r.metrics["final"]["acc"], "lfr": r.metrics["final"]["lfr"],
                                 "acc_pruned": r.metrics["pruned"]["acc"], "lfr_pruned": r.metrics["pruned"]["lfr"],
                                 "heads_pruned": r.heads_pruned, "wall_s": r.timings["defense"],
                                 "validation": r.validation, "pruned_heads": r.pruned_heads,
                                 "versions": environment_info()["versions"]}
                    _append(path, done[key])
                else:
                    print(f"[skip] {victim.name} {strategy} seed {seed} ({h}): in {path}", flush=True)
                runs.append(done[key])
            table.append((victim.name, strategy, runs))

    lines = [f"Command: `{command}`", "",
             f"Seeds: {args.seeds}; runs stored in `{path}`; ACC on clean test, LFR on poisoned test "
             f"({'first ' + str(args.test_limit) + ' rows' if args.test_limit else 'all rows'}); "
             "'pruned' = after pruning only, otherwise after pruning + fine-tuning. Mean ± std (ddof 1) over seeds.",
             "", "| victim | strategy | heads pruned | ACC pruned | LFR pruned | ACC | LFR | wall s | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for victim_name, strategy, runs in table:
        label = "no defense" if strategy == "none" else strategy
        lines.append(f"| {victim_name} | {label} | {_ms([float(r['heads_pruned']) for r in runs])} | "
                     f"{_ms([r['acc_pruned'] for r in runs])} | {_ms([r['lfr_pruned'] for r in runs])} | "
                     f"{_ms([r['acc'] for r in runs])} | {_ms([r['lfr'] for r in runs])} | "
                     f"{_ms([r['wall_s'] for r in runs])} | {len(runs)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown_out:
        Path(args.markdown_out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
