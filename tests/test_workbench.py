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


@pytest.fixture
def benches(monkeypatch: pytest.MonkeyPatch) -> list[Workbench]:
    """Every Workbench constructed during the test, in order."""
    built: list[Workbench] = []
    real_init = Workbench.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Workbench, "__init__", counting_init)
    return built


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


def test_policy_defense_runs_in_a_view_over_the_one_workbench(tiny_victim, small_env_config, clean, monkeypatch,
                                                               benches):
    """A scripted policy's episode runs in ``HeadPruneEnv(bench)``: one workbench (one split, one set of
    statistics, one scorer memo) per run, and the env built is a view over it."""
    import headprune.defenses.scripted as scripted

    views: list[HeadPruneEnv] = []
    real_env = scripted.HeadPruneEnv

    def view(bench):
        views.append(real_env(bench))
        return views[-1]

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


def test_clean_scans_each_row_set_once_under_its_flag(tiny_victim, clean, monkeypatch, victim_cache):
    """``clean`` checks the labels of ``--clean-data`` and ``--eval-poison`` where they enter; the workbench's
    split and ``defend``'s evaluation rows are subsets of checked rows and are not scanned again."""
    import headprune.data.checks as checks

    scanned: list[int] = []
    real_scan = checks._out_of_range
    monkeypatch.setattr(checks, "_out_of_range", lambda data, n: scanned.append(len(data)) or real_scan(data, n))
    poison = tiny_victim.splits().poisoned_test.take(20)
    clean_model(tiny_victim, clean, CleanSettings(finetune_epochs=0.5), eval_poison=poison,
                cache=str(victim_cache), progress=False)
    assert scanned == [len(clean), len(poison)]


def test_defend_computes_head_statistics_only_for_a_defense_that_reads_them(tiny_victim, small_env_config, clean,
                                                                            monkeypatch):
    """Head statistics are the workbench's lazy attribute: ``finemix`` never reads them (nor a proxy: defend's
    workbench has none), ``pure`` does."""
    import headprune.workbench as workbench

    computed: list[str] = []
    real = workbench.load_or_compute_stats
    monkeypatch.setattr(workbench, "load_or_compute_stats",
                        lambda victim, *a, **k: computed.append(victim.name) or real(victim, *a, **k))
    defend(tiny_victim, "finemix", small_env_config(0, clean_data=clean), FINETUNE)
    assert computed == []
    defend(tiny_victim, "pure", small_env_config(0, clean_data=clean), FINETUNE)
    assert computed == [tiny_victim.name]


def test_a_workbench_without_proxy_scores_zero_and_is_no_env(tiny_victim, small_env_config):
    bench = Workbench(tiny_victim, small_env_config(0), proxy="none")
    assert bench.proxy is None and bench.start_score.proxy == 0.0
    with_proxy = Workbench(tiny_victim, small_env_config(0))
    assert bench.start_score.accuracy == with_proxy.start_score.accuracy
    with pytest.raises(ValueError, match="HeadPrune-v0 rewards and observes a backdoor proxy.*proxy='none'"):
        HeadPruneEnv(bench)
    with pytest.raises(ValueError, match="built with proxy='none'"):
        bench.build_proxy(bench.model)


@pytest.mark.parametrize("defense, options, episode", [("random", {}, True), ("finemix", {}, False),
                                                       ("distill", {"teacher": "random"}, True),
                                                       ("purify", {}, False)])
def test_a_workbench_has_a_proxy_exactly_when_its_defense_runs_an_episode(defense, options, episode, tiny_victim,
                                                                         small_env_config, clean, benches):
    """A policy's episode (also a policy teacher's inside ``distill``) runs in an env view, which needs the proxy."""
    opts = {**options, "drops": 1, "crops": 0, "concats": 0} if defense in ("distill", "purify") else options
    defend(tiny_victim, defense, small_env_config(0, clean_data=clean), FINETUNE, options=opts)
    assert len(benches) == 1 and (benches[0].proxy is not None) == episode
