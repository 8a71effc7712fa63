"""Labelled text: the one type and the one reader every part of :mod:`headprune` uses.

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
SST-2 files of the backdoor literature are read by :func:`load_sst2`, HiddenKiller's OffensEval files by
:func:`load_offenseval` (a victim's clean splits by :func:`load_clean_split`), and the full GLUE SST-2
train set by :func:`load_glue_sst2_train`. Online users may instead fetch GLUE SST-2 from the

Modules: :mod:`~headprune.data.texts` (the :class:`LabelledTexts` type, errors and warnings),
:mod:`~headprune.data.readers` (:func:`read_labelled_text`, :func:`as_labelled_texts`, :func:`read_sentences`
for unlabelled text) and
:mod:`~headprune.data.shared` (the shared data folder and its SST-2 / GLUE files) and
:mod:`~headprune.data.pools` (named defender pools for the clean-data budget); every name is
importable from :mod:`headprune.data`.
"""

from __future__ import annotations

from headprune.data.pools import (
    DATASET_DEFENDER_POOLS,
    DEFENDER_POOLS,
    GLUE_POOL_SEED,
    OFFENSEVAL_DEV_ROWS,
    OFFENSEVAL_DEV_SEED,
    load_defender_pool,
)
from headprune.data.readers import (
    LABEL_COLUMN_NAMES,
    TEXT_COLUMN_NAMES,
    as_labelled_texts,
    read_labelled_text,
    read_sentences,
)
from headprune.data.shared import (
    DATASETS,
    DATA_DIR_ENV,
    GLUE_SPLITS,
    OFFENSEVAL_VARIANTS,
    SST2_SPLITS,
    SST2_VARIANTS,
    load_clean_split,
    load_glue_sst2_from_hub,
    load_glue_sst2_train,
    load_offenseval,
    load_sst2,
    shared_data_dir,
)
from headprune.data.texts import DataFormatError, DuplicateRowsWarning, LabelledTexts, SkippedRowsWarning

__all__ = [
    "DATASETS",
    "DATASET_DEFENDER_POOLS",
    "DATA_DIR_ENV",
    "DEFENDER_POOLS",
    "GLUE_POOL_SEED",
    "GLUE_SPLITS",
    "LABEL_COLUMN_NAMES",
    "OFFENSEVAL_DEV_ROWS",
    "OFFENSEVAL_DEV_SEED",
    "OFFENSEVAL_VARIANTS",
    "SST2_SPLITS",
    "SST2_VARIANTS",
    "TEXT_COLUMN_NAMES",
    "DataFormatError",
    "DuplicateRowsWarning",
    "LabelledTexts",
    "SkippedRowsWarning",
    "as_labelled_texts",
    "load_clean_split",
    "load_glue_sst2_from_hub",
    "load_defender_pool",
    "load_glue_sst2_train",
    "load_offenseval",
    "load_sst2",
    "read_labelled_text",
    "read_sentences",
    "shared_data_dir",
]
