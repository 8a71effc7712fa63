"""The experiment runner (headprune.compare / ``headprune compare``) on the tiny victim with tiny budgets."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest

from headprune.cli import main as cli_main
from headprune.cli.settings import add_setting_arguments, run_settings_from_args
from headprune.compare import (
    CLEAN_MODEL,
    ProcessExecutor,
    RecordStore,
    RunSettings,
    make_executor,
    mean_std,
    plan_grid,
    run_grid,
    summary_markdown,
    summary_rows,
)
from headprune.common.provenance import config_hash, run_config_hash
from headprune.compare.records import load_records, record_key, upgrade_record

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = RunSettings.from_values(finetune_epochs=0.5, finetune_max_steps=2, clean_rows=160, val_size=64, stats_size=48,
                       test_limit=120, fast=True)
METHODS = ["random", "gradient"]
NUMBERS = ("acc", "lfr", "acc_pruned", "lfr_pruned", "heads_pruned", "mask", "pruned_heads", "validation")


def _numbers(records: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[Any, ...]]:
    return {(r["defense"], r["seed"]): tuple(json.dumps(r.get(k)) for k in NUMBERS) for r in records}


@pytest.fixture(scope="module")
def full_grid(tiny_victim, victim_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("compare") / "runs.jsonl"
    report = run_grid(["tiny"], METHODS, [0, 1], path, SETTINGS, cache=victim_cache, progress=False,
                      log=lambda _: None)
    return path, report


def test_grid_writes_one_record_per_run(full_grid, tiny_victim):
    path, report = full_grid
    assert not report.failed
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 4 == len(report.ran) and not report.skipped
    assert {(r["defense"], r["seed"]) for r in lines} == {(m, s) for m in METHODS for s in (0, 1)}
    for r in lines:
        assert r["victim"] == tiny_victim.name and r["attack"] == "badnets"
        for key in ("config_hash", "config", "acc", "lfr", "acc_pruned", "lfr_pruned", "heads_pruned", "wall_s",
                    "validation", "pruned_heads", "versions", "mask", "timings", "environment", "edit"):
            assert key in r, key
        assert r["edit"] is None  # pruning strategies edit no weights
        assert r["versions"]["torch"] and r["config"]["test_limit"] == 120
        assert 0 <= r["lfr"] <= 1 and 0 <= r["acc"] <= 1
        assert len(r["mask"]) == 2 and len(r["mask"][0]) == 4
        assert r["heads_pruned"] == sum(v == 0 for row in r["mask"] for v in row)
    assert "random" in summary_markdown(lines) and "gradient" in summary_markdown(lines)


def test_rerun_skips_every_recorded_run(full_grid, victim_cache: Path):
    path, first = full_grid
    before = path.read_text()
    again = run_grid(["tiny"], METHODS, [0, 1], path, SETTINGS, cache=victim_cache, progress=False, log=lambda _: None)
    assert not again.ran and len(again.skipped) == 4
    assert path.read_text() == before
    assert _numbers(again.records) == _numbers(first.records)


def test_interrupted_grid_resumes_with_the_same_numbers(full_grid, victim_cache: Path, tmp_path: Path):
    _, full = full_grid
    path = tmp_path / "runs.jsonl"
    part = run_grid(["tiny"], METHODS, [0], path, SETTINGS, cache=victim_cache, progress=False, log=lambda _: None)
    assert len(part.ran) == 2
    rest = run_grid(["tiny"], METHODS, [0, 1], path, SETTINGS, cache=victim_cache, progress=False,
                    log=lambda _: None)
    assert {k[1:3] for k in rest.ran} == {(m, 1) for m in METHODS} and len(rest.skipped) == 2
    assert len(path.read_text().splitlines()) == 4
    assert _numbers(rest.records) == _numbers(full.records)  # same seed, same numbers


def test_process_executor_gives_the_same_numbers(full_grid, victim_cache: Path, tmp_path: Path):
    _, local = full_grid
    report = run_grid(["tiny"], METHODS, [0, 1], tmp_path / "runs.jsonl", SETTINGS, cache=victim_cache,
                      executor=ProcessExecutor(2), progress=False, log=lambda _: None)
    assert not report.failed, report.failed
    assert _numbers(report.records) == _numbers(local.records)


def test_reference_row_and_cli(tiny_victim, victim_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "grid"
    argv = ["compare", "--victims", "tiny", "--defenses", "none", "--seeds", "1", "--out", str(out), "--reference",
            "--finetune-epochs", "0", "--clean-rows", "160", "--val-size", "64", "--stats-size", "48",
            "--test-limit", "120", "--cache", str(victim_cache), "--quiet"]
    assert cli_main(argv) == 0
    records = list(RecordStore(out / "runs.jsonl").records.values())
    assert [r["defense"] for r in records] == [CLEAN_MODEL, "none"]
    assert records[0]["lfr"] is not None and records[0]["model"] != tiny_victim.name
    assert (out / "summary.md").read_text().count("| tiny-badnets") == 2
    assert cli_main(argv) == 0
    assert "0 runs done, 2 already recorded" in capsys.readouterr().out


def test_config_hash_is_the_one_defense_table_always_used():
    """Records written by benchmarks/defense_table.py before the runner existed must still be skipped."""
    settings = RunSettings.from_values(finetune_epochs=3, options={"gradient": {"n_rows": 64}})
    legacy = {"finetune_epochs": 3.0, "finetune_max_steps": None, "budget": None, "max_accuracy_drop": 0.05,
              "clean_rows": None, "eval_size": 256, "stats_size": 256, "test_limit": None,
              "options": {"gradient": {"n_rows": 64}}.get("gradient", {})}
    assert "val_size" in settings.defense_config("gradient") and "eval_size" not in settings.defense_config("gradient")
    assert run_config_hash(settings.defense_config("gradient")) == config_hash(legacy)
    assert config_hash(settings.defense_config("gradient")) != config_hash(legacy)  # so the mapping is needed
    assert run_config_hash(settings.defense_config(CLEAN_MODEL)) == config_hash({"kind": CLEAN_MODEL, "test_limit": None})
    assert RunSettings.from_values(fast=True).defense_options("gradient") == {"n_rows": 64}


def test_a_policy_teacher_is_hashed_by_its_bytes(tmp_path: Path):
    """A defense taught by a trained agent (``purify`` with ``teacher="policy:<run>"``) keys on the agent's bytes:
    an agent retrained into the same folder is a new run, not skipped as already recorded; a teacher given by
    name adds nothing (the hashes of those records stay)."""
    run = tmp_path / "agent"
    run.mkdir()
    (run / "model.zip").write_bytes(b"first agent")
    taught = RunSettings.from_values(options={"purify": {"teacher": f"policy:{run}"}})
    first = taught.defense_config("purify")
    assert len(first["teacher_policy_sha256"]) == 64
    (run / "model.zip").write_bytes(b"retrained agent")
    second = taught.defense_config("purify")
    assert second["options"] == first["options"]
    assert run_config_hash(second) != run_config_hash(first)
    by_name = RunSettings.from_values(options={"purify": {"teacher": "finemix"}}).defense_config("purify")
    assert "teacher_policy_sha256" not in by_name and "teacher_policy_sha256" not in taught.defense_config("gradient")
    missing = RunSettings.from_values(options={"purify": {"teacher": f"policy:{tmp_path / 'no-such-run'}"}})
    with pytest.raises(FileNotFoundError, match="purify option teacher: .*no such policy file or folder"):
        missing.defense_config("purify")


def test_run_settings_options_round_trip():
    """The shared command-line options give the dataclass defaults (so the same config hashes), read
    ``--options`` as JSON, optionally keep only the listed defenses' options, and name bad JSON."""
    parser = argparse.ArgumentParser()
    add_setting_arguments(parser)
    default = run_settings_from_args(parser.parse_args([]))
    assert config_hash(default.defense_config("gradient")) == config_hash(RunSettings.from_values().defense_config("gradient"))
    args = parser.parse_args(["--finetune-epochs", "3", "--clean-rows", "160", "--fast",
                              "--options", '{"gradient": {"n_rows": 32}, "pure": {"epochs": 1}}'])
    settings = run_settings_from_args(args, defenses=["gradient"])
    assert settings == RunSettings.from_values(finetune_epochs=3.0, clean_rows=160, fast=True, options={"gradient": {"n_rows": 32}})
    for bad in ("{bad", '{"gradient": 3}'):
        with pytest.raises(ValueError, match="--options must be a JSON object"):
            run_settings_from_args(parser.parse_args(["--options", bad]))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"defenses": ["nope"]}, "unknown defense 'nope'"),
    ({"defenses": ["policy:/no/such/agent.zip"]}, "no such policy file"),
    ({"victims": ["no-such-victim"]}, "unknown victim 'no-such-victim'"),
    ({"seeds": [0, 0]}, "duplicate seeds"),
    ({"seeds": []}, "no seeds"),
    ({"defenses": []}, "no defenses"),
])
def test_bad_grid_arguments_are_named(kwargs: dict[str, Any], match: str, tmp_path: Path):
    args = {"victims": ["tiny"], "defenses": ["random"], "seeds": [0], **kwargs}
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        plan_grid(args["victims"], args["defenses"], args["seeds"], SETTINGS)


def test_bad_settings_records_and_engines(tmp_path: Path):
    with pytest.raises(ValueError, match="val_size"):
        RunSettings.from_values(val_size=0)
    with pytest.raises(ValueError, match="options given for defenses not in the grid"):
        plan_grid(["tiny"], ["random"], [0], RunSettings.from_values(options={"gradient": {}}))
    bad = tmp_path / "runs.jsonl"
    bad.write_text('{"victim": "v"}\n')
    with pytest.raises(ValueError, match=r"runs.jsonl:1: not a run record"):
        RecordStore(bad)
    with pytest.raises(ValueError, match="unknown engine"):
        make_executor("spark")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        make_executor("process", 0)
    assert mean_std([1.0, None, 3.0])[:2] == (2.0, pytest.approx(2 ** 0.5))


def test_policy_method_runs_a_saved_agent(tiny_victim, victim_cache: Path, tmp_path: Path):
    """``policy:<path>`` runs a saved agent through headprune.agents with defend's protocol."""
    try:
        from headprune.agents import AgentDefense  # noqa: F401
    except ImportError:
        agent = tmp_path / "agent.zip"
        agent.write_bytes(b"no agents package to load this")
        with pytest.raises(ValueError, match="needs headprune.agents.AgentDefense"):
            plan_grid(["tiny"], [f"policy:{agent}"], [0], SETTINGS)
        pytest.skip("headprune.agents is not importable")
    import gymnasium as gym
    from sb3_contrib import MaskablePPO

    env = gym.make("HeadPrune-v0", victim=tiny_victim, val_size=64, stats_size=48, cache=victim_cache,
                   progress=False)
    from headprune.agents.policy_io import save_policy  # headprune's policy format (SB3's pickled zips are refused)

    save_policy(MaskablePPO("MultiInputPolicy", env, n_steps=16, batch_size=16, seed=0), tmp_path / "agent.zip")
    method = f"policy:{tmp_path / 'agent.zip'}"
    report = run_grid(["tiny"], [method], [0], tmp_path / "runs.jsonl", SETTINGS, cache=victim_cache,
                      progress=False, log=lambda _: None)
    assert not report.failed, report.failed
    (record,) = report.records
    assert record["defense"] == method and len(record["config"]["policy_sha256"]) == 64
    assert record["lfr"] is not None and record["heads_pruned"] == sum(v == 0 for row in record["mask"] for v in row)
    typed_otherwise = f"policy:{os.path.relpath(tmp_path)}/./agent.zip"  # the same file, written another way
    again = run_grid(["tiny"], [typed_otherwise], [0], tmp_path / "runs.jsonl", SETTINGS, cache=victim_cache,
                     progress=False, log=lambda _: None)
    assert not again.ran and len(again.skipped) == 1


def test_canonical_method_writes_one_path_per_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from headprune.compare import canonical_defense

    monkeypatch.chdir(tmp_path)
    assert canonical_defense("gradient") == "gradient" and canonical_defense("policy:") == "policy:"
    for typed in ("policy:runs/a", "policy:./runs/a/", f"policy:{tmp_path}/runs/x/../a"):
        assert canonical_defense(typed) == "policy:runs/a", typed
    outside = tmp_path.parent / "elsewhere" / "model.zip"
    assert canonical_defense(f"policy:{outside}") == f"policy:{outside.as_posix()}"
    assert canonical_defense("policy:../elsewhere/model.zip") == f"policy:{outside.as_posix()}"


def test_cli_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    base = ["compare", "--victims", "tiny", "--out", str(tmp_path / "o")]
    assert cli_main(base + ["--defenses", "nope"]) == 2
    assert "unknown defense 'nope'" in capsys.readouterr().err
    assert cli_main(base) == 2
    assert "--defenses and/or --policies" in capsys.readouterr().err
    assert cli_main(base + ["--defenses", "random", "--seeds", "0"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
    assert cli_main(base + ["--defenses", "random", "--options", "{bad"]) == 2
    assert "--options must be a JSON object" in capsys.readouterr().err


def test_summary_markdown_formats_counts_and_seconds_apart_from_rates():
    runs = [{"victim": "v-syntactic", "defense": "gradient", "heads_pruned": h, "acc_pruned": 0.8, "lfr_pruned": 0.7,
             "acc": a, "lfr": 0.5, "wall_s": w} for h, a, w in ((30, 0.86, 100.4), (32, 0.88, 120.6))]
    row = summary_markdown(runs).splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["v-syntactic", "gradient"]
    assert cells[2] == "31.0 ± 1.4"          # heads pruned: one decimal
    assert cells[5] == "0.870 ± 0.014"       # ACC: three decimals
    assert cells[7] == "110 ± 14"            # wall s: whole seconds
    assert cells[8] == "2"                   # seeds
    assert summary_markdown([{**runs[0], "lfr": None}]).splitlines()[2].split("|")[7].strip() == "-"


def test_method_label_shortens_agents_and_names_no_defense():
    from headprune.compare import POLICY_PREFIX, defense_label

    assert defense_label("none") == "no defense" and defense_label("gradient") == "gradient"
    assert defense_label(POLICY_PREFIX + "runs/x/minilm_maskable_ppo_s0") == "agent x/minilm_maskable_ppo_s0"
    assert defense_label(POLICY_PREFIX + "runs/x/minilm_maskable_ppo_s0/model.zip") == "agent x/minilm_maskable_ppo_s0"
    assert defense_label(POLICY_PREFIX + "runs/y/minilm_maskable_ppo_s0") != defense_label(
        POLICY_PREFIX + "runs/x/minilm_maskable_ppo_s0")
    assert defense_label(POLICY_PREFIX + "agent.zip") == "agent agent.zip"


def test_grid_runs_reference_defenses_with_a_base_folder(tiny_victim, victim_cache: Path, tmp_path: Path):
    """``base`` (``--base``) reaches every run and its hashed config; a saved copy of the default reference gives
    the numbers of the default."""
    import dataclasses

    from headprune.engine.reference import resolve_base

    folder = tmp_path / "base"
    resolve_base(tiny_victim).save_pretrained(folder)
    tiny_victim.tokenizer.save_pretrained(folder)
    given = dataclasses.replace(SETTINGS, base=str(folder))
    methods = ["drift", "finemix"]
    report = run_grid(["tiny"], methods, [0], tmp_path / "runs.jsonl", given, cache=victim_cache, progress=False,
                      log=lambda _: None)
    assert not report.failed and [r["defense"] for r in report.records] == methods
    assert all(r["config"]["base"] == str(folder) for r in report.records)
    default = run_grid(["tiny"], methods, [0], tmp_path / "default.jsonl", SETTINGS, cache=victim_cache,
                       progress=False, log=lambda _: None)
    assert all("base" not in r["config"] for r in default.records)
    assert _numbers(report.records) == _numbers(default.records)


def test_summary_rows_keep_runs_of_one_strategy_under_different_options_apart():
    run = {"victim": "v-badnets", "defense": "finemix", "heads_pruned": 0, "acc_pruned": 0.6, "lfr_pruned": 1.0,
           "acc": 0.86, "lfr": 0.7, "wall_s": 100.0, "config": {"options": {}}}
    epur = {**run, "lfr": 0.5, "config": {"options": {"epur_tokens": 200}}}
    rows = summary_rows([run, epur, {**run, "lfr": 0.9}])
    assert [r["configuration"] for r in rows] == ["finemix", 'finemix {"epur_tokens": 200}']
    assert [r["lfr"][0] for r in rows] == [pytest.approx(0.8), 0.5] and rows[1]["defense"] == "finemix"
    assert 'finemix {"epur_tokens": 200}' in summary_markdown([epur])


def test_committed_records_load_under_the_current_names_and_keep_their_hashes():
    """Records written while the keys were ``strategy`` and ``eval_size`` read back with ``defense`` and
    ``val_size``; each one's stored hash is :func:`run_config_hash` of its upgraded config, so a rerun of the same
    settings finds (skips) it."""
    files = ("defense_runs.jsonl", "clean_budget_runs.jsonl", "agent_both_runs.jsonl")  # the run-record files
    raw = [json.loads(line) for name in files for line in (ROOT / "benchmarks" / "results" / name).read_text().splitlines()]
    # most were written under the old names, the newest (issue 22's confirm runs) under the new ones; never both
    assert sum("strategy" in r for r in raw) > 100 and all(("strategy" in r) != ("defense" in r) for r in raw)
    records = load_records([ROOT / "benchmarks" / "results" / name for name in files])
    assert len(records) == len(raw) and all("defense" in r and "strategy" not in r for r in records)
    runs = [r for r in records if "config" in r and r["config"].get("kind") != CLEAN_MODEL]
    assert len(runs) > 100
    for record in runs:
        assert "eval_size" not in record["config"]
        assert run_config_hash(record["config"]) == record["config_hash"], record_key(record)
    assert all("val_size" in r["config"] for r in runs)
    settings = RunSettings.from_values(finetune_epochs=3, options={"gradient": {"n_rows": 64}})
    old = {"victim": "v", "strategy": "gradient", "seed": 0,
           "config": {**{k: v for k, v in settings.defense_config("gradient").items() if k != "val_size"},
                      "eval_size": 256}}
    old["config_hash"] = config_hash(old["config"])
    new = upgrade_record(old)
    assert list(new) == ["victim", "defense", "seed", "config", "config_hash"] and new["defense"] == "gradient"
    assert new["config"] == settings.defense_config("gradient")
    assert new["config_hash"] == run_config_hash(settings.defense_config("gradient"))
    assert run_config_hash({"defense": "x", "val_size": 3}) == config_hash({"strategy": "x", "eval_size": 3})
    with pytest.raises(ValueError, match="both 'eval_size' and 'val_size'"):
        upgrade_record({**old, "config": {**old["config"], "val_size": 256}})
    with pytest.raises(ValueError, match="both 'strategy' and 'defense'"):
        upgrade_record({**old, "defense": "gradient"})


def test_configuration_and_fine_tune_rows_of_a_record():
    """Records group by defense + options, and a run's fine-tune rows are its clean rows (default: the
    872 SST-2 dev rows) minus the validation rows it held out."""
    from headprune.compare import configuration, fine_tune_rows

    default = {"defense": "finemix", "config": {"clean_rows": None, "val_size": 256, "options": {}}}
    budget = {"defense": "finemix", "config": {"clean_rows": 8256, "val_size": 256,
                                                 "options": {"epur_tokens": 200}}}
    assert fine_tune_rows(default) == 616 and fine_tune_rows(budget) == 8000
    assert configuration(default) == "finemix"
    assert configuration(budget) != configuration(default) and "epur_tokens" in configuration(budget)
    texts = {"defense": "purify", "config": {"clean_rows": None, "val_size": 256, "options": {},
                                             "unlabelled_rows": 2000}}
    assert configuration(texts) == "purify + 2000 unlabelled" and fine_tune_rows(texts) == 616


def test_a_grids_unlabelled_rows_reach_the_defense_as_the_sentences_after_its_labelled_rows(
        tiny_victim, victim_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``unlabelled_rows`` hands ``defend`` that many sentences of the task's pool, right after the run's labelled
    rows (here the first 160 of the tiny victim's default pool), and is hashed into the record's config."""
    import dataclasses

    import headprune.defenses as defenses
    from headprune.data import load_defender_pool

    seen: list[Any] = []
    real_defend = defenses.defend

    def spy(victim, defense, config, *args, **kwargs):
        seen.append((list(config.clean_data.sentences), list(config.unlabelled_data)))
        return real_defend(victim, defense, config, *args, **kwargs)

    monkeypatch.setattr(defenses, "defend", spy)
    given = dataclasses.replace(SETTINGS, unlabelled_rows=30)
    report = run_grid(["tiny"], ["distill"], [0], tmp_path / "runs.jsonl", given, cache=victim_cache,
                      progress=False, log=lambda _: None)
    assert not report.failed and report.records[0]["config"]["unlabelled_rows"] == 30
    pool = load_defender_pool("sst2-dev+glue-train")
    (labelled, unlabelled), = seen
    assert labelled == list(pool.sentences[:160]) and unlabelled == list(pool.sentences[160:190])
