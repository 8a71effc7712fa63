"""Reference scores per registered ``HeadPrune`` id, like Atari's random/human scores or D4RL's.

:data:`SCORES_FILE` (``headprune/reference_scores.json``, package data) holds, per env id, the mean
episode return and the final LFR after the defense's fine-tune (:func:`headprune.defenses.defend`
with that strategy, evaluated on the victim's poisoned test set) of

* ``"random"``: a uniform random policy over the VALID actions (the action mask), mean of the return
  over seeded episodes;
* ``"scripted"``: the best scripted strategy by return (name recorded), one deterministic episode each;
* ``"agent"``: the shipped agent (``benchmarks/results/agents/minilm-syntactic_maskable_ppo_s0``, trained on the
  MiniLM syntactic victim; its policy is size-agnostic), one deterministic episode (``"not measured"`` where
  it was not run).

An entry that was not measured is the string ``"not measured"`` (MiniLM ids: run
``benchmarks/reference_scores.py``, an hour per id on a 2-core CPU). LFR enters only here, in
evaluation after the defense is fixed; no reward or observation reads it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["NOT_MEASURED", "SCORES_FILE", "normalised", "reference_scores"]

SCORES_FILE = Path(__file__).with_name("reference_scores.json")
"""The machine-readable table (written by ``benchmarks/reference_scores.py``)."""

NOT_MEASURED = "not measured"
"""What an entry holds until it is measured."""


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    return json.loads(SCORES_FILE.read_text())


def reference_scores(env_id: str | None = None) -> dict[str, Any]:
    """The whole table (``env_id=None``: ``{"scores": {id: entry}, ...}``) or one id's entry."""
    table = _load()
    if env_id is None:
        return table
    if env_id not in table["scores"]:
        raise ValueError(f"no reference scores for {env_id!r}; known: {sorted(table['scores'])}")
    return table["scores"][env_id]


def normalised(env_id: str, episode_return: float) -> float:
    """``(return - random) / (best scripted - random)``: 0 = the random policy, 1 = the best scripted strategy.

    :param env_id: a registered id with measured scores.
    :param episode_return: an undiscounted episode return in that env (its default config).
    :raises ValueError: the id's scores are not measured, or random and scripted tie.
    """
    entry = reference_scores(env_id)
    random, scripted = entry["random"], entry["scripted"]
    if random == NOT_MEASURED or scripted == NOT_MEASURED:
        raise ValueError(f"reference scores of {env_id} are not measured yet (run benchmarks/reference_scores.py)")
    low, high = float(random["return"]), float(scripted["return"])
    if high == low:
        raise ValueError(f"{env_id}: the random and best scripted returns tie ({low}); nothing to normalise by")
    return (float(episode_return) - low) / (high - low)
