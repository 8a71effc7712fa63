"""``headprune clean`` on bad inputs (issue 25): the output folder follows ``defend``'s rule (new or empty,
``--overwrite``, staged and renamed into place, never an input's folder or a link), non-finite or mismatched
weights and non-finite settings are one-line errors before any work, and LFR against every class skips the
classes no poisoned row can flip to."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_clean import _plain_checkpoint, _sst2_sentences, _write_rows

from headprune.cli import main
from headprune.engine.export import save_pruned
from headprune.engine.models import ModelLoadError, NonFiniteWeightsError, load_classifier


@pytest.fixture(scope="module")
def suspect(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clean_inputs")
    sentences = _sst2_sentences(100)
    return {"root": root, "model": _plain_checkpoint(root / "suspect", 2),
            "clean": _write_rows(root / "clean.tsv", sentences, 2)}


def _argv(suspect: dict[str, Path], out: Path, *extra: str, model: Path | None = None) -> list[str]:
    return ["clean", str(model or suspect["model"]), "--clean-data", str(suspect["clean"]), "--out", str(out),
            "--quiet", "--finetune-epochs", "1", "--cache", str(suspect["root"] / "cache"), *extra]


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("headprune: error:") and "\n" not in err, err
    return err


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any call of the defense fails the test: the error must come before any work."""
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the defense ran before the input was refused")
    monkeypatch.setattr("headprune.clean.clean_model", fail)
    monkeypatch.setattr("headprune.clean.load_suspect", fail)


def test_out_non_empty_needs_overwrite_and_a_failed_write_leaves_it_as_it_was(suspect, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    assert main(_argv(suspect, out)) == 2
    assert "--overwrite" in _error(capsys) and (out / "report.md").read_text() == "my notes"

    def crash(*args: object, **kwargs: object) -> None:  # a failure in the write phase, after the model is written
        raise RuntimeError("disk full")
    with monkeypatch.context() as m:
        m.setattr("headprune.clean.report.plot_curve", crash)
        assert main(_argv(suspect, out, "--overwrite")) == 1
    assert sorted(p.name for p in out.iterdir()) == ["report.md"] and (out / "report.md").read_text() == "my notes"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # the staging folder is gone
    capsys.readouterr()
    assert main(_argv(suspect, out, "--overwrite")) == 0
    assert json.loads((out / "report.json").read_text())["model"].startswith("suspect-")
    assert (out / "report.md").read_text() != "my notes" and (out / "model" / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


@pytest.mark.parametrize("where", ["model", "inside", "parent", "link", "dangling", "file"])
def test_out_that_would_destroy_an_input_or_is_no_folder_is_refused_before_any_work(
        suspect, tmp_path, capsys, no_work, where):
    model = tmp_path / "suspect"
    shutil.copytree(suspect["model"], model)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    out = {"model": model, "inside": model / "cleaned", "parent": tmp_path, "link": tmp_path / "link",
           "dangling": tmp_path / "dangling", "file": tmp_path / "out.txt"}[where]
    if where == "link":
        out.symlink_to(target)
    elif where == "dangling":
        out.symlink_to(tmp_path / "missing")
    elif where == "file":
        out.write_text("mine")
    assert main(_argv(suspect, out, "--overwrite", model=model)) == 2
    err = _error(capsys)
    expected = {"model": "MODEL", "inside": "MODEL", "parent": "MODEL", "link": "symbolic link",
                "dangling": "symbolic link", "file": "is a file"}[where]
    assert expected in err and str(out) in err
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in suspect["model"].iterdir())
    assert (target / "keep.txt").read_text() == "mine"


def _variant(suspect: dict[str, Path], folder: Path, *, config: dict | None = None, weights=None) -> Path:
    shutil.copytree(suspect["model"], folder)
    if config:
        values = json.loads((folder / "config.json").read_text())
        values.update(config)
        (folder / "config.json").write_text(json.dumps(values))
    if weights:
        tensors = load_file(folder / "model.safetensors")
        weights(tensors)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _nan_everywhere(tensors: dict[str, torch.Tensor]) -> None:
    for key, value in tensors.items():
        if value.is_floating_point():
            tensors[key] = torch.full_like(value, float("nan"))


def test_non_finite_weights_are_refused_at_load_and_never_exported(suspect, tmp_path, capsys):
    nan = _variant(suspect, tmp_path / "nan", weights=_nan_everywhere)
    with pytest.raises(NonFiniteWeightsError, match="non-finite weights"):
        load_classifier(str(nan), num_labels=None)
    assert main(_argv(suspect, tmp_path / "out", model=nan)) == 2
    assert "non-finite" in _error(capsys) and not (tmp_path / "out").exists()
    model, tokenizer = load_classifier(str(suspect["model"]), num_labels=None)
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("inf")  # e.g. a diverged fine-tune
    with pytest.raises(NonFiniteWeightsError, match="model to export"):
        save_pruned(model, torch.ones(2, 4), tmp_path / "export", tokenizer=tokenizer)
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("config, weights, expected", [
    ({"num_labels": 3, "id2label": {"0": "a", "1": "b", "2": "c"}, "label2id": {"a": 0, "b": 1, "c": 2}}, None,
     "num_labels 3 but the classification head has 2 classes"),
    ({"num_labels": 1, "id2label": {"0": "a"}, "label2id": {"a": 0}}, None,
     "num_labels 1 but the classification head has 2 classes"),
    (None, lambda t: t.update({"bert.encoder.layer.0.attention.self.query.weight": torch.zeros(32, 16)}),
     "weight bert.encoder.layer.0.attention.self.query.weight has shape [32, 16] but config.json asks for [32, 32]"),
], ids=["num_labels-3", "num_labels-1", "wrong-shape"])
def test_weights_that_do_not_fit_the_config_are_one_line_naming_the_weight(suspect, tmp_path, capsys, config,
                                                                              weights, expected):
    folder = _variant(suspect, tmp_path / "bad", config=config, weights=weights)
    with pytest.raises(ModelLoadError, match="model.safetensors: weight"):
        load_classifier(str(folder), num_labels=None)
    assert main(_argv(suspect, tmp_path / "out", model=folder)) == 2
    err = _error(capsys)
    assert expected in err and "above report" not in err


@pytest.mark.parametrize("flag, value", [("--finetune-epochs", "inf"), ("--finetune-epochs", "nan"),
                                         ("--holdout-fraction", "nan")])
def test_non_finite_settings_are_one_line_errors(suspect, tmp_path, capsys, no_work, flag, value):
    assert main(_argv(suspect, tmp_path / "out", flag, value)) == 2  # the last --finetune-epochs wins
    assert "must be a finite number" in _error(capsys)


def test_lfr_against_every_class_skips_a_class_no_row_can_flip_to(suspect, tmp_path, capsys):
    """Poisoned rows whose true labels are all 0 (the usual file: non-target rows with the trigger): a model of
    unknown origin gets LFR against class 1, and class 0 is reported as undefined instead of stopping the run."""
    poison = tmp_path / "poison.tsv"
    poison.write_text("sentence\tlabel\n" + "".join(f"cf {s}\t0\n" for s in _sst2_sentences(30)))
    assert main(_argv(suspect, tmp_path / "out", "--eval-poison", str(poison))) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["target_label"] is None
    assert set(report["lfr_per_label"]["0"].values()) == {None}
    assert all(0 <= v <= 1 for v in report["lfr_per_label"]["1"].values())
    assert "LFR with target 0: before undefined" in capsys.readouterr().out
    assert "no row can flip" in (tmp_path / "out" / "report.md").read_text()
