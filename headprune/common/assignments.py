"""The one ``KEY=VALUE`` parser of every command-line option that takes assignments
(``headprune defend --option``, ``headprune train --hyperparams`` / ``--env-kwargs``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import yaml

__all__ = ["parse_assignments", "parse_value"]


def parse_value(text: str) -> Any:
    """One value: JSON when it parses (``3``, ``1e-3``, ``true``, ``{"a": 1}``), else YAML (``[a, b]``,
    ``{a: 1}``), else the text itself; ``""`` stays ``""``."""
    if not text:
        return ""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_assignments(items: Iterable[str] | None, flag: str) -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: parse_value(value)}``.

    :param items: the raw assignments (None: none).
    :param flag: the option's name, for errors (``"--option"``).
    :raises ValueError: naming ``flag`` and the item, for an item without ``=`` or with an empty key,
        or a key given twice.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{flag} must be KEY=VALUE, got {item!r}")
        if key in out:
            raise ValueError(f"{flag}: {key!r} given twice")
        out[key] = parse_value(value)
    return out
