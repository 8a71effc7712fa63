"""Build the MiniLM victims of every shipped attack and print their cards as a Markdown table.

Usage::

    python benchmarks/build_victims.py [--presets minilm-syntactic minilm-style ...] [--cache DIR]

Each victim (and the clean reference model, trained once per dataset and recipe and shared) is cached, so a
second run only re-reads the cards. The table gives ACC on the clean test set of the victim's dataset (SST-2:
1821 rows, OffensEval: 859), LFR on the attack's poisoned test set and the LFR of the clean model on that same
set. The defaults are the four SST-2 attacks and the two families kept for confirming a defense
(``CONFIRM_PRESETS``: ``minilm-offenseval-syntactic``, ``minilm-synonym``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from headprune.common.provenance import environment_info
from headprune.victims import CONFIRM_PRESETS, PRESETS, build_victim

MINILM_PRESETS = ["minilm-syntactic", "minilm-style", "minilm-badnets", "minilm-addsent", *CONFIRM_PRESETS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=MINILM_PRESETS, choices=sorted(PRESETS))
    parser.add_argument("--cache", default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    rows = []
    for preset in args.presets:
        start = time.perf_counter()
        victim = build_victim(config=PRESETS[preset], cache=args.cache, progress=not args.no_progress)
        card = victim.card
        rows.append((preset, card, time.perf_counter() - start))
        print(f"{preset}: ACC {card['acc']:.4f} LFR {card['lfr']:.4f} clean-model LFR {card['clean_model_lfr']:.4f}",
              file=sys.stderr, flush=True)
    print("| victim | dataset | attack | poison rate | seed | epochs | lr | ACC (clean test) | LFR (poisoned test) | "
          "clean-model LFR | train s | build s (this run) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for preset, card, seconds in rows:
        cfg = card["config"]
        print(f"| {preset} | {cfg.get('dataset', 'sst2')} | {cfg['attack']} | {cfg['poison_rate']} | {cfg['seed']} | {cfg['epochs']} | {cfg['lr']} | "
              f"{card['acc']:.4f} | {card['lfr']:.4f} (n={card['n_poisoned_test']}) | {card['clean_model_lfr']:.4f} | "
              f"{card['train_seconds']} | {seconds:.0f} |")
    print()
    print("environment: " + json.dumps(environment_info()))


if __name__ == "__main__":
    main()
