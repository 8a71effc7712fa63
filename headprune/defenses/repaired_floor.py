"""The repaired-floor rule: how far a defense may move weights when a clean fine-tune follows.

A weight edit toward the public base (Fine-mixing's ``p``, a ``HeadPrune-v0`` episode's mixing schedule) costs clean
accuracy that the protocol's fine-tune mostly gives back, so the floor is judged after a short clean fine-tune, not
before: of candidates ordered deepest first, keep the first whose edited copy of the suspect, fine-tuned briefly on
the workbench's training rows, has validation accuracy at or above the workbench's floor. Only the defender's clean
rows are read (training rows to fine-tune, held-out validation rows to score); never test rows, poisoned rows or LFR.

``finemix`` chooses its ``p`` with it (:func:`headprune.defenses.finemix.choose_mix_ratio`), and a policy defense
chooses how far along its episode to go (``state="repaired"``, :mod:`headprune.defenses.scripted`): one rule for
both, so a learned per-block schedule is held to Fine-mixing's floor.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from headprune.defenses.base import validation_rows
from headprune.defenses.weight_edits import WeightEdit
from headprune.engine.evaluator import Evaluator
from headprune.engine.finetuning import FineTuneConfig, fine_tune
from headprune.workbench import Workbench

__all__ = ["RepairCandidate", "deepest_repaired"]


@dataclass(frozen=True)
class RepairCandidate:
    """One candidate of :func:`deepest_repaired`.

    :param label: what the trace reports of it (e.g. ``{"p": 0.6}`` or ``{"step": 39}``).
    :param edit: the weight edit applied to a copy of the suspect (None: none).
    :param mask: ``[L, H]`` head gates held during the fine-tune and the scoring (None: every head on).
    """

    label: dict[str, Any]
    edit: WeightEdit | None = None
    mask: torch.Tensor | None = field(default=None, compare=False)


def deepest_repaired(bench: Workbench, candidates: Sequence[RepairCandidate], config: FineTuneConfig, *,
                     progress: str | bool = False) -> tuple[int | None, list[dict[str, Any]]]:
    """The first of ``candidates`` (ordered deepest first) whose edited copy of ``bench``'s suspect, after a short
    clean fine-tune (``config``, on ``bench.train_data``, with the candidate's pruned heads held at zero), has
    validation accuracy (``bench``'s held-out clean rows) at or above ``bench.accuracy_floor``.

    :param progress: a label to show each fine-tune's progress under (False: none).
    :return: ``(index, trace)``: the index of the kept candidate (None when none holds the floor) and
        ``trace = [{**label, "accuracy"}]`` in the order tried, stopping at the first that holds the floor.
    """
    rows = validation_rows(bench)
    trace: list[dict[str, Any]] = []
    for index, candidate in enumerate(candidates):
        work = copy.deepcopy(bench.model)
        if candidate.edit is not None:
            candidate.edit.apply(work)
        fine_tune(work, bench.tokenizer, bench.train_data, config, mask=candidate.mask,
                  progress=f"{progress} {candidate.label}" if progress else False)
        accuracy = Evaluator(work, bench.tokenizer, rows, batch_size=bench.config.eval_batch_size,
                             max_length=bench.max_length).accuracy(candidate.mask)
        trace.append({**candidate.label, "accuracy": accuracy})
        if accuracy >= bench.accuracy_floor:
            return index, trace
    return None, trace
