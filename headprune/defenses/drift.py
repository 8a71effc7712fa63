"""The weight-drift defense: prune or reset the heads that moved most from the public pre-trained reference.

A backdoor is written during fine-tuning, so the heads whose weights moved most from the pre-trained
model (:func:`~headprune.engine.reference.head_weight_drift`, the relative Frobenius distance of a head's Q/K/V
rows and output-projection columns) are the first suspects. The reference is public and carries no
trigger knowledge; the floor is checked on the defender's clean validation rows only.

:func:`reset_until_floor` is the one "reset heads in a given order until the floor or the budget" search
(also used by :mod:`~headprune.defenses.finepurify`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import nn

from headprune.defenses.base import DEFENSES, DefenseOutcome, unpruned_outcome, validation_rows
from headprune.defenses.defense_options import DefenseOptions, option
from headprune.defenses.scripted import PolicyDefense, ScriptedPolicy
from headprune.defenses.weight_edits import HeadReset
from headprune.envs.headprune_env import HeadPruneEnv
from headprune.workbench import Workbench
from headprune.engine.evaluator import Evaluator
from headprune.engine.reference import head_weight_drift, reset_heads

__all__ = ["OPERATIONS", "DriftDefense", "DriftOptions", "DriftPolicy", "descending_order", "reset_until_floor"]

DriftOperation = Literal["prune", "reset"]
"""What the drift defense does to a chosen head: gate it off, or copy the reference's weights into it."""
OPERATIONS: tuple[str, ...] = get_args(DriftOperation)


def descending_order(scores: torch.Tensor) -> list[int]:
    """Flat head indices ``l * H + h`` of an ``[L, H]`` score, highest first, ties to the lowest index."""
    flat = scores.reshape(-1).double().numpy()
    return [int(i) for i in np.argsort(-flat, kind="stable")]


def reset_until_floor(bench: Workbench, base: nn.Module, order: Sequence[int], *, label: str = "reset",
                      progress: bool = False) -> tuple[torch.Tensor, list[dict[str, Any]], str]:
    """Reset heads to the reference one at a time in ``order`` (flat indices) on a deep copy of the victim,
    scoring validation accuracy after each (all heads kept, the workbench's validation rows and floor), until
    the workbench's budget or the first reset that falls below the floor, which is undone (the workbench's rule: the
    last state at or above the floor).

    :return: ``[L, H]`` bool of the heads reset, the trajectory ``[{"heads_pruned": 0, "heads_reset",
        "head", "accuracy", "mask"}]`` (starting with the untouched model) and how it ended (``"floor"``,
        ``"budget"`` or ``"order done"``).
    """
    from tqdm.auto import tqdm

    L, H = bench.num_layers, bench.num_heads
    work = copy.deepcopy(bench.model)
    evaluator = Evaluator(work, bench.tokenizer, validation_rows(bench), batch_size=bench.config.eval_batch_size,
                          max_length=bench.max_length)
    chosen = torch.zeros(L, H, dtype=torch.bool)
    kept = [1] * (L * H)
    trajectory = [{"heads_pruned": 0, "heads_reset": 0, "head": None, "accuracy": bench.start_score.accuracy,
                   "mask": kept}]
    end = "budget" if len(order) >= bench.budget else "order done"
    for flat in tqdm(list(order)[:bench.budget], desc=label, disable=not progress, leave=False):
        step = torch.zeros(L, H, dtype=torch.bool)
        step[flat // H, flat % H] = True
        reset_heads(work, base, step)
        accuracy = evaluator.accuracy()
        trajectory.append({"heads_pruned": 0, "heads_reset": int(chosen.sum()) + 1, "head": [flat // H, flat % H],
                           "accuracy": accuracy, "mask": kept})
        if accuracy < bench.accuracy_floor:
            end = "floor"
            break
        chosen |= step
    return chosen, trajectory, end


class DriftPolicy(ScriptedPolicy):
    """Prune the active head of largest weight drift from the reference (ties to the lowest index).

    :param drift: ``[L, H]`` weight drift (:func:`~headprune.engine.reference.head_weight_drift`).
    """

    name = "drift"
    needs_base = True

    def __init__(self, *args: Any, drift: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drift = drift.reshape(-1).double().numpy()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "drift": self.drift.reshape(self.shape).tolist()}

    def choose(self, mask: np.ndarray, valid: np.ndarray) -> int:
        return self._argmin(-self.drift, valid)


@dataclass(frozen=True)
class DriftOptions(DefenseOptions):
    """The options of ``drift``."""

    operation: DriftOperation = option("prune", "what is done to the most-drifted heads: gate them off, "
                                                           "or copy the reference's weights into them")


@DEFENSES.register("drift")
class DriftDefense(PolicyDefense):
    """Prune (``operation="prune"``, the default) or reset (``"reset"``) heads in order of weight drift from
    the public pre-trained reference, most-drifted first, until the workbench's floor (validation accuracy) or
    its budget; then the protocol's clean fine-tune.

    ``prune`` runs :class:`DriftPolicy` in the env (the workbench's floor and budget, as every pruning policy);
    ``reset`` uses :func:`reset_until_floor` (a weight edit: the reset heads get the reference's Q/K/V
    rows and output-projection columns, applied to the victim's copy by ``defend``). Not from a paper: the
    issue's measurement (drift as a trigger-agnostic ranking); drift is computed once, on the unpruned
    victim (resets of other heads do not change a head's drift).

    Options: :class:`DriftOptions` (``operation``: ``"prune"`` | ``"reset"``).
    """

    name = "drift"
    description = "prune or reset heads in order of weight drift from the pre-trained reference"
    options_class = DriftOptions
    option_values: DriftOptions

    def _drift(self, bench: Workbench) -> tuple[nn.Module, torch.Tensor]:
        base = self.reference(bench)
        return base, head_weight_drift(bench.model, base)

    def build_policy(self, env: HeadPruneEnv) -> DriftPolicy:
        _, drift = self._drift(env.bench)
        bench = env.bench
        return DriftPolicy(bench.model, bench.tokenizer, bench.train_data, bench.base_seed, max_length=bench.max_length,
                           drift=drift)

    def prune(self, bench: Workbench, *, progress: bool = False) -> DefenseOutcome:
        if self.option_values.operation == "prune":
            mask, trajectory, details = super().prune(bench, progress=progress)
            return DefenseOutcome(mask, trajectory, {**details, "operation": "prune"})
        base, drift = self._drift(bench)
        heads, trajectory, end = reset_until_floor(bench, base, descending_order(drift), label="reset (drift)",
                                                   progress=progress)
        mask = unpruned_outcome(bench)[0]
        details = {"operation": "reset", "episode_end": end, "drift": drift.tolist()}
        return DefenseOutcome(mask, trajectory, details, HeadReset(base, heads))
