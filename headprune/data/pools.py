"""Named defender pools: the clean rows a defender owns, for the clean-data budget of the benchmarks.

A pool is an ordered :class:`~headprune.data.texts.LabelledTexts`; a budget of ``N`` rows is its first ``N``
rows (``RunSettings.clean_rows``), so every budget's rows contain the smaller budgets' rows.

* ``"sst2-dev"``: the 872 clean SST-2 dev sentences (the default protocol: 616 fine-tune + 256 validation).
* ``"offenseval-dev"``: a seeded (:data:`OFFENSEVAL_DEV_SEED`) subset of :data:`OFFENSEVAL_DEV_ROWS` = 872 of the
  1,323 clean OffensEval dev tweets, in file order: the defender of an OffensEval victim gets the same budget
  as SST-2's (whose whole dev set is 872 rows), so the default protocol (616 fine-tune + 256 validation rows)
  and its results stay comparable across the two tasks.
* ``"sst2-dev+glue-train"``: those 872 rows, then the GLUE SST-2 train set (67,349 phrases and sentences)
  in a fixed permutation (seed :data:`GLUE_POOL_SEED`), without repeats and without any row whose sentence
  is also a sentence of the clean SST-2 dev or test split (so no test sentence reaches the defender). PURE's
  defender holds about 60k such rows; a budget of 2,256 or 8,256 rows leaves 2,000 or 8,000 fine-tune rows
  after the 256 validation rows (the env draws its validation rows at random from the whole budget, so at
  large budgets most of them are GLUE phrases).
* ``"offenseval-dev+train"``: ``"offenseval-dev"``'s 872 rows, then the clean OffensEval train tweets in a fixed
  permutation, without repeats and without any tweet of the dev or test split: OffensEval's unlabelled pool.

Unlabelled in-domain text (:func:`unlabelled_pool_texts`, ``RunSettings.unlabelled_rows``): the ``U`` sentences of
``"sst2-dev+glue-train"`` right after the defender's labelled rows, their labels dropped: disjoint from the labelled
rows, from dev and from test, and the larger counts contain the smaller; OffensEval's is
``"offenseval-dev+train"`` (:data:`UNLABELLED_POOLS`).

The GLUE rows are phrases of the SST training sentences; the victims were fine-tuned on (poisoned) SST-2 train,
so the pool shares sentences with the victim's clean training rows, never with its test rows. No pool reads
any poisoned file.
"""

from __future__ import annotations

import os

import numpy as np

from headprune.data.shared import load_glue_sst2_train, load_offenseval, load_sst2
from headprune.data.texts import LabelledTexts

__all__ = ["DATASET_DEFENDER_POOLS", "DEFENDER_POOLS", "GLUE_POOL_SEED", "OFFENSEVAL_DEV_ROWS", "OFFENSEVAL_DEV_SEED",
           "POOL_DATASETS", "UNLABELLED_POOLS", "check_pool_dataset", "check_unlabelled_pool",
           "defender_unlabelled_texts", "load_defender_pool", "unlabelled_pool_texts"]

GLUE_POOL_SEED = 0
"""The seed of the permutation of the GLUE rows in ``"sst2-dev+glue-train"`` and of the train tweets in
``"offenseval-dev+train"`` (fixed: one pool for all runs)."""

OFFENSEVAL_DEV_SEED = 0
"""The seed of the draw of ``"offenseval-dev"``'s rows (fixed: one defender pool for every victim and run seed)."""

OFFENSEVAL_DEV_ROWS = 872
"""Rows of ``"offenseval-dev"``: as many as SST-2's dev set, the default defender pool of SST-2 victims."""

DEFENDER_POOLS: tuple[str, ...] = ("sst2-dev", "sst2-dev+glue-train", "offenseval-dev", "offenseval-dev+train")
"""The pool names :func:`load_defender_pool` accepts."""

DATASET_DEFENDER_POOLS: dict[str, str] = {"sst2": "sst2-dev", "offenseval": "offenseval-dev"}
"""The default defender pool of a victim trained on each dataset (``Victim.defender_clean_data``)."""

POOL_DATASETS: dict[str, str] = {"sst2-dev": "sst2", "sst2-dev+glue-train": "sst2", "offenseval-dev": "offenseval",
                                 "offenseval-dev+train": "offenseval"}
"""The task (:data:`headprune.data.DATASETS`) whose rows each pool holds."""


UNLABELLED_POOLS: dict[str, str] = {"sst2": "sst2-dev+glue-train", "offenseval": "offenseval-dev+train"}
"""The pool whose sentences past the defender's labelled rows are a task's unlabelled in-domain text; the labelled
rows of that task's defender must be a prefix of it (the default ``"sst2-dev"`` rows are)."""


def check_unlabelled_pool(pool: str | None, dataset: str, victim: str) -> str:
    """The unlabelled pool of ``dataset`` when the defender's labelled rows (``pool``; ``None``: the victim's
    default) are a prefix of it; ValueError naming the victim or the pool otherwise."""
    own = UNLABELLED_POOLS.get(dataset)
    if own is None:
        raise ValueError(f"unlabelled_rows: victim {victim} was trained on {dataset}, which has no unlabelled pool "
                         f"(only {', '.join(UNLABELLED_POOLS)})")
    labelled = DATASET_DEFENDER_POOLS[dataset] if pool is None else pool
    if labelled not in (own, DATASET_DEFENDER_POOLS[dataset]):
        raise ValueError(f"unlabelled_rows: the labelled rows of clean_pool {labelled!r} are not a prefix of the "
                         f"unlabelled pool {own!r}")
    return own


def unlabelled_pool_texts(pool: str, labelled_rows: int, count: int, *,
                          data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The ``count`` sentences of the defender pool ``pool`` (an unlabelled pool: :func:`check_unlabelled_pool`)
    right after its first ``labelled_rows`` rows (the defender's labelled rows), without their labels.

    :raises ValueError: the pool holds fewer than ``labelled_rows + count`` rows (the message gives its size).
    """
    rows = load_defender_pool(pool, data_dir=data_dir)
    if labelled_rows < 0 or count < 1 or labelled_rows + count > len(rows):
        raise ValueError(f"unlabelled_rows: {count} sentences after {labelled_rows} labelled rows do not fit the "
                         f"{len(rows)} rows of pool {pool!r}")
    return list(rows.sentences[labelled_rows:labelled_rows + count])


def defender_unlabelled_texts(pool: str | None, dataset: str, victim: str, labelled_rows: int, count: int, *,
                              data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The ``count`` unlabelled sentences of a defender whose ``labelled_rows`` labelled rows come from ``pool``
    (``None``: the victim's default pool): :func:`check_unlabelled_pool` for the victim's ``dataset``, then
    :func:`unlabelled_pool_texts` of that pool right after the labelled rows.

    :raises ValueError: one line, from either check (the victim's task has no unlabelled pool, the labelled rows
        are not its prefix, or the sentences do not fit it).
    """
    own = check_unlabelled_pool(pool, dataset, victim)
    return unlabelled_pool_texts(own, labelled_rows, count, data_dir=data_dir)


def check_pool_dataset(pool: str | None, dataset: str, victim: str) -> None:
    """Refuse a defender pool of another task than the victim's ``dataset`` (``None``: the victim's own pool).

    :raises ValueError: one line naming the pool, the victim and the pools of its dataset.
    """
    if pool is None or POOL_DATASETS.get(pool, dataset) == dataset:
        return
    own = [name for name, task in POOL_DATASETS.items() if task == dataset]
    raise ValueError(f"clean_pool {pool!r} holds {POOL_DATASETS[pool]} rows, but victim {victim} was trained on "
                     f"{dataset}: its labels mean another task; give one of {', '.join(own)} (or no pool)")


def _normalised(sentence: str) -> str:
    return " ".join(sentence.lower().split())


def load_defender_pool(name: str, *, data_dir: str | os.PathLike[str] | None = None) -> LabelledTexts:
    """The rows of the defender pool ``name`` (see the module docstring), in their fixed order.

    Raises:
        ValueError: ``name`` is not one of :data:`DEFENDER_POOLS` (the message lists them).
        FileNotFoundError: the shared data is missing.
    """
    if name not in DEFENDER_POOLS:
        raise ValueError(f"unknown defender pool {name!r}; valid: {', '.join(DEFENDER_POOLS)}")
    if name == "offenseval-dev":
        every = load_offenseval("dev", "clean", data_dir=data_dir)
        rows = np.sort(np.random.default_rng(OFFENSEVAL_DEV_SEED).permutation(len(every))[:OFFENSEVAL_DEV_ROWS])
        chosen = every.subset(rows)
        return LabelledTexts(chosen.sentences, chosen.labels, f"defender pool {name} ({every.source}, "
                             f"{OFFENSEVAL_DEV_ROWS} rows, seed {OFFENSEVAL_DEV_SEED})", lines=chosen.lines)
    if name == "offenseval-dev+train":
        dev = load_defender_pool("offenseval-dev", data_dir=data_dir)
        return _extended(name, dev, load_offenseval("train", "clean", data_dir=data_dir),
                         load_offenseval("dev", "clean", data_dir=data_dir).sentences
                         + load_offenseval("test", "clean", data_dir=data_dir).sentences)
    dev = load_sst2("dev", "clean", data_dir=data_dir)
    if name == "sst2-dev":
        return dev
    test = load_sst2("test", "clean", data_dir=data_dir)
    return _extended(name, dev, load_glue_sst2_train(data_dir=data_dir), dev.sentences + test.sentences)


def _extended(name: str, first: LabelledTexts, more: LabelledTexts, held: tuple[str, ...]) -> LabelledTexts:
    """``first``, then the rows of ``more`` (deduplicated) in a fixed permutation (seed :data:`GLUE_POOL_SEED`)
    without any row whose sentence is one of ``held`` (the task's dev and test sentences)."""
    held_set = {_normalised(s) for s in held}
    more = more.deduplicated()
    order = np.random.default_rng(GLUE_POOL_SEED).permutation(len(more))
    keep = [int(i) for i in order if _normalised(more.sentences[int(i)]) not in held_set]
    pool = first.concat(more.subset(keep))
    return LabelledTexts(pool.sentences, pool.labels, f"defender pool {name}", lines=pool.lines)
