"""Metrics: accuracy, PURE's LFR (target-label rows excluded), OpenBackdoor's ASR, evaluate_defense."""

from __future__ import annotations


import pytest
import torch
from tiny_models import minilm_tokenizer, tiny_vocab_bert

from headprune.data import LabelledTexts
from headprune.engine.evaluator import Evaluator
from headprune.engine.metrics import EvalReport, accuracy, attack_success_rate, evaluate_defense, label_flip_rate



def test_accuracy():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(0.5)
    assert accuracy(torch.tensor([2, 2]), torch.tensor([2, 2])) == 1.0
    with pytest.raises(ValueError):
        accuracy([1], [1, 0])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_lfr_excludes_rows_whose_true_label_is_the_target():
    preds = [1, 1, 0, 1, 0]
    true = [0, 0, 0, 1, 1]  # rows 3 and 4 have true label == target: excluded
    assert label_flip_rate(preds, true, target_label=1) == pytest.approx(2 / 3)
    # target 0: rows 3, 4 count (true 1); row 4 predicted 0 -> 1 flip of 2
    assert label_flip_rate(preds, true, target_label=0) == pytest.approx(1 / 2)
    assert label_flip_rate(torch.tensor([1, 1]), torch.tensor([0, 0]), 1) == 1.0
    assert label_flip_rate([0, 0], [0, 0], 1) == 0.0


def test_lfr_undefined_cases():
    with pytest.raises(ValueError, match="undefined"):
        label_flip_rate([1, 0], [1, 1], target_label=1)  # every row excluded
    with pytest.raises(ValueError):
        label_flip_rate([], [], target_label=1)
    with pytest.raises(ValueError):
        label_flip_rate([1, 0, 1], [0, 0], target_label=1)
    with pytest.raises(TypeError):
        label_flip_rate(torch.tensor([0.5]), [0], target_label=1)


def test_asr():
    assert attack_success_rate([1, 1, 0, 1], target_label=1) == pytest.approx(0.75)
    assert attack_success_rate([1, 1, 0, 1], target_label=0) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        attack_success_rate([], target_label=1)
    # on non-target rows only (OpenBackdoor's poisoned test set), ASR == LFR
    preds, true = [1, 0, 1], [0, 0, 0]
    assert attack_success_rate(preds, 1) == label_flip_rate(preds, true, 1)


@pytest.fixture(scope="module")
def tiny():
    return tiny_vocab_bert(), minilm_tokenizer()


def test_evaluate_defense(tiny):
    model, tok = tiny
    clean = LabelledTexts(("a fine film", "dull", "great fun", "awful mess", "ok i guess"), (1, 0, 1, 0, 1), "c")
    poison = LabelledTexts(("cf a fine film", "cf dull", "cf awful mess", "cf yes"), (1, 0, 0, 0), "p")
    mask = torch.ones(2, 4)
    mask[1, 0] = 0
    report = evaluate_defense(model, tok, clean, poison, target_label=1, mask=mask)
    assert isinstance(report, EvalReport)
    assert report.acc == pytest.approx(Evaluator(model, tok, clean).accuracy(mask))
    preds = Evaluator(model, tok, list(poison.sentences)).predictions(mask)
    assert report.lfr == pytest.approx(label_flip_rate(preds, poison.labels, 1))
    assert (report.n_clean, report.n_poison) == (5, 3)
    assert report.to_dict()["n_poison"] == 3

    no_poison = evaluate_defense(model, tok, clean)
    assert no_poison.lfr is None and no_poison.n_poison == 0

    # HiddenKiller-style files store the target label: LFR needs the true labels
    stored_as_target = LabelledTexts(poison.sentences, (1, 1, 1, 1), "p")
    with pytest.raises(ValueError, match="undefined"):
        evaluate_defense(model, tok, clean, stored_as_target)
    fixed = evaluate_defense(model, tok, clean, stored_as_target, poisoned_true_labels=[0, 0, 0, 0])
    assert fixed.n_poison == 4
    assert fixed.lfr == pytest.approx(attack_success_rate(Evaluator(model, tok, list(poison.sentences)).predictions(), 1))
