"""The layer-wise variance defense: PURE [CLS]-attention variance with per-layer rates 20 % -> 80 %."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from headprune.defenses.base import DEFENSES
from headprune.defenses.scripted import ScriptedPolicy, ScriptedPolicyDefense
from headprune.engine.head_stats import compute_head_stats

__all__ = ['LayerwiseVariancePolicy', 'LayerwiseVariancePruning', 'layer_rates', 'policy_variance']


def layer_rates(num_layers: int) -> list[float]:
    """The per-layer pruning rates of the paper's layer-wise strategy: linear from 20 % (first layer)
    to 80 % (last layer), ``0.2 + 0.6 * l / (L - 1)`` (a single layer gets 20 %)."""
    if num_layers == 1:
        return [0.2]
    return [0.2 + 0.6 * layer / (num_layers - 1) for layer in range(num_layers)]


def policy_variance(policy: ScriptedPolicy, variance: torch.Tensor | None = None) -> np.ndarray:
    """PURE's [CLS]-attention variance ``[L, H]`` flattened to ``[n]``: ``variance`` when given (e.g. an env's
    cached ``head_stats.cls_attention_variance``), else computed on the unpruned model on the policy's rows."""
    if variance is None:
        variance = compute_head_stats(policy.model, policy.tokenizer, policy.rows, batch_size=policy.batch_size,
                                      max_length=policy.max_length).cls_attention_variance
    return variance.reshape(-1).double().numpy()


class LayerwiseVariancePolicy(ScriptedPolicy):
    """Layer-wise variance pruning: in layer ``l`` prune the ``min(floor(H * r_l), H - 1)`` heads of
    lowest PURE [CLS]-attention variance (:func:`~headprune.engine.head_stats.compute_head_stats`, computed
    once on the unpruned model), with the rates :func:`layer_rates` (20 % -> 80 %, deeper layers more;
    at least one head kept per layer). The planned heads are emitted in ascending variance across
    layers (:attr:`planned_budget` of them); past the plan it falls back to the lowest-variance active
    head. PURE (and this) prunes LOW variance first and keeps the highest-variance head of a layer.

    Differs from the authors' code only in stopping: theirs applied the whole layer-wise mask and just
    printed the validation accuracy; here the env stops before the floor is crossed, as the paper states.
    """

    name = "layerwise"

    def __init__(self, *args: Any, variance: torch.Tensor | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        L, H = self.shape
        self.variance = policy_variance(self, variance)
        var = self.variance.reshape(L, H)
        planned = np.zeros((L, H), dtype=bool)
        for layer, rate in enumerate(layer_rates(L)):
            k = min(int(H * rate), H - 1)
            order = np.argsort(var[layer], kind="stable")
            planned[layer, order[:k]] = True
        self.planned = planned.reshape(-1)
        self.planned_budget = int(self.planned.sum())
        # planned heads first (ascending variance), then the rest (ascending variance)
        rank = np.argsort(self.variance, kind="stable")
        self._scores = np.empty(self.n)
        self._scores[rank] = np.arange(self.n, dtype=float)
        self._scores[~self.planned] += self.n

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rates": layer_rates(self.shape[0]), "planned": self.planned_budget}


@DEFENSES.register("layerwise")
class LayerwiseVariancePruning(ScriptedPolicyDefense):
    """PURE variance with per-layer rates 20%->80% (:class:`LayerwiseVariancePolicy`)."""

    description = "PURE variance with per-layer rates 20%->80%"
    policy_class = LayerwiseVariancePolicy  # options: ScriptedPolicyOptions (batch_size, n_rows)
