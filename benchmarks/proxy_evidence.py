"""Evidence for choosing the env's backdoor proxy: Spearman correlation of each proxy with LFR.

Usage::

    python benchmarks/proxy_evidence.py --victims minilm-syntactic minilm-style --out proxy_rows.jsonl
    python benchmarks/proxy_evidence.py --report proxy_rows.jsonl      # Markdown from saved rows only

For each victim it builds a set of head masks that MOVE LFR (not only random ones, which barely do):

* ``unpruned``: all heads;
* three scripted orders at prune fractions 0.05, 0.10, ..., 0.60 of the heads: ``importance``
  (increasing gate-gradient importance, Michel et al. 2019), ``pure`` (decreasing PURE [CLS]-attention
  variance) and ``ablation`` (increasing accuracy drop when the head alone is ablated), all from ONE
  :func:`headprune.engine.head_stats.compute_head_stats` pass on the defender's clean data;
* ``random``: seeded random masks with a fraction drawn uniformly in [0.05, 0.6] (``--n-random``, and
  more up to ``--min-masks`` in all; duplicate masks are dropped);
* ``finetune`` (``--finetune N``): N scripted masks followed by a short clean fine-tune of a copy of the
  model (``fine_tune`` on ``--ft-rows`` GLUE SST-2 train rows, 1 epoch, pruned heads held at zero); the
  proxies are rebuilt on the fine-tuned model.

Each proxy is built once per model from ``victim.defender_clean_data()`` (clean SST-2 dev) with
``--seed`` and called on every mask. Clean accuracy (on a seeded subsample of the clean test set) and
LFR (on a seeded subsample of the attack's poisoned test set) are computed ONLY through
:mod:`headprune.engine.metrics` from :class:`~headprune.engine.evaluator.Evaluator` predictions; the proxies never
see poisoned data. The report gives Spearman's rho (scipy), its p-value and n per proxy and victim,
over all masks, within an accuracy band (clean accuracy within ``--band`` of the unpruned model) and
over random masks only, plus each proxy's construction time and mean time per call.

MiniLM victims are never trained here: for a MiniLM preset the script waits (``--wait`` seconds)
until the cache folder of that preset holds a finished ``victim.json`` (the victims are built by
``benchmarks/build_victims.py``); the ``tiny`` preset is built if missing.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headprune.data import LabelledTexts, load_glue_sst2_train
from headprune.envs.proxies import PROXIES, PureVarianceProxy, balanced_subset, make_proxy
from headprune.engine.evaluator import Evaluator
from headprune.engine.head_stats import compute_head_stats
from headprune.engine.metrics import accuracy, label_flip_rate
from headprune.common.provenance import environment_info
from headprune.engine.finetuning import FineTuneConfig, fine_tune
from headprune.victims import CARD_FILE, PRESETS, Victim, build_victim, cache_dir, load_victim

FRACTIONS = tuple(round(0.05 * i, 2) for i in range(1, 13))  # 0.05 .. 0.60
ORDERS = ("importance", "pure", "ablation")


def subsample(texts: LabelledTexts, n: int, seed: int) -> LabelledTexts:
    """A seeded subsample of ``n`` rows (all rows when ``n`` is 0 or larger than the set), in file order."""
    if n <= 0 or n >= len(texts):
        return texts
    idx = sorted(np.random.default_rng(seed).choice(len(texts), size=n, replace=False).tolist())
    return LabelledTexts(tuple(texts.sentences[i] for i in idx), tuple(texts.labels[i] for i in idx),
                         f"{texts.source}[{n} of {len(texts)}, seed {seed}]")


def get_victim(preset: str, wait_s: float, tiny_cache: str | None) -> Victim:
    """Load a finished victim; build only the tiny preset; poll for MiniLM ones (never train them)."""
    config = PRESETS[preset]
    if preset == "tiny":
        return build_victim(config=config, cache=tiny_cache, progress=False)
    folder = cache_dir() / "victims" / config.name
    deadline = time.monotonic() + wait_s
    while True:
        card_path = folder / CARD_FILE
        if card_path.is_file():
            try:
                if "acc" in json.loads(card_path.read_text()):
                    return load_victim(folder)
            except json.JSONDecodeError:
                pass  # being written
        if time.monotonic() > deadline:
            raise TimeoutError(f"{folder} has no finished {CARD_FILE} after {wait_s:.0f} s")
        print(f"waiting for {folder} ...", file=sys.stderr, flush=True)
        time.sleep(60)


def ordered_masks(order: torch.Tensor, shape: tuple[int, int]) -> list[tuple[float, torch.Tensor]]:
    """``(fraction, mask [L, H])`` pruning the first ``round(f * L * H)`` heads of ``order`` (flat ids)."""
    L, H = shape
    out = []
    for f in FRACTIONS:
        k = int(round(f * L * H))
        m = torch.ones(L * H)
        m[order[:k]] = 0.0
        out.append((f, m.view(L, H)))
    return out


def build_masks(stats: Any, shape: tuple[int, int], n_random: int, seed: int, min_masks: int = 0) -> list[dict[str, Any]]:
    """Every mask of one victim as ``{"kind", "fraction", "mask"}``, without duplicates (a scripted mask
    equal to an earlier one is dropped): the scripted ones, then at least ``n_random`` random masks and
    as many more as needed to reach ``min_masks`` in all."""
    L, H = shape
    orders = {
        "importance": torch.argsort(stats.importance.flatten(), stable=True),
        "pure": torch.argsort(-stats.cls_attention_variance.flatten(), stable=True),
        "ablation": torch.argsort(stats.ablation_acc_drop.flatten(), stable=True),
    }
    masks: list[dict[str, Any]] = []
    seen: set[bytes] = set()

    def add(kind: str, fraction: float, m: torch.Tensor) -> bool:
        key = m.to(torch.uint8).numpy().tobytes()
        if key in seen:
            return False
        seen.add(key)
        masks.append({"kind": kind, "fraction": fraction, "mask": m})
        return True

    add("unpruned", 0.0, torch.ones(L, H))
    for name in ORDERS:
        for f, m in ordered_masks(orders[name], shape):
            add(name, f, m)
    rng = np.random.default_rng([seed, 7])
    target = max(len(masks) + n_random, min_masks)
    for _ in range(100 * max(target, 1)):
        if len(masks) >= target:
            break
        f = float(rng.uniform(0.05, 0.6))
        k = max(1, int(round(f * L * H)))
        m = torch.ones(L * H)
        m[torch.as_tensor(rng.choice(L * H, size=k, replace=False))] = 0.0
        add("random", round(k / (L * H), 4), m.view(L, H))
    return masks


def score_model(model: Any, tokenizer: Any, masks: list[torch.Tensor], clean_test: LabelledTexts,
                poisoned_test: LabelledTexts, target: int) -> list[tuple[float, float]]:
    """``(acc, lfr)`` for each mask ``[L, H]``, via Evaluator predictions and headprune.engine.metrics only."""
    stacked = torch.stack(masks)  # [K, L, H]
    clean_ev = Evaluator(model, tokenizer, clean_test, batch_size=64)
    poison_ev = Evaluator(model, tokenizer, list(poisoned_test.sentences), batch_size=64)
    clean_pred = clean_ev.logits_for_masks(stacked).argmax(-1)  # [K, Nc]
    poison_pred = poison_ev.logits_for_masks(stacked).argmax(-1)  # [K, Np]
    return [(accuracy(clean_pred[k], clean_test.labels), label_flip_rate(poison_pred[k], poisoned_test.labels, target))
            for k in range(len(masks))]


def run_proxies(model: Any, tokenizer: Any, clean: LabelledTexts, masks: list[torch.Tensor], seed: int,
                names: list[str], head_stats: Any | None) -> tuple[list[dict[str, float]], dict[str, dict[str, float]]]:
    """Values of every proxy on every mask, plus ``{name: {"init_s", "call_s"}}`` timings."""
    values: list[dict[str, float]] = [{} for _ in masks]
    timing: dict[str, dict[str, float]] = {}
    for name in names:
        t0 = time.perf_counter()
        kwargs = {"head_stats": head_stats} if name == PureVarianceProxy.name and head_stats is not None else {}
        proxy = make_proxy(name, model, tokenizer, clean, seed=seed, **kwargs)
        init_s = time.perf_counter() - t0
        calls = []
        for i, m in enumerate(masks):
            t = time.perf_counter()
            values[i][name] = proxy(m)
            calls.append(time.perf_counter() - t)
            rates = getattr(proxy, "last_rates", None)
            if rates is not None:
                values[i][f"{name}_rates"] = [round(float(r), 6) for r in rates]  # type: ignore[assignment]
            curve = getattr(proxy, "last_curve", None)
            if curve is not None:
                values[i][f"{name}_curve"] = [[round(float(r), 6) for r in row] for row in curve]  # type: ignore[assignment]
        timing[name] = {"init_s": init_s, "call_s": float(np.mean(calls)), "calls": len(calls)}
        print(f"  {name}: init {init_s:.1f} s, {np.mean(calls):.3f} s/call", file=sys.stderr, flush=True)
    return values, timing


def evaluate_victim(preset: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """All rows (one per mask, plus one ``meta`` row) for one victim."""
    t_wait = time.perf_counter()
    victim = get_victim(preset, args.wait, args.tiny_cache)
    start = time.perf_counter()
    wait_s = start - t_wait
    model, tok = victim.model, victim.tokenizer
    target = victim.config.target_label
    splits = victim.splits()  # EVALUATION only: the proxies never receive these
    clean_test = subsample(splits.clean_test, args.n_acc, args.seed)
    poisoned_test = subsample(splits.poisoned_test, args.n_lfr, args.seed)
    defender = victim.defender_clean_data()
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    print(f"{preset}: {victim.name} ({L}x{H} heads)", file=sys.stderr, flush=True)

    # per-head statistics on the same seeded subset PureVarianceProxy would use (so it is shared)
    t = time.perf_counter()
    idx = balanced_subset(defender.labels, args.stats_per_class, args.seed)
    stats_texts = LabelledTexts(tuple(defender.sentences[i] for i in idx), tuple(defender.labels[i] for i in idx),
                                "defender subset")
    stats = compute_head_stats(model, tok, stats_texts)
    stats_s = time.perf_counter() - t
    print(f"  head stats: {stats_s:.1f} s", file=sys.stderr, flush=True)

    masks = build_masks(stats, (L, H), args.n_random, args.seed, args.min_masks)
    scores = score_model(model, tok, [m["mask"] for m in masks], clean_test, poisoned_test, target)
    values, timing = run_proxies(model, tok, defender, [m["mask"] for m in masks], args.seed, args.proxies, stats)
    rows = []
    for m, (acc, lfr), v in zip(masks, scores, values):
        rows.append({"victim": preset, "kind": m["kind"], "fraction": m["fraction"], "finetuned": False,
                     "pruned": int((m["mask"] == 0).sum()), "acc": acc, "lfr": lfr, **v,
                     "mask": m["mask"].int().tolist()})

    # masks after a short clean fine-tune (pruned heads held at zero)
    ft_timing: dict[str, Any] = {}
    if args.finetune > 0:
        pool = load_glue_sst2_train()
        ft_data = subsample(pool, args.ft_rows, args.seed)
        picks = [m for m in masks if m["kind"] in ORDERS and m["fraction"] in args.ft_fractions]
        picks = picks[: args.finetune]
        for m in picks:
            t = time.perf_counter()
            ft_model = copy.deepcopy(model)
            fine_tune(ft_model, tok, ft_data, FineTuneConfig(epochs=1.0, lr=2e-5, batch_size=32, seed=args.seed),
                      mask=m["mask"], progress=False)
            ft_s = time.perf_counter() - t
            ((acc, lfr),) = score_model(ft_model, tok, [m["mask"]], clean_test, poisoned_test, target)
            ft_values, _ = run_proxies(ft_model, tok, defender, [m["mask"]], args.seed, args.proxies, None)
            rows.append({"victim": preset, "kind": f"finetune+{m['kind']}", "fraction": m["fraction"],
                         "finetuned": True, "pruned": int((m["mask"] == 0).sum()), "acc": acc, "lfr": lfr,
                         **ft_values[0], "mask": m["mask"].int().tolist()})
            ft_timing[f"{m['kind']}@{m['fraction']}"] = round(ft_s, 1)
            print(f"  fine-tune {m['kind']}@{m['fraction']}: {ft_s:.1f} s, acc {acc:.3f} lfr {lfr:.3f}",
                  file=sys.stderr, flush=True)
            del ft_model

    card = victim.card
    meta = {"victim": preset, "kind": "meta", "name": victim.name, "target_label": target, "card_acc": card.get("acc"),
            "card_lfr": card.get("lfr"), "clean_model_lfr": card.get("clean_model_lfr"),
            "n_acc": len(clean_test), "n_lfr": len(poisoned_test), "head_stats_s": round(stats_s, 1),
            "head_stats_n": len(stats_texts), "timing": timing, "finetune_s": ft_timing,
            "wall_s": round(time.perf_counter() - start, 1), "wait_s": round(wait_s, 1), "seed": args.seed, "threads": torch.get_num_threads(),
            "command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "environment": environment_info()}
    return [meta, *rows]


# ---------------------------------------------------------------------------------------------- report
def spearman(xs: list[float], ys: list[float]) -> tuple[float, float, int]:
    from scipy.stats import spearmanr

    n = len(xs)
    if n < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return math.nan, math.nan, n
    res = spearmanr(xs, ys)
    return float(res.statistic), float(res.pvalue), n


def partial_spearman(xs: list[float], ys: list[float], zs: list[float]) -> float:
    """Pearson correlation of the residuals of rank(x) and rank(y) after a linear fit on rank(z)."""
    from scipy.stats import rankdata

    if len(xs) < 4:
        return math.nan
    rx, ry, rz = (rankdata(np.asarray(a, dtype=float)) for a in (xs, ys, zs))

    def residual(y: np.ndarray) -> np.ndarray:
        return y - np.polyval(np.polyfit(rz, y, 1), rz)

    ex, ey = residual(rx), residual(ry)
    if float(ex.std()) == 0.0 or float(ey.std()) == 0.0:
        return math.nan
    return float(np.corrcoef(ex, ey)[0, 1])


def _fmt(rho: float, p: float, n: int) -> str:
    if math.isnan(rho):
        return f"n/a (n={n})"
    return f"{rho:+.2f} (p={p:.1g}, n={n})"


DIAGNOSTICS = {
    "active_fraction": "share of heads left active (a trivial control: any proxy that falls as heads are pruned "
                       "gets this much for free)",
    "soft_trigger[final point]": "asymmetry of the soft trigger's rates after the last step only (aggregate='final')",
    "soft_trigger[toward target]": "rate toward the attack's target minus the other class (NOT trigger-agnostic: "
                                   "uses the target label; diagnostic only)",
    "random_word_flip[toward target]": "net flip rate toward the target minus the other class (diagnostic only)",
}


def add_diagnostics(r: dict[str, Any], target: int) -> None:
    """Post-hoc variants computed from the stored rates and rate curves of the same runs."""
    mask = r.get("mask")
    if mask:
        r["active_fraction"] = sum(map(sum, mask)) / (len(mask) * len(mask[0]))
    curve = r.get("soft_trigger_curve")
    if curve:
        r["soft_trigger[final point]"] = max(curve[-1]) - min(curve[-1])
    for name in ("soft_trigger", "random_word_flip"):
        rates = r.get(f"{name}_rates")
        if rates and len(rates) == 2:
            r[f"{name}[toward target]"] = rates[target] - rates[1 - target]


def correlation_table(names: list[str], data: list[dict[str, Any]], victims: list[str], band: float) -> list[str]:
    header = "| proxy | " + " | ".join(f"{v}: all | {v}: band | {v}: random only" for v in victims) + " |"
    lines = [header, "|---|" + "---|" * (3 * len(victims))]
    for p in names:
        cells = []
        for v in victims:
            vd = [r for r in data if r["victim"] == v and p in r]
            base = next((r for r in vd if r["kind"] == "unpruned"), None)
            sets = [vd, [r for r in vd if base is not None and abs(r["acc"] - base["acc"]) <= band],
                    [r for r in vd if r["kind"] == "random"]]
            cells += [_fmt(*spearman([r[p] for r in s], [r["lfr"] for r in s])) for s in sets]
        lines.append(f"| `{p}` | " + " | ".join(cells) + " |")
    return lines


def _wait_note(meta: dict[str, Any]) -> str:
    if "wait_s" in meta:
        return f" after waiting {meta['wait_s'] / 60:.0f} min for the victim"
    return " (INCLUDING the wait for the victim to be trained)"


def report(rows: list[dict[str, Any]], band: float) -> str:
    metas = [r for r in rows if r["kind"] == "meta"]
    data = [r for r in rows if r["kind"] != "meta"]
    targets = {m["victim"]: int(m.get("target_label", 1)) for m in metas}
    for r in data:
        add_diagnostics(r, targets.get(r["victim"], 1))
    victims = [m["victim"] for m in metas]
    proxies = [p for p in PROXIES if any(p in r for r in data)]
    lines = ["## Backdoor proxies vs LFR (`benchmarks/proxy_evidence.py`)", ""]
    for m in metas:
        lines.append(f"- `{m['victim']}` ({m['name']}; card ACC {m['card_acc']:.3f}, LFR {m['card_lfr']:.3f}, "
                     f"clean-model LFR {m['clean_model_lfr']:.3f}): command `{m['command']}`, seed {m['seed']}, "
                     f"{m['threads']} torch thread(s), wall {m['wall_s'] / 60:.1f} min{_wait_note(m)} (head stats on "
                     f"{m['head_stats_n']} clean dev sentences: {m['head_stats_s']:.0f} s; fine-tunes: "
                     f"{m['finetune_s'] or 'none'}). ACC on {m['n_acc']} seeded clean-test rows, LFR on "
                     f"{m['n_lfr']} seeded poisoned-test rows (subsamples, seed {m['seed']}).")
    if metas:
        env = metas[0]["environment"]
        lines.append(f"- versions: python {env.get('python')}, " + ", ".join(
            f"{k} {v}" for k, v in env.get("versions", {}).items()) + f"; {env.get('platform', platform.platform())}")
    lines.append("")
    lines.append(f"Spearman rho between proxy and LFR (higher proxy = more backdoor-like, so a useful proxy has "
                 f"rho > 0). 'band' = masks whose clean ACC is within {band} of the unpruned model's.")
    lines.append("")
    lines += correlation_table(proxies, data, victims, band)
    diagnostics = [d for d in DIAGNOSTICS if any(d in r for r in data)]
    if diagnostics:
        lines += ["", "Post-hoc variants from the same runs (not proxies the env offers; for interpretation):", ""]
        lines += [f"- `{d}`: {DIAGNOSTICS[d]}" for d in diagnostics]
        lines += [""] + correlation_table(diagnostics, data, victims, band)
    lines += ["", "Partial Spearman rho with LFR controlling for `active_fraction` (rank residuals, all masks): "
              "does the proxy know more than how many heads are left?", ""]
    lines += ["| proxy | " + " | ".join(victims) + " |", "|---|" + "---|" * len(victims)]
    for p in proxies:
        cells = []
        for v in victims:
            vd = [r for r in data if r["victim"] == v and p in r and "active_fraction" in r]
            cells.append(f"{partial_spearman([r[p] for r in vd], [r['lfr'] for r in vd], [r['active_fraction'] for r in vd]):+.2f} (n={len(vd)})")
        lines.append(f"| `{p}` | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Cost per call (mean over the masks above; construction once per model):")
    lines.append("")
    lines.append("| proxy | " + " | ".join(f"{v}: init s | {v}: s/call" for v in victims) + " |")
    lines.append("|---|" + "---|" * (2 * len(victims)))
    for p in proxies:
        cells = []
        for m in metas:
            t = m["timing"].get(p, {})
            cells += [f"{t.get('init_s', math.nan):.2f}", f"{t.get('call_s', math.nan):.3f}"]
        lines.append(f"| `{p}` | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("LFR range per mask kind (min-max, n):")
    lines.append("")
    for v in victims:
        parts = []
        for kind in sorted({r["kind"] for r in data if r["victim"] == v}):
            ks = [r for r in data if r["victim"] == v and r["kind"] == kind]
            parts.append(f"{kind} {min(r['lfr'] for r in ks):.3f}-{max(r['lfr'] for r in ks):.3f} "
                         f"(ACC {min(r['acc'] for r in ks):.3f}-{max(r['acc'] for r in ks):.3f}, n={len(ks)})")
        lines.append(f"- `{v}`: " + "; ".join(parts))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--victims", nargs="+", default=["minilm-syntactic", "minilm-style"], choices=sorted(PRESETS))
    parser.add_argument("--out", default="proxy_rows.jsonl", help="JSON lines of the raw per-mask rows (appended)")
    parser.add_argument("--report", nargs="+", default=None, help="only print the report of these JSONL files")
    parser.add_argument("--proxies", nargs="+", default=list(PROXIES), choices=list(PROXIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-random", type=int, default=16, help="random masks (at least)")
    parser.add_argument("--min-masks", type=int, default=52, help="random masks are added up to this many masks")
    parser.add_argument("--n-acc", type=int, default=400, help="clean test rows for ACC (0 = all)")
    parser.add_argument("--n-lfr", type=int, default=300, help="poisoned test rows for LFR (0 = all)")
    parser.add_argument("--stats-per-class", type=int, default=32, help="clean dev rows per label for head stats")
    parser.add_argument("--finetune", type=int, default=2, help="scripted masks also scored after a clean fine-tune")
    parser.add_argument("--ft-rows", type=int, default=1000)
    parser.add_argument("--ft-fractions", nargs="+", type=float, default=[0.3])
    parser.add_argument("--band", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--wait", type=float, default=3 * 3600, help="seconds to wait for a MiniLM victim")
    parser.add_argument("--tiny-cache", default=None, help="cache root for the tiny preset (default: the usual)")
    args = parser.parse_args()

    if args.report:
        rows = [json.loads(line) for f in args.report for line in Path(f).read_text().splitlines() if line.strip()]
        print(report(rows, args.band))
        return
    torch.set_num_threads(args.threads)
    all_rows: list[dict[str, Any]] = []
    for preset in args.victims:
        rows = evaluate_victim(preset, args)
        with open(args.out, "a") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
        all_rows += rows
    print(report(all_rows, args.band))


if __name__ == "__main__":
    main()
