"""Llama-like decoders: Llama, Mistral, Qwen2, Gemma, ... (``q_proj``/``k_proj``/``v_proj``/``o_proj``).

Under grouped-query attention (``k_proj`` narrower than ``q_proj``) the ``H / H_kv`` query heads of a
group share one key/value head: a head's ``"key.*"``/``"value.*"`` weights are its group's, and
:meth:`LlamaAdapter.heads_sharing_parameters` names the group. No compaction, no incremental forward.
"""

from __future__ import annotations

import torch
from torch import nn

from headprune.architectures._linear import linear_head_views
from headprune.architectures.base import ArchitectureAdapter, AttentionSite, BlockMatch, register_architecture

__all__ = ["LlamaAdapter"]


def _group_size(site: AttentionSite) -> int:
    """Query heads per key/value head (1 without grouped KV)."""
    kv_heads = site.attention.k_proj.out_features // site.head_dim
    return site.num_heads // kv_heads


@register_architecture
class LlamaAdapter(ArchitectureAdapter):
    """Llama-style ``self_attn`` blocks with separate Q/K/V Linears and ``o_proj``."""

    name = "llama"
    description = "Llama-style `self_attn.o_proj` (Llama, Mistral, Qwen2, ...)"
    model_types = ("llama", "mistral", "qwen2")

    def match(self, module: nn.Module) -> BlockMatch | None:
        """A module with ``q_proj``, ``o_proj`` and ``head_dim``."""
        children = dict(module.named_children())
        if "o_proj" not in children or "q_proj" not in children or not hasattr(module, "head_dim"):
            return None
        return BlockMatch("o_proj", children["o_proj"], int(module.head_dim))

    def head_parameter_views(self, site: AttentionSite, head: int) -> dict[str, torch.Tensor]:
        """Rows of ``q_proj`` and of the group's ``k_proj``/``v_proj``, and columns of ``o_proj``."""
        att = site.attention
        return linear_head_views(site, head, att.q_proj, att.k_proj, att.v_proj,
                                 kv_head=head // _group_size(site))

    def heads_sharing_parameters(self, site: AttentionSite, head: int) -> tuple[int, ...]:
        """The query heads of ``head``'s key/value group."""
        size = _group_size(site)
        first = head // size * size
        return tuple(range(first, first + size))
