"""The defense protocol, its registry and the fine-tuning settings every defense shares.

A defense is an object with two steps, run by :func:`headprune.defenses.defend` in this order:

1. :meth:`Defense.prune` picks the ``[L, H]`` mask (1 = kept) on a :class:`~headprune.workbench.Workbench`
   built on the defender's clean rows only (a policy defense runs its episode in a ``HeadPrune-v0`` view of it); it returns the mask, the trajectory of visited masks and a details dict
   (a 3-tuple), or a :class:`DefenseOutcome`, which may also carry a
   :class:`~headprune.defenses.weight_edits.WeightEdit` (a reset of heads to the public pre-trained
   reference, Fine-mixing): ``defend`` applies it to the deep copy of the victim before the "pruned"
   evaluation and before fine-tuning;
2. :meth:`Defense.finetune` trains that deep copy on the workbench's training rows with the pruned
   heads held at zero and returns details of what it did.

Reference-based defenses read the public pre-trained model with :meth:`Defense.reference` (``base=``
of the defense or of ``defend``, else :func:`~headprune.engine.reference.resolve_base`'s default).

Each defense class is registered in :data:`DEFENSES` by a decorator and carries its typed options class
(:attr:`Defense.options_class`, a frozen dataclass with help text; :mod:`~headprune.defenses.defense_options`)
and its small "fast" options (smoke runs). ``defend`` never looks at a defense's name: adding a defense is one
new class with ``@DEFENSES.register("name")``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from headprune.common.finite import check_finite_fields
from headprune.defenses.defense_options import DefenseOptions
from headprune.defenses.weight_edits import WeightEdit
from headprune.workbench import Workbench
from headprune.engine.finetuning import FineTuneConfig, fine_tune
from headprune.engine.reference import resolve_base
from headprune.common.registry import Registry

__all__ = ["DEFENSES", "BaseSpec", "Defense", "DefenseFineTune", "DefenseOutcome", "PruneOutcome", "Stage",
           "as_outcome", "base_label", "check_reads_unlabelled", "defense_names", "get_defense", "unpruned_outcome",
           "validation_rows"]

DEFENSES: Registry[type[Defense]] = Registry("defense", name_attribute="name")
"""Every defense class by name, in registration order (registration sets each class's ``name``)."""

PruneOutcome = tuple[torch.Tensor, list[dict[str, Any]], dict[str, Any]]
"""What :meth:`Defense.prune` returns: the ``[L, H]`` float mask, the trajectory
``[{"heads_pruned", "accuracy", "mask"}]`` (validation accuracy; starts with the unpruned mask) and details."""

BaseSpec = str | os.PathLike[str] | nn.Module
"""A pre-trained reference as ``base=`` takes it: a folder, a hub id or a model object."""


class Stage(NamedTuple):
    """A model a defense built on its way to the final one (e.g. ``distill``'s teacher), kept so that the
    evaluation, after the defense is fixed, can report each stage (:meth:`Defense.stages`).

    :param name: the stage's name in reports (e.g. ``"teacher: finemix"``).
    :param model: the stage's model (the defense never changes it afterwards).
    :param mask: ``[L, H]`` float mask it runs under.
    """

    name: str
    model: nn.Module
    mask: torch.Tensor


class DefenseOutcome(NamedTuple):
    """What :meth:`Defense.prune` may return instead of a :data:`PruneOutcome`: the same three fields and
    an optional weight edit that :func:`~headprune.defenses.defend` applies to the victim's deep copy.

    :param mask: ``[L, H]`` float mask, 1 = kept.
    :param trajectory: ``[{"heads_pruned", "accuracy", "mask", ...}]`` (validation accuracy).
    :param details: JSON-ready details.
    :param edit: the weight edit (``None``: the weights are the victim's).
    """

    mask: torch.Tensor
    trajectory: list[dict[str, Any]]
    details: dict[str, Any]
    edit: WeightEdit | None = None


def as_outcome(result: PruneOutcome | DefenseOutcome) -> DefenseOutcome:
    """``result`` of :meth:`Defense.prune` as a :class:`DefenseOutcome` (a 3-tuple gets no edit)."""
    return result if isinstance(result, DefenseOutcome) else DefenseOutcome(*result)


def base_label(base: BaseSpec) -> str:
    """How a run's config records ``base=``: the folder or hub id as given, or a model object's class."""
    return f"<{type(base).__name__} object>" if isinstance(base, nn.Module) else os.fspath(base)


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
        check_finite_fields(self, "finetune_")
        object.__setattr__(self, "epochs", float(self.epochs))
        if self.epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"finetune_max_steps must be >= 1 (or None), got {self.max_steps}")

    def config(self, lr: float, *, max_length: int, seed: int) -> FineTuneConfig:
        """The :class:`~headprune.engine.finetuning.FineTuneConfig` of a run at learning rate ``lr``."""
        return FineTuneConfig(epochs=self.epochs, lr=lr, batch_size=self.batch_size, max_length=max_length,
                              seed=seed, max_steps=self.max_steps)


def validation_rows(bench: Workbench) -> Any:
    """The workbench's held-out clean validation rows (``val_data``)."""
    return bench.val_data


def unpruned_outcome(bench: Workbench) -> PruneOutcome:
    """The all-ones mask with its one-point trajectory (defenses that do not prune)."""
    L, H = bench.num_layers, bench.num_heads
    start = {"heads_pruned": 0, "accuracy": bench.start_score.accuracy, "mask": [1] * (L * H)}
    return torch.ones(L, H), [start], {}


class Defense:
    """Base class of every defense: options in, ``prune`` then ``finetune``.

    :param base: the public pre-trained reference (a folder, a hub id or a model) for defenses that use
        one (:meth:`reference`); default: the env config's ``base`` when it has one, else
        :func:`~headprune.engine.reference.resolve_base`'s default for the victim. Not an option: a run's config
        records it only when given.
    :param options: the defense's options, the fields of :attr:`options_class` (policy keyword arguments, PURE
        ``chunk``/``penalty``, MEFT ``entropy_epochs``, ...), checked here, before any work: an unknown option or
        a bad value is a one-line ValueError naming the defense and the option.

    Attributes:
        options: the options as given (what a run's config records, so its hash does not depend on defaults).
        option_values: every option, given or default, typed (an instance of :attr:`options_class`).
    """

    name: ClassVar[str] = "defense"
    description: ClassVar[str] = ""
    options_class: ClassVar[type[DefenseOptions]] = DefenseOptions
    """The defense's options: a frozen dataclass whose fields have types, defaults and help text."""
    fast_options: ClassVar[Mapping[str, Any]] = {}
    """Small options for smoke runs (``--fast``), a subset of :attr:`options_class`'s fields."""
    finetune_lr: ClassVar[float] = 2e-5
    holds_floor: ClassVar[bool] = True
    """Whether the "pruned" validation accuracy is at or above the workbench's floor (False for a fixed weight edit
    that no floor limits, e.g. ``reset-attention``; its fine-tune recovers accuracy)."""
    reads_unlabelled: ClassVar[bool] = False
    """Whether the defense reads the defender's unlabelled in-domain sentences (``Workbench.unlabelled_data``):
    ``defend`` refuses them for a defense that would ignore them."""
    needs_base: ClassVar[bool] = False
    """Whether the defense reads the public pre-trained reference (:meth:`reference`): ``clean`` resolves it
    before any work and stops with one line naming ``--base`` when none is found."""

    def __init__(self, *, base: BaseSpec | None = None, **options: Any) -> None:
        self.option_values = self.options_class.from_mapping(options)
        self.options = dict(options)
        self.base = base

    def with_base(self, base: BaseSpec | None) -> Defense:
        """This defense with ``base`` as its reference (a shallow copy; itself when ``base`` is None)."""
        if base is None:
            return self
        other = copy.copy(self)
        other.base = base
        return other

    def base_given(self, bench: Workbench) -> BaseSpec | None:
        """The reference given for this run: :attr:`base`, else the env config's ``base`` when it names one
        (not ``"auto"`` or ``"none"``), else ``None`` (the default reference)."""
        if self.base is not None:
            return self.base
        configured = getattr(bench.config, "base", None)
        return None if isinstance(configured, str) and configured.lower() in ("auto", "none") else configured

    def reference(self, bench: Workbench) -> nn.Module:
        """The public pre-trained reference of ``bench``'s victim: the workbench's own (``bench.base_model``, resolved
        from its config) unless this defense was given another, else
        :func:`~headprune.engine.reference.resolve_base`'s default. Known to every defender, no trigger knowledge.

        :raises headprune.engine.reference.BaseModelError: none found, or its shapes differ from the victim's."""
        if self.base is None and getattr(bench, "base_model", None) is not None:
            return bench.base_model
        return resolve_base(bench.victim, self.base_given(bench))

    def config(self) -> dict[str, Any] | None:
        """Extra options that define this defense beyond its name and options (a policy object's
        provenance); ``None`` for registered defenses (part of the run's config when given)."""
        return None

    def runs_episode(self) -> bool:
        """Whether :meth:`prune` runs a policy's episode in a ``HeadPrune-v0`` view over the workbench (which
        observes a backdoor proxy, so ``defend`` builds the workbench with one); False here: no proxy, and head
        statistics only if the defense reads them."""
        return False

    def env_options(self) -> dict[str, Any]:
        """Env config fields this defense needs (``defend`` applies them over the run's config): a trained
        policy's observation layout and operations (:class:`headprune.agents.AgentDefense`); ``{}`` here."""
        return {}

    def prune(self, bench: Workbench, *, progress: bool = False) -> PruneOutcome | DefenseOutcome:
        """The mask (default: prune nothing), or a :class:`DefenseOutcome` with a weight edit. Sees only
        ``bench`` (the defender's clean rows) and the public reference (:meth:`reference`)."""
        return unpruned_outcome(bench)

    def finetune(self, model: nn.Module, bench: Workbench, mask: torch.Tensor, config: FineTuneConfig, *,
                 progress: bool = False) -> dict[str, Any]:
        """Fine-tune ``model`` (a deep copy of the victim) in place on ``bench.train_data`` with the pruned heads
        of ``mask`` held at zero; returns details (default: plain cross-entropy fine-tuning)."""
        log = fine_tune(model, bench.tokenizer, bench.train_data, config, mask=mask,
                        progress=f"fine-tune ({self.name})" if progress else False)
        return {"finetune": {"steps": log.steps, "final_loss": log.final_loss, "lr": config.lr}}

    def stages(self) -> list[Stage]:
        """The intermediate models of this defense's last run, in order (default: none). Only evaluation code
        reads them, after the defense is fixed (``defend`` reports each one's ACC, and LFR with poisoned data)."""
        return []


def defense_names() -> list[str]:
    """The registered defense names, in registry order."""
    return DEFENSES.names()


def get_defense(name: str) -> type[Defense]:
    """The defense class called ``name``; ValueError naming the valid ones otherwise."""
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; valid defenses: {', '.join(DEFENSES)}")
    return DEFENSES.get(name)


def check_reads_unlabelled(defense: str | Defense, what: str) -> None:
    """ValueError naming ``what`` (a flag or field) unless ``defense`` (a registered name or a Defense) reads the
    defender's unlabelled text (:attr:`Defense.reads_unlabelled`): given to another defense it would be ignored.
    The message lists the defenses that read it. A name that is no defense raises :func:`get_defense`'s error."""
    cls = type(defense) if isinstance(defense, Defense) else get_defense(defense)
    if cls.reads_unlabelled:
        return
    readers = [name for name in DEFENSES if get_defense(name).reads_unlabelled]
    raise ValueError(f"{what}: defense {cls.name!r} does not read unlabelled text; only {', '.join(readers)} do")
