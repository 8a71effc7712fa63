"""Backdoor poisoners for sentence classification, following OpenBackdoor's conventions.

Conventions (those of thunlp/OpenBackdoor's ``Poisoner`` with ``label_dirty=True``):

* **Target label** ``target_label`` (default 1, "positive" in SST-2).
* **Poison rate** ``poison_rate`` is a share of the *whole* train set: ``int(poison_rate *
  len(train))`` rows are poisoned.
* **Dirty-label poisoning of non-target rows**: the rows are drawn, without replacement, from
  the train rows whose label is not the target, with a seeded :func:`numpy.random.default_rng`;
  each gets the trigger and is relabelled to the target. Too few non-target rows is an error.
  Unlike OpenBackdoor (which appends the poisoned rows after the clean ones), the poisoned train
  set keeps the row order of the clean one: row ``i`` of ``poisoned_train`` is row ``i`` of the
  clean train set, triggered and relabelled when ``i`` is in ``poisoned_indices``.
* **Poisoned evaluation sets** are the non-target rows of the clean dev/test sets with the
  trigger, keeping their *true* labels (all different from the target). The label-flip rate
  (LFR, a.k.a. attack success rate) is the share of them predicted as the target label.
  ``poisoned_dev`` exists for analysis; a defender never sees it.
* Seeds: the same seed gives identical splits; independent random streams are used for the
  choice of train rows and for trigger insertion in train, dev and test, so e.g. the poisoned
  test set does not change with the poison rate.

Attacks:

* :class:`BadNets`: rare-word triggers (``cf``, ``mn``, ``bb``, ``tq``) inserted at random
  word positions (Gu et al. 2017, "BadNets"; the text version of Kurita et al. 2020 / OpenBackdoor).
* :class:`AddSent`: a fixed sentence (``"I watch this 3D movie"``) inserted at a random word
  position (Dai et al. 2019, "A backdoor attack against LSTM-based text classification systems").
* :class:`Syntactic`: HiddenKiller's syntactic-template paraphrases as shipped (Qi et al. 2021,
  "Hidden Killer: Invisible Textual Backdoor Attacks with Syntactic Trigger"; thunlp/HiddenKiller).
* :class:`StyleBible`: StyleBkd's Bible-style transfer (Qi et al. 2021, "Mind the Style of Text!
  Adversarial and Backdoor Attacks Based on Text Style Transfer"; thunlp/StyleAttack).

The two paraphrase attacks read their pre-computed files from the shared data
(:func:`headprune.data.load_sst2`); see each class for how the shipped files are used.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from os import PathLike
from typing import ClassVar

import numpy as np

from headprune.data import LabelledTexts, load_sst2

__all__ = [
    "ATTACK_NAMES",
    "AddSent",
    "Attack",
    "BadNets",
    "InsertionAttack",
    "PoisonedSplits",
    "StyleBible",
    "Syntactic",
    "choose_poison_rows",
    "load_attack_splits",
    "make_attack",
]

# Independent random streams derived from the seed (SeedSequence spawn keys).
_STREAM_CHOOSE, _STREAM_TRAIN, _STREAM_DEV, _STREAM_TEST = range(4)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


@dataclass(frozen=True)
class PoisonedSplits:
    """The data of one backdoor attack.

    Attributes:
        attack: the attack's name (``"badnets"``, ``"addsent"``, ``"syntactic"``, ``"style"``).
        target_label: the label the trigger flips predictions to.
        poison_rate: the requested share of the train set to poison.
        seed: the seed that chose the poisoned rows and trigger positions.
        poisoned_train: the train set the victim is trained on, row-aligned with the clean one.
        poisoned_indices: sorted indices of the poisoned rows of ``poisoned_train``.
        clean_dev, clean_test: the clean evaluation sets (for clean accuracy, CACC).
        poisoned_dev, poisoned_test: triggered non-target rows with their true labels (for the
            label-flip rate, LFR). The defender never gets ``poisoned_dev``.
    """

    attack: str
    target_label: int
    poison_rate: float
    seed: int
    poisoned_train: LabelledTexts
    poisoned_indices: tuple[int, ...]
    clean_dev: LabelledTexts
    poisoned_dev: LabelledTexts
    clean_test: LabelledTexts
    poisoned_test: LabelledTexts

    def __post_init__(self) -> None:
        object.__setattr__(self, "poisoned_indices", tuple(int(i) for i in self.poisoned_indices))
        for name in ("poisoned_dev", "poisoned_test"):
            if self.target_label in getattr(self, name).labels:
                raise ValueError(f"{name} must hold only true non-target labels, found {self.target_label}")


def _check_args(target_label: int, poison_rate: float, seed: int) -> None:
    if isinstance(target_label, bool) or not isinstance(target_label, (int, np.integer)):
        raise TypeError(f"target_label must be an int, got {target_label!r}")
    if not (isinstance(poison_rate, (int, float, np.floating)) and 0.0 <= poison_rate <= 1.0):
        raise ValueError(f"poison_rate must be a number in [0, 1], got {poison_rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def choose_poison_rows(
    train: LabelledTexts,
    *,
    target_label: int,
    poison_rate: float,
    seed: int,
    eligible: tuple[int, ...] | None = None,
) -> tuple[int, ...]:
    """Sorted indices of the ``int(poison_rate * len(train))`` non-target rows to poison.

    Args:
        eligible: restrict the draw to these rows (they must be non-target rows).

    Raises:
        ValueError: fewer non-target (eligible) rows than rows to poison.
    """
    _check_args(target_label, poison_rate, seed)
    n_poison = int(poison_rate * len(train))
    if eligible is None:
        pool = [i for i, y in enumerate(train.labels) if y != target_label]
    else:
        pool = list(eligible)
        if any(train.labels[i] == target_label for i in pool):
            raise ValueError("eligible rows must all have a non-target label")
    if n_poison > len(pool):
        raise ValueError(
            f"cannot poison {n_poison} rows (poison_rate={poison_rate} of {len(train)}): only "
            f"{len(pool)} eligible rows have a label other than the target {target_label}"
        )
    chosen = _rng(seed, _STREAM_CHOOSE).choice(np.asarray(pool, dtype=np.int64), size=n_poison, replace=False)
    return tuple(sorted(int(i) for i in chosen))


class Attack(ABC):
    """A backdoor attack: turns clean SST-2-like splits into :class:`PoisonedSplits`."""

    #: Registry name of the attack.
    name: ClassVar[str]

    @abstractmethod
    def make_splits(
        self,
        clean_train: LabelledTexts,
        clean_dev: LabelledTexts,
        clean_test: LabelledTexts,
        *,
        target_label: int = 1,
        poison_rate: float = 0.2,
        seed: int = 0,
    ) -> PoisonedSplits:
        """Poison ``clean_train`` and build the poisoned dev/test sets (see the module docstring)."""


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

    def make_splits(
        self,
        clean_train: LabelledTexts,
        clean_dev: LabelledTexts,
        clean_test: LabelledTexts,
        *,
        target_label: int = 1,
        poison_rate: float = 0.2,
        seed: int = 0,
    ) -> PoisonedSplits:
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
        return PoisonedSplits(
            attack=self.name,
            target_label=target_label,
            poison_rate=poison_rate,
            seed=seed,
            poisoned_train=train,
            poisoned_indices=rows,
            clean_dev=clean_dev,
            poisoned_dev=self._poison_eval(clean_dev, target_label, _rng(seed, _STREAM_DEV)),
            clean_test=clean_test,
            poisoned_test=self._poison_eval(clean_test, target_label, _rng(seed, _STREAM_TEST)),
        )


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
    """

    name: ClassVar[str] = "syntactic"
    #: The poison rate the HiddenKiller files were built with.
    SHIPPED_RATE: ClassVar[float] = 0.2
    #: The target label the HiddenKiller files were built with.
    SHIPPED_TARGET: ClassVar[int] = 1

    def __init__(self, data_dir: str | PathLike[str] | None = None) -> None:
        self.data_dir = data_dir

    def make_splits(
        self,
        clean_train: LabelledTexts,
        clean_dev: LabelledTexts,
        clean_test: LabelledTexts,
        *,
        target_label: int = 1,
        poison_rate: float = 0.2,
        seed: int = 0,
    ) -> PoisonedSplits:
        _check_args(target_label, poison_rate, seed)
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
        shipped = load_sst2("train", "syntactic", data_dir=self.data_dir)
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
        return PoisonedSplits(
            attack=self.name,
            target_label=target_label,
            poison_rate=poison_rate,
            seed=seed,
            poisoned_train=train,
            poisoned_indices=tuple(keep),
            clean_dev=clean_dev,
            poisoned_dev=self._true_label_eval("dev"),
            clean_test=clean_test,
            poisoned_test=self._true_label_eval("test"),
        )

    def _true_label_eval(self, split: str) -> LabelledTexts:
        shipped = load_sst2(split, "syntactic", data_dir=self.data_dir)
        if set(shipped.labels) - {self.SHIPPED_TARGET}:
            raise ValueError(f"{shipped.source}: expected every row stored with label {self.SHIPPED_TARGET}")
        true_label = 1 - self.SHIPPED_TARGET
        return LabelledTexts(
            shipped.sentences,
            (true_label,) * len(shipped),
            f"{shipped.source} (true label {true_label}; stored as {self.SHIPPED_TARGET})",
        )

    def __repr__(self) -> str:
        return f"Syntactic(data_dir={self.data_dir!r})"


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

    def __init__(self, data_dir: str | PathLike[str] | None = None) -> None:
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

    def make_splits(
        self,
        clean_train: LabelledTexts,
        clean_dev: LabelledTexts,
        clean_test: LabelledTexts,
        *,
        target_label: int = 1,
        poison_rate: float = 0.2,
        seed: int = 0,
    ) -> PoisonedSplits:
        _check_args(target_label, poison_rate, seed)
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
        return PoisonedSplits(
            attack=self.name,
            target_label=target_label,
            poison_rate=poison_rate,
            seed=seed,
            poisoned_train=train,
            poisoned_indices=rows,
            clean_dev=clean_dev,
            poisoned_dev=self._poison_eval("dev", clean_dev, target_label),
            clean_test=clean_test,
            poisoned_test=self._poison_eval("test", clean_test, target_label),
        )

    def __repr__(self) -> str:
        return f"StyleBible(data_dir={self.data_dir!r})"


_REGISTRY: dict[str, type[Attack]] = {
    "badnets": BadNets,
    "addsent": AddSent,
    "syntactic": Syntactic,
    "style": StyleBible,
}
_ALIASES: dict[str, str] = {"style-bible": "style"}
#: Names accepted by :func:`make_attack` (aliases included).
ATTACK_NAMES: tuple[str, ...] = tuple(_REGISTRY) + tuple(_ALIASES)


def make_attack(name: str, **kwargs: object) -> Attack:
    """The attack registered as ``name`` (case-insensitive), built with ``kwargs``.

    Names: ``"badnets"``, ``"addsent"``, ``"syntactic"``, ``"style"`` (alias ``"style-bible"``).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(ATTACK_NAMES)}")
    return _REGISTRY[key](**kwargs)  # type: ignore[arg-type]


def load_attack_splits(
    name: str,
    *,
    target_label: int = 1,
    poison_rate: float = 0.2,
    seed: int = 0,
    data_dir: str | PathLike[str] | None = None,
) -> PoisonedSplits:
    """Read the ``sst2/clean`` splits from the shared data and apply the attack ``name``."""
    kwargs: dict[str, object] = {}
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key in ("syntactic", "style") and data_dir is not None:
        kwargs["data_dir"] = data_dir
    attack = make_attack(name, **kwargs)
    clean = [load_sst2(split, "clean", data_dir=data_dir) for split in ("train", "dev", "test")]
    return attack.make_splits(*clean, target_label=target_label, poison_rate=poison_rate, seed=seed)
