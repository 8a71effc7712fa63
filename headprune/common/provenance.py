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


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
