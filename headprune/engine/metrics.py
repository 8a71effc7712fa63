"""Evaluation metrics of backdoor defenses: clean accuracy, LFR (PURE) and ASR (OpenBackdoor).

These are *evaluation* metrics: a trigger-agnostic defense never sees poisoned data, so LFR/ASR may
only be computed after the defense (its head mask) is fixed. :func:`evaluate_defense` is the one
place in headprune that computes LFR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from headprune.data import LabelledTexts
from headprune.engine.evaluator import Evaluator

__all__ = ["EvalReport", "accuracy", "attack_success_rate", "evaluate_defense", "label_flip_rate"]

_IntsLike = torch.Tensor | Sequence[int]


def _as_long(x: _IntsLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(x).reshape(-1)
    if t.is_floating_point() and t.numel() > 0:
        raise TypeError(f"{name} must hold integer labels, got dtype {t.dtype}")
    return t.long()


def accuracy(preds: _IntsLike, labels: _IntsLike) -> float:
    """Share of ``preds`` equal to ``labels`` (both ``[N]``).

    Raises:
        ValueError: on a length mismatch or when ``N == 0``.
    """
    p, y = _as_long(preds, "preds"), _as_long(labels, "labels")
    if p.numel() != y.numel():
        raise ValueError(f"{p.numel()} predictions for {y.numel()} labels")
    if p.numel() == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return int((p == y).sum()) / p.numel()


def label_flip_rate(preds: _IntsLike, true_labels: _IntsLike, target_label: int) -> float:
    """Label flip rate (LFR) as defined by PURE (Zhao et al., ICML 2024, Sec. 5.1).

    LFR is "the proportion of poisoned samples that are misclassified as the target label", taken over
    poisoned inputs whose TRUE label is not the target::

        LFR = #{i : true_i != target and pred_i == target} / #{i : true_i != target}

    Rows whose true label already is the target are excluded from the denominator (a prediction of
    the target on them is no flip).

    Args:
        preds: ``[N]`` predicted labels on the poisoned (triggered) inputs.
        true_labels: ``[N]`` their true labels, before relabelling to the target.
        target_label: the attacker's target label.

    Raises:
        ValueError: on a length mismatch, or when no row has a true label other than the target (the
            rate is undefined; this also catches poisoned files that store the target as the label).
    """
    p, y = _as_long(preds, "preds"), _as_long(true_labels, "true_labels")
    if p.numel() != y.numel():
        raise ValueError(f"{p.numel()} predictions for {y.numel()} true labels")
    keep = y != target_label
    n = int(keep.sum())
    if n == 0:
        raise ValueError(
            f"LFR is undefined: none of the {y.numel()} poisoned rows has a true label other than the target "
            f"{target_label} (were the stored poisoned labels passed instead of the true ones?)"
        )
    return int((p[keep] == target_label).sum()) / n


def attack_success_rate(preds: _IntsLike, target_label: int) -> float:
    """Attack success rate (ASR) as OpenBackdoor computes it (Cui et al., NeurIPS 2022 D&B).

    OpenBackdoor evaluates ASR as plain accuracy on the poisoned test set whose labels were all set to
    the target, i.e. the share of poisoned inputs predicted as the target::

        ASR = #{i : pred_i == target} / N

    (OpenBackdoor builds the poisoned test set from non-target samples only, where ASR equals LFR.)

    Raises:
        ValueError: when ``N == 0``.
    """
    p = _as_long(preds, "preds")
    if p.numel() == 0:
        raise ValueError("ASR of an empty set is undefined")
    return int((p == target_label).sum()) / p.numel()


@dataclass
class EvalReport:
    """Result of :func:`evaluate_defense`.

    Attributes:
        acc: clean accuracy.
        lfr: label flip rate on the poisoned set (``None`` when no poisoned set was given).
        n_clean: clean examples scored.
        n_poison: poisoned examples counted in the LFR denominator (true label != target); 0 if none.
    """

    acc: float
    lfr: float | None
    n_clean: int
    n_poison: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON logs."""
        return {"acc": self.acc, "lfr": self.lfr, "n_clean": self.n_clean, "n_poison": self.n_poison}


def evaluate_defense(
    model: nn.Module,
    tokenizer: Any,
    clean_test: LabelledTexts,
    poisoned_test: LabelledTexts | None = None,
    target_label: int = 1,
    mask: torch.Tensor | None = None,
    *,
    poisoned_true_labels: Sequence[int] | None = None,
    batch_size: int = 64,
    max_length: int = 128,
) -> EvalReport:
    """Clean accuracy and LFR of ``model`` under head ``mask`` ``[L, H]`` (``None``: no pruning).

    This is the ONLY place where headprune computes LFR. It is evaluation code: call it after the
    defense has fixed its mask, never inside a defense (a trigger-agnostic defender has no poisoned
    data).

    Args:
        clean_test: labelled clean texts (e.g. ``load_sst2("test")``).
        poisoned_test: triggered texts; their ``labels`` are taken as the TRUE labels unless
            ``poisoned_true_labels`` is given. Some releases (HiddenKiller's SST-2 dev/test) store
            the target label on rows whose true label is 0: pass ``poisoned_true_labels`` then, or
            LFR raises ValueError because every row would be excluded.
        target_label: the attacker's target label.
        mask: ``[L, H]`` head mask, 1 keeps a head, 0 prunes it.

    Returns:
        :class:`EvalReport`.
    """
    clean_eval = Evaluator(model, tokenizer, clean_test, batch_size=batch_size, max_length=max_length)
    acc = accuracy(clean_eval.predictions(mask), clean_eval.require_labels())
    lfr: float | None = None
    n_poison = 0
    if poisoned_test is not None:
        true = list(poisoned_test.labels) if poisoned_true_labels is None else list(poisoned_true_labels)
        if len(true) != len(poisoned_test.sentences):
            raise ValueError(f"{len(poisoned_test.sentences)} poisoned sentences but {len(true)} true labels")
        poison_eval = Evaluator(model, tokenizer, list(poisoned_test.sentences), batch_size=batch_size,
                                max_length=max_length)
        lfr = label_flip_rate(poison_eval.predictions(mask), true, target_label)
        n_poison = sum(1 for y in true if int(y) != target_label)
    return EvalReport(acc=acc, lfr=lfr, n_clean=len(clean_eval), n_poison=n_poison)
