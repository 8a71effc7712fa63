"""The ``pure_variance`` proxy: PURE's [CLS]-attention variance summed over the active heads."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from headprune.data import LabelledTexts
from headprune.envs.proxies.base import PROXIES, BackdoorProxy, _subset_texts, balanced_subset
from headprune.engine.head_stats import HeadStats, compute_head_stats

__all__ = ["PureVarianceProxy"]


@PROXIES.register("pure_variance")
class PureVarianceProxy(BackdoorProxy):
    """PURE's [CLS]-attention variance summed over the active heads.

    Definition: ``v[l, h]``, PURE's per-head score (Zhao et al., ICML 2024), exactly as
    :func:`~headprune.engine.head_stats.compute_head_stats` defines ``cls_attention_variance`` (variance
    over the first ``max_len - 1`` key positions of the [CLS] attention row, averaged over
    examples), computed ONCE for the unpruned model on ``n_per_class * C`` seeded clean sentences
    (or taken from ``head_stats`` when given, e.g. the env's cached statistics). The value is
    ``sum_{active (l, h)} v[l, h] / sum_{all} v[l, h]`` in ``[0, 1]`` (``normalise=False``: the raw
    sum). Direction: PURE prunes the LOWEST-variance heads first
    (:func:`~headprune.defenses.pure.pure_prune`),
    which leaves this value high; the sign used here (higher = more backdoor-like) is not PURE's rule
    but the measured one: over the proxy-evidence masks, the variance share kept rises with LFR
    (``benchmarks/RESULTS.md``). A reward built on it therefore favours pruning high-variance heads,
    the opposite of PURE's order; that is a finding to keep testing, not an assumption.

    Cost: construction runs :func:`compute_head_stats` once (a gradient pass and ``L*H`` batched
    ablations over the subset) unless ``head_stats`` is given; each call is a masked sum. The value
    ignores how pruning changes the attention of later layers (that is the point of "computed once").
    """

    name = "pure_variance"

    def __init__(self, model: nn.Module, tokenizer: Any, clean: LabelledTexts, *, seed: int = 0,
                 n_per_class: int = 32, head_stats: HeadStats | None = None, normalise: bool = True,
                 max_length: int = 128, cache_size: int = 4096) -> None:
        super().__init__(model, tokenizer, clean, seed=seed, cache_size=cache_size)
        if head_stats is None:
            sub = _subset_texts(clean, balanced_subset(clean.labels, n_per_class, seed))
            head_stats = compute_head_stats(model, tokenizer, sub, max_length=max_length)
        if tuple(head_stats.shape) != self.shape:
            raise ValueError(f"head_stats are {head_stats.shape}, the model is {self.shape}")
        self.variance = head_stats.cls_attention_variance.double().clone()  # [L, H]
        total = float(self.variance.sum())
        self.scale = total if normalise and total > 0 else 1.0
        self.value_range = (0.0, 1.0) if normalise else (0.0, max(total, 0.0))  # type: ignore[misc]

    def _compute(self, mask: torch.Tensor) -> float:
        return float((self.variance * mask.double()).sum() / self.scale)
