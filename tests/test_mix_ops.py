"""The ``mix`` operation (per-block Fine-mixing toward the public base): blocks and seeded levels, the incremental
forward and the rewards against from-scratch computations, action layout and masks, the memo key, the one-model
vector env, the exported state model, the state as ``distill``'s teacher, and the honesty guard."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import data_equivalence

import headprune  # noqa: F401
from headprune.data import LabelledTexts
from headprune.defenses import DEFENSES, DefenseFineTune, defend
from headprune.defenses.distill import DistillDefense
from headprune.defenses.weight_edits import fine_mix
from headprune.engine.evaluator import Evaluator
from headprune.engine.reference import reset_heads, resolve_base, shared_parameters
from headprune.envs.config import HeadPruneConfig, operation_units
from headprune.envs.headprune_env import HeadPruneEnv
from headprune.envs.incremental import IncrementalForward
from headprune.envs.memo import state_key
from headprune.envs.mixing import BlockMixer, mix_blocks
from headprune.envs.operations import HeadOperations
from headprune.envs.reward import step_reward
from headprune.envs.state_export import EpisodeStateDefense, state_model
from headprune.victims import Victim

FAST = {"val_size": 80, "stats_size": 64, "progress": False}


@pytest.fixture(scope="module")
def kwargs(tiny_victim: Victim, victim_cache: Path) -> dict[str, Any]:
    return {"victim": tiny_victim, "cache": victim_cache, **FAST}


# ------------------------------------------------------------------------------------ blocks and levels
def test_blocks_partition_the_shared_parameters_and_levels_are_monotone(tiny_victim: Victim) -> None:
    model, base = tiny_victim.model, resolve_base(tiny_victim)
    blocks = mix_blocks(model, base)
    assert [b.name for b in blocks] == ["embeddings", "layer0.attention", "layer0.feed_forward", "layer1.attention",
                                        "layer1.feed_forward"]
    names = [n for b in blocks for n in b.parameters]
    assert sorted(names) == sorted(n for n, _, _ in shared_parameters(model, base)) and len(set(names)) == len(names)
    assert all(".attention." in n for n in blocks[1].parameters)
    assert any("intermediate" in n for n in blocks[2].parameters) and "bert.embeddings.word_embeddings.weight" in \
        blocks[0].parameters
    mixer = BlockMixer(model, base, 4, seed=3)
    ref = dict(base.named_parameters())
    previous = None
    for level in range(5):  # block 2 (layer 0's feed-forward) at each level
        work = copy.deepcopy(model)
        mixer.apply(work, np.array([0, 0, level, 0, 0]))
        params = dict(work.named_parameters())
        at_base = torch.cat([(params[n] == ref[n]).flatten() for n in blocks[2].parameters])
        untouched = all(torch.equal(params[n], p) for n, p in model.named_parameters() if n not in blocks[2].parameters)
        assert untouched  # only the chosen block moves
        if previous is not None:
            assert bool((at_base | ~previous).all()) and at_base.sum() > previous.sum()  # a superset, strictly
        previous = at_base
    assert bool(previous.all())  # level K: the base's block exactly
    # the same state twice: the same weights (a function of the levels and the seed alone); another seed differs
    a, b, c = (copy.deepcopy(model) for _ in range(3))
    for work, mixer_seed in ((a, 3), (b, 3), (c, 4)):
        BlockMixer(model, base, 4, seed=mixer_seed).apply(work, np.array([1, 2, 0, 3, 1]))
    same = [torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters())]
    other = [torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters())]
    assert all(same) and not all(other)
    with pytest.raises(ValueError, match=r"mix levels must be in \[0, 4\]"):
        mixer.apply(copy.deepcopy(model), np.array([5, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="mix levels must be 5 integers"):
        mixer.apply(copy.deepcopy(model), np.array([1, 0]))


def test_block_mix_is_fine_mix_restricted_and_mixed_restores_bitwise(tiny_victim: Victim) -> None:
    model, base = copy.deepcopy(tiny_victim.model), resolve_base(tiny_victim)
    mixer = BlockMixer(model, base, 10, seed=0)
    direct = copy.deepcopy(model)
    fine_mix(direct, base, 0.3, mixer.block_seed(1), parameters=mixer.blocks[1].parameters)
    via = copy.deepcopy(model)
    mixer.apply(via, np.array([0, 3, 0, 0, 0]))
    assert all(torch.equal(x, y) for x, y in zip(direct.parameters(), via.parameters()))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="inside"):
        with mixer.mixed(model, np.array([2, 1, 4, 0, 9 // 9])):
            assert not all(torch.equal(x, y) for x, y in zip(before, model.parameters()))
            raise RuntimeError("inside")
    assert all(torch.equal(x, y) for x, y in zip(before, model.parameters()))


# ------------------------------------------------------------------------------------ exactness
def _fresh_state_copy(model: torch.nn.Module, base: torch.nn.Module, reset: torch.Tensor, levels: np.ndarray,
                      mix_levels: int, seed: int) -> torch.nn.Module:
    """A fresh copy of ``model`` with the state written in by a NEW mixer (no cache, no shared object)."""
    fresh = copy.deepcopy(model)
    if bool(reset.any()):
        reset_heads(fresh, base, reset)
    BlockMixer(fresh, base, mix_levels, seed).apply(fresh, levels)
    return fresh


def test_incremental_forward_with_mixing_equals_a_full_forward_of_a_mixed_copy(tiny_victim: Victim) -> None:
    model, base, tok = tiny_victim.model, resolve_base(tiny_victim), tiny_victim.tokenizer
    texts = LabelledTexts(tuple(tiny_victim.defender_clean_data().sentences[:40]),
                          tuple(tiny_victim.defender_clean_data().labels[:40]))
    ev = Evaluator(model, tok, texts, batch_size=16, max_length=64)
    mixer = BlockMixer(model, base, 4, seed=1)
    inc = IncrementalForward(ev, reference=base, mixer=mixer)
    rng = np.random.default_rng(0)
    states = [(np.ones(8), np.zeros(8), np.array([0, 0, 0, 0, 0])),
              (np.ones(8), np.zeros(8), np.array([0, 0, 0, 0, 2])),  # last feed-forward only: start at layer 1
              (np.ones(8), np.zeros(8), np.array([0, 0, 0, 1, 2])),  # last attention
              (np.array([1, 0, 1, 1, 1, 1, 1, 1]), np.zeros(8), np.array([0, 3, 0, 1, 2])),
              (np.array([1, 0, 1, 1, 1, 1, 1, 1]), np.array([0, 0, 1, 0, 0, 0, 0, 0]), np.array([1, 3, 0, 1, 2])),
              (np.ones(8), np.zeros(8), np.array([0, 0, 0, 0, 0]))]  # back to the suspect
    states += [(rng.integers(0, 2, 8), np.zeros(8), rng.integers(0, 5, 5)) for _ in range(4)]
    starts = []
    for mask, reset, levels in states:
        m = torch.from_numpy(mask.astype(np.float32)).view(2, 4)
        r = torch.from_numpy(reset != 0).view(2, 4)
        got = inc.logits(m, r, levels)
        starts.append(inc.last_start_layer)
        fresh = _fresh_state_copy(model, base, r, levels, 4, 1)
        want = Evaluator(fresh, tok, texts, batch_size=16, max_length=64).logits(m)
        assert torch.allclose(got, want, atol=1e-5) and torch.equal(got.argmax(-1), want.argmax(-1))
    assert starts[1:3] == [1, 1]  # a change in layer 1 only recomputes layer 1
    assert all(torch.equal(x, y) for x, y in zip(model.parameters(), tiny_victim.model.parameters()))


def _naive_score(env: HeadPruneEnv, mask: np.ndarray, reset: np.ndarray, levels: np.ndarray) -> tuple[int, float]:
    """Correct count and proxy of a state from scratch: a freshly reset and mixed copy, a full forward, and a new
    proxy on the copy without memo."""
    r = torch.from_numpy(reset != 0).view(env.head_shape)
    fresh = _fresh_state_copy(env.model, env.base_model, r, levels, env.config.mix_levels, env.config.seed)
    m = env.mask_tensor(mask)
    ev = Evaluator(fresh, env.tokenizer, env.val_data, max_length=env.max_length)
    correct = int((ev.predictions(m) == ev.require_labels()).sum())
    proxy = env.build_proxy(fresh, cache_size=0)(m, reset=r)
    return correct, proxy


@pytest.mark.parametrize(("operation", "proxy"), [("mix", "random_word_flip"), ("prune+mix", "random_word_flip"),
                                                  ("prune+reset+mix", "random_word_flip"),
                                                  ("prune+mix", "reference_disagreement")])
def test_rewards_equal_a_from_scratch_computation(kwargs: dict[str, Any], operation: str, proxy: str) -> None:
    options = {"n_per_class": 8} if proxy == "random_word_flip" else {"n_per_class": 8, "reference_epochs": 1.0}
    env = HeadPruneEnv(**kwargs, operation=operation, proxy=proxy, proxy_kwargs=options,
                       accuracy_floor=0.0, budget=9, mix_levels=3)
    env.reset(seed=0)
    rng = np.random.default_rng(11)
    prev_correct, prev_proxy = env.start_score.correct, env.start_score.proxy
    assert (prev_correct, prev_proxy) == _naive_score(env, np.ones(8, np.int8), np.zeros(8, np.int8),
                                                      np.zeros(5, np.int64))
    done, steps = False, 0
    mix_actions = np.arange(env.action_space.n - 5, env.action_space.n)
    while not done:
        action = int(rng.choice(mix_actions) if steps % 2 == 0 else rng.integers(env.action_space.n))
        _, reward, terminated, truncated, info = env.step(action)
        done, steps = terminated or truncated, steps + 1
        correct, value = _naive_score(env, env._mask, env._reset, env._mix.astype(np.int64))
        n = len(env.val_data)
        expected = step_reward(prev_correct / n, prev_proxy, correct / n, value,
                               invalid=info["invalid_action"], crossed_floor=False, weights=env.weights)
        assert reward == expected.total  # to the last bit
        prev_correct, prev_proxy = correct, value
    assert info["mix_steps"] > 0 and info["mix_levels"].sum() == info["mix_steps"]
    assert info["heads_pruned"] + info["heads_reset"] + info["mix_steps"] == env.budget or steps == env.max_steps


# ------------------------------------------------------------------------------------ layout, masks, memo
def test_operation_combinations_and_errors() -> None:
    assert operation_units("both") == operation_units("prune+reset") == ("prune", "reset")
    assert operation_units("mix+prune") == ("prune", "mix")
    for bad in ("prune+prune", "swap", "", "prune+", 3):
        with pytest.raises(ValueError, match="operation must be one of"):
            HeadPruneConfig(operation=bad)
    with pytest.raises(ValueError, match="give base="):
        HeadPruneConfig(operation="mix", base="none")
    with pytest.raises(ValueError, match="mix_levels must be >= 1"):
        HeadPruneConfig(mix_levels=0)
    ops = HeadOperations("prune+reset+mix", 8, num_blocks=5, mix_levels=2)
    assert ops.num_actions == 21 and ops.decode(7) == ("prune", 7) and ops.decode(8) == ("reset", 0)
    assert ops.decode(16) == ("mix", 0) and ops.decode(20) == ("mix", 4)
    assert HeadOperations("both", 8).decode(9) == ("reset", 1)  # unchanged
    with pytest.raises(ValueError, match="needs the mixing blocks"):
        HeadOperations("mix", 8)


def test_mix_action_layout_masks_budget_and_observation(kwargs: dict[str, Any]) -> None:
    env = HeadPruneEnv(**kwargs, operation="prune+mix", proxy="drift_mass", accuracy_floor=0.0, budget=5,
                       mix_levels=2)
    obs, info = env.reset(seed=0)
    assert env.action_space.n == 13 and obs["mix"].tolist() == [0.0] * 5 and obs in env.observation_space
    assert env.summary_fields[-1] == "fraction_mixed" and "reset" not in obs
    assert info["action_mask"].all() and info["best_mix_levels"].tolist() == [0] * 5
    for _ in range(2):
        obs, _, _, _, info = env.step(8 + 3)  # layer 1's attention, twice: fully mixed
    assert obs["mix"][3] == 1.0 and not info["action_mask"][8 + 3] and info["action_mask"].sum() == 12
    obs, reward, _, _, info = env.step(8 + 3)  # a fully mixed block cannot be mixed again: a no-op
    assert info["invalid_action"] and info["mix_steps"] == 2 and reward == info["reward_terms"]["total"] < 0
    assert obs["summary"][-1] == pytest.approx(2 / 10) and obs["summary"][5] == pytest.approx(3 / 5)
    obs, _, _, truncated, info = env.step(1)  # prune head 1: its layer's block can still be mixed
    assert info["action_mask"][8 + 1] and not truncated
    obs, _, _, _, info = env.step(8 + 1)
    _, _, _, truncated, info = env.step(8 + 0)  # 1 head + 4 mix steps = the budget
    assert truncated and info["mix_levels"].tolist() == [1, 1, 0, 2, 0] and obs in env.observation_space
    with pytest.raises(ValueError, match=r"budget must be in \[1, 18\]"):
        HeadPruneEnv(**kwargs, operation="prune+mix", proxy="drift_mass", mix_levels=2, budget=19)


def test_memo_is_keyed_on_the_full_state(kwargs: dict[str, Any]) -> None:
    mask, reset = np.ones(8, np.int8), np.zeros(8, np.int8)
    zero, one = np.zeros(5, np.int8), np.array([0, 1, 0, 0, 0], np.int8)
    assert state_key(mask, reset, zero) == state_key(mask) == state_key(mask, None, None)
    keys = {state_key(mask, reset, one), state_key(mask, reset, np.array([0, 0, 1, 0, 0])), state_key(mask),
            state_key(mask, np.eye(8, dtype=np.int8)[0]), state_key(mask, np.eye(8, dtype=np.int8)[0], one)}
    assert len(keys) == 5
    env = HeadPruneEnv(**kwargs, operation="prune+mix", proxy="random_word_flip", proxy_kwargs={"n_per_class": 8},
                       accuracy_floor=0.0, mix_levels=2)
    env.reset(seed=0)
    plain = env.score_state(mask)
    misses = env.scorer.misses
    mixed = env.score_state(mask, None, np.array([2, 0, 2, 0, 0], np.int8))
    assert env.scorer.misses == misses + 1 and mixed != plain  # not served from the unmixed state's entry
    assert env.score_state(mask, None, np.array([2, 0, 2, 0, 0], np.int8)) is mixed and env.scorer.misses == misses + 1
    assert env.score_state(mask) is plain


# ------------------------------------------------------------------------------------ vector env
@pytest.mark.parametrize("score_every", [1, 3])
def test_vector_env_with_mix_equals_single_envs_to_the_last_bit(kwargs: dict[str, Any], score_every: int) -> None:
    extra = {**{k: v for k, v in kwargs.items() if k != "progress"}, "score_every": score_every}
    batched = gym.make_vec("HeadPrune-Tiny-Mix-v0", num_envs=3, vectorization_mode="vector_entry_point",
                           progress=False, **extra)
    sync = gym.make_vec("HeadPrune-Tiny-Mix-v0", num_envs=3, vectorization_mode="sync", progress=False, **extra)
    lanes = batched.lanes.lanes
    assert batched.lanes.scoring == "incremental" and all(lane.scorer.forward.mixer is lanes[0].bench.mixer
                                                          for lane in lanes)
    obs_b, _ = batched.reset(seed=3)
    obs_s, _ = sync.reset(seed=3)
    assert data_equivalence(obs_b, obs_s, exact=True)
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(30):
        masks = batched.action_masks()
        actions = np.array([int(rng.choice(np.flatnonzero(m))) for m in masks])
        step_b, step_s = batched.step(actions), sync.step(actions)
        for x, y in zip(step_b, step_s):
            assert data_equivalence(x, y, exact=True)
        assert step_b[1].tobytes() == step_s[1].tobytes()
        ends += int((step_b[2] | step_b[3]).sum())
    assert ends >= 3 and (obs_b["mix"].shape == (3, 5))
    batched.close()
    sync.close()


# ------------------------------------------------------------------------------------ export and teacher
def test_state_model_equals_the_scored_state_and_leaves_the_victim(kwargs: dict[str, Any],
                                                                   tiny_victim: Victim) -> None:
    env = HeadPruneEnv(**kwargs, operation="prune+reset+mix", proxy="drift_mass", accuracy_floor=0.0, budget=10,
                       mix_levels=3)
    env.reset(seed=0)
    for a in (16 + 0, 2, 8 + 5, 16 + 4, 16 + 4, 16 + 1):
        env.step(a)
    exported = env.state_model("current")
    ev = Evaluator(exported, env.tokenizer, env.val_data, batch_size=32, max_length=env.max_length)
    scored = env.scorer.forward.logits(env.mask_tensor(env._mask), env.reset_tensor(env._reset), env._mix)
    assert torch.allclose(ev.logits(), scored, atol=1e-5)
    assert int((ev.predictions() == ev.require_labels()).sum()) == env._score.correct
    assert all(torch.equal(x, y) for x, y in zip(env.model.parameters(), tiny_victim.model.parameters()))
    best = state_model(env.bench, *(env._best[i] for i in (1, 4, 5)))
    assert all(torch.equal(x, y) for x, y in zip(best.parameters(), env.state_model("best").parameters()))


def test_episode_state_teaches_distill(kwargs: dict[str, Any], tiny_victim: Victim, small_env_config) -> None:
    """The final state of a mixing episode runs the protocol (edit, fine-tune) as ``distill``'s teacher; its stage
    is the same model as the state defense run alone, and bad states are refused before any work."""
    env = HeadPruneEnv(**kwargs, operation="prune+mix", proxy="drift_mass", accuracy_floor=0.0, mix_levels=4,
                       budget=6)
    env.reset(seed=0)
    for a in (8 + 0, 8 + 2, 8 + 2, 3):
        env.step(a)
    teacher = EpisodeStateDefense.from_env(env, "current")
    assert teacher.options["mix"] == [1, 0, 2, 0, 0] and teacher.options["mask"][3] == 0
    config = small_env_config(0)
    finetune = DefenseFineTune(epochs=1, lr=1e-3)
    splits = tiny_victim.splits()
    rows = {"eval_clean": splits.clean_test.take(60), "eval_poison": splits.poisoned_test.take(60)}
    alone = defend(tiny_victim, teacher, config, finetune, **rows)
    assert alone.details["edit"]["mix_levels"] == [1, 0, 2, 0, 0] and alone.details["edit"]["values_mixed"] > 0
    student = DistillDefense(teacher=teacher, drops=1, crops=1, concats=0, student_epochs=1.0)
    taught = defend(tiny_victim, student, config, finetune, **rows)
    stage = taught.metrics["stages"]["teacher: episode-state"]
    assert stage["acc"] == alone.metrics["final"]["acc"] and stage["lfr"] == alone.metrics["final"]["lfr"]
    assert taught.details["teacher"]["defense"] == "episode-state" and taught.details["edit"]["p"] == 1.0
    for bad, message in (({"mix": [9, 0, 0, 0, 0]}, r"option mix must be 5 integers in \[0, 4\]"),
                         ({"mask": [1] * 7}, "option mask must be 8 integers"),
                         ({"mask": [0] + [1] * 7, "reset": [1] + [0] * 7}, "both pruned and reset"),
                         ({"mix_levels": 0}, r"option 'mix_levels' of .* must be in \[1, 255\]")):
        with pytest.raises(ValueError, match=message):
            EpisodeStateDefense(**{"mix_levels": 4, **bad}).prune(env.bench)


def test_a_policy_defense_that_mixes_carries_its_best_state_into_the_model(tiny_victim: Victim,
                                                                            small_env_config) -> None:
    """A policy run as a defense in a mixing env: the weight edit is the episode's best state (resets and mix), so
    the defense's "pruned" model is the env's best state; a scripted pruning policy there acts on heads only."""
    from headprune.defenses.scripted import GivenPolicyDefense, run_policy_episode
    from headprune.workbench import Workbench

    class Schedule:
        name = "schedule"

        def __init__(self) -> None:
            self.actions = iter([8 + 2, 8 + 2, 5, 8 + 4])

        def predict(self, obs: Any, action_masks: Any = None, deterministic: bool = True) -> tuple[int, None]:
            return next(self.actions), None

    config = small_env_config(0, operation="prune+mix", mix_levels=2, budget=4, accuracy_floor=0.0,
                              proxy="drift_mass")
    bench = Workbench(tiny_victim, config)
    env = HeadPruneEnv(bench)
    mask, _, end, info = run_policy_episode(env, Schedule(), 0, "schedule")
    outcome = GivenPolicyDefense(Schedule()).prune(bench)
    assert end == "truncated" and outcome.edit is not None
    copy_model = copy.deepcopy(bench.model)
    details = outcome.edit.apply(copy_model)
    assert details["mix_levels"] == info["best_mix_levels"].tolist() and sum(details["mix_levels"]) > 0
    want = state_model(bench, *env.state("best"))
    ev = Evaluator(want, bench.tokenizer, bench.val_data, max_length=bench.max_length)
    got = Evaluator(copy_model, bench.tokenizer, bench.val_data, max_length=bench.max_length).logits(outcome.mask)
    assert torch.allclose(got, ev.logits(), atol=1e-5)
    mask, trajectory, details = DEFENSES.get("gradient")().prune(bench)  # heads only: a mask and no edit
    assert mask.shape == (2, 4) and trajectory[-1]["heads_pruned"] == 4


def test_uniform_mix_policy_raises_the_least_mixed_block_and_runs_as_a_defense(kwargs: dict[str, Any],
                                                                               tiny_victim: Victim,
                                                                               small_env_config) -> None:
    """The scripted mixing baseline: every step a mix action on the least-mixed block (ties to the lowest index),
    so the levels never differ by more than one; batched observations get one action per lane; as a defense its
    edit is the episode's best mixing state; an env without mix and a call without action masks are refused."""
    from headprune.defenses.scripted import GivenPolicyDefense, UniformMixPolicy, run_policy_episode
    from headprune.workbench import Workbench

    policy = UniformMixPolicy()
    env = HeadPruneEnv(**kwargs, operation="prune+mix", proxy="drift_mass", accuracy_floor=0.0, budget=7,
                       mix_levels=2)
    obs, info = env.reset(seed=0)
    chosen = []
    for _ in range(7):
        action, _ = policy.predict(obs, action_masks=info["action_mask"])
        chosen.append(int(action))
        obs, _, _, truncated, info = env.step(action)
        levels = info["mix_levels"]
        assert levels.max() - levels.min() <= 1 and info["heads_pruned"] == 0
    assert chosen == [8, 9, 10, 11, 12, 8, 9] and truncated and info["mix_levels"].tolist() == [2, 2, 1, 1, 1]
    batch = {"mix": np.array([[0.5, 0.0, 0.5], [1.0, 0.5, 0.5]])}
    masks = np.array([[True] * 4 + [True, True, True], [True] * 4 + [False, True, True]])
    assert policy.predict(batch, action_masks=masks)[0].tolist() == [5, 5]
    with pytest.raises(ValueError, match="needs an env with the mix operation"):
        policy.predict({"mask": np.ones(8)}, action_masks=np.ones(8, bool))
    with pytest.raises(ValueError, match="needs action_masks"):
        policy.predict(obs)
    with pytest.raises(RuntimeError, match="no block left to mix"):
        policy.predict({"mix": np.ones(3)}, action_masks=np.array([True, False, False, False]))

    config = small_env_config(0, operation="prune+mix", mix_levels=2, budget=4, accuracy_floor=0.0,
                              proxy="drift_mass")
    bench = Workbench(tiny_victim, config)
    _, _, end, info = run_policy_episode(HeadPruneEnv(bench), UniformMixPolicy(), 0, "uniform-mix")
    outcome = GivenPolicyDefense(UniformMixPolicy()).prune(bench)
    assert end == "truncated" and outcome.edit is not None and outcome.details["policy"] == {"name": "uniform-mix"}
    details = outcome.edit.apply(copy.deepcopy(bench.model))
    assert details["mix_levels"] == info["best_mix_levels"].tolist() and sum(details["mix_levels"]) > 0
    assert int(outcome.mask.sum()) == 8  # no head pruned


def _repaired_accuracy(bench: Any, levels: list[int], steps: int) -> float:
    """From scratch: the suspect with the uniform schedule's mix levels after ``steps`` steps written in, fine-tuned
    ``steps`` optimiser steps at the policy defense's lr on the training rows, its validation accuracy."""
    from headprune.defenses.scripted import GivenPolicyDefense
    from headprune.engine.finetuning import FineTuneConfig, fine_tune
    from headprune.envs.state_export import write_state

    model = write_state(bench, copy.deepcopy(bench.model), None, np.asarray(levels))
    fine_tune(model, bench.tokenizer, bench.train_data,
              FineTuneConfig(epochs=1.0, lr=GivenPolicyDefense.finetune_lr, max_length=bench.max_length,
                             seed=bench.base_seed, max_steps=steps), progress=False)
    return Evaluator(model, bench.tokenizer, bench.val_data, batch_size=bench.config.eval_batch_size,
                     max_length=bench.max_length).accuracy()


def test_a_policy_defense_keeps_the_deepest_checkpoint_that_holds_the_floor_after_repair(tiny_victim: Victim,
                                                                                       small_env_config,
                                                                                       monkeypatch) -> None:
    """``state="repaired"``: the uniform schedule's checkpoints are tried deepest first, each scored by a short clean
    fine-tune and the validation accuracy (equal to a from-scratch computation); the kept state is the deepest that
    holds the floor, its mix levels the schedule's at that step; none holding keeps the env's best state. Every
    checkpoint is scored on the defender's validation rows only."""
    from headprune.defenses import repaired_floor
    from headprune.defenses.base import as_outcome
    from headprune.defenses.scripted import GivenPolicyDefense, UniformMixPolicy, checkpoint_steps
    from headprune.workbench import Workbench

    def uniform(t: int) -> list[int]:  # the uniform schedule's levels after t steps over 5 blocks
        return [t // 5 + (i < t % 5) for i in range(5)]

    options = {"state": "repaired", "checkpoints": 4, "select_max_steps": 2}
    common = {"operation": "mix", "mix_levels": 2, "budget": 8, "score_every": 8, "proxy": "drift_mass"}
    bench = Workbench(tiny_victim, small_env_config(0, accuracy_floor=0.0, **common))
    assert checkpoint_steps(8, 4) == [8, 6, 4, 2] and checkpoint_steps(8, 3) == [8, 5, 3]
    repaired = {t: _repaired_accuracy(bench, uniform(t), 2) for t in (8, 6, 5, 4, 3, 2)}
    scored = []
    real = repaired_floor.Evaluator

    def spy(model: Any, tokenizer: Any, texts: Any, **kw: Any) -> Any:
        scored.append(tuple(texts.sentences))
        return real(model, tokenizer, texts, **kw)

    monkeypatch.setattr(repaired_floor, "Evaluator", spy)
    outcome = GivenPolicyDefense(UniformMixPolicy(), **options).prune(bench)  # floor 0: the deepest holds
    assert scored == [tuple(bench.val_data.sentences)]
    assert outcome.details["state_selection"] == [{"step": 8, "accuracy": repaired[8]}]
    assert outcome.details["kept_step"] == 8 and outcome.edit.mix.tolist() == uniform(8)

    # the floor at the suspect's own accuracy: on the tiny victim the deeper checkpoints fail it and step 2 holds
    bench = Workbench(tiny_victim, small_env_config(0, max_accuracy_drop=0.0, **common))
    floor = bench.accuracy_floor
    kept = max(t for t in (8, 6, 4, 2) if repaired[t] >= floor)
    outcome = GivenPolicyDefense(UniformMixPolicy(), **options).prune(bench)
    assert outcome.details["state_selection"] == [{"step": t, "accuracy": repaired[t]} for t in (8, 6, 4, 2)
                                                  if t >= kept]
    assert outcome.details["kept_step"] == kept < 8 and outcome.edit.mix.tolist() == uniform(kept)

    # three checkpoints (8, 5, 3): none holds that floor, so the env's best state is kept, as by default
    assert all(repaired[t] < floor for t in (8, 5, 3))
    outcome = as_outcome(GivenPolicyDefense(UniformMixPolicy(), **{**options, "checkpoints": 3}).prune(bench))
    default = as_outcome(GivenPolicyDefense(UniformMixPolicy()).prune(bench))
    assert outcome.details["kept_step"] is None
    assert outcome.details["state_selection"] == [{"step": t, "accuracy": repaired[t]} for t in (8, 5, 3)]
    assert "state_selection" not in default.details and outcome.mask.equal(default.mask)  # the env's best state
    assert (outcome.edit is None) == (default.edit is None)
    assert outcome.edit is None or outcome.edit.mix.tolist() == default.edit.mix.tolist()
    with pytest.raises(ValueError, match=re.escape("option 'state' of 'policy' must be of type 'best' | 'repaired'")):
        GivenPolicyDefense(UniformMixPolicy(), state="last")


# ------------------------------------------------------------------------------------ amortised scoring
def test_amortised_scoring_pays_the_potential_change_at_the_scored_steps(kwargs: dict[str, Any]) -> None:
    """With ``score_every=3`` the steps in between earn their penalties only and report the last score; a scored step
    earns the potential change since the last scored state, to the last bit of the every-step env's scores; the
    episode ends where the every-step env's does, with the same last state, and fewer states are scored."""
    config = {**kwargs, "operation": "prune+mix", "proxy": "random_word_flip", "proxy_kwargs": {"n_per_class": 8},
              "accuracy_floor": 0.0, "budget": 8, "mix_levels": 3}
    every, amortised = HeadPruneEnv(**config), HeadPruneEnv(**config, score_every=3)
    every.reset(seed=0)
    obs, info = amortised.reset(seed=0)
    last = (amortised.start_score.accuracy, amortised.start_score.proxy)
    rng = np.random.default_rng(5)
    done, steps, total, expected_total = False, 0, 0.0, 0.0
    while not done:
        action = int(rng.choice(np.flatnonzero(every.action_masks())))
        _, r_every, t_every, u_every, i_every = every.step(action)
        previous_summary = obs["summary"]
        obs, reward, terminated, truncated, info = amortised.step(action)
        steps += 1
        done = terminated or truncated
        assert done == (t_every or u_every) and info["invalid_action"] == i_every["invalid_action"]
        assert info["scored"] == (steps % 3 == 0 or done)
        if info["scored"]:
            now = (i_every["clean_accuracy"], i_every["proxy"])
            assert (info["clean_accuracy"], info["proxy"]) == now
            assert reward == step_reward(*last, *now, invalid=info["invalid_action"], crossed_floor=False,
                                         weights=amortised.weights).total
            last = now
        else:
            assert reward == -amortised.weights.invalid_action * info["invalid_action"]
            assert np.array_equal(obs["summary"][:4], previous_summary[:4])  # accuracy and proxy: the last score's
        total += reward
        expected_total += r_every
    assert steps > 3 and total == pytest.approx(expected_total, abs=1e-9)  # the same return, paid later
    assert [s.tolist() for s in amortised.state("current")] == [s.tolist() for s in every.state("current")]
    assert amortised.scorer.misses < every.scorer.misses


def test_amortised_scoring_checks_the_floor_at_the_scored_step(kwargs: dict[str, Any]) -> None:
    """With the floor at the start's accuracy, an every-step episode ends at the first step below it, an amortised
    one at its first SCORED step below it (read from the every-step trace), and no unscored state becomes the
    best."""
    config = {**kwargs, "operation": "prune+mix", "proxy": "drift_mass", "budget": 8}
    actions = list(range(8))  # prune every head in turn
    trace = HeadPruneEnv(**config, accuracy_floor=0.0)
    trace.reset(seed=0)
    floor = trace.start_score.accuracy
    below = [trace.step(a)[4]["clean_accuracy"] < floor for a in actions]  # step i + 1 below the floor?
    assert below[0] and not below[1]  # so score_every=2 skips the first crossing (the test is not vacuous)
    for k in (1, 2):
        env = HeadPruneEnv(**config, accuracy_floor=floor, score_every=k)
        env.reset(seed=0)
        expected = next(i + 1 for i, b in enumerate(below) if b and ((i + 1) % k == 0 or i + 1 == len(actions)))
        for step, action in enumerate(actions, 1):
            _, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        assert terminated and step == expected and info["reward_terms"]["floor"] == env.weights.floor
        scored_above = [i + 1 for i in range(step - 1) if (i + 1) % k == 0 and not below[i]]
        assert info["best_heads_pruned"] in {0, *scored_above}  # the start or a scored state above the floor
    assert expected > 2


def test_score_every_is_checked_and_a_larger_budget_is_not_cut_by_the_ids_step_limit(kwargs: dict[str, Any]) -> None:
    from headprune.agents.rl_training import make_env
    from headprune.envs.registration import step_limit

    with pytest.raises(ValueError, match="score_every must be >= 1"):
        HeadPruneConfig(score_every=0)
    assert step_limit("HeadPrune-Tiny-Mix-v0", {}) == gym.spec("HeadPrune-Tiny-Mix-v0").max_episode_steps == 16
    assert step_limit("HeadPrune-Tiny-Mix-v0", {"budget": 12}) == 24
    assert step_limit("HeadPrune-Tiny-Mix-v0", {"budget": 12, "max_steps": 13}) == 13
    extra = {k: v for k, v in kwargs.items() if k != "victim"}
    env = make_env("HeadPrune-Tiny-Mix-v0", **extra, budget=12, accuracy_floor=0.0)
    env.reset(seed=0)
    steps, done = 0, False
    while not done:  # always the last valid action: mix steps
        _, _, terminated, truncated, info = env.step(int(np.flatnonzero(env.unwrapped.action_masks())[-1]))
        steps, done = steps + 1, terminated or truncated
    assert steps == 12 and info["mix_steps"] + info["heads_pruned"] == 12  # the budget ended it, not step 16
