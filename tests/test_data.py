"""Tests for headprune.data: the labelled-text reader, LabelledTexts and the shared-data loaders."""

from __future__ import annotations

import pickle
import sys
import types
import warnings
from pathlib import Path

import pytest

from headprune import data
from headprune.data import (
    DataFormatError,
    LabelledTexts,
    SkippedRowsWarning,
    load_glue_sst2_from_hub,
    load_glue_sst2_train,
    load_sst2,
    read_labelled_text,
    shared_data_dir,
)

# Row counts from ../shared/data/README.md.
README_COUNTS = {
    ("clean", "train"): 6920,
    ("clean", "dev"): 872,
    ("clean", "test"): 1821,
    ("syntactic", "train"): 6920,
    ("syntactic", "dev"): 427,
    ("syntactic", "test"): 912,
    ("style-bible", "train"): 6920,
    ("style-bible", "dev"): 872,
    ("style-bible", "test"): 1821,
}
GLUE_TRAIN_ROWS = 67_349


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    p.write_bytes(content)
    return p


def assert_format_error(path: Path, line: int, *words: str, **kwargs: bool) -> DataFormatError:
    with pytest.raises(DataFormatError) as info:
        read_labelled_text(path, **kwargs)
    err = info.value
    msg = str(err)
    assert str(path) in msg
    assert f"line {line}:" in msg
    assert err.line == line and err.path == str(path)
    for w in words:
        assert w in msg, msg
    return err


# ---------------------------------------------------------------------------------------------
# Shared data


@pytest.mark.parametrize(("variant", "split"), sorted(README_COUNTS))
def test_sst2_files_have_readme_row_counts(shared: Path, variant: str, split: str) -> None:
    texts = load_sst2(split, variant)
    assert len(texts) == README_COUNTS[(variant, split)]
    assert set(texts.labels) <= {0, 1}
    assert texts.source.endswith(f"{variant}/{split}.tsv")


def test_glue_train_has_readme_row_count_and_swapped_columns(shared: Path) -> None:
    texts = load_glue_sst2_train()
    assert len(texts) == GLUE_TRAIN_ROWS
    assert texts.labels[0] == 0 and texts.sentences[0] == "hide new secretions from the parental units"
    assert set(texts.labels) == {0, 1}


def test_shared_files_quirks(shared: Path) -> None:
    # CRLF stripped, no-final-newline file complete, padded separators stripped, non-ASCII kept.
    clean = load_sst2("train", "clean")
    assert not any(s != s.strip() or "\r" in s for s in clean.sentences)
    assert any(any(ord(c) > 127 for c in s) for s in clean.sentences)
    assert load_sst2("test", "syntactic").sentences[-1] == "if it 's not funny , it 's not funny ."
    bible = load_sst2("dev", "style-bible")
    assert bible.labels == load_sst2("dev", "clean").labels
    assert bible.sentences[0] == "a cloke of long string of cliches ."
    # Quotes inside TSV sentences are kept verbatim (no csv quote handling).
    assert any('"""' in s for s in load_sst2("test", "style-bible").sentences)


def test_style_bible_test_has_empty_rows_kept_for_alignment(shared: Path) -> None:
    styled = load_sst2("test", "style-bible")
    empty = [i for i, s in enumerate(styled.sentences) if not s]
    assert [i + 2 for i in empty] == [253, 325, 708, 724, 1544]  # file line numbers
    assert all(styled.labels[i] == 1 for i in empty)
    # Read strictly, the same file is an error at the first such line.
    assert_format_error(shared / "sst2" / "style-bible" / "test.tsv", 253, "empty sentence")


def test_load_sst2_unknown_names(shared: Path) -> None:
    with pytest.raises(ValueError, match="train, dev, test"):
        load_sst2("validation")
    with pytest.raises(ValueError, match="clean, syntactic, style-bible"):
        load_sst2("train", "bible")


def test_shared_data_dir_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADPRUNE_DATA_DIR", str(tmp_path))
    assert shared_data_dir() == tmp_path.resolve()
    monkeypatch.setenv("HEADPRUNE_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="HEADPRUNE_DATA_DIR"):
        shared_data_dir()


def test_shared_data_dir_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEADPRUNE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data.shared, "_REPO_ROOT", tmp_path / "repo")
    with pytest.raises(FileNotFoundError) as info:
        shared_data_dir()
    msg = str(info.value)
    assert "HEADPRUNE_DATA_DIR" in msg and str(tmp_path) in msg


# ---------------------------------------------------------------------------------------------
# Reader: accepted quirks


def test_tsv_crlf_bom_padded_no_final_newline(tmp_path: Path) -> None:
    p = write(tmp_path, "a.tsv", b"\xef\xbb\xbfSentence \t Label\r\nsome text . \t 0\r\nit 's \"quoted\" , caf\xc3\xa9 .\t 1")
    texts = read_labelled_text(p)
    assert texts.sentences == ("some text .", 'it \'s "quoted" , café .')
    assert texts.labels == (0, 1)
    assert texts.source == str(p) and texts.skipped == ()


def test_tsv_swapped_columns_extra_column_trailing_blank_lines(tmp_path: Path) -> None:
    p = write(tmp_path, "b.tsv", "LABELS\tidx\ttext\n1\t7\tgood .\n0\t8\tbad .\n\n  \n")
    texts = read_labelled_text(p)
    assert texts.sentences == ("good .", "bad .") and texts.labels == (1, 0)


def test_tsv_keeps_vertical_tab_and_unicode_line_separator(tmp_path: Path) -> None:
    p = write(tmp_path, "c.tsv", "sentence\tlabel\na\x0bb\u2028c\x85d\t1\n")
    assert read_labelled_text(p).sentences == ("a\x0bb\u2028c\x85d",)


def test_csv_with_quotes_and_padding(tmp_path: Path) -> None:
    content = 'text,label\r\n"hello, world",1\r\n"she said ""wow""" , 0\r\nplain , 1'
    texts = read_labelled_text(write(tmp_path, "d.csv", content))
    assert texts.sentences == ("hello, world", 'she said "wow"', "plain")
    assert texts.labels == (1, 0, 1)


def test_jsonl_text_labels_keys(tmp_path: Path) -> None:
    content = '{"text": "good .", "labels": 1}\n{"Text": " bad . ", "labels": "0", "id": 3}\r\n{"text": "ok", "labels": 1.0}\n\n'
    texts = read_labelled_text(write(tmp_path, "e.jsonl", content))
    assert texts.sentences == ("good .", "bad .", "ok") and texts.labels == (1, 0, 1)
    assert len(read_labelled_text(write(tmp_path, "f.json", '{"sentence": "x", "label": 0}'))) == 1


def test_header_only_gives_empty_set(tmp_path: Path) -> None:
    assert len(read_labelled_text(write(tmp_path, "g.tsv", "sentence\tlabel\n"))) == 0


# ---------------------------------------------------------------------------------------------
# Reader: error paths (type, file and line number in the message)


def test_wrong_field_count(tmp_path: Path) -> None:
    p = write(tmp_path, "bad.tsv", "sentence\tlabel\r\ngood .\t1\r\ntoo\tmany\t0\r\nfine\t0\r\n")
    assert_format_error(p, 3, "expected 2", "found 3")
    p = write(tmp_path, "bad2.tsv", "sentence\tlabel\nno label here\n")
    assert_format_error(p, 2, "found 1")


def test_wrong_field_count_csv(tmp_path: Path) -> None:
    assert_format_error(write(tmp_path, "bad.csv", "sentence,label\na,1\nb,c,1\n"), 3, "comma-separated")


def test_non_integer_label(tmp_path: Path) -> None:
    assert_format_error(write(tmp_path, "bad.tsv", "sentence\tlabel\na\t1\nb\t1\nc\tpos\n"), 4, "'pos'", "not an integer")
    assert_format_error(write(tmp_path, "bad.jsonl", '{"text":"a","label":0}\n{"text":"b","label":0.5}\n'), 2, "0.5")
    assert_format_error(write(tmp_path, "bad2.jsonl", '{"text":"a","label":true}\n'), 1, "True")


def test_empty_sentence(tmp_path: Path) -> None:
    assert_format_error(write(tmp_path, "bad.tsv", "sentence\tlabel\na\t1\n  \t0\n"), 3, "empty sentence")
    assert_format_error(write(tmp_path, "bad.csv", 'text,label\na,1\nb,0\n"",1\n'), 4, "empty sentence")
    p = write(tmp_path, "ok.tsv", "sentence\tlabel\na\t1\n \t0\n")
    assert read_labelled_text(p, allow_empty_sentences=True).sentences == ("a", "")


@pytest.mark.parametrize(
    ("name", "content", "found"),
    [
        ("h1.tsv", "review\tscore\na\t1\n", "found header ['review', 'score']"),
        ("h2.tsv", "a good film .\t1\nbad .\t0\n", "found header ['a good film .', '1']"),  # no header
        ("h3.csv", "sentence;label\na;1\n", "found header ['sentence;label']"),
        ("h4.jsonl", '{"review": "a", "score": 1}\n', "found ['review', 'score']"),
    ],
)
def test_unknown_or_missing_header(tmp_path: Path, name: str, content: str, found: str) -> None:
    assert_format_error(write(tmp_path, name, content), 1, "missing or unknown", found)


def test_empty_file_and_ambiguous_header(tmp_path: Path) -> None:
    assert_format_error(write(tmp_path, "empty.tsv", ""), 1, "missing header")
    assert_format_error(write(tmp_path, "amb.tsv", "text\tsentence\tlabel\na\tb\t1\n"), 1, "ambiguous header")


def test_blank_line_in_the_middle(tmp_path: Path) -> None:
    assert_format_error(write(tmp_path, "bad.tsv", "sentence\tlabel\r\na\t1\r\n\r\nb\t0\r\n\r\n"), 3, "blank line")
    assert_format_error(write(tmp_path, "bad.csv", "sentence,label\na,1\nb,0\n\nc,1\n"), 4, "blank line")
    assert_format_error(write(tmp_path, "bad.jsonl", '{"text":"a","label":0}\n\n{"text":"b","label":1}\n'), 2, "blank line")


def test_invalid_json_and_bad_utf8(tmp_path: Path) -> None:
    assert_format_error(write(tmp_path, "bad.jsonl", '{"text":"a","label":0}\n{"text": "b", label: 1}\n'), 2, "invalid JSON")
    assert_format_error(write(tmp_path, "bad.tsv", b"sentence\tlabel\na\t1\ncaf\xe9\t0\n"), 3, "UTF-8")


def test_unbalanced_csv_quote(tmp_path: Path) -> None:
    assert_format_error(write(tmp_path, "bad.csv", 'text,label\na,1\n"b,0\nc,1\nd,0\n'), 3, "lines 3-5", "unbalanced quote")


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nowhere" / "train.tsv"
    with pytest.raises(FileNotFoundError, match="train.tsv") as info:
        read_labelled_text(p)
    assert str(p) in str(info.value)


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.txt"):
        read_labelled_text(write(tmp_path, "a.txt", "sentence\tlabel\n"))
    assert len(read_labelled_text(write(tmp_path, "b.txt", "sentence\tlabel\na\t1\n"), fmt="tsv")) == 1


def test_skip_bad_rows_reports_lines_and_warns(tmp_path: Path) -> None:
    content = "sentence\tlabel\na\t1\nb\tx\n\nc\t0\n \t1\nd\t1\te\nf\t0\n\n"
    p = write(tmp_path, "bad.tsv", content)
    with pytest.warns(SkippedRowsWarning) as record:
        texts = read_labelled_text(p, skip_bad_rows=True)
    assert texts.sentences == ("a", "c", "f") and texts.labels == (1, 0, 0)
    assert texts.skipped == (3, 4, 6, 7)
    msg = str(record[0].message)
    assert str(p) in msg and "skipped 4" in msg and "3, 4, 6, 7" in msg


def test_skip_bad_rows_truncates_line_list_and_clean_file_does_not_warn(tmp_path: Path) -> None:
    p = write(tmp_path, "many.tsv", "sentence\tlabel\n" + "".join(f"s{i}\tbad\n" for i in range(9)) + "ok\t1\n")
    with pytest.warns(SkippedRowsWarning, match=r"skipped 9 .*2, 3, 4, 5, 6, \.\.\."):
        texts = read_labelled_text(p, skip_bad_rows=True)
    assert texts.skipped == tuple(range(2, 11)) and len(texts) == 1
    good = write(tmp_path, "good.tsv", "sentence\tlabel\na\t1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_labelled_text(good, skip_bad_rows=True).skipped == ()


def test_skip_bad_rows_does_not_skip_a_bad_header(tmp_path: Path) -> None:
    assert_format_error(write(tmp_path, "bad.tsv", "words\tlabel\na\t1\n"), 1, "header", skip_bad_rows=True)


def test_data_format_error_is_value_error_and_picklable() -> None:
    err = DataFormatError("x.tsv", 7, "empty sentence")
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.line, again.reason, str(again)) == ("x.tsv", 7, "empty sentence", str(err))


# ---------------------------------------------------------------------------------------------
# LabelledTexts


def test_labelled_texts_operations() -> None:
    a = LabelledTexts(["a", "b", "c"], [0, 1, 1], "A")
    assert isinstance(a.sentences, tuple) and len(a) == 3 and list(a) == [("a", 0), ("b", 1), ("c", 1)]
    assert a.subset([2, 0]) == LabelledTexts(("c", "a"), (1, 0), "A")
    assert a.take(2).sentences == ("a", "b") and len(a.take(10)) == 3
    b = a.concat(LabelledTexts(("d",), (0,), "B"))
    assert b.sentences == ("a", "b", "c", "d") and b.source == "A + B"
    assert a.label_counts() == {0: 1, 1: 2} and a.indices_with_label(1) == (1, 2)
    assert a.majority_share() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="E: no rows"):
        LabelledTexts((), (), "E").majority_share()
    with pytest.raises(ValueError, match="3 sentences but 2 labels"):
        LabelledTexts(("a", "b", "c"), (0, 1), "X")
    with pytest.raises(IndexError):
        a.subset([3])
    with pytest.raises(ValueError):
        a.take(-1)
    with pytest.raises(TypeError):
        LabelledTexts((1,), (0,))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Hub loader (never touches the network)


def test_hub_loader_without_datasets() -> None:
    try:
        import datasets  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the optional 'datasets' package is installed")
    with pytest.raises(ImportError, match=r"pip install headprune\[hub\]"):
        load_glue_sst2_from_hub()


def test_hub_loader_fetch_failure_says_use_local_file(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("datasets")

    def load_dataset(*args: object, **kwargs: object) -> None:
        raise ConnectionError("offline")

    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(RuntimeError, match="internet") as info:
        load_glue_sst2_from_hub("dev")
    assert "load_glue_sst2_train()" in str(info.value)
    with pytest.raises(ValueError, match="validation"):
        load_glue_sst2_from_hub("nope")


class _FakeDataset:
    def __init__(self, columns: dict[str, list[object]]) -> None:
        self._columns = columns
        self.column_names = list(columns)

    def __getitem__(self, key: str) -> list[object]:
        return self._columns[key]


def test_a_datasets_name_is_read_through_its_text_and_label_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    from headprune.data.hub import is_hub_dataset, load_hub_dataset, parse_hub_dataset

    calls = []
    fake = types.ModuleType("datasets")

    def load_dataset(name: str, config: str | None, split: str) -> _FakeDataset:
        calls.append((name, config, split))
        return _FakeDataset({"idx": [0, 1], "Text": [" good film ", "bad"], "label": [1, 0]})

    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    rows = load_hub_dataset("datasets:someone/reviews,en@validation")
    assert calls == [("someone/reviews", "en", "validation")]
    assert list(rows) == [("good film", 1), ("bad", 0)] and rows.source == "datasets:someone/reviews,en@validation"
    assert parse_hub_dataset("datasets:imdb").split == "train" and not is_hub_dataset("data/imdb.tsv")
    with pytest.raises(ValueError, match=r"expected datasets:NAME\[,CONFIG\]\[@SPLIT\]"):
        parse_hub_dataset("datasets:../../etc")
    fake.load_dataset = lambda *a, **k: _FakeDataset({"review": ["x"], "label": [1]})  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"no text column; it has \['review', 'label'\]"):
        load_hub_dataset("datasets:imdb")
    fake.load_dataset = lambda *a, **k: _FakeDataset({"text": ["x"], "label": ["pos"]})  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="row 0: label 'pos' is not an integer"):
        load_hub_dataset("datasets:imdb")

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("offline")

    fake.load_dataset = offline  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="needs internet access"):
        load_hub_dataset("datasets:imdb")


def test_read_sentences_reads_one_sentence_per_line_and_names_the_bad_line(tmp_path: Path) -> None:
    from headprune.data import DataFormatError, read_sentences

    ok = tmp_path / "texts.txt"
    ok.write_bytes("\ufeffa fine film\r\n  the plot\tdrags \r\nstunning\n\n\n".encode())
    assert read_sentences(ok) == ["a fine film", "the plot\tdrags", "stunning"]  # BOM, CRLF, tab kept, end blanks
    blank = tmp_path / "blank.txt"
    blank.write_text("a fine film\n   \nstunning\n")
    with pytest.raises(DataFormatError, match=r"blank.txt, line 2: blank line before the end"):
        read_sentences(blank)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataFormatError, match=r"empty.txt, line 1: no sentence"):
        read_sentences(empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(DataFormatError, match=r"latin.txt, line 2: not valid UTF-8"):
        read_sentences(latin)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_sentences(tmp_path / "missing.txt")
