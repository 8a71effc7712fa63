"""The ``soft_trigger`` proxy: class asymmetry of a universal adversarial soft trigger's success."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from headprune.data import LabelledTexts
from headprune.envs.proxies.base import (PROXIES, BackdoorProxy, _class_asymmetry, _subset_texts, _word_token_ids,
                                         balanced_subset)
from headprune.engine.gating import HeadGate
from headprune.common.modes import eval_mode

__all__ = ["SoftTriggerProxy"]


@PROXIES.register("soft_trigger")
class SoftTriggerProxy(BackdoorProxy):
    """Class asymmetry of a universal adversarial soft trigger's success.

    Definition: for each class ``c``, ``num_vectors`` free embedding vectors ``z_c [k, d]`` are
    inserted right after the first token ([CLS]) of every clean subset sentence (``n_per_class`` per
    label, seeded) whose TRUE label is not ``c``. Starting from the embeddings of vocabulary words
    drawn with ``seed``, ``z_c`` takes ``steps`` Adam steps minimising the cross-entropy toward
    ``c``, with the model frozen and the mask applied through :class:`~headprune.engine.gating.HeadGate`;
    step ``t`` uses the learning rate ``lr * lr_growth**t`` times the mean token-embedding norm (a
    geometric schedule that sweeps the trigger's strength from negligible to large, so the same
    defaults work for models of very different sensitivity), and each vector is projected back to
    the largest token-embedding norm after a step. Before each step and after the last one
    (``steps + 1`` points, the :meth:`rate_curve`)::

        rate_c = #{non-c sentences predicted c with z_c, not predicted c without it}
                 / #{non-c sentences not predicted c without it}

    (0 when the denominator is 0): a count over the sentences the trigger could flip. ``rates`` is
    the mean of the curve (``aggregate="mean"``, an area under the success-vs-effort curve: how
    EARLY each class becomes reachable) or its last point (``"final"``), and the value is
    ``max_c rate_c - min_c rate_c``, in ``[0, 1]``. Counting only flippable sentences keeps the value
    from rewarding a merely biased model: a model that predicts one class for everything (e.g. every
    head pruned) scores 0, not 1. All classes are optimised in ONE batch (their triggers are
    independent and Adam is per-coordinate, so this equals separate runs).

    Why: a backdoored model has a low-effort route to its target class (a trigger), so clean inputs
    are flipped toward the target more easily than away from it (the intuition behind trigger
    inversion, e.g. DBS, Shen et al. 2022, and universal adversarial triggers, Wallace et al. 2019);
    the asymmetry needs no knowledge of the target. The learning rate grows per step because a
    constant one does not transfer between models (``benchmarks/RESULTS.md``).

    Cost: ``steps`` forward+backward passes (gradients to the trigger only, no parameter
    gradients) and two forwards over ``n_per_class * C`` sentences of at most ``max_length`` tokens.

    Args:
        n_per_class: clean sentences per label in the subset.
        num_vectors: trigger length ``k``.
        steps: Adam steps.
        lr: first step's learning rate, in units of the mean token-embedding norm.
        lr_growth: learning-rate factor per step (1 = constant).
        aggregate: ``"mean"`` (over the rate curve) or ``"final"`` (last point).
        max_length: truncation (trigger included).
    """

    name = "soft_trigger"

    def __init__(self, model: nn.Module, tokenizer: Any, clean: LabelledTexts, *, seed: int = 0,
                 n_per_class: int = 16, num_vectors: int = 1, steps: int = 8, lr: float = 0.002,
                 lr_growth: float = 2.0, aggregate: str = "mean", max_length: int = 32,
                 cache_size: int = 4096) -> None:
        super().__init__(model, tokenizer, clean, seed=seed, cache_size=cache_size)
        if steps < 0 or num_vectors < 1 or lr < 0 or lr_growth <= 0:
            raise ValueError("need steps >= 0, num_vectors >= 1, lr >= 0 and lr_growth > 0")
        if aggregate not in ("mean", "final"):
            raise ValueError(f"aggregate must be 'mean' or 'final', got {aggregate!r}")
        self.steps, self.num_vectors, self.lr = int(steps), int(num_vectors), float(lr)
        self.lr_growth, self.aggregate = float(lr_growth), aggregate
        self.num_labels = int(model.config.num_labels)  # type: ignore[union-attr]
        idx = balanced_subset(clean.labels, n_per_class, seed)
        sub = _subset_texts(clean, idx)
        # rows: (sentence i, target class c) for every class c != y_i
        rows = [(i, c) for c in range(self.num_labels) for i in range(len(sub)) if sub.labels[i] != c]
        if not rows:
            raise ValueError("the clean subset has no sentence outside some class")
        enc = tokenizer([sub.sentences[i] for i, _ in rows], truncation=True,
                        max_length=max_length - self.num_vectors, padding=True, return_tensors="pt")
        self.input_ids: torch.Tensor = enc["input_ids"]  # [R, T]
        self.attention_mask: torch.Tensor = enc["attention_mask"]  # [R, T]
        self.targets = torch.tensor([c for _, c in rows], dtype=torch.long)  # [R]
        self.counts = torch.bincount(self.targets, minlength=self.num_labels)  # [C] = N_c
        emb = model.get_input_embeddings()  # type: ignore[operator]
        weight = emb.weight.detach()
        norms = weight.norm(dim=-1)
        self.mean_norm, self.max_norm = float(norms.mean()), float(norms.max())
        words = _word_token_ids(tokenizer)
        gen = torch.Generator().manual_seed(self.seed)
        pick = words[torch.randint(len(words), (self.num_labels, self.num_vectors), generator=gen)]
        self.init = weight[pick].clone().float()  # [C, k, d]
        self._insert_at = 1 if getattr(tokenizer, "cls_token_id", None) is not None else 0
        self.last_rates: torch.Tensor | None = None  # [C], rates of the last computed mask
        self.last_curve: torch.Tensor | None = None  # [steps + 1, C], its rate curve

    def rate_curve(self, mask: torch.Tensor) -> torch.Tensor:
        """``[steps + 1, C]``: ``rate_c`` (see the class docstring) of the trigger before each Adam step
        and after the last one, under ``mask``."""
        model = self.model
        device = next(model.parameters()).device
        m = self._check(mask).to(device)
        ids, att = self.input_ids.to(device), self.attention_mask.to(device)
        targets = self.targets.to(device)
        emb_layer = model.get_input_embeddings()  # type: ignore[operator]
        trigger = self.init.to(device).clone().requires_grad_(True)  # [C, k, d]
        opt = torch.optim.Adam([trigger], lr=self.lr * self.mean_norm)
        p = self._insert_at
        k = self.num_vectors
        att_full = torch.cat([att[:, :p], att.new_ones(att.shape[0], k), att[:, p:]], dim=1)  # [R, T+k]
        group_w = (1.0 / self.counts.clamp(min=1).float()).to(device)[targets]  # mean CE per class
        preds: list[torch.Tensor] = []  # each [R]

        def forward(trig: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                tok = emb_layer(ids)  # [R, T, d]
            x = torch.cat([tok[:, :p], trig[targets].to(tok.dtype), tok[:, p:]], dim=1)  # [R, T+k, d]
            return model(inputs_embeds=x, attention_mask=att_full).logits.float()  # [R, C]

        with eval_mode(model), HeadGate(model, m):
            with torch.inference_mode():
                plain = model(input_ids=ids, attention_mask=att).logits.argmax(-1)  # [R]
            with torch.enable_grad():
                for step in range(self.steps):
                    opt.param_groups[0]["lr"] = self.lr * self.mean_norm * self.lr_growth**step
                    logits = forward(trigger)
                    preds.append(logits.detach().argmax(-1))
                    loss = (F.cross_entropy(logits, targets, reduction="none") * group_w).sum()
                    (grad,) = torch.autograd.grad(loss, trigger)
                    trigger.grad = grad
                    opt.step()
                    with torch.no_grad():
                        n = trigger.norm(dim=-1, keepdim=True)
                        trigger.mul_(torch.clamp(self.max_norm / n.clamp(min=1e-12), max=1.0))
            with torch.inference_mode():
                preds.append(forward(trigger.detach()).argmax(-1))
        flippable = (plain != targets).cpu()  # not already predicted as the target class without trigger
        t = self.targets
        den = torch.bincount(t[flippable], minlength=self.num_labels).float()  # [C]
        curve = []
        for pred in preds:
            flipped = flippable & (pred.cpu() == t)
            num = torch.bincount(t[flipped], minlength=self.num_labels).float()
            curve.append(torch.where(den > 0, num / den.clamp(min=1), torch.zeros(())))
        return torch.stack(curve)

    def rates(self, mask: torch.Tensor) -> torch.Tensor:
        """``[C]`` per-class rates: the mean of :meth:`rate_curve` over its ``steps + 1`` points
        (``aggregate="mean"``) or its last point (``aggregate="final"``)."""
        return self._aggregate(self.rate_curve(mask))

    def _aggregate(self, curve: torch.Tensor) -> torch.Tensor:
        return curve.mean(0) if self.aggregate == "mean" else curve[-1]

    def _compute(self, mask: torch.Tensor) -> float:
        curve = self.rate_curve(mask)
        self.last_curve = curve
        self.last_rates = self._aggregate(curve)
        return _class_asymmetry(self.last_rates.tolist())
