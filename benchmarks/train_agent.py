"""Issue 6's measurement: train MaskablePPO on a victim within a wall-clock limit, then evaluate the
policy against scripted strategies at the same accuracy floor, and without retraining on other
victims (transfer), with the protocol of ``headprune defend`` (prune, fine-tune with the pruned heads
held at zero, ``evaluate_defense`` on the clean and poisoned TEST rows after the mask is fixed).

Training sees only the defender's clean rows (the env's reward; never poisoned data or LFR). Every
finished training and evaluation is appended to a JSONL file keyed by (victim, method, seed, config
hash), so a rerun skips what is done (a trained run folder with ``model.zip`` is reused; an unfinished
one is resumed). Baseline rows already in ``--baseline-jsonl`` (``benchmarks/defense_table.py``'s
file, same keys) are reused read-only. The Markdown printed at the end starts with the exact command.

The measurement (CPU; about ``--max-minutes`` of training plus the evaluations)::

    .venv/bin/python benchmarks/train_agent.py --victim minilm-syntactic --transfer minilm-style \\
        --max-minutes 60 --eval-seeds 0 1 2

Smoke run (tiny victim; under a minute)::

    .venv/bin/python benchmarks/train_agent.py --victim tiny --transfer tiny --max-minutes 0.2 \\
        --eval-seeds 0 --baselines random gradient --finetune-epochs 0.2 --eval-size 80 --stats-size 64 \\
        --test-limit 100 --hyperparams n_steps=16 batch_size=16 eval_freq=0 checkpoint_freq=32 \\
        --run-root /tmp/agent_smoke --jsonl /tmp/agent_smoke.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headprune.agents import evaluate, resume, train
from headprune.agents.hyperparams import parse_assignments
from headprune.baselines import defend
from headprune.provenance import config_hash, environment_info
from headprune.victims import resolve_victim

Key = tuple[str, str, int, str]


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--victim", default="minilm-syntactic", help="training victim (preset or folder)")
    p.add_argument("--transfer", nargs="*", default=["minilm-style"], help="victims to apply the policy to, untrained")
    p.add_argument("--algo", default="maskable_ppo", choices=["maskable_ppo", "ppo"])
    p.add_argument("--max-minutes", type=float, default=60.0, help="training wall-clock limit per training seed")
    p.add_argument("--n-timesteps", type=int, default=1_000_000, help="step cap (the time limit usually ends first)")
    p.add_argument("--train-seeds", nargs="+", type=int, default=[0])
    p.add_argument("--eval-seeds", nargs="+", type=int, default=[0, 1, 2], help="defend seeds (split, fine-tune)")
    p.add_argument("--baselines", nargs="*", default=["random", "gradient", "layerwise", "egreedy", "pure"],
                   help="scripted strategies evaluated at the same floor")
    p.add_argument("--hyperparams", nargs="*", default=None, metavar="KEY=VALUE", help="override the shipped YAML")
    p.add_argument("--finetune-epochs", type=float, default=3.0)
    p.add_argument("--finetune-max-steps", type=int, default=None)
    p.add_argument("--budget", type=int, default=None)
    p.add_argument("--max-accuracy-drop", type=float, default=0.05)
    p.add_argument("--clean-rows", type=int, default=None, help="use only the first N defender clean rows")
    p.add_argument("--eval-size", type=int, default=256)
    p.add_argument("--stats-size", type=int, default=256)
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N clean/poisoned test rows")
    p.add_argument("--run-root", default="runs/agent_bench", help="training run folders go here")
    p.add_argument("--jsonl", default="benchmarks/results/agent_runs.jsonl")
    p.add_argument("--baseline-jsonl", default="benchmarks/results/defense_runs.jsonl",
                   help="read-only: baseline records of defense_table.py reused when their key matches")
    p.add_argument("--markdown-out", default=None)
    p.add_argument("--cache", default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription on busy CPUs)")
    return p.parse_args()


def _load(path: Path) -> dict[Key, dict[str, Any]]:
    done: dict[Key, dict[str, Any]] = {}
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


def _train_or_reuse(args: argparse.Namespace, seed: int, env_kwargs: dict[str, Any], command: str) -> Path:
    """The run folder of training seed ``seed``: reused if it has a model, resumed if it stopped early."""
    run_dir = Path(args.run_root) / f"{Path(args.victim).name}_{args.algo}_s{seed}"
    if (run_dir / "model.zip").is_file():
        print(f"[skip] training {run_dir}: model.zip exists", flush=True)
        return run_dir
    print(f"[train] {args.algo} on {args.victim}, seed {seed}, at most {args.max_minutes} min -> {run_dir}", flush=True)
    if (run_dir / "run.json").is_file():
        resume(run_dir, max_minutes=args.max_minutes, threads=args.threads, command=command)
    else:
        train(args.algo, run_dir=run_dir, seed=seed, env_kwargs=env_kwargs,
              hyperparams=parse_assignments(args.hyperparams, "--hyperparams"), n_timesteps=args.n_timesteps,
              max_minutes=args.max_minutes, threads=args.threads, command=command)
    return run_dir


def _record(victim: str, method: str, seed: int, h: str, cfg: dict[str, Any], r: Any) -> dict[str, Any]:
    return {"victim": victim, "strategy": method, "seed": seed, "config_hash": h, "config": cfg,
            "acc": r.metrics["final"]["acc"], "lfr": r.metrics["final"]["lfr"],
            "acc_pruned": r.metrics["pruned"]["acc"], "lfr_pruned": r.metrics["pruned"]["lfr"],
            "heads_pruned": r.heads_pruned, "wall_s": r.timings["defense"], "validation": r.validation,
            "pruned_heads": r.pruned_heads, "details": {k: v for k, v in r.details.items() if k != "trajectory"},
            "versions": environment_info()["versions"]}


def main() -> int:
    args = _parse()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    command = "python benchmarks/train_agent.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    path = Path(args.jsonl)
    done = _load(path)
    reuse = _load(Path(args.baseline_jsonl)) if args.baseline_jsonl else {}
    # the config of defense_table.py (same keys, so its baseline records are reused)
    base_cfg = {"finetune_epochs": args.finetune_epochs, "finetune_max_steps": args.finetune_max_steps,
                "budget": args.budget, "max_accuracy_drop": args.max_accuracy_drop, "clean_rows": args.clean_rows,
                "eval_size": args.eval_size, "stats_size": args.stats_size, "test_limit": args.test_limit,
                "options": {}}
    env_kwargs = {"victim": args.victim, "max_accuracy_drop": args.max_accuracy_drop, "eval_size": args.eval_size,
                  "stats_size": args.stats_size, "progress": False}
    if args.budget is not None:
        env_kwargs["budget"] = args.budget
    if args.cache is not None:
        env_kwargs["cache"] = args.cache
    if args.clean_rows is not None:  # the same first N defender rows as the evaluation, as a file for the run config
        rows = resolve_victim(args.victim, cache=args.cache).defender_clean_data().take(args.clean_rows)
        clean_file = Path(args.run_root) / f"clean_rows_{args.clean_rows}.tsv"
        clean_file.parent.mkdir(parents=True, exist_ok=True)
        clean_file.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
        env_kwargs["clean_data"] = str(clean_file)

    # ---- 1. training (clean rows only)
    trainings = []
    for seed in args.train_seeds:
        run_dir = _train_or_reuse(args, seed, env_kwargs, command)
        run = json.loads((run_dir / "run.json").read_text())
        sessions = run["sessions"]
        steps = sessions[-1].get("end_timesteps", 0)
        seconds = sum(s.get("seconds", 0.0) for s in sessions)
        trainings.append({"seed": seed, "run_dir": str(run_dir), "timesteps": steps, "seconds": seconds,
                          "steps_per_s": steps / seconds if seconds else None, "end": sessions[-1]["end"]})

    # ---- 2. evaluation: agent(s) and baselines on every victim, same protocol and floor
    table: list[tuple[str, str, list[dict[str, Any]]]] = []
    for victim_name in [args.victim, *args.transfer]:
        victim = resolve_victim(victim_name, cache=args.cache, progress=False)
        splits = victim.splits()  # evaluation only
        clean_test, poisoned_test = splits.clean_test, splits.poisoned_test
        if args.test_limit is not None:
            clean_test, poisoned_test = clean_test.take(args.test_limit), poisoned_test.take(args.test_limit)
        clean = victim.defender_clean_data()
        if args.clean_rows is not None:
            clean = clean.take(args.clean_rows)
        common = {"finetune_epochs": args.finetune_epochs, "finetune_max_steps": args.finetune_max_steps,
                  "budget": args.budget, "max_accuracy_drop": args.max_accuracy_drop, "eval_size": args.eval_size,
                  "stats_size": args.stats_size, "eval_clean": clean_test, "eval_poison": poisoned_test,
                  "cache": args.cache, "progress": False}
        methods = [(f"agent:{Path(t['run_dir']).name}", t) for t in trainings] + [(b, None) for b in args.baselines]
        for method, training in methods:
            cfg = dict(base_cfg)
            if training is not None:
                model = Path(training["run_dir"]) / "model.zip"
                cfg["policy_sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
            h = config_hash(cfg)
            runs = []
            for seed in args.eval_seeds:
                key = (victim.name, method, seed, h)
                if key in done or key in reuse:
                    print(f"[skip] {victim.name} {method} seed {seed} ({h})", flush=True)
                    runs.append(done.get(key) or reuse[key])
                    continue
                print(f"[run] {victim.name} {method} seed {seed} ({h})", flush=True)
                if training is not None:
                    r = evaluate(training["run_dir"], victim, clean, seed, **common)
                else:
                    r = defend(victim, clean, method, seed, **common)
                done[key] = _record(victim.name, method, seed, h, cfg, r)
                _append(path, done[key])
                runs.append(done[key])
            table.append((victim.name, method, runs))

    lines = [f"Command: `{command}`", "",
             (f"Training ({args.algo}, victim `{args.victim}`, clean defender rows only): "
              + "; ".join(f"seed {t['seed']}: {t['timesteps']} env steps in {t['seconds'] / 60:.1f} min "
                         f"({t['steps_per_s'] or 0:.2f} steps/s, {t['end']}), `{t['run_dir']}`" for t in trainings)),
             "",
             (f"Evaluation seeds {args.eval_seeds} (defend's split and fine-tune seed); floor: "
             f"{args.max_accuracy_drop} below the unpruned validation accuracy; ACC on clean test, LFR on poisoned "
             f"test ({'first ' + str(args.test_limit) + ' rows' if args.test_limit else 'all rows'}); 'pruned' = "
             "after pruning only, otherwise after pruning + fine-tuning. Mean ± std (ddof 1) over seeds. "
             f"Records: `{path}`."),
             "", "| victim | method | heads pruned | ACC pruned | LFR pruned | ACC | LFR | wall s | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for victim_name, method, runs in table:
        lines.append(f"| {victim_name} | {method} | {_ms([float(r['heads_pruned']) for r in runs])} | "
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
