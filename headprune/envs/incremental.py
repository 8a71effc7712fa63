"""Exact, incremental scoring of a fixed evaluation set under a changing head mask.

An RL episode of :class:`~headprune.envs.headprune_env.HeadPruneEnv` changes the head mask by one
head per step. Gating head ``(l, h)`` changes the output of layer ``l`` and everything after it, but
not the embeddings, the outputs of layers ``< l``, nor the attention of ANY head of layer ``l`` (a
head's attention and its output before the gate depend only on the layer's input).
:class:`IncrementalForward` therefore keeps, for every pre-tokenized batch of an
:class:`~headprune.engine.evaluator.Evaluator`, the input of each encoder layer and the heads' outputs
before gating (the "context", input of the attention output projection) under the mask it last
computed. For a new mask it starts at the first layer whose row of the mask changed, reuses that
layer's context (only the output projection, LayerNorm and feed-forward run there), and recomputes
the layers after it. It works for any new mask (pruning in an earlier layer than the last change,
un-pruning on reset, arbitrary jumps); a mask equal to the cached one costs nothing.

Head resets (``reset`` ``[L, H]`` bool, heads carrying the pre-trained reference's weights, see
:func:`headprune.engine.reference.heads_reset_to`) change the Q/K/V and output weights of their layer only,
so a change of the reset set at layer ``l`` also starts the recomputation at ``l``, but there the
heads' outputs are recomputed too (their weights changed); layers below ``l`` are reused. The
weights are swapped in for the duration of one call and restored exactly.

Mixing states (``mix`` ``[B]`` int levels of :class:`~headprune.envs.mixing.BlockMixer`'s blocks) are swapped in the
same way. A changed attention level at layer ``l`` acts like a changed reset there (start at ``l``, heads
recomputed); a changed feed-forward level at ``l`` starts at ``l`` but reuses that layer's head outputs (the
attention's input and weights did not change); a changed ``embeddings`` level drops every cache (start at the
embeddings).

The last layer is computed for the ``[CLS]`` query only: the classifier reads only position 0 of
the last layer (the pooler takes ``h[:, 0]``), and position 0 of the last layer needs the keys and
values of all positions but the query, head outputs, LayerNorm and feed-forward of position 0 only.

The computation uses the model's own modules through the
:class:`~headprune.architectures.base.LayerwiseForward` its architecture adapter gives
(:meth:`~headprune.architectures.base.ArchitectureAdapter.layerwise_forward`; today
``BertForSequenceClassification``, BERT family, e.g. all-MiniLM-L6-v2), in eval mode under
``torch.inference_mode``, so the logits equal a full forward of the same batches up to float
rounding of the [CLS]-only last layer (the tests check ``atol=1e-5`` and identical predictions).
Gating still goes through the evaluator's :class:`~headprune.engine.gating.HeadGate`. Models whose adapter
gives no layerwise forward fall back to :meth:`Evaluator.logits` (a full, dynamically padded forward).

:class:`MaskScorer` adds memoisation by mask: the count of correct predictions and the proxy value
of every mask seen are kept (bytes of the boolean mask -> :class:`MaskScore`), so an episode that
revisits a mask, or a new episode that retraces an earlier one, costs a dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

import torch
from torch import nn

from headprune.architectures import LayerwiseForward, adapter_for
from headprune.envs.memo import StateMemo, mask_key, state_key
from headprune.engine.evaluator import Evaluator
from headprune.common.modes import eval_mode
from headprune.engine.reference import heads_reset_to
from headprune.envs.mixing import BlockMixer

__all__ = ["IncrementalForward", "MaskScore", "MaskScorer", "mask_key", "state_key"]


@dataclass
class _BatchCache:
    """What :class:`IncrementalForward` keeps for one batch of ``B`` texts padded to ``T`` tokens.

    Attributes:
        bias: the attention mask the layers get (``None``, or ``[B, 1, T, T]`` bool/float).
        hidden: ``hidden[i]`` is the input of layer ``i``, ``[B, T, d]``, for ``i < L``.
        context: ``context[i]`` is layer ``i``'s head outputs before gating, ``[B, T, H*dh]``
            (``[B, 1, H*dh]``, the [CLS] query only, for the last layer).
    """

    bias: torch.Tensor | None
    hidden: list[torch.Tensor]
    context: list[torch.Tensor] = field(default_factory=list)


class IncrementalForward:
    """Logits of an evaluator's texts under a head mask, recomputing only the layers that changed.

    Args:
        evaluator: supplies the model, its pre-tokenized length-sorted batches and its
            :class:`~headprune.engine.gating.HeadGate`. The model's weights must not change while this
            object lives (call :meth:`reset` if they do).
        reference: the pre-trained reference whose weights reset heads carry (needed only for
            ``reset`` masks with a true entry).
        mixer: the :class:`~headprune.envs.mixing.BlockMixer` of mixing states (needed only for a ``mix`` with a
            non-zero level).

    Attributes:
        incremental: ``True`` where the adapter gives a layerwise forward (layer caches), ``False`` for the
            fallback.
        last_start_layer: the first layer recomputed by the latest :meth:`logits` call (``L`` when
            the mask equalled the cached one; ``0`` on the first call or in the fallback).

    Memory: the input and the head outputs of every layer of every batch,
    ``2 * L * sum_b B_b * T_b * d`` floats (about 150 MB for 256 SST-2 sentences on MiniLM).
    """

    def __init__(self, evaluator: Evaluator, reference: nn.Module | None = None,
                 mixer: BlockMixer | None = None) -> None:
        self.evaluator = evaluator
        self.reference = reference
        self.mixer = mixer
        self.model = evaluator.model
        self.num_layers, self.num_heads = evaluator.head_shape
        self._layers = adapter_for(self.model).layerwise_forward(self.model)
        self.incremental = self._layers is not None
        self.last_start_layer = 0
        self._mask: torch.Tensor | None = None  # [L, H] float mask the caches hold
        self._reset = torch.zeros(self.num_layers, self.num_heads, dtype=torch.bool)  # [L, H] their reset heads
        self._mix: np.ndarray | None = None  # [B] mixing levels the caches hold (None: none mixed)
        self._caches: list[_BatchCache] = []
        self._logits = torch.empty(0)  # [N, C] under self._mask

    def reset(self) -> None:
        """Drop every cache (the next call recomputes from the embeddings)."""
        self._mask = None
        self._reset = torch.zeros(self.num_layers, self.num_heads, dtype=torch.bool)
        self._mix = None
        self._caches = []
        self._logits = torch.empty(0)

    def logits(self, mask: torch.Tensor, reset: torch.Tensor | None = None,
               mix: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """``[N, C]`` float logits on the CPU under ``mask`` ``[L, H]`` (1 = active), original order,
        with the heads where ``reset`` ``[L, H]`` is true carrying the reference's weights and the blocks mixed
        to the levels ``mix`` ``[B]`` (``None`` or all 0: none)."""
        shape = (self.num_layers, self.num_heads)
        mask = mask.detach().float().cpu()
        if tuple(mask.shape) != shape:
            raise ValueError(f"mask must be [{self.num_layers}, {self.num_heads}], got {tuple(mask.shape)}")
        reset = torch.zeros(shape, dtype=torch.bool) if reset is None else reset.detach().cpu().bool()
        if tuple(reset.shape) != shape:
            raise ValueError(f"reset must be [{self.num_layers}, {self.num_heads}], got {tuple(reset.shape)}")
        levels = self.check_mix(mix)
        mixing = self.mixer.mixed(self.model, levels) if levels is not None else nullcontext()
        with heads_reset_to(self.model, self.reference, reset), mixing:
            if not self.incremental:
                self.last_start_layer = 0
                return self.evaluator.logits(mask)
            if self._mask is None:
                start, weights_changed = 0, True
            else:
                emb, att, ffn = self._mix_rows(levels)
                old_emb, old_att, old_ffn = self._mix_rows(self._mix)
                if emb != old_emb:  # new embeddings: every layer's input changes; until the run succeeds, no
                    self._caches, self._mask = [], None  # cache describes any state (a failed run recomputes all)
                    start, weights_changed = 0, True
                else:
                    weight_rows = (reset != self._reset).any(dim=1) | torch.from_numpy(att != old_att)  # [L]
                    ffn_rows = torch.from_numpy(ffn != old_ffn)  # [L]
                    changed = ((mask != self._mask).any(dim=1) | weight_rows | ffn_rows).nonzero()
                    start = int(changed[0]) if changed.numel() else self.num_layers
                    weights_changed = start < self.num_layers and bool(weight_rows[start])
            self.last_start_layer = start
            if start < self.num_layers:
                self._run(mask, start, recompute_heads=weights_changed)
                self._mask, self._reset, self._mix = mask.clone(), reset.clone(), levels
        return self._logits.clone()

    def check_mix(self, mix: np.ndarray | torch.Tensor | None) -> np.ndarray | None:
        """``mix`` as ``[B]`` int64 levels, or ``None`` when it mixes nothing; ValueError without a mixer."""
        if mix is None:
            return None
        if self.mixer is None:
            raise ValueError("mixing levels given but this forward has no BlockMixer (operation without 'mix')")
        levels = self.mixer.check_state(mix)
        return levels if levels.any() else None

    def _mix_rows(self, levels: np.ndarray | None) -> tuple[int, np.ndarray, np.ndarray]:
        """``(embeddings level, attention levels [L], feed-forward levels [L])`` of a state (0 without a mixer)."""
        if self.mixer is None:
            zeros = np.zeros(self.num_layers, np.int64)
            return 0, zeros, zeros
        return self.mixer.layer_rows(levels)

    def _run(self, mask: torch.Tensor, start: int, *, recompute_heads: bool = False) -> None:
        """Recompute from layer ``start`` (reusing its cached context unless ``recompute_heads``: the
        layer's weights changed), then the classifier head."""
        layers = self._layers
        assert layers is not None
        model = self.model
        ev = self.evaluator
        device = next(model.parameters()).device
        if not self._caches:
            self._logits = torch.empty(len(ev), ev.num_labels)
        try:
            with eval_mode(model), torch.inference_mode(), ev.gate:
                ev.gate.set_mask(mask.to(device))
                for b, batch in enumerate(ev.iter_batches(device)):
                    if b == len(self._caches):
                        h0, bias = layers.embed(batch.inputs)
                        self._caches.append(_BatchCache(bias=bias, hidden=[h0]))
                    if recompute_heads:
                        del self._caches[b].context[start:]
                    h = self._run_layers(layers, self._caches[b], start)
                    self._logits[batch.indices] = layers.classify(h).float().cpu()
        finally:
            ev.gate.set_mask(None)

    def _run_layers(self, layers: LayerwiseForward, cache: _BatchCache, start: int) -> torch.Tensor:
        """Layers ``start..L-1`` of one batch, updating its cache; the last layer's output ``[B, 1, d]``."""
        last = self.num_layers - 1
        h = cache.hidden[start]
        for i in range(start, self.num_layers):
            if i == start and i < len(cache.context):
                ctx = cache.context[i]  # same input as before: same head outputs
            else:
                ctx = layers.head_outputs(i, h, cache.bias, first_query_only=i == last)
                del cache.context[i:]
                cache.context.append(ctx)
            h = layers.finish_layer(i, ctx, h, first_query_only=i == last)
            if i < last:
                del cache.hidden[i + 1:]
                cache.hidden.append(h)
        return h


@dataclass(frozen=True)
class MaskScore:
    """Count-based scores of one mask.

    Attributes:
        correct: evaluation texts predicted correctly.
        total: evaluation texts.
        proxy: the backdoor proxy's value (0.0 when the scorer has no proxy).
    """

    correct: int
    total: int
    proxy: float

    @property
    def accuracy(self) -> float:
        """``correct / total`` (exactly the float every path computes)."""
        return self.correct / self.total


class MaskScorer:
    """Clean accuracy and proxy value of states (a head mask, optionally a set of reset heads),
    memoised by state (LRU, keyed by :func:`state_key`).

    Args:
        forward: the :class:`IncrementalForward` of the labelled evaluation texts (its ``reference``
            supplies the weights of reset heads).
        proxy: ``mask [L, H] float -> float`` (a :class:`~headprune.envs.proxies.BackdoorProxy`); for a
            state with reset heads it is called as ``proxy(mask, reset=reset)`` while the model carries
            the reset weights. ``None``: no proxy, every score's ``proxy`` is 0.0 (``defend``'s workbench).
        memo_size: states remembered (least recently used dropped first).
    """

    def __init__(self, forward: IncrementalForward, proxy: Callable[..., float] | None, *,
                 memo_size: int = 100_000) -> None:
        self.forward = forward
        self.labels = forward.evaluator.require_labels()  # [N]
        if self.labels.numel() == 0:
            raise ValueError("no evaluation texts to score masks on")
        self.proxy = proxy
        self.memo: StateMemo[MaskScore] = StateMemo(memo_size)
        self.hits = 0
        self.misses = 0

    def proxy_value(self, proxy: Callable[..., float], mask: torch.Tensor, reset: torch.Tensor | None = None,
                    levels: np.ndarray | None = None) -> float:
        """``proxy`` (this scorer's or another, e.g. a candidate under evaluation) on a state: ``mask`` ``[L, H]``
        float, the heads of ``reset`` ``[L, H]`` bool carrying the reference's weights and the blocks mixed to
        ``levels`` ``[B]`` (checked) while it runs; not memoised."""
        if reset is None and levels is None:
            return float(proxy(mask))
        if levels is None:
            with heads_reset_to(self.forward.model, self.forward.reference, reset):
                return float(proxy(mask, reset=reset))
        assert self.forward.mixer is not None
        with heads_reset_to(self.forward.model, self.forward.reference, reset), \
                self.forward.mixer.mixed(self.forward.model, levels):
            return float(proxy(mask, reset=reset, mix=torch.from_numpy(levels)))

    def __call__(self, mask: torch.Tensor, reset: torch.Tensor | None = None,
                 mix: np.ndarray | torch.Tensor | None = None) -> MaskScore:
        """Scores of ``mask`` ``[L, H]`` (0/1) with the heads where ``reset`` ``[L, H]`` is true reset and the
        blocks mixed to the levels ``mix`` ``[B]`` (:mod:`headprune.envs.mixing`)."""
        key = state_key(mask, reset, mix)
        score = self.memo.get(key)
        if score is not None:
            self.hits += 1
            return score
        self.misses += 1
        m = mask.detach().float().cpu()
        r = None if reset is None or not bool(reset.bool().any()) else reset.detach().cpu().bool()
        levels = self.forward.check_mix(mix)
        correct = int((self.forward.logits(m, r, levels).argmax(dim=-1) == self.labels).sum())
        proxy = 0.0 if self.proxy is None else self.proxy_value(self.proxy, m, r, levels)
        score = MaskScore(correct=correct, total=int(self.labels.numel()), proxy=proxy)
        self.memo[key] = score
        return score
