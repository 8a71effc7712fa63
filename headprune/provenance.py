"""Provenance recorded next to every result: library versions, machine, threads, time."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import sys
from importlib import metadata
from typing import Any

import torch

__all__ = ["config_hash", "environment_info"]

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
