"""DistilBERT: ``MultiHeadSelfAttention`` with ``q_lin``/``k_lin``/``v_lin`` and the output projection ``out_lin``.

Compaction is supported; the incremental forward does not apply (full forwards are used).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from headprune.architectures._linear import linear_head_views, remove_linear_heads
from headprune.architectures.base import ArchitectureAdapter, AttentionSite, BlockMatch, register_architecture

__all__ = ["DistilBertAdapter"]


class _ZeroHeadDistilBertAttention(nn.Module):
    """Stands in for a DistilBERT self-attention whose heads were all removed: returns ``out_lin``'s bias.

    Keeps the emptied ``q_lin``/``k_lin``/``v_lin`` (``[0, dim]``, no parameters) so
    :func:`~headprune.architectures.base.find_attention_sites` still sees the layer, with 0 heads.
    """

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.q_lin, self.k_lin, self.v_lin = original.q_lin, original.k_lin, original.v_lin
        self.out_lin = original.out_lin
        self.dim = original.dim
        self.attention_head_size = original.attention_head_size
        self.n_heads = 0

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        """``[batch, seq, dim] -> ([batch, seq, dim], None)``."""
        return self.out_lin(hidden_states.new_zeros(*hidden_states.shape[:-1], 0)), None


@register_architecture
class DistilBertAdapter(ArchitectureAdapter):
    """DistilBERT blocks: ``q_lin``/``k_lin``/``v_lin`` and ``out_lin``."""

    name = "distilbert"
    description = "DistilBERT `out_lin`"
    model_types = ("distilbert",)

    def match(self, module: nn.Module) -> BlockMatch | None:
        """A module with ``q_lin``, ``out_lin`` and ``n_heads``.

        ``attention_head_size`` is preferred over ``dim // n_heads``, which is wrong once heads were removed.
        """
        children = dict(module.named_children())
        if "out_lin" not in children or "q_lin" not in children or not hasattr(module, "n_heads"):
            return None
        has_size = hasattr(module, "attention_head_size")
        head_dim = module.attention_head_size if has_size else module.dim // module.n_heads
        return BlockMatch("out_lin", children["out_lin"], int(head_dim))

    def head_parameter_views(self, site: AttentionSite, head: int) -> dict[str, torch.Tensor]:
        """Rows of ``q_lin``/``k_lin``/``v_lin`` and columns of ``out_lin``."""
        att = site.attention
        return linear_head_views(site, head, att.q_lin, att.k_lin, att.v_lin)

    def compact_layer(self, model: nn.Module, site: AttentionSite, gates: torch.Tensor) -> None:
        """Shrink the Q/K/V rows and ``out_lin`` columns; a layer with no head left is replaced by a stand-in."""
        attention = site.attention
        kept = remove_linear_heads(site, gates, (attention.q_lin, attention.k_lin, attention.v_lin))
        attention.n_heads = len(kept)
        if not kept:
            parent, _, child = site.name.rsplit(".", 1)[0].rpartition(".")  # "<parent>.attention"
            setattr(model.get_submodule(parent), child, _ZeroHeadDistilBertAttention(attention))
