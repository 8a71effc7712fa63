"""Reference scores per registered ``HeadPrune`` id, like Atari's random/human scores or D4RL's.

:data:`SCORES_FILE` (``headprune/victims/reference_scores.json``, package data) holds, per env id, the mean
episode return and the final LFR after the defense's fine-tune (:func:`headprune.defenses.defend`
with that strategy, evaluated on the victim's poisoned test set) of

* ``"random"``: a uniform random policy over the VALID actions (the action mask), mean of the return
  over seeded episodes, and its ``success_rate`` (share of episodes with ``info["is_success"]``, return >=
  :data:`~headprune.envs.reset_options.SUCCESS_RETURN`; measured on the ids whose victim builds in seconds,
  ``"not measured"`` on the MiniLM ids);
* ``"scripted"``: the best scripted strategy by return (name recorded), one deterministic episode each;
* ``"mixing"`` (only the ids whose ``operation`` mixes blocks): the scripted mixing baseline
  (:class:`~headprune.defenses.scripted.UniformMixPolicy`), one deterministic episode, with the mixing levels of
  its best state;
* ``"agent"``: the shipped agent (``benchmarks/results/agents/minilm-syntactic_maskable_ppo_s0``, trained on the
  MiniLM syntactic victim; its policy is size-agnostic), one deterministic episode (``"not measured"`` where
  it was not run).

The ids are those of :data:`headprune.presets.PRESET_LIST` (the one list of presets and their ids): an id the file
has no entry for yet reads ``"not measured"`` in each part, and a file entry for an id no preset has is refused.
An entry that was not measured is the string ``"not measured"`` (MiniLM ids: run
``benchmarks/reference_scores.py``, an hour per id on a 2-core CPU). LFR enters only here, in
evaluation after the defense is fixed; no reward or observation reads it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["NOT_MEASURED", "SCORES_FILE", "markdown_table", "normalised", "reference_scores"]

SCORES_FILE = Path(__file__).with_name("reference_scores.json")
"""The machine-readable table (written by ``benchmarks/reference_scores.py``)."""

NOT_MEASURED = "not measured"
"""What an entry holds until it is measured."""


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    """The file's table with every id of :data:`~headprune.presets.PRESET_LIST` (unmeasured parts for ids it lacks)."""
    from headprune.presets import env_ids

    table = json.loads(SCORES_FILE.read_text())
    ids = env_ids()
    stale = sorted(set(table["scores"]) - set(ids))
    if stale:
        raise ValueError(f"{SCORES_FILE}: scores for ids no preset has: {stale}; valid ids: {ids}")
    unmeasured = {"random": NOT_MEASURED, "scripted": NOT_MEASURED, "agent": NOT_MEASURED}
    table["scores"] = {env_id: table["scores"].get(env_id, dict(unmeasured)) for env_id in ids}
    return table


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


def _rate(rate: float | str, episodes: int | str | None) -> str:
    """A success rate cell: ``0.065 (of 200)`` or ``not measured``."""
    return NOT_MEASURED if rate == NOT_MEASURED else f"{rate:.3f} (of {episodes})"


def _mixes(env_id: str) -> bool:
    """Whether the registered id's ``operation`` mixes blocks (its preset kwargs say so)."""
    from headprune.envs.config import operation_units
    from headprune.presets import PRESET_LIST

    kwargs = next(env.kwargs for preset in PRESET_LIST for env in preset.envs if env.env_id == env_id)
    return "mix" in operation_units(str(kwargs.get("operation", "prune")))


def markdown_table() -> str:
    """The README's table of the reference scores, one row per id (sorted), from :data:`SCORES_FILE`:
    random return and LFR, best scripted return (name) and LFR, the uniform mixing baseline's return and LFR (``–``
    on ids that do not mix), the agent's return, LFR and normalised return;
    an id copied from another of the same spec says so (``(= `id`)``). ``benchmarks/reference_scores.py
    --markdown`` prints it; a test keeps the README's copy equal to it."""
    rows = ["| env id | random return | random LFR | random success rate | best scripted return | best scripted LFR "
            "| uniform mix return, LFR | agent |", "|---|---|---|---|---|---|---|---|"]
    for env_id, entry in sorted(reference_scores()["scores"].items()):
        random, scripted, agent = entry["random"], entry["scripted"], entry["agent"]
        twin = entry.get("same_spec_as")
        cells = [f"`{env_id}`" + (f" (= `{twin}`)" if twin else "")]
        cells += [NOT_MEASURED] * 3 if random == NOT_MEASURED else [f"{random['return']:.3f}", f"{random['lfr']:.3f}",
                                                                    _rate(random.get("success_rate", NOT_MEASURED),
                                                                          random.get("success_episodes"))]
        cells += ([f"{NOT_MEASURED} (–)", NOT_MEASURED] if scripted == NOT_MEASURED
                  else [f"{scripted['return']:.3f} ({scripted['name']})", f"{scripted['lfr']:.3f}"])
        mixing = entry.get("mixing")
        cells.append(f"{mixing['return']:.3f}, LFR {mixing['lfr']:.3f}" if isinstance(mixing, dict)
                     else NOT_MEASURED if _mixes(env_id) else "–")
        if agent == NOT_MEASURED:
            cells.append(NOT_MEASURED)
        else:
            norm = "" if random == NOT_MEASURED or scripted == NOT_MEASURED else \
                f" (normalised {normalised(env_id, agent['return']):.2f})"
            cells.append(f"{agent['return']:.3f}, LFR {agent['lfr']:.3f}{norm}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
