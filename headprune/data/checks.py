"""Checks of labelled rows against what a model and a split need, run before any work starts.

Each raises a :class:`ValueError` whose one-line message names the data (its file), the first
offending row's line and the fix, so a bad ``--clean-data`` file fails at once instead of being
scored as wrong predictions or crashing deep inside an evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from headprune.data import LabelledTexts

__all__ = ["check_enough_rows", "check_labels", "check_num_labels"]


def _row_place(data: LabelledTexts, index: int) -> str:
    """``"<file>, line <n>"`` of row ``index`` (or ``"<source>, row <i>"`` for in-memory rows)."""
    return f"{data.source}, line {data.lines[index]}" if data.lines else f"{data.source}, row {index}"


def check_num_labels(num_labels: object, what: str = "num_labels") -> int:
    """``num_labels`` as an int >= 2 (a classifier's class count).

    :param num_labels: the class count to check (bools, floats and NaN are refused).
    :param what: the argument's name, for the message.
    """
    if isinstance(num_labels, bool) or not isinstance(num_labels, numbers.Integral) or num_labels < 2:
        raise ValueError(f"{what} must be an integer >= 2 (a classifier's number of classes), got {num_labels!r}")
    return int(num_labels)


def _out_of_range(data: LabelledTexts, num_labels: int) -> list[int]:
    """Indices of the rows whose label is not in ``[0, num_labels - 1]`` (the one scan of :func:`check_labels`)."""
    return [i for i, label in enumerate(data.labels) if not 0 <= label < num_labels]


def check_labels(data: LabelledTexts, num_labels: int, what: str = "data") -> LabelledTexts:
    """Refuse rows whose label is not a class of a ``num_labels``-class model; returns ``data`` marked as checked.

    Called where rows enter (``clean``'s ``--clean-data``, ``defend``'s evaluation rows, a workbench's
    ``clean_data``): the returned rows carry ``checked_classes = num_labels`` (kept by their subsets), so a later
    stage given the same rows returns at once instead of rescanning them, and an error always names the
    argument the rows entered by.

    :param data: the labelled rows (read from a file, their line numbers are named).
    :param num_labels: the model's class count (``model.config.num_labels``): labels must be in
        ``[0, num_labels - 1]``.
    :param what: the argument or option the rows came from (``"clean_data"``, ``"--clean-data"``).
    :raises ValueError: ``"<what> (<file>, line <n>): label 2 is not a class of the model, which has
        2 classes (valid labels 0..1); ..."`` for the first bad row, with the count of bad rows.
    """
    num_labels = check_num_labels(num_labels)
    if data.checked_classes == num_labels:
        return data
    bad = _out_of_range(data, num_labels)
    if bad:
        first = bad[0]
        raise ValueError(
            f"{what} ({_row_place(data, first)}): label {data.labels[first]} is not a class of the model, which "
            f"has {num_labels} classes (valid labels 0..{num_labels - 1}); {len(bad)} of {len(data)} rows are "
            f"out of range: fix the labels or use a model with more classes"
        )
    return dataclasses.replace(data, checked_classes=num_labels)


def check_enough_rows(data: LabelledTexts, needed: int, what: str = "data", purpose: str = "") -> LabelledTexts:
    """Refuse ``data`` when it has fewer than ``needed`` rows; returns ``data``.

    :param data: the rows left (after a split, deduplication, ...).
    :param needed: the least number of rows the next step needs.
    :param what: the data's name in the message (``"clean_data"``).
    :param purpose: what the rows are for, e.g. ``"val_size 256 + 64 for fine-tuning"``.
    """
    if isinstance(needed, bool) or not isinstance(needed, numbers.Real) or not math.isfinite(needed):
        raise ValueError(f"needed must be a finite number of rows, got {needed!r}")
    if len(data) < needed:
        why = f" ({purpose})" if purpose else ""
        raise ValueError(
            f"{what} ({data.source}) has {len(data)} rows, but {int(needed)} are needed{why}: give more rows or "
            f"lower the sizes"
        )
    return data
