"""The labelled-text type of headprune (:class:`LabelledTexts`) and the errors and warnings of its readers."""

from __future__ import annotations

import operator
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["DataFormatError", "DuplicateRowsWarning", "Duplicates", "LabelledTexts", "SkippedRowsWarning"]


class DataFormatError(ValueError):
    """A labelled-text file is malformed.

    The message always reads ``"<file>, line <n>: <what is wrong>"``; the parts are also
    available as :attr:`path`, :attr:`line` (1-based) and :attr:`reason`.
    """

    def __init__(self, path: str | os.PathLike[str], line: int, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}, line {line}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # keep it picklable (multiprocessing, pytest-xdist)
        return (type(self), (self.path, self.line, self.reason))


class SkippedRowsWarning(UserWarning):
    """Rows of a labelled-text file were skipped because ``skip_bad_rows=True``."""


class DuplicateRowsWarning(UserWarning):
    """A labelled-text file repeats rows (same sentence and label); they were kept."""


Duplicates = Literal["warn", "keep", "drop"]


@dataclass(frozen=True)
class LabelledTexts:
    """An immutable sequence of ``(sentence, label)`` pairs.

    Attributes:
        sentences: the texts, as stored (surrounding whitespace stripped by the reader).
        labels: integer class labels, one per sentence.
        source: where the rows came from (a file path or a short description).
        skipped: 1-based line numbers of the rows :func:`read_labelled_text` dropped with
            ``skip_bad_rows=True``; empty otherwise and for every derived set (``subset``,
            ``take``, ``concat``). Not part of equality.
        lines: 1-based line number of each row in its file (kept by ``subset``, ``take``,
            ``concat`` and ``deduplicated`` when every part has them); empty for rows built in
            memory. Not part of equality; error messages use it to name a row's line.
        checked_classes: the class count the labels were checked against where the rows entered
            (:func:`headprune.data.checks.check_labels`, which sets it), so later stages do not rescan
            them; ``None``: unchecked. Kept by ``subset``, ``take`` and ``deduplicated``, and by
            ``concat`` when both parts agree. Not part of equality. The constructor verifies a given mark
            (a bound check over the labels, with no line-naming error: that is ``check_labels``'s), so a
            mark always holds.

    Lists, numpy arrays and other iterables are accepted and stored as tuples; a length mismatch
    or a non-string sentence is a :class:`ValueError` / :class:`TypeError`.
    """

    sentences: tuple[str, ...]
    labels: tuple[int, ...]
    source: str = "<memory>"
    skipped: tuple[int, ...] = field(default=(), compare=False)
    lines: tuple[int, ...] = field(default=(), compare=False)
    checked_classes: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        sentences = tuple(self.sentences)
        labels = tuple(int(operator.index(label)) for label in self.labels)
        if len(sentences) != len(labels):
            raise ValueError(
                f"LabelledTexts({self.source}): {len(sentences)} sentences but {len(labels)} labels"
            )
        for i, sentence in enumerate(sentences):
            if not isinstance(sentence, str):
                raise TypeError(
                    f"LabelledTexts({self.source}): sentence {i} is {type(sentence).__name__}, not str"
                )
        object.__setattr__(self, "sentences", sentences)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "source", str(self.source))
        object.__setattr__(self, "skipped", tuple(int(n) for n in self.skipped))
        lines = tuple(int(n) for n in self.lines)
        if lines and len(lines) != len(sentences):
            raise ValueError(f"LabelledTexts({self.source}): {len(lines)} line numbers for {len(sentences)} rows")
        object.__setattr__(self, "lines", lines)
        checked = self.checked_classes
        if checked is not None and (isinstance(checked, bool) or not isinstance(checked, int) or checked < 2
                                    or any(not 0 <= label < checked for label in labels)):
            raise ValueError(f"LabelledTexts({self.source}): checked_classes={checked!r} does not hold for its labels")

    def __len__(self) -> int:
        return len(self.sentences)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return zip(self.sentences, self.labels, strict=True)

    def subset(self, indices: Iterable[int]) -> LabelledTexts:
        """The rows at ``indices`` (in that order; repeats allowed; numpy integers accepted)."""
        idx = [operator.index(i) for i in indices]
        n = len(self)
        for i in idx:
            if not 0 <= i < n:
                raise IndexError(f"LabelledTexts({self.source}): index {i} out of range for {n} rows")
        return LabelledTexts(
            tuple(self.sentences[i] for i in idx), tuple(self.labels[i] for i in idx), self.source,
            lines=tuple(self.lines[i] for i in idx) if self.lines else (), checked_classes=self.checked_classes,
        )

    def take(self, n: int) -> LabelledTexts:
        """The first ``n`` rows (all rows when ``n`` exceeds the length)."""
        n = operator.index(n)
        if n < 0:
            raise ValueError(f"take(n) needs n >= 0, got {n}")
        return LabelledTexts(self.sentences[:n], self.labels[:n], self.source, lines=self.lines[:n],
                             checked_classes=self.checked_classes)

    def concat(self, other: LabelledTexts) -> LabelledTexts:
        """These rows followed by the rows of ``other``."""
        if not isinstance(other, LabelledTexts):
            raise TypeError(f"concat needs a LabelledTexts, got {type(other).__name__}")
        source = self.source if self.source == other.source else f"{self.source} + {other.source}"
        lines = self.lines + other.lines if self.lines and other.lines else ()
        checked = self.checked_classes if self.checked_classes == other.checked_classes else None
        return LabelledTexts(self.sentences + other.sentences, self.labels + other.labels, source, lines=lines,
                             checked_classes=checked)

    def duplicate_indices(self) -> tuple[int, ...]:
        """Indices of the rows whose (sentence, label) pair occurred in an earlier row."""
        seen: set[tuple[str, int]] = set()
        repeats = []
        for i, row in enumerate(self):
            if row in seen:
                repeats.append(i)
            seen.add(row)
        return tuple(repeats)

    def deduplicated(self) -> LabelledTexts:
        """These rows without repeats: the first occurrence of each (sentence, label) pair, in order."""
        repeats = set(self.duplicate_indices())
        return self.subset(i for i in range(len(self)) if i not in repeats) if repeats else self

    def label_counts(self) -> dict[int, int]:
        """Number of rows per label, sorted by label."""
        counts: dict[int, int] = {}
        for label in self.labels:
            counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items()))

    def majority_share(self) -> float:
        """Share of the rows that carry the most frequent label: a constant classifier's accuracy on them."""
        if not self.labels:
            raise ValueError(f"{self.source}: no rows, so no majority share")
        return max(self.label_counts().values()) / len(self.labels)

    def indices_with_label(self, label: int) -> tuple[int, ...]:
        """Row indices whose label equals ``label``."""
        return tuple(i for i, y in enumerate(self.labels) if y == label)
