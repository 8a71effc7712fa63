"""The defense protocol, its registry and the fine-tuning settings every defense shares.

A defense is an object with two steps, run by :func:`headprune.defenses.defend` in this order:

1. :meth:`Defense.prune` picks the ``[L, H]`` mask (1 = kept) inside a ``HeadPrune-v0`` env built on the
   defender's clean rows only; it returns the mask, the trajectory of visited masks and a details dict;
2. :meth:`Defense.finetune` trains a deep copy of the victim on the env's training rows with the pruned
   heads held at zero and returns details of what it did.

Each defense class is registered in :data:`DEFENSES` by a decorator and carries its default options and
its small "fast" options (smoke runs). ``defend`` never looks at a defense's name: adding a defense is one
new class with ``@DEFENSES.register("name")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from headprune.envs.headprune_env import HeadPruneEnv
from headprune.registry import Registry
from headprune.finetuning import FineTuneConfig, fine_tune

__all__ = ["DEFENSES", "Defense", "DefenseFineTune", "PruneOutcome", "defense_names", "get_defense",
           "unpruned_outcome", "validation_rows"]

DEFENSES: Registry[type[Defense]] = Registry("defense", name_attribute="name")
"""Every defense class by name, in registration order (registration sets each class's ``name``)."""

PruneOutcome = tuple[torch.Tensor, list[dict[str, Any]], dict[str, Any]]
"""What :meth:`Defense.prune` returns: the ``[L, H]`` float mask, the trajectory
``[{"heads_pruned", "accuracy", "mask"}]`` (validation accuracy; starts with the unpruned mask) and details."""


@dataclass(frozen=True)
class DefenseFineTune:
    """The clean fine-tune after pruning (and the FT/FTH/MEFT/PURE fine-tune).

    :param epochs: epochs, may be fractional; 0 disables fine-tuning (the pruned victim is the model).
    :param lr: learning rate override (default: the defense's own, :attr:`Defense.finetune_lr`).
    :param max_steps: cap on optimiser steps (tests, smoke runs).
    :param batch_size: rows per step.
    """

    epochs: float = 3.0
    lr: float | None = None
    max_steps: int | None = None
    batch_size: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "epochs", float(self.epochs))
        if self.epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"finetune_max_steps must be >= 1 (or None), got {self.max_steps}")

    def config(self, lr: float, *, max_length: int, seed: int) -> FineTuneConfig:
        """The :class:`~headprune.finetuning.FineTuneConfig` of a run at learning rate ``lr``."""
        return FineTuneConfig(epochs=self.epochs, lr=lr, batch_size=self.batch_size, max_length=max_length,
                              seed=seed, max_steps=self.max_steps)


def validation_rows(env: HeadPruneEnv) -> Any:
    """The env's held-out clean validation rows (``val_data``; ``eval_data`` in older envs)."""
    rows = getattr(env, "val_data", None)
    return env.eval_data if rows is None else rows


def unpruned_outcome(env: HeadPruneEnv) -> PruneOutcome:
    """The all-ones mask with its one-point trajectory (defenses that do not prune)."""
    L, H = env.num_layers, env.num_heads
    start = {"heads_pruned": 0, "accuracy": env.start_score.accuracy, "mask": [1] * (L * H)}
    return torch.ones(L, H), [start], {}


class Defense:
    """Base class of every defense: options in, ``prune`` then ``finetune``.

    :param options: the defense's options (policy keyword arguments, PURE ``chunk``/``penalty``, MEFT
        ``entropy_epochs``); unknown ones are passed on and rejected where they are used.
    """

    name: ClassVar[str] = "defense"
    description: ClassVar[str] = ""
    default_options: ClassVar[Mapping[str, Any]] = {}
    fast_options: ClassVar[Mapping[str, Any]] = {}
    finetune_lr: ClassVar[float] = 2e-5

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)

    def option(self, key: str) -> Any:
        """The option ``key``: given, else the class default."""
        return self.options.get(key, self.default_options.get(key))

    def config(self) -> dict[str, Any] | None:
        """Extra options that define this defense beyond its name and options (a policy object's
        provenance); ``None`` for registered defenses (part of the run's config when given)."""
        return None

    def prune(self, env: HeadPruneEnv, *, progress: bool = False) -> PruneOutcome:
        """The mask (default: prune nothing). Sees only ``env`` (the defender's clean rows)."""
        return unpruned_outcome(env)

    def finetune(self, model: nn.Module, env: HeadPruneEnv, mask: torch.Tensor, config: FineTuneConfig, *,
                 progress: bool = False) -> dict[str, Any]:
        """Fine-tune ``model`` (a deep copy of the victim) in place on ``env.train_data`` with the pruned heads
        of ``mask`` held at zero; returns details (default: plain cross-entropy fine-tuning)."""
        log = fine_tune(model, env.tokenizer, env.train_data, config, mask=mask,
                        progress=f"fine-tune ({self.name})" if progress else False)
        return {"finetune": {"steps": log.steps, "final_loss": log.final_loss, "lr": config.lr}}


def defense_names() -> list[str]:
    """The registered defense names, in registry order."""
    return DEFENSES.names()


def get_defense(name: str) -> type[Defense]:
    """The defense class called ``name``; ValueError naming the valid ones otherwise."""
    if name not in DEFENSES:
        raise ValueError(f"unknown strategy {name!r}; valid strategies: {', '.join(DEFENSES)}")
    return DEFENSES.get(name)
