"""BERT-like encoders: BERT, RoBERTa, ELECTRA, XLM-R, CamemBERT, MiniLM, ...

A block is an ``*Attention`` module with ``self`` (query/key/value Linears, ``attention_head_size``)
and ``output`` (``dense``, the output projection); cross-attention blocks are skipped. Compaction
is supported, and ``BertForSequenceClassification`` (with a pooler, not a decoder) has the exact
layer-by-layer forward of :class:`~headprune.envs.incremental.IncrementalForward`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import BertForSequenceClassification
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import BertLayer, eager_attention_forward
from transformers.pytorch_utils import apply_chunking_to_forward

from headprune.architectures._linear import linear_head_views, remove_linear_heads
from headprune.architectures.base import (
    ArchitectureAdapter,
    AttentionSite,
    BlockMatch,
    LayerwiseForward,
    register_architecture,
)

__all__ = ["BertAdapter", "BertLayerwiseForward"]


class _ZeroHeadSelfAttention(nn.Module):
    """Stands in for a BERT-family self-attention whose heads were all removed.

    Returns heads of total width 0, ``[batch, seq, 0]``, so ``attention.output.dense`` (an
    ``in_features=0`` Linear) yields its bias, as the gated model does.
    """

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.attention_head_size = head_dim
        self.num_attention_heads = 0
        self.all_head_size = 0

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        """``[batch, seq, hidden] -> ([batch, seq, 0], None)``."""
        return hidden_states.new_zeros(*hidden_states.shape[:-1], 0), None


@register_architecture
class BertAdapter(ArchitectureAdapter):
    """BERT-like blocks: ``attention.self.{query,key,value}`` and ``attention.output.dense``."""

    name = "bert"
    description = "BERT-like `attention.output.dense` (BERT, RoBERTa, ELECTRA, XLM-R, ...)"
    model_types = ("bert", "roberta", "electra")

    def match(self, module: nn.Module) -> BlockMatch | None:
        """A module with children ``self`` (having ``attention_head_size``) and ``output`` (having ``dense``)."""
        children = dict(module.named_children())
        inner, output = children.get("self"), children.get("output")
        if inner is None or output is None or not hasattr(inner, "attention_head_size") or not hasattr(output, "dense"):
            return None
        if getattr(module, "is_cross_attention", False):
            return None
        return BlockMatch("output.dense", output.dense, int(inner.attention_head_size))

    def head_parameter_views(self, site: AttentionSite, head: int) -> dict[str, torch.Tensor]:
        """Rows of ``self.query``/``key``/``value`` and columns of ``output.dense``."""
        inner = site.attention.self
        return linear_head_views(site, head, inner.query, inner.key, inner.value)

    def compact_layer(self, model: nn.Module, site: AttentionSite, gates: torch.Tensor) -> None:
        """Shrink the Q/K/V rows and output columns; a layer with no head left gets a zero-width ``self``."""
        inner = site.attention.self
        kept = remove_linear_heads(site, gates, (inner.query, inner.key, inner.value))
        if kept:
            inner.num_attention_heads = len(kept)
            inner.all_head_size = len(kept) * site.head_dim
        else:
            site.attention.self = _ZeroHeadSelfAttention(site.head_dim)

    def layerwise_forward(self, model: nn.Module) -> LayerwiseForward | None:
        """For ``BertForSequenceClassification`` with a pooler, not a decoder and no cross-attention."""
        if not isinstance(model, BertForSequenceClassification):
            return None
        config = model.bert.config
        if model.bert.pooler is None or config.is_decoder or config.add_cross_attention:
            return None
        return BertLayerwiseForward(model)


def _cls_context(layer: BertLayer, h: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``layer.attention.self`` for the [CLS] query only: ``[B, 1, H*dh]`` from ``h`` ``[B, T, d]``.

    The same projections and attention function as ``BertSelfAttention.forward`` (eval mode, no
    cache), with the query and the mask restricted to position 0.
    """
    sa = layer.attention.self
    B, T, _ = h.shape
    dh = sa.attention_head_size
    query = sa.query(h[:, :1]).view(B, 1, -1, dh).transpose(1, 2)  # [B, H, 1, dh]
    key = sa.key(h).view(B, T, -1, dh).transpose(1, 2)  # [B, H, T, dh]
    value = sa.value(h).view(B, T, -1, dh).transpose(1, 2)
    attention = ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, eager_attention_forward)
    out, _ = attention(sa, query, key, value, None if bias is None else bias[:, :, :1, :], dropout=0.0,
                       scaling=sa.scaling)
    return out.reshape(B, 1, -1).contiguous()


class BertLayerwiseForward(LayerwiseForward):
    """``BertForSequenceClassification``'s forward in the order transformers 5.x runs it::

        h_0  = bert.embeddings(input_ids, token_type_ids)               # [B, T, d]
        bias = create_bidirectional_mask(config, h_0, attention_mask)  # as BertModel builds it (sdpa or eager)
        ctx_i = layer_i.attention.self(h_i, bias)                      # [B, T, H*dh], heads before gating
        a_i   = layer_i.attention.output(ctx_i, h_i)                   # output.dense gated by HeadGate
        h_i+1 = apply_chunking_to_forward(layer_i.feed_forward_chunk, ..., a_i)
        logits = classifier(dropout(bert.pooler(h_L)))                 # [B, C]

    With ``first_query_only`` the context is the [CLS] query's, through the model's attention function
    with the mask's row 0 (the pooler reads ``h[:, 0]`` only).

    :param model: the classifier (eval mode is the caller's business).
    """

    def __init__(self, model: BertForSequenceClassification) -> None:
        self.model = model
        self.bert = model.bert
        self.layers = model.bert.encoder.layer

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings and the bidirectional attention mask BertModel builds."""
        h0 = self.bert.embeddings(input_ids=inputs["input_ids"], token_type_ids=inputs.get("token_type_ids"))
        bias = create_bidirectional_mask(config=self.bert.config, inputs_embeds=h0,
                                         attention_mask=inputs["attention_mask"])
        return h0, bias

    def head_outputs(self, layer: int, h: torch.Tensor, bias: torch.Tensor | None, *,
                     first_query_only: bool) -> torch.Tensor:
        """``attention.self`` of layer ``layer`` (the [CLS] query only if ``first_query_only``)."""
        block = self.layers[layer]
        if first_query_only:
            return _cls_context(block, h, bias)
        return block.attention.self(h, attention_mask=bias)[0]

    def finish_layer(self, layer: int, context: torch.Tensor, h: torch.Tensor, *,
                     first_query_only: bool) -> torch.Tensor:
        """``attention.output`` (gated output projection, residual, LayerNorm) then the feed-forward."""
        block = self.layers[layer]
        attended = block.attention.output(context, h[:, :1] if first_query_only else h)
        return apply_chunking_to_forward(block.feed_forward_chunk, block.chunk_size_feed_forward,
                                         block.seq_len_dim, attended)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        """Pooler, dropout and classifier."""
        return self.model.classifier(self.model.dropout(self.bert.pooler(h)))
