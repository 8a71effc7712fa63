"""The ``cls_attention_concentration`` proxy: how much active heads' [CLS] attention sits on one token."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from headprune.data import LabelledTexts
from headprune.envs.proxies.base import PROXIES, BackdoorProxy, _subset_texts, balanced_subset
from headprune.engine.evaluator import Evaluator
from headprune.engine.gating import HeadGate
from headprune.engine.head_stats import eager_attention
from headprune.common.modes import eval_mode

__all__ = ["ClsAttentionConcentrationProxy"]


@PROXIES.register("cls_attention_concentration")
class ClsAttentionConcentrationProxy(BackdoorProxy):
    """[CLS] attention concentration on single tokens.

    Definition: on ``n_per_class * C`` clean sentences (seeded, class-balanced), under the mask, with
    eager attention (:func:`~headprune.engine.head_stats.eager_attention`), for every ACTIVE head ``(l, h)``
    and sentence ``i`` take ``max_j a[i, l, h, 0, j]``, the largest attention weight of the [CLS]
    query (position 0) on one CONTENT token ``j`` (special tokens such as [CLS] and [SEP] and
    padding excluded, since they act as attention sinks); the value is the mean over active heads
    and sentences, in ``[0, 1]`` (0 when every head is pruned). Attention weights of a head do not
    depend on its own gate, only on the gates of earlier layers, so a pruned head is excluded from
    the mean rather than read.

    Why: backdoor heads attend from [CLS] almost exclusively to the trigger token (the observation
    behind PURE, Zhao et al. ICML 2024, and attention-based detectors such as AttenTD, Lyu et al.
    2022); a model whose active heads concentrate on single tokens is more shortcut-prone.

    Cost: one eager forward over the subset (64 sentences by default). On the MiniLM victims it is
    negatively correlated with LFR, so as defined it points the wrong way (``benchmarks/RESULTS.md``).
    """

    name = "cls_attention_concentration"

    def __init__(self, model: nn.Module, tokenizer: Any, clean: LabelledTexts, *, seed: int = 0,
                 n_per_class: int = 32, max_length: int = 128, cache_size: int = 4096) -> None:
        super().__init__(model, tokenizer, clean, seed=seed, cache_size=cache_size)
        sub = _subset_texts(clean, balanced_subset(clean.labels, n_per_class, seed))
        self.evaluator = Evaluator(model, tokenizer, sub, batch_size=64, max_length=max_length)
        special = set(int(i) for i in getattr(tokenizer, "all_special_ids", []))
        self._content: list[torch.Tensor] = []  # per batch [B, T] bool
        for batch in self.evaluator.batches:
            ids = batch.inputs["input_ids"]
            content = batch.inputs["attention_mask"].bool()
            for s in special:
                content &= ids != s
            content[:, 0] = False
            self._content.append(content)

    def per_head(self, mask: torch.Tensor) -> torch.Tensor:
        """``[L, H]`` mean over sentences of the max [CLS]->content-token weight (all heads, active or not)."""
        m = self._check(mask)
        L, H = self.shape
        model = self.model
        device = next(model.parameters()).device
        total = torch.zeros(L, H, dtype=torch.float64)
        n = 0
        with eval_mode(model), torch.inference_mode(), eager_attention(model), HeadGate(model, m.to(device)):
            for batch, content in zip(self.evaluator.iter_batches(device), self._content):
                out = model(**batch.inputs, output_attentions=True)
                cmask = content.to(device)[:, None, :]  # [B, 1, T]
                for layer, att in enumerate(out.attentions):
                    row = att[:, :, 0, :].float().masked_fill(~cmask, 0.0)  # [B, H, T]
                    total[layer] += row.max(dim=-1).values.sum(0).double().cpu()
                n += batch.size
        return (total / max(n, 1)).float()

    def _compute(self, mask: torch.Tensor) -> float:
        active = mask.bool()
        if not bool(active.any()):
            return 0.0
        return float(self.per_head(mask)[active].double().mean())
