"""Issue 24 item 2: does a backdoor proxy rank states at a FIXED budget?

At a fixed budget the env's return is the proxy's change (the accuracy term is near the floor for every state), so
a reward that trains an agent toward low LFR needs a proxy that orders the states the agent can reach at that
budget as their LFR does. This script measures exactly that, for the two kinds of states of ``HeadPrune-v0``:

* ``mask``: head masks with exactly ``--heads`` heads pruned (uniformly drawn, kept when the validation accuracy
  holds the workbench's floor);
* ``mix``: per-block mixing schedules toward the public base (``operation="mix"``, 10 levels per block) whose levels
  sum to ``--mix-total`` (a Dirichlet-weighted multinomial over the blocks, each capped at the top level), kept
  when they hold the floor.

For each state it records every proxy in ``--proxies`` on the state (as the env's step reward reads it, the state's
weights swapped in), then the env's terminal fine-tune of the state (:func:`headprune.envs.wrappers.finetuned_state_model`:
one epoch at lr 2e-5 on the workbench's training rows, the pruned heads held at zero), the proxy rebuilt on the
fine-tuned model (as ``TerminalFineTune``'s bonus reads it) and the LFR of the fine-tuned model on a seeded subsample
of the attack's poisoned test rows. The report gives Spearman(proxy, LFR after the fine-tune) per victim, kind and
proxy, and per half of the attack-family split: choose on syntactic + BadNets, confirm on style + AddSent (target:
>= 0.5 on both halves; positive = a higher proxy goes with a higher LFR, as the reward assumes).

Honesty: evaluation code. The workbench and every proxy see only the defender's clean rows, the suspect and the
public base; poisoned rows are read only here, after each state's fine-tune, for the LFR column.

Usage (resumable: states already in ``--out`` are skipped; about a minute per state on one core)::

    python benchmarks/proxy_budget.py --victims minilm-syntactic minilm-badnets minilm-style minilm-addsent \\
        --out benchmarks/results/proxy_budget.jsonl --states 10
    python benchmarks/proxy_budget.py --report benchmarks/results/proxy_budget.jsonl \\
        --markdown-out benchmarks/results/proxy_budget.md
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from proxy_evidence import spearman, subsample

from headprune.common.provenance import environment_info
from headprune.compare import pin_threads
from headprune.engine.evaluator import Evaluator
from headprune.engine.finetuning import FineTuneConfig
from headprune.engine.metrics import label_flip_rate
from headprune.envs.config import HeadPruneConfig
from headprune.envs.proxies import PROXIES
from headprune.envs.wrappers import finetuned_state_model
from headprune.victims import PRESETS, resolve_victim
from headprune.workbench import Workbench

CHOOSE = ("syntactic", "badnets")
CONFIRM = ("style", "addsent")
KINDS = ("mask", "mix")
PROXY_NAMES = ("pure_variance", "drift_mass", "reference_disagreement")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--victims", nargs="+", default=["minilm-syntactic", "minilm-badnets", "minilm-style",
                                                    "minilm-addsent"], choices=sorted(PRESETS))
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--proxies", nargs="+", default=list(PROXY_NAMES))
    p.add_argument("--proxy-options", type=_proxy_options, default={}, metavar="JSON",
                   help='JSON {"proxy": {keyword: value}}: keyword arguments of a proxy in --proxies (e.g. '
                        '{"reference_disagreement": {"n_per_class": 128, "reference_epochs": 3}}); the proxy\'s '
                        'column is then named with them, "name(key=value,...)"')
    p.add_argument("--states", type=int, default=10, help="states per victim and kind")
    p.add_argument("--heads", type=int, default=12, help="heads pruned in every mask state (the fixed budget)")
    p.add_argument("--mix-total", type=int, default=40, help="sum of the blocks' mixing levels in every mix state")
    p.add_argument("--draws", type=int, default=200, help="most candidates drawn per kind (floor rejections)")
    p.add_argument("--n-lfr", type=int, default=300, help="poisoned test rows for LFR (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="the workbench's seed (split, proxies, fine-tune)")
    p.add_argument("--cache", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="proxy_budget.jsonl", help="JSON lines of the per-state rows (appended)")
    p.add_argument("--report", nargs="+", default=None, help="only print the report of these JSONL files")
    p.add_argument("--markdown-out", default=None)
    return p.parse_args(argv)


def _proxy_options(text: str) -> dict[str, dict[str, Any]]:
    """``--proxy-options``: a JSON object of proxy name -> object of finite scalar keyword arguments."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError('expected {"proxy": {keyword: value}}')
    for name, kwargs in value.items():
        for key, item in kwargs.items():
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                raise argparse.ArgumentTypeError(f"{name}.{key}: expected a finite number, got {item!r}")
    return value


def proxy_label(name: str, kwargs: dict[str, Any]) -> str:
    """The column name of proxy ``name`` built with ``kwargs``: the bare name without them, else
    ``"name(key=value,...)"`` (keys sorted), so records of different settings never share a column."""
    return name if not kwargs else f"{name}({','.join(f'{k}={kwargs[k]}' for k in sorted(kwargs))})"


def draw_states(bench: Workbench, kind: str, args: argparse.Namespace, rng: np.random.Generator
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(mask [L*H] int8, mix [B] int8)`` states at the fixed budget that hold the workbench's floor, distinct."""
    n = bench.num_layers * bench.num_heads
    seen: set[bytes] = set()
    for draw in range(args.draws):
        if draw and draw % 20 == 0:
            print(f"  {draw} {kind} candidates drawn", flush=True)
        mask = np.ones(n, np.int8)
        mix = np.zeros(0 if bench.mixer is None else bench.mixer.num_blocks, np.int8)
        if kind == "mask":
            mask[rng.choice(n, size=args.heads, replace=False)] = 0
        else:
            assert bench.mixer is not None
            top = bench.mixer.levels
            weights = rng.dirichlet(np.full(mix.size, 0.5))
            while int(mix.sum()) < args.mix_total:
                open_blocks = mix < top
                w = np.where(open_blocks, weights, 0.0)
                mix[rng.choice(mix.size, p=w / w.sum())] += 1
        key = mask.tobytes() + mix.tobytes()
        if key in seen:
            continue
        seen.add(key)
        if bench.score_state(mask, mix=mix).accuracy >= bench.accuracy_floor:
            yield mask, mix


def run_victim(preset: str, args: argparse.Namespace, done: set[tuple[str, str, int]], out: Path) -> None:
    victim = resolve_victim(preset, cache=args.cache, progress=False)
    bench = Workbench(victim, HeadPruneConfig(operation="prune+mix", seed=args.seed, cache=args.cache))
    t0 = time.perf_counter()
    options = {name: args.proxy_options.get(name, {}) for name in args.proxies}
    proxies = {proxy_label(name, options[name]): bench.build_proxy(bench.model, proxy=name, **options[name])
               for name in args.proxies}
    build_s = time.perf_counter() - t0
    poison = subsample(victim.splits().poisoned_test, args.n_lfr, args.seed)
    target = int(victim.config.target_label)
    finetune = FineTuneConfig(epochs=1.0, lr=2e-5, max_length=bench.max_length, seed=bench.base_seed)
    for kind in args.kinds:
        rng = np.random.default_rng([args.seed, KINDS.index(kind)])
        for index, (mask, mix) in zip(range(args.states), draw_states(bench, kind, args, rng)):
            if (victim.name, kind, index) in done:
                continue
            t1 = time.perf_counter()
            gates = bench.mask_tensor(mask)
            levels = mix if mix.any() else None
            values = {}
            for name, proxy in proxies.items():
                t2 = time.perf_counter()
                values[name] = bench.scorer.proxy_value(proxy, gates, None, levels)
                values[f"{name}_seconds"] = round(time.perf_counter() - t2, 3)
            model, log = finetuned_state_model(bench, finetune, mask, None, mix)
            after = {proxy_label(name, options[name]):
                     float(bench.build_proxy(model, with_stats=False, proxy=name, **options[name])(gates))
                     for name in args.proxies}
            preds = Evaluator(model, bench.tokenizer, poison, max_length=bench.max_length).predictions(gates)
            row = {"victim": victim.name, "attack": victim.config.attack, "kind": kind, "index": index,
                   "seed": args.seed, "heads_pruned": int((mask == 0).sum()), "mix": mix.tolist(),
                   "mask": mask.tolist(), "val_acc": bench.score_state(mask, mix=mix).accuracy,
                   "floor": bench.accuracy_floor,
                   "val_acc_finetuned": Evaluator(model, bench.tokenizer, bench.val_data,
                                                  max_length=bench.max_length).accuracy(gates),
                   "lfr_finetuned": label_flip_rate(preds, poison.labels, target), "lfr_rows": len(poison),
                   "proxy": values, "proxy_finetuned": after, "finetune_steps": log.steps,
                   "proxies_build_s": round(build_s, 1), "seconds": round(time.perf_counter() - t1, 1),
                   "config": {k: v for k, v in vars(args).items() if k not in ("report", "markdown_out")},
                   "versions": environment_info()["versions"]}
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[{victim.name} {kind} {index}] lfr {row['lfr_finetuned']:.3f} val {row['val_acc']:.3f} "
                  + " ".join(f"{k} {values[k]:.4f}" for k in proxies) + f" ({row['seconds']} s)", flush=True)


def report(paths: Sequence[str]) -> str:
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    names = sorted({k for r in rows for k in r["proxy"] if not k.endswith("_seconds")})
    lines = [f"Command: `python benchmarks/proxy_budget.py --report {' '.join(paths)}`", "",
             "Spearman(proxy, LFR after the env's terminal fine-tune) at a fixed budget; positive = the proxy ranks "
             "states as LFR does (what the reward assumes). `on state`: the proxy as the step reward reads it; "
             "`after FT`: rebuilt on the fine-tuned model (the terminal bonus). Halves: choose = "
             f"{' + '.join(CHOOSE)}, confirm = {' + '.join(CONFIRM)} (mean of the per-victim rho).", ""]
    for kind in KINDS:
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        budget = f"{sel[0]['heads_pruned']} heads pruned" if kind == "mask" else f"mix levels summing to {sum(sel[0]['mix'])}"
        lines += [f"**{kind} states** ({budget}; states at or above the floor)", "",
                  "| victim | half | n | LFR after FT (min-max) | " + " | ".join(
                      f"{n} on state | {n} after FT" for n in names) + " |",
                  "|---|---|---|---|" + "---|---|" * len(names)]
        halves: dict[str, dict[str, list[float]]] = {}
        for attack in CHOOSE + CONFIRM:
            vr = [r for r in sel if r["attack"] == attack]
            if not vr:
                continue
            half = "choose" if attack in CHOOSE else "confirm"
            lfr = [r["lfr_finetuned"] for r in vr]
            cells = []
            for n in names:
                for key in ("proxy", "proxy_finetuned"):
                    with_n = [r for r in vr if n in r[key]]  # files of other proxy settings lack the column
                    rho, pval, k = spearman([r[key][n] for r in with_n], [r["lfr_finetuned"] for r in with_n])
                    halves.setdefault(half, {}).setdefault(f"{n} {key}", []).append(rho)
                    cells.append("n/a" if math.isnan(rho) else f"{rho:+.2f} (p {pval:.2f})")
            lines.append(f"| {vr[0]['victim']} | {half} | {len(vr)} | {min(lfr):.3f}-{max(lfr):.3f} | "
                         + " | ".join(cells) + " |")
        for half, per in halves.items():
            cells = []
            for n in names:
                for key in ("proxy", "proxy_finetuned"):
                    vals = [v for v in per.get(f"{n} {key}", []) if not math.isnan(v)]
                    cells.append(f"{np.mean(vals):+.2f}" if vals else "n/a")
            lines.append(f"| **mean, {half}** | | | | " + " | ".join(cells) + " |")
        cost = {n: np.mean([r["proxy"][f"{n}_seconds"] for r in sel if f"{n}_seconds" in r["proxy"]])
                for n in names if any(f"{n}_seconds" in r["proxy"] for r in sel)}
        lines += ["", "Seconds per proxy call (mean): " + ", ".join(f"{n} {c:.2f}" for n, c in cost.items())
                  + f"; per state in all (proxies, fine-tune, LFR): {np.mean([r['seconds'] for r in sel]):.0f} s.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    if args.report:
        text = report(args.report)
        print(text)
        if args.markdown_out:
            Path(args.markdown_out).write_text(text + "\n")
        return
    unknown = sorted(set(args.proxy_options) - set(args.proxies))
    if unknown:
        raise SystemExit(f"--proxy-options: {', '.join(unknown)} not in --proxies {' '.join(args.proxies)}")
    for name, kwargs in args.proxy_options.items():
        accepts = inspect.signature(PROXIES.get(name).__init__).parameters
        bad = sorted(k for k in kwargs if k not in accepts or k in ("model", "tokenizer", "clean", "seed"))
        if bad:
            raise SystemExit(f"--proxy-options: proxy {name} has no keyword argument {', '.join(bad)}")
    pin_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    done = set()
    if out.is_file():
        wanted = {proxy_label(name, args.proxy_options.get(name, {})) for name in args.proxies}
        done = {(r["victim"], r["kind"], r["index"]) for r in map(json.loads, out.read_text().splitlines())
                if wanted <= set(r["proxy"])}  # a state counts as done only with every requested proxy column
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    for preset in args.victims:
        run_victim(preset, args, done, out)


if __name__ == "__main__":
    main()
