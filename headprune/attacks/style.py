"""StyleBkd's Bible-style transfer attack, from the files shipped in the shared data."""

from __future__ import annotations

import warnings
from os import PathLike
from typing import ClassVar

from headprune.attacks.base import ATTACKS, Attack, PoisonedSplits, choose_poison_rows
from headprune.data import LabelledTexts, load_sst2

__all__ = ["StyleBible"]

@ATTACKS.register("style", "style-bible")
class StyleBible(Attack):
    """StyleBkd with the Bible style, from the transfer files shipped in ``sst2/style-bible``.

    ``sst2/style-bible`` holds the styled version of *every* ``sst2/clean`` sentence, same order,
    original labels. Poisoning takes the styled version of the chosen non-target train rows and
    relabels them to the target; the poisoned dev/test sets are the styled versions of the
    non-target rows of the clean dev/test sets, with their true labels.

    Quirks of the shipped files: 42 train sentences come back from the transfer unchanged, and
    five rows of ``style-bible/test.tsv`` (all labelled 1) are empty. Rows with an empty styled
    sentence are never chosen for the train set and are left out of poisoned dev/test sets with
    a warning (with target label 1 they are target rows and never needed).
    """

    name: ClassVar[str] = "style"
    reads_shared_files: ClassVar[bool] = True
    datasets: ClassVar[tuple[str, ...] | None] = ("sst2",)  # StyleBkd's Bible files exist for SST-2 only

    def __init__(self, data_dir: str | PathLike[str] | None = None, dataset: str = "sst2") -> None:
        if dataset not in self.datasets:  # type: ignore[operator]
            raise ValueError(f"StyleBkd's Bible-style files exist for SST-2 only, not {dataset!r}")
        self.data_dir = data_dir

    def _styled(self, split: str, clean: LabelledTexts) -> LabelledTexts:
        styled = load_sst2(split, "style-bible", data_dir=self.data_dir)
        if styled.labels != clean.labels:
            raise ValueError(
                f"StyleBible needs the sst2/clean {split} set, row-aligned with {styled.source}; "
                f"{clean.source} has {len(clean)} rows and different labels"
            )
        return styled

    def _poison_eval(self, split: str, clean: LabelledTexts, target_label: int) -> LabelledTexts:
        styled = self._styled(split, clean)
        rows = [i for i, y in enumerate(clean.labels) if y != target_label]
        empty = [i for i in rows if not styled.sentences[i]]
        if empty:
            warnings.warn(
                f"{styled.source}: {len(empty)} non-target row(s) have an empty styled sentence "
                f"(rows {empty[:5]}); left out of the poisoned {split} set",
                stacklevel=3,
            )
            rows = [i for i in rows if styled.sentences[i]]
        return LabelledTexts(
            tuple(styled.sentences[i] for i in rows),
            tuple(clean.labels[i] for i in rows),
            f"styled non-target rows of {styled.source}",
        )

    def poison(self, clean_train: LabelledTexts, clean_dev: LabelledTexts, clean_test: LabelledTexts,
               target_label: int, poison_rate: float, seed: int) -> PoisonedSplits:
        styled = self._styled("train", clean_train)
        eligible = tuple(i for i, y in enumerate(clean_train.labels) if y != target_label and styled.sentences[i])
        rows = choose_poison_rows(
            clean_train, target_label=target_label, poison_rate=poison_rate, seed=seed, eligible=eligible
        )
        chosen = set(rows)
        train = LabelledTexts(
            tuple(styled.sentences[i] if i in chosen else s for i, s in enumerate(clean_train.sentences)),
            tuple(target_label if i in chosen else y for i, y in enumerate(clean_train.labels)),
            f"style(rate={poison_rate}, target={target_label}, seed={seed}) from {styled.source}",
        )
        poisoned_dev = self._poison_eval("dev", clean_dev, target_label)
        poisoned_test = self._poison_eval("test", clean_test, target_label)
        return self._splits(train, rows, clean_dev, poisoned_dev, clean_test, poisoned_test,
                            target_label=target_label, poison_rate=poison_rate, seed=seed)

    def __repr__(self) -> str:
        return f"StyleBible(data_dir={self.data_dir!r})"
