"""Victims: the tiny preset is really backdoored, cached, and its card is complete."""

from __future__ import annotations

import json

import torch

from headprune.engine.metrics import evaluate_defense
from headprune.victims import PRESETS, VictimConfig, build_victim, list_victims, load_victim, resolve_victim


def test_tiny_victim_is_backdoored(tiny_victim):
    card = tiny_victim.card
    assert card["lfr"] >= 0.9, card            # BadNets is learnt
    assert card["acc"] >= 0.65, card           # and the model still classifies clean text
    assert card["clean_model_lfr"] < card["lfr"] - 0.3, card
    for key in ("config", "environment", "train_seconds", "n_clean_test", "n_poisoned_test", "clean_model"):
        assert key in card
    assert card["environment"]["versions"]["torch"].startswith("2.13")


def test_card_metrics_match_a_fresh_evaluation(tiny_victim):
    splits = tiny_victim.splits()
    report = evaluate_defense(tiny_victim.model, tiny_victim.tokenizer, splits.clean_test, splits.poisoned_test)
    assert report.acc == tiny_victim.card["acc"]
    assert report.lfr == tiny_victim.card["lfr"]


def test_cache_hit_returns_same_weights(tiny_victim, victim_cache):
    again = build_victim(config=PRESETS["tiny"], cache=victim_cache, progress=False)
    assert again.path == tiny_victim.path
    for (name, a), (_, b) in zip(tiny_victim.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name
    names = [c["name"] for c in list_victims(victim_cache)]
    assert tiny_victim.name in names and tiny_victim.card["clean_model"] in names


def test_resolve_by_preset_and_folder(tiny_victim, victim_cache):
    assert resolve_victim("tiny", cache=victim_cache).path == tiny_victim.path
    assert resolve_victim(str(tiny_victim.path)).name == tiny_victim.name
    assert load_victim(tiny_victim.path).card == json.loads((tiny_victim.path / "victim.json").read_text())


def test_config_hash_changes_with_any_knob():
    base = VictimConfig()
    names = {base.name, VictimConfig(seed=1).name, VictimConfig(lr=1e-5).name, VictimConfig(poison_rate=0.1).name}
    assert len(names) == 4


def test_unknown_victim_and_config_keys_are_errors(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="unknown victim"):
        resolve_victim("no-such-preset", cache=tmp_path)
    with pytest.raises(ValueError, match="unknown victim config keys"):
        VictimConfig.from_dict({"model": "tiny", "colour": "red"})
    with pytest.raises(ValueError, match="poison_rate"):
        VictimConfig(poison_rate=1.5)
