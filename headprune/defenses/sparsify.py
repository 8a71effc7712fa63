"""The sparsification defense: a group-lasso fine-tune of a copy ranks heads by their group norms."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from headprune.defenses.head_groups import group_lasso_penalty, head_group_norms
from headprune.defenses.base import DEFENSES
from headprune.defenses.defense_options import option
from headprune.defenses.scripted import ScriptedPolicy, ScriptedPolicyDefense, ScriptedPolicyOptions
from headprune.engine.head_stats import gate_gradient_importance
from headprune.engine.finetuning import FineTuneConfig, fine_tune

__all__ = ['SparsificationOptions', 'SparsificationPolicy', 'SparsificationPruning']


class SparsificationPolicy(ScriptedPolicy):
    """Gradient + structured L1/L2 sparsification: a short clean fine-tune of a DEEP COPY with the group
    lasso ``lam * sum_{l,h} ||theta_{l,h}||_2`` added to the loss (each group a head's Q/K/V rows and
    biases plus its output-projection columns; :func:`~headprune.defenses.head_groups.group_lasso_penalty`
    through ``fine_tune(regulariser=...)``), then prune heads in ascending order of their group norm in
    the sparsified copy. The copy only ranks heads: the env and the final fine-tune use the victim.

    Options: ``lam`` (default 1e-3), ``sparsity_epochs`` (1.0), ``lr`` (1e-4: at 2e-5 one short epoch
    moves the group norms too little to change their order), ``n_rows`` rows of clean data (default all),
    ``rank``: ``"norm"`` (default, the group norms) or ``"gradient"`` (gate-gradient importance of the
    sparsified copy, the "gradient +" reading).

    Differs from the authors' code (``Grad plus sparsification``), whose penalty was UNstructured
    (``1e-4 * (||W||_1 + ||W||_2)`` summed over every attention weight matrix, so no head is pushed to
    zero as a group) and whose ranking was their layer-tied gradient score (see :class:`GradientPolicy`).
    """

    name = "sparsify"

    def __init__(self, *args: Any, lam: float = 1e-3, sparsity_epochs: float = 1.0, lr: float = 1e-4,
                 max_steps: int | None = None, rank: str = "norm", progress: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("n_rows", None)
        super().__init__(*args, **kwargs)
        if rank not in ("norm", "gradient"):
            raise ValueError(f"rank must be 'norm' or 'gradient', got {rank!r}")
        self.rank = rank
        self.lam, self.sparsity_epochs, self.lr, self.max_steps = float(lam), float(sparsity_epochs), float(lr), max_steps
        sparse = copy.deepcopy(self.model)
        cfg = FineTuneConfig(epochs=self.sparsity_epochs, lr=self.lr, seed=self.seed, max_length=self.max_length,
                             batch_size=self.batch_size, max_steps=max_steps)
        self.log = fine_tune(sparse, self.tokenizer, self.rows, cfg,
                             regulariser=lambda m: self.lam * group_lasso_penalty(m),
                             progress="sparsify" if progress else False)
        self.norms_before = head_group_norms(self.model)
        self.norms = head_group_norms(sparse)
        if rank == "gradient":
            scores = gate_gradient_importance(sparse, self.tokenizer, self.rows, batch_size=self.batch_size,
                                              max_length=self.max_length)
        else:
            scores = self.norms
        self._scores = scores.reshape(-1).double().numpy()
        del sparse

    def config(self) -> dict[str, Any]:
        return {**super().config(), "lam": self.lam, "sparsity_epochs": self.sparsity_epochs, "lr": self.lr,
                "max_steps": self.max_steps, "rank": self.rank}


@dataclass(frozen=True)
class SparsificationOptions(ScriptedPolicyOptions):
    """The options of ``sparsify`` (:class:`SparsificationPolicy`)."""

    n_rows: int | None = option(None, "fine-tune the copy on at most this many seeded clean rows (None: all)", low=0)
    lam: float = option(1e-3, "weight of the group-lasso penalty", low=0.0)
    sparsity_epochs: float = option(1.0, "epochs of the sparsifying fine-tune of the copy", low=0.0)
    lr: float = option(1e-4, "learning rate of the sparsifying fine-tune", low=0.0, low_open=True)
    max_steps: int | None = option(None, "cap on the sparsifying fine-tune's steps (None: none)", low=1)
    rank: Literal["norm", "gradient"] = option("norm", "rank heads by their group norm or by the gate-gradient "
                                                       "importance of the sparsified copy")


@DEFENSES.register("sparsify")
class SparsificationPruning(ScriptedPolicyDefense):
    """Group-lasso fine-tune of a copy, prune the smallest head groups (:class:`SparsificationPolicy`)."""

    description = "group-lasso fine-tune of a copy, prune the smallest head groups"
    policy_class = SparsificationPolicy
    options_class = SparsificationOptions
    fast_options = {'max_steps': 3, 'n_rows': 64}
