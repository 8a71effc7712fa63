"""Named defender pools: the clean rows a defender owns, for the clean-data budget of the benchmarks.

A pool is an ordered :class:`~headprune.data.texts.LabelledTexts`; a budget of ``N`` rows is its first ``N``
rows (``RunSettings.clean_rows``), so every budget's rows contain the smaller budgets' rows.

* ``"sst2-dev"``: the 872 clean SST-2 dev sentences (the default protocol: 616 fine-tune + 256 validation).
* ``"sst2-dev+glue-train"``: those 872 rows, then the GLUE SST-2 train set (67,349 phrases and sentences)
  in a fixed permutation (seed :data:`GLUE_POOL_SEED`), without repeats and without any row whose sentence
  is also a sentence of the clean SST-2 dev or test split (so no test sentence reaches the defender). PURE's
  defender holds about 60k such rows; a budget of 2,256 or 8,256 rows leaves 2,000 or 8,000 fine-tune rows
  after the 256 validation rows (the env draws its validation rows at random from the whole budget, so at
  large budgets most of them are GLUE phrases).

The GLUE rows are phrases of the SST training sentences; the victims were fine-tuned on (poisoned) SST-2 train,
so the pool shares sentences with the victim's clean training rows, never with its test rows. No pool reads
any poisoned file.
"""

from __future__ import annotations

import os

import numpy as np

from headprune.data.shared import load_glue_sst2_train, load_sst2
from headprune.data.texts import LabelledTexts

__all__ = ["DEFENDER_POOLS", "GLUE_POOL_SEED", "load_defender_pool"]

GLUE_POOL_SEED = 0
"""The seed of the permutation of the GLUE rows in ``"sst2-dev+glue-train"`` (fixed: one pool for all runs)."""

DEFENDER_POOLS: tuple[str, ...] = ("sst2-dev", "sst2-dev+glue-train")
"""The pool names :func:`load_defender_pool` accepts."""


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
    dev = load_sst2("dev", "clean", data_dir=data_dir)
    if name == "sst2-dev":
        return dev
    test = load_sst2("test", "clean", data_dir=data_dir)
    held = {_normalised(s) for s in dev.sentences + test.sentences}
    glue = load_glue_sst2_train(data_dir=data_dir).deduplicated()
    order = np.random.default_rng(GLUE_POOL_SEED).permutation(len(glue))
    keep = [int(i) for i in order if _normalised(glue.sentences[int(i)]) not in held]
    pool = dev.concat(glue.subset(keep))
    return LabelledTexts(pool.sentences, pool.labels, f"defender pool {name}", lines=pool.lines)
