"""An episode's state as a model and as a defense: what a ``HeadPrune-v0`` episode ends in, usable downstream.

A state (:mod:`headprune.envs.operations`) is a head mask ``[L * H]``, a reset set ``[L * H]`` and the mixing levels
``[B]`` of :mod:`headprune.envs.mixing`. :func:`state_model` writes it into a deep copy of the suspect: the reset heads
carry the reference's weights, the mixed blocks the weights :class:`~headprune.envs.mixing.BlockMixer` gives them
(the very weights the env scored), and the pruned heads are folded to zero
(:func:`~headprune.engine.export.fold_gates`), so plain ``transformers`` runs it. :class:`EpisodeStateDefense` is the
same state as a :class:`~headprune.defenses.base.Defense` (its mask, and :class:`StateEdit` as its weight edit), so
``defend``'s protocol runs it (edit, then the clean fine-tune) and it can teach ``distill`` / ``purify``::

    env = HeadPruneEnv("tiny", operation="prune+mix")
    ...  # an episode
    teacher = EpisodeStateDefense.from_env(env)          # the episode's best state
    DistillDefense(teacher=teacher)                       # the state, fine-tuned, teaches the public base
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from headprune.defenses.base import Defense, DefenseOutcome, unpruned_outcome
from headprune.defenses.defense_options import DefenseOptions, option
from headprune.defenses.weight_edits import WeightEdit
from headprune.engine.export import fold_gates
from headprune.engine.reference import reset_heads
from headprune.envs.mixing import BlockMixer
from headprune.workbench import Workbench

__all__ = ["EpisodeStateDefense", "StateEdit", "state_model", "write_state"]


@dataclass
class StateEdit(WeightEdit):
    """The weights of a state: the reference's weights into the heads where ``reset`` is true, then the blocks
    mixed to ``mix`` (the two commute: both copy reference values).

    :param mixer: the block layout, reference, levels and seed of the mix (as the env's).
    :param reset: ``[L, H]`` bool, True = reset head.
    :param mix: ``[B]`` int mixing levels.
    """

    mixer: BlockMixer
    reset: torch.Tensor
    mix: np.ndarray

    def apply(self, model: nn.Module) -> dict[str, Any]:
        count = reset_heads(model, self.mixer.base, self.reset) if bool(self.reset.any()) else 0
        return {"operation": "episode-state", "heads_reset": count, "reset_mask": self.reset.int().tolist(),
                **self.mixer.apply(model, self.mix)}


def _mixer_of(bench: Workbench, base: nn.Module, mix_levels: int, seed: int) -> BlockMixer:
    """The workbench's own mixer when it has the same reference, levels and seed, else a new one."""
    own = bench.mixer
    if own is not None and own.base is base and own.levels == mix_levels and own.seed == seed:
        return own
    return BlockMixer(bench.model, base, mix_levels, seed)


def write_state(bench: Workbench, model: nn.Module, reset: np.ndarray | None, mix: np.ndarray | None) -> nn.Module:
    """Write a state's weights into ``model`` (a deep copy of ``bench``'s suspect), in place: the heads where the
    flat ``reset`` ``[L * H]`` is 1 get the reference's weights, the blocks of ``bench.mixer`` their ``mix`` ``[B]``
    levels (``None`` or empty/zero: nothing). Returns ``model``."""
    L, H = bench.head_shape
    r = torch.zeros(L, H, dtype=torch.bool) if reset is None else torch.from_numpy(np.asarray(reset) != 0).view(L, H)
    levels = None if mix is None or not np.asarray(mix).any() else np.asarray(mix)
    if levels is not None:
        if bench.mixer is None:
            raise ValueError("mixing levels given but the workbench has no mix operation")
        StateEdit(bench.mixer, r, levels).apply(model)
    elif bool(r.any()):
        if bench.base_model is None:
            raise ValueError("reset heads given but the workbench has no pre-trained reference")
        reset_heads(model, bench.base_model, r)
    return model


def state_model(bench: Workbench, mask: np.ndarray, reset: np.ndarray | None = None,
                mix: np.ndarray | None = None) -> nn.Module:
    """A new model: ``bench``'s suspect with the state written into its weights (:func:`write_state`; flat int8
    ``mask`` ``[L * H]``) and the pruned heads folded to zero. Its logits equal the env's scoring forward of the
    same state (tested)."""
    work = write_state(bench, copy.deepcopy(bench.model), reset, mix)
    return fold_gates(work, bench.mask_tensor(np.asarray(mask, dtype=np.int8)))


@dataclass(frozen=True)
class EpisodeStateOptions(DefenseOptions):
    """The options of :class:`EpisodeStateDefense` (the lengths of the flag lists are checked against the
    workbench's heads and blocks when the defense runs)."""

    mask: list[int] | None = option(None, "L * H flags, 1 = head kept (head (l, h) at l * H + h); None: all kept",
                                    low=0, high=1)
    reset: list[int] | None = option(None, "L * H flags, 1 = head reset to the base; None: none reset", low=0, high=1)
    mix: list[int] | None = option(None, "B mixing levels in [0, mix_levels], one per block; None: none mixed",
                                   low=0)
    mix_levels: int = option(10, "the levels of a block's mix (level k mixes with probability k / mix_levels)",
                             low=1, high=255)
    seed: int | None = option(None, "the env's seed (the mix's draws); None: the workbench's seed", low=0)


class EpisodeStateDefense(Defense):
    """A fixed state of ``HeadPrune-v0`` as a defense: its mask, and :class:`StateEdit` (reset heads, mixed blocks)
    as its weight edit; ``defend``'s fine-tune follows. Build it with :meth:`from_env` (an episode's best state) or
    from the options. Sees nothing but the options, the suspect and the public reference.

    Options: ``mask`` and ``reset`` (``L * H`` 0/1 flags, head ``(l, h)`` at ``l * H + h``; default: every head
    active, none reset), ``mix`` (``B`` levels in ``[0, mix_levels]``; default: none mixed), ``mix_levels`` (10) and
    ``seed`` (the env's ``HeadPruneConfig.seed``: the mix's draws; default: the workbench's seed).
    """

    name = "episode-state"
    description = "a HeadPrune-v0 episode's state: its pruned heads, reset heads and per-block mix toward the base"
    options_class = EpisodeStateOptions
    needs_base = True
    holds_floor = False  # the env held the floor on its own validation rows, not necessarily on this workbench's

    @classmethod
    def from_env(cls, env: Any, which: str = "best") -> EpisodeStateDefense:
        """The state of ``env`` (a :class:`~headprune.envs.headprune_env.HeadPruneEnv`): ``"best"`` (the episode's
        ``info["best_*"]``) or ``"current"``."""
        mask, reset, mix = env.state(which)
        return cls(mask=mask.tolist(), reset=reset.tolist(), mix=mix.tolist(), mix_levels=env.config.mix_levels,
                   seed=env.bench.base_seed)

    def _flags(self, key: str, size: int, default: int, top: int) -> np.ndarray:
        """Option ``key`` as ``[size]`` int64 in ``[0, top]``; ValueError naming it otherwise."""
        value = getattr(self.option_values, key)
        if value is None:
            return np.full(size, default, np.int64)
        items = list(value) if isinstance(value, (list, tuple, np.ndarray)) else None
        if items is None or len(items) != size or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= top for v in items):
            raise ValueError(f"{self.name} option {key} must be {size} integers in [0, {top}], got {value!r}")
        return np.asarray(items, np.int64)

    def prune(self, bench: Workbench, *, progress: bool = False) -> DefenseOutcome:
        levels, seed = self.option_values.mix_levels, self.option_values.seed  # typed and ranged at construction
        L, H = bench.head_shape
        mask = self._flags("mask", L * H, 1, 1)
        reset = self._flags("reset", L * H, 0, 1)
        if bool(((mask == 0) & (reset == 1)).any()):
            raise ValueError(f"{self.name}: a head cannot be both pruned and reset (options mask and reset)")
        mixer = _mixer_of(bench, self.reference(bench), levels, bench.base_seed if seed is None else seed)
        mix = self._flags("mix", mixer.num_blocks, 0, levels)
        _, trajectory, _ = unpruned_outcome(bench)
        details = {"heads_pruned": int(L * H - mask.sum()), "heads_reset": int(reset.sum()),
                   "mix_levels": mix.tolist(), "mix_blocks": list(mixer.names), "mix_seed": mixer.seed}
        edit = StateEdit(mixer, torch.from_numpy(reset != 0).view(L, H), mix)
        return DefenseOutcome(torch.from_numpy(mask.astype(np.float32)).view(L, H), trajectory, details, edit)
