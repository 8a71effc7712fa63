"""Provenance recorded next to every result: library versions, machine, threads, time."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = ["config_hash", "environment_info", "file_sha256"]

_PACKAGES = ("headprune", "torch", "transformers", "numpy", "gymnasium", "stable-baselines3", "sb3-contrib", "tokenizers")


def environment_info() -> dict[str, Any]:
    """Versions of Python and the libraries that change numbers, plus machine facts and a UTC timestamp."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "versions": versions,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def config_hash(config: dict[str, Any], length: int = 12) -> str:
    """Stable short hash of a JSON-serialisable config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


RENAMED_CONFIG_KEYS: dict[str, str] = {"eval_size": "val_size", "strategy": "defense"}
"""Keys of a run's config (the ``config`` of a ``defend`` report or a ``compare`` record) renamed since records
were first written: old name -> current name. Readers map old records' keys with :func:`upgrade_run_config`;
:func:`run_config_hash` hashes every config under the old names, so a run keeps the hash its records have."""


def run_config_hash(config: dict[str, Any]) -> str:
    """:func:`config_hash` of a run config, each key of :data:`RENAMED_CONFIG_KEYS` hashed under its old name
    (``val_size`` as ``eval_size``, ``defense`` as ``strategy``): the same run has the same hash before and after
    the renames."""
    old_names = {new: old for old, new in RENAMED_CONFIG_KEYS.items()}
    return config_hash({old_names.get(k, k): v for k, v in config.items()})


def upgrade_run_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run config of an old record with its keys under their current names (:data:`RENAMED_CONFIG_KEYS`);
    ValueError when it holds a key under both names."""
    both = sorted(old for old, new in RENAMED_CONFIG_KEYS.items() if old in config and new in config)
    if both:
        raise ValueError(f"run config has both {both[0]!r} and {RENAMED_CONFIG_KEYS[both[0]]!r}")
    return {RENAMED_CONFIG_KEYS.get(k, k): v for k, v in config.items()}


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
