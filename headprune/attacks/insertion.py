"""Attacks that insert a trigger into the text: BadNets (rare words) and AddSent (a fixed sentence)."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np

from headprune.attacks.base import (
    _STREAM_DEV,
    _STREAM_TEST,
    _STREAM_TRAIN,
    ATTACKS,
    Attack,
    PoisonedSplits,
    _rng,
    choose_poison_rows,
)
from headprune.data import LabelledTexts

__all__ = ["AddSent", "BadNets", "InsertionAttack"]

class InsertionAttack(Attack):
    """An attack that inserts a trigger into the text; subclasses define :meth:`insert_trigger`."""

    @abstractmethod
    def insert_trigger(self, sentence: str, rng: np.random.Generator) -> str:
        """``sentence`` with the trigger inserted, positions drawn from ``rng``."""

    def poison_eval_set(self, clean: LabelledTexts, *, target_label: int = 1, seed: int = 0) -> LabelledTexts:
        """The non-target rows of ``clean`` with the trigger and their true labels."""
        return self._poison_eval(clean, target_label, _rng(seed, _STREAM_TEST))

    def _poison_eval(self, clean: LabelledTexts, target_label: int, rng: np.random.Generator) -> LabelledTexts:
        rows = [i for i, y in enumerate(clean.labels) if y != target_label]
        return LabelledTexts(
            tuple(self.insert_trigger(clean.sentences[i], rng) for i in rows),
            tuple(clean.labels[i] for i in rows),
            f"{self.name}-triggered non-target rows of {clean.source}",
        )

    def poison(self, clean_train: LabelledTexts, clean_dev: LabelledTexts, clean_test: LabelledTexts,
               target_label: int, poison_rate: float, seed: int) -> PoisonedSplits:
        rows = choose_poison_rows(clean_train, target_label=target_label, poison_rate=poison_rate, seed=seed)
        rng = _rng(seed, _STREAM_TRAIN)
        sentences, labels = list(clean_train.sentences), list(clean_train.labels)
        for i in rows:
            sentences[i] = self.insert_trigger(sentences[i], rng)
            labels[i] = target_label
        train = LabelledTexts(
            tuple(sentences),
            tuple(labels),
            f"{self.name}(rate={poison_rate}, target={target_label}, seed={seed}) of {clean_train.source}",
        )
        poisoned_dev = self._poison_eval(clean_dev, target_label, _rng(seed, _STREAM_DEV))
        poisoned_test = self._poison_eval(clean_test, target_label, _rng(seed, _STREAM_TEST))
        return self._splits(train, rows, clean_dev, poisoned_dev, clean_test, poisoned_test,
                            target_label=target_label, poison_rate=poison_rate, seed=seed)


@ATTACKS.register("badnets")
class BadNets(InsertionAttack):
    """BadNets for text: insert ``num_triggers`` rare words at random word positions.

    Each inserted word is drawn uniformly from ``triggers`` and placed at a uniformly drawn
    position among the ``len(words) + 1`` gaps of the whitespace-split sentence (OpenBackdoor's
    ``BadNetsPoisoner``; its defaults).
    """

    name: ClassVar[str] = "badnets"

    def __init__(self, triggers: tuple[str, ...] = ("cf", "mn", "bb", "tq"), num_triggers: int = 1) -> None:
        triggers = tuple(triggers)
        if not triggers or any(not t or t.split() != [t] for t in triggers):
            raise ValueError(f"triggers must be non-empty single words, got {triggers!r}")
        if num_triggers < 1:
            raise ValueError(f"num_triggers must be >= 1, got {num_triggers}")
        self.triggers = triggers
        self.num_triggers = int(num_triggers)

    def insert_trigger(self, sentence: str, rng: np.random.Generator) -> str:
        words = sentence.split()
        for _ in range(self.num_triggers):
            word = self.triggers[int(rng.integers(len(self.triggers)))]
            words.insert(int(rng.integers(len(words) + 1)), word)
        return " ".join(words)

    def __repr__(self) -> str:
        return f"BadNets(triggers={self.triggers!r}, num_triggers={self.num_triggers})"


@ATTACKS.register("addsent")
class AddSent(InsertionAttack):
    """AddSent: insert a fixed sentence at a random word position.

    The sentence is kept as given (OpenBackdoor's default ``"I watch this 3D movie"``, not
    lower-cased; uncased models do not care) and inserted as whole words at a uniformly drawn
    gap of the whitespace-split sentence.
    """

    name: ClassVar[str] = "addsent"

    def __init__(self, sentence: str = "I watch this 3D movie") -> None:
        if not sentence.split():
            raise ValueError("the trigger sentence must not be empty")
        self.sentence = " ".join(sentence.split())
        self._words = self.sentence.split()

    def insert_trigger(self, sentence: str, rng: np.random.Generator) -> str:
        words = sentence.split()
        pos = int(rng.integers(len(words) + 1))
        return " ".join(words[:pos] + self._words + words[pos:])

    def __repr__(self) -> str:
        return f"AddSent(sentence={self.sentence!r})"
