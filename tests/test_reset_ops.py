"""Head reset in HeadPrune-v0: exact incremental scoring of reset heads, the prune/reset/both operations,
the drift statistics and the drift_mass proxy, and honesty (no poisoned data anywhere in the env's path)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig

from headprune.data import LabelledTexts, load_sst2
from headprune.envs.config import HeadPruneConfig
from headprune.envs.headprune_env import HeadPruneEnv
from headprune.envs.incremental import IncrementalForward, state_key
from headprune.envs.operations import HeadOperations
from headprune.envs.reward import step_reward
from headprune.engine.evaluator import Evaluator
from headprune.engine.head_drift import activation_drift
from headprune.engine.head_stats import ALL_FEATURE_NAMES, FEATURE_NAMES, HeadStats
from headprune.engine.reference import heads_reset_to, reset_heads, resolve_base, weights_digest
from headprune.victims import Victim

FAST = {"val_size": 96, "stats_size": 96, "progress": False}


@pytest.fixture(scope="module")
def texts() -> LabelledTexts:
    return load_sst2("dev").take(48)


@pytest.fixture(scope="module")
def kwargs(tiny_victim: Victim, victim_cache: Path) -> dict[str, Any]:
    return {"victim": tiny_victim, "cache": victim_cache, **FAST}


def _bert4(vocab: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, num_labels=2)
    return AutoModelForSequenceClassification.from_config(config).eval()


def _naive_logits(model: torch.nn.Module, base: torch.nn.Module, tokenizer: Any, texts: LabelledTexts,
                  mask: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
    """A full forward of a fresh copy with the reset heads' weights copied in (no cache anywhere)."""
    fresh = copy.deepcopy(model)
    reset_heads(fresh, base, reset)
    return Evaluator(fresh, tokenizer, texts, batch_size=32, max_length=64).logits(mask)


# ------------------------------------------------------------------------------------ incremental forward
@pytest.mark.parametrize("kind", ["victim", "bert-4-layers"])
def test_incremental_with_resets_equals_full_forward(tiny_victim: Victim, texts: LabelledTexts, kind: str) -> None:
    tok = tiny_victim.tokenizer
    if kind == "victim":
        model, base = tiny_victim.model, resolve_base(tiny_victim)
    else:
        model, base = _bert4(tok.vocab_size, 0), _bert4(tok.vocab_size, 1)
    before = weights_digest(model)
    ev = Evaluator(model, tok, texts, batch_size=32, max_length=64)
    inc = IncrementalForward(ev, reference=base)
    L, H = ev.head_shape
    gen = torch.Generator().manual_seed(3)
    mask, reset = torch.ones(L, H), torch.zeros(L, H, dtype=torch.bool)
    inc.logits(mask, reset)
    starts = set()
    for step in range(12):
        old_mask, old_reset = mask.clone(), reset.clone()
        layer, head = int(torch.randint(L, (1,), generator=gen)), int(torch.randint(H, (1,), generator=gen))
        if step % 2:
            reset[layer, head] = ~reset[layer, head]
        else:
            mask[layer, head] = 1.0 - mask[layer, head]
        fast = inc.logits(mask, reset)
        full = _naive_logits(model, base, tok, texts, mask, reset)
        torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
        assert torch.equal(fast.argmax(-1), full.argmax(-1))
        changed = ((mask != old_mask) | (reset != old_reset)).any(dim=1).nonzero()
        assert inc.last_start_layer == int(changed[0])
        starts.add(inc.last_start_layer)
        assert weights_digest(model) == before  # the reset weights were swapped in for the call only
    assert len(starts) >= 2


def test_heads_reset_to_restores_on_error(tiny_victim: Victim) -> None:
    model = copy.deepcopy(tiny_victim.model)
    base = resolve_base(tiny_victim)
    before = weights_digest(model)
    heads = torch.zeros(2, 4, dtype=torch.bool)
    heads[0, 1] = heads[1, 3] = True
    with pytest.raises(RuntimeError, match="boom"), heads_reset_to(model, base, heads) as count:
        assert count == 2 and weights_digest(model) != before
        raise RuntimeError("boom")
    assert weights_digest(model) == before


def test_state_key() -> None:
    mask, reset = np.array([1, 0, 1], np.int8), np.zeros(3, np.int8)
    assert state_key(mask, reset) == state_key(mask) == state_key(mask, None)
    reset[2] = 1
    assert state_key(mask, reset) != state_key(mask) and state_key(mask, reset) != state_key(np.array([1, 0, 0]))


# ------------------------------------------------------------------------------------ env operations
def _naive_score(env: HeadPruneEnv, mask: np.ndarray, reset: np.ndarray) -> tuple[int, float]:
    """Correct count and proxy of a state from scratch: a fresh copy with the resets written in, a full
    forward, and a new proxy on the copy without memo."""
    fresh = copy.deepcopy(env.model)
    r = torch.from_numpy(reset != 0).view(env.head_shape)
    reset_heads(fresh, env.base_model, r)
    m = env.mask_tensor(mask)
    ev = Evaluator(fresh, env.tokenizer, env.val_data, max_length=env.max_length)
    correct = int((ev.predictions(m) == ev.require_labels()).sum())
    proxy = env.build_proxy(fresh, cache_size=0)(m, reset=r)
    return correct, proxy


@pytest.mark.parametrize("proxy", ["drift_mass", "random_word_flip"])
@pytest.mark.parametrize("operation", ["reset", "both"])
def test_rewards_equal_naive_forward(kwargs: dict[str, Any], operation: str, proxy: str) -> None:
    extra = {"proxy_kwargs": {"n_per_class": 8}} if proxy == "random_word_flip" else {}
    env = HeadPruneEnv(**kwargs, operation=operation, proxy=proxy, accuracy_floor=0.0, budget=6, **extra)
    env.reset(seed=0)
    rng = np.random.default_rng(7)
    prev_correct, prev_proxy = _naive_score(env, np.ones(8, np.int8), np.zeros(8, np.int8))
    assert (prev_correct, prev_proxy) == (env.start_score.correct, env.start_score.proxy)
    done = False
    while not done:
        action = int(rng.integers(env.action_space.n))  # invalid actions included
        _, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        correct, value = _naive_score(env, env._mask, env._reset)
        n = len(env.val_data)
        expected = step_reward(prev_correct / n, prev_proxy, correct / n, value,
                               invalid=info["invalid_action"], crossed_floor=False, weights=env.weights)
        assert reward == expected.total  # to the last bit
        prev_correct, prev_proxy = correct, value
    assert info["heads_reset"] > 0


def test_both_action_layout_and_masks(kwargs: dict[str, Any]) -> None:
    env = HeadPruneEnv(**kwargs, operation="both", proxy="drift_mass", accuracy_floor=0.0, budget=4)
    obs, info = env.reset(seed=0)
    assert env.action_space.n == 16 and obs["reset"].tolist() == [0] * 8
    assert obs["head_stats"].shape == (8, len(ALL_FEATURE_NAMES)) and info["best_reset"].tolist() == [0] * 8
    obs, _, _, _, info = env.step(8 + 2)  # reset head 2
    assert obs["reset"][2] == 1 and obs["mask"][2] == 1 and info["heads_reset"] == 1
    assert not info["action_mask"][2] and not info["action_mask"][8 + 2] and info["action_mask"].sum() == 14
    _, reward, _, _, info = env.step(2)  # a reset head cannot be pruned: a no-op
    assert info["invalid_action"] and info["heads_pruned"] == 0
    obs, _, _, _, info = env.step(5)  # prune head 5: it cannot be reset any more
    assert obs["mask"][5] == 0 and not info["action_mask"][8 + 5]
    _, _, _, _, info = env.step(8 + 5)
    assert info["invalid_action"] and info["heads_reset"] == 1
    assert info["best_mask"].shape == info["best_reset"].shape == (8,)
    assert env.summary_fields[-1] == "fraction_reset" and obs["summary"][-1] == pytest.approx(1 / 8)
    assert HeadOperations("both", 8).decode(9) == ("reset", 1)


def test_best_reset_is_the_best_states(kwargs: dict[str, Any]) -> None:
    env = HeadPruneEnv(**kwargs, operation="reset", proxy="drift_mass", accuracy_floor=0.0, budget=3)
    env.reset(seed=0)
    seen = []
    for a in (1, 6, 3):
        _, _, _, _, info = env.step(a)
        seen.append((info["clean_accuracy"] - info["proxy"], env._reset.copy()))
    best = max(range(3), key=lambda i: (seen[i][0], i))
    if seen[best][0] >= env.start_score.accuracy - env.start_score.proxy:
        assert info["best_reset"].tolist() == seen[best][1].tolist()
    assert info["best_mask"].tolist() == [1] * 8  # reset only: nothing pruned


def test_prune_env_unchanged_by_a_reference(kwargs: dict[str, Any]) -> None:
    with_base, without = (HeadPruneEnv(**kwargs, proxy="pure_variance", base=b) for b in ("auto", None))
    assert with_base.head_stats.has_drift and not without.head_stats.has_drift
    assert with_base.feature_names == without.feature_names == FEATURE_NAMES
    assert with_base.observation_space == without.observation_space and with_base.action_space.n == 8
    for env in (with_base, without):
        env.reset(seed=0)
    for a in (3, 6, 0):
        x, y = with_base.step(a), without.step(a)
        assert all(np.array_equal(x[0][k], y[0][k]) for k in x[0]) and x[1:4] == y[1:4]
    assert "reset" not in x[0]


def test_config_checks(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="give base="):
        HeadPruneConfig(operation="reset", base="none")
    with pytest.raises(ValueError, match="operation must be"):
        HeadPruneConfig(operation="swap")
    with pytest.raises(ValueError, match="unknown"):
        HeadPruneConfig(features=["importance", "nope"])
    assert HeadPruneConfig(features="all").feature_names == ALL_FEATURE_NAMES
    assert HeadPruneConfig(features=["weight_drift"]).features == ("weight_drift",)
    env = HeadPruneEnv(**kwargs, proxy="pure_variance", features=["weight_drift", "importance"])
    assert env.observation_space["head_stats"].shape == (8, 2)
    with pytest.raises(ValueError, match="need a pre-trained reference"):
        HeadPruneEnv(**kwargs, proxy="pure_variance", base=None, features="all")
    with pytest.raises(ValueError, match="drift_mass proxy needs"):
        HeadPruneEnv(**kwargs, proxy="drift_mass", base=None)


# ------------------------------------------------------------------------------------ drift statistics
def test_drift_statistics(tiny_victim: Victim, texts: LabelledTexts) -> None:
    base = resolve_base(tiny_victim)
    tok = tiny_victim.tokenizer
    same = activation_drift(tiny_victim.model, copy.deepcopy(tiny_victim.model), tok, texts, max_length=64)
    assert torch.equal(same, torch.zeros(2, 4))
    moved = activation_drift(tiny_victim.model, base, tok, texts, max_length=64)
    assert moved.shape == (2, 4) and bool((moved > 0).all())
    # a reference whose layer-1 head 2 equals the victim's: that head's weight drift is 0
    partial = copy.deepcopy(base)
    heads = torch.zeros(2, 4, dtype=torch.bool)
    heads[1, 2] = True
    reset_heads(partial, tiny_victim.model, heads)
    from headprune.engine.reference import head_weight_drift

    assert float(head_weight_drift(tiny_victim.model, partial)[1, 2]) == 0.0


def test_head_stats_round_trip_with_drift(tmp_path: Path) -> None:
    t = [torch.rand(2, 3) for _ in range(7)]
    stats = HeadStats(*t[:5], base_accuracy=0.5, n_examples=3, weight_drift=t[5], activation_drift=t[6])
    stats.save(tmp_path / "s.json")
    loaded = HeadStats.load(tmp_path / "s.json")
    assert loaded == stats and loaded.available == ALL_FEATURE_NAMES
    assert stats.as_features(ALL_FEATURE_NAMES).shape == (6, 7) and stats.as_features().shape == (6, 5)
    assert stats != HeadStats(*t[:5], base_accuracy=0.5, n_examples=3)
    with pytest.raises(ValueError, match="every drift statistic"):
        HeadStats(*t[:5], weight_drift=t[5])
    with pytest.raises(ValueError, match="not available"):
        HeadStats(*t[:5]).as_features(("weight_drift",))


def test_stats_cache_keyed_by_reference(kwargs: dict[str, Any], tiny_victim: Victim) -> None:
    auto = HeadPruneEnv(**kwargs, proxy="pure_variance")
    itself = HeadPruneEnv(**kwargs, proxy="pure_variance", base=copy.deepcopy(tiny_victim.model))
    assert torch.equal(itself.head_stats.weight_drift, torch.zeros(2, 4))
    assert bool((auto.head_stats.weight_drift > 0).all())
    assert torch.equal(auto.head_stats.importance, itself.head_stats.importance)


def test_drift_mass_proxy(kwargs: dict[str, Any]) -> None:
    env = HeadPruneEnv(**kwargs, proxy="drift_mass")
    proxy, drift = env.proxy, env.head_stats.weight_drift.double()
    full = torch.ones(2, 4)
    assert proxy(full) == 1.0
    mask, reset = full.clone(), torch.zeros(2, 4)
    mask[0, 1] = 0
    reset[1, 3] = 1
    expected = float((drift.sum() - drift[0, 1] - drift[1, 3]) / drift.sum())
    assert proxy(mask, reset=reset) == pytest.approx(expected, abs=1e-12)
    assert proxy(mask, reset=torch.zeros(2, 4)) == proxy(mask)  # an empty reset set is no reset


# ------------------------------------------------------------------------------------ honesty
@pytest.mark.parametrize("operation", ["both", "prune+reset+mix"])
def test_reset_env_never_reads_poisoned_data(kwargs: dict[str, Any], tiny_victim: Victim, operation: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Statistics, observations, rewards and best states of a "both" env, and of one that also mixes blocks, are
    the same whether or not the victim's poisoned data can be read at all (every path to it raises)."""
    actions = [9, 3, 14, 0, 5] + ([16, 20, 20, 17] if "mix" in operation else [])

    def run() -> list[Any]:
        env = HeadPruneEnv(**kwargs, operation=operation, proxy="drift_mass", accuracy_floor=0.0,
                           budget=10 if "mix" in operation else 8,
                           mix_levels=3)
        out: list[Any] = [env.head_stats.to_dict(), env.reset(seed=0)[0]]
        for a in actions:
            obs, reward, *_ , info = env.step(a)
            out.append((obs, reward, info["best_reset"].tolist(), info["best_mask"].tolist(),
                        info.get("best_mix_levels")))
        return out

    plain = run()

    def refuse(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the env read poisoned data")

    monkeypatch.setattr(type(tiny_victim), "splits", refuse)
    import headprune.attacks as attacks

    for name in ("make_attack", "load_attack_splits", "choose_poison_rows"):
        monkeypatch.setattr(attacks, name, refuse)
    guarded = run()
    assert repr(plain) == repr(guarded)
