"""The ``reference_disagreement`` proxy: augmentation flips of the model that a weak clean reference does not share."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from headprune.data import LabelledTexts
from headprune.data.augment import Augmentation, augment_with_sources
from headprune.engine.evaluator import Evaluator
from headprune.envs.proxies.base import PROXIES, BackdoorProxy, _subset_texts, balanced_subset

__all__ = ["ReferenceDisagreementProxy"]


@PROXIES.register("reference_disagreement")
class ReferenceDisagreementProxy(BackdoorProxy):
    """Share of augmented clean texts on which the model's prediction flips away from its prediction on the source
    row while a weak clean reference's does not.

    Definition: ``n_per_class * C`` seeded class-balanced clean rows and their augmentations
    (:func:`~headprune.data.augment.augment_with_sources`: ``drops`` word-dropped copies, ``crops`` spans,
    ``concats`` concatenations with another of the rows; made of the rows' own words, so no trigger is added).
    The *reference* is the suspect with every encoder weight back to the public pre-trained ``reference``
    (:func:`~headprune.defenses.weight_edits.fine_mix` at ``p = 1``, the task head kept, as ``distill``'s student
    starts) fine-tuned on the proxy's clean rows for ``reference_epochs`` (lr ``reference_lr``, seeded): it has
    seen no poisoned data, so it carries no backdoor, only a weak version of the clean task. Under a mask, with
    ``m`` the model's and ``r`` the reference's predictions and ``s(j)`` the source row of augmentation ``j``::

        value = mean_j [ m(j) != m(s(j))  and  r(j) == r(s(j)) ]

    in ``[0, 1]``; 0 for a model whose prediction no augmentation changes (every head pruned: a constant model).
    Why: a trigger that clean text partly carries (syntax, style, a frequent word in a crop or a concatenation)
    flips the backdoored model where the clean reference sees nothing new. Measured at a fixed budget
    (``benchmarks/proxy_budget.py``, RESULTS.md "Issue 24 item 2"): Spearman with LFR after the terminal fine-tune
    +0.79 / +0.56 over 24-head masks (syntactic / style), but -0.48 / +0.69 over mixing schedules, so it does not rank
    mixing states. Reads the model, so it sees reset heads and mixed blocks the caller swaps in.

    Cost: construction fine-tunes a copy of the model (``reference_epochs`` over ``n_per_class * C`` rows) and runs
    the reference once; each call is one forward of the model over ``n_per_class * C * (1 + per_row)`` texts.

    :param reference: the public pre-trained model (required).
    """

    name = "reference_disagreement"
    value_range = (0.0, 1.0)

    def __init__(self, model: nn.Module, tokenizer: Any, clean: LabelledTexts, *, seed: int = 0,
                 reference: nn.Module | None = None, n_per_class: int = 32, drops: int = 2, crops: int = 2,
                 concats: int = 1, reference_epochs: float = 2.0, reference_lr: float = 5e-5, max_length: int = 128,
                 cache_size: int = 4096) -> None:
        super().__init__(model, tokenizer, clean, seed=seed, cache_size=cache_size)
        if reference is None:
            raise ValueError("the reference_disagreement proxy needs the pre-trained reference: give the env base= "
                             "(or reference=)")
        from headprune.defenses.weight_edits import fine_mix  # lazy: the defenses import the env
        from headprune.engine.finetuning import FineTuneConfig, fine_tune  # lazy: it imports the victims

        sub = _subset_texts(clean, balanced_subset(clean.labels, n_per_class, seed))
        pairs = augment_with_sources(sub.sentences, Augmentation(drops=drops, crops=crops, concats=concats),
                                     np.random.default_rng([self.seed, 2]))
        if not pairs:
            raise ValueError("the reference_disagreement proxy made no augmentation of the clean rows")
        self.sources = torch.tensor([i for i, _ in pairs], dtype=torch.long)  # [M] source row of each augmentation
        self.num_rows = len(sub)
        texts = list(sub.sentences) + [t for _, t in pairs]  # N rows, then M augmentations
        weak = copy.deepcopy(model)
        fine_mix(weak, reference, 1.0, self.seed)
        fine_tune(weak, tokenizer, sub, FineTuneConfig(epochs=float(reference_epochs), lr=float(reference_lr),
                                                       max_length=max_length, seed=self.seed), progress=False)
        ref_pred = Evaluator(weak, tokenizer, texts, batch_size=64, max_length=max_length).predictions()
        self.reference_stable = ref_pred[self.num_rows:] == ref_pred[self.sources]  # [M] bool
        self.evaluator = Evaluator(model, tokenizer, texts, batch_size=64, max_length=max_length)

    def _compute(self, mask: torch.Tensor) -> float:
        pred = self.evaluator.predictions(mask)
        flips = pred[self.num_rows:] != pred[self.sources]  # [M] bool
        return float((flips & self.reference_stable).float().mean())
