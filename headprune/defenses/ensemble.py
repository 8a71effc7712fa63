"""The randomized-ensemble defense: majority vote of seeded random masks that keep the floor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from headprune.defenses.base import DEFENSES
from headprune.defenses.defense_options import option
from headprune.defenses.scripted import ScriptedPolicy, ScriptedPolicyDefense, ScriptedPolicyOptions
from headprune.envs.headprune_env import HeadPruneEnv
from headprune.engine.evaluator import Evaluator

__all__ = ['EnsembleOptions', 'EnsemblePolicy', 'EnsemblePruning']


class EnsemblePolicy(ScriptedPolicy):
    """Randomized ensemble: ``n_members`` seeded random masks, each built by pruning heads in a random
    order (member ``m`` uses ``default_rng([seed, m])``) while the accuracy on the defender's clean rows
    stays at or above the floor ``acc_0 - max_accuracy_drop`` (the member stops before the first head
    that would cross it) and at most ``budget`` heads; so every member respects the floor by
    construction (:attr:`member_accuracies`). Combination rule: a head is pruned when a strict majority
    of members (more than ``n_members / 2``) pruned it; these heads (:attr:`planned_budget`) are emitted
    by descending vote, ties by index, then the other heads by descending vote. The env still checks
    the combined mask against its own floor one head at a time.
    """

    name = "ensemble"

    def __init__(self, *args: Any, n_members: int = 5, max_accuracy_drop: float = 0.05,
                 budget: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}")
        self.n_members, self.max_accuracy_drop = int(n_members), float(max_accuracy_drop)
        self.budget = self.n // 2 if budget is None else int(budget)
        ev = Evaluator(self.model, self.tokenizer, self.rows, batch_size=max(self.batch_size, 64),
                       max_length=self.max_length)
        self.base_accuracy = ev.accuracy()
        self.floor = self.base_accuracy - self.max_accuracy_drop
        masks, accs = [], []
        for m in range(self.n_members):
            order = np.random.default_rng([self.seed, m]).permutation(self.n)
            flat = np.ones(self.n, dtype=np.int8)
            acc = self.base_accuracy
            for head in order[: self.budget]:
                trial = flat.copy()
                trial[head] = 0
                trial_acc = ev.accuracy(self._mask_tensor(trial))
                if trial_acc < self.floor:
                    break
                flat, acc = trial, trial_acc
            masks.append(flat)
            accs.append(acc)
        self.member_masks = np.stack(masks)  # [M, n] int8, 1 = active
        self.member_accuracies = accs
        self.votes = (1 - self.member_masks).sum(0)  # [n]
        self.majority = self.votes > self.n_members / 2
        self.planned_budget = int(self.majority.sum())
        self._scores = -self.votes.astype(float) + np.where(self.majority, 0.0, 0.5)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "n_members": self.n_members, "max_accuracy_drop": self.max_accuracy_drop,
                "budget": self.budget, "rule": "strict majority"}


@dataclass(frozen=True)
class EnsembleOptions(ScriptedPolicyOptions):
    """The options of ``ensemble`` (:class:`EnsemblePolicy`); ``None`` takes the workbench's budget / floor."""

    n_members: int = option(5, "random masks in the vote", low=1)
    max_accuracy_drop: float | None = option(None, "each member's floor below the start accuracy (None: the "
                                                   "workbench's floor)", low=0.0, high=1.0)
    budget: int | None = option(None, "most heads a member prunes (None: the workbench's budget)", low=0)


@DEFENSES.register("ensemble")
class EnsemblePruning(ScriptedPolicyDefense):
    """Majority vote of seeded random masks that keep the floor (:class:`EnsemblePolicy`)."""

    description = "majority vote of seeded random masks that keep the floor"
    policy_class = EnsemblePolicy
    options_class = EnsembleOptions
    fast_options = {'n_members': 3, 'n_rows': 64}

    def policy_options(self, env: HeadPruneEnv) -> dict[str, Any]:
        """The options, with the workbench's budget and floor drop for ``None`` (members respect its floor)."""
        options = super().policy_options(env)
        if options["budget"] is None:
            options["budget"] = env.budget
        if options["max_accuracy_drop"] is None:
            options["max_accuracy_drop"] = env.start_score.accuracy - env.accuracy_floor
        return options
