"""The one ``KEY=VALUE`` parser of every command-line option that takes assignments
(``headprune defend --option``, ``headprune train --hyperparams`` / ``--env-kwargs``, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import yaml

__all__ = ["parse_assignments", "parse_value", "safe_yaml"]


def safe_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)`` with one-line errors naming ``where``: a tag (``!!python/object/apply:...``) is
    refused as such (safe_load never builds Python objects; this says why it failed), other YAML errors give
    their first line.

    :raises ValueError: ``<where>: YAML tag !!python/... is not allowed ...`` or ``<where>: not valid YAML ...``.
    """
    try:
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as err:
        tag = re.search(r"'tag:yaml\.org,2002:([^']+)'|'(![^']+)'", str(err.problem))
        name = "tag" if tag is None else "!!" + tag.group(1) if tag.group(1) else tag.group(2)
        raise ValueError(f"{where}: YAML tag {name} is not allowed: plain values only (numbers, strings, lists, "
                         "mappings); headprune never builds Python objects from YAML") from None
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{where}: not valid YAML ({first})") from None


def parse_value(text: str, where: str = "value") -> Any:
    """One value: JSON when it parses (``3``, ``1e-3``, ``true``, ``{"a": 1}``), else YAML (``[a, b]``,
    ``{a: 1}``), else the text itself; ``""`` stays ``""``."""
    if not text:
        return ""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return safe_yaml(text, where)
    except ValueError as err:
        if "YAML tag" in str(err):
            raise
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
        out[key] = parse_value(value, f"{flag} {key}")
    return out
