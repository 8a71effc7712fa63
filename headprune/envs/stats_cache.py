"""The env's head statistics, computed once per (victim weights, rows, reference) and cached on disk,
and the resolution of the env's pre-trained reference (``HeadPruneConfig.base``)."""

from __future__ import annotations

import hashlib
import os
import warnings
from typing import Any

from torch import nn

from headprune.data import LabelledTexts
from headprune.engine.head_stats import FEATURE_NAMES, HeadStats, compute_head_stats
from headprune.common.provenance import config_hash
from headprune.engine.reference import BaseModelError, resolve_base, weights_digest
from headprune.victims import Victim, cache_dir

__all__ = ["STATS_VERSION", "env_reference", "load_or_compute_stats", "texts_digest"]

STATS_VERSION = 1
"""Bump when the cached statistics change meaning."""


def texts_digest(texts: LabelledTexts) -> str:
    """sha256 of the rows (sentences and labels, in order)."""
    h = hashlib.sha256()
    for sentence, label in texts:
        h.update(sentence.encode())
        h.update(f"\t{label}\n".encode())
    return h.hexdigest()


def env_reference(victim: Victim, base: Any) -> nn.Module | None:
    """The reference ``base`` names for ``victim`` (``HeadPruneConfig.base``).

    ``"auto"``: :func:`~headprune.engine.reference.resolve_base`'s default, or ``None`` (with a warning) when the
    victim has no known reference; ``None``: no reference; anything else (a folder, a hub id, a model)
    must resolve.

    :raises BaseModelError: an explicit ``base`` that cannot be found or does not fit the victim.
    """
    if base is None:
        return None
    if isinstance(base, str) and base == "auto":
        try:
            return resolve_base(victim)
        except BaseModelError as err:
            warnings.warn(f"no pre-trained reference for {victim.name} ({err}); the workbench runs without one "
                          "(no drift statistics, no reset)", RuntimeWarning, stacklevel=3)
            return None
    return resolve_base(victim, base)


def load_or_compute_stats(victim: Victim, stats_data: LabelledTexts, *, max_length: int,
                          reference: nn.Module | None, cache: str | os.PathLike[str] | None,
                          progress: bool) -> HeadStats:
    """Head statistics of the unpruned victim on ``stats_data`` (with the drift statistics when a
    ``reference`` is given), cached under ``<cache>/head_stats`` and keyed by the victim's name, a
    digest of its weights, the rows, the configuration and a digest of the reference's weights (the
    key of a run without reference is the one of earlier releases)."""
    model = victim.model
    fields: dict[str, Any] = {
        "victim": victim.name,
        "weights": weights_digest(model),
        "data": texts_digest(stats_data),
        "max_length": max_length,
        "features": list(FEATURE_NAMES),
        "version": STATS_VERSION,
    }
    if reference is not None:
        fields["base_weights"] = weights_digest(reference)
    path = cache_dir(cache) / "head_stats" / f"{victim.file_stem}-{config_hash(fields, 16)}.json"
    if path.is_file():
        return HeadStats.load(path)
    if progress:
        print(f"computing head statistics of {victim.name} on {len(stats_data)} clean rows "
              f"(cached in {path})", flush=True)
    stats = compute_head_stats(model, victim.tokenizer, stats_data, max_length=max_length, base=reference)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # atomic: parallel workers may race
    stats.save(tmp)
    os.replace(tmp, path)
    return stats
