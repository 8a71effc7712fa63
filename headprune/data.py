"""Labelled text: the one reader every part of :mod:`headprune` uses.

A labelled text set is a sequence of ``(sentence, label)`` pairs, held as a frozen
:class:`LabelledTexts`. :func:`read_labelled_text` reads it from a TSV, CSV or JSON Lines file
(chosen by extension) and copes with the quirks of the files the backdoor literature ships:

* the header is sniffed case-insensitively: the text column is ``sentence``, ``sentences`` or
  ``text``, the label column ``label`` or ``labels``, in either order (GLUE's SST-2 train file
  has ``label\\tsentence``); other columns are allowed and ignored;
* separators padded with spaces (``sentence \\t label``): every field is stripped;
* CRLF, LF or CR-only line ends, a UTF-8 byte-order mark, a last line without a newline, blank lines at
  the end of the file;
* TSV is split on tabs only, so quotes inside SST sentences (``"movie,"``, ``gyro \"\"\"``) are
  kept verbatim; CSV is parsed with :mod:`csv`, so quoted fields may contain commas, ``""`` and
  line breaks (kept in the sentence, as are ``\\n`` escapes in JSON Lines);
* duplicated rows (same sentence and label) are kept with a :class:`DuplicateRowsWarning` giving the
  count, or dropped with ``duplicates="drop"`` (:meth:`LabelledTexts.deduplicated`).

Anything else is a :class:`DataFormatError` (a :class:`ValueError`) whose message names the file
and the 1-based line number: a row with the wrong number of fields, an empty sentence, a label
that is not an integer, a blank line before the end of the file, a missing or unknown header.
With ``skip_bad_rows=True`` bad rows are dropped instead; their line numbers are kept in
:attr:`LabelledTexts.skipped` and a :class:`SkippedRowsWarning` names the file and the count.

Sentences are returned exactly as stored apart from the surrounding whitespace (no case folding,
no Unicode normalisation: SST contains ``é``, ``ï``, ...).

The shared data (never copied into the repository) is found by :func:`shared_data_dir`; the
SST-2 files of the backdoor literature are read by :func:`load_sst2` and the full GLUE SST-2
train set by :func:`load_glue_sst2_train`. Online users may instead fetch GLUE SST-2 from the
Hugging Face Hub with :func:`load_glue_sst2_from_hub` (optional extra ``headprune[hub]``).
"""

from __future__ import annotations

import csv
import errno
import functools
import io
import json
import operator
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, overload

__all__ = [
    "DATA_DIR_ENV",
    "GLUE_SPLITS",
    "LABEL_COLUMN_NAMES",
    "SST2_SPLITS",
    "SST2_VARIANTS",
    "TEXT_COLUMN_NAMES",
    "DataFormatError",
    "DuplicateRowsWarning",
    "LabelledTexts",
    "SkippedRowsWarning",
    "as_labelled_texts",
    "load_glue_sst2_from_hub",
    "load_glue_sst2_train",
    "load_sst2",
    "read_labelled_text",
    "shared_data_dir",
]

#: Header names (compared case-insensitively) accepted for the text column.
TEXT_COLUMN_NAMES: tuple[str, ...] = ("sentence", "sentences", "text")
#: Header names (compared case-insensitively) accepted for the label column.
LABEL_COLUMN_NAMES: tuple[str, ...] = ("label", "labels")
#: Environment variable that overrides where the shared data lives.
DATA_DIR_ENV = "HEADPRUNE_DATA_DIR"
#: Splits of the SST-2 sets in ``<shared>/sst2/<variant>/<split>.tsv``.
SST2_SPLITS: tuple[str, ...] = ("train", "dev", "test")
#: Variants in ``<shared>/sst2/``: clean SST-2, HiddenKiller (syntactic) and StyleBkd (Bible style).
SST2_VARIANTS: tuple[str, ...] = ("clean", "syntactic", "style-bible")
#: Splits of GLUE SST-2 on the Hugging Face Hub.
GLUE_SPLITS: tuple[str, ...] = ("train", "validation", "test")

Format = Literal["tsv", "csv", "jsonl"]
_EXTENSIONS: dict[str, Format] = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
_INT_RE = re.compile(r"[+-]?\d+")
_MAX_LINES_IN_WARNING = 5
_REPO_ROOT = Path(__file__).resolve().parent.parent


class DataFormatError(ValueError):
    """A labelled-text file is malformed.

    The message always reads ``"<file>, line <n>: <what is wrong>"``; the parts are also
    available as :attr:`path`, :attr:`line` (1-based) and :attr:`reason`.
    """

    def __init__(self, path: str | os.PathLike[str], line: int, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}, line {line}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # keep it picklable (multiprocessing, pytest-xdist)
        return (type(self), (self.path, self.line, self.reason))


class SkippedRowsWarning(UserWarning):
    """Rows of a labelled-text file were skipped because ``skip_bad_rows=True``."""


class DuplicateRowsWarning(UserWarning):
    """A labelled-text file repeats rows (same sentence and label); they were kept."""


Duplicates = Literal["warn", "keep", "drop"]


@dataclass(frozen=True)
class LabelledTexts:
    """An immutable sequence of ``(sentence, label)`` pairs.

    Attributes:
        sentences: the texts, as stored (surrounding whitespace stripped by the reader).
        labels: integer class labels, one per sentence.
        source: where the rows came from (a file path or a short description).
        skipped: 1-based line numbers of the rows :func:`read_labelled_text` dropped with
            ``skip_bad_rows=True``; empty otherwise and for every derived set (``subset``,
            ``take``, ``concat``). Not part of equality.
        lines: 1-based line number of each row in its file (kept by ``subset``, ``take``,
            ``concat`` and ``deduplicated`` when every part has them); empty for rows built in
            memory. Not part of equality; error messages use it to name a row's line.

    Lists, numpy arrays and other iterables are accepted and stored as tuples; a length mismatch
    or a non-string sentence is a :class:`ValueError` / :class:`TypeError`.
    """

    sentences: tuple[str, ...]
    labels: tuple[int, ...]
    source: str = "<memory>"
    skipped: tuple[int, ...] = field(default=(), compare=False)
    lines: tuple[int, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        sentences = tuple(self.sentences)
        labels = tuple(int(operator.index(label)) for label in self.labels)
        if len(sentences) != len(labels):
            raise ValueError(
                f"LabelledTexts({self.source}): {len(sentences)} sentences but {len(labels)} labels"
            )
        for i, sentence in enumerate(sentences):
            if not isinstance(sentence, str):
                raise TypeError(
                    f"LabelledTexts({self.source}): sentence {i} is {type(sentence).__name__}, not str"
                )
        object.__setattr__(self, "sentences", sentences)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "source", str(self.source))
        object.__setattr__(self, "skipped", tuple(int(n) for n in self.skipped))
        lines = tuple(int(n) for n in self.lines)
        if lines and len(lines) != len(sentences):
            raise ValueError(f"LabelledTexts({self.source}): {len(lines)} line numbers for {len(sentences)} rows")
        object.__setattr__(self, "lines", lines)

    def __len__(self) -> int:
        return len(self.sentences)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return zip(self.sentences, self.labels, strict=True)

    def subset(self, indices: Iterable[int]) -> LabelledTexts:
        """The rows at ``indices`` (in that order; repeats allowed; numpy integers accepted)."""
        idx = [operator.index(i) for i in indices]
        n = len(self)
        for i in idx:
            if not 0 <= i < n:
                raise IndexError(f"LabelledTexts({self.source}): index {i} out of range for {n} rows")
        return LabelledTexts(
            tuple(self.sentences[i] for i in idx), tuple(self.labels[i] for i in idx), self.source,
            lines=tuple(self.lines[i] for i in idx) if self.lines else (),
        )

    def take(self, n: int) -> LabelledTexts:
        """The first ``n`` rows (all rows when ``n`` exceeds the length)."""
        n = operator.index(n)
        if n < 0:
            raise ValueError(f"take(n) needs n >= 0, got {n}")
        return LabelledTexts(self.sentences[:n], self.labels[:n], self.source, lines=self.lines[:n])

    def concat(self, other: LabelledTexts) -> LabelledTexts:
        """These rows followed by the rows of ``other``."""
        if not isinstance(other, LabelledTexts):
            raise TypeError(f"concat needs a LabelledTexts, got {type(other).__name__}")
        source = self.source if self.source == other.source else f"{self.source} + {other.source}"
        lines = self.lines + other.lines if self.lines and other.lines else ()
        return LabelledTexts(self.sentences + other.sentences, self.labels + other.labels, source, lines=lines)

    def duplicate_indices(self) -> tuple[int, ...]:
        """Indices of the rows whose (sentence, label) pair occurred in an earlier row."""
        seen: set[tuple[str, int]] = set()
        repeats = []
        for i, row in enumerate(self):
            if row in seen:
                repeats.append(i)
            seen.add(row)
        return tuple(repeats)

    def deduplicated(self) -> LabelledTexts:
        """These rows without repeats: the first occurrence of each (sentence, label) pair, in order."""
        repeats = set(self.duplicate_indices())
        return self.subset(i for i in range(len(self)) if i not in repeats) if repeats else self

    def label_counts(self) -> dict[int, int]:
        """Number of rows per label, sorted by label."""
        counts: dict[int, int] = {}
        for label in self.labels:
            counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items()))

    def indices_with_label(self, label: int) -> tuple[int, ...]:
        """Row indices whose label equals ``label``."""
        return tuple(i for i, y in enumerate(self.labels) if y == label)


# --------------------------------------------------------------------------------------------
# Reader


@dataclass
class _Record:
    """One physical record: its first line number and its fields (``None`` for a blank line)."""

    line: int
    fields: list[str] | None = None
    error: str | None = None


def read_labelled_text(
    path: str | os.PathLike[str],
    *,
    skip_bad_rows: bool = False,
    allow_empty_sentences: bool = False,
    fmt: Format | None = None,
    duplicates: Duplicates = "warn",
) -> LabelledTexts:
    """Read a labelled text file (TSV, CSV or JSON Lines) into a :class:`LabelledTexts`.

    Args:
        path: the file. The format comes from its extension: ``.tsv``, ``.csv``, ``.jsonl`` or
            ``.json`` (read as JSON Lines: one object per line), unless ``fmt`` is given.
        skip_bad_rows: drop malformed rows instead of raising. Their 1-based line numbers are
            returned in :attr:`LabelledTexts.skipped` and a :class:`SkippedRowsWarning` names
            the file, the count and the first few lines. A bad header is always an error.
        allow_empty_sentences: accept rows whose sentence is empty (kept as ``""``); only for
            files that must stay row-aligned with another file (see :func:`load_sst2`).
        fmt: ``"tsv"``, ``"csv"`` or ``"jsonl"`` to override the extension.
        duplicates: rows repeating an earlier (sentence, label) pair: ``"warn"`` keeps them with
            a :class:`DuplicateRowsWarning` giving the count, ``"keep"`` keeps them silently,
            ``"drop"`` keeps only the first occurrence (:meth:`LabelledTexts.deduplicated`).

    TSV and CSV files need a header naming a text column (``sentence``, ``sentences`` or
    ``text``) and a label column (``label`` or ``labels``), case-insensitive, any order, other
    columns ignored. JSON Lines objects need one such key each (other keys ignored); their
    label may be an integer, an integral float or a string holding an integer.

    Raises:
        FileNotFoundError: the file does not exist (the message names the path).
        DataFormatError: the message names the file and the 1-based line: missing or unknown
            header, wrong number of fields, empty sentence, non-integer label, blank line
            before the end, text that is not UTF-8, invalid JSON.
        ValueError: the extension is not one of the supported ones.
    """
    p = Path(path)
    kind = fmt if fmt is not None else _format_for(p)
    if kind not in ("tsv", "csv", "jsonl"):
        raise ValueError(f"unknown format {kind!r} for {p}; use 'tsv', 'csv' or 'jsonl'")
    if duplicates not in ("warn", "keep", "drop"):
        raise ValueError(f"duplicates must be 'warn', 'keep' or 'drop', got {duplicates!r}")
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, f"labelled-text file not found: {p}", str(p))
    if not p.is_file():
        raise FileNotFoundError(errno.ENOENT, f"labelled-text path is not a file: {p}", str(p))

    text = _decode(p.read_bytes(), p)
    if kind == "jsonl":
        records = _jsonl_records(text, p)
    else:
        records = _tsv_records(text, p) if kind == "tsv" else _csv_records(text, p)

    # Blank lines after the last non-blank record are fine; earlier ones are errors.
    last = max((k for k, r in enumerate(records) if r.fields is not None or r.error), default=-1)
    records = records[: last + 1]

    sentences: list[str] = []
    labels: list[int] = []
    row_lines: list[int] = []
    skipped: list[tuple[int, str]] = []
    for rec in records:
        try:
            sentence, label = _check_record(rec, allow_empty_sentences)
        except _BadRow as bad:
            if not skip_bad_rows:
                raise DataFormatError(p, rec.line, str(bad)) from None
            skipped.append((rec.line, str(bad)))
            continue
        sentences.append(sentence)
        labels.append(label)
        row_lines.append(rec.line)

    if skipped:
        lines = [n for n, _ in skipped]
        shown = ", ".join(str(n) for n in lines[:_MAX_LINES_IN_WARNING])
        more = ", ..." if len(lines) > _MAX_LINES_IN_WARNING else ""
        warnings.warn(
            f"{p}: skipped {len(lines)} bad row(s) at line(s) {shown}{more} "
            f"(first: line {skipped[0][0]}: {skipped[0][1]})",
            SkippedRowsWarning,
            stacklevel=2,
        )
    texts = LabelledTexts(tuple(sentences), tuple(labels), str(p), tuple(n for n, _ in skipped), tuple(row_lines))
    return _handle_duplicates(texts, duplicates)


def _handle_duplicates(texts: LabelledTexts, duplicates: Duplicates) -> LabelledTexts:
    """Apply the reader's ``duplicates`` policy to the rows of one file."""
    if duplicates == "keep":
        return texts
    repeats = texts.duplicate_indices()
    if not repeats:
        return texts
    if duplicates == "drop":
        return replace(texts.deduplicated(), skipped=texts.skipped)
    shown = ", ".join(str(texts.lines[i]) for i in repeats[:_MAX_LINES_IN_WARNING])
    more = ", ..." if len(repeats) > _MAX_LINES_IN_WARNING else ""
    warnings.warn(
        f"{texts.source}: {len(repeats)} of {len(texts)} rows repeat an earlier row (same sentence and label; "
        f"line(s) {shown}{more}); they are kept: pass duplicates='drop' (CLI: --deduplicate) to drop them",
        DuplicateRowsWarning,
        stacklevel=3,
    )
    return texts


@overload
def as_labelled_texts(data: None, what: str = ...) -> None: ...
@overload
def as_labelled_texts(data: LabelledTexts | str | os.PathLike[str], what: str = ...) -> LabelledTexts: ...
def as_labelled_texts(data: LabelledTexts | str | os.PathLike[str] | None, what: str = "data"
                      ) -> LabelledTexts | None:
    """``data`` as a :class:`LabelledTexts`: itself, or a file read by :func:`read_labelled_text`.

    :param data: labelled rows, a file path, or None (returned as None: "not given").
    :param what: the argument's name, for the TypeError raised on any other type.
    """
    if data is None or isinstance(data, LabelledTexts):
        return data
    if isinstance(data, (str, os.PathLike)):
        return read_labelled_text(data)
    raise TypeError(f"{what} must be a LabelledTexts or a file path, got {type(data).__name__}")


class _BadRow(Exception):
    """Internal: why one row is malformed (turned into DataFormatError or a skip)."""


def _format_for(p: Path) -> Format:
    kind = _EXTENSIONS.get(p.suffix.lower())
    if kind is None:
        raise ValueError(
            f"cannot tell the format of {p} from its extension {p.suffix!r}; "
            f"supported: {', '.join(_EXTENSIONS)} (or pass fmt=...)"
        )
    return kind


def _decode(raw: bytes, p: Path) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataFormatError(p, line, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None


def _split_lines(text: str) -> list[str]:
    """Split on LF (dropping a CR before it); unlike str.splitlines, keep \\x0b, \\x85, U+2028."""
    lines = _lf_line_ends(text).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline does not start another line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _lf_line_ends(text: str) -> str:
    """``text`` with CR-only line ends (old Mac files: a CR but no LF anywhere) turned into LF."""
    return text.replace("\r", "\n") if "\r" in text and "\n" not in text else text


def _is_blank(fields: list[str]) -> bool:
    return all(not f.strip() for f in fields)


def _header_columns(header: list[str], p: Path, hint: str = "") -> tuple[int, int, int]:
    """Indices of the text and label columns in ``header`` and the number of columns."""
    names = [h.strip().lower() for h in header]
    text_cols = [i for i, n in enumerate(names) if n in TEXT_COLUMN_NAMES]
    label_cols = [i for i, n in enumerate(names) if n in LABEL_COLUMN_NAMES]
    found = ", ".join(repr(h.strip()) for h in header)
    if len(text_cols) != 1 or len(label_cols) != 1:
        problem = "missing or unknown header" if not text_cols or not label_cols else "ambiguous header"
        raise DataFormatError(
            p,
            1,
            f"{problem}: expected one text column ({', '.join(TEXT_COLUMN_NAMES)}) and one "
            f"label column ({', '.join(LABEL_COLUMN_NAMES)}), case-insensitive; found header "
            f"[{found}]{hint}",
        )
    return text_cols[0], label_cols[0], len(names)


def _tabular_records(rows: list[tuple[int, int, list[str]]], p: Path, sep_name: str) -> list[_Record]:
    """Turn (first line, last line, fields) rows, the first being the header, into records."""
    if not rows or _is_blank(rows[0][2]):
        raise DataFormatError(p, 1, "missing header: the first line is empty")
    header = rows[0][2]
    hint = ""
    if len(header) == 1:
        other = "," if sep_name == "tab" else "\t"
        if other in header[0]:
            hint = f" (no {sep_name} in the header: is the file's extension right?)"
    text_col, label_col, ncols = _header_columns(header, p, hint)
    records = []
    for first, last, fields in rows[1:]:
        if _is_blank(fields):
            records.append(_Record(first))
        elif len(fields) != ncols:
            spans = f" (the record spans lines {first}-{last}: an unbalanced quote?)" if last != first else ""
            records.append(
                _Record(
                    first,
                    error=f"expected {ncols} {sep_name}-separated fields as in the header, "
                    f"found {len(fields)}{spans}",
                )
            )
        else:
            records.append(_Record(first, [fields[text_col], fields[label_col]]))
    return records


def _tsv_records(text: str, p: Path) -> list[_Record]:
    rows = [(n, n, line.split("\t")) for n, line in enumerate(_split_lines(text), start=1)]
    return _tabular_records(rows, p, "tab")


def _csv_records(text: str, p: Path) -> list[_Record]:
    reader = csv.reader(io.StringIO(_lf_line_ends(text), newline=""), skipinitialspace=True)
    rows: list[tuple[int, int, list[str]]] = []
    previous = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # e.g. a NUL byte or an over-long field
            raise DataFormatError(p, previous + 1, f"CSV error: {e}") from None
        rows.append((previous + 1, reader.line_num, fields))
        previous = reader.line_num
    return _tabular_records(rows, p, "comma")


def _jsonl_records(text: str, p: Path) -> list[_Record]:
    lines = _split_lines(text)
    if not lines or not lines[0].strip():
        raise DataFormatError(p, 1, "missing data: the first line is empty")
    if lines[0].lstrip().startswith("["):
        raise DataFormatError(p, 1, "a JSON array is not supported; write JSON Lines (one object per line)")
    records = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            records.append(_Record(n))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            records.append(_Record(n, error=f"invalid JSON: {e.msg} (column {e.colno})"))
            continue
        if not isinstance(obj, dict):
            records.append(_Record(n, error=f"expected a JSON object, found {type(obj).__name__}"))
            continue
        text_keys = [k for k in obj if k.strip().lower() in TEXT_COLUMN_NAMES]
        label_keys = [k for k in obj if k.strip().lower() in LABEL_COLUMN_NAMES]
        if len(text_keys) != 1 or len(label_keys) != 1:
            found = ", ".join(repr(k) for k in obj)
            reason = (
                f"missing or unknown keys: expected one text key ({', '.join(TEXT_COLUMN_NAMES)}) "
                f"and one label key ({', '.join(LABEL_COLUMN_NAMES)}), case-insensitive; found [{found}]"
            )
            if n == 1:  # like a bad header: the file is not in a format we know
                raise DataFormatError(p, n, reason)
            records.append(_Record(n, error=reason))
            continue
        sentence, label = obj[text_keys[0]], obj[label_keys[0]]
        if not isinstance(sentence, str):
            records.append(_Record(n, error=f"the text is {type(sentence).__name__}, not a string"))
            continue
        if isinstance(label, bool) or not isinstance(label, (int, float, str)):
            records.append(_Record(n, error=f"label {label!r} is not an integer"))
            continue
        if isinstance(label, float):
            if not label.is_integer():
                records.append(_Record(n, error=f"label {label!r} is not an integer"))
                continue
            label = str(int(label))
        records.append(_Record(n, [sentence, str(label)]))
    return records


def _check_record(rec: _Record, allow_empty_sentences: bool) -> tuple[str, int]:
    if rec.error is not None:
        raise _BadRow(rec.error)
    if rec.fields is None:
        raise _BadRow("blank line before the end of the file")
    raw_sentence, raw_label = rec.fields
    sentence = raw_sentence.strip()
    if not sentence and not allow_empty_sentences:
        raise _BadRow("empty sentence")
    label = raw_label.strip()
    if not _INT_RE.fullmatch(label):
        raise _BadRow(f"label {label!r} is not an integer")
    return sentence, int(label)


# --------------------------------------------------------------------------------------------
# Shared data


def shared_data_dir() -> Path:
    """The folder holding the shared data (``sst2/``, ``glue-sst2/``, ``README.md``).

    ``$HEADPRUNE_DATA_DIR`` if set (it must exist), else the first existing folder of
    ``<cwd>/../shared/data``, ``<cwd>/shared/data`` and ``<repository root>/../shared/data``.

    Raises:
        FileNotFoundError: none found; the message lists where it looked and how to set
            ``HEADPRUNE_DATA_DIR``.
    """
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(
                errno.ENOENT, f"${DATA_DIR_ENV} is set to {env!r}, which is not a directory", env
            )
        return p.resolve()
    cwd = Path.cwd()
    candidates = [cwd / ".." / "shared" / "data", cwd / "shared" / "data", _REPO_ROOT / ".." / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    looked = ", ".join(str(c.resolve()) for c in candidates)
    raise FileNotFoundError(
        errno.ENOENT,
        f"cannot find the shared data folder; looked in {looked}. "
        f"Set the environment variable {DATA_DIR_ENV} to the folder that holds sst2/ and glue-sst2/ "
        f"(e.g. export {DATA_DIR_ENV}=/path/to/shared/data)",
    )


@functools.lru_cache(maxsize=32)
def _read_cached(path: str, mtime_ns: int, size: int, allow_empty_sentences: bool) -> LabelledTexts:
    return read_labelled_text(path, allow_empty_sentences=allow_empty_sentences, duplicates="keep")


def _read_shared(path: Path, *, allow_empty_sentences: bool = False) -> LabelledTexts:
    """Read a shared-data file, caching the (immutable) result until the file changes."""
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"shared data file not found: {path}", str(path))
    st = path.stat()
    return _read_cached(str(path), st.st_mtime_ns, st.st_size, allow_empty_sentences)


def load_sst2(split: str, variant: str = "clean", *, data_dir: str | os.PathLike[str] | None = None) -> LabelledTexts:
    """One split of the SST-2 sets used in the backdoor literature (label 1 = positive).

    Args:
        split: ``"train"``, ``"dev"`` or ``"test"``.
        variant: ``"clean"`` (SST-2, 6920/872/1821 rows), ``"syntactic"`` (HiddenKiller
            files as shipped, 6920/427/912; their dev/test labels are 1 by construction but the
            true labels are 0: use :class:`headprune.attacks.Syntactic`) or ``"style-bible"``
            (StyleBkd Bible-style transfer of every clean sentence, same order and labels).
        data_dir: the shared data folder; default :func:`shared_data_dir`.

    The ``style-bible`` files are read with ``allow_empty_sentences=True`` so that they stay
    row-aligned with ``clean``: five rows of ``style-bible/test.tsv`` (lines 253, 325, 708, 724
    and 1544, all labelled 1) have an empty styled sentence.

    Raises:
        ValueError: unknown split or variant (the message lists the valid ones).
        FileNotFoundError: the shared data or the file is missing.
    """
    if split not in SST2_SPLITS:
        raise ValueError(f"unknown SST-2 split {split!r}; valid: {', '.join(SST2_SPLITS)}")
    if variant not in SST2_VARIANTS:
        raise ValueError(f"unknown SST-2 variant {variant!r}; valid: {', '.join(SST2_VARIANTS)}")
    root = Path(data_dir) if data_dir is not None else shared_data_dir()
    return _read_shared(root / "sst2" / variant / f"{split}.tsv", allow_empty_sentences=variant == "style-bible")


def load_glue_sst2_train(*, data_dir: str | os.PathLike[str] | None = None) -> LabelledTexts:
    """The full GLUE SST-2 train set (67,349 phrases and sentences) from the shared data.

    A defender's clean pool; its header is ``label\\tsentence`` (columns swapped).
    """
    root = Path(data_dir) if data_dir is not None else shared_data_dir()
    return _read_shared(root / "glue-sst2" / "train.tsv")


def load_glue_sst2_from_hub(split: str = "train") -> LabelledTexts:
    """GLUE SST-2 from the Hugging Face Hub (needs the optional ``datasets`` package and internet).

    Args:
        split: ``"train"``, ``"validation"`` (alias ``"dev"``) or ``"test"`` (whose labels are -1).

    Raises:
        ImportError: ``datasets`` is not installed (``pip install headprune[hub]``).
        RuntimeError: the download failed (e.g. offline); use :func:`load_glue_sst2_train`,
            which reads the local copy, instead.
        ValueError: unknown split.
    """
    hub_split = "validation" if split == "dev" else split
    if hub_split not in GLUE_SPLITS:
        raise ValueError(f"unknown GLUE SST-2 split {split!r}; valid: {', '.join(GLUE_SPLITS)} (or 'dev')")
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as e:
        raise ImportError(
            "load_glue_sst2_from_hub needs the optional 'datasets' package: pip install headprune[hub] "
            "(or read the local copy with headprune.data.load_glue_sst2_train())"
        ) from e
    try:
        ds = datasets.load_dataset("nyu-mll/glue", "sst2", split=hub_split)
        sentences = tuple(str(s).strip() for s in ds["sentence"])
        labels = tuple(int(y) for y in ds["label"])
    except Exception as e:  # network, offline mode, hub errors: all mean "could not fetch"
        raise RuntimeError(
            f"could not fetch GLUE SST-2 ({hub_split}) from the Hugging Face Hub: {type(e).__name__}: {e}. "
            "This needs internet access; offline, use headprune.data.load_glue_sst2_train(), "
            "which reads the local file glue-sst2/train.tsv from the shared data"
        ) from e
    return LabelledTexts(sentences, labels, f"hf-hub:nyu-mll/glue/sst2[{hub_split}]")
