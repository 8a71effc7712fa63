"""Probe: the ``distill`` defense with the FINEMIX-defended model as its teacher instead of the raw suspect.

``distill`` (headprune.defenses.distill) teaches the public base with the suspect's predictions on clean rows
and their augmentations. Where the trigger is a natural feature of text (a syntactic template, a style),
the suspect's soft predictions on clean-looking inputs carry some of the backdoor to the student (measured:
LFR 0.730 syntactic, 0.674 style, seed 0; finemix 0.463 / 0.516). This probe first runs ``defend(victim,
"finemix")`` (the cross-validated default), then ``distill`` with that defended model as the teacher; both
with the default protocol and the same seed. Everything the teacher and the student see is the defender's:
the suspect, the public base, the clean rows. LFR only from ``defend``'s evaluation, after the defense.

Not a registered defense (a probe of one idea, few seeds): each run appends one JSON line (both models'
metrics, finemix's chosen p, seeds, versions, the command) to ``--jsonl``.

    python benchmarks/distill_teacher_probe.py --victims minilm-syntactic minilm-style --seeds 0 \\
        --cache /tmp/hpcache
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
from headprune.defenses import DistillDefense, defend
from headprune.envs.headprune_env import HeadPruneEnv
from headprune.common.provenance import environment_info
from headprune.victims import resolve_victim


class DistillFromTeacher(DistillDefense):
    """``distill`` with a given teacher (here: the finemix-defended model) in place of the suspect."""

    def __init__(self, teacher: nn.Module, **options: Any) -> None:
        super().__init__(**options)
        self._teacher = teacher

    def teacher(self, env: HeadPruneEnv) -> nn.Module:
        return self._teacher


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--victims", nargs="+", default=["minilm-syntactic", "minilm-style"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--cache", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jsonl", default="benchmarks/results/distill_teacher_probe.jsonl")
    args = p.parse_args()
    pin_threads(args.threads)
    command = "python benchmarks/distill_teacher_probe.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    for name in args.victims:
        victim = resolve_victim(name, cache=args.cache, progress=False)
        splits = victim.splits()  # evaluation only, handed to defend
        for seed in args.seeds:
            config = _default_env().replace(seed=seed, cache=args.cache, progress=False)
            start = time.perf_counter()
            teacher = defend(victim, "finemix", config, eval_clean=splits.clean_test, eval_poison=splits.poisoned_test)
            student = defend(victim, DistillFromTeacher(teacher.model), config, eval_clean=splits.clean_test,
                             eval_poison=splits.poisoned_test)
            record = {"victim": victim.name, "seed": seed, "finemix": teacher.metrics["final"],
                      "finemix_p": teacher.details.get("p"), "distill_from_finemix": student.metrics["final"],
                      "validation": student.validation, "wall_s": round(time.perf_counter() - start, 1),
                      "command": command, "versions": environment_info()}
            print(json.dumps({k: record[k] for k in ("victim", "seed", "finemix", "distill_from_finemix")}), flush=True)
            with open(args.jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
