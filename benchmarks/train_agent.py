"""Issue 6's measurement: train MaskablePPO on a victim within a wall-clock limit, then evaluate the
policy against scripted strategies at the same accuracy floor, and without retraining on other
victims (transfer), with the protocol of ``headprune defend`` (prune, fine-tune with the pruned heads
held at zero, ``evaluate_defense`` on the clean and poisoned TEST rows after the mask is fixed).

Training sees only the defender's clean rows (the env's reward; never poisoned data or LFR); a trained
run folder with ``model.zip`` is reused, an unfinished one is resumed. The evaluation is the experiment
runner (:func:`headprune.compare.run_grid`, also ``headprune compare``) over the baselines and
``policy:<run folder>`` for each trained run (its config hash adds ``policy_sha256``, the digest of the
run folder). Every finished run is appended to ``--jsonl``, by default ``benchmarks/defense_table.py``'s
file, keyed by (victim, method, seed, config hash): baseline runs already recorded there are reused, and a
rerun skips what is done. The Markdown printed at the end starts with the exact command.

The measurement (CPU; about ``--max-minutes`` of training plus the evaluations)::

    .venv/bin/python benchmarks/train_agent.py --victim minilm-syntactic --transfer minilm-style \\
        --max-minutes 60 --eval-seeds 0 1 2

An agent with both head operations (prune or reset to the pre-trained base; issue 13), its own run root::

    .venv/bin/python benchmarks/train_agent.py --victim minilm-syntactic --env-kwargs operation=both \\
        --run-root runs/agent_bench_both --max-minutes 40

Smoke run (tiny victim; about a minute)::

    .venv/bin/python benchmarks/train_agent.py --victim tiny --transfer tiny --max-minutes 0.2 \\
        --eval-seeds 0 --baselines random gradient --finetune-epochs 0.2 --val-size 80 --stats-size 64 \\
        --test-limit 100 --hyperparams n_steps=16 batch_size=16 eval_freq=0 checkpoint_freq=32 \\
        --run-root /tmp/agent_smoke --jsonl /tmp/agent_smoke.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from headprune.agents import resume, train
from headprune.agents.hyperparams import parse_assignments
from _start import start

from headprune.cli.settings import add_setting_arguments
from headprune.compare import (
    POLICY_PREFIX, RunSettings, make_executor, run_grid,
    summary_markdown,
)
from headprune.victims import resolve_victim


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
    p.add_argument("--env-kwargs", nargs="*", default=None, metavar="KEY=VALUE",
                   help="more HeadPrune-v0 arguments for training (operation=both, features=..., proxy=...); not "
                        "the ones the evaluation protocol fixes (victim, floor, budget, row counts, clean data)")
    add_setting_arguments(p)
    p.add_argument("--run-root", default="runs/agent_bench", help="training run folders go here")
    p.add_argument("--jsonl", default="benchmarks/results/defense_runs.jsonl",
                   help="run records, shared with defense_table.py (runs already there are reused)")
    p.add_argument("--markdown-out", default=None)
    p.add_argument("--cache", default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription on busy CPUs)")
    p.add_argument("--workers", type=int, default=1, help="evaluation runs in parallel processes (1 thread each)")
    return p.parse_args()


PROTOCOL_ENV_KEYS = {"victim", "max_accuracy_drop", "val_size", "stats_size", "budget", "clean_data", "cache"}
"""Env arguments the evaluation protocol sets from its own flags: training must see the same ones."""


def _env_kwargs(args: argparse.Namespace, settings: RunSettings) -> dict[str, Any]:
    """``HeadPrune-v0`` keyword arguments of the training victim, with the evaluation's floor, budget and
    row counts (``clean_rows``: the same first N defender rows, written to a file for the run config)."""
    env_kwargs: dict[str, Any] = {"victim": args.victim, "max_accuracy_drop": settings.env.max_accuracy_drop,
                                  "val_size": settings.env.val_size, "stats_size": settings.env.stats_size,
                                  "progress": False}
    if settings.env.budget is not None:
        env_kwargs["budget"] = settings.env.budget
    if args.cache is not None:
        env_kwargs["cache"] = args.cache
    if settings.clean_rows is not None:
        rows = resolve_victim(args.victim, cache=args.cache).defender_clean_data().take(settings.clean_rows)
        clean_file = Path(args.run_root) / f"clean_rows_{settings.clean_rows}.tsv"
        clean_file.parent.mkdir(parents=True, exist_ok=True)
        clean_file.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
        env_kwargs["clean_data"] = str(clean_file)
    extra = parse_assignments(args.env_kwargs, "--env-kwargs")
    fixed = sorted(set(extra) & (set(env_kwargs) | PROTOCOL_ENV_KEYS))
    if fixed:
        raise SystemExit(f"--env-kwargs: {', '.join(fixed)} fixed by the evaluation protocol; use the matching "
                         "flag (--max-accuracy-drop, --budget, --val-size, --stats-size, --clean-rows, --victim)")
    return {**env_kwargs, **extra}


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


def _training_summary(seed: int, run_dir: Path) -> dict[str, Any]:
    """Env steps, seconds, steps/s and how the last session ended, from the run folder's ``run.json``."""
    sessions = json.loads((run_dir / "run.json").read_text())["sessions"]
    steps = sessions[-1].get("end_timesteps", 0)
    seconds = sum(s.get("seconds", 0.0) for s in sessions)
    return {"seed": seed, "run_dir": str(run_dir), "timesteps": steps, "seconds": seconds,
            "steps_per_s": steps / seconds if seconds else None, "end": sessions[-1]["end"]}


def _markdown(args: argparse.Namespace, command: str, trainings: list[dict[str, Any]], table: str) -> str:
    """The report: the command, the training line, the protocol note and the runner's summary table."""
    trained = "; ".join(f"seed {t['seed']}: {t['timesteps']} env steps in {t['seconds'] / 60:.1f} min "
                        f"({t['steps_per_s'] or 0:.2f} steps/s, {t['end']}), `{t['run_dir']}`" for t in trainings)
    rows = f"first {args.test_limit} rows" if args.test_limit else "all rows"
    note = (f"Evaluation seeds {args.eval_seeds} (defend's split and fine-tune seed); floor: "
            f"{args.max_accuracy_drop} below the unpruned validation accuracy; ACC on clean test, LFR on poisoned "
            f"test ({rows}); 'pruned' = after pruning only, otherwise after pruning + fine-tuning. Mean ± std "
            f"(ddof 1) over seeds. Records: `{args.jsonl}`; 'agent <parent>/<run folder>' = the trained agent (method "
            f"`{POLICY_PREFIX}<run folder>` in the records).")
    return "\n".join([f"Command: `{command}`", "",
                      f"Training ({args.algo}, victim `{args.victim}`, clean defender rows only): {trained}", "",
                      note, "", table])


def main() -> int:
    args = _parse()
    command, settings = start("benchmarks/train_agent.py", args, args.baselines)

    # ---- 1. training (clean rows only)
    env_kwargs = _env_kwargs(args, settings)
    trainings = [_training_summary(seed, _train_or_reuse(args, seed, env_kwargs, command))
                 for seed in args.train_seeds]

    # ---- 2. evaluation: baselines and agent(s) on every victim, same protocol and floor (the runner)
    victims = list(dict.fromkeys([args.victim, *args.transfer]))
    methods = [*args.baselines, *(POLICY_PREFIX + t["run_dir"] for t in trainings)]
    report = run_grid(victims, methods, args.eval_seeds, args.jsonl, settings, cache=args.cache, progress=False,
                      executor=make_executor("auto", args.workers, threads=args.threads),
                      log=lambda line: print(line, flush=True))
    text = _markdown(args, command, trainings, summary_markdown(report.records))
    return report.publish(text, args.markdown_out)


if __name__ == "__main__":
    sys.exit(main())
