"""Deprecated: :func:`headprune.defenses.defend` takes a defense, an env config and a fine-tune config;
:func:`defend` here keeps the old flat signature for one release and forwards to it."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

from headprune.data import LabelledTexts
from headprune.defenses import (
    Defense,
    DefenseFineTune,
    DefenseResult,
    PureAttentionRegulariser,
    max_entropy_loss,
    pure_norm_coefficients,
    pure_prune,
)
from headprune.defenses import defend as defend_with_configs
from headprune.envs.config import HeadPruneConfig
from headprune.victims import Victim

PolicyStrategy = Defense
"""Deprecated name of :class:`headprune.defenses.Defense`."""

__all__ = ["DefenseResult", "PolicyStrategy", "PureAttentionRegulariser", "defend", "max_entropy_loss",
           "pure_norm_coefficients", "pure_prune"]


def defend(victim: Victim | str | os.PathLike[str], clean_data: LabelledTexts | str | os.PathLike[str] | None = None,
           strategy: str | Defense | Any = "gradient", seed: int = 0, *, finetune_epochs: float = 3.0,
           finetune_lr: float | None = None, finetune_max_steps: int | None = None, batch_size: int = 32,
           max_accuracy_drop: float | None = None, accuracy_floor: float | None = None, budget: int | None = None,
           eval_size: int = 256, stats_size: int = 256, options: Mapping[str, Any] | None = None,
           cache: str | os.PathLike[str] | None = None, progress: bool = True, **evaluation: Any) -> DefenseResult:
    """Deprecated flat form of :func:`headprune.defenses.defend` (``evaluation``: ``eval_clean``,
    ``eval_poison``, ``poisoned_true_labels``, ``target_label``, ``curve_points``)."""
    warnings.warn("headprune.baselines.defend is deprecated; use headprune.defenses.defend(victim, defense, "
                  "env_config, finetune)", DeprecationWarning, stacklevel=2)
    env_config = HeadPruneConfig(clean_data=clean_data, val_size=eval_size, stats_size=stats_size,
                                 accuracy_floor=accuracy_floor, max_accuracy_drop=max_accuracy_drop, budget=budget,
                                 seed=seed, cache=cache, progress=progress)
    finetune = DefenseFineTune(epochs=finetune_epochs, lr=finetune_lr, max_steps=finetune_max_steps,
                               batch_size=batch_size)
    return defend_with_configs(victim, strategy, env_config, finetune,
                               options=options if isinstance(strategy, str) else None, **evaluation)
