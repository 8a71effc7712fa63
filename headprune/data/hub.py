"""Labelled text from a Hugging Face ``datasets`` name (online users), spelled ``datasets:NAME[,CONFIG][@SPLIT]``.

``datasets:nyu-mll/glue,sst2@validation`` is the GLUE SST-2 validation split; the split defaults to ``train``.
The text column is the first of :data:`~headprune.data.readers.TEXT_COLUMN_NAMES` the dataset has, the label
column the first of :data:`~headprune.data.readers.LABEL_COLUMN_NAMES`; labels must be integers (a test split
whose labels are ``-1`` is refused by the caller's label check). Needs the optional ``datasets`` package
(``pip install headprune[hub]``) and internet; offline, every failure is one :class:`RuntimeError` that says so.
Only the dataset's rows are read: nothing of it is executed (``trust_remote_code`` stays off).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from headprune.data.readers import LABEL_COLUMN_NAMES, TEXT_COLUMN_NAMES
from headprune.data.texts import LabelledTexts

__all__ = ["HUB_PREFIX", "HubDatasetSpec", "is_hub_dataset", "load_hub_dataset", "parse_hub_dataset"]

HUB_PREFIX = "datasets:"
"""The prefix that marks a ``datasets`` name where a file path is also accepted (``--clean-data``)."""

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][\w.\-]*(?:/[\w.\-]+)?)"  # NAME: owner/dataset or dataset
                   r"(?:,(?P<config>[\w.\-]+))?"                     # ,CONFIG
                   r"(?:@(?P<split>[\w.\-\[\]:%]+))?$")                 # @SPLIT (slices such as train[:10%])


@dataclass(frozen=True)
class HubDatasetSpec:
    """A parsed ``datasets:NAME[,CONFIG][@SPLIT]``."""

    name: str
    config: str | None
    split: str

    def label(self) -> str:
        """The spelling users type (and the rows' ``source``)."""
        return f"{HUB_PREFIX}{self.name}" + (f",{self.config}" if self.config else "") + f"@{self.split}"


def is_hub_dataset(text: str) -> bool:
    """Whether ``text`` is spelled as a ``datasets`` name (``datasets:...``) rather than a path."""
    return str(text).startswith(HUB_PREFIX)


def parse_hub_dataset(text: str) -> HubDatasetSpec:
    """The parts of ``datasets:NAME[,CONFIG][@SPLIT]``; ValueError showing the expected form otherwise."""
    body = str(text)[len(HUB_PREFIX):] if is_hub_dataset(text) else ""
    m = _SPEC.match(body)
    if m is None:
        raise ValueError(f"{text!r} is not a datasets name: expected {HUB_PREFIX}NAME[,CONFIG][@SPLIT], e.g. "
                         f"{HUB_PREFIX}nyu-mll/glue,sst2@validation")
    return HubDatasetSpec(m["name"], m["config"], m["split"] or "train")


def _column(columns: list[str], candidates: tuple[str, ...], what: str, spec: HubDatasetSpec) -> str:
    lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lower:
            return lower[name]
    raise ValueError(f"{spec.label()}: no {what} column; it has {columns}, expected one of {list(candidates)}")


def load_hub_dataset(text: str) -> LabelledTexts:
    """The rows of the ``datasets`` name ``text`` (see the module docstring).

    Raises:
        ValueError: a malformed name, or no text / label column (naming the columns it has), or a label that
            is not an integer.
        ImportError: ``datasets`` is not installed.
        RuntimeError: the download failed (e.g. offline).
    """
    spec = parse_hub_dataset(text)
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as e:
        raise ImportError(f"{spec.label()}: reading a datasets name needs the optional 'datasets' package: "
                          "pip install headprune[hub] (or give a TSV/CSV/JSONL file)") from e
    try:
        ds = datasets.load_dataset(spec.name, spec.config, split=spec.split)
    except Exception as e:  # network, offline mode, hub errors: all mean "could not fetch"
        raise RuntimeError(f"could not fetch {spec.label()} from the Hugging Face Hub: {type(e).__name__}: {e}. "
                           "This needs internet access; offline, give a local TSV/CSV/JSONL file") from e
    columns = list(ds.column_names)
    text_col = _column(columns, TEXT_COLUMN_NAMES, "text", spec)
    label_col = _column(columns, LABEL_COLUMN_NAMES, "label", spec)
    sentences = tuple(str(s).strip() for s in ds[text_col])
    labels = []
    for i, y in enumerate(ds[label_col]):
        if isinstance(y, bool) or not isinstance(y, int):
            raise ValueError(f"{spec.label()}: row {i}: label {y!r} is not an integer class")
        labels.append(int(y))
    return LabelledTexts(sentences, tuple(labels), spec.label())
