"""How far each head of a fine-tuned classifier moved from its public pre-trained reference.

Two ``[L, H]`` statistics, the drift features of :class:`~headprune.engine.head_stats.HeadStats`
(:data:`DRIFT_FEATURE_NAMES`):

``weight_drift``
    :func:`headprune.engine.reference.head_weight_drift`: ``||W - W_base||_F / ||W_base||_F`` over the head's
    Q/K/V rows (and biases) and its output-projection columns, concatenated.
``activation_drift``
    How far the head's OUTPUT moved on the defender's clean rows. A head's output is its slice of the
    output projection's input, ``o[b, t, h, :]`` of ``[B, T, H, d]`` (exactly what
    :class:`~headprune.engine.gating.HeadGate` scales), taken from the suspect and from the reference on the
    same tokenized rows, each model running its own earlier layers (so the drift of layer ``l``
    includes what the layers below it changed: it is the drift the classifier actually sees)::

        activation_drift[l, h] = mean over the non-pad tokens (b, t) of all rows of
                                 ||o_ft[b, t, h] - o_base[b, t, h]||_2 / max(||o_base[b, t, h]||_2, eps)

    pooled over tokens like ``output_norm`` (``eps = 1e-6``). Both models run ungated in eval mode.

Neither reads anything but the two models and clean rows (no trigger, no poisoned data): the
reference is public and known to every defender.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from headprune.architectures import find_attention_sites
from headprune.engine.evaluator import Evaluator
from headprune.common.modes import eval_mode
from headprune.engine.reference import check_compatible, head_weight_drift

__all__ = ["DRIFT_FEATURE_NAMES", "activation_drift", "drift_statistics"]

DRIFT_FEATURE_NAMES: tuple[str, ...] = ("weight_drift", "activation_drift")
"""The per-head statistics that need the pre-trained reference, in observation order."""

_EPS = 1e-6


def _capture_head_outputs(model: nn.Module, store: dict[int, torch.Tensor]) -> list[Any]:
    """Forward pre-hooks writing each layer's head outputs ``[B, T, H, d]`` into ``store[layer]``."""
    handles = []
    for site in find_attention_sites(model):
        def hook(_m: nn.Module, args: tuple[Any, ...], site: Any = site) -> None:
            store[site.layer] = args[0].detach().unflatten(-1, (site.num_heads, site.head_dim)).float()
        handles.append(site.out_proj.register_forward_pre_hook(hook))
    return handles


def activation_drift(model: nn.Module, base: nn.Module, tokenizer: Any, texts: Any, *, batch_size: int = 32,
                     max_length: int = 128) -> torch.Tensor:
    """``[L, H]`` float: the ``activation_drift`` of the module docstring on ``texts``.

    :param model: the suspect classifier.
    :param base: its pre-trained reference (:func:`~headprune.engine.reference.check_compatible` must pass).
    :param tokenizer: the suspect's tokenizer (the reference reads the same token ids).
    :param texts: clean rows (anything with ``sentences``; labels unused).
    :param batch_size: rows per forward.
    :param max_length: truncation length.
    """
    check_compatible(model, base)
    ev = Evaluator(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    if len(ev) == 0:
        raise ValueError("no texts to compute activation drift on")
    L, H = ev.head_shape
    total = torch.zeros(L, H, dtype=torch.float64)
    n_tokens = 0
    mine: dict[int, torch.Tensor] = {}
    theirs: dict[int, torch.Tensor] = {}
    handles = _capture_head_outputs(model, mine) + _capture_head_outputs(base, theirs)
    device = next(model.parameters()).device
    base_device = next(base.parameters()).device
    try:
        with eval_mode(model), eval_mode(base), torch.inference_mode():
            for batch in ev.iter_batches(device):
                model(**batch.inputs)
                base(**{k: v.to(base_device) for k, v in batch.inputs.items()})
                tokens = batch.inputs["attention_mask"].bool().cpu()  # [B, T]
                n_tokens += int(tokens.sum())
                for layer in range(L):
                    o_ft, o_base = mine[layer].cpu(), theirs[layer].cpu()  # [B, T, H, d]
                    rel = (o_ft - o_base).norm(dim=-1) / o_base.norm(dim=-1).clamp(min=_EPS)  # [B, T, H]
                    total[layer] += rel[tokens].sum(0).double()
    finally:
        for handle in handles:
            handle.remove()
    return (total / max(n_tokens, 1)).float()


def drift_statistics(model: nn.Module, base: nn.Module, tokenizer: Any, texts: Any, *, batch_size: int = 32,
                     max_length: int = 128) -> dict[str, torch.Tensor]:
    """``{name: [L, H] float}`` for every name of :data:`DRIFT_FEATURE_NAMES` (keyword arguments of
    :class:`~headprune.engine.head_stats.HeadStats`)."""
    return {
        "weight_drift": head_weight_drift(model, base),
        "activation_drift": activation_drift(model, base, tokenizer, texts, batch_size=batch_size,
                                             max_length=max_length),
    }
