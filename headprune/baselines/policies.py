"""Scripted head-pruning policies with the Stable-Baselines3 call shape.

Every policy is built from what a defender owns, ``(model, tokenizer, clean_data, seed, **options)``
(never poisoned data), and answers ``predict(obs, state=None, episode_start=None, deterministic=True,
action_masks=None) -> (action, state)`` like an SB3 model, so one evaluation loop runs them and trained
agents inside ``HeadPrune-v0``. A policy reads the current mask from ``obs["mask"]`` (1 = active) and
only ever returns an active head that ``action_masks`` (if given) allows; a batched observation
(``mask`` of shape ``[n_envs, n]``) gets an array of actions. Stopping is the environment's rule: the
env terminates when validation accuracy falls below the floor and ``info["best_mask"]`` never includes
the crossing step, so no policy here needs to (or may) monitor accuracy itself, except the ensemble,
whose members are themselves masks that must respect the floor.

Rankings: every deterministic policy ranks heads by a score, prunes the lowest-scoring active head and
breaks ties by the lowest index ``l * H + h``. See each class for its score and for where it differs
from the authors' public code (``chapagaisa/grad``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from headprune.data import LabelledTexts
from headprune.evaluator import Evaluator
from headprune.gating import head_grid_shape
from headprune.head_stats import compute_head_stats
from headprune.training import FineTuneConfig, fine_tune

from headprune.baselines.importance import gate_gradient_importance, group_lasso_penalty, head_group_norms

__all__ = [
    "EnsemblePolicy",
    "EpsilonGreedyPolicy",
    "GradientPolicy",
    "LayerwiseVariancePolicy",
    "MCDropoutPolicy",
    "RandomPolicy",
    "ScriptedPolicy",
    "SparsificationPolicy",
    "layer_rates",
]


def _rows(data: LabelledTexts, n_rows: int | None, seed: int) -> LabelledTexts:
    """At most ``n_rows`` seeded rows of ``data`` (kept in their original order)."""
    if n_rows is None or n_rows >= len(data):
        return data
    idx = np.sort(np.random.default_rng(seed).permutation(len(data))[:n_rows])
    return data.subset(idx)


class ScriptedPolicy:
    """Base class: the SB3 ``predict`` shape over a per-policy :meth:`choose`.

    Args:
        model: the victim classifier (read only; policies that train work on a deep copy).
        tokenizer: its tokenizer.
        clean_data: the defender's clean labelled rows (never poisoned data).
        seed: fixes every random choice of the policy.
        max_length: truncation length (the victim's).
        batch_size: rows per forward of the policy's own scoring passes.
        n_rows: at most this many seeded clean rows are used for scoring (``None``: all).
    """

    name: ClassVar[str] = "base"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, clean_data: LabelledTexts, seed: int = 0, *,
                 max_length: int = 128, batch_size: int = 32, n_rows: int | None = 256) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.clean_data = clean_data
        self.seed = int(seed)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.rows = _rows(clean_data, n_rows, self.seed)
        self.shape: tuple[int, int] = head_grid_shape(model)
        self.n = self.shape[0] * self.shape[1]

    # the number of heads the method itself plans to prune (None: no plan of its own; the env's budget)
    planned_budget: int | None = None

    def reset(self) -> None:
        """Forget per-episode state (the random policies restart their generator)."""

    def config(self) -> dict[str, Any]:
        """The options that define this policy (for reports)."""
        return {"name": self.name, "seed": self.seed, "n_rows": len(self.rows), "max_length": self.max_length}

    def choose(self, mask: np.ndarray, valid: np.ndarray) -> int:
        """Index of the head to prune, given the flat int8 ``mask`` and the bool ``valid`` actions."""
        raise NotImplementedError

    def predict(self, observation: Mapping[str, Any] | np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True, action_masks: Any = None) -> tuple[Any, Any]:
        """SB3's ``predict``: ``(action, state)``. ``deterministic`` is accepted and ignored (a seeded
        policy is deterministic either way); ``state`` is passed through."""
        mask = np.asarray(observation["mask"] if isinstance(observation, Mapping) else observation)
        if mask.ndim == 2:
            am = None if action_masks is None else np.asarray(action_masks).reshape(mask.shape)
            actions = np.array([self._act(mask[i], None if am is None else am[i]) for i in range(mask.shape[0])],
                               dtype=np.int64)
            return actions, state
        return np.int64(self._act(mask, action_masks)), state

    def _act(self, mask: np.ndarray, action_masks: Any) -> int:
        flat = np.asarray(mask).reshape(-1).astype(np.int8)
        if flat.size != self.n:
            raise ValueError(f"observation mask has {flat.size} heads, the model has {self.n}")
        valid = flat == 1
        if action_masks is not None:
            valid &= np.asarray(action_masks, dtype=bool).reshape(-1)
        if not valid.any():
            raise RuntimeError("no active head left to prune")
        action = int(self.choose(flat, valid))
        assert valid[action], "policy chose an invalid head"
        return action

    def _mask_tensor(self, flat: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(flat.astype(np.float32)).view(*self.shape)

    @staticmethod
    def _argmin(scores: np.ndarray, valid: np.ndarray) -> int:
        """Lowest score among valid heads, ties to the lowest index."""
        return int(np.argmin(np.where(valid, scores, np.inf)))


class RandomPolicy(ScriptedPolicy):
    """A uniformly random active head, from ``np.random.default_rng(seed)`` (restarted by :meth:`reset`)."""

    name = "random"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("n_rows", 0)
        super().__init__(*args, **kwargs)
        self.rng = np.random.default_rng(self.seed)

    def reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def choose(self, mask: np.ndarray, valid: np.ndarray) -> int:
        return int(self.rng.choice(np.flatnonzero(valid)))


class _ReestimatingPolicy(ScriptedPolicy):
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


class GradientPolicy(_ReestimatingPolicy):
    """Prune the active head of least gate-gradient importance (Michel et al., 2019) on the defender's
    clean rows, re-estimated under the current mask every ``reestimate_every`` pruned heads (default 1:
    after every head).

    Importance is :func:`~headprune.baselines.importance.gate_gradient_importance`, one gate per head.
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


class MCDropoutPolicy(_ReestimatingPolicy):
    """Bayesian uncertainty by MC dropout: ``passes`` (T) gate-gradient importance passes with dropout
    REALLY active (the model in train mode while the gradients flow to the gates; pass ``t`` of estimate
    ``e`` seeds its dropout masks with ``(seed, e, t)``), then rank by the upper confidence bound
    ``mu + kappa * sigma`` of each head's importance (``sigma`` the sample std over the T passes) and
    prune the lowest: a head is pruned only when it looks unimportant even in the optimistic case, so a
    head with a low mean but large uncertainty (important for some dropout sub-networks) is kept longer.
    The T passes of the last estimate are in :attr:`last_passes` ``[T, L, H]``.

    Differs from the authors' code, whose "MC dropout" left the model in eval mode, so every pass was
    the same and the "uncertainty" was zero.
    """

    name = "mcdropout"

    def __init__(self, *args: Any, passes: int = 8, kappa: float = 1.0, reestimate_every: int = 4,
                 **kwargs: Any) -> None:
        super().__init__(*args, reestimate_every=reestimate_every, **kwargs)
        if passes < 2:
            raise ValueError(f"MC dropout needs at least 2 passes, got {passes}")
        self.passes = int(passes)
        self.kappa = float(kappa)
        self.last_passes: torch.Tensor | None = None

    def config(self) -> dict[str, Any]:
        return {**super().config(), "passes": self.passes, "kappa": self.kappa}

    def sample(self, mask: np.ndarray) -> torch.Tensor:
        """``[T, L, H]`` importance of T dropout passes under ``mask``."""
        m = self._mask_tensor(mask)
        seeds = [int(np.random.SeedSequence([self.seed, self.estimates, t]).generate_state(1)[0])
                 for t in range(self.passes)]
        return torch.stack([gate_gradient_importance(self.model, self.tokenizer, self.rows, mask=m, dropout=True,
                                                     seed=s, batch_size=self.batch_size, max_length=self.max_length)
                            for s in seeds])

    def estimate(self, mask: np.ndarray) -> np.ndarray:
        passes = self.sample(mask).double()
        self.last_passes = passes.float()
        ucb = passes.mean(0) + self.kappa * passes.std(0, correction=1)
        return ucb.reshape(-1).numpy()


def layer_rates(num_layers: int) -> list[float]:
    """The per-layer pruning rates of the paper's layer-wise strategy: linear from 20 % (first layer)
    to 80 % (last layer), ``0.2 + 0.6 * l / (L - 1)`` (a single layer gets 20 %)."""
    if num_layers == 1:
        return [0.2]
    return [0.2 + 0.6 * layer / (num_layers - 1) for layer in range(num_layers)]


def _pure_variance(policy: ScriptedPolicy) -> np.ndarray:
    """PURE's [CLS]-attention variance of the unpruned model on the policy's rows, flat ``[n]``."""
    stats = compute_head_stats(policy.model, policy.tokenizer, policy.rows, batch_size=policy.batch_size,
                               max_length=policy.max_length)
    return stats.cls_attention_variance.reshape(-1).double().numpy()


class LayerwiseVariancePolicy(ScriptedPolicy):
    """Layer-wise variance pruning: in layer ``l`` prune the ``min(floor(H * r_l), H - 1)`` heads of
    lowest PURE [CLS]-attention variance (:func:`~headprune.head_stats.compute_head_stats`, computed
    once on the unpruned model), with the rates :func:`layer_rates` (20 % -> 80 %, deeper layers more;
    at least one head kept per layer). The planned heads are emitted in ascending variance across
    layers (:attr:`planned_budget` of them); past the plan it falls back to the lowest-variance active
    head. PURE (and this) prunes LOW variance first and keeps the highest-variance head of a layer.

    Differs from the authors' code only in stopping: theirs applied the whole layer-wise mask and just
    printed the validation accuracy; here the env stops before the floor is crossed, as the paper states.
    """

    name = "layerwise"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        L, H = self.shape
        self.variance = _pure_variance(self)
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

    def choose(self, mask: np.ndarray, valid: np.ndarray) -> int:
        return self._argmin(self._scores, valid)


class SparsificationPolicy(ScriptedPolicy):
    """Gradient + structured L1/L2 sparsification: a short clean fine-tune of a DEEP COPY with the group
    lasso ``lam * sum_{l,h} ||theta_{l,h}||_2`` added to the loss (each group a head's Q/K/V rows and
    biases plus its output-projection columns; :func:`~headprune.baselines.importance.group_lasso_penalty`
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

    def choose(self, mask: np.ndarray, valid: np.ndarray) -> int:
        return self._argmin(self._scores, valid)


class EnsemblePolicy(ScriptedPolicy):
    """Randomized ensemble: ``n_members`` seeded random masks, each built by pruning heads in a random
    order (member ``m`` uses ``default_rng([seed, m])``) while the accuracy on the defender's clean rows
    stays at or above the floor ``acc_0 - max_accuracy_drop`` (the member stops before the first head
    that would cross it) and at most ``budget`` heads; so every member respects the floor by
    construction (:attr:`member_accuracies`). Combination rule: a head is pruned when a strict majority
    of members (more than ``n_members / 2``) pruned it; these heads (:attr:`planned_budget`) are emitted
    by descending vote, ties by index, then the other heads by descending vote. The env still checks
    the combined mask against its own floor one head at a time.
    """

    name = "ensemble"

    def __init__(self, *args: Any, n_members: int = 5, max_accuracy_drop: float = 0.05,
                 budget: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}")
        self.n_members, self.max_accuracy_drop = int(n_members), float(max_accuracy_drop)
        self.budget = self.n // 2 if budget is None else int(budget)
        ev = Evaluator(self.model, self.tokenizer, self.rows, batch_size=max(self.batch_size, 64),
                       max_length=self.max_length)
        self.base_accuracy = ev.accuracy()
        self.floor = self.base_accuracy - self.max_accuracy_drop
        masks, accs = [], []
        for m in range(self.n_members):
            order = np.random.default_rng([self.seed, m]).permutation(self.n)
            flat = np.ones(self.n, dtype=np.int8)
            acc = self.base_accuracy
            for head in order[: self.budget]:
                trial = flat.copy()
                trial[head] = 0
                trial_acc = ev.accuracy(self._mask_tensor(trial))
                if trial_acc < self.floor:
                    break
                flat, acc = trial, trial_acc
            masks.append(flat)
            accs.append(acc)
        self.member_masks = np.stack(masks)  # [M, n] int8, 1 = active
        self.member_accuracies = accs
        self.votes = (1 - self.member_masks).sum(0)  # [n]
        self.majority = self.votes > self.n_members / 2
        self.planned_budget = int(self.majority.sum())
        self._scores = -self.votes.astype(float) + np.where(self.majority, 0.0, 0.5)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "n_members": self.n_members, "max_accuracy_drop": self.max_accuracy_drop,
                "budget": self.budget, "rule": "strict majority"}

    def choose(self, mask: np.ndarray, valid: np.ndarray) -> int:
        return self._argmin(self._scores, valid)


class EpsilonGreedyPolicy(ScriptedPolicy):
    """What the authors' code calls "RL-guided" pruning, kept for fidelity: with probability
    ``epsilon`` a uniformly random active head, otherwise the active head of lowest PURE [CLS]-attention
    variance (the head PURE would prune next), from ``np.random.default_rng(seed)``. Nothing is learnt:
    the authors' ``RLPruningAgent`` has no value function or update, so it IS epsilon-greedy over a
    fixed score; the trained agents of :mod:`headprune.agents` are the RL of this project.

    Differs from the authors' code in granularity and stopping: theirs flipped the coin once per chunk
    of ``prune_step`` (10) heads and returned the mask that had just fallen below the threshold; here
    the coin is flipped per head (the env's action) and the env's best mask excludes the crossing step.
    """

    name = "egreedy"

    def __init__(self, *args: Any, epsilon: float = 0.1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)
        self.variance = _pure_variance(self)
        self.rng = np.random.default_rng(self.seed)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "epsilon": self.epsilon}

    def reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def choose(self, mask: np.ndarray, valid: np.ndarray) -> int:
        if self.rng.random() < self.epsilon:
            return int(self.rng.choice(np.flatnonzero(valid)))
        return self._argmin(self.variance, valid)


POLICIES: dict[str, type[ScriptedPolicy]] = {
    cls.name: cls for cls in (RandomPolicy, GradientPolicy, LayerwiseVariancePolicy, SparsificationPolicy,
                              EnsemblePolicy, MCDropoutPolicy, EpsilonGreedyPolicy)
}
"""The pruning policies by name (the registry of :mod:`headprune.baselines.registry` wraps these)."""

