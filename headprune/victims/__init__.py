"""Backdoored victims: their configs and presets, building and caching them, their cards and reference scores.

* :mod:`~headprune.victims.build` – :class:`VictimConfig`, :data:`PRESETS`, :func:`build_victim` (train,
  measure, cache) and :func:`load_victim` / :func:`resolve_victim`.
* :mod:`~headprune.victims.card` – the victim card (``victim.json``): schema, file digests.
* :mod:`~headprune.victims.bases` – where each kind of victim's public pre-trained base comes from.
* :mod:`~headprune.victims.scores` – the reference scores per env id (``reference_scores.json``).
"""

from __future__ import annotations

from headprune.victims.build import (
    CONFIRM_PRESETS,
    DEFAULT_VICTIM,
    PRESETS,
    Victim,
    VictimConfig,
    VictimWarning,
    build_victim,
    cache_dir,
    list_victims,
    load_victim,
    resolve_victim,
    victim_summary,
)
from headprune.victims.card import CARD_FILE

__all__ = ["CARD_FILE", "CONFIRM_PRESETS", "DEFAULT_VICTIM", "PRESETS", "Victim", "VictimConfig", "VictimWarning", "build_victim",
           "cache_dir", "list_victims", "load_victim", "resolve_victim", "victim_summary"]
