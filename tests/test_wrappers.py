"""The HeadPrune-v0 wrappers: LFR in info (evaluation only) and the terminal fine-tune (a named reward term)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from headprune.data import LabelledTexts, as_labelled_texts, read_labelled_text
from headprune.envs import ENV_ID
from headprune.envs.headprune_env import HeadPruneEnv
from headprune.envs.reward import potential
from headprune.envs.wrappers import (
    LabelFlipRateInfo,
    TerminalFineTune,
    apply_wrappers,
    make_headprune_env,
    split_wrapper_options,
)
from headprune.engine.evaluator import Evaluator
from headprune.engine.metrics import label_flip_rate
from headprune.victims import Victim

FAST = {"val_size": 96, "stats_size": 96, "proxy": "pure_variance", "progress": False, "accuracy_floor": 0.0}
FINETUNE = {"max_steps": 2, "batch_size": 16}


@pytest.fixture(scope="module")
def kwargs(tiny_victim: Victim, victim_cache: Path) -> dict[str, Any]:
    return {"victim": tiny_victim, "cache": victim_cache, **FAST}


@pytest.fixture(scope="module")
def poisoned(tiny_victim: Victim) -> LabelledTexts:
    return tiny_victim.splits().poisoned_dev.take(48)


def naive_lfr(env: HeadPruneEnv, rows: LabelledTexts, mask: np.ndarray, target: int) -> float:
    """LFR by a plain full forward (no incremental caches, no memo)."""
    preds = Evaluator(env.model, env.tokenizer, list(rows.sentences), max_length=env.max_length).predictions(
        env.mask_tensor(mask))
    return label_flip_rate(preds, rows.labels, target)


def test_lfr_info_matches_a_naive_forward(kwargs: dict[str, Any], poisoned: LabelledTexts) -> None:
    env = LabelFlipRateInfo(gym.make(ENV_ID, **kwargs, budget=4), poisoned)  # wrapping gym.make's env by hand
    base = env.unwrapped
    assert isinstance(base, HeadPruneEnv) and env.target_label == base.victim.config.target_label
    _, info = env.reset(seed=0)
    assert info["lfr"] == info["best_lfr"] == naive_lfr(base, poisoned, np.ones(8, np.int8), env.target_label)
    for action in (2, 5, 5):
        _, _, _, _, info = env.step(action)
        mask = info["action_mask"].astype(np.int8)
        assert info["lfr"] == naive_lfr(base, poisoned, mask, env.target_label)
        assert info["best_lfr"] == env.lfr(info["best_mask"])
    assert len(env._memo) <= 3  # memoised: the repeated (invalid) action and best masks cost nothing new
    relabelled = LabelledTexts(poisoned.sentences, (1,) * len(poisoned))  # every true label != target 0
    other = LabelFlipRateInfo(HeadPruneEnv(**kwargs), relabelled, target_label=0)
    _, info = other.reset()
    assert info["lfr"] == naive_lfr(base, relabelled, np.ones(8, np.int8), 0)


def test_lfr_wrapper_reads_files_and_refuses_other_envs(kwargs: dict[str, Any], poisoned: LabelledTexts,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "poisoned.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in poisoned))
    from_file = make_headprune_env(**kwargs, poisoned_eval=str(path))
    in_memory = make_headprune_env(**kwargs, poisoned_eval=poisoned)
    assert from_file.reset()[1]["lfr"] == in_memory.reset()[1]["lfr"]
    with pytest.raises(TypeError, match="HeadPrune-v0"):
        LabelFlipRateInfo(gym.make("CartPole-v1"), poisoned)
    with pytest.raises(TypeError, match="poisoned_eval must be"):
        make_headprune_env(**kwargs, poisoned_eval=[("a", 1)])


def test_terminal_finetune_is_a_reward_term(kwargs: dict[str, Any]) -> None:
    plain = gym.make(ENV_ID, **kwargs, budget=2)
    env = TerminalFineTune(gym.make(ENV_ID, **kwargs, budget=2), FINETUNE)
    assert env.config.max_steps == 2 and env.config.seed == env.unwrapped.base_seed
    plain.reset(seed=0)
    env.reset(seed=0)
    step1, plain1 = env.step(1), plain.step(1)
    assert step1[1] == plain1[1] and "finetune" not in step1[-1]
    assert step1[-1]["reward_terms"] == plain1[-1]["reward_terms"]
    _, reward, terminated, truncated, info = env.step(6)
    _, plain_reward, *_, plain_info = plain.step(6)
    assert truncated and not terminated
    weights = env.unwrapped.weights
    bonus = (potential(info["finetune"]["accuracy"], info["finetune"]["proxy"], weights)
             - potential(info["clean_accuracy"], info["proxy"], weights))
    terms = info["reward_terms"]
    assert terms == {**plain_info["reward_terms"], "finetune": bonus, "total": plain_reward + bonus}
    assert reward == terms["total"] == (terms["accuracy"] + terms["proxy"] - terms["invalid_action"]
                                        - terms["floor"] + terms["finetune"])


def test_make_headprune_env_and_option_split(kwargs: dict[str, Any], poisoned: LabelledTexts) -> None:
    env_kwargs, wrapper_kwargs = split_wrapper_options({"budget": 3, "poisoned_eval": poisoned,
                                                        "finetune_terminal": True, "finetune_config": FINETUNE})
    assert env_kwargs == {"budget": 3} and set(wrapper_kwargs) == {"poisoned_eval", "finetune_terminal",
                                                                   "finetune_config"}
    env = make_headprune_env(**kwargs, **env_kwargs, **wrapper_kwargs)
    assert isinstance(env, LabelFlipRateInfo) and isinstance(env.env, TerminalFineTune)
    assert isinstance(env.env.env, HeadPruneEnv) and env.unwrapped.budget == 3
    assert isinstance(make_headprune_env(**kwargs), HeadPruneEnv)  # no wrapper asked for, none applied
    bare = HeadPruneEnv(**kwargs)
    assert apply_wrappers(bare, finetune_config=FINETUNE) is bare  # ignored without finetune_terminal


def test_training_env_refuses_poisoned_data_and_applies_finetune(kwargs: dict[str, Any],
                                                                  poisoned: LabelledTexts) -> None:
    from headprune.agents.rl_training import make_env

    with pytest.raises(ValueError, match="poisoned_eval is not allowed in training"):
        make_env(ENV_ID, **kwargs, poisoned_eval=poisoned)
    env = make_env(ENV_ID, **kwargs, finetune_terminal=True, finetune_config=FINETUNE)
    assert isinstance(env, TerminalFineTune) and isinstance(env.unwrapped, HeadPruneEnv)
    assert env.unwrapped.spec is not None and "finetune_terminal" not in env.unwrapped.spec.kwargs


def test_as_labelled_texts(poisoned: LabelledTexts, tmp_path: Path) -> None:
    assert as_labelled_texts(None) is None and as_labelled_texts(poisoned) is poisoned
    path = tmp_path / "rows.tsv"
    path.write_text("sentence\tlabel\nfine\t1\n")
    assert as_labelled_texts(path) == read_labelled_text(path) == as_labelled_texts(str(path))
    with pytest.raises(TypeError, match="clean_data must be a LabelledTexts or a file path, got int"):
        as_labelled_texts(3, "clean_data")  # type: ignore[call-overload]


def test_lfr_and_terminal_finetune_read_the_whole_state_of_a_mixing_env(kwargs: dict[str, Any],
                                                                        poisoned: LabelledTexts) -> None:
    """With reset heads and mixed blocks, LFR is that of the state's model (not of the head mask alone), and the
    terminal fine-tune starts from the state's weights."""
    make = {**kwargs, "operation": "prune+reset+mix", "mix_levels": 2, "budget": 12, "accuracy_floor": 0.0}
    env = LabelFlipRateInfo(TerminalFineTune(HeadPruneEnv(**make), FINETUNE), poisoned)
    base = env.unwrapped
    env.reset(seed=0)
    target = env.target_label
    actions = (9, 3, 16, 16, 17, 17, 18, 18, 19, 19, 20)  # reset head 1, prune head 3, every block to the base
    differs = False
    for t, action in enumerate(actions):
        _, _, _, truncated, info = env.step(action)
        differs |= info["lfr"] != env.lfr(base.state("current")[0])  # the head mask alone gives another LFR
        if t in (0, 2, 3, 10):
            preds = Evaluator(base.state_model("current"), base.tokenizer, list(poisoned.sentences),
                              max_length=base.max_length).predictions()
            assert info["lfr"] == label_flip_rate(preds, poisoned.labels, target)
    assert differs
    assert not truncated
    _, _, _, truncated, info = env.step(20)
    assert truncated and info["finetune"]["steps"] == 2
    unmixed = TerminalFineTune(HeadPruneEnv(**make), FINETUNE).finetuned_score(*base.state("current")[:2])
    assert unmixed["accuracy"] != info["finetune"]["accuracy"] or unmixed["proxy"] != info["finetune"]["proxy"]
