"""GPT-2: ``GPT2Attention`` with the fused ``c_attn`` and the output projection ``c_proj``, both ``Conv1D``.

A ``Conv1D`` weight is ``[in, out]`` (the transpose of ``nn.Linear``'s): ``c_attn`` maps
``[.., D] -> [.., 3D]`` as ``[query | key | value]``, so head ``h``'s query is columns
``h*d:(h+1)*d``, its key columns ``D + h*d:..`` and its value columns ``2D + h*d:..``; head ``h`` of
``c_proj`` is rows ``h*d:(h+1)*d``. Views are transposed into the shared layout of
:mod:`headprune.architectures.base`. No compaction, no incremental forward.
"""

from __future__ import annotations

import torch
from torch import nn

from headprune.architectures.base import (
    ArchitectureAdapter,
    AttentionSite,
    BlockMatch,
    UnsupportedArchitectureError,
    head_scale,
    register_architecture,
)

__all__ = ["GPT2Adapter"]


def _conv1d_weight(proj: nn.Module) -> torch.Tensor:
    """The ``[in, out]`` weight of a ``Conv1D``."""
    weight = getattr(proj, "weight", None)
    if type(proj).__name__ != "Conv1D" or not isinstance(weight, torch.Tensor):
        raise UnsupportedArchitectureError(f"projection of type {type(proj).__name__} is not a GPT-2 Conv1D")
    return weight


@register_architecture
class GPT2Adapter(ArchitectureAdapter):
    """GPT-2 self-attention blocks (cross-attention skipped)."""

    name = "gpt2"
    description = "GPT-2 `attn.c_proj`"
    model_types = ("gpt2",)

    def match(self, module: nn.Module) -> BlockMatch | None:
        """A module with ``c_attn``, ``c_proj`` and ``head_dim`` (the MLP also has a ``c_proj``, but no head_dim)."""
        children = dict(module.named_children())
        if "c_proj" not in children or "c_attn" not in children or not hasattr(module, "head_dim"):
            return None
        if getattr(module, "is_cross_attention", False):
            return None
        return BlockMatch("c_proj", children["c_proj"], int(module.head_dim))

    def projection_input_width(self, proj: nn.Module) -> int:
        """Rows of the ``Conv1D`` weight ``[in, out]``."""
        return int(_conv1d_weight(proj).shape[0])

    def scale_head_inputs(self, site: AttentionSite, gates: torch.Tensor) -> None:
        """Scale the rows (the inputs) of ``c_proj``'s ``[in, out]`` weight."""
        weight = site.out_proj.weight
        weight.mul_(head_scale(site, gates, weight)[:, None])  # [in, out] * [in, 1]

    def head_parameter_views(self, site: AttentionSite, head: int) -> dict[str, torch.Tensor]:
        """Columns of ``c_attn`` (weight and bias) for query, key and value, and rows of ``c_proj``."""
        rows = site.head_slice(head)
        c_attn = site.attention.c_attn
        weight, bias = _conv1d_weight(c_attn), c_attn.bias  # [D, 3 * H*d], [3 * H*d]
        width = site.num_heads * site.head_dim
        views: dict[str, torch.Tensor] = {}
        for part, role in enumerate(("query", "key", "value")):
            cols = slice(part * width + rows.start, part * width + rows.stop)
            views[f"{role}.weight"] = weight[:, cols].T  # [d, D]
            if bias is not None:
                views[f"{role}.bias"] = bias[cols]
        views["output.weight"] = _conv1d_weight(site.out_proj)[rows, :].T  # [D, d]
        return views
