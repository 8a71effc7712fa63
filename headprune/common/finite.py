"""The one check every config dataclass runs: no NaN or infinite number anywhere in its fields.

A leaf module (it imports nothing of headprune), so any config can run it at import time.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping

__all__ = ["check_finite_fields"]


def check_finite_fields(config: object, what: str = "") -> None:
    """Refuse NaN or infinite numbers anywhere in a dataclass config's fields: the ONE check every config's
    ``__post_init__`` calls (numbers inside mappings, lists and tuples are checked too, named by their path).

    :param config: a dataclass instance.
    :param what: a prefix for the field names in the message (e.g. ``"reward_weights."``).
    :raises ValueError: ``<field> must be a finite number, got nan``.
    """
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        _check_finite(getattr(config, f.name), f"{what}{f.name}")


def _check_finite(value: object, where: str) -> None:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{where}[{i}]")
