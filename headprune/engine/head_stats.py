"""Per-head statistics of a classifier on clean data, the features of head-pruning defenses.

:func:`compute_head_stats` makes ONE pass over the clean texts (the batches of an
:class:`~headprune.engine.evaluator.Evaluator`, heads gated by its :class:`~headprune.engine.gating.HeadGate`) that
collects, for every head ``(l, h)`` of the ``[L, H]`` grid:

``importance``
    Gate-gradient importance of Michel et al. (2019), ``sum_i |dCE(x_i, y_i)/dg_{l,h}|``: the
    absolute value is taken PER EXAMPLE (per-example gates ``[B, L, H]`` in one backward; exact,
    because examples do not interact in an eval-mode forward) and summed over the examples, with the
    cross-entropy against the defender's clean labels. One gate per head (the paper's public code
    tied whole layers; we do not). Not normalised per layer.
``cls_attention_variance``
    PURE's attention-head score (Zhao et al., ICML 2024; ``PURE/attention_head_pruning.py``,
    ``compute_cls_variance``). PURE pads every input to ``max_len = 128``, reshapes each head's
    attention ``[T, T]`` row-major to ``T * T`` and takes ``torch.var`` (unbiased) of the first
    ``max_len - 1`` entries, which are the first 127 keys of the ``[CLS]`` (position 0) query row,
    zero weights on padded keys included; it then averages over examples. So for example ``i`` and
    ``W = max_length - 1``::

        a = attention[i, h, 0, :W]   (zero-extended to W keys)
        v_i = (sum(a**2) - sum(a)**2 / W) / (W - 1)

    and the score is the mean of ``v_i`` over examples. It is a variance over KEY POSITIONS of the
    [CLS] attention row (how concentrated [CLS] attention is), not a variance over examples: for
    inputs of at most ``W`` tokens ``sum(a) = 1`` and ``v_i = (||a||^2 - 1/W) / (W - 1)``. Computed
    here from dynamically padded batches, which gives PURE's value exactly (pad keys get weight 0).
    PURE averages per-batch means (its last, smaller batch is over-weighted); we average over
    examples. Position 0 is [CLS] only for encoders with right padding (BERT family); for decoders
    the number is computed the same way but means little.
``attention_entropy``
    Entropy (nats) of each attention distribution over the non-pad keys, averaged over all non-pad
    query positions of all examples (pooled).
``output_norm``
    L2 norm of the head's slice of the output projection's input (after gating), averaged over all
    non-pad token positions of all examples (pooled). Captured by a read-only forward pre-hook that
    runs after the gate's hook.
``ablation_acc_drop``
    Accuracy under the current mask minus accuracy with that head also gated off; all ``L * H``
    ablations are scored in batched forwards by :meth:`Evaluator.logits_for_masks`.

``weight_drift``, ``activation_drift`` (optional)
    How far the head moved from the public pre-trained reference (:mod:`headprune.engine.head_drift`); present
    only when the statistics were computed with a reference (``compute_head_stats(..., base=...)``).
    They are not in :data:`FEATURE_NAMES` (the features every :class:`HeadStats` has, which the
    committed agents were trained on) but in :data:`ALL_FEATURE_NAMES`.

Everything is computed under an optional current mask ``[L, H]``; heads whose gate is 0 get 0 for
every statistic (their attention is still computed, since gating acts on the head outputs).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from headprune.data import LabelledTexts
from headprune.engine.evaluator import Evaluator
from headprune.engine.head_drift import DRIFT_FEATURE_NAMES, drift_statistics
from headprune.common.modes import eval_mode, model_mode

__all__ = ["ALL_FEATURE_NAMES", "DRIFT_FEATURE_NAMES", "FEATURE_NAMES", "HeadStats", "compute_head_stats", "eager_attention", "gate_gradient_importance"]

FEATURE_NAMES: tuple[str, ...] = (
    "importance",
    "cls_attention_variance",
    "attention_entropy",
    "output_norm",
    "ablation_acc_drop",
)
"""The statistics every :class:`HeadStats` holds (the observation columns of a ``prune`` env by default)."""

ALL_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES + DRIFT_FEATURE_NAMES
"""Every statistic a :class:`HeadStats` may hold: :data:`FEATURE_NAMES`, then the drift statistics."""


@dataclass
class HeadStats:
    """Per-head statistics, each a float tensor ``[L, H]`` (see the module docstring).

    Attributes:
        weight_drift, activation_drift: the drift statistics (``None`` without a reference).
        base_accuracy: accuracy under the mask the statistics were computed with.
        n_examples: clean examples used.
    """

    importance: torch.Tensor
    cls_attention_variance: torch.Tensor
    attention_entropy: torch.Tensor
    output_norm: torch.Tensor
    ablation_acc_drop: torch.Tensor
    base_accuracy: float = math.nan
    n_examples: int = 0
    weight_drift: torch.Tensor | None = None
    activation_drift: torch.Tensor | None = None

    names: ClassVar[tuple[str, ...]] = FEATURE_NAMES

    def __post_init__(self) -> None:
        present = [n for n in DRIFT_FEATURE_NAMES if getattr(self, n) is not None]
        if present and len(present) != len(DRIFT_FEATURE_NAMES):
            raise ValueError(f"give every drift statistic {list(DRIFT_FEATURE_NAMES)} or none, got {present}")
        shapes = {tuple(getattr(self, n).shape) for n in self.available}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"every statistic must be the same [L, H] shape, got {sorted(shapes)}")

    @property
    def shape(self) -> tuple[int, int]:
        """``(L, H)``."""
        L, H = self.importance.shape
        return int(L), int(H)

    @property
    def available(self) -> tuple[str, ...]:
        """The statistics this object holds: :data:`FEATURE_NAMES`, plus the drift ones when present."""
        return FEATURE_NAMES + (DRIFT_FEATURE_NAMES if self.has_drift else ())

    @property
    def has_drift(self) -> bool:
        """Whether the drift statistics (computed against a reference) are present."""
        return self.weight_drift is not None

    def as_features(self, names: tuple[str, ...] | None = None) -> torch.Tensor:
        """``[L * H, F]`` float tensor, row ``l * H + h`` for head ``(l, h)``, columns ``names``
        (default :attr:`names`, i.e. :data:`FEATURE_NAMES`).

        :raises ValueError: a name this object does not hold (e.g. a drift statistic without a reference).
        """
        names = self.names if names is None else tuple(names)
        missing = [n for n in names if n not in self.available]
        if missing:
            raise ValueError(f"head statistics {missing} are not available (have {list(self.available)}; the drift "
                             "statistics need a pre-trained reference, base=)")
        return torch.stack([getattr(self, n).float() for n in names], dim=-1).reshape(-1, len(names))

    def normalised(self) -> HeadStats:
        """A copy with every statistic z-scored over the ``L * H`` heads (population std; a constant
        statistic becomes all zeros)."""
        out: dict[str, torch.Tensor] = {}
        for n in self.available:
            t = getattr(self, n).double()
            std = t.std(unbiased=False)
            z = (t - t.mean()) / std if float(std) > 0 else torch.zeros_like(t)
            out[n] = z.float()
        return HeadStats(**out, base_accuracy=self.base_accuracy, n_examples=self.n_examples)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (float32 values round-trip exactly through :meth:`from_dict`)."""
        return {
            "names": list(self.available),
            "shape": list(self.shape),
            "base_accuracy": self.base_accuracy,
            "n_examples": self.n_examples,
            "stats": {n: getattr(self, n).float().tolist() for n in self.available},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadStats:
        """Inverse of :meth:`to_dict`."""
        missing = [n for n in cls.names if n not in data["stats"]]
        if missing:
            raise ValueError(f"cached head stats lack {missing}")
        names = cls.names + tuple(n for n in DRIFT_FEATURE_NAMES if n in data["stats"])
        tensors = {n: torch.tensor(data["stats"][n], dtype=torch.float32) for n in names}
        return cls(**tensors, base_accuracy=float(data.get("base_accuracy", math.nan)),
                   n_examples=int(data.get("n_examples", 0)))

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON."""
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> HeadStats:
        """Read a file written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HeadStats):
            return NotImplemented
        if self.available != other.available:
            return False
        same = all(torch.equal(getattr(self, n), getattr(other, n)) for n in self.available)
        acc_same = self.base_accuracy == other.base_accuracy or (
            math.isnan(self.base_accuracy) and math.isnan(other.base_accuracy))
        return same and acc_same and self.n_examples == other.n_examples


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Temporarily switch ``model`` to the eager attention implementation (the only one that returns
    attention weights in transformers 5.x) and restore the previous one afterwards."""
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    if previous in (None, "eager"):
        yield
        return
    model.set_attn_implementation("eager")  # type: ignore[operator]
    try:
        yield
    finally:
        model.set_attn_implementation(previous)  # type: ignore[operator]


def _ablation_masks(base: torch.Tensor) -> torch.Tensor:
    """``[1 + L*H, L, H]``: ``base`` first, then ``base`` with head ``i`` (row-major) set to 0."""
    L, H = base.shape
    masks = base.unsqueeze(0).repeat(1 + L * H, 1, 1)
    flat = masks.view(1 + L * H, L * H)
    idx = torch.arange(L * H)
    flat[idx + 1, idx] = 0.0
    return masks


def _batch_gate_gradient(ev: Evaluator, batch: Any, base: torch.Tensor, labels: torch.Tensor, device: torch.device,
                         **forward_kwargs: Any) -> tuple[torch.Tensor, Any]:
    """Gate-gradient importance of one batch: ``sum_i |dCE(x_i, y_i)/dg_{l,h}|`` through per-example gates
    ``[B, L, H]`` set to ``base`` (inside ``ev.gate``'s context). Returns the ``[L, H]`` float64 CPU sum
    and the model output (for callers that read more of it, e.g. attentions)."""
    L, H = base.shape
    gates = ev.gate.differentiable_gates(initial=base.expand(batch.size, L, H))  # [B, L, H] leaf
    out = ev.model(**batch.inputs, **forward_kwargs)
    loss = F.cross_entropy(out.logits.float(), labels[batch.indices].to(device), reduction="sum")
    (grad,) = torch.autograd.grad(loss, gates)
    return grad.abs().sum(0).double().cpu(), out


def gate_gradient_importance(
    model: nn.Module,
    tokenizer: Any,
    texts: LabelledTexts,
    *,
    mask: torch.Tensor | None = None,
    dropout: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    max_length: int = 128,
) -> torch.Tensor:
    """``[L, H]`` gate-gradient importance (the ``importance`` statistic, alone) of every head on labelled
    clean ``texts`` under ``mask``, in the model's own attention implementation and without the other
    statistics and the ``L * H`` ablations (cheap enough to re-estimate every few pruning steps).

    :param mask: current ``[L, H]`` mask; pruned heads get importance 0.
    :param dropout: run the forwards in train mode so dropout samples (MC dropout); ``seed`` fixes the
        dropout masks, so one ``(seed, dropout)`` gives one deterministic pass.
    :param batch_size: examples per forward.
    :param max_length: truncation length.
    The model's training flag is restored and no ``.grad`` accumulates on its parameters.
    """
    ev = Evaluator(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    labels = ev.require_labels()
    L, H = ev.head_shape
    base = torch.ones(L, H) if mask is None else mask.detach().float().cpu().reshape(L, H)
    device = next(model.parameters()).device
    total = torch.zeros(L, H, dtype=torch.float64)
    try:
        with model_mode(model, training=bool(dropout)), torch.random.fork_rng(devices=[]), ev.gate:
            torch.manual_seed(seed)
            for batch in ev.iter_batches(device):
                total += _batch_gate_gradient(ev, batch, base, labels, device)[0]
    finally:
        ev.gate.set_mask(None)
    return (total * (base != 0)).float()


# over 60 lines: every statistic comes from one forward/backward pass per batch, gathered in one loop
def compute_head_stats(
    model: nn.Module,
    tokenizer: Any,
    texts: LabelledTexts,
    *,
    mask: torch.Tensor | None = None,
    batch_size: int = 32,
    max_length: int = 128,
    base: nn.Module | None = None,
) -> HeadStats:
    """Per-head statistics of ``model`` on labelled clean ``texts`` under head ``mask``.

    One gradient pass (importance, [CLS]-attention variance, entropy and output norms together), then
    batched ablation passes. The model's training flag, attention implementation and parameters are
    left as they were; no ``.grad`` is accumulated on the parameters.

    Args:
        texts: a :class:`headprune.data.LabelledTexts` of clean examples (labels required).
        mask: ``[L, H]`` current mask (``None``: all heads).
        batch_size: examples per forward in the gradient pass.
        max_length: truncation length; also PURE's ``max_len`` (window ``max_length - 1`` keys).
        base: the pre-trained reference; when given, the drift statistics are added
            (:func:`headprune.engine.head_drift.drift_statistics`, ungated forwards; pruned heads get 0).

    Returns:
        :class:`HeadStats` with ``[L, H]`` tensors on the CPU.
    """
    reference = base
    ev = Evaluator(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    labels = ev.require_labels()
    if len(ev) == 0:
        raise ValueError("no texts to compute head statistics on")
    L, H = ev.head_shape
    base = torch.ones(L, H) if mask is None else mask.detach().float().cpu()
    if tuple(base.shape) != (L, H):
        raise ValueError(f"mask must be [{L}, {H}], got {tuple(base.shape)}")
    window = max_length - 1
    if window < 2:
        raise ValueError("max_length must be at least 3")
    device = next(model.parameters()).device

    importance = torch.zeros(L, H, dtype=torch.float64)
    cls_var = torch.zeros(L, H, dtype=torch.float64)
    entropy = torch.zeros(L, H, dtype=torch.float64)
    norm_sum = torch.zeros(L, H, dtype=torch.float64)
    n_tokens = 0
    eager_logits = torch.empty(len(ev), ev.num_labels)
    valid: dict[str, torch.Tensor] = {}

    def capture(layer: int, heads: int, head_dim: int):
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach()  # [B, T, H*d], already gated
            per_head = x.unflatten(-1, (heads, head_dim)).float().norm(dim=-1)  # [B, T, H]
            norm_sum[layer] += per_head[valid["tokens"]].sum(0).double().cpu()
        return hook

    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        with eval_mode(model), eager_attention(model), ev.gate:
            # registered after the gate's hooks, so they observe the gated input
            handles = [s.out_proj.register_forward_pre_hook(capture(s.layer, s.num_heads, s.head_dim))
                       for s in ev.gate.sites]
            for batch in ev.iter_batches(device):
                tokens = batch.inputs["attention_mask"].bool()  # [B, T]
                valid["tokens"] = tokens
                n_tokens += int(tokens.sum())
                grad_abs, out = _batch_gate_gradient(ev, batch, base, labels, device, output_attentions=True)
                attentions = out.attentions
                if not attentions or len(attentions) != L or any(a is None for a in attentions):
                    raise RuntimeError(f"{type(model).__name__} returned no attention weights for all {L} layers")
                importance += grad_abs
                eager_logits[batch.indices] = out.logits.detach().float().cpu()
                with torch.no_grad():
                    T = tokens.shape[1]
                    for layer, att in enumerate(attentions):
                        a = att.detach().double()  # [B, H, T, T]
                        row = a[:, :, 0, : min(T, window)]  # [CLS] query, first W keys
                        s1, s2 = row.sum(-1), (row * row).sum(-1)  # [B, H]
                        cls_var[layer] += ((s2 - s1 * s1 / window) / (window - 1)).sum(0).cpu()
                        ent = -torch.special.xlogy(a, a).sum(-1)  # [B, H, T]
                        entropy[layer] += (ent * tokens[:, None, :]).sum((0, 2)).cpu()
                del out, attentions
    finally:
        for handle in handles:
            handle.remove()
        ev.gate.set_mask(None)

    # ablations under the model's own attention implementation
    ablation_logits = ev.logits_for_masks(_ablation_masks(base))  # [1 + L*H, N, C]
    diff = float((ablation_logits[0] - eager_logits).abs().max())
    if diff > 1e-3:
        warnings.warn(f"eager and {getattr(model.config, '_attn_implementation', '?')} attention disagree "
                      f"by {diff:.2e} in logits", RuntimeWarning, stacklevel=2)
    accs = (ablation_logits.argmax(-1) == labels).double().mean(-1)  # [1 + L*H]
    drop = (accs[0] - accs[1:]).view(L, H)

    n = len(ev)
    active = (base != 0).double()
    drift = {} if reference is None else {
        k: (v.double() * active).float()
        for k, v in drift_statistics(model, reference, tokenizer, texts, batch_size=batch_size,
                                     max_length=max_length).items()}
    return HeadStats(
        importance=(importance * active).float(),
        cls_attention_variance=(cls_var / n * active).float(),
        attention_entropy=(entropy / max(n_tokens, 1) * active).float(),
        output_norm=(norm_sum / max(n_tokens, 1) * active).float(),
        ablation_acc_drop=(drop * active).float(),
        base_accuracy=float(accs[0]),
        n_examples=n,
        **drift,
    )
