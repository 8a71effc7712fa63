"""Export pruned classifiers.

Two ways to turn a head mask ``[num_layers, num_heads]`` (1 = keep, 0 = prune, floats scale a head,
exactly as :class:`headprune.engine.gating.HeadGate` applies it) into a model that needs no hooks:

* :func:`save_pruned` (the portable export) folds the gates into the output projections' weights and
  writes an ordinary Hugging Face checkpoint (safetensors + config, the tokenizer, and
  ``headprune.json`` describing the pruning). Plain ``transformers`` loads it with
  ``AutoModelForSequenceClassification.from_pretrained(out_dir)``; headprune is not needed. Every
  family :mod:`headprune.engine.gating` supports works. Shapes do not change, so it is not faster.
* :func:`compact` physically removes the pruned heads (BERT family and DistilBERT): the query, key
  and value projections lose the heads' output rows and the output projection their input columns,
  so the model is smaller and faster. It is an **in-memory** model: a ``transformers`` config has
  one ``num_attention_heads`` tied to ``hidden_size`` for every layer and cannot express the new
  per-layer head counts, so ``save_pretrained`` on it writes a checkpoint that does not load. Use
  :func:`save_pruned` to ship a pruned model.

Folding is exact because the gate multiplies the projection's input: with ``x`` the concatenated
heads ``[batch, seq, num_heads * head_dim]`` and ``s`` the gates repeated ``head_dim`` times,
``W (x * s) = (W diag(s)) x``. An ``nn.Linear`` weight is ``[out, in]``, so input columns are
scaled; a GPT-2 ``Conv1D`` weight is ``[in, out]``, so its rows are.

Neither function touches the caller's model: both work on a deep copy. Gates attached to the caller's
model by an active :class:`~headprune.engine.gating.HeadGate` are not carried into the copy; the ``mask``
argument is what gets applied.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import headprune
from headprune.architectures import ARCHITECTURES
from headprune.engine.models import check_finite_weights
from headprune.engine.gating import (
    AttentionSite,
    UnsupportedArchitectureError,
    find_attention_sites,
    head_grid_shape,
    pruned_from_mask,
)

__all__ = ["METADATA_FILE", "compact", "fold_gates", "pruning_metadata", "save_pruned"]

METADATA_FILE = "headprune.json"
"""Name of the pruning record :func:`save_pruned` writes next to the checkpoint."""


# --------------------------------------------------------------------------------------- helpers
def _grid_mask(model: nn.Module, sites: list[AttentionSite], mask: torch.Tensor) -> torch.Tensor:
    """``mask`` as a detached CPU float tensor ``[L, H]``, checked against the model's grid."""
    shape = head_grid_shape(sites)
    tensor = torch.as_tensor(mask).detach().cpu()
    if tuple(tensor.shape) != shape:
        raise ValueError(
            f"mask must have shape [{shape[0]}, {shape[1]}] (layers, heads) for {type(model).__name__}, got "
            f"{tuple(tensor.shape)}; per-example masks [batch, layers, heads] cannot be exported"
        )
    if not tensor.is_floating_point():
        tensor = tensor.float()
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError("mask has non-finite entries")
    return tensor


def _unhooked_copy(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` without the forward pre-hooks a :class:`HeadGate` may have attached."""
    clone = copy.deepcopy(model)
    for site in find_attention_sites(clone):
        site.out_proj._forward_pre_hooks.clear()
        site.out_proj._forward_pre_hooks_with_kwargs.clear()
    return clone


# ------------------------------------------------------------------------------------ folding
def fold_gates(model: nn.Module, mask: torch.Tensor) -> nn.Module:
    """A deep copy of ``model`` with the gates of ``mask`` ``[L, H]`` folded into its output projections.

    The copy's logits equal those of ``model`` under ``HeadGate(model, mask)`` up to float rounding
    (exactly for 0/1 masks up to the order of operations). Layers whose gates are all 1 are untouched.

    Raises:
        ValueError: if ``mask`` is not ``[L, H]`` or has non-finite entries.
        UnsupportedArchitectureError: if :func:`~headprune.engine.gating.find_attention_sites` does.
    """
    grid = _grid_mask(model, find_attention_sites(model), mask)
    folded = _unhooked_copy(model)
    with torch.no_grad():
        for site in find_attention_sites(folded):
            if bool((grid[site.layer] != 1).any()):
                site.adapter.scale_head_inputs(site, grid[site.layer])
    return folded


def pruning_metadata(model: nn.Module, mask: torch.Tensor, *, source: str | None = None) -> dict[str, Any]:
    """The record :func:`save_pruned` writes to ``headprune.json`` (JSON-serialisable).

    Keys: ``pruned_heads`` (``{"layer": [heads]}`` of gates equal to 0), ``mask`` (``[L][H]`` floats),
    ``num_pruned``, ``num_heads_total``, ``scaled_heads`` (gates neither 0 nor 1), ``grid``
    (``[L, H]``), ``head_dim``, ``source``, ``model_class``, ``config`` (a summary), ``versions``
    (headprune, torch, transformers) and ``created`` (UTC, ISO 8601).
    """
    sites = find_attention_sites(model)
    grid = _grid_mask(model, sites, mask)
    config = getattr(model, "config", None)
    summary_keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_labels", "id2label")
    if source is None:
        source = getattr(model, "name_or_path", None) or None
    return {
        "pruned_heads": {str(layer): heads for layer, heads in pruned_from_mask(grid).items()},
        "mask": grid.tolist(),
        "num_pruned": int((grid == 0).sum()),
        "num_heads_total": grid.numel(),
        "scaled_heads": int(((grid != 0) & (grid != 1)).sum()),
        "grid": list(grid.shape),
        "head_dim": sites[0].head_dim,
        "source": source,
        "model_class": type(model).__name__,
        "config": {key: getattr(config, key, None) for key in summary_keys},
        "versions": {
            "headprune": headprune.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def save_pruned(
    model: PreTrainedModel,
    mask: torch.Tensor,
    out_dir: str | Path,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    source: str | None = None,
) -> Path:
    """Write ``model`` pruned by ``mask`` ``[L, H]`` as a checkpoint plain ``transformers`` loads.

    The folder gets the config and ``model.safetensors`` of :func:`fold_gates`' copy, the tokenizer
    files if ``tokenizer`` is given, and :data:`METADATA_FILE` (see :func:`pruning_metadata`; ``source``
    defaults to ``model.name_or_path``). ``model`` itself is not modified.

    Returns:
        The folder, created if needed.

    Raises:
        TypeError: if ``model`` is not a ``PreTrainedModel`` (it could not be reloaded).
        ValueError: if ``mask`` is not ``[L, H]`` or has non-finite entries, or if the model's heads
            do not match its config (a :func:`compact` result).
        NonFiniteWeightsError: if a weight of the model to write is NaN or infinite (nothing is written).
    """
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"save_pruned needs a transformers PreTrainedModel, got {type(model).__name__}")
    heads = {s.num_heads for s in find_attention_sites(model)}
    if heads != {model.config.num_attention_heads}:
        raise ValueError(
            f"{type(model).__name__} has {sorted(heads)} heads per layer but its config says "
            f"{model.config.num_attention_heads}, so the checkpoint would not load (was it compacted?); "
            "save the original model with the full mask instead"
        )
    metadata = pruning_metadata(model, mask, source=source)
    folded = fold_gates(model, mask)
    check_finite_weights(folded, str(out_dir), what="the model to export")  # never write a NaN model
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folded.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------- compaction
def _compactable() -> list[str]:
    """Names of the architectures whose adapter can remove heads."""
    return [name for name, adapter in ARCHITECTURES.items() if adapter.supports_compaction]


def compact(model: nn.Module, mask: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with the heads that ``mask`` ``[L, H]`` zeroes physically removed.

    For the BERT family (BERT, RoBERTa, ELECTRA, XLM-R, ...) and DistilBERT. For each layer with
    kept heads ``K`` (head_dim ``d``), the query/key/value projections keep output rows of ``K``
    (``[|K| d, hidden]``) and the output projection keeps input columns of ``K`` (``[hidden, |K| d]``),
    scaled by the gates when these are not 0/1. A layer with every head pruned keeps only the output
    projection's bias, as under gating. Logits match ``HeadGate(model, mask)`` to float rounding.

    The result is an in-memory model: its config still describes the original head grid (a
    ``transformers`` config cannot express per-layer head counts), so do not ``save_pretrained`` it;
    use :func:`save_pruned` for a portable checkpoint. Layers keep their index, so
    :func:`~headprune.engine.gating.find_attention_sites` sees the new head counts.

    Raises:
        UnsupportedArchitectureError: naming the model class, for families other than BERT/DistilBERT.
        ValueError: if ``mask`` is not ``[L, H]`` or has non-finite entries.
    """
    sites = find_attention_sites(model)
    others = sorted({s.family for s in sites if not s.adapter.supports_compaction})
    if others:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__}: compact() supports the {' and '.join(_compactable())} families, not the "
            f"{others[0]} family; use save_pruned() (folded gates) or HeadGate instead"
        )
    grid = _grid_mask(model, sites, mask)
    small = _unhooked_copy(model)
    with torch.no_grad():
        for site in find_attention_sites(small):
            gates = grid[site.layer]
            if not bool((gates == 1).all()):
                site.adapter.compact_layer(small, site, gates)
    return small
