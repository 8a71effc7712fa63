"""Attack-family cross-validation of issue 13: choose a default defense on two attacks, confirm it on two others.

Reads the runner's records (``benchmarks/results/defense_runs.jsonl``: the default protocol, 872 defender rows)
and, for every defense configuration (strategy + its options), takes per attack the mean over seeds of

* the **gap**: LFR after the defense and fine-tune minus the clean model's LFR on that attack (the floor), and
* the **ACC drop**: the victim's clean-test ACC minus the defended model's.

A configuration is eligible on a half when it has runs on both of the half's attacks and drops at most
``--max-acc-drop`` ACC on each. The default is the eligible configuration with the smallest mean gap on the
CHOOSE half (syntactic + BadNets); the CONFIRM half (style + AddSent) is then only read: the chosen
configuration's gap and rank there are reported, whether or not it also wins there. The choice uses the test
LFR of the choose-half attacks only; no number of the confirm half enters it. Honesty: evaluation code over
finished records; nothing here feeds a defense.

    python benchmarks/cross_validate.py --jsonl benchmarks/results/defense_runs.jsonl
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from headprune.compare import CLEAN_MODEL, load_records
from headprune.compare.records import configuration, record_attack


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jsonl", nargs="+", default=["benchmarks/results/defense_runs.jsonl"])
    p.add_argument("--choose", nargs="+", default=["syntactic", "badnets"], help="attacks the default is chosen on")
    p.add_argument("--confirm", nargs="+", default=["style", "addsent"], help="attacks it is confirmed on")
    p.add_argument("--max-acc-drop", type=float, default=0.02, help="most clean-ACC drop from the victim, per attack")
    p.add_argument("--min-seeds", type=int, default=1, help="fewest seeds per attack for a configuration to count")
    args = p.parse_args()
    if set(args.choose) & set(args.confirm):
        p.error(f"--choose and --confirm share attacks: {sorted(set(args.choose) & set(args.confirm))}")
    return args


def per_attack(records: Sequence[dict[str, Any]]) -> tuple[dict[str, dict[str, float]], dict[tuple[str, str], dict]]:
    """``(anchors, cells)``: per attack the victim's ACC and the clean floor's LFR; per (configuration, attack)
    the mean LFR / ACC over seeds, the gap, the ACC drop and the seed count.

    Raises:
        ValueError: an attack with defense runs but no ``none`` or clean-model record (naming it).
    """
    anchors: dict[str, dict[str, float]] = {}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        attack = record_attack(r)
        if r["defense"] == CLEAN_MODEL:
            anchors.setdefault(attack, {})["floor"] = float(r["lfr"])
        elif r["defense"] == "none":
            anchors.setdefault(attack, {})["victim_acc"] = float(r["acc"])
        else:
            runs.setdefault((configuration(r), attack), []).append(r)
    cells = {}
    for (config, attack), group in runs.items():
        a = anchors.get(attack, {})
        missing = [k for k in ("floor", "victim_acc") if k not in a]
        if missing:
            raise ValueError(f"attack {attack!r}: no {' / '.join(missing)} record (run the 'none' strategy and the "
                             "clean-model reference row)")
        lfr, acc = float(np.mean([r["lfr"] for r in group])), float(np.mean([r["acc"] for r in group]))
        cells[(config, attack)] = {"lfr": lfr, "acc": acc, "gap": lfr - a["floor"], "drop": a["victim_acc"] - acc,
                                   "seeds": len({int(r["seed"]) for r in group})}
    return anchors, cells


def half_scores(cells: dict[tuple[str, str], dict], attacks: Sequence[str], max_drop: float, min_seeds: int
                ) -> dict[str, float]:
    """Mean gap over ``attacks`` of every configuration eligible on them (runs on each, drop <= ``max_drop``)."""
    scores = {}
    for config in dict.fromkeys(c for c, _ in cells):
        got = [cells.get((config, a)) for a in attacks]
        if all(c is not None and c["seeds"] >= min_seeds and c["drop"] <= max_drop for c in got):
            scores[config] = float(np.mean([c["gap"] for c in got]))  # type: ignore[index]
    return scores


def main() -> int:
    args = _parse()
    records = load_records(args.jsonl)
    anchors, cells = per_attack(records)
    attacks = [*args.choose, *args.confirm]
    choose = half_scores(cells, args.choose, args.max_acc_drop, args.min_seeds)
    confirm = half_scores(cells, args.confirm, args.max_acc_drop, args.min_seeds)
    print(f"Records: {', '.join(args.jsonl)}; gap = LFR - clean floor, mean over seeds; eligible: runs on each attack "
          f"of the half, ACC drop <= {args.max_acc_drop:.3f} on each.\n")
    print("| attack | victim ACC | clean floor LFR |\n|---|---|---|")
    for a in attacks:
        x = anchors.get(a, {})
        print(f"| {a} | {x.get('victim_acc', float('nan')):.3f} | {x.get('floor', float('nan')):.3f} |")
    print("\n| defense | " + " | ".join(f"{a} gap (drop, seeds)" for a in attacks)
          + " | choose mean | confirm mean |\n|" + "---|" * (len(attacks) + 3))
    order = sorted(dict.fromkeys(c for c, _ in cells), key=lambda c: (choose.get(c, np.inf), confirm.get(c, np.inf)))
    for config in order:
        row = []
        for a in attacks:
            c = cells.get((config, a))
            row.append("—" if c is None else f"{c['gap']:+.3f} ({c['drop']:+.3f}, {c['seeds']})")
        ch, co = choose.get(config), confirm.get(config)
        print(f"| {config} | " + " | ".join(row) + f" | {'—' if ch is None else f'{ch:+.3f}'} | "
              f"{'—' if co is None else f'{co:+.3f}'} |")
    if not choose:
        print("\nNo configuration is eligible on the choose half.")
        return 1
    best = min(choose, key=choose.__getitem__)
    print(f"\nChosen on {' + '.join(args.choose)}: **{best}** (mean gap {choose[best]:+.3f}).")
    if best in confirm:
        rank = sorted(confirm.values()).index(confirm[best]) + 1
        print(f"Confirmed on {' + '.join(args.confirm)}: mean gap {confirm[best]:+.3f}, rank {rank} of {len(confirm)} "
              f"eligible (best there: {min(confirm, key=confirm.__getitem__)}, {min(confirm.values()):+.3f}).")
    else:
        print(f"Not eligible on {' + '.join(args.confirm)} (missing runs or ACC drop above the limit).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
