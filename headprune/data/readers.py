"""The one labelled-text reader: TSV, CSV and JSON Lines files with the quirks the backdoor literature ships
(see :mod:`headprune.data` for the rules)."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, overload

from headprune.data.texts import DataFormatError, Duplicates, DuplicateRowsWarning, LabelledTexts, SkippedRowsWarning

__all__ = ["LABEL_COLUMN_NAMES", "TEXT_COLUMN_NAMES", "as_labelled_texts", "read_labelled_text", "read_sentences"]

TEXT_COLUMN_NAMES: tuple[str, ...] = ("sentence", "sentences", "text")
#: Header names (compared case-insensitively) accepted for the label column.
LABEL_COLUMN_NAMES: tuple[str, ...] = ("label", "labels")
#: Environment variable that overrides where the shared data lives.

Format = Literal["tsv", "csv", "jsonl"]
_EXTENSIONS: dict[str, Format] = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
_INT_RE = re.compile(r"[+-]?\d+")
_MAX_LINES_IN_WARNING = 5

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

    texts = _checked_rows(records, p, skip_bad_rows=skip_bad_rows, allow_empty_sentences=allow_empty_sentences)
    return _handle_duplicates(texts, duplicates)


def _checked_rows(records: list[_Record], p: Path, *, skip_bad_rows: bool, allow_empty_sentences: bool
                  ) -> LabelledTexts:
    """The valid rows of ``records`` (a bad row raises, or is skipped with one SkippedRowsWarning)."""
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
            stacklevel=3,  # the caller of read_labelled_text
        )
    return LabelledTexts(tuple(sentences), tuple(labels), str(p), tuple(n for n, _ in skipped), tuple(row_lines))


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


def read_sentences(path: str | os.PathLike[str]) -> list[str]:
    """The sentences of a plain UTF-8 text file, one per line (unlabelled text: no header, no columns; a
    tab is part of the sentence). Blank lines after the last sentence are fine; earlier ones are errors.

    Raises:
        FileNotFoundError: the path is not a file (the message names it).
        DataFormatError: the message names the file and the 1-based line: not UTF-8, a blank line before the
            end, or no sentence at all (line 1).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(errno.ENOENT, f"text file not found (or not a file): {p}", str(p))
    lines = _split_lines(_decode(p.read_bytes(), p))
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataFormatError(p, 1, "no sentence: give one sentence per line")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataFormatError(p, number, "blank line before the end: give one sentence per line")
    return [line.strip() for line in lines]


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
