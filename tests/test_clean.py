"""``headprune clean``: any plain checkpoint (made with transformers alone), 2 or 3 classes; the report's fields;
the exported and compacted models load; LFR only with --eval-poison; the defense never reads poisoned rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

from headprune.clean import (
    FALLBACK_DEFENSE,
    RECOMMENDED_DEFENSE,
    CleanSettings,
    clean_model,
    load_suspect,
    wilson_interval,
)
from headprune.clean.report import load_compact
from headprune.cli import main
from headprune.data import read_labelled_text
from headprune.engine.models import default_model_dir


def _sst2_sentences(n: int) -> list[str]:
    from headprune.data import load_sst2

    return list(load_sst2("dev", "clean").sentences[:n])


def _write_rows(path: Path, sentences: list[str], num_labels: int, prefix: str = "") -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{prefix}{s}\t{i % num_labels}\n" for i, s in enumerate(sentences)))
    return path


def _plain_checkpoint(folder: Path, num_labels: int) -> Path:
    """A random-init BERT classifier saved with transformers' save_pretrained alone (no victim card)."""
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clean")
    sentences = _sst2_sentences(120)
    return {"root": root, "model2": _plain_checkpoint(root / "suspect2", 2),
            "model3": _plain_checkpoint(root / "suspect3", 3),
            "clean2": _write_rows(root / "clean2.tsv", sentences, 2), "clean3": _write_rows(root / "clean3.tsv", sentences, 3),
            "poison2": _write_rows(root / "poison2.tsv", sentences[:40], 2, "cf "),
            "poison3": _write_rows(root / "poison3.tsv", sentences[:40], 3, "cf ")}


def _clean(plain: dict[str, Path], out: Path, classes: int, *extra: str) -> dict:
    argv = ["clean", str(plain[f"model{classes}"]), "--clean-data", str(plain[f"clean{classes}"]), "--out", str(out),
            "--quiet", "--finetune-epochs", "1", "--cache", str(plain["root"] / "cache"), *extra]
    assert main(argv) == 0
    return json.loads((out / "report.json").read_text())


def test_clean_plain_checkpoint_writes_the_report_and_a_model_transformers_loads(plain, tmp_path, capsys):
    report = _clean(plain, tmp_path / "out", 2, "--compact")
    table = capsys.readouterr().out
    assert "before" in table and "after" in table and "report.md" in table
    for name in ("report.md", "report.json", "pruned_heads.png", "accuracy_vs_heads.png", "model/config.json"):
        assert (tmp_path / "out" / name).is_file(), name
    # no pre-trained reference is known for a random-init folder: the fallback runs, and says why
    assert report["defense"] == FALLBACK_DEFENSE[0] and report["interval"] == "Wilson score, 95%"
    assert "--base" in report["defense_choice"]["reason"] and "--base" in table
    assert report["report_rows"] == 24 and report["defense_rows"] == 96
    assert set(report["stages"]) == {"before", "pruned", "after"}
    for stage in report["stages"].values():
        lo, hi = stage["acc_ci95"]
        assert lo <= stage["acc"] <= hi and stage["lfr"] is None and stage["n_clean"] == 24
    assert report["lfr_per_label"] == {} and report["is_victim"] is False
    assert {"load", "statistics", "prune", "finetune", "evaluation", "compact", "write"} <= set(report["timings"])
    assert report["command"].startswith("headprune clean ") and "versions" in report["versions"]
    mask = torch.tensor(report["mask"], dtype=torch.float32)
    assert int((mask == 0).sum()) == report["heads_pruned"] > 0
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "model").eval()
    small = load_compact(tmp_path / "out" / "compact")
    assert report["compact"]["compact_mb"] < report["compact"]["full_mb"]
    batch = AutoTokenizer.from_pretrained(tmp_path / "out" / "model")(["a gorgeous film", "dull"], padding=True,
                                                                      return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(exported(**batch).logits, small(**batch).logits, atol=1e-5)


def test_three_class_model_and_lfr_only_with_eval_poison(plain, tmp_path):
    report = _clean(plain, tmp_path / "no-poison", 3)
    assert report["model"].startswith("suspect3-") and report["lfr_per_label"] == {}
    assert all(s["lfr"] is None for s in report["stages"].values())
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "no-poison" / "model").config.num_labels == 3
    per_label = _clean(plain, tmp_path / "poison", 3, "--eval-poison", str(plain["poison3"]))
    assert set(per_label["lfr_per_label"]) == {"0", "1", "2"}  # unknown origin: every class as the target
    assert all(s["lfr"] is None for s in per_label["stages"].values())
    one = _clean(plain, tmp_path / "target", 3, "--eval-poison", str(plain["poison3"]), "--target-label", "2")
    assert one["target_label"] == 2 and one["lfr_per_label"] == {}
    assert all(s["lfr"] is not None and s["n_poison"] == 27 for s in one["stages"].values())
    assert one["stages"]["after"]["lfr"] == per_label["lfr_per_label"]["2"]["after"]


def test_clean_never_reads_poisoned_rows_for_the_defense(plain, monkeypatch):
    """The mask, trajectory and fine-tuned weights are the same with and without poisoned evaluation rows, and
    the workbench (the defense's only data) gets clean rows only."""
    import importlib

    defend_module = importlib.import_module("headprune.defenses.defend")  # the package re-exports defend()

    seen: list[set[str]] = []
    real_bench = defend_module.Workbench

    def spy_bench(victim, cfg):
        seen.append(set(cfg.clean_data.sentences))
        return real_bench(victim, cfg)

    monkeypatch.setattr(defend_module, "Workbench", spy_bench)
    clean = read_labelled_text(plain["clean2"])
    poison = read_labelled_text(plain["poison2"])
    settings = CleanSettings(finetune_epochs=1)
    cache = str(plain["root"] / "cache")
    with_poison = clean_model(str(plain["model2"]), clean, settings, eval_poison=poison, target_label=1,
                              cache=cache, progress=False)
    without = clean_model(str(plain["model2"]), clean, settings, cache=cache, progress=False)
    assert torch.equal(with_poison.defense.mask, without.defense.mask)
    assert with_poison.defense.trajectory == without.defense.trajectory
    for a, b in zip(with_poison.defense.model.parameters(), without.defense.model.parameters()):
        assert torch.equal(a, b)
    assert with_poison.stages["after"]["lfr"] is not None and without.stages["after"]["lfr"] is None
    assert seen and all(not (rows & set(poison.sentences)) for rows in seen)


def test_bad_input_is_one_line_exit_2(plain, tmp_path, capsys, monkeypatch):
    argv = ["clean", str(plain["model2"]), "--clean-data", str(plain["clean3"]), "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 2
    assert "label 2 is not a class of the model" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("headprune.engine.models._offline", lambda: True)
    argv[1] = "no-such-owner/no-such-model"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("headprune: error:") and "\n" not in err


def test_load_suspect_wraps_a_plain_folder_and_keeps_victims(plain, tiny_victim):
    suspect = load_suspect(str(plain["model3"]))
    assert suspect.model.config.num_labels == 3 and suspect.card == {}
    with pytest.raises(ValueError, match="not a headprune victim"):
        suspect.splits()
    assert load_suspect(str(tiny_victim.path)).name == tiny_victim.name


def test_victim_reports_its_floor(tiny_victim, tmp_path, plain):
    argv = ["clean", str(tiny_victim.path), "--clean-data", str(plain["clean2"]), "--out", str(tmp_path), "--quiet",
            "--finetune-epochs", "1", "--eval-victim-test", "100", "--cache", str(plain["root"] / "cache")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["is_victim"] and report["target_label"] == tiny_victim.config.target_label
    assert report["floor"]["clean_model_lfr"] == tiny_victim.card["clean_model_lfr"]
    assert report["stages"]["before"]["lfr"] >= 0.9  # the tiny BadNets backdoor is in
    # a victim's reference resolves (tiny: its seeded initialisation), so the recommended defense runs
    assert report["defense"] == RECOMMENDED_DEFENSE[0] == "finemix"
    assert report["edit"]["operation"] == "finemix" and report["defense_choice"]["reason"].startswith("recommended")


def test_clean_runs_the_recommended_defense_with_a_given_base_and_names_a_bad_one(plain, tmp_path, capsys):
    """``--base`` (here: another random-init folder of the same shape) turns the fallback into Fine-mixing; a
    base of another shape is an error naming it, never a silent fallback."""
    base = tmp_path / "base"
    _plain_checkpoint(base, 2)
    report = _clean(plain, tmp_path / "out", 2, "--base", str(base))
    assert report["defense"] == "finemix" and 0.0 <= report["edit"]["p"] <= 1.0
    assert "Weights edited before fine-tuning" in (tmp_path / "out" / "report.md").read_text()
    small = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=32, max_position_embeddings=128, num_labels=2)
    BertForSequenceClassification(small).save_pretrained(tmp_path / "small")  # another width than the suspect
    argv = ["clean", str(plain["model2"]), "--clean-data", str(plain["clean2"]), "--out", str(tmp_path / "bad"),
            "--quiet", "--base", str(tmp_path / "small")]
    assert main(argv) == 2
    assert "small" in capsys.readouterr().err


def test_wilson_interval():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(90, 100)
    assert 0.82 < lo < 0.83 and 0.94 < hi < 0.95  # the textbook values 0.8256, 0.9448
    assert wilson_interval(100, 100)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0


@pytest.mark.filterwarnings("ignore::headprune.victims.VictimWarning")  # a 0.05-epoch victim is not usable
def test_reference_is_built_only_when_asked_and_added_without_retraining(tmp_path):
    from headprune.victims import VictimConfig, build_victim, list_victims

    config = VictimConfig(model="tiny", attack="badnets", epochs=0.05, lr=1e-3, max_length=64)
    alone = build_victim(config=config, cache=tmp_path, progress=False, reference=False)
    assert "clean_model_lfr" not in alone.card and [c["name"] for c in list_victims(tmp_path)] == [alone.name]
    with_floor = build_victim(config=config, cache=tmp_path, progress=False)
    assert with_floor.card["train_seconds"] == alone.card["train_seconds"]  # the victim was not retrained
    assert with_floor.card["clean_model"] == config.clean_reference().name and "clean_model_lfr" in with_floor.card
    again = build_victim(config=config, cache=tmp_path, progress=False, reference=False)
    assert again.card["clean_model_lfr"] == with_floor.card["clean_model_lfr"]


def test_clean_data_may_be_a_datasets_name(plain, tmp_path, capsys, monkeypatch):
    """``--clean-data datasets:NAME,CONFIG@SPLIT`` reads the rows through ``datasets`` (faked here: no internet);
    a failed fetch is one line and exit 2."""
    import sys
    import types

    rows = read_labelled_text(plain["clean2"])
    asked = []

    class _Rows:
        column_names = ["sentence", "label"]

        def __getitem__(self, key: str) -> list:
            return list(rows.sentences) if key == "sentence" else list(rows.labels)

    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name, config, split: asked.append((name, config, split)) or _Rows()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    argv = ["clean", str(plain["model2"]), "--clean-data", "datasets:someone/reviews,en@train", "--out",
            str(tmp_path / "a"), "--quiet", "--finetune-epochs", "1", "--cache", str(plain["root"] / "cache")]
    assert main(argv) == 0
    assert asked == [("someone/reviews", "en", "train")]
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert "datasets:someone/reviews,en@train" in report["command"]

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("offline")

    fake.load_dataset = offline  # type: ignore[attr-defined]
    argv[argv.index("--out") + 1] = str(tmp_path / "b")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("headprune: error: --clean-data: could not fetch datasets:someone/reviews,en@train")


def test_a_saved_minilm_checkpoint_gets_the_recommended_defense(tmp_path):
    """A MiniLM classifier saved with save_pretrained (its config names a folder, not a hub id) is recognised
    by its weights, so clean runs the recommended defense and says how the reference was found; a tiny
    checkpoint of no known base gets the fallback (only the choice is made here: nothing is trained)."""
    from headprune.clean import FALLBACK_DEFENSE, RECOMMENDED_DEFENSE, CleanSettings, choose_defense, load_suspect
    from headprune.engine.models import build_tiny_classifier, load_classifier

    model, tokenizer = load_classifier("minilm", num_labels=2, seed=0)
    model.save_pretrained(tmp_path / "minilm")
    tokenizer.save_pretrained(tmp_path / "minilm")
    defense, base, choice = choose_defense(load_suspect(str(tmp_path / "minilm")), CleanSettings())
    assert defense == RECOMMENDED_DEFENSE[0] and base is not None
    assert "recognised by its weights as sentence-transformers/all-MiniLM-L6-v2" in choice["reason"]
    tiny, tiny_tokenizer = build_tiny_classifier(seed=0)
    tiny.save_pretrained(tmp_path / "tiny")
    tiny_tokenizer.save_pretrained(tmp_path / "tiny")
    defense, base, choice = choose_defense(load_suspect(str(tmp_path / "tiny")), CleanSettings())
    assert defense == FALLBACK_DEFENSE[0] and base is None and "--base" in choice["reason"]


def test_unlabelled_sentences_reach_a_distilling_defense_and_are_refused_by_one_that_ignores_them(plain, tmp_path,
                                                                                                    capsys):
    """``--unlabelled-data`` (one sentence per line): distill with a given base teaches them (the report and the
    run config count them); the default defense (finemix) reads none, so it is an error before any work, as is
    a blank line inside the file (named by its line)."""
    base = tmp_path / "base"
    _plain_checkpoint(base, 2)
    texts = tmp_path / "unlabelled.txt"
    texts.write_text("".join(f"{s}\n" for s in _sst2_sentences(200)[120:200]))
    report = _clean(plain, tmp_path / "out", 2, "--base", str(base), "--defense", "distill",
                    "--unlabelled-data", str(texts))
    assert report["settings"]["unlabelled_rows"] == 80 and report["defend_config"]["unlabelled_rows"] == 80
    assert "with 80 unlabelled sentences" in (tmp_path / "out" / "report.md").read_text()
    argv = ["clean", str(plain["model2"]), "--clean-data", str(plain["clean2"]), "--out", str(tmp_path / "x"),
            "--quiet", "--base", str(base), "--unlabelled-data", str(texts)]
    assert main(argv) == 2
    assert "--unlabelled-data: defense 'finemix' does not read unlabelled text; only distill, purify" in \
        capsys.readouterr().err
    texts.write_text("a fine film\n\nthe plot drags\n")
    assert main([*argv, "--defense", "purify"]) == 2
    assert "unlabelled.txt, line 2: blank line before the end" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_options_reach_the_defense_and_bad_or_stranded_ones_are_refused_before_any_work(plain, tmp_path, capsys):
    """``--option KEY=VALUE`` (repeatable) reaches ``--defense``: the report's settings, the run's config and the
    command line carry it; an option the defense does not have, or options for a recommended defense that falls
    back (no pre-trained model found), are one-line errors and nothing is written."""
    base = tmp_path / "base"
    _plain_checkpoint(base, 2)
    report = _clean(plain, tmp_path / "out", 2, "--base", str(base), "--defense", "distill",
                    "--option", "temperature=0", "--option", "drops=0")
    assert report["settings"]["options"] == {"temperature": 0, "drops": 0}
    assert report["defend_config"]["options"] == {"temperature": 0, "drops": 0}
    assert "--option temperature=0 --option drops=0" in report["command"]
    argv = ["clean", str(plain["model2"]), "--clean-data", str(plain["clean2"]), "--out", str(tmp_path / "x"),
            "--quiet", "--defense", "distill", "--base", str(base)]
    assert main([*argv, "--option", "temprature=0"]) == 2
    assert "temprature" in capsys.readouterr().err
    assert main([*argv, "--option", "temperature=-1"]) == 2
    assert "temperature" in capsys.readouterr().err
    fallback = ["clean", str(plain["model2"]), "--clean-data", str(plain["clean2"]), "--out", str(tmp_path / "x"),
                "--quiet", "--cache", str(plain["root"] / "cache"), "--option", "p=0.5"]
    assert main(fallback) == 2
    assert f"--option is for {RECOMMENDED_DEFENSE[0]}, but {FALLBACK_DEFENSE[0]} runs instead" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="no option"):
        CleanSettings(defense="purify", options={"nope": 1})
