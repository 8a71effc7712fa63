"""Evaluator: equal to the naive PURE-style reference, original order, batched masks, modes restored."""

from __future__ import annotations


import pytest
import torch
from tiny_models import minilm_tokenizer, tiny_vocab_bert

from headprune.data import LabelledTexts
from headprune.engine.evaluator import Evaluator, naive_logits



SENTENCES = (
    "a good film .",
    "terrible , just terrible and long and boring beyond all words and reason",
    "ok",
    "the plot is thin but the acting is superb",
    "meh .",
    "",
    "an utterly charming , warm and funny picture that never overstays its welcome",
    "bad",
    "i laughed , i cried , i left early",
)
LABELS = (1, 0, 1, 1, 0, 0, 1, 0, 0)


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


@pytest.fixture(scope="module")
def model():
    return tiny_vocab_bert()


def test_logits_equal_naive_and_original_order(model, tokenizer):
    ev = Evaluator(model, tokenizer, SENTENCES, batch_size=4)
    order = torch.cat([b.indices for b in ev.batches]).tolist()
    assert order != list(range(len(SENTENCES)))  # sorting really permuted the texts
    assert sorted(order) == list(range(len(SENTENCES)))
    assert [b.seq_len for b in ev.batches] == sorted(b.seq_len for b in ev.batches)
    got = ev.logits()
    assert got.shape == (len(SENTENCES), 2)
    torch.testing.assert_close(got, naive_logits(model, tokenizer, SENTENCES), atol=1e-5, rtol=0)
    one_by_one = torch.cat([naive_logits(model, tokenizer, [s], batch_size=1) for s in SENTENCES])
    torch.testing.assert_close(got, one_by_one, atol=1e-5, rtol=0)
    assert not got.is_inference()
    assert torch.equal(ev.predictions(), got.argmax(-1))


def test_masked_logits_equal_naive(model, tokenizer):
    mask = torch.ones(2, 4)
    mask[0, 1] = 0
    mask[1, 2:] = 0
    ev = Evaluator(model, tokenizer, SENTENCES, batch_size=3)
    got = ev.logits(mask)
    torch.testing.assert_close(got, naive_logits(model, tokenizer, SENTENCES, mask=mask), atol=1e-5, rtol=0)
    assert (got - ev.logits()).abs().max() > 1e-4  # the mask did something


def test_per_example_mask(model, tokenizer):
    ev = Evaluator(model, tokenizer, SENTENCES, batch_size=4)
    masks = torch.ones(len(SENTENCES), 2, 4)
    masks[::2, 0, :2] = 0
    masks[1::3, 1, 3] = 0
    got = ev.logits(masks)
    for i in range(len(SENTENCES)):
        torch.testing.assert_close(got[i], ev.logits(masks[i])[i], atol=1e-6, rtol=0)


@pytest.mark.parametrize("max_effective_batch", [1, 5, 512])
def test_logits_for_masks_equal_one_run_per_mask(model, tokenizer, max_effective_batch):
    ev = Evaluator(model, tokenizer, SENTENCES, batch_size=4, max_effective_batch=max_effective_batch)
    g = torch.Generator().manual_seed(1)
    masks = (torch.rand(6, 2, 4, generator=g) > 0.4).float()
    masks[0] = 1
    got = ev.logits_for_masks(masks)
    assert got.shape == (6, len(SENTENCES), 2)
    for k in range(6):
        torch.testing.assert_close(got[k], ev.logits(masks[k]), atol=1e-5, rtol=0)


def test_accuracy_labels_and_plain_strings(model, tokenizer):
    texts = LabelledTexts(SENTENCES, LABELS, "test")
    ev = Evaluator(model, tokenizer, texts)
    expected = float((ev.predictions() == torch.tensor(LABELS)).float().mean())
    assert ev.accuracy() == pytest.approx(expected)
    with pytest.raises(ValueError):
        Evaluator(model, tokenizer, list(SENTENCES)).accuracy()
    with pytest.raises(TypeError):
        Evaluator(model, tokenizer, "one string")  # type: ignore[arg-type]


def test_eval_mode_used_and_training_flag_restored(tokenizer):
    model = tiny_vocab_bert(dropout=0.5)
    reference = naive_logits(model, tokenizer, SENTENCES)
    model.train()
    ev = Evaluator(model, tokenizer, SENTENCES, batch_size=4)
    torch.testing.assert_close(ev.logits(), reference, atol=1e-5, rtol=0)
    ev.logits_for_masks(torch.ones(2, 2, 4))
    assert model.training
    assert not ev.gate.attached  # hooks removed after each call


def test_batches_deterministic(model, tokenizer):
    a = Evaluator(model, tokenizer, SENTENCES, batch_size=2)
    b = Evaluator(model, tokenizer, SENTENCES, batch_size=2)
    assert len(a.batches) == len(b.batches)
    for x, y in zip(a.batches, b.batches):
        assert torch.equal(x.indices, y.indices)
        assert x.inputs.keys() == y.inputs.keys()
        assert all(torch.equal(x.inputs[k], y.inputs[k]) for k in x.inputs)
    assert torch.equal(a.logits(), b.logits())


def test_bad_mask_shape(model, tokenizer):
    ev = Evaluator(model, tokenizer, SENTENCES)
    with pytest.raises(ValueError):
        ev.logits(torch.ones(3, 4))
    with pytest.raises(ValueError):
        ev.logits_for_masks(torch.ones(2, 4))
