"""Which models flip which triggered inputs: is a teacher's residue the backdoor, or what few rows allow?

``purify``'s student inherits what its teacher (Fine-mixing's output) does on ordinary text; on the style attack
that teacher flips about half of the triggered inputs, twice the clean model's rate. This script asks where those
flips come from, on one victim and one workbench seed, by comparing the flips (a triggered input whose true label
is not the target, predicted as the target) of:

- ``suspect``: the victim;
- ``clean model``: the clean model trained like the victim (the floor);
- ``clean reference``: the public base trained on the defender's labelled rows alone for ``--reference-epochs``
  (``DistillDefense.clean_reference``, what ``reference_weight`` mixes in; it never saw a trigger);
- ``finemix s<k>``: Fine-mixing at ``--p`` (fixed, so the seeds differ only in the mix and the fine-tune) with
  workbench seeds ``--mix-seeds``, and ``finemix ensemble``: the mean of their class probabilities.

Printed and appended to ``--jsonl`` (with the command and versions): each model's ACC and LFR, and for each pair
of models how many triggered inputs both, only one, or only the other flip. A teacher residue that is the
backdoor shows as flips the suspect shares and the clean reference does not; an ensemble of mixes helps only if
the mixes flip different inputs. Evaluation code: the defenses run on the defender's clean rows only; the
poisoned rows are read after every model is fixed.

    python benchmarks/teacher_flips.py --victim minilm-style --p 0.6 --mix-seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from dataclasses import replace
from typing import Any

import torch

from headprune.common.provenance import environment_info
from headprune.compare import RunSettings, pin_threads
from headprune.compare.grid import _victim
from headprune.defenses import resolve_defense
from headprune.defenses.defend import run_defense
from headprune.engine.evaluator import Evaluator
from headprune.victims import build_victim
from headprune.workbench import Workbench


def probabilities(model: torch.nn.Module, tokenizer: Any, texts: list[str], max_length: int) -> torch.Tensor:
    """``[N, C]`` class probabilities of ``model`` (eval mode, every head) on ``texts``."""
    model.eval()
    return torch.softmax(Evaluator(model, tokenizer, texts, max_length=max_length).logits().float(), dim=-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--victim", default="minilm-style", help="a victim preset or folder")
    ap.add_argument("--p", type=float, default=0.6, help="Fine-mixing's p for every mix (fixed: no p search)")
    ap.add_argument("--mix-seeds", type=int, nargs="+", default=[0, 1, 2], help="workbench seeds of the mixes")
    ap.add_argument("--reference-epochs", type=float, default=3.0, help="epochs of the clean reference")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jsonl", default="benchmarks/results/teacher_flips.jsonl")
    args = ap.parse_args()
    pin_threads(args.threads)
    command = "python benchmarks/teacher_flips.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0 = time.perf_counter()

    victim = _victim(args.victim, None)
    settings = RunSettings()
    max_length = victim.config.max_length
    models: dict[str, torch.nn.Module] = {"suspect": victim.model,
                                          "clean model": build_victim(config=victim.config.clean_reference()).model}
    rows = victim.defender_clean_data()
    benches = {seed: Workbench(victim, settings.env.replace(clean_data=rows, seed=seed, progress=False))
               for seed in args.mix_seeds}  # one per mix; the first also trains the clean reference
    first = benches[args.mix_seeds[0]]
    distill = resolve_defense("distill")
    reference_config = replace(settings.finetune.config(distill.finetune_lr, max_length=first.max_length,
                                                        seed=args.mix_seeds[0]), epochs=args.reference_epochs)
    models["clean reference"] = distill.clean_reference(first, reference_config)
    for seed, bench in benches.items():
        models[f"finemix s{seed}"] = run_defense(resolve_defense("finemix", {"p": args.p}), bench,
                                                 settings.finetune).model

    # ---- evaluation, after every model is fixed
    splits = victim.splits()
    target = victim.config.target_label
    clean_labels = torch.tensor(splits.clean_test.labels)
    keep = [i for i, y in enumerate(splits.poisoned_test.labels) if y != target]
    triggered = [splits.poisoned_test.sentences[i] for i in keep]
    on_clean = {n: probabilities(m, victim.tokenizer, list(splits.clean_test.sentences), max_length)
                for n, m in models.items()}
    on_triggered = {n: probabilities(m, victim.tokenizer, triggered, max_length) for n, m in models.items()}
    mixes = [n for n in models if n.startswith("finemix s")]
    on_clean["finemix ensemble"] = torch.stack([on_clean[n] for n in mixes]).mean(0)
    on_triggered["finemix ensemble"] = torch.stack([on_triggered[n] for n in mixes]).mean(0)
    flips = {n: q.argmax(-1) == target for n, q in on_triggered.items()}
    per_model = {n: {"acc": (on_clean[n].argmax(-1) == clean_labels).float().mean().item(),
                     "lfr": flips[n].float().mean().item()} for n in on_triggered}
    overlaps = [{"a": a, "b": b, "both": int((flips[a] & flips[b]).sum()), "a_only": int((flips[a] & ~flips[b]).sum()),
                 "b_only": int((flips[b] & ~flips[a]).sum())} for a, b in itertools.combinations(flips, 2)]
    record = {"victim": victim.name, "p": args.p, "mix_seeds": args.mix_seeds,
              "reference_epochs": args.reference_epochs, "n_triggered": len(triggered), "models": per_model,
              "overlaps": overlaps, "wall_s": round(time.perf_counter() - t0, 1), "command": command,
              "versions": environment_info()["versions"]}
    for name, m in per_model.items():
        print(f"{name:18s} ACC {m['acc']:.3f}  LFR {m['lfr']:.3f}")
    for o in overlaps:
        print(f"{o['a']} / {o['b']}: both {o['both']}, only the first {o['a_only']}, only the second {o['b_only']}")
    with open(args.jsonl, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
