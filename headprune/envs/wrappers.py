"""Evaluation-only extras and the terminal fine-tune of ``HeadPrune-v0``, as ``gym.Wrapper``s.

* :class:`LabelFlipRateInfo`: LFR of the current and of the best mask in ``info`` (``"lfr"``,
  ``"best_lfr"``) from poisoned rows with their true labels. An evaluation aid: it never changes the
  observation or the reward, and training refuses it (``headprune.agents.rl_training``).
* :class:`TerminalFineTune`: on an episode's last step, a short clean fine-tune of a copy of the model
  under the final mask; adds the named term ``"finetune"`` (``Phi(s_T^ft) - Phi(s_T)``) to
  ``info["reward_terms"]`` and to the reward, so the reward returned stays ``info["reward_terms"]["total"]``.

:func:`make_headprune_env` builds the env and applies the wrappers from the keywords of :func:`apply_wrappers`::

    env = make_headprune_env("tiny", HeadPruneConfig(budget=4), poisoned_eval=rows)
    env = LabelFlipRateInfo(gym.make("HeadPrune-v0", victim="tiny"), rows)   # the same, by hand
"""

from __future__ import annotations

import copy
import inspect
import os
import time
from collections.abc import Mapping
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from torch import nn

from headprune.data import LabelledTexts, as_labelled_texts
from headprune.data.checks import check_labels
from headprune.envs.config import HeadPruneConfig
from headprune.envs.headprune_env import HeadPruneEnv
from headprune.envs.incremental import IncrementalForward
from headprune.envs.memo import StateMemo, state_key
from headprune.envs.reward import REWARD_TERMS, RewardTerms, StepChange
from headprune.engine.evaluator import Evaluator
from headprune.engine.metrics import label_flip_rate
from headprune.engine.finetuning import FineTuneConfig, FineTuneLog, fine_tune
from headprune.victims import DEFAULT_VICTIM, Victim
from headprune.workbench import Workbench

__all__ = ["LabelFlipRateInfo", "TerminalFineTune", "apply_wrappers", "finetuned_state_model", "make_headprune_env",
           "split_wrapper_options"]

Obs = dict[str, np.ndarray]


def _headprune_env(env: gym.Env) -> HeadPruneEnv:
    base = env.unwrapped
    if not isinstance(base, HeadPruneEnv):
        raise TypeError(f"this wrapper needs a HeadPrune-v0 env, got {type(base).__name__}")
    return base


class LabelFlipRateInfo(gym.Wrapper[Obs, np.int64, Obs, np.int64]):
    """Adds ``info["lfr"]`` and ``info["best_lfr"]``: LFR on ``poisoned_eval`` in the current state and in the
    episode's best one (mask, reset heads and mixed blocks: :meth:`HeadPruneEnv.state`; memoised by state; scored
    by an incremental forward like the env's).

    The poisoned rows cost layer caches (about 0.5 GB for 900 MiniLM sentences) and a partial forward
    per new mask. Observations, rewards and every other info entry are the wrapped env's, unchanged.

    :param env: a ``HeadPrune-v0`` env (possibly wrapped).
    :param poisoned_eval: poisoned texts with their TRUE labels, or a file of them.
    :param target_label: the attacker's target for LFR (default: the victim's).
    """

    def __init__(self, env: gym.Env, poisoned_eval: LabelledTexts | str | os.PathLike[str], *,
                 target_label: int | None = None) -> None:
        super().__init__(env)
        base = _headprune_env(env)
        self.poisoned_eval = check_labels(as_labelled_texts(poisoned_eval, "poisoned_eval"),
                                          base.model.config.num_labels, "poisoned_eval")
        self.target_label = int(base.victim.config.target_label if target_label is None else target_label)
        self._forward = IncrementalForward(Evaluator(
            base.model, base.tokenizer, list(self.poisoned_eval.sentences),
            batch_size=base.config.eval_batch_size, max_length=base.max_length),
            reference=base.base_model, mixer=base.bench.mixer)
        self._memo: StateMemo[float] = StateMemo(100_000)

    def lfr(self, mask: np.ndarray, reset: np.ndarray | None = None, mix: np.ndarray | None = None) -> float:
        """LFR on ``poisoned_eval`` under the flat int8 ``mask`` ``[n]`` (1 = active), with the heads where the flat
        ``reset`` is 1 reset and the blocks mixed to ``mix`` ``[B]``; memoised by state."""
        key = state_key(mask, reset, mix)
        lfr = self._memo.get(key)
        if lfr is None:
            env = _headprune_env(self.env)
            levels = None if mix is None or not mix.any() else mix
            reset_heads = None if reset is None else env.reset_tensor(reset)
            logits = self._forward.logits(env.mask_tensor(mask), reset_heads, levels)  # [N, classes]
            lfr = label_flip_rate(logits.argmax(dim=-1), self.poisoned_eval.labels, self.target_label)
            self._memo[key] = lfr
        return lfr

    def _with_lfr(self, info: dict[str, Any]) -> dict[str, Any]:
        env = _headprune_env(self.env)
        info["lfr"] = self.lfr(*env.state("current"))
        info["best_lfr"] = self.lfr(*env.state("best"))
        return info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[Obs, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, self._with_lfr(info)

    def step(self, action: Any) -> tuple[Obs, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._with_lfr(info)


def finetuned_state_model(bench: Workbench, config: FineTuneConfig, mask: np.ndarray, reset: np.ndarray | None = None,
                          mix: np.ndarray | None = None) -> tuple[nn.Module, FineTuneLog]:
    """``(model, log)``: a deep copy of ``bench``'s suspect carrying a state's weights (flat int8 ``mask`` ``[L * H]``,
    optionally ``reset`` ``[L * H]`` and the mixing levels ``mix`` ``[B]``), fine-tuned on ``bench.train_data`` by
    ``config`` with the pruned heads held at zero: the model :class:`TerminalFineTune` scores (the pruned heads
    stay gated, not folded: evaluate it under ``bench.mask_tensor(mask)``)."""
    from headprune.envs.state_export import write_state

    model = write_state(bench, copy.deepcopy(bench.model), reset, mix)
    log = fine_tune(model, bench.tokenizer, bench.train_data, config, mask=bench.mask_tensor(mask), progress=False)
    return model, log


class TerminalFineTune(gym.Wrapper[Obs, np.int64, Obs, np.int64]):
    """On an episode's last step, scores the final mask after a short clean fine-tune of a deep copy of
    the model (:func:`~headprune.engine.finetuning.fine_tune`, pruned heads held at zero, on the env's
    ``train_data``; accuracy on ``val_data``, the proxy rebuilt on the fine-tuned copy).

    Adds the reward term ``"finetune"`` = ``Phi(s_T^ft) - Phi(s_T)`` to ``info["reward_terms"]``
    (recomputing ``"total"``) and returns ``"total"`` as the reward, so an episode's return telescopes
    to ``Phi(s_T^ft) - Phi(s_0)`` minus the penalties. ``info["finetune"]`` holds ``accuracy``,
    ``proxy``, ``steps``, ``train_seconds`` and ``seconds``. Wrap the env directly (or over wrappers that
    leave the reward alone): the reward is rebuilt from the reported terms.

    :param env: a ``HeadPrune-v0`` env (possibly wrapped).
    :param config: a :class:`~headprune.engine.finetuning.FineTuneConfig` or a mapping of its fields over the
        default (one epoch at lr 2e-5, the env's seed and the victim's max length).
    """

    def __init__(self, env: gym.Env, config: FineTuneConfig | Mapping[str, Any] | None = None) -> None:
        super().__init__(env)
        base = _headprune_env(env)
        if isinstance(config, FineTuneConfig):
            self.config = config
        else:
            defaults = {"epochs": 1.0, "lr": 2e-5, "max_length": base.max_length, "seed": base.base_seed}
            self.config = FineTuneConfig(**{**defaults, **dict(config or {})})

    def step(self, action: Any) -> tuple[Obs, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            info["finetune"] = self.finetuned_score(*_headprune_env(self.env).state("current"))
            change = StepChange(0.0, 0.0, info["clean_accuracy"], info["proxy"],
                                finetuned=(info["finetune"]["accuracy"], info["finetune"]["proxy"]))
            base = _headprune_env(self.env)
            terms = RewardTerms(**{k: v for k, v in info["reward_terms"].items() if k != "total"})
            terms = terms.with_finetune(REWARD_TERMS.get("finetune").value(change, base.weights))
            info["reward_terms"] = terms.to_dict()
            reward = float(terms.total)
        return obs, reward, terminated, truncated, info

    def finetuned_score(self, mask: np.ndarray, reset: np.ndarray | None = None, mix: np.ndarray | None = None
                        ) -> dict[str, float]:
        """Accuracy and proxy of a state (flat int8 ``mask`` ``[n]``, optionally ``reset`` ``[n]`` and the mixing
        levels ``mix`` ``[B]``) after a clean fine-tune of a deep copy carrying the state's weights."""
        base = _headprune_env(self.env)
        start = time.perf_counter()
        model, log = finetuned_state_model(base.bench, self.config, mask, reset, mix)
        gates = base.mask_tensor(mask)  # [L, H]
        accuracy = Evaluator(model, base.tokenizer, base.val_data, max_length=base.max_length).accuracy(gates)
        proxy = float(base.build_proxy(model, with_stats=False)(gates))
        return {"accuracy": accuracy, "proxy": proxy, "steps": log.steps, "train_seconds": log.seconds,
                "seconds": time.perf_counter() - start}


def split_wrapper_options(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(env_kwargs, wrapper_kwargs)``: ``kwargs`` without and with the keywords of :func:`apply_wrappers`
    (``poisoned_eval``, ``target_label``, ``finetune_terminal``, ``finetune_config``)."""
    wrapper_keys = set(inspect.signature(apply_wrappers).parameters) - {"env"}
    env_kwargs = {k: v for k, v in kwargs.items() if k not in wrapper_keys}
    return env_kwargs, {k: v for k, v in kwargs.items() if k in wrapper_keys}


def apply_wrappers(env: gym.Env, *, poisoned_eval: LabelledTexts | str | os.PathLike[str] | None = None,
                   target_label: int | None = None, finetune_terminal: bool = False,
                   finetune_config: FineTuneConfig | Mapping[str, Any] | None = None) -> gym.Env:
    """``env`` wrapped in :class:`TerminalFineTune` (when ``finetune_terminal``) and then in
    :class:`LabelFlipRateInfo` (when ``poisoned_eval`` is given).

    :param env: a ``HeadPrune-v0`` env (e.g. from ``gym.make``).
    :param poisoned_eval: poisoned rows with their true labels for ``info["lfr"]`` (evaluation only).
    :param target_label: the attacker's target for LFR (default: the victim's).
    :param finetune_terminal: add the terminal fine-tune term to the last reward.
    :param finetune_config: the terminal fine-tune's config (see :class:`TerminalFineTune`; ignored
        without ``finetune_terminal``, as ``target_label`` is without ``poisoned_eval``).
    """
    if finetune_terminal:
        env = TerminalFineTune(env, finetune_config)
    if poisoned_eval is not None:
        env = LabelFlipRateInfo(env, poisoned_eval, target_label=target_label)
    return env


def make_headprune_env(victim: Victim | str | os.PathLike[str] = DEFAULT_VICTIM,
                       config: HeadPruneConfig | Mapping[str, Any] | None = None, *,
                       render_mode: str | None = None, **options: Any) -> gym.Env:
    """A :class:`~headprune.envs.headprune_env.HeadPruneEnv` with the wrappers its ``options`` ask for.

    :param victim: the victim (see :class:`~headprune.envs.headprune_env.HeadPruneEnv`).
    :param config: the env's :class:`~headprune.envs.config.HeadPruneConfig` (or a mapping of fields).
    :param render_mode: ``"ansi"`` or None.
    :param options: config fields, plus the keywords of :func:`apply_wrappers`.
    """
    env_kwargs, wrapper_kwargs = split_wrapper_options(options)
    return apply_wrappers(HeadPruneEnv(victim, config, render_mode=render_mode, **env_kwargs), **wrapper_kwargs)
