"""The gate-gradient defense (Michel et al., 2019): prune the least important head, re-estimated as heads go."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from headprune.defenses.base import DEFENSES
from headprune.defenses.defense_options import option
from headprune.defenses.scripted import ScriptedPolicy, ScriptedPolicyDefense, ScriptedPolicyOptions
from headprune.engine.head_stats import gate_gradient_importance

__all__ = ['GradientOptions', 'GradientPolicy', 'GradientPruning', 'ReestimatingPolicy']


class ReestimatingPolicy(ScriptedPolicy):
    """Ranks by a score that is re-estimated under the current mask every ``reestimate_every`` pruned
    heads (and whenever the mask is not a continuation of the one last scored, e.g. a new episode)."""

    def __init__(self, *args: Any, reestimate_every: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if reestimate_every < 1:
            raise ValueError(f"reestimate_every must be >= 1, got {reestimate_every}")
        self.reestimate_every = int(reestimate_every)
        self.estimates = 0
        self._scored_mask: np.ndarray | None = None
        self._scores: np.ndarray | None = None

    def config(self) -> dict[str, Any]:
        return {**super().config(), "reestimate_every": self.reestimate_every}

    def reset(self) -> None:
        self._scored_mask, self._scores = None, None

    def estimate(self, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def choose(self, mask: np.ndarray, valid: np.ndarray) -> int:
        stale = self._scored_mask is None or bool(np.any(mask > self._scored_mask)) or (
            int((self._scored_mask - mask).sum()) >= self.reestimate_every)
        if stale:
            self._scores = self.estimate(mask)
            self._scored_mask = mask.copy()
            self.estimates += 1
        assert self._scores is not None
        return self._argmin(self._scores, valid)


class GradientPolicy(ReestimatingPolicy):
    """Prune the active head of least gate-gradient importance (Michel et al., 2019) on the defender's
    clean rows, re-estimated under the current mask every ``reestimate_every`` pruned heads (default 1:
    after every head).

    Importance is :func:`~headprune.defenses.head_groups.gate_gradient_importance`, one gate per head.
    Differs from the authors' code (``chapagaisa/grad``, ``compute_gradient_importance``), whose score
    for head ``(l, h)`` is the norm of the gradient of layer ``l``'s whole KEY weight, the same number for
    every head of the layer, then normalised per layer, so every head scores ``1/H`` and the "ranking" is
    the tie order; it was also computed once (in train mode, with dropout) and pruned in chunks of 10.
    Here each head has its own gate, the score is re-estimated as heads go, and the env stops one head
    before the floor.
    """

    name = "gradient"

    def estimate(self, mask: np.ndarray) -> np.ndarray:
        imp = gate_gradient_importance(self.model, self.tokenizer, self.rows, mask=self._mask_tensor(mask),
                                       batch_size=self.batch_size, max_length=self.max_length)
        return imp.reshape(-1).double().numpy()


@dataclass(frozen=True)
class GradientOptions(ScriptedPolicyOptions):
    """The options of ``gradient`` (:class:`GradientPolicy`)."""

    reestimate_every: int = option(1, "re-estimate the importance every N pruned heads", low=1)


@DEFENSES.register("gradient")
class GradientPruning(ScriptedPolicyDefense):
    """Prune the least gate-gradient-important head, re-estimated as heads go (:class:`GradientPolicy`)."""

    description = "prune the least gate-gradient-important head, re-estimated as heads go"
    policy_class = GradientPolicy
    options_class = GradientOptions
    fast_options = {'n_rows': 64}
