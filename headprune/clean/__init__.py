"""``clean``: the practitioner's path (:mod:`~headprune.clean.pipeline`: split, defend, evaluate) and its
report folder (:mod:`~headprune.clean.report`: ``model/``, ``report.md``, ``report.json``, plots)."""

from __future__ import annotations

from headprune.clean.pipeline import (
    FALLBACK_DEFENSE,
    RECOMMENDATION,
    RECOMMENDED_DEFENSE,
    CleanResult,
    CleanSettings,
    SuspectModel,
    choose_defense,
    clean_model,
    is_victim,
    load_suspect,
    split_report_rows,
    victim_test_rows,
    wilson_interval,
)

__all__ = ["FALLBACK_DEFENSE", "RECOMMENDATION", "RECOMMENDED_DEFENSE", "CleanResult", "CleanSettings",
           "SuspectModel", "choose_defense", "clean_model", "is_victim", "load_suspect", "split_report_rows",
           "victim_test_rows", "wilson_interval"]
