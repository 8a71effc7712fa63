"""The epsilon-greedy defense on PURE variance (the authors' 'RL-guided' pruning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from headprune.defenses.base import DEFENSES
from headprune.defenses.layerwise import policy_variance
from headprune.defenses.defense_options import option
from headprune.defenses.scripted import ScriptedPolicy, ScriptedPolicyDefense, ScriptedPolicyOptions

__all__ = ['EpsilonGreedyOptions', 'EpsilonGreedyPolicy', 'EpsilonGreedyPruning']


class EpsilonGreedyPolicy(ScriptedPolicy):
    """What the authors' code calls "RL-guided" pruning, kept for fidelity: with probability
    ``epsilon`` a uniformly random active head, otherwise the active head of lowest PURE [CLS]-attention
    variance (the head PURE would prune next), from ``np.random.default_rng(seed)``. Nothing is learnt:
    the authors' ``RLPruningAgent`` has no value function or update, so it IS epsilon-greedy over a
    fixed score; the trained agents of :mod:`headprune.agents` are the RL of this project.

    Differs from the authors' code in granularity and stopping: theirs flipped the coin once per chunk
    of ``prune_step`` (10) heads and returned the mask that had just fallen below the threshold; here
    the coin is flipped per head (the workbench's action) and the workbench's best mask excludes the crossing step.
    """

    name = "egreedy"

    def __init__(self, *args: Any, epsilon: float = 0.1, variance: torch.Tensor | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)
        self.variance = policy_variance(self, variance)
        self.rng = np.random.default_rng(self.seed)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "epsilon": self.epsilon}

    def reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def choose(self, mask: np.ndarray, valid: np.ndarray) -> int:
        if self.rng.random() < self.epsilon:
            return int(self.rng.choice(np.flatnonzero(valid)))
        return self._argmin(self.variance, valid)


@dataclass(frozen=True)
class EpsilonGreedyOptions(ScriptedPolicyOptions):
    """The options of ``egreedy`` (:class:`EpsilonGreedyPolicy`)."""

    epsilon: float = option(0.1, "probability of a random active head instead of the lowest-variance one",
                            low=0.0, high=1.0)


@DEFENSES.register("egreedy")
class EpsilonGreedyPruning(ScriptedPolicyDefense):
    """Epsilon-greedy on PURE variance (the authors' 'RL-guided') (:class:`EpsilonGreedyPolicy`)."""

    description = "epsilon-greedy on PURE variance (the authors' 'RL-guided')"
    policy_class = EpsilonGreedyPolicy
    options_class = EpsilonGreedyOptions
