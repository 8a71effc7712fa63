"""The composed defense ``purify`` (Fine-mixing, then distillation into the public base) and ``distill``'s
``teacher`` option: a defense's protocol output as the teacher, each stage reported, bad teachers refused."""

from __future__ import annotations

import pytest
import torch

from headprune.defenses import DEFENSES, DefenseFineTune, FineMixDefense, defend, resolve_defense
from headprune.defenses.distill import DistillDefense

FAST = {"drops": 1, "crops": 1, "concats": 0, "student_epochs": 1.0}
FINETUNE = DefenseFineTune(epochs=1, lr=1e-3)


@pytest.fixture(scope="module")
def eval_rows(tiny_victim):
    splits = tiny_victim.splits()
    return splits.clean_test.take(120), splits.poisoned_test.take(120)


def test_purify_teaches_with_finemix_protocol_output_and_reports_each_stage(tiny_victim, small_env_config,
                                                                             eval_rows):
    """The teacher stage of ``purify`` IS ``defend(victim, "finemix")``'s model (same p, same validation, same
    evaluation), and the student is the base taught by it: ``details`` and ``metrics["stages"]`` say so."""
    clean_test, poisoned_test = eval_rows
    config = small_env_config(0)
    finemix = defend(tiny_victim, "finemix", config, FINETUNE, options={"grid": [0.5, 0.1], "select_max_steps": 2},
                     eval_clean=clean_test, eval_poison=poisoned_test)
    teacher = FineMixDefense(grid=[0.5, 0.1], select_max_steps=2)
    purify = defend(tiny_victim, DEFENSES.get("purify")(teacher=teacher, **FAST), config, FINETUNE,
                    eval_clean=clean_test, eval_poison=poisoned_test)
    stage = purify.metrics["stages"]["teacher: finemix"]
    assert stage["acc"] == finemix.metrics["final"]["acc"] and stage["lfr"] == finemix.metrics["final"]["lfr"]
    taught = purify.details["teacher"]
    assert taught["defense"] == "finemix" and taught["p"] == finemix.details["p"]
    assert taught["validation"] == finemix.validation
    assert purify.details["edit"]["p"] == 1.0  # the student starts from the base
    assert purify.details["finetune"]["epochs"] == 1.0 and purify.details["finetune"]["augmented"] > 0
    assert set(purify.metrics) == {"pruned", "final", "stages"}
    assert purify.config["policy"]["teacher"]["defense"] == "finemix"  # a teacher object is recorded
    # the student differs from its teacher: distillation ran from the base, not a copy of the teacher
    assert purify.metrics["final"] != stage


def test_teacher_by_name_equals_teacher_object_and_suspect_is_distill(tiny_victim, small_env_config, eval_rows):
    clean_test, _ = eval_rows
    config = small_env_config(1)
    by_name = defend(tiny_victim, "purify", config, FINETUNE, options={**FAST, "teacher": "ft"}, eval_clean=clean_test)
    by_object = defend(tiny_victim, DistillDefense(teacher=DEFENSES.get("ft")(), **FAST), config, FINETUNE,
                       eval_clean=clean_test)
    assert by_name.metrics["final"]["acc"] == by_object.metrics["final"]["acc"]
    assert by_name.metrics["stages"] == by_object.metrics["stages"]
    for a, b in zip(by_name.model.parameters(), by_object.model.parameters(), strict=True):
        assert torch.equal(a, b)
    suspect = defend(tiny_victim, "distill", config, FINETUNE, options=FAST, eval_clean=clean_test)
    assert "stages" not in suspect.metrics and suspect.details["teacher"] == {"defense": "suspect"}


@pytest.mark.parametrize(("name", "options", "message"), [
    ("purify", {"teacher": "finemixx"},
     r"option 'teacher' of 'purify': 'finemixx' is not a defense; valid: 'suspect' or one of .*finemix"),
    ("distill", {"teacher": 3}, r"option 'teacher' of 'distill' must be of type str \| Defense, got 3"),
    ("purify", {"teacher_options": {"select_epochs": "x"}},
     "option 'teacher_options' of 'purify': option 'select_epochs' of 'finemix' must be of type float, got 'x'"),
    ("purify", {"teacher_options": {"grid_size": 3}}, "defense 'finemix' has no option 'grid_size'"),
    ("purify", {"teacher_options": [1]}, "option 'teacher_options' of 'purify' must be of type dict"),
    ("distill", {"teacher_options": {"p": 0.5}}, "teacher_options' of 'distill' is for a teacher given by name"),
    ("distill", {"student_epochs": 0}, r"option 'student_epochs' of 'distill' must be in \(0, inf\], got 0"),
    ("purify", {"student_epochs": float("inf")}, "option 'student_epochs' of 'purify' must be a finite number"),
])
def test_bad_teacher_options_are_refused_before_any_work(name, options, message):
    with pytest.raises(ValueError, match=message):
        resolve_defense(name, options)


def test_purify_without_a_base_is_a_one_line_error_naming_base(tmp_path, monkeypatch, capsys):
    """A plain checkpoint whose pre-trained model cannot be found offline: ``clean --defense purify`` stops with
    one line that says to give ``--base``, before any training (where ``finemix``, the default, falls back)."""
    from test_clean import _plain_checkpoint, _sst2_sentences, _write_rows

    from headprune.cli import main
    from headprune.defenses import base, distill, repaired_floor

    model = _plain_checkpoint(tmp_path / "suspect", 2)
    rows = _write_rows(tmp_path / "rows.tsv", _sst2_sentences(60), 2)

    def no_training(*args, **kwargs):
        raise AssertionError("fine_tune ran before the missing base was reported")

    for module in (base, distill, repaired_floor):
        monkeypatch.setattr(module, "fine_tune", no_training)
    capsys.readouterr()  # what saving the checkpoint printed
    code = main(["clean", str(model), "--clean-data", str(rows), "--out", str(tmp_path / "out"), "--quiet",
                 "--defense", "purify", "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--defense purify needs the pre-trained model" in err and "--base" in err
    assert not (tmp_path / "out").exists()


def test_runner_records_the_teacher_stage_of_purify_only(tiny_victim, victim_cache, tmp_path):
    """``headprune compare`` records a composed defense's stages (ACC, LFR) and its teacher's details; other
    defenses' records keep their keys."""
    from headprune.compare import RunSettings, run_grid

    settings = RunSettings.from_values(finetune_epochs=0.5, finetune_max_steps=3, val_size=80, stats_size=64,
                                       test_limit=60, fast=True)
    report = run_grid(["tiny"], ["purify", "ft"], [0], tmp_path / "runs.jsonl", settings, cache=victim_cache,
                      progress=False, log=lambda _: None)
    purify, ft = report.records
    assert purify["defense"] == "purify" and set(purify["stages"]) == {"teacher: finemix"}
    assert 0.0 <= purify["stages"]["teacher: finemix"]["lfr"] <= 1.0 and purify["teacher"]["defense"] == "finemix"
    assert "p" in purify["teacher"] and "stages" not in ft and "teacher" not in ft


def test_clean_reports_the_teacher_stage_between_pruned_and_after(tiny_victim, tmp_path):
    """``headprune clean --defense purify``: the report's stage table has the teacher's row (ACC on the held-out
    report rows, LFR with poisoned rows) between the edited model and the final one."""
    from headprune.clean import CleanSettings, clean_model

    rows = tiny_victim.defender_clean_data().take(200)
    settings = CleanSettings(defense="purify", finetune_epochs=0.5, val_size=60, stats_size=48)
    result = clean_model(tiny_victim, rows, settings, eval_poison=tiny_victim.splits().poisoned_test.take(40),
                         cache=str(tmp_path), progress=False)
    assert list(result.stages) == ["before", "pruned", "teacher: finemix", "after"]
    teacher = result.stages["teacher: finemix"]
    assert teacher["lfr"] is not None and teacher["n_clean"] == result.report_rows and "acc_ci95" in teacher
