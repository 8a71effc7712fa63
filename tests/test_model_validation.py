"""Models headprune cannot clean are refused at load time with one line naming the class."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    T5Config,
    T5ForSequenceClassification,
    ViTConfig,
)

from headprune.engine.models import (
    ModelLoadError,
    UnsupportedModelError,
    build_tiny_classifier,
    check_classifier,
    check_tokenizer,
    load_classifier,
)


def _bert_config(**kwargs: object) -> BertConfig:
    return BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, **kwargs)


def _one_line(err: pytest.ExceptionInfo[BaseException], *names: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 600, msg
    for name in names:
        assert name in msg, msg


def test_model_without_classification_head_is_refused():
    with pytest.raises(UnsupportedModelError) as raised:
        check_classifier(BertModel(_bert_config()))
    _one_line(raised, "BertModel", "ForSequenceClassification", "supported")


@pytest.mark.parametrize("kwargs", [{"num_labels": 1}, {"num_labels": 2, "problem_type": "regression"}])
def test_sequence_regression_is_refused(kwargs):
    with pytest.raises(UnsupportedModelError) as raised:
        check_classifier(BertForSequenceClassification(_bert_config(**kwargs)))
    _one_line(raised, "BertForSequenceClassification", "regression", "supported")


def test_unsupported_family_is_refused():
    config = T5Config(vocab_size=100, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2)
    with pytest.raises(UnsupportedModelError) as raised:
        check_classifier(T5ForSequenceClassification(config))
    _one_line(raised, "T5ForSequenceClassification", "supported")


def test_supported_classifier_passes():
    model, tokenizer = build_tiny_classifier()
    check_classifier(model)
    check_tokenizer(model, tokenizer, "tiny")


def test_vit_folder_is_refused_in_one_line(tmp_path: Path):
    ViTConfig(id2label={i: f"class {i}" for i in range(100)}).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UnsupportedModelError) as raised:
        load_classifier(str(tmp_path))
    _one_line(raised, "ViTConfig", "supported")


def _save_with_tokenizer(model: torch.nn.Module, folder: Path) -> None:
    _, tokenizer = build_tiny_classifier()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_checkpoint_without_head_needs_require_head_off(tmp_path: Path):
    model, _ = build_tiny_classifier()
    _save_with_tokenizer(model.bert, tmp_path)
    with pytest.raises(UnsupportedModelError) as raised:
        load_classifier(str(tmp_path), require_head=True)
    _one_line(raised, "BertModel", "classification head")
    loaded, _ = load_classifier(str(tmp_path))  # a base model to fine-tune: a new head is the point
    check_classifier(loaded)


def test_saved_regression_model_is_refused(tmp_path: Path):
    model, _ = build_tiny_classifier(num_labels=2)
    regression = BertForSequenceClassification(BertConfig(**{**model.config.to_dict(), "num_labels": 1}))
    _save_with_tokenizer(regression, tmp_path)
    with pytest.raises(UnsupportedModelError, match="regression"):
        load_classifier(str(tmp_path), num_labels=None)


def test_tokenizer_must_fit_the_embedding():
    model, tokenizer = build_tiny_classifier()
    small = BertForSequenceClassification(_bert_config(num_labels=2))
    with pytest.raises(ModelLoadError, match="30522 tokens but the model's embedding has 100 rows"):
        check_tokenizer(small, tokenizer, "folder")
    padded = BertForSequenceClassification(BertConfig(**{**small.config.to_dict(), "vocab_size": 30522 + 70}))
    check_tokenizer(padded, tokenizer, "folder")  # an embedding padded to a multiple of 128 is fine
