"""Where a victim build and a ``headprune clean`` run spend their time (issue 15).

For each preset, in a fresh cache (or ``--cache``): the victim alone (``build_victim(reference=False)``:
loading, training, card evaluation), then its clean reference (``reference=True``: adds only the
reference), then ``clean_model`` with the defaults of ``headprune clean`` on the defender's clean SST-2 dev
rows (``--clean``), with LFR on ``--victim-test`` seeded poisoned test rows. Prints one Markdown row per preset
(seconds per phase, steps, ACC, LFR, clean-model LFR) and, with ``--jsonl``, appends the records.

    OMP_NUM_THREADS=1 python benchmarks/bench_victim_build.py --presets tiny minilm-syntactic-fast --clean
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from typing import Any

import torch

from headprune.common.provenance import environment_info
from headprune.victims import PRESETS, build_victim


def time_build(preset: str, cache: str) -> dict[str, Any]:
    """Seconds of the victim alone and of adding its reference, with the cards' metrics."""
    start = time.perf_counter()
    victim = build_victim(config=PRESETS[preset], cache=cache, progress=False, reference=False)
    alone = time.perf_counter() - start
    start = time.perf_counter()
    victim = build_victim(config=PRESETS[preset], cache=cache, progress=False, reference=True)
    card = victim.card
    return {"preset": preset, "victim": victim.name, "victim_s": round(alone, 1),
            "train_s": card.get("train_seconds"), "steps": card.get("train_steps"),
            "card_eval_s": round(alone - (card.get("train_seconds") or 0.0), 1),
            "reference_s": round(time.perf_counter() - start, 1), "acc": card.get("acc"), "lfr": card.get("lfr"),
            "clean_model_lfr": card.get("clean_model_lfr")}


def time_clean(preset: str, cache: str, victim_test: int) -> dict[str, Any]:
    """``clean_model`` with ``headprune clean``'s defaults: its timings and before/after metrics."""
    from headprune.clean import clean_model, load_suspect, victim_test_rows
    from headprune.data import load_sst2

    victim = load_suspect(preset, cache=cache, progress=False, reference=True)
    start = time.perf_counter()
    result = clean_model(victim, load_sst2("dev", "clean"), eval_poison=victim_test_rows(victim, victim_test),
                         cache=cache, progress=False)
    return {"clean_s": round(time.perf_counter() - start, 1), "clean_timings": result.timings,
            "heads_pruned": result.defense.heads_pruned,
            "stages": {k: {"acc": v["acc"], "lfr": v["lfr"]} for k, v in result.stages.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny"], choices=sorted(PRESETS))
    parser.add_argument("--cache", default=None, help="cache root (default: a fresh temporary folder)")
    parser.add_argument("--clean", action="store_true", help="also time headprune clean's defaults on it")
    parser.add_argument("--victim-test", type=int, default=300, help="poisoned test rows for the clean LFR")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--jsonl", default=None, help="append the records to this file")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/bench_victim_build.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    cache = args.cache or tempfile.mkdtemp(prefix="headprune-bench-")
    print(f"command: {command}\ncache: {cache}; torch threads {torch.get_num_threads()}\n")
    print("| preset | victim s (train s, steps) | card eval s | + reference s | ACC | LFR | clean-model LFR | clean s |")
    print("|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        record = time_build(preset, cache)
        if args.clean:
            record.update(time_clean(preset, cache, args.victim_test))
        record.update(command=command, environment=environment_info())
        print(f"| {preset} | {record['victim_s']} ({record['train_s']}, {record['steps']}) | {record['card_eval_s']} | "
              f"{record['reference_s']} | {record['acc']:.4f} | {record['lfr']:.4f} | {record['clean_model_lfr']:.4f} | "
              f"{record.get('clean_s', '-')} |", flush=True)
        if args.clean:
            print(f"  clean phases: {record['clean_timings']}; heads pruned {record['heads_pruned']}; "
                  f"{record['stages']}", flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
