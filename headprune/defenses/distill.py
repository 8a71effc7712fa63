"""Distillation into the public base: the suspect teaches a student that starts from the pre-trained weights.

The backdoor lives in the weights the suspect's fine-tuning wrote; its clean behaviour shows in its
predictions on clean inputs. :class:`DistillDefense` keeps the second and drops the first: the student is
the suspect with EVERY encoder weight (embeddings included) back to the public pre-trained reference
(:class:`~headprune.defenses.weight_edits.FineMix` with ``p = 1``; the task head, absent from the
reference, starts as the suspect's), and the protocol's fine-tune trains it on soft targets: the suspect's
predicted class probabilities on the defender's clean training rows and on trigger-agnostic augmentations
of them (:func:`~headprune.data.augment.augment_sentences`: word drops, crops, concatenations of two rows,
made of the rows' own words). No training input carries the trigger, so the teacher's backdoor is not
among what it teaches; the augmentations give it many more inputs than the rows' labels alone, which is
what lets a student that starts from the base come within about 2 points of the suspect's clean accuracy
with a few hundred rows (issue 13 showed that plain fine-tuning of the base on 616 rows does not, which is
why fine-mixing's floor rule caps ``p`` well below 1 there).

Measured (benchmarks/RESULTS.md, "Distillation into the public base"): at the default protocol it removes
most of an INSERTED trigger (AddSent, BadNets: 10-12 LFR points above the clean model, where every other
defense leaves it), but on natural triggers (syntactic, style) it does worse than fine-mixing: such a
trigger is partly present in clean text, and the teacher's soft predictions carry its effect.

On the defender's own rows the target is ``alpha * one_hot(label) + (1 - alpha) * teacher``; on the
augmentations it is the teacher's prediction. The defense's learning rate is 5e-5 (the student relearns the
task from the base, as a victim's fine-tune does), the protocol's epochs and seed apply; the teacher runs
once, unpruned, in eval mode. Sees only the workbench's clean training rows, the suspect and the public base.

Not from the paper this project follows. It is close in spirit to knowledge-distillation defenses, but the
roles differ from Neural Attention Distillation (Li et al., ICLR 2021), where a fine-tuned copy teaches the
BACKDOORED model's attention: here the backdoored model is the teacher and only its output on clean-looking
inputs is used, never its weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from headprune.data import LabelledTexts
from headprune.data.augment import Augmentation, augment_sentences
from headprune.defenses.base import DEFENSES, Defense, DefenseOutcome, unpruned_outcome
from headprune.defenses.weight_edits import FineMix
from headprune.workbench import Workbench
from headprune.engine.evaluator import Evaluator
from headprune.engine.finetuning import FineTuneConfig, fine_tune

__all__ = ["DistillDefense", "check_alpha", "distillation_targets"]


def check_alpha(alpha: object) -> float:
    """``alpha`` as a float if it is a number in ``[0, 1]``; ValueError naming the option otherwise."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"distill option alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def distillation_targets(teacher: nn.Module, bench: Workbench, augmentation: Augmentation, alpha: float,
                         seed: int) -> tuple[LabelledTexts, torch.Tensor]:
    """The student's training texts and their soft targets.

    :param teacher: the suspect (run unpruned, in eval mode).
    :param bench: supplies the defender's clean training rows (``bench.train_data``), tokenizer and lengths.
    :param augmentation: how many augmented texts per row.
    :param alpha: weight of the true label on the defender's own rows (0: teacher only, 1: label only).
    :param seed: seeds the augmentations.
    :return: ``(texts, targets)``: the ``N`` rows followed by their ``M`` augmentations (labels: the rows'
        own, then the teacher's argmax; the loss reads only ``targets``) and ``[N + M, C]`` probabilities.
    """
    alpha = check_alpha(alpha)
    rows = bench.train_data
    augmented = augment_sentences(rows.sentences, augmentation, np.random.default_rng(seed))
    texts = list(rows.sentences) + augmented
    evaluator = Evaluator(teacher, bench.tokenizer, texts, batch_size=bench.config.eval_batch_size,
                          max_length=bench.max_length)
    targets = torch.softmax(evaluator.logits().float(), dim=-1)  # [N + M, C]
    own = torch.nn.functional.one_hot(torch.tensor(rows.labels, dtype=torch.long), targets.shape[1]).float()
    targets[: len(rows)] = alpha * own + (1.0 - alpha) * targets[: len(rows)]
    labels = list(rows.labels) + targets[len(rows):].argmax(dim=-1).tolist()
    data = LabelledTexts(texts, labels, source=f"{rows.source} + {len(augmented)} augmentations")
    return data, targets


@DEFENSES.register("distill")
class DistillDefense(Defense):
    """The public base as a student of the suspect on augmented clean rows (see the module docstring).

    Options: ``drops`` (3), ``crops`` (3), ``concats`` (2): augmented texts per row
    (:class:`~headprune.data.augment.Augmentation`); ``alpha`` (0.5): the true label's weight on the
    defender's own rows; both are checked at construction (:attr:`augmentation` holds the counts,
    :attr:`alpha` the weight). The teacher is :meth:`teacher` (the suspect). No floor: the student starts
    from the base, below any floor; its fine-tune (the distillation) recovers the accuracy.
    """

    name = "distill"
    description = "distil the suspect into the public pre-trained model on augmented clean rows"
    default_options = {"drops": 3, "crops": 3, "concats": 2, "alpha": 0.5}
    fast_options = {"drops": 1, "crops": 1, "concats": 0}
    finetune_lr = 5e-5
    holds_floor = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # the options checked at construction, before any work
        self.augmentation = Augmentation(drops=self.option("drops"), crops=self.option("crops"),
                                         concats=self.option("concats"))
        self.alpha = check_alpha(self.option("alpha"))

    def teacher(self, bench: Workbench) -> nn.Module:
        """The model whose predictions the student learns: the suspect (``bench.model``). A subclass may give
        another trigger-agnostic teacher (``benchmarks/distill_teacher_probe.py``: finemix's output)."""
        return bench.model

    def prune(self, bench: Workbench, *, progress: bool = False) -> DefenseOutcome:
        mask, trajectory, _ = unpruned_outcome(bench)
        return DefenseOutcome(mask, trajectory, {}, FineMix(self.reference(bench), 1.0, bench.base_seed, True))

    def finetune(self, model: nn.Module, bench: Workbench, mask: torch.Tensor, config: FineTuneConfig, *,
                 progress: bool = False) -> dict[str, Any]:
        data, targets = distillation_targets(self.teacher(bench), bench, self.augmentation, self.alpha, config.seed)
        log = fine_tune(model, bench.tokenizer, data, config, mask=mask, soft_targets=targets,
                        progress="fine-tune (distill)" if progress else False)
        return {"finetune": {"steps": log.steps, "final_loss": log.final_loss, "lr": config.lr,
                             "texts": len(data), "augmented": len(data) - len(bench.train_data)}}
