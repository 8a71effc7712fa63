"""The shared mechanisms: Registry, eval_mode, HeadPruneConfig."""

from __future__ import annotations

import math

import pytest
import torch

from headprune.envs.config import HeadPruneConfig
from headprune.common.modes import eval_mode
from headprune.common.registry import Registry


def test_registry_registers_looks_up_and_refuses_duplicates() -> None:
    things: Registry[type] = Registry("thing", case_insensitive=True)

    @things.register("Alpha", "a")
    class Alpha:
        pass

    things.add("beta", int)
    assert things.get("alpha") is Alpha and things.get("A") is Alpha and things.get("BETA") is int
    assert things.names() == ["alpha", "beta"] and list(things) == ["alpha", "beta"] and len(things) == 2
    assert things.canonical("a") == "alpha" and "a" in things and "gamma" not in things and 3 not in things
    with pytest.raises(ValueError, match=r"unknown thing 'gamma'; known: alpha, beta"):
        things.get("gamma")
    with pytest.raises(ValueError, match="thing 'alpha' is already registered"):
        things.add("ALPHA", str)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        things.add("delta", str, "a")
    with pytest.raises(ValueError, match="non-empty string"):
        things.get("")


def test_eval_mode_restores_the_previous_mode_even_on_error() -> None:
    model = torch.nn.Sequential(torch.nn.Dropout(0.5))
    model.train()
    with eval_mode(model) as m:
        assert m is model and not model.training
    assert model.training
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training


def test_env_config_validates_names() -> None:
    cfg = HeadPruneConfig.from_kwargs({"budget": 4}, seed=3)
    assert (cfg.budget, cfg.seed, cfg.val_size, cfg.floor_drop) == (4, 3, 256, 0.05)
    assert cfg.replace(accuracy_floor=0.5).floor_drop is None
    with pytest.raises(ValueError, match=r"unknown HeadPrune-v0 option\(s\) \['eval_size'\]"):
        HeadPruneConfig.from_kwargs(eval_size=64)  # the old name of val_size: no alias
    with pytest.raises(ValueError, match=r"unknown HeadPrune-v0 option\(s\) \['bugdet'\]"):
        HeadPruneConfig.from_kwargs(bugdet=3)
    for bad in ({"budget": 2.5}, {"budget": True}, {"val_size": 0}, {"seed": "1"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            HeadPruneConfig(**bad)
    for value in (math.nan, math.inf, "0.1"):
        with pytest.raises(ValueError, match="max_accuracy_drop must be a finite number"):
            HeadPruneConfig(max_accuracy_drop=value)
    with pytest.raises(ValueError, match="not both"):
        HeadPruneConfig(accuracy_floor=0.5, max_accuracy_drop=0.1)


def test_registry_sets_and_guards_the_name_attribute() -> None:
    named: Registry[type] = Registry("widget", name_attribute="name")

    @named.register("knob")
    class Knob:
        pass

    assert Knob.name == "knob"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="widget 'dial' sets name='knob'"):
        named.add("dial", type("Dial", (), {"name": "knob"}))


def test_state_memo_is_a_bounded_lru_keyed_by_state() -> None:
    import numpy as np

    from headprune.envs.memo import StateMemo, state_key

    memo: StateMemo[int] = StateMemo(2)
    a, b, c = (state_key(np.array(m)) for m in ([1, 0], [0, 1], [1, 1]))
    memo[a], memo[b] = 1, 2
    assert memo.get(a) == 1  # a is now the most recent
    memo[c] = 3
    assert b not in memo and a in memo and c in memo and len(memo) == 2
    assert memo.get(b) is None
    empty: StateMemo[int] = StateMemo(0)
    empty[a] = 1
    assert a not in empty and len(empty) == 0
    with pytest.raises(ValueError, match="memo size"):
        StateMemo(-1)
    assert state_key(np.array([1, 0]), np.array([0, 0])) == a != state_key(np.array([1, 0]), np.array([0, 1]))


def test_registries_index_like_mappings() -> None:
    from headprune.agents.hyperparams import ALGOS

    assert list(ALGOS) == ["maskable_ppo", "ppo"] and ALGOS["ppo"].__name__ == "PPO"
    with pytest.raises(ValueError, match="unknown algorithm 'a2c'"):
        ALGOS["a2c"]
