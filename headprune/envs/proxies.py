"""Trigger-agnostic backdoor proxies: how backdoor-like a classifier looks under a head mask.

A proxy maps a head mask ``[L, H]`` (1 = active, 0 = pruned) to a float; HIGHER means MORE
backdoor-like. It reads only the model and the defender's clean labelled texts: never trigger
words, poisoned data or LFR. Every proxy is deterministic for a given ``(mask, seed)``, also across
two constructions with the same arguments (all sampling uses generators seeded by ``seed``; the
model runs in eval mode, so there is no dropout). Values are memoised by mask, so the model's
weights must not change after construction (build a new proxy after fine-tuning).

Proxies, registered in :data:`PROXIES` (``@PROXIES.register(name)``; adding one is one class):

``soft_trigger`` (:class:`SoftTriggerProxy`)
    Class asymmetry of the success of a universal adversarial soft trigger (one embedding vector
    after [CLS], optimised with Adam on clean sentences).
``random_word_flip`` (:class:`RandomWordFlipProxy`)
    Class asymmetry of the net prediction flips caused by inserting random vocabulary words into
    clean sentences (forward-only over a perturbed set built once).
``cls_attention_concentration`` (:class:`ClsAttentionConcentrationProxy`)
    Mean over active heads of the largest [CLS] attention weight on a single content token.
``pure_variance`` (:class:`PureVarianceProxy`)
    PURE's [CLS]-attention variance, computed once for the unpruned model and summed over the
    mask's active heads (as a share of the total); free per call, and free to build when the caller
    passes the head statistics it already has.

Costs per call and the correlations with LFR behind :data:`DEFAULT_PROXY` are in
``benchmarks/RESULTS.md`` ("Backdoor proxies vs LFR"; ``benchmarks/proxy_evidence.py``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from headprune.data import LabelledTexts
from headprune.evaluator import Evaluator
from headprune.gating import HeadGate, head_grid_shape
from headprune.head_stats import HeadStats, compute_head_stats, eager_attention
from headprune.registry import Registry

__all__ = [
    "DEFAULT_PROXY",
    "PROXIES",
    "BackdoorProxy",
    "ClsAttentionConcentrationProxy",
    "PureVarianceProxy",
    "RandomWordFlipProxy",
    "SoftTriggerProxy",
    "make_proxy",
]

PROXIES: Registry[type[BackdoorProxy]] = Registry("proxy")
"""Every proxy class by name (a :class:`~headprune.registry.Registry`: ``PROXIES.get(name)``, ``in``, ``list``)."""


def balanced_subset(labels: Sequence[int], n_per_class: int, seed: int) -> list[int]:
    """Indices of up to ``n_per_class`` rows of each label, drawn without replacement with a
    generator seeded by ``seed``; returned sorted (so the subset does not depend on label order)."""
    y = np.asarray(list(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        take = min(n_per_class, rows.size)
        chosen.extend(int(i) for i in rng.choice(rows, size=take, replace=False))
    return sorted(chosen)


def _subset_texts(clean: LabelledTexts, idx: Sequence[int]) -> LabelledTexts:
    return LabelledTexts(tuple(clean.sentences[i] for i in idx), tuple(int(clean.labels[i]) for i in idx),
                         f"{clean.source}[proxy subset of {len(idx)}]")


class BackdoorProxy(ABC):
    """A trigger-agnostic backdoor score of ``model`` under a head mask.

    Args:
        model: a sequence classifier (any family :class:`~headprune.gating.HeadGate` supports). It is
            used in eval mode and never modified; its weights must stay fixed while the proxy lives.
        tokenizer: its tokenizer.
        clean: the defender's clean labelled texts (the only data a proxy sees).
        seed: seeds every random choice of the proxy.
        cache_size: masks whose values are memoised (0 turns memoisation off).

    Calling the proxy with a mask ``[L, H]`` (0/1; bool, int or float) returns a Python float; higher
    means more backdoor-like.
    """

    name: ClassVar[str]
    #: the interval the values lie in (documented, tested).
    value_range: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def __init__(self, model: nn.Module, tokenizer: Any, clean: LabelledTexts, *, seed: int = 0,
                 cache_size: int = 4096) -> None:
        if len(clean) == 0:
            raise ValueError("a proxy needs some clean texts")
        self.model = model
        self.tokenizer = tokenizer
        self.seed = int(seed)
        self.shape: tuple[int, int] = head_grid_shape(model)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[bytes, float] = OrderedDict()

    def _check(self, mask: torch.Tensor) -> torch.Tensor:
        m = torch.as_tensor(mask).detach().cpu()
        if tuple(m.shape) != self.shape:
            raise ValueError(f"mask must be {list(self.shape)}, got {list(m.shape)}")
        m = m.float()
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("a proxy mask must hold only 0 and 1")
        return m

    def __call__(self, mask: torch.Tensor) -> float:
        """The proxy value under ``mask`` ``[L, H]`` (1 = active head)."""
        m = self._check(mask)
        key = m.to(torch.uint8).numpy().tobytes()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = float(self._compute(m))
        if not math.isfinite(value):
            raise RuntimeError(f"{self.name} proxy returned {value}")
        if self.cache_size > 0:
            self._cache[key] = value
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return value

    @abstractmethod
    def _compute(self, mask: torch.Tensor) -> float:
        """The value under a validated float mask ``[L, H]``."""

    def clear_cache(self) -> None:
        """Forget memoised values (needed only if the model's weights were changed in place)."""
        self._cache.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, shape={self.shape})"


def _class_asymmetry(rates: Sequence[float]) -> float:
    """``max_c rate_c - min_c rate_c``."""
    return float(max(rates) - min(rates))


# ------------------------------------------------------------------------------------------------
@PROXIES.register("soft_trigger")
class SoftTriggerProxy(BackdoorProxy):
    """Class asymmetry of a universal adversarial soft trigger's success.

    Definition: for each class ``c``, ``num_vectors`` free embedding vectors ``z_c [k, d]`` are
    inserted right after the first token ([CLS]) of every clean subset sentence (``n_per_class`` per
    label, seeded) whose TRUE label is not ``c``. Starting from the embeddings of vocabulary words
    drawn with ``seed``, ``z_c`` takes ``steps`` Adam steps minimising the cross-entropy toward
    ``c``, with the model frozen and the mask applied through :class:`~headprune.gating.HeadGate`;
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

        was_training = model.training
        model.eval()
        try:
            with HeadGate(model, m):
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
        finally:
            model.train(was_training)
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


def _word_token_ids(tokenizer: Any) -> torch.Tensor:
    """Sorted ids of whole-word alphabetic ASCII vocabulary tokens (>= 2 letters, not special)."""
    special = set(getattr(tokenizer, "all_special_tokens", []))
    vocab = tokenizer.get_vocab()
    ids = sorted(i for t, i in vocab.items()
                 if t.isascii() and t.isalpha() and len(t) >= 2 and t not in special)
    if not ids:
        raise ValueError(f"{type(tokenizer).__name__}: no whole-word vocabulary tokens found")
    return torch.tensor(ids, dtype=torch.long)


# ------------------------------------------------------------------------------------------------
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

    Cost: one forward (through an :class:`~headprune.evaluator.Evaluator`, sorted dynamic padding)
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


# ------------------------------------------------------------------------------------------------
@PROXIES.register("cls_attention_concentration")
class ClsAttentionConcentrationProxy(BackdoorProxy):
    """[CLS] attention concentration on single tokens.

    Definition: on ``n_per_class * C`` clean sentences (seeded, class-balanced), under the mask, with
    eager attention (:func:`~headprune.head_stats.eager_attention`), for every ACTIVE head ``(l, h)``
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
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode(), eager_attention(model), HeadGate(model, m.to(device)):
                for batch, content in zip(self.evaluator.iter_batches(device), self._content):
                    out = model(**batch.inputs, output_attentions=True)
                    cmask = content.to(device)[:, None, :]  # [B, 1, T]
                    for layer, att in enumerate(out.attentions):
                        row = att[:, :, 0, :].float().masked_fill(~cmask, 0.0)  # [B, H, T]
                        total[layer] += row.max(dim=-1).values.sum(0).double().cpu()
                    n += batch.size
        finally:
            model.train(was_training)
        return (total / max(n, 1)).float()

    def _compute(self, mask: torch.Tensor) -> float:
        active = mask.bool()
        if not bool(active.any()):
            return 0.0
        return float(self.per_head(mask)[active].double().mean())


# ------------------------------------------------------------------------------------------------
@PROXIES.register("pure_variance")
class PureVarianceProxy(BackdoorProxy):
    """PURE's [CLS]-attention variance summed over the active heads.

    Definition: ``v[l, h]``, PURE's per-head score (Zhao et al., ICML 2024), exactly as
    :func:`~headprune.head_stats.compute_head_stats` defines ``cls_attention_variance`` (variance
    over the first ``max_len - 1`` key positions of the [CLS] attention row, averaged over
    examples), computed ONCE for the unpruned model on ``n_per_class * C`` seeded clean sentences
    (or taken from ``head_stats`` when given, e.g. the env's cached statistics). The value is
    ``sum_{active (l, h)} v[l, h] / sum_{all} v[l, h]`` in ``[0, 1]`` (``normalise=False``: the raw
    sum). Direction: PURE prunes the LOWEST-variance heads first (:func:`~headprune.baselines.defend.pure_prune`),
    which leaves this value high; the sign used here (higher = more backdoor-like) is not PURE's rule
    but the measured one: over the proxy-evidence masks, the variance share kept rises with LFR
    (``benchmarks/RESULTS.md``). A reward built on it therefore favours pruning high-variance heads,
    the opposite of PURE's order; that is a finding to keep testing, not an assumption.

    Cost: construction runs :func:`compute_head_stats` once (a gradient pass and ``L*H`` batched
    ablations over the subset) unless ``head_stats`` is given; each call is a masked sum (microseconds). The value ignores how pruning changes the attention
    of later layers (that is the point of "computed once").
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


# ------------------------------------------------------------------------------------------------
DEFAULT_PROXY: str = "pure_variance"
"""The proxy the env uses unless told otherwise: of the four, the only one whose correlation with LFR
was positive and significant on both MiniLM victims (syntactic and style), and free per step."""


def make_proxy(name: str, model: nn.Module, tokenizer: Any, clean: LabelledTexts, *, seed: int = 0,
               **kwargs: Any) -> BackdoorProxy:
    """Build the proxy registered as ``name`` in :data:`PROXIES` with its keyword arguments.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    return PROXIES.get(name)(model, tokenizer, clean, seed=seed, **kwargs)
