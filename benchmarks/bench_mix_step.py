"""Benchmark: the cost of a ``mix`` step of HeadPrune-v0 against a ``prune`` step on one victim (issue 24 item 4).

A prune step recomputes the validation forward from the pruned head's layer on (the incremental forward) and reads
the proxy; a mix step redraws the block's Fine-mixing values toward the base (seeded, from the suspect's own weights),
swaps them in, and recomputes the forward from the block's layer on (from the start for the embeddings block). Both
are timed on the same env (``operation="prune+mix"``), interleaved so that both see the same machine load, on memo
misses only (every state is new: a fixed seeded sequence of valid actions, one episode per kind).

    .venv/bin/python benchmarks/bench_mix_step.py [--victim minilm-badnets] [--steps 12] [--threads 1]

Prints the median step time of each kind, their ratio, and the versions; nothing else is written.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from headprune.common.provenance import environment_info
from headprune.compare import pin_threads
from headprune.envs.headprune_env import HeadPruneEnv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--victim", default="minilm-badnets", help="preset name or victim folder")
    p.add_argument("--steps", type=int, default=12, help="steps of each kind")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default=None)
    args = p.parse_args()
    pin_threads(args.threads)
    t0 = time.perf_counter()
    env = HeadPruneEnv(args.victim, operation="prune+mix", seed=args.seed, cache=args.cache,
                       budget=2 * args.steps + 2, max_steps=4 * args.steps + 4)
    setup_s = time.perf_counter() - t0
    ops = env.operations
    rng = np.random.default_rng(args.seed)
    times: dict[str, list[float]] = {"prune": [], "mix": []}
    env.reset(seed=args.seed)
    for _ in range(args.steps):
        for kind in ("prune", "mix"):
            valid = np.flatnonzero(env.action_masks())
            choices = [a for a in valid if ops.decode(int(a))[0] == kind]
            action = int(rng.choice(choices))
            t = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            times[kind].append(time.perf_counter() - t)
            if terminated or truncated:
                raise SystemExit(f"the episode ended after {len(times['prune'])} steps: raise --budget")
    prune, mix = statistics.median(times["prune"]), statistics.median(times["mix"])
    print(json.dumps({"victim": env.bench.victim.name, "val_rows": len(env.val_data), "steps_per_kind": args.steps,
                      "blocks": ops.num_blocks, "mix_levels": env.config.mix_levels, "setup_s": round(setup_s, 1),
                      "median_prune_step_s": round(prune, 4), "median_mix_step_s": round(mix, 4),
                      "mix_over_prune": round(mix / prune, 2), "threads": args.threads,
                      "versions": environment_info()["versions"]}, indent=1))


if __name__ == "__main__":
    main()
