"""Writing a :class:`~headprune.clean.CleanResult` to a folder: ``model/`` (plain ``transformers`` loads it),
``report.json``, ``report.md``, the layer x head heatmap of what was pruned, the accuracy-vs-heads-pruned
curve (:func:`~headprune.defenses.report.plot_curve`) and, with ``compact=True``, ``compact/``: the model with
the pruned heads physically removed (:func:`~headprune.engine.export.compact`), its size and forward-speed change.

``compact/`` holds ``model.safetensors`` (the compacted weights), ``config.json`` and the tokenizer of the full
model, and ``headprune.json`` with the mask; :func:`load_compact` rebuilds it without unpickling anything.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headprune.clean import CleanResult
from headprune.defenses.report import PLOT_FILE, plot_curve
from headprune.engine.export import compact
from headprune.common.out_folder import staged_folder

__all__ = ["HEATMAP_FILE", "load_compact", "markdown_report", "plot_heatmap", "write_clean_report"]

HEATMAP_FILE = "pruned_heads.png"
COMPACT_DIR = "compact"


def plot_heatmap(mask: torch.Tensor, path: str | os.PathLike[str], title: str = "") -> Path:
    """PNG of the ``[L, H]`` mask as a layer x head grid: dark = pruned, light = kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = (mask == 0).float().numpy()  # [L, H], 1 = pruned
    layers, heads = grid.shape
    fig, ax = plt.subplots(figsize=(max(3.0, 0.45 * heads + 1.5), max(2.0, 0.45 * layers + 1.2)))
    ax.imshow(grid, cmap="Greys", vmin=0, vmax=1.25, aspect="equal")
    ax.set_xticks(range(heads))
    ax.set_yticks(range(layers))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title or f"pruned heads (dark): {int(grid.sum())} of {grid.size}", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


def _ci(m: dict[str, Any], key: str) -> str:
    lo_hi = m.get(f"{key}_ci95")
    return "" if lo_hi is None else f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]"


def markdown_report(report: dict[str, Any]) -> str:
    """``report.md`` from the dict of :func:`write_clean_report` (``CleanResult.to_dict`` plus files)."""
    lines = [f"# headprune clean: `{report['model']}`", ""]
    if report.get("command"):
        lines += ["```", report["command"], "```", ""]
    lines += [f"Defense: **{report['defense']}** + {report['settings']['finetune_epochs']:g} epochs of clean "
              f"fine-tuning ({report.get('defense_choice', {}).get('reason', 'given')}). The recommendation: "
              f"{report['recommendation']}", ""]
    if report.get("edit"):
        lines += [f"Weights edited before fine-tuning: `{json.dumps(report['edit'])[:400]}`", ""]
    lines += [f"Heads pruned: **{report['heads_pruned']}** of {report['heads_total']} {report['pruned_heads']}", "",
              f"Clean accuracy on {report['report_rows']} held-out defender rows the defense never saw "
              f"({report['interval']} interval); {report['defense_rows']} rows went to the defense"
              + (f", with {report['settings']['unlabelled_rows']} unlabelled sentences"
                 if report["settings"].get("unlabelled_rows") else "") + ".", "",
              "| stage | ACC [95% CI] | LFR [95% CI] |", "|---|---|---|"]
    for stage, m in report["stages"].items():
        lines.append(f"| {stage} | {_fmt(m['acc'])}{_ci(m, 'acc')} | {_fmt(m['lfr'])}{_ci(m, 'lfr')} |")
    if report["lfr_per_label"]:
        lines += ["", "LFR with each class taken as the target (the model's origin is unknown):", "",
                  "| target | before | pruned | after |", "|---|---|---|---|"]
        for target, row in report["lfr_per_label"].items():
            lines.append(f"| {target} | {_fmt(row['before'])} | {_fmt(row['pruned'])} | {_fmt(row['after'])} |")
        if any(v is None for row in report["lfr_per_label"].values() for v in row.values()):
            lines += ["", "A target without LFR (-): every poisoned row's true label is that class, so no row can flip "
                      "to it."]
    if report["floor"].get("clean_model_lfr") is not None:
        lines += ["", f"Floor: a clean model trained like this victim has LFR {report['floor']['clean_model_lfr']:.4f} "
                  f"on its full poisoned test set ({report['floor'].get('n_poisoned_test')} rows)."]
    lines += ["", "LFR is evaluation only (computed after the defense was fixed); a lower LFR is evidence, not a "
              "certificate that the model is clean.", "", "Run time (s): " + ", ".join(
                  f"{k} {v:.1f}" for k, v in report["timings"].items()), ""]
    if report.get("compact"):
        c = report["compact"]
        lines += [f"Compacted model (`{COMPACT_DIR}/`): {c['full_mb']:.1f} MB -> {c['compact_mb']:.1f} MB, "
                  f"forward {c['full_ms']:.1f} ms -> {c['compact_ms']:.1f} ms per batch of {c['batch']} "
                  f"(x{c['speedup']:.2f}).", ""]
    versions = report["versions"].get("versions", {})
    lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v), "",
              f"![pruned heads]({HEATMAP_FILE})", "", f"![accuracy against heads pruned]({PLOT_FILE})"]
    return "\n".join(lines) + "\n"


def _median_forward_ms(model: nn.Module, batch: dict[str, torch.Tensor], repeats: int = 5) -> float:
    times = []
    with torch.inference_mode():
        model(**batch)
        for _ in range(repeats):
            start = time.perf_counter()
            model(**batch)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _write_compact(result: CleanResult, folder: Path, sentences: list[str]) -> dict[str, Any]:
    """Write the compacted model into ``folder``; its size and forward time against the exported full model."""
    from safetensors.torch import save_file
    from transformers import AutoModelForSequenceClassification

    mask = result.defense.mask
    small = compact(result.defense.model, mask).eval()
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in small.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    small.config.save_pretrained(folder)
    result.defense.tokenizer.save_pretrained(folder)
    (folder / "headprune.json").write_text(json.dumps({"mask": mask.tolist(), "format": "compact"}) + "\n")
    full = AutoModelForSequenceClassification.from_pretrained(folder.parent / "model").eval()
    batch = dict(result.defense.tokenizer(sentences, padding=True, truncation=True, max_length=128,
                                          return_tensors="pt"))
    full_ms, small_ms = _median_forward_ms(full, batch), _median_forward_ms(small, batch)
    return {"full_mb": (folder.parent / "model" / "model.safetensors").stat().st_size / 1e6,
            "compact_mb": (folder / "model.safetensors").stat().st_size / 1e6, "batch": len(sentences),
            "full_ms": full_ms, "compact_ms": small_ms, "speedup": full_ms / max(small_ms, 1e-9)}


def load_compact(folder: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a model written to ``compact/``: the config's model, compacted by the stored mask, then the
    compacted weights (safetensors, never a pickle)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = Path(folder)
    mask = torch.tensor(json.loads((path / "headprune.json").read_text())["mask"], dtype=torch.float32)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(path))
    small = compact(model, mask)
    small.load_state_dict(load_file(str(path / "model.safetensors")))
    return small.eval()


def write_clean_report(result: CleanResult, out_dir: str | os.PathLike[str], *, command: str | None = None,
                       compact_model: bool = False, sentences: list[str] | None = None, overwrite: bool = False,
                       inputs: Mapping[str, str | os.PathLike[str] | None] | None = None) -> dict[str, Path]:
    """Write ``model/``, the plots, optionally ``compact/``, then ``report.json`` and ``report.md``.

    Everything is written into a temporary folder renamed to ``out_dir`` at the end
    (:func:`~headprune.common.out_folder.staged_folder`, the rule of ``defend``): a failure or a kill leaves ``out_dir``
    as it was, and a replaced folder keeps no stale file.

    :param result: what :func:`~headprune.clean.clean_model` returned.
    :param out_dir: the output folder: new or empty, or any folder with ``overwrite``.
    :param command: the exact command line, recorded in the reports.
    :param compact_model: also write ``compact/`` and measure its size and forward speed.
    :param sentences: the batch timed for the speed change (default: 32 copies of a short sentence).
    :param overwrite: replace a non-empty ``out_dir``.
    :param inputs: ``{argument: path}`` that ``out_dir`` may not be, lie inside or contain.
    :raises OutFolderError: ``out_dir`` is a file, a link, an input's folder, or non-empty without ``overwrite``.
    """
    final = Path(out_dir)
    start = time.perf_counter()
    with staged_folder(final, overwrite=overwrite, inputs=inputs) as out:
        result.defense.save_model(out / "model")
        plot_heatmap(result.defense.mask, out / HEATMAP_FILE)
        plot_curve(result.defense, out / PLOT_FILE)
        report = result.to_dict()
        report["command"] = command
        if compact_model:
            t = time.perf_counter()
            report["compact"] = _write_compact(result, out / COMPACT_DIR, sentences or ["a gorgeous, witty film"] * 32)
            report["timings"]["compact"] = round(time.perf_counter() - t, 3)
        report["timings"]["write"] = round(time.perf_counter() - start - report["timings"].get("compact", 0.0), 3)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "report.md").write_text(markdown_report(report))
    paths = {"model": final / "model", "heatmap": final / HEATMAP_FILE, "plot": final / PLOT_FILE,
             "json": final / "report.json", "markdown": final / "report.md"}
    if compact_model:
        paths["compact"] = final / COMPACT_DIR
    return paths
