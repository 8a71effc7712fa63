"""Issue 24 probe: how far does the scripted uniform mixing schedule get inside ``HeadPrune-v0`` when the budget
allows it, and what does its state give after ``defend``'s protocol?

``HeadPrune-MiniLM-Syntactic-Mix-v0`` keeps the MiniLM default budget (36 heads pruned or mix steps), which stops
:class:`~headprune.defenses.scripted.UniformMixPolicy` at level 2-3 of 10 on every block. This runs the same
policy in the same env config (``operation="prune+mix"``, 10 levels, the victim's defaults) at the budgets given,
through :func:`~headprune.defenses.defend` (the episode's best state as the weight edit, then the protocol's clean
fine-tune) and appends one JSON record per budget: ACC and LFR after the state and after the fine-tune (the
victim's clean and poisoned TEST rows, read only here, after the state is fixed), the state's mixing levels, how
the episode ended (budget or floor), the validation accuracies, seconds and versions.

With ``--state repaired`` the defense keeps the deepest of the episode's checkpoints whose state holds the floor
after a short clean fine-tune (Fine-mixing's rule for its ``p``; :class:`~headprune.defenses.scripted.PolicyEpisodeOptions`)
instead of the env's best scored state; with ``--operation mix --score-every B`` (B the budget) the env judges the
floor only at the episode's end, so the episode runs its whole budget and every checkpoint is a candidate, as for
an agent trained that way. ``--compose`` then runs ``purify`` with that defense as its teacher (the scripted
schedule in the place of an agent teacher, ``teacher="policy:<run>"``: the control for the agent's composition)
and appends a second record, ``"policy": "uniform-mix -> purify"``, with the teacher's details (~12 min on MiniLM).

Usage (one core, ~3 min a budget on MiniLM; the victim cached)::

    python benchmarks/uniform_mix_budget.py --victim minilm-syntactic --budgets 78 130 \\
        --jsonl benchmarks/results/uniform_mix_budget.jsonl
    python benchmarks/uniform_mix_budget.py --victim minilm-style --budgets 78 --operation mix --score-every 78 \\
        --state repaired --jsonl benchmarks/results/uniform_mix_repaired.jsonl
    python benchmarks/uniform_mix_budget.py --victim minilm-offenseval-syntactic --budgets 78 --operation mix \\
        --score-every 78 --state repaired --compose --jsonl benchmarks/results/uniform_mix_composed.jsonl
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

import headprune  # noqa: F401
from headprune.common.provenance import environment_info
from headprune.defenses import defend
from headprune.defenses.purify import PurifyDefense
from headprune.defenses.scripted import GivenPolicyDefense, UniformMixPolicy
from headprune.victims import resolve_victim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--victim", default="minilm-syntactic", help="victim preset or folder")
    parser.add_argument("--budgets", nargs="+", type=int, required=True, help="the env budgets (heads + mix steps)")
    parser.add_argument("--mix-levels", type=int, default=10)
    parser.add_argument("--operation", default="prune+mix", choices=["prune+mix", "mix"], help="the env's operation")
    parser.add_argument("--score-every", type=int, default=None,
                        help="the env's score_every (default 1; the budget: the floor judged at the episode's end)")
    parser.add_argument("--state", default="best", choices=["best", "repaired"],
                        help="the state the defense keeps (PolicyEpisodeOptions.state)")
    parser.add_argument("--compose", action="store_true",
                        help="also run `purify` with the schedule's defense as its teacher (the composition after it, "
                             "as for an agent teacher) and append its record (policy 'uniform-mix -> purify')")
    parser.add_argument("--seed", type=int, default=0, help="defend's seed (split, mix draws, fine-tune)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jsonl", type=Path, required=True, help="records are appended here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = "python benchmarks/uniform_mix_budget.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    victim = resolve_victim(args.victim)
    splits = victim.splits()
    for budget in args.budgets:
        start = time.perf_counter()
        config = {"operation": args.operation, "mix_levels": args.mix_levels, "budget": budget, "seed": args.seed,
                  "progress": False}
        if args.score_every is not None:
            config["score_every"] = args.score_every
        options = {} if args.state == "best" else {"state": args.state}
        schedule = GivenPolicyDefense(UniformMixPolicy(), **options)
        result = defend(victim, schedule, config, eval_clean=splits.clean_test, eval_poison=splits.poisoned_test)
        edit = result.details.get("edit") or {}
        record = {"victim": victim.name, "policy": UniformMixPolicy.name, "budget": budget, "seed": args.seed,
                  "acc": result.metrics["final"]["acc"], "lfr": result.metrics["final"]["lfr"],
                  "acc_state": result.metrics["pruned"]["acc"], "lfr_state": result.metrics["pruned"]["lfr"],
                  "mix_levels": edit.get("mix_levels"), "episode_end": result.details.get("episode_end"),
                  "validation": result.validation, "config": config, "command": command,
                  **({"options": options, "kept_step": result.details["kept_step"],
                      "state_selection": result.details["state_selection"]} if options else {}),
                  "seconds": round(time.perf_counter() - start, 1), "environment": environment_info()}
        append_record(args.jsonl, record)
        print(f"budget {budget}: levels {record['mix_levels']} ({record['episode_end']}), ACC {record['acc']:.3f}, "
              f"LFR {record['lfr']:.3f} (state: {record['acc_state']:.3f} / {record['lfr_state']:.3f})", flush=True)
        if args.compose:
            start = time.perf_counter()
            composed = defend(victim, PurifyDefense(teacher=schedule), config, eval_clean=splits.clean_test,
                              eval_poison=splits.poisoned_test)
            teacher = composed.details.get("teacher") or {}
            record = {"victim": victim.name, "policy": f"{UniformMixPolicy.name} -> {PurifyDefense.name}",
                      "budget": budget, "seed": args.seed, "acc": composed.metrics["final"]["acc"],
                      "lfr": composed.metrics["final"]["lfr"], "teacher": teacher, "config": config,
                      "command": command, "options": options, "seconds": round(time.perf_counter() - start, 1),
                      "environment": environment_info()}
            append_record(args.jsonl, record)
            print(f"budget {budget}, then {PurifyDefense.name}: ACC {record['acc']:.3f}, LFR {record['lfr']:.3f}",
                  flush=True)


def append_record(path: Path, record: dict[str, object]) -> None:
    """One JSON line appended to ``path``."""
    with path.open("a") as out:
        out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
