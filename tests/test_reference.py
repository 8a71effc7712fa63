"""The pre-trained reference (headprune.engine.reference): resolution, compatibility, drift and head reset."""

from __future__ import annotations

import copy

import pytest
import torch

from headprune.engine.models import build_tiny_classifier
from headprune.engine.reference import BaseModelError, check_compatible, head_weight_drift, reset_heads, resolve_base
from headprune.engine.reference import shared_parameters


def _drifted(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    base, _ = build_tiny_classifier(seed=seed)
    model = copy.deepcopy(base)
    site_params = model.bert.encoder.layer[1].attention
    with torch.no_grad():
        site_params.self.query.weight[16:32] += 0.5  # head 1 of layer 1 (head_dim 16)
        site_params.output.dense.weight[:, 48:64] *= 3.0  # head 3 of layer 1
    return model, base


def test_drift_is_zero_for_untouched_heads_and_positive_for_moved_ones() -> None:
    model, base = _drifted()
    drift = head_weight_drift(model, base)
    assert drift.shape == (2, 4)
    moved = torch.zeros(2, 4, dtype=torch.bool)
    moved[1, 1] = moved[1, 3] = True
    assert torch.all(drift[~moved] == 0) and torch.all(drift[moved] > 0)
    assert torch.all(head_weight_drift(base, base) == 0)


def test_reset_copies_the_reference_into_chosen_heads_only() -> None:
    model, base = _drifted()
    before = copy.deepcopy(model)
    heads = torch.zeros(2, 4, dtype=torch.bool)
    heads[1, 1] = True
    assert reset_heads(model, base, heads) == 1
    drift = head_weight_drift(model, base)
    assert drift[1, 1] == 0 and drift[1, 3] > 0
    changed = [n for (n, p), q in zip(model.named_parameters(), before.parameters(), strict=True)
               if not torch.equal(p, q)]
    assert changed == ["bert.encoder.layer.1.attention.self.query.weight"]
    with pytest.raises(ValueError, match=r"heads must be \[L, H\] = \(2, 4\)"):
        reset_heads(model, base, torch.zeros(3, 4, dtype=torch.bool))


def test_incompatible_references_are_refused_by_name() -> None:
    model, _ = build_tiny_classifier(seed=0)
    other, _ = build_tiny_classifier(seed=0, num_heads=2)
    with pytest.raises(BaseModelError, match="attention layers"):
        check_compatible(model, other)
    with pytest.raises(BaseModelError, match="pass base="):
        resolve_base(model)  # a bare model whose config names no hub id


def test_shared_parameters_exclude_the_task_head() -> None:
    model, base = _drifted()
    names = [name for name, _, _ in shared_parameters(model, base)]
    assert names and not any(n.startswith("classifier.") for n in names)
    assert "bert.encoder.layer.1.attention.self.query.weight" in names


def test_a_checkpoint_fine_tuned_from_the_bundled_minilm_hub_id_finds_its_reference_offline(monkeypatch):
    """A plain MiniLM classifier whose config names the hub id of the offline default resolves the bundled
    copy as its reference, even offline; an unknown hub id offline is a BaseModelError naming it."""
    from headprune.engine.models import load_classifier
    from headprune.engine.reference import OFFLINE_BASES, BaseModelError, resolve_base, shared_parameters

    monkeypatch.setattr("headprune.engine.models._offline", lambda: True)
    model, _ = load_classifier("minilm", num_labels=2, seed=1)
    model.config._name_or_path = "sentence-transformers/all-MiniLM-L6-v2"
    assert OFFLINE_BASES[model.config._name_or_path] == "minilm"
    base = resolve_base(model)
    assert all(torch.equal(p, r) for _, p, r in shared_parameters(model, base))  # the same pre-trained weights
    model.config._name_or_path = "someone/unknown-model"  # offline: the hub id fails, the weights still match
    assert all(torch.equal(p, r) for _, p, r in shared_parameters(model, resolve_base(model)))
    from transformers import AutoModelForSequenceClassification

    stranger = AutoModelForSequenceClassification.from_config(model.config)  # same shapes, random weights
    stranger.config._name_or_path = "someone/unknown-model"
    with pytest.raises(BaseModelError, match="offline.*match none of the offline bases"):
        resolve_base(stranger)


def test_a_saved_checkpoint_is_recognised_by_its_weights(tmp_path):
    """save_pretrained writes the folder it was loaded from into the config, so the hub id is lost: a
    checkpoint fine-tuned (here: nudged) from the bundled MiniLM is recognised by its weights (drift far
    below RECOGNISE_MAX_DRIFT), a tiny model is not (other shapes: no MiniLM weights loaded), with one
    clear error each."""
    from transformers import AutoModelForSequenceClassification

    from headprune.engine.models import load_classifier
    from headprune.engine.reference import RECOGNISE_MAX_DRIFT, encoder_drift, recognise_offline_base

    model, _ = load_classifier("minilm", num_labels=3, seed=0)
    with torch.no_grad():
        for p in model.bert.encoder.parameters():
            p.mul_(1.01)  # a 1% relative move, like a fine-tune
    model.save_pretrained(tmp_path / "suspect")
    suspect = AutoModelForSequenceClassification.from_pretrained(tmp_path / "suspect")
    assert str(tmp_path) in suspect.config._name_or_path  # a folder, not a hub id
    found = recognise_offline_base(suspect)
    assert found is not None and found[1] == "sentence-transformers/all-MiniLM-L6-v2"
    assert 0.005 < found[2] < RECOGNISE_MAX_DRIFT and found[2] == pytest.approx(encoder_drift(suspect, found[0]))
    assert resolve_base(suspect).config.num_labels == 3
    tiny, _ = build_tiny_classifier(seed=0)
    tiny.config._name_or_path = str(tmp_path / "tiny")
    assert recognise_offline_base(tiny) is None
    with pytest.raises(BaseModelError, match="not a hub id.*match none"):
        resolve_base(tiny)
