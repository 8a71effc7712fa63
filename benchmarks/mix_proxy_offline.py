"""Issue 24 item 2, mixing half: do CHEAP signals rank mixing states at a fixed budget? Read from recorded states.

``benchmarks/proxy_budget.py`` recorded per-block mixing schedules (13 levels of 0-10 summing to 30) with each
state's validation accuracy and its LFR after the env's terminal fine-tune. The proxies it measured either do not
see a mix (``pure_variance``, ``drift_mass``: computed once from the suspect) or cost 14 s a call
(``reference_disagreement`` with a 3-epoch reference). This script scores signals that cost nothing per step on
the SAME recorded states, without re-running a fine-tune: only the suspect's and the public base's weights are
loaded (seconds). Candidates (fixed before any of them was computed; higher = more backdoor-like, as the reward
assumes):

* ``block_drift``: the share of the fine-tuning delta still in place, ``sum_b (1 - level_b / K) D_b / sum_b D_b``
  with ``D_b = ||theta_b - theta_base_b||^2`` over block ``b``'s parameters (the expected remainder under the
  elementwise mix);
* ``relative_drift``: the same with ``D_b`` divided by ``||theta_base_b||^2`` (each block's drift relative to its
  size);
* ``parameter_share``: the same with ``D_b`` = the block's parameter count (how much of the model is unmixed);
* ``accuracy_loss``: ``1 - `` the state's validation accuracy before the fine-tune (the reward's own accuracy term:
  a proxy weight of 0).

Rule: the candidate with the highest Spearman(candidate, LFR after the fine-tune) on the choose half (syntactic;
BadNets and AddSent end at LFR 0.99-1.00 in every state at this budget, nothing to rank) is the choice; the confirm
half (style) is reported for every candidate. Target (the issue's): rho >= 0.5 on both halves.

Honesty: evaluation code over recorded LFRs; the candidates read the two models' weights, the mixing levels and
the clean validation accuracy only.

Usage::

    python benchmarks/mix_proxy_offline.py benchmarks/results/proxy_budget.jsonl \\
        benchmarks/results/proxy_budget_reference3.jsonl --markdown-out benchmarks/results/mix_proxy_offline.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from proxy_evidence import spearman

from headprune.common.provenance import environment_info
from headprune.engine.reference import resolve_base
from headprune.envs.mixing import mix_blocks
from headprune.victims import resolve_victim

CHOOSE = ("syntactic",)
CONFIRM = ("style",)
CANDIDATES = ("block_drift", "relative_drift", "parameter_share", "accuracy_loss")
MIX_LEVELS = 10  # proxy_budget.py's mixing levels


def mixing_states(paths: list[Path]) -> dict[str, dict[int, dict[str, Any]]]:
    """``{attack: {state index: record}}`` of the recorded mixing states (a state in two files is one state; its
    recorded LFR must agree)."""
    states: dict[str, dict[int, dict[str, Any]]] = {}
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            record = json.loads(line)
            if record.get("kind") != "mix":
                continue
            seen = states.setdefault(record["attack"], {}).setdefault(record["index"], record)
            if seen["mix"] != record["mix"] or seen["lfr_finetuned"] != record["lfr_finetuned"]:
                raise ValueError(f"{path}:{number}: state {record['index']} of {record['attack']} differs from "
                                 "the same state in an earlier file")
    return states


def block_weights(attack: str) -> dict[str, np.ndarray]:
    """Per mixing block ``[B]``: squared drift from the base, that drift over the base's squared norm, and the
    parameter count, for the preset ``minilm-<attack>``'s suspect."""
    victim = resolve_victim(f"minilm-{attack}")
    base = resolve_base(victim)
    mine, theirs = dict(victim.model.named_parameters()), dict(base.named_parameters())
    drift, relative, count = [], [], []
    with torch.no_grad():
        for block in mix_blocks(victim.model, base):
            d = sum(float(((mine[n] - theirs[n]).double() ** 2).sum()) for n in block.parameters)
            q = sum(float((theirs[n].double() ** 2).sum()) for n in block.parameters)
            drift.append(d)
            relative.append(d / q)
            count.append(sum(mine[n].numel() for n in block.parameters))
    return {"block_drift": np.array(drift), "relative_drift": np.array(relative),
            "parameter_share": np.array(count, dtype=np.float64)}


def candidate_values(states: dict[int, dict[str, Any]], weights: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Every candidate's value per state (in state-index order)."""
    order = sorted(states)
    remaining = np.array([1.0 - np.asarray(states[i]["mix"]) / MIX_LEVELS for i in order])  # [S, B]
    values = {name: list(remaining @ w / w.sum()) for name, w in weights.items()}
    values["accuracy_loss"] = [1.0 - states[i]["val_acc"] for i in order]
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records", nargs="+", type=Path, help="proxy_budget.py records (JSONL)")
    parser.add_argument("--markdown-out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    states = mixing_states(args.records)
    table: dict[str, dict[str, tuple[float, float, int]]] = {}
    for attack in CHOOSE + CONFIRM:
        if attack not in states:
            raise SystemExit(f"no mixing states of {attack} in {[str(p) for p in args.records]}")
        values = candidate_values(states[attack], block_weights(attack))
        lfr = [states[attack][i]["lfr_finetuned"] for i in sorted(states[attack])]
        table[attack] = {name: spearman(values[name], lfr) for name in CANDIDATES}
    chosen = max(CANDIDATES, key=lambda name: np.mean([table[a][name][0] for a in CHOOSE]))
    lines = [f"Command: `python benchmarks/mix_proxy_offline.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}`",
             "", "| candidate | choose: " + ", ".join(CHOOSE) + " | confirm: " + ", ".join(CONFIRM) + " |",
             "|---|---|---|"]
    for name in CANDIDATES:
        cells = [" ; ".join(f"{table[a][name][0]:+.2f} (p {table[a][name][1]:.2f}, n {table[a][name][2]})"
                            for a in half) for half in (CHOOSE, CONFIRM)]
        lines.append(f"| `{name}`{' (chosen)' if name == chosen else ''} | {cells[0]} | {cells[1]} |")
    both = all(table[a][chosen][0] >= 0.5 for a in CHOOSE + CONFIRM)
    lines += ["", f"Chosen on the choose half: `{chosen}`; target rho >= 0.5 on both halves: "
              f"{'met' if both else 'not met'}.", "", f"Environment: `{json.dumps(environment_info())}`"]
    text = "\n".join(lines)
    print(text)
    if args.markdown_out is not None:
        args.markdown_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
