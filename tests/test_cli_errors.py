"""Every CLI error is one line without a traceback (``--debug`` shows it), checked before any work:
defense options, numeric arguments, target labels, data labels, ``--out``; env actions; input warnings."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
from test_untrusted_victims import _copy, _drop_digests, _edit_card, _zero_half_embedding
from tiny_models import write_labelled_tsv

from headprune.cli import main
from headprune.defenses import defend
from headprune.defenses import resolve_defense
from headprune.defenses.options import check_settings, env_config_from_settings
from headprune.envs.headprune_env import HeadPruneEnv


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.strip().splitlines() if x.startswith("headprune: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def clean_file(tiny_victim, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    return write_labelled_tsv(folder / "clean.tsv", tiny_victim.defender_clean_data().take(200))


def _defend_args(victim_cache: Path, clean: Path, out: Path, *extra: str) -> list[str]:
    return ["defend", "--model", "tiny", "--cache", str(victim_cache), "--clean-data", str(clean), "--defense",
            "none", "--out", str(out), "--finetune-epochs", "0", "--val-size", "80", "--stats-size", "64",
            "--quiet", *extra]


def test_unknown_defense_option_names_the_valid_ones(victim_cache, clean_file, tmp_path, capsys):
    args = _defend_args(victim_cache, clean_file, tmp_path / "o", "--option", "nonsense=1")
    args[args.index("none")] = "gradient"
    t = time.perf_counter()
    assert main(args) == 2
    line = _error_line(capsys)
    assert "'nonsense'" in line and "reestimate_every" in line and "n_rows" in line
    assert time.perf_counter() - t < 20 and not (tmp_path / "o").exists()  # before any work
    with pytest.raises(ValueError, match="no option 'nonsense'"):
        resolve_defense("gradient", {"nonsense": 1})
    with pytest.raises(ValueError, match=r"option 'n_rows' of 'gradient' must be of type int \| None, got 2.5"):
        resolve_defense("gradient", {"n_rows": 2.5})
    with pytest.raises(ValueError, match="option 'penalty' of 'pure' must be a finite number, got nan"):
        resolve_defense("pure", {"penalty": math.nan})
    assert resolve_defense("pure", {"chunk": 4}).options == {"chunk": 4}


def test_python_defend_refuses_unknown_options_before_work(tiny_victim):
    with pytest.raises(ValueError, match="no option 'nonsense'"):
        defend(tiny_victim, "gradient", options={"nonsense": 1})


@pytest.mark.parametrize("flag, value, match", [
    ("--max-accuracy-drop", "nan", "max_accuracy_drop"),
    ("--max-accuracy-drop", "inf", "max_accuracy_drop"),
    ("--finetune-epochs", "inf", "finetune_epochs"),
])
def test_non_finite_numbers_are_one_line_errors(flag, value, match, victim_cache, clean_file, tmp_path, capsys):
    assert main(_defend_args(victim_cache, clean_file, tmp_path / "o", flag, value)) == 2
    assert match in _error_line(capsys)


def test_non_integer_numbers_are_refused(victim_cache, clean_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse: "invalid int value: '2.5'"
        main(_defend_args(victim_cache, clean_file, tmp_path / "o", "--budget", "2.5"))
    assert exit_info.value.code == 2 and "invalid int value" in capsys.readouterr().err
    for bad in ({"budget": 2.5}, {"budget": True}, {"val_size": "256"}, {"max_accuracy_drop": math.nan},
                {"finetune_epochs": math.inf}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            check_settings(bad)
    with pytest.raises(ValueError, match="budget"):
        env_config_from_settings({"budget": 2.5})


def test_target_label_outside_the_classes(victim_cache, clean_file, tmp_path, capsys):
    assert main(_defend_args(victim_cache, clean_file, tmp_path / "o", "--target-label", "9")) == 2
    line = _error_line(capsys)
    assert "--target-label" in line and "9" in line and "0..1" in line


def test_label_outside_the_classes_names_file_and_line(tiny_victim, victim_cache, tmp_path, capsys):
    rows = list(tiny_victim.defender_clean_data().take(200))
    rows[5] = (rows[5][0], 2)
    bad = write_labelled_tsv(tmp_path / "bad.tsv", rows)
    for seed in ("0", "5"):  # today: a wrong prediction with seed 0, an IndexError with seed 5
        assert main(_defend_args(victim_cache, bad, tmp_path / "o", "--seed", seed)) == 2
        line = _error_line(capsys)
        assert "--clean-data" in line and "bad.tsv, line 7" in line and "label 2" in line


def test_out_an_existing_file_fails_before_the_run(victim_cache, clean_file, tmp_path, capsys):
    out = tmp_path / "report.txt"
    out.write_text("the user's file")
    t = time.perf_counter()
    assert main(_defend_args(victim_cache, clean_file, out)) == 2
    assert "is a file" in _error_line(capsys) and time.perf_counter() - t < 20
    assert out.read_text() == "the user's file"


def test_out_non_empty_needs_overwrite_and_leaves_no_stale_files(victim_cache, clean_file, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "model").mkdir(parents=True)
    (out / "report.json").write_text('{"mine": true}')
    (out / "model" / "pytorch_model.bin").write_text("an earlier model")
    assert main(_defend_args(victim_cache, clean_file, out)) == 2
    assert "--overwrite" in _error_line(capsys)
    assert json.loads((out / "report.json").read_text()) == {"mine": True}  # untouched
    assert main(_defend_args(victim_cache, clean_file, out, "--overwrite")) == 0, capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["defense"] == "none"
    assert not (out / "model" / "pytorch_model.bin").exists()  # no stale file beside the new model
    assert (out / "model" / "headprune.json").is_file() and (out / "report.md").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary folder left


def test_duplicates_warn_and_deduplicate(tiny_victim, victim_cache, tmp_path, capsys):
    rows = list(tiny_victim.defender_clean_data().take(200))
    dup = write_labelled_tsv(tmp_path / "dup.tsv", rows + rows[:30])
    assert main(_defend_args(victim_cache, dup, tmp_path / "a")) == 0
    err = capsys.readouterr().err
    assert "headprune: warning:" in err and "30" in err and "Traceback" not in err
    assert main(_defend_args(victim_cache, dup, tmp_path / "b", "--deduplicate")) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((tmp_path / "b" / "report.json").read_text())["config"]["clean_rows"] == 200


def test_debug_shows_the_traceback(victim_cache, clean_file, tmp_path):
    with pytest.raises(ValueError, match="target_label"):
        main(_defend_args(victim_cache, clean_file, tmp_path / "o", "--target-label", "9", "--debug"))


def test_unexpected_errors_are_one_line_too(monkeypatch, victim_cache, clean_file, tmp_path, capsys):
    import headprune.defenses

    def broken(*args, **kwargs):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(headprune.defenses, "defend", broken)
    assert main(_defend_args(victim_cache, clean_file, tmp_path / "o")) == 1
    line = _error_line(capsys)
    assert "RuntimeError: something broke" in line and "--debug" in line


def test_env_refuses_non_integer_actions(tiny_victim, victim_cache):
    env = HeadPruneEnv(tiny_victim, val_size=80, stats_size=64, cache=victim_cache, progress=False)
    for bad in (2.7, "3", True, np.float32(1.0), np.bool_(True), np.array([1, 2]), None):
        env.reset(seed=0)
        with pytest.raises(ValueError, match="action must be an integer"):
            env.step(bad)
    for good in (np.int64(3), np.array(2), 1, np.uint8(4)):
        env.reset(seed=0)
        _, _, _, _, info = env.step(good)
        assert info["heads_pruned"] == 1


def _traversal(folder: Path) -> None:
    _edit_card(folder, lambda card: card["config"].update(attack="x/../../../escaped_by_card/y"))


def _truncated_weights(folder: Path) -> None:
    _drop_digests(folder)
    weights = folder / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)


def _no_tokenizer(folder: Path) -> None:
    _drop_digests(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)


@pytest.mark.parametrize(("damage", "expected"), [
    (_traversal, "attack"), (_zero_half_embedding, "--force"), (_truncated_weights, "truncated"),
    (_no_tokenizer, "tokenizer"),
])
def test_untrusted_victim_folders_are_one_line_cli_errors(damage, expected, tiny_victim, victim_cache, clean_file,
                                                          tmp_path, capsys):
    folder = _copy(tiny_victim, tmp_path / "in")
    damage(folder)
    args = _defend_args(victim_cache, clean_file, tmp_path / "out")
    args[args.index("tiny")] = str(folder)
    assert main(args) == 2
    assert expected in _error_line(capsys)
    assert not (tmp_path / "out").exists() and not list(tmp_path.rglob("escaped_by_card"))


def test_too_few_rows_for_the_split(tiny_victim, victim_cache, tmp_path, capsys):
    few = write_labelled_tsv(tmp_path / "few.tsv", tiny_victim.defender_clean_data().take(50))
    assert main(_defend_args(victim_cache, few, tmp_path / "o")) == 2
    line = _error_line(capsys)
    assert "--clean-data" in line and "50 rows" in line and "--val-size 80" in line


def test_a_model_with_other_classes_than_the_data_is_refused(victim_cache, clean_file, tmp_path, capsys):
    from dataclasses import asdict

    from headprune.engine.models import build_tiny_classifier
    from headprune.victims import CARD_FILE, VictimConfig

    folder = tmp_path / "tiny3"
    model, tokenizer = build_tiny_classifier(seed=1, num_labels=3)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    config = VictimConfig(model="tiny", attack="badnets", epochs=0.0, lr=1e-3, batch_size=32, max_length=64, seed=1)
    (folder / CARD_FILE).write_text(json.dumps({"name": "tiny3", "config": asdict(config)}))
    args = _defend_args(victim_cache, clean_file, tmp_path / "o")
    args[args.index("tiny")] = str(folder)
    assert main(args) == 2
    line = _error_line(capsys)
    assert "labels [0, 1]" in line and "3 classes" in line


def test_a_results_file_cannot_point_grid_shape_outside_the_cache(tmp_path):
    from headprune.compare.records import grid_shape

    with pytest.raises(ValueError, match="no path separators"):
        grid_shape({"victim": "../../../etc"}, cache=tmp_path)
    assert grid_shape({"victim": "tiny-badnets-p0.2-s0-x"}, cache=tmp_path) is None


def test_defend_takes_unlabelled_sentences_for_a_distilling_defense_only(victim_cache, clean_file, tmp_path, capsys):
    texts = tmp_path / "unlabelled.txt"
    texts.write_text("a quiet , lovely film\nthe plot goes nowhere\n")
    args = _defend_args(victim_cache, clean_file, tmp_path / "o", "--unlabelled-data", str(texts))
    assert main(args) == 2
    assert "--unlabelled-data: defense 'none' does not read unlabelled text; only distill, purify do" in \
        _error_line(capsys)
    assert not (tmp_path / "o").exists()
    args[args.index("none")] = "distill"
    assert main([*args, "--option", "drops=0", "--option", "crops=0", "--option", "concats=0"]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["config"]["unlabelled_rows"] == 2
    texts.write_text("")
    args[args.index(str(tmp_path / "o"))] = str(tmp_path / "p")
    assert main(args) == 2
    assert "unlabelled.txt, line 1: no sentence" in _error_line(capsys) and not (tmp_path / "p").exists()
