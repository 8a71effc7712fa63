"""Writing a :class:`~headprune.defenses.DefenseResult` to a folder: the exported model
(``save_pruned``), ``report.json``, ``report.md`` and a PNG of accuracy (and LFR) against heads pruned."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from headprune.defenses.defend import DefenseResult
from headprune.common.out_folder import staged_folder

__all__ = ["markdown_report", "plot_curve", "write_report"]

PLOT_FILE = "accuracy_vs_heads.png"


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


def markdown_report(result: DefenseResult, command: str | None = None) -> str:
    """A short Markdown summary of ``result``."""
    d = result.to_dict()
    v = d["validation"]
    lines = [f"# headprune defend: `{d['defense']}` on `{d['config']['victim']}` (seed {d['seed']})", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [
        f"- {result.details.get('description', '')}",
        f"- heads pruned: **{d['heads_pruned']}** of {result.mask.numel()} {d['pruned_heads']}",
        *_edit_lines(result.details.get("edit")),
        f"- validation accuracy ({v['rows']} defender rows): start {v['start']:.4f}, after pruning "
        f"{v['pruned']:.4f}, after fine-tuning {v['final']:.4f} (floor {v['floor']:.4f})",
        f"- wall time: {d['timings'].get('defense', 0):.1f} s (prune {d['timings'].get('prune', 0):.1f} s, "
        f"fine-tune {d['timings'].get('finetune', 0):.1f} s)",
        f"- config hash `{d['config_hash']}`",
        "",
    ]
    if d["metrics"]:
        lines += ["| stage | ACC | LFR | clean rows | poisoned rows |", "|---|---|---|---|---|"]
        for stage, m in d["metrics"].items():
            lines.append(f"| {stage} | {_fmt(m['acc'])} | {_fmt(m['lfr'])} | {m['n_clean']} | {m['n_poison']} |")
        lines += ["", "LFR is evaluation only: computed by `evaluate_defense` after the defense was fixed.", ""]
    lines.append(f"![accuracy against heads pruned]({PLOT_FILE})")
    return "\n".join(lines) + "\n"


def _edit_lines(edit: dict[str, Any] | None) -> list[str]:
    """The weight edit's one line (its scalar details: operation, counts, ``p``), or none."""
    if not edit:
        return []
    scalars = ", ".join(f"{k} {_fmt(v)}" for k, v in edit.items() if isinstance(v, (int, float, str, bool)))
    return [f"- weight edit (from the pre-trained reference, before fine-tuning): {scalars}"]


def plot_curve(result: DefenseResult, path: str | os.PathLike[str]) -> Path:
    """PNG of validation accuracy (and evaluation ACC/LFR when ``result.curve`` has them) vs heads pruned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    traj = sorted(result.trajectory, key=lambda p: p["heads_pruned"])
    ax.plot([p["heads_pruned"] for p in traj], [p["accuracy"] for p in traj], "o-", label="validation ACC")
    ax.axhline(result.validation["floor"], color="grey", ls="--", lw=1, label="floor")
    if result.curve:
        xs = [p["heads_pruned"] for p in result.curve]
        ax.plot(xs, [p["acc"] for p in result.curve], "s-", label="evaluation ACC")
        if any(p["lfr"] is not None for p in result.curve):
            ax.plot(xs, [p["lfr"] for p in result.curve], "^-", color="tab:red", label="evaluation LFR")
    ax.axvline(result.heads_pruned, color="black", lw=1, alpha=0.5)
    ax.set_xlabel("heads pruned")
    ax.set_ylabel("rate")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{result.defense} (before fine-tuning)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_report(result: DefenseResult, out_dir: str | os.PathLike[str], command: str | None = None, *,
                 overwrite: bool = False) -> dict[str, Path]:
    """Write ``model/`` (plain transformers checkpoint), ``report.json``, ``report.md`` and the plot.

    Everything is written into a temporary folder renamed to ``out_dir`` at the end
    (:func:`~headprune.common.out_folder.staged_folder`): a failure leaves ``out_dir`` as it was, and a replaced
    folder keeps no stale file of an earlier model.

    :param result: the defense result.
    :param out_dir: the output folder: new or empty, or any folder with ``overwrite``.
    :param command: the command recorded in the report.
    :param overwrite: replace a non-empty ``out_dir``.
    :raises OutFolderError: ``out_dir`` is a file, or non-empty without ``overwrite`` (before anything is written).
    """
    final = Path(out_dir)
    with staged_folder(final, overwrite=overwrite) as out:
        result.save_model(out / "model", overwrite=True)
        report = result.to_dict()
        report["command"] = command
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        plot_curve(result, out / PLOT_FILE)
        (out / "report.md").write_text(markdown_report(result, command))
    return {"model": final / "model", "json": final / "report.json", "plot": final / PLOT_FILE,
            "markdown": final / "report.md"}
