"""Bad training inputs are one-line errors before any allocation (issue 25): policy_kwargs of the wrong kind or
size, YAML tags, negative seeds, resume flags that conflict with the run; a run that cannot start leaves nothing
to "resume"; a trusted pickled zip whose payload is no policy is a clear error after the load."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from test_untrusted_policies import FAST_HP, evil_zip

from headprune.agents import train
from headprune.cli import main


@pytest.fixture(scope="module")
def env_kwargs(tiny_victim, victim_cache: Path) -> dict[str, Any]:
    return {"victim": "tiny", "cache": str(victim_cache), "val_size": 80, "stats_size": 64, "progress": False}


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("policy_kwargs, match", [
    ({"embed_dim": "32"}, r"policy_kwargs.embed_dim must be a finite integer, got '32'"),
    ({"embed_dim": 1 << 40}, r"policy_kwargs.embed_dim must be in \[1, 1024\]"),
    ({"net_arch": [1 << 24, 1 << 24]}, r"policy_kwargs.net_arch\[0\] must be in \[1, 1024\]"),
    ({"net_arch": {"pi": [[64]]}}, r"policy_kwargs.net_arch.pi\[0\] must be a finite integer"),
    ({"activation_fn": ["relu"]}, r"policy_kwargs.activation_fn"),
    ({"optimizer_kwargs": {"eps": [1]}}, r"policy_kwargs.optimizer_kwargs: unsupported value"),
    ("dict(value_dim=-3)", r"policy_kwargs.value_dim must be in \[1, 1024\]"),
])
def test_bad_policy_kwargs_are_refused_before_the_run_folder_exists(tmp_path, policy_kwargs, match):
    with pytest.raises(ValueError, match=match):
        train("maskable_ppo", run_dir=tmp_path / "run", env_kwargs={"victim": "tiny"}, n_timesteps=8,
              tensorboard=False, hyperparams={**FAST_HP, "policy_kwargs": policy_kwargs})
    assert not (tmp_path / "run").exists()


def test_yaml_tags_and_negative_seeds_name_the_argument(tmp_path, capsys):
    marker = tmp_path / "pwned"
    argv = ["train", "--model", "tiny", "--out", str(tmp_path / "run"), "--n-timesteps", "8"]
    assert main([*argv, "--hyperparams", f"policy_kwargs=!!python/object/apply:os.system ['touch {marker}']"]) == 2
    assert "--hyperparams policy_kwargs: YAML tag !!python/object/apply:os.system is not allowed" in _error(capsys)
    conf = tmp_path / "conf.yml"
    conf.write_text(f"HeadPrune-v0:\n  n_timesteps: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main([*argv, "--conf-file", str(conf)]) == 2
    assert f"{conf}: YAML tag !!python/object/apply:os.system is not allowed" in _error(capsys)
    assert not marker.exists() and not (tmp_path / "run").exists()
    for command in (argv, ["clean", "m", "--clean-data", "x.tsv", "--out", str(tmp_path / "o")],
                    ["defend", "--model", "tiny", "--strategy", "none", "--out", str(tmp_path / "o")]):
        with pytest.raises(SystemExit) as stop:
            main([*command, "--seed", "-1"])
        assert stop.value.code == 2
        assert "argument --seed: must be an integer >= 0, got -1" in capsys.readouterr().err


def test_a_run_that_cannot_start_leaves_nothing_to_resume(env_kwargs, tmp_path, capsys):
    """Bad hyperparameters that only SB3's constructor refuses (device "quantum"), or env options the env refuses:
    the run folder holds no run
    afterwards, so the same command with good ones starts it; a run that saved no checkpoint says how to start
    again instead of only "no readable checkpoint"."""
    folder = tmp_path / "run"
    with pytest.raises(RuntimeError, match="quantum"):
        train("maskable_ppo", run_dir=folder, seed=0, env_kwargs=env_kwargs, n_timesteps=8, tensorboard=False,
              hyperparams={**FAST_HP, "device": "quantum"})
    assert not folder.exists()
    with pytest.raises(ValueError, match="nonsense"):
        train("maskable_ppo", run_dir=folder, seed=0, env_kwargs={**env_kwargs, "nonsense": 1}, n_timesteps=8,
              tensorboard=False, hyperparams=FAST_HP)
    assert not folder.exists()
    run = train("maskable_ppo", run_dir=folder, seed=0, env_kwargs=env_kwargs, n_timesteps=8, tensorboard=False,
                hyperparams=FAST_HP)
    assert run.num_timesteps >= 8 and (folder / "run.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "run.json").write_text(json.dumps({"algo": "maskable_ppo", "env_id": "HeadPrune-v0", "seed": 0,
                                                "sessions": []}))
    assert main(["train", "--resume", str(empty)]) == 2
    line = _error(capsys)
    assert "no readable checkpoint" in line and "start it again" in line


def test_resume_refuses_flags_that_conflict_with_the_run(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"algo": "maskable_ppo", "env_id": "HeadPrune-Tiny-v0", "seed": 3,
                                                 "sessions": []}))
    assert main(["train", "--resume", str(folder), "--seed", "7", "--algo", "ppo", "--env", "HeadPrune-v0"]) == 2
    line = _error(capsys)
    assert "--algo ppo (the run has maskable_ppo)" in line and "--env HeadPrune-v0 (the run has HeadPrune-Tiny-v0)" \
        in line and "--seed 7 (the run has 3)" in line
    assert main(["train", "--resume", str(folder), "--seed", "3", "--algo", "maskable_ppo"]) == 2  # agree: no conflict
    assert "conflict" not in _error(capsys)
    assert json.loads((folder / "run.json").read_text())["sessions"] == []  # nothing recorded


def test_trusted_pickled_zip_without_a_policy_is_a_clear_error_after_the_load(tmp_path, capsys):
    """convert-policy --trust-pickle runs the payload (documented) and then says the file is no policy, instead
    of an AttributeError (readable weights) or torch's UnpicklingError (unreadable ones); nothing is written."""
    zip_path = evil_zip(tmp_path / "evil.zip", tmp_path / "pwned")
    assert main(["convert-policy", "--trust-pickle", str(zip_path), str(tmp_path / "new.zip")]) == 2
    assert "is not a readable SB3 model file (UnpicklingError" in _error(capsys)
    weights = io.BytesIO()
    torch.save({}, weights)
    with zipfile.ZipFile(zip_path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    members["policy.pth"] = weights.getvalue()  # readable weights: the loader returns the payload's result
    with zipfile.ZipFile(zip_path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    (tmp_path / "pwned").unlink()
    assert main(["convert-policy", "--trust-pickle", str(zip_path), str(tmp_path / "new.zip")]) == 2
    line = _error(capsys)
    assert "is not an SB3 model file: its policy_class unpickled to int" in line
    assert (tmp_path / "pwned").exists() and not (tmp_path / "new.zip").exists()


def test_a_policy_files_policy_kwargs_are_checked_before_the_policy_is_built(tmp_path):
    """A downloaded policy file's policy_kwargs go through the same bounds (no 32 TB network from a JSON field)."""
    from headprune.agents.policy_io import PolicyFile, PolicyFileError

    for kwargs, match in (({"embed_dim": 1 << 40}, r"embed_dim must be in \[1, 1024\]"),
                          ({"activation_fn": "__import__"}, "activation_fn must be one of")):
        saved = PolicyFile(path=tmp_path / "policy.zip", meta={"policy_kwargs": kwargs}, weights={})
        with pytest.raises(PolicyFileError, match=f"policy.zip: .*{match}"):
            saved.policy_kwargs()
    assert PolicyFile(path=tmp_path / "p.zip", meta={"policy_kwargs": {"embed_dim": 16, "activation_fn": "relu"}},
                      weights={}).policy_kwargs()["embed_dim"] == 16
