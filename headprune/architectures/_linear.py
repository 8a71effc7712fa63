"""Head views and head removal for blocks built from separate ``nn.Linear`` Q/K/V and output projections.

Shared by the BERT-like, DistilBERT and Llama-like adapters: a Linear weight is ``[out, in]``, so
head ``h`` is output rows ``h*d:(h+1)*d`` of the query/key/value projections and input columns
``h*d:(h+1)*d`` of the output projection.
"""

from __future__ import annotations

import torch
from torch import nn

from headprune.architectures.base import AttentionSite, head_scale

__all__ = ["linear_head_views", "remove_linear_heads"]


def linear_head_views(site: AttentionSite, head: int, query: nn.Linear, key: nn.Linear, value: nn.Linear,
                      *, kv_head: int | None = None) -> dict[str, torch.Tensor]:
    """Views of head ``head``'s rows of ``query``/``key``/``value`` (weight ``[d, D]``, bias ``[d]``) and
    its columns of ``site.out_proj`` (``[D, d]``), in that order; ``kv_head`` picks the key/value rows
    under grouped KV (default: ``head``)."""
    rows = site.head_slice(head)
    kv_rows = rows if kv_head is None else slice(kv_head * site.head_dim, (kv_head + 1) * site.head_dim)
    views: dict[str, torch.Tensor] = {}
    for role, linear, index in (("query", query, rows), ("key", key, kv_rows), ("value", value, kv_rows)):
        views[f"{role}.weight"] = linear.weight[index, :]
        if linear.bias is not None:
            views[f"{role}.bias"] = linear.bias[index]
    views["output.weight"] = site.out_proj.weight[:, rows]
    return views


def _head_columns(heads: list[int], head_dim: int, device: torch.device) -> torch.Tensor:
    """Indices ``[len(heads) * head_dim]`` of the heads' slices of the concatenated head outputs."""
    first = torch.tensor(heads, dtype=torch.long, device=device) * head_dim  # [len(heads)]
    return (first[:, None] + torch.arange(head_dim, device=device)).flatten()


def _keep_rows(linear: nn.Linear, index: torch.Tensor) -> None:
    """Keep output rows ``index`` of ``linear`` (weight ``[out, in]``, bias ``[out]``), in place."""
    linear.weight = nn.Parameter(linear.weight.index_select(0, index), requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.index_select(0, index), requires_grad=linear.bias.requires_grad)
    linear.out_features = int(index.numel())


def _keep_columns(linear: nn.Linear, index: torch.Tensor, scale: torch.Tensor) -> None:
    """Keep input columns ``index`` of ``linear``, multiplied by ``scale`` ``[len(index)]``, in place."""
    weight = linear.weight.index_select(1, index) * scale.to(linear.weight.dtype)
    linear.weight = nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
    linear.in_features = int(index.numel())


def remove_linear_heads(site: AttentionSite, gates: torch.Tensor, qkv: tuple[nn.Linear, ...]) -> list[int]:
    """Drop the heads whose gate (``[H]``) is 0 from ``qkv``'s rows and ``site.out_proj``'s columns, scaling
    the kept columns by their gates, in place. Returns the kept heads (old indices, ascending)."""
    kept = (gates != 0).nonzero().flatten().tolist()
    device = site.out_proj.weight.device
    columns = _head_columns(kept, site.head_dim, device)
    _keep_columns(site.out_proj, columns, head_scale(site, gates[kept], site.out_proj.weight))
    for proj in qkv:
        _keep_rows(proj, columns)
    return kept
