"""A Fine-purifying-style defense: reset the heads that moved most from the pre-trained reference but
matter least for clean accuracy.

Fine-purifying (Zhang et al., 2023, "Diffusion Theory as a Scalpel: Detecting and Purifying Poisonous
Dimensions in Pre-trained Language Models Caused by Fine-tuning") scores each parameter DIMENSION by its
fine-tuning update relative to its clean-task importance (a diagonal Hessian / Fisher estimate on clean
data): an update that is large where the clean loss is flat is unlikely to be needed for the clean task,
so it is the suspect. It resets the top-scored dimensions to their pre-trained values at a fixed ratio,
then fine-tunes on clean data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from headprune.defenses.base import DEFENSES, Defense, DefenseOutcome, unpruned_outcome
from headprune.defenses.defense_options import DefenseOptions, option
from headprune.defenses.drift import descending_order, reset_until_floor
from headprune.defenses.weight_edits import HeadReset
from headprune.workbench import Workbench
from headprune.engine.reference import head_weight_drift

__all__ = ["FinePurifyDefense", "FinePurifyOptions", "purify_scores"]


def purify_scores(drift: torch.Tensor, importance: torch.Tensor, eps: float) -> torch.Tensor:
    """``[L, H]`` suspicion: ``drift / (importance / mean(importance) + eps)`` (importance scaled to mean 1,
    so ``eps`` is scale-free; an all-zero importance leaves the drift order)."""
    imp = importance.double()
    mean = float(imp.mean())
    scaled = imp / mean if mean > 0 else torch.zeros_like(imp)
    return (drift.double() / (scaled + float(eps))).float()


@dataclass(frozen=True)
class FinePurifyOptions(DefenseOptions):
    """The options of ``finepurify``."""

    eps: float = option(0.01, "added to the mean-scaled importance, so an unimportant head's score stays finite",
                        low=0.0, low_open=True)


@DEFENSES.register("finepurify")
class FinePurifyDefense(Defense):
    """Reset heads to the pre-trained reference in order of :func:`purify_scores` (weight drift divided by
    clean-task importance), until the workbench's floor (validation accuracy) or its budget
    (:func:`~headprune.defenses.drift.reset_until_floor`); then the protocol's clean fine-tune.

    Differs from Fine-purifying (Zhang et al., 2023): the unit is a HEAD (its Q/K/V rows and output
    columns, the granularity of headprune's operations), not a parameter dimension; importance is the
    workbench's cached gate-gradient importance (``bench.head_stats.importance``: ``sum_i |dCE/dg_{l,h}|`` on the
    defender's clean rows, the one importance routine of :mod:`headprune.engine.head_stats`) instead of a
    diagonal Hessian estimate, and drift is the relative Frobenius distance instead of the squared update;
    the number of heads reset is chosen by the workbench's accuracy floor instead of a fixed ratio, so no
    per-victim ratio has to be tuned.

    Options: :class:`FinePurifyOptions` (``eps``).
    """

    name = "finepurify"
    needs_base = True
    description = "reset heads by drift / clean importance (Fine-purifying-style) until the floor"
    options_class = FinePurifyOptions
    option_values: FinePurifyOptions

    def prune(self, bench: Workbench, *, progress: bool = False) -> DefenseOutcome:
        base = self.reference(bench)
        drift = head_weight_drift(bench.model, base)
        scores = purify_scores(drift, bench.head_stats.importance, self.option_values.eps)
        heads, trajectory, end = reset_until_floor(bench, base, descending_order(scores), label="reset (finepurify)",
                                                   progress=progress)
        details: dict[str, Any] = {"operation": "reset", "episode_end": end, "drift": drift.tolist(),
                                   "scores": scores.tolist()}
        return DefenseOutcome(unpruned_outcome(bench)[0], trajectory, details, HeadReset(base, heads))
