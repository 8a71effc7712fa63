"""One list of presets (issue 23 item 4): the victim presets, the registered Gym ids and the ids of the reference
scores are all derived from :data:`headprune.presets.PRESET_LIST`."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import pytest

import headprune.presets
from headprune.envs.registration import VARIANTS
from headprune.presets import PRESET_LIST, Preset, PresetEnv, env_ids
from headprune.victims import PRESETS
from headprune.victims.build import CONFIRM_PRESETS
from headprune.victims.scores import NOT_MEASURED, _load, reference_scores


def test_presets_ids_and_scores_come_from_the_one_list():
    assert list(PRESETS) == [p.name for p in PRESET_LIST]
    assert all(PRESETS[p.name] == type(PRESETS[p.name])(**p.config) for p in PRESET_LIST)
    assert CONFIRM_PRESETS == tuple(p.name for p in PRESET_LIST if p.confirm_only)
    assert [v.env_id for v in VARIANTS] == env_ids() and len(set(env_ids())) == len(env_ids())
    assert all(gym.spec(env_id).kwargs["victim"] == v.victim for v, env_id in zip(VARIANTS, env_ids()))
    assert list(reference_scores()["scores"]) == env_ids()
    by_id = {env.env_id: (preset, env) for preset in PRESET_LIST for env in preset.envs}
    for v in VARIANTS:
        preset, env = by_id[v.env_id]
        assert v.victim == preset.name and v.kwargs == dict(env.kwargs)
        assert v.builds_in_seconds == (preset.config["model"] == "tiny")
    assert by_id["HeadPrune-v0"][1].class_entry_point and by_id["HeadPrune-v0"][0].name == "minilm-syntactic"


def test_a_new_id_reads_not_measured_and_a_stale_scores_entry_is_refused(monkeypatch):
    new = Preset("minilm-new", {"model": "minilm", "attack": "badnets", "seed": 7}, (PresetEnv("HeadPrune-New-v0"),))
    monkeypatch.setattr(headprune.presets, "PRESET_LIST", (*PRESET_LIST, new))
    _load.cache_clear()
    try:
        assert reference_scores("HeadPrune-New-v0") == {"random": NOT_MEASURED, "scripted": NOT_MEASURED,
                                                        "agent": NOT_MEASURED}
        monkeypatch.setattr(headprune.presets, "PRESET_LIST", PRESET_LIST[1:])  # HeadPrune-Tiny-v0 has no preset
        _load.cache_clear()
        with pytest.raises(ValueError, match=r"scores for ids no preset has: \['HeadPrune-Tiny-Mix-v0', 'HeadPrune-Tiny-MixOnly-v0', 'HeadPrune-Tiny-v0'\]"):
            reference_scores()
    finally:
        monkeypatch.undo()
        _load.cache_clear()
    assert list(reference_scores()["scores"]) == env_ids()


def test_a_confirm_only_preset_gets_no_id():
    with pytest.raises(ValueError, match="confirm_only: it gets no Gym id"):
        Preset("x", {}, (PresetEnv("HeadPrune-X-v0"),), confirm_only=True)


def test_registering_the_ids_imports_no_torch():
    code = "import sys, headprune; import gymnasium as gym; gym.spec('HeadPrune-Tiny-v0'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
