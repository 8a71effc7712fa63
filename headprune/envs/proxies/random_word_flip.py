"""The ``random_word_flip`` proxy: class asymmetry of the flips caused by random inserted words."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from headprune.data import LabelledTexts
from headprune.envs.proxies.base import (PROXIES, BackdoorProxy, _class_asymmetry, _subset_texts, _word_token_ids,
                                         balanced_subset)
from headprune.engine.evaluator import Evaluator

__all__ = ["RandomWordFlipProxy"]


@PROXIES.register("random_word_flip")
class RandomWordFlipProxy(BackdoorProxy):
    """Class asymmetry of the prediction changes caused by random inserted words.

    Definition: a class-balanced clean subset (``n_per_class`` per label) is perturbed once, at
    construction: each sentence gets ``variants`` copies, each with ``num_words`` words inserted at
    random word positions, the words drawn uniformly from the whole-word alphabetic vocabulary of the
    tokenizer (rare words included, as rare tokens are the classic trigger); everything seeded by
    ``seed``. Under a mask, with ``pred`` the predictions, for each class ``c``::

        rate_c = (#{perturbed x~ of a sentence with y != c : pred(x~) = c}
                  - variants * #{x with y != c : pred(x) = c}) / (variants * #{x : y != c})

    the NET share of non-``c`` inputs pushed to ``c`` by the perturbation (fixed denominators, so it
    is count-based), and the value is ``max_c rate_c - min_c rate_c`` in ``[0, 2]``.

    Why: the model's shortcut to its target is easily excited by out-of-distribution words (the
    observation behind perturbation-based detectors such as STRIP, Gao et al. 2021, and RAP, Yang et
    al. 2021, here used in the flip direction and without triggers).

    Cost: one forward (through an :class:`~headprune.engine.evaluator.Evaluator`, sorted dynamic padding)
    over ``n_per_class * C * (1 + variants)`` sentences.
    """

    name = "random_word_flip"
    value_range = (0.0, 2.0)

    def __init__(self, model: nn.Module, tokenizer: Any, clean: LabelledTexts, *, seed: int = 0,
                 n_per_class: int = 32, variants: int = 2, num_words: int = 3, max_length: int = 128,
                 cache_size: int = 4096) -> None:
        super().__init__(model, tokenizer, clean, seed=seed, cache_size=cache_size)
        if variants < 1 or num_words < 1:
            raise ValueError("variants and num_words must be >= 1")
        self.num_labels = int(model.config.num_labels)  # type: ignore[union-attr]
        self.variants = int(variants)
        sub = _subset_texts(clean, balanced_subset(clean.labels, n_per_class, seed))
        vocab = tokenizer.convert_ids_to_tokens(_word_token_ids(tokenizer).tolist())
        rng = np.random.default_rng([self.seed, 1])
        perturbed: list[str] = []
        for sentence in sub.sentences:
            for _ in range(self.variants):
                words = sentence.split()
                for w in rng.choice(len(vocab), size=num_words):
                    words.insert(int(rng.integers(0, len(words) + 1)), vocab[int(w)])
                perturbed.append(" ".join(words))
        self.labels = torch.tensor(sub.labels, dtype=torch.long)  # [n]
        self.texts = list(sub.sentences) + perturbed  # n originals, then n * variants perturbed
        self.evaluator = Evaluator(model, tokenizer, self.texts, batch_size=64, max_length=max_length)
        self.last_rates: torch.Tensor | None = None  # [C], rates of the last computed mask

    def rates(self, mask: torch.Tensor) -> torch.Tensor:
        """``[C]`` net flip rates toward each class (see the class docstring)."""
        pred = self.evaluator.predictions(self._check(mask))
        n = self.labels.numel()
        orig, pert = pred[:n], pred[n:].view(n, self.variants)
        out = []
        for c in range(self.num_labels):
            other = self.labels != c
            denom = int(other.sum()) * self.variants
            if denom == 0:
                out.append(0.0)
                continue
            to_c = int((pert[other] == c).sum()) - self.variants * int((orig[other] == c).sum())
            out.append(to_c / denom)
        return torch.tensor(out)

    def _compute(self, mask: torch.Tensor) -> float:
        rates = self.rates(mask)
        self.last_rates = rates
        return _class_asymmetry(rates.tolist())
