"""Speed of ``purify`` against the probe it came from, in one run, with ACC and LFR beside the times.

The probe (``benchmarks/distill_teacher_probe.py`` until the defense was registered; records in
``results/distill_teacher_probe.jsonl``) is ``purify`` with ``distill``'s augmentation (3 drops, 3 crops,
2 concatenations per row) and the protocol's 3 epochs of distillation: about 13 min of one core per run.
This script runs both configurations on the same victim, seed and threads through ``defend``'s default
protocol (616 fine-tune rows), then prints wall time per phase, the ratios, ACC and LFR on the victim's test
sets and the gap to the clean model's LFR (the floor). Each run appends a JSON line (options, timings,
metrics, versions, the command) to ``--jsonl``. A third configuration, ``reference``, is the one chosen on the
four SST-2 attacks (:data:`REFERENCE_OPTIONS`; RESULTS.md, "Purification, fifth session": hard labels, a clean
reference at weight 0.5, the teacher's ``p`` searched from 0.6 down) with ``--unlabelled-rows`` in-domain
sentences (default 8,000: the task's unlabelled pool right after the defender's labelled rows, as
``defense_table.py --unlabelled-rows`` gives). Every configuration's defense time is printed as a ratio of the
first's.

What the arithmetic allows: the distillation costs ~6 x parameters x tokens FLOPs (forward + backward; the
tokens are the padded batch positions it processed, ``FineTuneLog.tokens``; the parameters are those that take part
in matrix products: the embedding tables, read row by row, are left out); the script prints that count and the rate
it reached, to set beside the CPU's peak.

    python benchmarks/bench_purify.py --victim minilm-syntactic-fast --seed 0 --threads 2
    python benchmarks/bench_purify.py --victim minilm-syntactic --configs purify reference --threads 2
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from typing import Any

from torch import nn

from headprune.compare import pin_threads
from headprune.compare.grid import _default_env
from headprune.data.pools import defender_unlabelled_texts
from headprune.defenses import defend
from headprune.common.provenance import environment_info
from headprune.victims import resolve_victim

PROBE_OPTIONS: dict[str, Any] = {"drops": 3, "crops": 3, "concats": 2, "student_epochs": 3.0}
"""``purify`` configured as the probe ran (distill's default augmentation, the protocol's 3 epochs)."""

REFERENCE_OPTIONS: dict[str, Any] = {"temperature": 0, "reference_weight": 0.5, "reference_epochs": 3,
                                     "teacher_options": {"grid": [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]}}
"""``purify`` as chosen on the four SST-2 attacks (RESULTS.md, "Purification, fifth session"), run with unlabelled
in-domain sentences."""

CONFIG_OPTIONS: dict[str, dict[str, Any]] = {"probe": PROBE_OPTIONS, "purify": {}, "reference": REFERENCE_OPTIONS}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--victim", default="minilm-syntactic-fast")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--configs", nargs="+", default=["probe", "purify"], choices=list(CONFIG_OPTIONS),
                   help="which configurations to run, in order (probe = purify with PROBE_OPTIONS; reference = "
                        "purify with REFERENCE_OPTIONS and --unlabelled-rows sentences)")
    p.add_argument("--unlabelled-rows", type=int, default=8000,
                   help="unlabelled in-domain sentences of the reference configuration (>= 1)")
    p.add_argument("--cache", default=None)
    p.add_argument("--jsonl", default="benchmarks/results/purify_speed.jsonl")
    args = p.parse_args()
    if args.unlabelled_rows < 1:
        p.error(f"--unlabelled-rows must be >= 1, got {args.unlabelled_rows}")
    pin_threads(args.threads)
    command = "python benchmarks/bench_purify.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    victim = resolve_victim(args.victim, cache=args.cache, progress=False)
    splits = victim.splits()  # evaluation only, handed to defend
    floor = victim.card.get("clean_model_lfr")
    config = _default_env().replace(seed=args.seed, cache=args.cache, progress=False)
    rows = []
    for name in args.configs:
        options = CONFIG_OPTIONS[name]
        run_config = config
        if name == "reference":
            labelled = victim.defender_clean_data()
            run_config = config.replace(clean_data=labelled, unlabelled_data=defender_unlabelled_texts(
                None, victim.config.dataset, victim.name, len(labelled), args.unlabelled_rows))
        start = time.perf_counter()
        result = defend(victim, "purify", run_config, options=options, eval_clean=splits.clean_test,
                        eval_poison=splits.poisoned_test)
        wall = time.perf_counter() - start
        final = result.metrics["final"]
        record = {"victim": victim.name, "config": name, "options": options, "seed": args.seed,
                  "unlabelled_rows": args.unlabelled_rows if name == "reference" else None,
                  "threads": args.threads, "wall_s": round(wall, 1), "timings": result.timings,
                  "acc": final["acc"], "lfr": final["lfr"], "floor": floor,
                  "teacher": result.metrics["stages"],
                  "details": {k: v for k, v in result.details.items() if k in ("teacher", "finetune", "reference")},
                  "validation": result.validation, "command": command, "versions": environment_info()}
        rows.append(record)
        with open(args.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps({k: record[k] for k in ("config", "wall_s", "acc", "lfr")}), flush=True)
    lookups = sum(p.numel() for m in victim.model.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    params = sum(p.numel() for p in victim.model.parameters()) - lookups  # embedding rows are read, not multiplied
    print(f"\n{'config':<9} {'defense s':>9} {'teacher+prune s':>15} {'distill s':>9} {'ACC':>6} {'LFR':>6} "
          f"{'gap':>6} {'texts':>6} {'tokens':>9} {'GFLOP/s':>8}")
    for r in rows:
        t, ft = r["timings"], r["details"]["finetune"]
        gap = "-" if floor is None else f"{r['lfr'] - floor:+.3f}"
        rate = 6 * params * ft["tokens"] / ft["seconds"] / 1e9
        print(f"{r['config']:<9} {t['defense']:9.1f} {t['defense'] - ft['seconds']:15.1f} {ft['seconds']:9.1f} "
              f"{r['acc']:6.3f} {r['lfr']:6.3f} {gap:>6} {ft['texts']:6d} {ft['tokens']:9d} {rate:8.1f}")
    first = rows[0]
    for r in rows[1:]:
        ratio = r["timings"]["defense"] / first["timings"]["defense"]
        print(f"\n{r['config']} / {first['config']}: defense time x{ratio:.2f}; "
              f"LFR {r['lfr'] - first['lfr']:+.3f}, ACC {r['acc'] - first['acc']:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
