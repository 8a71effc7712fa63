"""The ``drift_mass`` proxy: the share of fine-tuning drift still carried by heads in their fine-tuned state."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from headprune.data import LabelledTexts
from headprune.envs.proxies.base import PROXIES, BackdoorProxy
from headprune.engine.head_drift import DRIFT_FEATURE_NAMES, drift_statistics
from headprune.engine.head_stats import HeadStats

__all__ = ["DriftMassProxy"]


@PROXIES.register("drift_mass")
class DriftMassProxy(BackdoorProxy):
    """How much of the fine-tuning drift is still in place.

    Definition: ``D[l, h] >= 0``, one drift statistic of :mod:`headprune.engine.head_drift` (``statistic``:
    ``"weight_drift"``, the default, or ``"activation_drift"``), computed once for the unpruned
    suspect against its pre-trained reference. A head is *fine-tuned* when it is neither pruned
    (``mask == 0``) nor reset (``reset == 1``); the value is::

        p = sum_{fine-tuned (l, h)} D[l, h] / sum_{all (l, h)} D[l, h]     in [0, 1]

    (the raw sum with ``normalise=False``). Pruning or resetting a head removes its drift; the
    unpruned suspect scores 1. The premise (issue 13): the backdoor was written during fine-tuning,
    so the drift a state still carries bounds what of the backdoor it can still carry. It reads the
    two models only, never data (the clean rows are used for ``activation_drift`` when computed here).

    Cost: free per call; construction is free when ``head_stats`` with drift statistics are given (the
    env passes its cached ones), else one :func:`~headprune.engine.head_drift.drift_statistics` pass against
    ``reference``. Like ``pure_variance`` it ignores how a change moves the drift of later layers.

    :param head_stats: statistics holding the drift features (the env's, computed with ``base=``).
    :param reference: the pre-trained reference, used when ``head_stats`` has no drift statistics.
    :param statistic: which drift statistic weighs the heads.
    :param normalise: divide by the total drift.
    """

    name = "drift_mass"

    def __init__(self, model: nn.Module, tokenizer: Any, clean: LabelledTexts, *, seed: int = 0,
                 head_stats: HeadStats | None = None, reference: nn.Module | None = None,
                 statistic: str = "weight_drift", normalise: bool = True, max_length: int = 128,
                 cache_size: int = 4096) -> None:
        super().__init__(model, tokenizer, clean, seed=seed, cache_size=cache_size)
        if statistic not in DRIFT_FEATURE_NAMES:
            raise ValueError(f"statistic must be one of {list(DRIFT_FEATURE_NAMES)}, got {statistic!r}")
        if head_stats is not None and head_stats.has_drift:
            drift = getattr(head_stats, statistic)
        elif reference is not None:
            drift = drift_statistics(model, reference, tokenizer, clean, max_length=max_length)[statistic]
        else:
            raise ValueError("the drift_mass proxy needs the pre-trained reference: give the env base= "
                             "(or head_stats with drift statistics, or reference=)")
        if tuple(drift.shape) != self.shape:
            raise ValueError(f"drift is {tuple(drift.shape)}, the model is {self.shape}")
        self.statistic = statistic
        self.drift = drift.double().clamp(min=0).clone()  # [L, H]
        total = float(self.drift.sum())
        self.scale = total if normalise and total > 0 else 1.0
        self.value_range = (0.0, 1.0) if normalise else (0.0, max(total, 0.0))  # type: ignore[misc]

    def _compute(self, mask: torch.Tensor) -> float:
        return float((self.drift * mask.double()).sum() / self.scale)

    def _compute_with_reset(self, mask: torch.Tensor, reset: torch.Tensor) -> float:
        return float((self.drift * mask.double() * (1.0 - reset.double())).sum() / self.scale)
