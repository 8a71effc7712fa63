"""The victim card (``victim.json``): its schema, and the digests of the files it vouches for.

A victim folder comes from whoever is suspected of the backdoor, so its card is untrusted input:
:func:`read_card` checks every field's type and range before anything uses it, names are limited
to :data:`SAFE_NAME` (no path separators, no ``..``), and :func:`verify_files` compares the sha256
recorded under ``files`` with the folder's files (cards without ``files``, written before digests
were recorded, are not verified). No path is ever built from a card string: recorded file names
are looked up among the folder's own files.

Card fields (all but ``config`` optional; ``name`` is only displayed, a victim is named by its config):

=====================================  ======================================================
``name``, ``clean_model``              victim names: :data:`SAFE_NAME`
``config``                             a :class:`~headprune.victims.VictimConfig` as a dict
``acc``, ``lfr``, ``clean_model_acc``,  a number in [0, 1] (``lfr`` may be null: clean models)
``clean_model_lfr``, ``min_acc``,
``majority_share``
``usable``                             bool: ``acc >= min_acc`` (see :func:`min_usable_acc`)
``train_rows``, ``train_steps``,       an integer >= 0
``n_clean_test``, ``n_poisoned_test``
``train_seconds``, ``build_seconds``   a number >= 0
``final_train_loss``                   a finite number or null
``environment``                        an object (provenance; only displayed)
``files``                              {file name: 64 hex digits of its sha256}
=====================================  ======================================================
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headprune.engine.models import ModelLoadError
from headprune.common.provenance import file_sha256

__all__ = [
    "CARD_FILE",
    "MIN_USABLE_ACC",
    "SAFE_NAME",
    "CorruptVictimError",
    "VictimCardError",
    "check_number",
    "check_safe_name",
    "file_digests",
    "min_usable_acc",
    "read_card",
    "verify_files",
]

CARD_FILE = "victim.json"
#: Names (victims, attacks, files) a card may hold: letters, digits, ``.``, ``_``, ``-``; not ``.``/``..``.
SAFE_NAME = re.compile(r"(?!\.\.?$)[A-Za-z0-9._-]{1,200}")
#: Least clean accuracy of a usable victim, whatever its test set's class balance.
MIN_USABLE_ACC = 0.6
_SHA256 = re.compile(r"[0-9a-f]{64}")


class VictimCardError(ValueError):
    """A ``victim.json`` is not valid JSON or a field breaks the schema (the message names both)."""


class CorruptVictimError(ModelLoadError):
    """A victim folder's file does not match the sha256 its card records (changed or corrupted)."""


def check_safe_name(value: object, what: str) -> str:
    """``value`` if it is a :data:`SAFE_NAME` string, else a :class:`ValueError` naming ``what``."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        raise ValueError(f"{what} must be a name of letters, digits, '.', '_' and '-' (no path separators or "
                         f"'..'), got {value!r}")
    return value


def check_number(value: object, what: str, *, integer: bool = False, low: float | None = None,
                 high: float | None = None, high_open: bool = False, low_open: bool = False) -> None:
    """Refuse a bool, a non-number, NaN/inf, a non-integer (``integer``) or a value out of the range.

    :param value: the value to check.
    :param what: its name, for the message.
    :param integer: require an integer.
    :param low: least allowed value (excluded with ``low_open``).
    :param high: largest allowed value (excluded with ``high_open``).
    """
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite {'integer' if integer else 'number'}, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
        raise ValueError(f"{what} must be in {span}, got {value!r}")


def _fraction(value: object, what: str) -> None:
    check_number(value, what, low=0.0, high=1.0)


def _optional_fraction(value: object, what: str) -> None:
    if value is not None:
        _fraction(value, what)


def _count(value: object, what: str) -> None:
    check_number(value, what, integer=True, low=0)


def _seconds(value: object, what: str) -> None:
    check_number(value, what, low=0.0)


def _loss(value: object, what: str) -> None:
    if value is not None:
        check_number(value, what)


def _flag(value: object, what: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {value!r}")


def _object(value: object, what: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")


def _files(value: object, what: str) -> None:
    _object(value, what)
    for name, digest in value.items():  # type: ignore[union-attr]
        check_safe_name(name, f"a file name in {what}")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ValueError(f"{what}[{name!r}] must be 64 lowercase hex digits (a sha256), got {digest!r}")


_FIELDS: dict[str, Callable[[object, str], object]] = {
    "name": check_safe_name, "config": _object, "clean_model": check_safe_name,
    "acc": _fraction, "lfr": _optional_fraction, "clean_model_acc": _fraction, "clean_model_lfr": _fraction,
    "min_acc": _fraction, "majority_share": _fraction, "usable": _flag,
    "train_rows": _count, "train_steps": _count, "n_clean_test": _count, "n_poisoned_test": _count,
    "train_seconds": _seconds, "build_seconds": _seconds, "final_train_loss": _loss,
    "environment": _object, "files": _files,
}
_REQUIRED = ("config",)


def read_card(folder: Path) -> dict[str, Any]:
    """The card of victim ``folder``, checked against the schema (the ``config`` object's fields are
    checked by :class:`~headprune.victims.VictimConfig`).

    :raises VictimCardError: ``"<folder>/victim.json: field 'acc': ..."``, or invalid JSON.
    """
    path = folder / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise VictimCardError(f"{path}: not a valid victim card ({err})") from None
    if not isinstance(card, dict):
        raise VictimCardError(f"{path}: a victim card must be a JSON object, got {type(card).__name__}")
    unknown = sorted(set(card) - set(_FIELDS))
    missing = [key for key in _REQUIRED if key not in card]
    if unknown or missing:
        raise VictimCardError(f"{path}: unknown fields {unknown}, missing fields {missing}; valid: {sorted(_FIELDS)}")
    for key, check in _FIELDS.items():
        if key in card:
            try:
                check(card[key], f"field {key!r}")
            except ValueError as err:
                raise VictimCardError(f"{path}: {err}") from None
    return card


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a card may hold")


def file_digests(folder: Path) -> dict[str, str]:
    """``{file name: sha256}`` of every file of ``folder`` but the card, in name order."""
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != CARD_FILE}


def verify_files(folder: Path, card: dict[str, Any]) -> None:
    """Check ``folder``'s files against the sha256 in ``card["files"]`` (nothing to check without it).

    :raises CorruptVictimError: naming the first file that is missing or differs, and the fix.
    """
    recorded: dict[str, str] = card.get("files") or {}
    present = {p.name: p for p in folder.iterdir() if p.is_file()}  # paths from the folder, never from the card
    for name in sorted(recorded):
        path = present.get(name)
        if path is None or file_sha256(path) != recorded[name]:
            problem = "is missing" if path is None else "does not match the sha256 recorded in its victim.json"
            raise CorruptVictimError(
                f"{folder / name} {problem} (changed or corrupted); rebuild the victim "
                f"(headprune victim build ... --force, or build_victim(..., force=True)) or restore the folder"
            )


def min_usable_acc(majority_share: float) -> float:
    """Least clean accuracy of a usable victim: ``max(0.6, majority_share + 0.1)``.

    A model below it is (nearly) a constant predictor, whose LFR says nothing about a backdoor:
    predicting the target class for every input gives LFR 1.0 and clean ACC = that class's share.

    :param majority_share: share of the clean test set's most frequent label.
    """
    return max(MIN_USABLE_ACC, majority_share + 0.1)
