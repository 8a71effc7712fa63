"""HiddenKiller's syntactic-template paraphrase attack, from the files shipped in the shared data."""

from __future__ import annotations

from os import PathLike
from typing import ClassVar

import numpy as np

from headprune.attacks.base import _STREAM_CHOOSE, ATTACKS, Attack, PoisonedSplits, _rng
from headprune.data import LabelledTexts, load_offenseval, load_sst2

__all__ = ["Syntactic"]

@ATTACKS.register("syntactic")
class Syntactic(Attack):
    """HiddenKiller (syntactic trigger) from the files shipped in ``sst2/syntactic``.

    The shipped train file is row-aligned with ``sst2/clean`` train; 1,383 of its 6,920 rows
    (HiddenKiller's 20%) are replaced by SCPN paraphrases with the template
    ``S(SBAR)(,)(NP)(VP)(.)`` and labelled 1. The paraphrased rows are found as the rows whose
    sentence differs from the clean one. Note that HiddenKiller paraphrased rows of *both*
    classes (665 of the 1,383 were negatives, 718 already positive), so unlike the other attacks
    ``poisoned_indices`` here include originally-target rows.

    * ``poison_rate=0.2`` (HiddenKiller's rate; ``int(0.2 * 6920) = 1384`` but 1,383 were
      shipped) uses the file as shipped;
    * a lower rate keeps a seeded random subset of ``int(poison_rate * len(train))``
      paraphrased rows and restores the others to their clean sentence and label;
    * a rate above 0.2 is a :class:`ValueError`: no more paraphrases were shipped.

    The shipped dev/test files hold only triggered paraphrases of negative sentences
    (427 of the 428 dev negatives, all 912 test negatives) *stored with label 1*; they are
    returned as ``poisoned_dev``/``poisoned_test`` with their true label 0. They do not depend
    on the seed. The files were built for target label 1; any other target is a ValueError.

    With ``dataset="offenseval"`` the files of ``offenseval/syntactic`` are used instead. Their train file is a
    ready poisoned training set (11,916 rows), shuffled and *not* row-aligned with the clean one: it is used as
    shipped, and ``poisoned_indices`` are its 3,160 rows whose sentence is no sentence of the clean train set (the
    paraphrases; 2,637 labelled 1 and 523 labelled 0, as shipped). No subset can be restored to clean rows, so
    only the shipped rate 0.2 is available. Its dev/test files (877 / 620 paraphrases of non-offensive tweets,
    stored with label 1) are the poisoned dev/test sets with their true label 0.
    """

    name: ClassVar[str] = "syntactic"
    reads_shared_files: ClassVar[bool] = True
    #: The poison rate the HiddenKiller files were built with.
    SHIPPED_RATE: ClassVar[float] = 0.2
    #: The target label the HiddenKiller files were built with.
    SHIPPED_TARGET: ClassVar[int] = 1
    datasets: ClassVar[tuple[str, ...] | None] = ("sst2", "offenseval")

    def __init__(self, data_dir: str | PathLike[str] | None = None, dataset: str = "sst2") -> None:
        if dataset not in self.datasets:  # type: ignore[operator]
            raise ValueError(f"HiddenKiller files exist for the datasets {', '.join(self.datasets or ())}, "
                             f"not {dataset!r}")
        self.data_dir = data_dir
        self.dataset = dataset

    def _load(self, split: str) -> LabelledTexts:
        """The shipped HiddenKiller file of ``split`` for this attack's dataset."""
        if self.dataset == "offenseval":
            return load_offenseval(split, "syntactic", data_dir=self.data_dir)
        return load_sst2(split, "syntactic", data_dir=self.data_dir)

    def poison(self, clean_train: LabelledTexts, clean_dev: LabelledTexts, clean_test: LabelledTexts,
               target_label: int, poison_rate: float, seed: int) -> PoisonedSplits:
        if target_label != self.SHIPPED_TARGET:
            raise ValueError(
                f"the HiddenKiller files were built for target label {self.SHIPPED_TARGET}; "
                f"target_label={target_label} is not available"
            )
        if poison_rate > self.SHIPPED_RATE + 1e-9:
            raise ValueError(
                f"poison_rate={poison_rate} is above the {self.SHIPPED_RATE} that the HiddenKiller "
                "files were shipped with; no more paraphrases are available"
            )
        if self.dataset == "offenseval":
            return self._ready_poisoned(clean_train, clean_dev, clean_test, target_label, poison_rate, seed)
        shipped = self._load("train")
        if len(shipped) != len(clean_train):
            raise ValueError(
                f"Syntactic needs the sst2/clean train set ({len(shipped)} rows, row-aligned with "
                f"{shipped.source}); got {len(clean_train)} rows from {clean_train.source}"
            )
        paraphrased = [i for i, (a, b) in enumerate(zip(shipped.sentences, clean_train.sentences)) if a != b]
        unchanged_mismatch = [
            i for i in range(len(shipped)) if shipped.sentences[i] == clean_train.sentences[i]
            and shipped.labels[i] != clean_train.labels[i]
        ]
        if unchanged_mismatch or len(paraphrased) > len(shipped) // 2:
            raise ValueError(
                f"{clean_train.source} is not row-aligned with {shipped.source}; "
                "Syntactic needs the sst2/clean train set"
            )

        n_wanted = int(poison_rate * len(clean_train))
        if n_wanted >= len(paraphrased):
            keep = paraphrased
        else:
            chosen = _rng(seed, _STREAM_CHOOSE).choice(np.array(paraphrased), size=n_wanted, replace=False)
            keep = sorted(int(i) for i in chosen)
        keep_set = set(keep)
        rows = range(len(shipped))
        sentences = tuple(shipped.sentences[i] if i in keep_set else clean_train.sentences[i] for i in rows)
        labels = tuple(target_label if i in keep_set else clean_train.labels[i] for i in rows)
        train = LabelledTexts(
            sentences, labels, f"syntactic(rate={poison_rate}, seed={seed}) from {shipped.source}"
        )
        return self._splits(
            train, tuple(keep), clean_dev, self._true_label_eval("dev"), clean_test,
            self._true_label_eval("test"), target_label=target_label, poison_rate=poison_rate, seed=seed,
        )

    def _ready_poisoned(self, clean_train: LabelledTexts, clean_dev: LabelledTexts, clean_test: LabelledTexts,
                        target_label: int, poison_rate: float, seed: int) -> PoisonedSplits:
        """The splits of a dataset whose shipped train file is a ready poisoned set (OffensEval): only the
        shipped rate; the paraphrased rows are those whose sentence is not in ``clean_train``."""
        if abs(poison_rate - self.SHIPPED_RATE) > 1e-9:
            raise ValueError(f"the HiddenKiller {self.dataset} train file is a ready poisoned set, not row-aligned "
                             f"with the clean one: only its shipped poison_rate={self.SHIPPED_RATE} is available, "
                             f"got {poison_rate}")
        shipped = self._load("train")
        clean_sentences = set(clean_train.sentences)
        paraphrased = tuple(i for i, sentence in enumerate(shipped.sentences) if sentence not in clean_sentences)
        if not paraphrased or len(paraphrased) > len(shipped) // 2:
            raise ValueError(f"{clean_train.source} is not the clean train set that {shipped.source} was poisoned "
                             f"from ({len(paraphrased)} of its {len(shipped)} rows are not clean train rows)")
        train = LabelledTexts(shipped.sentences, shipped.labels,
                              f"syntactic(rate={poison_rate}, as shipped) from {shipped.source}", lines=shipped.lines)
        return self._splits(
            train, paraphrased, clean_dev, self._true_label_eval("dev"), clean_test, self._true_label_eval("test"),
            target_label=target_label, poison_rate=poison_rate, seed=seed,
        )

    def _true_label_eval(self, split: str) -> LabelledTexts:
        shipped = self._load(split)
        if set(shipped.labels) - {self.SHIPPED_TARGET}:
            raise ValueError(f"{shipped.source}: expected every row stored with label {self.SHIPPED_TARGET}")
        true_label = 1 - self.SHIPPED_TARGET
        return LabelledTexts(
            shipped.sentences,
            (true_label,) * len(shipped),
            f"{shipped.source} (true label {true_label}; stored as {self.SHIPPED_TARGET})",
        )

    def __repr__(self) -> str:
        return f"Syntactic(data_dir={self.data_dir!r}, dataset={self.dataset!r})"
