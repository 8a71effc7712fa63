"""Untrusted data files: labels outside the model's classes, duplicates, CSV line breaks in quotes,
CR-only line ends and too few rows are reported before any work, naming the file and line."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from headprune.data import DuplicateRowsWarning, LabelledTexts, read_labelled_text
from headprune.data.checks import check_enough_rows, check_labels, check_num_labels


def write(tmp_path: Path, name: str, content: str) -> Path:
    p = tmp_path / name
    p.write_bytes(content.encode())
    return p


def test_label_outside_the_model_classes_names_file_line_and_range(tmp_path):
    p = write(tmp_path, "clean.tsv", "sentence\tlabel\ngood .\t1\nbad .\t0\nodd .\t2\nfine .\t1\n")
    data = read_labelled_text(p)
    with pytest.raises(ValueError, match=r"clean_data \(.*clean\.tsv, line 4\): label 2 .*\(valid labels 0\.\.1\)"):
        check_labels(data, 2, "clean_data")
    # a shuffled split of the rows still names the file's line
    part = data.subset([3, 2, 0])
    with pytest.raises(ValueError, match="line 4"):
        check_labels(part, 2, "clean_data")
    checked = check_labels(data, 3)
    assert checked == data and checked.checked_classes == 3 and data.checked_classes is None


def test_checked_rows_carry_the_mark_and_are_not_rescanned(tmp_path, monkeypatch):
    """Rows are checked where they enter; their subsets keep the mark, so later stages return at once, while
    a different class count (or an unchecked part of a concatenation) is checked again."""
    import headprune.data.checks as checks

    p = write(tmp_path, "clean.tsv", "sentence\tlabel\ngood .\t1\nbad .\t0\nodd .\t2\nfine .\t1\n")
    checked = check_labels(read_labelled_text(p), 3, "--clean-data")
    scans: list[int] = []
    real_scan = checks._out_of_range
    monkeypatch.setattr(checks, "_out_of_range", lambda data, n: scans.append(n) or real_scan(data, n))
    part = checked.subset([3, 2]).take(1)
    assert part.checked_classes == 3 and check_labels(part, 3, "clean_data") is part and scans == []
    with pytest.raises(ValueError, match=r"clean_data \(.*clean\.tsv, line 4\): label 2"):
        check_labels(checked, 2, "clean_data")  # checked for 3 classes, not for 2: scanned again
    assert scans == [2]
    mixed = checked.concat(LabelledTexts(("x",), (1,)))
    assert mixed.checked_classes is None and checked.concat(checked).checked_classes == 3


def test_a_forged_check_mark_is_refused():
    with pytest.raises(ValueError, match="checked_classes=2 does not hold"):
        LabelledTexts(("a", "b"), (0, 2), checked_classes=2)
    with pytest.raises(ValueError, match="checked_classes=True"):
        LabelledTexts(("a",), (0,), checked_classes=True)


def test_negative_label_and_in_memory_rows():
    with pytest.raises(ValueError, match=r"<memory>, row 1\): label -1"):
        check_labels(LabelledTexts(("a", "b"), (0, -1)), 2)


@pytest.mark.parametrize("num_labels", [1, True, 2.0, float("nan")])
def test_num_labels_must_be_an_integer_of_at_least_two(num_labels):
    with pytest.raises(ValueError, match="num_labels"):
        check_num_labels(num_labels)


def test_duplicate_rows_warn_with_the_count_and_can_be_dropped(tmp_path):
    p = write(tmp_path, "dup.tsv", "sentence\tlabel\na\t1\nb\t0\na\t1\na\t0\nb\t0\nc\t1\n")
    with pytest.warns(DuplicateRowsWarning, match=r"2 of 6 rows repeat an earlier row.*line\(s\) 4, 6"):
        data = read_labelled_text(p)
    assert len(data) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dropped = read_labelled_text(p, duplicates="drop")
        kept = read_labelled_text(p, duplicates="keep")
    assert dropped.sentences == ("a", "b", "a", "c") and dropped.labels == (1, 0, 0, 1)
    assert dropped.lines == (2, 3, 5, 7) and len(kept) == 6
    assert data.deduplicated() == dropped and dropped.deduplicated() is dropped
    assert data.duplicate_indices() == (2, 4)


def test_quoted_csv_field_with_a_line_break_is_read(tmp_path):
    p = write(tmp_path, "nl.csv", 'text,label\n"first line\nsecond line",1\nplain,0\n')
    data = read_labelled_text(p)
    assert data.sentences == ("first line\nsecond line", "plain") and data.labels == (1, 0)
    assert data.lines == (2, 4)


@pytest.mark.parametrize(("name", "content"), [("cr.tsv", "sentence\tlabel\ra .\t1\rb .\t0\r"),
                                               ("cr.csv", "text,label\ra,1\r\"b, c\",0")])
def test_cr_only_line_ends_are_read(tmp_path, name, content):
    data = read_labelled_text(write(tmp_path, name, content))
    assert len(data) == 2 and data.labels == (1, 0)


def test_too_few_rows_left_is_a_clear_error(tmp_path):
    data = read_labelled_text(write(tmp_path, "few.tsv", "sentence\tlabel\na\t1\nb\t0\n"))
    with pytest.raises(ValueError, match=r"clean_data \(.*few\.tsv\) has 2 rows, but 10 are needed \(val_size 8"):
        check_enough_rows(data, 10, "clean_data", "val_size 8 + 2 for fine-tuning")
    assert check_enough_rows(data, 2) is data
