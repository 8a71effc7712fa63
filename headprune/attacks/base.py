"""The attack protocol: :class:`Attack`, its :class:`PoisonedSplits`, the poisoned-row draw and the
:data:`ATTACKS` registry (conventions in :mod:`headprune.attacks`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from headprune.data import LabelledTexts
from headprune.common.registry import Registry

__all__ = ["ATTACKS", "Attack", "PoisonedSplits", "choose_poison_rows"]

ATTACKS: Registry[type["Attack"]] = Registry("attack", case_insensitive=True)
"""Every attack class by name (case-insensitive), in registration order."""

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
    """A backdoor attack: turns clean splits of a binary task (SST-2, OffensEval) into :class:`PoisonedSplits`."""

    #: Registry name of the attack.
    name: ClassVar[str]
    #: Whether the attack reads pre-computed files from the shared data (then it takes ``data_dir`` and
    #: ``dataset``, the name of the task those files belong to).
    reads_shared_files: ClassVar[bool] = False
    #: The datasets (:data:`headprune.data.DATASETS`) the attack can poison; ``None``: any (it edits text itself).
    datasets: ClassVar[tuple[str, ...] | None] = None
    #: The poison rate of the attack's paper, used when none is given (0.2: HiddenKiller's and StyleBkd's).
    default_poison_rate: ClassVar[float] = 0.2

    def make_splits(
        self,
        clean_train: LabelledTexts,
        clean_dev: LabelledTexts,
        clean_test: LabelledTexts,
        *,
        target_label: int = 1,
        poison_rate: float | None = None,
        seed: int = 0,
    ) -> PoisonedSplits:
        """Poison ``clean_train`` and build the poisoned dev/test sets (see :mod:`headprune.attacks`).

        ``poison_rate=None`` is the attack's :attr:`default_poison_rate`. The arguments are checked here;
        :meth:`poison` does the attack's work."""
        if poison_rate is None:
            poison_rate = self.default_poison_rate
        _check_args(target_label, poison_rate, seed)
        return self.poison(clean_train, clean_dev, clean_test, target_label, poison_rate, seed)

    @abstractmethod
    def poison(self, clean_train: LabelledTexts, clean_dev: LabelledTexts, clean_test: LabelledTexts,
               target_label: int, poison_rate: float, seed: int) -> PoisonedSplits:
        """The attack's splits for checked arguments (``make_splits`` is the public entry)."""

    def _splits(self, train: LabelledTexts, rows: tuple[int, ...] | list[int], clean_dev: LabelledTexts,
                poisoned_dev: LabelledTexts, clean_test: LabelledTexts, poisoned_test: LabelledTexts, *,
                target_label: int, poison_rate: float, seed: int) -> PoisonedSplits:
        """The :class:`PoisonedSplits` of this attack (every subclass's ``make_splits`` ends here)."""
        return PoisonedSplits(attack=self.name, target_label=target_label, poison_rate=poison_rate, seed=seed,
                              poisoned_train=train, poisoned_indices=tuple(rows), clean_dev=clean_dev,
                              poisoned_dev=poisoned_dev, clean_test=clean_test, poisoned_test=poisoned_test)
