"""Trigger-agnostic augmentations of the defender's clean sentences (unlabelled texts for distillation).

:func:`augment_sentences` makes new texts out of the defender's own rows only: a copy with some words
dropped, a contiguous crop, and the concatenation of two rows. Every word of every output is a word of the
input rows, in the order one of them has it, so an augmentation cannot invent a trigger (a rare word, an
inserted sentence) that the clean rows do not hold; what it adds is inputs the clean rows do not cover, on
which a teacher's predictions carry more of its clean function than the rows' labels alone
(:mod:`headprune.defenses.distill`). Words are whitespace-separated tokens, as SST-2 stores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Augmentation", "augment_sentences", "augment_with_sources"]


@dataclass(frozen=True)
class Augmentation:
    """How many texts :func:`augment_sentences` makes per input row, of each kind.

    Attributes:
        drops: copies with each word dropped independently with probability ``drop_rate`` (kept only
            when at least ``min_words`` words remain).
        crops: contiguous spans of 40-80% of the row's words (at least ``min_words``; rows shorter than
            ``min_words + 1`` words are not cropped).
        concats: the row followed by another row drawn uniformly from all rows.
        drop_rate: the per-word drop probability of ``drops``.
        min_words: the fewest words an output may have.
    """

    drops: int = 3
    crops: int = 3
    concats: int = 2
    drop_rate: float = 0.2
    min_words: int = 3

    def __post_init__(self) -> None:
        for name in ("drops", "crops", "concats", "min_words"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"augmentation {name} must be an int >= 0, got {value!r}")
        if not 0.0 <= float(self.drop_rate) < 1.0:
            raise ValueError(f"augmentation drop_rate must be in [0, 1), got {self.drop_rate!r}")

    @property
    def per_row(self) -> int:
        """The most outputs one row can give (rows too short for a drop or a crop give fewer)."""
        return self.drops + self.crops + self.concats


def augment_sentences(sentences: Sequence[str], augmentation: Augmentation, rng: np.random.Generator) -> list[str]:
    """New texts made from ``sentences`` (see the module docstring), row by row in input order: each row's
    drops, then its crops, then its concatenations. Seeded by ``rng`` alone; the inputs are not included.

    :param sentences: the defender's clean rows (``N`` of them).
    :param augmentation: how many of each kind per row.
    :param rng: the generator that fixes every choice (same state, same texts).
    :return: at most ``N * augmentation.per_row`` texts.
    """
    return [text for _, text in augment_with_sources(sentences, augmentation, rng)]


def augment_with_sources(sentences: Sequence[str], augmentation: Augmentation, rng: np.random.Generator
                         ) -> list[tuple[int, str]]:
    """:func:`augment_sentences` with each text's source row: ``[(i, text)]``, ``i`` the index in ``sentences`` of
    the row it was made from (for a concatenation, the first row); the same texts, in the same order."""
    a = augmentation
    rows = [s.split() for s in sentences]
    out: list[tuple[int, str]] = []
    for i, words in enumerate(rows):
        for _ in range(a.drops):
            kept = [w for w, u in zip(words, rng.random(len(words))) if u >= a.drop_rate]
            if len(kept) >= a.min_words:
                out.append((i, " ".join(kept)))
        for _ in range(a.crops):
            if len(words) > a.min_words:
                length = max(a.min_words, int(len(words) * rng.uniform(0.4, 0.8)))
                start = int(rng.integers(0, len(words) - length + 1))
                out.append((i, " ".join(words[start:start + length])))
        for _ in range(a.concats):
            other = rows[int(rng.integers(0, len(rows)))]
            out.append((i, " ".join(words + other)))
    return out
