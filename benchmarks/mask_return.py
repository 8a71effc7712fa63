"""Issue 6's diagnosis: the training reward every recorded defense's final mask would have earned.

For each run in the records (scripted strategies and agents alike) this rebuilds the ``HeadPrune-v0`` env the
agent was trained in (same proxy, reward weights, floor and row counts; the data split of the run's seed, the one
``defend`` used for that run) and scores the run's pruned heads: validation accuracy, proxy, and the episode
return the env gives for reaching that mask, ``Phi(mask) - Phi(unpruned)`` (penalties aside; every recorded mask
is at or above the floor). It then relates that return to the LFR the evaluation measured.

This separates the two reasons an agent can lose to a scripted strategy:

* the agent's masks earn a LOWER return than the scripted masks: the optimisation (env steps, policy form) is
  the limit, the reward would have ranked the scripted mask higher;
* they earn a HIGHER return and still a higher LFR: the reward signal (the proxy) is the limit.

Honesty: evaluation code. It reads LFR only from finished records; the env it builds gets no poisoned data, and
nothing here feeds back into a defense.

Usage (seconds per mask; head statistics are cached by the env)::

    .venv/bin/python benchmarks/mask_return.py --jsonl benchmarks/results/defense_runs.jsonl \\
        --markdown-out benchmarks/results/mask_return.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from proxy_evidence import spearman

from headprune.compare import (
    CLEAN_MODEL,
    format_stat,
    grid_shape,
    load_records,
    mean_std,
    defense_label,
    pin_threads,
    record_attack,
)
from headprune.envs.reward import RewardWeights, potential
from headprune.engine.gating import mask_from_pruned


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jsonl", nargs="+", default=["benchmarks/results/defense_runs.jsonl"], help="record files")
    p.add_argument("--proxy", default="pure_variance", help="the training env's proxy (maskable_ppo.yml)")
    p.add_argument("--reward-weights", default="{}", help="JSON RewardWeights fields (default: the env's)")
    p.add_argument("--cache", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--markdown-out", default=None)
    p.add_argument("--rows-out", default=None, help="also write one JSON line per scored run here")
    return p.parse_args()


def _env_for(record: dict[str, Any], proxy: str, weights: RewardWeights, cache: str | None) -> Any:
    """The training env's twin for a record: its victim, floor, budget and row counts, split by its seed."""
    from headprune.envs import HeadPruneEnv
    from headprune.victims import cache_dir, resolve_victim

    cfg = record["config"]
    victim = resolve_victim(str(cache_dir(cache) / "victims" / record["victim"]), cache=cache, progress=False)
    clean = victim.defender_clean_data()
    if cfg.get("clean_rows") is not None:
        clean = clean.take(int(cfg["clean_rows"]))
    return HeadPruneEnv(victim, clean_data=clean, val_size=cfg["val_size"], stats_size=cfg["stats_size"],
                        max_accuracy_drop=cfg["max_accuracy_drop"], budget=cfg["budget"], proxy=proxy,
                        reward_weights=weights, seed=int(record["seed"]), cache=cache, progress=False)


def score_records(records: Sequence[dict[str, Any]], proxy: str, weights: RewardWeights,
                  cache: str | None) -> list[dict[str, Any]]:
    """One row per record with a mask: victim, attack, method, seed, validation accuracy, proxy, return, LFRs."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["defense"] == CLEAN_MODEL or "config" not in r:
            continue
        cfg = {k: r["config"].get(k) for k in ("val_size", "stats_size", "max_accuracy_drop", "budget", "clean_rows")}
        groups.setdefault(json.dumps([r["victim"], r["seed"], cfg], sort_keys=True), []).append(r)
    rows = []
    for runs in groups.values():
        env = _env_for(runs[0], proxy, weights, cache)
        start = potential(env.start_score.accuracy, env.start_score.proxy, env.weights)
        shape = grid_shape(runs[0], cache) or env.head_shape
        for r in runs:
            score = env.scorer(mask_from_pruned(r.get("pruned_heads") or {}, shape))
            rows.append({"victim": r["victim"], "attack": record_attack(r),
                         "defense": r["defense"], "seed": r["seed"], "heads_pruned": r["heads_pruned"],
                         "val_accuracy": score.accuracy, "proxy": score.proxy,
                         "return": potential(score.accuracy, score.proxy, env.weights) - start,
                         "below_floor": score.accuracy < env.accuracy_floor,
                         "lfr_pruned": r.get("lfr_pruned"), "lfr": r.get("lfr")})
        env.close()
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Per attack: mean ± std per method (sorted by return), then Spearman of return vs LFR over all runs."""
    out = []
    for attack in sorted({r["attack"] for r in rows}):
        sub = [r for r in rows if r["attack"] == attack]
        methods = sorted(dict.fromkeys(r["defense"] for r in sub),  # record order breaks ties: same output each run
                         key=lambda m: -float(np.mean([r["return"] for r in sub if r["defense"] == m])))
        out += [f"**{attack}**", "", "| method | runs | val ACC | proxy | return | LFR pruned | LFR after FT |",
                "|---|---|---|---|---|---|---|"]
        for m in methods:
            runs = [r for r in sub if r["defense"] == m]
            keys = ("val_accuracy", "proxy", "return", "lfr_pruned", "lfr")
            cells = [format_stat(mean_std(r[k] for r in runs)) for k in keys]
            out.append(f"| {defense_label(m)} | {len(runs)} | " + " | ".join(cells) + " |")
        pruned = [r for r in sub if r["heads_pruned"] > 0]
        for key, label in (("lfr_pruned", "LFR pruned"), ("lfr", "LFR after fine-tuning")):
            pairs = [(r["return"], r[key]) for r in pruned if r[key] is not None]
            rho, p, n = spearman([a for a, _ in pairs], [b for _, b in pairs])
            out.append(f"\nSpearman(return, {label}) over the {n} pruned runs: {rho:+.2f} (p = {p:.2g})")
        out.append("")
    return "\n".join(out)


def main() -> int:
    args = _parse()
    pin_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    command = "python benchmarks/mask_return.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        weights = RewardWeights.coerce(json.loads(args.reward_weights))
    except (json.JSONDecodeError, ValueError, TypeError) as err:
        raise SystemExit(f"--reward-weights: {err}") from None
    rows = score_records(load_records(args.jsonl), args.proxy, weights, args.cache)
    if not rows:
        raise SystemExit(f"no run with a mask in {args.jsonl}")
    text = (f"Command: `{command}`\n\nProxy `{args.proxy}`, reward weights {weights}; return = Phi(mask) - "
            f"Phi(unpruned) in the env of each run's seed (the split defend used). Sorted by return.\n\n"
            + markdown(rows))
    print(text)
    if args.markdown_out:
        Path(args.markdown_out).write_text(text)
    if args.rows_out:
        Path(args.rows_out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
