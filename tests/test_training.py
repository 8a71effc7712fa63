"""The fine-tuning loop: deterministic, learns, keeps gated heads out of training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headprune.data import LabelledTexts, load_sst2
from headprune.engine.finetuning import FineTuneConfig, fine_tune, length_grouped_batches
from headprune.engine.models import build_tiny_classifier


@pytest.fixture(scope="module")
def small_data() -> LabelledTexts:
    return load_sst2("dev", "clean").take(96)


def _train(data: LabelledTexts, **kwargs):
    model, tokenizer = build_tiny_classifier(seed=0)
    mask = kwargs.pop("mask", None)
    log = fine_tune(model, tokenizer, data, FineTuneConfig(**kwargs), mask=mask, progress=False)
    return model, log


def test_same_seed_same_weights_and_losses(small_data):
    a, log_a = _train(small_data, epochs=1, lr=1e-3, batch_size=16, seed=3)
    b, log_b = _train(small_data, epochs=1, lr=1e-3, batch_size=16, seed=3)
    c, log_c = _train(small_data, epochs=1, lr=1e-3, batch_size=16, seed=4)
    assert log_a.losses == log_b.losses and log_a.steps == 6
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert log_a.losses != log_c.losses


def test_foreach_adamw_is_the_per_tensor_arithmetic_to_the_last_bit(small_data, monkeypatch):
    """fine_tune uses AdamW's foreach path (faster on a CPU); every recorded fine-tune was made with the
    per-tensor loop, so the two must give identical weights, or old records would stop reproducing."""
    fast, _ = _train(small_data, epochs=1, lr=1e-3, batch_size=16, seed=3)
    calls: list[dict] = []
    real = torch.optim.AdamW

    def per_tensor(params, **kwargs):
        calls.append(kwargs)
        return real(params, **{**kwargs, "foreach": False})

    monkeypatch.setattr(torch.optim, "AdamW", per_tensor)  # the name fine_tune looks up at each call
    slow, _ = _train(small_data, epochs=1, lr=1e-3, batch_size=16, seed=3)
    assert calls and calls[0].get("foreach") is True
    assert all(torch.equal(x, y) for x, y in zip(fast.parameters(), slow.parameters()))


def test_loss_goes_down_on_a_memorisable_set():
    data = load_sst2("dev", "clean").take(32)
    _, log = _train(data, epochs=15, lr=2e-3, batch_size=16, seed=0, warmup_ratio=0.0)
    assert np.mean(log.losses[-4:]) < 0.5 * np.mean(log.losses[:2])


def test_gated_heads_get_no_gradient(small_data):
    mask = torch.ones(2, 4)
    mask[1, 2] = 0.0
    before, _ = build_tiny_classifier(seed=0)
    model, _ = _train(small_data, epochs=1, lr=1e-3, batch_size=16, seed=0, weight_decay=0.0, mask=mask)
    d = 64 // 4
    rows = slice(2 * d, 3 * d)
    for name in ("query", "key", "value"):
        old = getattr(before.bert.encoder.layer[1].attention.self, name).weight[rows]
        new = getattr(model.bert.encoder.layer[1].attention.self, name).weight[rows]
        assert torch.equal(old, new), name
    # an active head of the same layer did move
    assert not torch.equal(before.bert.encoder.layer[1].attention.self.value.weight[:d],
                           model.bert.encoder.layer[1].attention.self.value.weight[:d])


def test_length_grouped_batches_cover_every_index_once():
    lengths = list(np.random.default_rng(0).integers(3, 60, size=1000))
    batches = length_grouped_batches(lengths, 32, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    spreads = [np.ptp(np.asarray(lengths)[b]) for b in batches if len(b) == 32]
    assert np.median(spreads) <= 3  # batches hold similar lengths


def test_bad_config_and_empty_data_are_errors():
    with pytest.raises(ValueError, match="epochs"):
        FineTuneConfig(epochs=0)
    model, tokenizer = build_tiny_classifier(seed=0)
    with pytest.raises(ValueError, match="no training data"):
        fine_tune(model, tokenizer, LabelledTexts((), (), source="empty"), progress=False)
