"""The whole fine-tuning defenses (no pruning): FT, FTH and MEFT.

**FT** fine-tunes on the defender's clean rows (lr 2e-5); **FTH** the same with a higher learning rate
(1e-4, five times FT's: a larger step is what lets fine-tuning leave the backdoor's basin; our choice of
value); **MEFT** (maximum-entropy fine-tuning) first trains ``entropy_epochs`` (default 1) with the loss
``-H(p) = sum_c p_c log p_c`` (:func:`max_entropy_loss`, PURE's ``MaxEntropyLoss`` averaged over the batch
instead of summed), which drives every prediction toward uniform and so erases the confident trigger ->
target mapping, then recovers clean accuracy with the usual cross-entropy fine-tune.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from headprune.defenses.base import DEFENSES, Defense
from headprune.defenses.defense_options import DefenseOptions, option
from headprune.workbench import Workbench
from headprune.engine.finetuning import FineTuneConfig, fine_tune

__all__ = ["FineTuneDefense", "HighLRFineTuneDefense", "MaxEntropyFineTuneDefense", "MaxEntropyOptions", "NoDefense",
           "max_entropy_loss"]


def max_entropy_loss(logits: torch.Tensor, _labels: torch.Tensor) -> torch.Tensor:
    """MEFT's loss: the negative entropy of the predictive distribution, ``mean_b sum_c p log p``
    (PURE's ``MaxEntropyLoss`` sums over the batch; the mean keeps the learning-rate scale of CE)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return (logp.exp() * logp).sum(-1).mean()


@DEFENSES.register("ft")
class FineTuneDefense(Defense):
    """FT: fine-tune on the defender's clean rows, nothing pruned."""

    description = "fine-tune on clean data (lr 2e-5)"
    finetune_lr = 2e-5


@DEFENSES.register("fth")
class HighLRFineTuneDefense(Defense):
    """FTH: FT with a higher learning rate."""

    description = "fine-tune on clean data with a higher learning rate (1e-4)"
    finetune_lr = 1e-4


@dataclass(frozen=True)
class MaxEntropyOptions(DefenseOptions):
    """The options of ``meft``."""

    entropy_epochs: float = option(1.0, "epochs of the max-entropy phase before the cross-entropy fine-tune",
                                   low=0.0)


@DEFENSES.register("meft")
class MaxEntropyFineTuneDefense(Defense):
    """MEFT: ``entropy_epochs`` of :func:`max_entropy_loss`, then the cross-entropy fine-tune.

    Options: :class:`MaxEntropyOptions` (``entropy_epochs``).
    """

    description = "max-entropy fine-tuning, then cross-entropy recovery"
    options_class = MaxEntropyOptions
    option_values: MaxEntropyOptions
    finetune_lr = 2e-5

    def finetune(self, model: nn.Module, bench: Workbench, mask: torch.Tensor, config: FineTuneConfig, *,
                 progress: bool = False) -> dict[str, Any]:
        entropy_config = dataclasses.replace(config, epochs=self.option_values.entropy_epochs)
        log = fine_tune(model, bench.tokenizer, bench.train_data, entropy_config, loss_fn=max_entropy_loss,
                        progress=f"max-entropy ({self.name})" if progress else False)
        return {"entropy_phase": {"steps": log.steps, "final_loss": log.final_loss},
                **super().finetune(model, bench, mask, config, progress=progress)}


@DEFENSES.register("none")
class NoDefense(Defense):
    """No defense: the victim as it is (the reference row of tables); neither prunes nor fine-tunes."""

    description = "no defense (reference row)"

    def finetune(self, model: nn.Module, bench: Workbench, mask: torch.Tensor, config: FineTuneConfig, *,
                 progress: bool = False) -> dict[str, Any]:
        return {}
