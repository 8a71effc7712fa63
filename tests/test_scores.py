"""Reference scores (headprune.victims.scores), zoo-native hyperparameter keys and progress.jsonl's episode count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from torch import nn

import headprune  # noqa: F401
from headprune.agents.hyperparams import TrainSettings, algo_kwargs, load_hyperparams
from headprune.agents.policy_network import policy_class
from headprune.agents.zoo import env_wrapper_factory, parse_policy_kwargs, resolve_dotted
from headprune.envs.registration import VARIANTS
from headprune.victims.scores import NOT_MEASURED, SCORES_FILE, normalised, reference_scores
from headprune.victims import Victim


def test_every_registered_id_has_an_entry_and_tiny_is_measured() -> None:
    table = reference_scores()
    assert set(table["scores"]) == {v.env_id for v in VARIANTS}
    tiny = reference_scores("HeadPrune-Tiny-v0")
    assert tiny["random"] != NOT_MEASURED and tiny["scripted"] != NOT_MEASURED
    assert 0.0 <= tiny["random"]["lfr"] <= 1.0 and tiny["scripted"]["name"] in tiny["scripted"]["all_returns"]
    assert tiny["scripted"]["return"] == max(tiny["scripted"]["all_returns"].values())
    assert "headprune/victims/reference_scores.json" in SCORES_FILE.as_posix()
    assert "reference_scores.json" in (Path(__file__).parents[1] / "pyproject.toml").read_text()  # package data


def test_normalised_maps_random_to_0_and_best_scripted_to_1(monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = reference_scores("HeadPrune-Tiny-v0")
    assert normalised("HeadPrune-Tiny-v0", tiny["random"]["return"]) == pytest.approx(0.0)
    assert normalised("HeadPrune-Tiny-v0", tiny["scripted"]["return"]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no reference scores"):
        normalised("CartPole-v1", 1.0)
    import headprune.victims.scores as scores

    table = {"scores": {"A-v0": {"random": NOT_MEASURED, "scripted": NOT_MEASURED, "agent": NOT_MEASURED},
                        "B-v0": {"random": {"return": 0.5}, "scripted": {"return": 0.5}, "agent": NOT_MEASURED}}}
    monkeypatch.setattr(scores, "_load", lambda: table)
    with pytest.raises(ValueError, match="not measured"):
        normalised("A-v0", 1.0)
    with pytest.raises(ValueError, match="tie"):
        normalised("B-v0", 1.0)


def test_readme_reference_table_is_the_committed_json() -> None:
    from headprune.victims.scores import markdown_table

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert markdown_table() in readme, "README's reference-score table differs: python benchmarks/reference_scores.py --markdown"


def test_measured_entries_are_complete_and_twins_agree() -> None:
    """Every measured entry has what the README table shows (a mixing id's entry its uniform mixing baseline, no
    other id one); an entry copied from an id with the same spec
    (``same_spec_as``) names a measured id of identical kwargs and step limit, and equals it."""
    import gymnasium as gym

    table = reference_scores()["scores"]
    for env_id, entry in table.items():
        if entry["random"] == NOT_MEASURED:
            continue
        assert {"return", "lfr", "episodes"} <= set(entry["random"]), env_id
        assert entry["scripted"]["return"] == max(entry["scripted"]["all_returns"].values()), env_id
        assert 0.0 <= entry["scripted"]["lfr"] <= 1.0, env_id
        mixes = "mix" in str(gym.spec(env_id).kwargs.get("operation", "prune"))
        if "mixing" in entry:  # the scripted mixing baseline: only on the ids that mix, complete
            assert mixes, env_id
            assert entry["mixing"]["name"] == "uniform-mix" and 0.0 <= entry["mixing"]["lfr"] <= 1.0, env_id
            assert len(entry["mixing"]["best_mix_levels"]) >= 1 and "return" in entry["mixing"], env_id
        else:
            assert not mixes, f"{env_id}: measured without its mixing baseline"
        twin = entry.get("same_spec_as")
        if twin is not None:
            assert gym.spec(twin).kwargs == gym.spec(env_id).kwargs, env_id
            assert gym.spec(twin).max_episode_steps == gym.spec(env_id).max_episode_steps, env_id
            assert {k: v for k, v in entry.items() if k != "same_spec_as"} == table[twin], env_id


def test_zoo_policy_kwargs_string_without_eval() -> None:
    parsed = parse_policy_kwargs("dict(net_arch=[64, 64], activation_fn=nn.ReLU, ortho_init=False)")
    assert parsed == {"net_arch": [64, 64], "activation_fn": nn.ReLU, "ortho_init": False}
    assert parse_policy_kwargs({"embed_dim": 8}) == {"embed_dim": 8} and parse_policy_kwargs(None) == {}
    with pytest.raises(ValueError, match="unknown name"):
        parse_policy_kwargs("dict(activation_fn=os.system)")
    with pytest.raises(ValueError, match="not a literal"):
        parse_policy_kwargs("dict(x=__import__('os').system('true'))")


def test_zoo_keys_accepted_and_dotted_policy() -> None:
    hp = load_hyperparams("ppo", overrides={"normalize": False, "env_wrapper": "gymnasium.wrappers.RecordEpisodeStatistics",
                                            "policy": "headprune.agents.policy_network.HeadScoringPolicy",
                                            "policy_kwargs": "dict(embed_dim=16)"})
    settings = TrainSettings.from_hyperparams(hp)
    assert settings.env_wrapper == "gymnasium.wrappers.RecordEpisodeStatistics" and settings.vec_env == "auto"
    kwargs = algo_kwargs(hp, "ppo")
    assert kwargs["policy"] is policy_class("HeadScoringPolicy", "ppo") and kwargs["policy_kwargs"]["embed_dim"] == 16
    with pytest.raises(ValueError, match="VecNormalize is not supported"):
        TrainSettings.from_hyperparams({**hp, "normalize": True})
    with pytest.raises(ValueError, match="vec_env must be one of"):
        TrainSettings.from_hyperparams({**hp, "vec_env": "ray"})
    with pytest.raises(ValueError, match="trusted package"):
        resolve_dotted("os.system", "policy")
    assert callable(env_wrapper_factory([{"gymnasium.wrappers.RecordEpisodeStatistics": {"buffer_length": 5}}]))


def test_train_with_batched_vec_env_counts_episodes(tiny_victim: Victim, victim_cache: Path, tmp_path: Path) -> None:
    from headprune.agents import train

    result = train("maskable_ppo", "HeadPrune-Tiny-v0", run_dir=tmp_path / "run", seed=0, n_timesteps=32,
                   env_kwargs={"victim": "tiny", "cache": str(victim_cache), "progress": False},
                   hyperparams={"n_envs": 2, "vec_env": "batched", "n_steps": 8, "batch_size": 8, "n_epochs": 1,
                                "eval_freq": 0, "checkpoint_freq": 0},
                   tensorboard=False, conf_file=_tiny_conf(tmp_path))
    rows = [json.loads(line) for line in (result.run_dir / "progress.jsonl").read_text().splitlines()]
    assert result.num_timesteps >= 32 and rows[-1]["episodes"] >= 2  # budget 4, limit 8: 2 envs x 16 steps


def _tiny_conf(tmp_path: Path) -> Path:
    """The shipped MaskablePPO entry, under the Tiny id."""
    import yaml

    from headprune.agents.hyperparams import CONFIG_DIR

    entry: dict[str, Any] = yaml.safe_load((CONFIG_DIR / "maskable_ppo.yml").read_text())["HeadPrune-v0"]
    path = tmp_path / "conf.yml"
    path.write_text(yaml.safe_dump({"HeadPrune-Tiny-v0": entry}))
    return path
