"""``purify``: Fine-mixing, then distillation of the mixed model into the public base.

Two trigger-agnostic defenses, each incomplete alone, composed (RESULTS.md, "Purification"):

1. **Teacher** (:class:`~headprune.defenses.finemix.FineMixDefense`): each encoder weight of the suspect goes back
   to the public pre-trained model's with probability ``p`` (the largest ``p`` whose short clean fine-tune holds
   the floor on the defender's validation rows), then the protocol's clean fine-tune. It removes much of a
   natural trigger (syntax, style) but leaves an inserted one (a rare word, a fixed sentence) largely intact.
2. **Student** (:class:`~headprune.defenses.distill.DistillDefense`): the suspect with EVERY encoder weight back to
   the public base learns the teacher's soft predictions on the defender's clean rows and on augmentations made of
   their own words. No training text carries a trigger, so an inserted trigger, which the mixed teacher still
   obeys, is never taught; the student starts from weights the attacker never touched.

The student inherits what the teacher does on ordinary text; so the cleaner the teacher, the cleaner the student:
with the suspect as the teacher (``distill``), a natural trigger's association travels through the soft labels;
with Fine-mixing's output, much less of it does. Reported per stage: ``details["teacher"]`` holds the teacher's
validation accuracy and ``p``; ``defend`` evaluates the stage ``"teacher: finemix"`` beside the final model.

Not the Fine-purifying defense (:mod:`~headprune.defenses.finepurify`, Zhang et al. 2023), which resets the
dimensions that drifted most; the name says what it does for a user: it purifies the model through the base.
Sees only the defender's clean rows, the suspect and the public base; never triggers, poisoned data or LFR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headprune.defenses.base import DEFENSES, Defense
from headprune.defenses.defense_options import option
from headprune.defenses.distill import DistillDefense, DistillOptions, check_teacher
from headprune.defenses.finemix import FineMixDefense

__all__ = ["PurifyDefense", "PurifyOptions"]


@dataclass(frozen=True)
class PurifyOptions(DistillOptions):
    """The options of ``purify``: :class:`~headprune.defenses.distill.DistillOptions` with Fine-mixing as the
    teacher and cheaper defaults (5 augmentations per row, 2 epochs of distillation)."""

    teacher: str | Defense = option("finemix", "the model that teaches: a defense's name (from Python also a Defense "
                                               "object), whose cleaned output teaches, 'suspect' (the suspect "
                                               "itself), or policy:<run folder or model.zip> (a trained agent's "
                                               "episode, then the protocol's fine-tune)", check=check_teacher)
    teacher_options: dict[str, Any] = option({}, "the options of the teacher (checked against its own options)")
    drops: int = option(2, "augmented copies per row with words dropped", low=0)
    crops: int = option(2, "augmented crops per row", low=0)
    concats: int = option(1, "augmented concatenations per row with another row", low=0)
    student_epochs: float | None = option(2.0, "epochs of the distillation (None: the protocol's fine-tune "
                                               "epochs)", low=0.0, low_open=True)


@DEFENSES.register("purify")
class PurifyDefense(DistillDefense):
    """``distill`` with Fine-mixing's output as the teacher (see the module docstring); every option of
    :class:`~headprune.defenses.distill.DistillDefense` applies (``teacher`` too: another defense's output).

    Defaults differ from ``distill``'s in cost only: 5 augmentations per row (2 drops, 2 crops, 1
    concatenation, not 3 / 3 / 2) and 2 epochs of distillation (not the protocol's 3): about 2.4x fewer
    tokens than the probe it came from (``benchmarks/bench_purify.py`` measures both in one run).
    """

    name = "purify"
    description = "Fine-mixing, then distil the mixed model into the public pre-trained model on augmented clean rows"
    options_class = PurifyOptions
    fast_options = {**DistillDefense.fast_options, "student_epochs": 1.0,
                    "teacher_options": dict(FineMixDefense.fast_options)}
