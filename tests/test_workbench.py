"""The defender's workbench: defend, the defenses and clean run on it, and construct no Gym env; the env is a
view over one workbench."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headprune.clean import CleanSettings, clean_model
from headprune.defenses import DefenseFineTune, defend
from headprune.envs.headprune_env import HeadPruneEnv
from headprune.workbench import Workbench

FINETUNE = DefenseFineTune(epochs=0.5, max_steps=2)


@pytest.fixture(scope="module")
def clean(tiny_victim):
    return tiny_victim.defender_clean_data().take(200)


def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self, *args, **kwargs):
        raise AssertionError("a HeadPruneEnv was constructed")
    monkeypatch.setattr(HeadPruneEnv, "__init__", refuse)


@pytest.mark.parametrize("defense", ["none", "finemix", "pure", "reset-attention"])
def test_defend_constructs_no_env(defense, tiny_victim, small_env_config, clean, monkeypatch):
    """``defend`` builds a workbench, never a Gym env, for the defenses that are not one episode of a policy
    (those run their episode in a view over the same workbench: the next test)."""
    _no_env(monkeypatch)
    result = defend(tiny_victim, defense, small_env_config(0, clean_data=clean), FINETUNE)
    assert result.mask.shape == (2, 4) and result.validation["rows"] == 80


def test_clean_constructs_no_env(tiny_victim, clean, monkeypatch, victim_cache):
    _no_env(monkeypatch)
    result = clean_model(tiny_victim, clean, CleanSettings(finetune_epochs=0.5), cache=str(victim_cache),
                         progress=False)
    assert result.defense.defense == "finemix"


def test_policy_defense_runs_in_a_view_over_the_one_workbench(tiny_victim, small_env_config, clean, monkeypatch):
    """A scripted policy's episode runs in ``HeadPruneEnv(bench)``: one workbench (one split, one set of
    statistics, one scorer memo) per run, and the env built is a view over it."""
    import headprune.defenses.scripted as scripted

    benches: list[Workbench] = []
    views: list[HeadPruneEnv] = []
    real_init, real_env = Workbench.__init__, scripted.HeadPruneEnv

    def counting_init(self, *args, **kwargs):
        benches.append(self)
        real_init(self, *args, **kwargs)

    def view(bench):
        views.append(real_env(bench))
        return views[-1]

    monkeypatch.setattr(Workbench, "__init__", counting_init)
    monkeypatch.setattr(scripted, "HeadPruneEnv", view)
    result = defend(tiny_victim, "random", small_env_config(0, clean_data=clean), FINETUNE)
    assert len(benches) == 1 and len(views) == 1 and views[0].bench is benches[0]
    assert views[0].scorer is benches[0].scorer and result.heads_pruned > 0


def test_env_is_a_view_over_its_workbench(tiny_victim, small_env_config):
    bench = Workbench(tiny_victim, small_env_config(0))
    env = HeadPruneEnv(bench)
    assert env.bench is bench and env.val_data is bench.val_data and env.scorer is bench.scorer
    assert env.head_shape == bench.head_shape == (2, 4) and env.budget == bench.budget
    plain = HeadPruneEnv(tiny_victim, small_env_config(0))
    assert plain.start_score == env.start_score and plain.accuracy_floor == env.accuracy_floor
    obs, _ = env.reset(seed=0)
    obs2, _ = plain.reset(seed=0)
    for key in obs:
        assert np.array_equal(obs[key], obs2[key])
    _, reward, *_ = env.step(0)
    _, reward2, *_ = plain.step(0)
    assert reward == reward2
    with pytest.raises(ValueError, match="takes its config from the workbench"):
        HeadPruneEnv(bench, budget=2)
    assert torch.equal(bench.mask_tensor(np.ones(8, dtype=np.int8)), torch.ones(2, 4))
