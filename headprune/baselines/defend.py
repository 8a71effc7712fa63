"""``defend``: run one registered strategy on a victim and return a :class:`DefenseResult`.

Protocol (the paper's and PURE's):

1. **Split.** A :class:`~headprune.envs.headprune_env.HeadPruneEnv` is built on the victim and the
   defender's clean rows; its seeded split gives the *validation* rows (``env.eval_data``, the floor's
   rows) and the *training* rows (``env.train_data``: policies' scoring data and all fine-tuning). The
   floor is the env's (``max_accuracy_drop`` below the unpruned validation accuracy, or an absolute
   ``accuracy_floor``). Every strategy uses this one split, so rows are comparable across strategies.
2. **Prune.** A ``"prune"`` strategy's policy (built from ``(model, tokenizer, env.train_data, seed)``
   only; a :class:`PolicyStrategy` object such as a trained agent: from the env alone) acts in the env
   until it terminates (accuracy below the floor), truncates (budget), or the
   policy's own plan is exhausted (``planned_budget``: layer-wise rates, ensemble majority); the mask is
   ``info["best_mask"]``. The env runs with zero reward weights and the cheap ``pure_variance`` proxy,
   so its best mask is the LAST visited mask at or above the floor: "prune until the floor", the rule of
   the paper, enforced by the env and nowhere else. PURE prunes in chunks with backtracking on the
   env's validation accuracy and floor (:func:`pure_prune`).
3. **Fine-tune.** A deep copy of the victim is fine-tuned on ``env.train_data`` with the pruned heads
   held at zero (``fine_tune(mask=...)``, ``finetune_epochs`` epochs, default 3; 0 disables). PURE adds
   its attention-normalisation penalty; FT/FTH/MEFT fine-tune without pruning.
   The whole fine-tuning defenses: **FT** fine-tunes on the defender's clean rows (lr 2e-5); **FTH**
   the same with a higher learning rate (1e-4, five times FT's: a larger step is what lets fine-tuning
   leave the backdoor's basin; our choice of value); **MEFT** (maximum-entropy fine-tuning) first trains
   ``entropy_epochs`` (default 1) with the loss ``-H(p) = sum_c p_c log p_c`` (:func:`max_entropy_loss`,
   PURE's ``MaxEntropyLoss`` averaged over the batch instead of summed), which drives every prediction
   toward uniform and so erases the confident trigger -> target mapping, then recovers clean accuracy
   with ``finetune_epochs`` of cross-entropy (without the recovery phase the model would output
   uniform noise).
4. **Evaluate.** Only after the mask and the weights are fixed, :func:`~headprune.metrics.evaluate_defense`
   (the only place LFR is computed) scores the pruned victim and the pruned + fine-tuned model on the
   caller's evaluation data. Poisoned data is never passed to the env or to a policy, so the mask does
   not depend on whether it is given.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from headprune.baselines.policies import EnsemblePolicy
from headprune.baselines.registry import Strategy, get_strategy
from headprune.data import LabelledTexts, read_labelled_text
from headprune.envs.headprune_env import HeadPruneEnv
from headprune.evaluator import Evaluator
from headprune.export import save_pruned
from headprune.gating import find_attention_sites, pruned_from_mask
from headprune.head_stats import compute_head_stats, eager_attention
from headprune.metrics import evaluate_defense
from headprune.provenance import config_hash, environment_info
from headprune.training import FineTuneConfig, fine_tune
from headprune.victims import Victim, resolve_victim

__all__ = ["DefenseResult", "PolicyStrategy", "PureAttentionRegulariser", "defend", "max_entropy_loss",
           "pure_norm_coefficients", "pure_prune"]


# ------------------------------------------------------------------------------------------ result
@dataclass
class DefenseResult:
    """What :func:`defend` did.

    Attributes:
        strategy, seed: what ran.
        mask: ``[L, H]`` float mask, 1 = kept.
        model: the cleaned model (a deep copy; the victim is untouched). Pruned heads are still in its
            weights: gate them with ``mask`` or export with :meth:`save_model` (``save_pruned``).
        tokenizer: its tokenizer.
        validation: accuracies on the defender's validation rows: ``start``, ``pruned``, ``final``, and
            the ``floor``.
        metrics: ``{"pruned": EvalReport dict, "final": ...}`` from ``evaluate_defense`` on the caller's
            evaluation data (empty when none was given); ``lfr`` only with poisoned evaluation data.
        trajectory: ``[{"heads_pruned", "accuracy", "mask"}]`` as pruning went (validation accuracy).
        curve: optional ``[{"heads_pruned", "acc", "lfr"}]``: ``evaluate_defense`` of the pruned victim
            at points of the trajectory, computed after the defense was fixed (for plots).
        timings: seconds per phase.
        config: every option that defines the run (``config_hash`` keys resumable benchmarks).
        versions: :func:`~headprune.provenance.environment_info`.
    """

    strategy: str
    seed: int
    mask: torch.Tensor
    model: nn.Module
    tokenizer: Any
    validation: dict[str, float]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def heads_pruned(self) -> int:
        return int((self.mask == 0).sum())

    @property
    def pruned_heads(self) -> dict[int, list[int]]:
        return pruned_from_mask(self.mask)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (no model)."""
        return {
            "strategy": self.strategy,
            "seed": self.seed,
            "heads_pruned": self.heads_pruned,
            "pruned_heads": {str(k): v for k, v in self.pruned_heads.items()},
            "mask": self.mask.int().tolist(),
            "validation": self.validation,
            "metrics": self.metrics,
            "trajectory": self.trajectory,
            "curve": self.curve,
            "timings": self.timings,
            "config": self.config,
            "config_hash": config_hash(self.config),
            "details": self.details,
            "versions": self.versions,
        }

    def save_model(self, out_dir: str | os.PathLike[str]) -> Path:
        """Export the cleaned model with its heads pruned (:func:`~headprune.export.save_pruned`)."""
        return save_pruned(self.model, self.mask, out_dir, tokenizer=self.tokenizer,  # type: ignore[arg-type]
                           source=f"headprune defend --strategy {self.strategy}")


# ------------------------------------------------------------------------------------------ strategy objects
@runtime_checkable
class PolicyStrategy(Protocol):
    """A ``"prune"`` strategy given to :func:`defend` as an object instead of a registry name (e.g. a
    trained agent, :class:`headprune.agents.AgentStrategy`); it runs the same protocol as the baselines.

    Attributes:
        name: the strategy name in reports.
        description: one line for reports.
    """

    name: str
    description: str

    def build(self, env: HeadPruneEnv) -> Any:
        """The policy for ``env``: an object with SB3's ``predict(obs, state, episode_start,
        deterministic, action_masks)``, built from the env (its spaces and the defender's data) only."""
        ...

    def config(self) -> dict[str, Any]:
        """The options that define this strategy (JSON-ready; part of the run's config hash)."""
        ...


@dataclass
class _GivenPolicy:
    """A :class:`PolicyStrategy` around a ready policy object (anything with SB3's ``predict``, e.g.
    :func:`headprune.agents.load_policy`'s result); its ``name``, ``description`` and ``config()`` are
    used when it has them."""

    policy: Any

    @property
    def name(self) -> str:
        return str(getattr(self.policy, "name", type(self.policy).__name__))

    @property
    def description(self) -> str:
        return str(getattr(self.policy, "description", f"policy object {type(self.policy).__name__}"))

    def build(self, env: HeadPruneEnv) -> Any:
        return self.policy

    def config(self) -> dict[str, Any]:
        config = getattr(self.policy, "config", None)
        return dict(config()) if callable(config) else {"class": type(self.policy).__name__}


# ------------------------------------------------------------------------------------------ PURE
def pure_prune(variance: torch.Tensor, accuracy: Callable[[torch.Tensor], float], floor: float, *,
               chunk: int = 10, max_heads: int | None = None) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """PURE's head pruning (``PURE/attention_head_pruning.py``, ``prune_heads_by_variance``).

    Heads are sorted by ascending [CLS]-attention variance and pruned ``chunk`` at a time. After each
    chunk, a layer left with no head gets back its highest-variance head (PURE keeps one head per layer).
    If the validation ``accuracy(mask)`` is below ``floor``, the heads of the current chunk are restored
    one at a time, highest variance first, until the accuracy is back at or above the floor, and pruning
    STOPS there (PURE does not try further chunks after backtracking). A chunk whose accuracy passes
    is kept and the next chunk follows.

    Differences from PURE's code: PURE first fine-tunes its victim (a poisoned PRE-TRAINED encoder) on
    clean data and scores that; our victims are already fine-tuned classifiers, so :func:`defend` scores
    the victim directly, on the env's statistics rows (PURE: its validation rows) and checks accuracy on
    the env's validation rows; the floor is the env's (an absolute 0.85 in PURE); if a chunk is fully
    restored, we stop with the previous mask (PURE would index an empty list: its emptiness check tests
    a dict that is never empty); ``max_heads`` caps the total (PURE: none).

    Returns:
        the mask ``[L, H]`` and a trace of every evaluated mask (``heads_pruned``, ``accuracy``, ``mask``,
        ``event``: ``"chunk"`` or ``"backtrack"``).
    """
    L, H = variance.shape
    var = variance.detach().double().cpu()
    order = sorted(((layer, h) for layer in range(L) for h in range(H)), key=lambda lh: (float(var[lh]), lh))
    mask = torch.ones(L, H)
    trace: list[dict[str, Any]] = []
    cap = L * H if max_heads is None else int(max_heads)

    def record(m: torch.Tensor, acc: float, event: str) -> None:
        trace.append({"heads_pruned": int((m == 0).sum()), "accuracy": acc, "event": event,
                      "mask": m.reshape(-1).int().tolist()})

    for start in range(0, len(order), chunk):
        trial = mask.clone()
        current = [lh for lh in order[start:start + chunk] if trial[lh] == 1]
        for lh in current:
            trial[lh] = 0
        for layer in range(L):  # keep the highest-variance head of an emptied layer
            if trial[layer].sum() == 0:
                keep = max(range(H), key=lambda h: (float(var[layer, h]), -h))
                trial[layer, keep] = 1
                if (layer, keep) in current:
                    current.remove((layer, keep))
        while int((trial == 0).sum()) > cap and current:  # budget: drop the highest-variance heads
            lh = max(current, key=lambda x: float(var[x]))
            trial[lh] = 1
            current.remove(lh)
        if not current:
            break
        acc = accuracy(trial)
        record(trial, acc, "chunk")
        if acc >= floor:
            mask = trial
            if int((mask == 0).sum()) >= cap:
                break
            continue
        # backtrack: restore the chunk's heads, highest variance first, until the floor holds
        for lh in sorted(current, key=lambda x: (-float(var[x]), x))[:-1]:
            trial[lh] = 1
            acc = accuracy(trial)
            record(trial, acc, "backtrack")
            if acc >= floor:
                mask = trial
                break
        break
    return mask, trace


def pure_norm_coefficients(model: nn.Module, tokenizer: Any, texts: LabelledTexts, mask: torch.Tensor, *,
                           max_length: int = 128) -> torch.Tensor:
    """PURE's per-layer attention-normalisation weights ``[L]``.

    PURE (``compute_norm_coefficient`` then ``coefficient_normalization_variance``): ``c_l`` = the mean
    [CLS]-attention variance of layer ``l``'s remaining heads on clean rows under the pruned model;
    ``w = softmax(-log c)`` (i.e. ``(1/c_l) / sum_k 1/c_k``), then min-max scaled to ``[0, 1]`` (all
    ones if the weights are equal). Layers whose [CLS] attention is flat (low variance) get the largest
    weight. We average over examples (PURE over batches).
    """
    stats = compute_head_stats(model, tokenizer, texts, mask=mask, max_length=max_length)
    active = (mask != 0).double()
    c = (stats.cls_attention_variance.double() * active).sum(1) / active.sum(1).clamp(min=1)
    c = c.clamp(min=1e-30)
    w = torch.softmax(-torch.log(c), dim=0)
    span = float(w.max() - w.min())
    return torch.ones_like(w).float() if span <= 0 else ((w - w.min()) / span).float()


class PureAttentionRegulariser:
    """PURE's attention-normalisation penalty (``AttentionRegularizationLoss``, norm ``"l2"``) as a
    ``fine_tune`` regulariser: ``penalty * sum_l w_l * sum_h sqrt(sum_{b, k} a[b, h, 0, k]^2)``, the
    L2 norm of each head's [CLS] attention row over the batch, weighted per layer by
    :func:`pure_norm_coefficients`. Minimising it spreads [CLS] attention out (a concentrated row has a
    large L2 norm), which is what stops a head from locking onto a trigger.

    The attention weights of the current forward are captured by forward hooks on the attention blocks
    (eager attention is switched on inside the ``with`` block, the only implementation that returns
    them); pruned heads are excluded (PURE removes them physically). Like PURE, the term is a sum over
    the batch (not a mean), so its weight depends on the batch size (PURE: 32).
    """

    def __init__(self, model: nn.Module, mask: torch.Tensor, coefficients: torch.Tensor, penalty: float = 0.15) -> None:
        self.model = model
        self.mask = mask.detach().float()
        self.coefficients = coefficients.detach().float()
        self.penalty = float(penalty)
        self._captured: dict[int, torch.Tensor] = {}
        self._handles: list[Any] = []
        self._eager: Any = None

    def __enter__(self) -> PureAttentionRegulariser:
        self._eager = eager_attention(self.model)
        self._eager.__enter__()
        for site in find_attention_sites(self.model):
            self._handles.append(site.attention.register_forward_hook(self._hook(site.layer)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._captured.clear()
        if self._eager is not None:
            self._eager.__exit__(None, None, None)
            self._eager = None

    def _hook(self, layer: int) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: Any, output: Any) -> None:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise RuntimeError("attention block returned no weights; PURE's penalty needs eager attention")
            self._captured[layer] = weights
        return hook

    def __call__(self, model: nn.Module) -> torch.Tensor:
        if not self._captured:
            raise RuntimeError("no attention captured: use the regulariser inside its `with` block")
        total = torch.zeros((), device=next(model.parameters()).device)
        for layer, att in self._captured.items():
            cls_rows = att[:, :, 0, :]  # [B, H, T]
            per_head = torch.sqrt((cls_rows * cls_rows).sum(dim=(0, 2)) + 1e-12)  # [H]
            keep = self.mask[layer].to(per_head.device)
            total = total + self.coefficients[layer].to(per_head.device) * (per_head * keep).sum()
        self._captured.clear()
        return self.penalty * total


def max_entropy_loss(logits: torch.Tensor, _labels: torch.Tensor) -> torch.Tensor:
    """MEFT's loss: the negative entropy of the predictive distribution, ``mean_b sum_c p log p``
    (PURE's ``MaxEntropyLoss`` sums over the batch; the mean keeps the learning-rate scale of CE)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return (logp.exp() * logp).sum(-1).mean()


# ------------------------------------------------------------------------------------------ defend
def _as_texts(data: LabelledTexts | str | os.PathLike[str] | None) -> LabelledTexts | None:
    if data is None or isinstance(data, LabelledTexts):
        return data
    return read_labelled_text(data)


def _run_policy(spec: Strategy, env: HeadPruneEnv, victim: Victim, seed: int, options: Mapping[str, Any],
                progress: bool, builder: PolicyStrategy | None = None
                ) -> tuple[torch.Tensor, list[dict[str, Any]], dict[str, Any]]:
    """Build the policy (from the defender's rows, or ``builder.build(env)``) and run one episode;
    returns (mask, trajectory, details)."""
    if builder is not None:
        policy = builder.build(env)
    else:
        assert spec.policy is not None
        kwargs = {**spec.defaults, **options}
        if issubclass(spec.policy, EnsemblePolicy):
            kwargs.setdefault("budget", env.budget)
            kwargs.setdefault("max_accuracy_drop", env.start_score.accuracy - env.accuracy_floor)
        policy = spec.policy(victim.model, victim.tokenizer, env.train_data, seed, max_length=env.max_length, **kwargs)
    obs, info = env.reset(seed=seed)
    trajectory = [{"heads_pruned": 0, "accuracy": info["clean_accuracy"], "mask": obs["mask"].tolist()}]
    planned = getattr(policy, "planned_budget", None)
    end = "truncated"
    if planned is not None and planned == 0:
        end = "plan empty"
    else:
        from tqdm.auto import tqdm
        bar = tqdm(total=env.budget if planned is None else min(planned, env.budget), desc=f"prune ({spec.name})",
                   disable=not progress, leave=False)
        while True:
            action, _ = policy.predict(obs, action_masks=env.action_masks(), deterministic=True)
            obs, _reward, terminated, truncated, info = env.step(action)
            bar.update(1)
            trajectory.append({"heads_pruned": info["heads_pruned"], "accuracy": info["clean_accuracy"],
                               "mask": obs["mask"].tolist()})
            if terminated:
                end = "floor"
                break
            if truncated:
                break
            if planned is not None and info["heads_pruned"] >= planned:
                end = "plan done"
                break
        bar.close()
    mask = torch.from_numpy(info["best_mask"].astype(np.float32)).view(env.num_layers, env.num_heads)
    details = {"policy": builder.config() if builder is not None else policy.config(), "episode_end": end,
               "best_accuracy": info["best_accuracy"]}
    for attr in ("member_accuracies", "floor", "planned_budget", "estimates"):
        if hasattr(policy, attr) and getattr(policy, attr) is not None:
            details[attr] = getattr(policy, attr)
    return mask, trajectory, details


def defend(
    victim: Victim | str | os.PathLike[str],
    clean_data: LabelledTexts | str | os.PathLike[str] | None = None,
    strategy: str | PolicyStrategy | Any = "gradient",
    seed: int = 0,
    *,
    finetune_epochs: float = 3.0,
    finetune_lr: float | None = None,
    finetune_max_steps: int | None = None,
    batch_size: int = 32,
    max_accuracy_drop: float | None = None,
    accuracy_floor: float | None = None,
    budget: int | None = None,
    eval_size: int = 256,
    stats_size: int = 256,
    options: Mapping[str, Any] | None = None,
    eval_clean: LabelledTexts | str | os.PathLike[str] | None = None,
    eval_poison: LabelledTexts | str | os.PathLike[str] | None = None,
    poisoned_true_labels: list[int] | None = None,
    target_label: int | None = None,
    curve_points: int = 0,
    cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> DefenseResult:
    """Run the defense ``strategy`` (a name of :data:`~headprune.baselines.registry.STRATEGIES`, or a
    :class:`PolicyStrategy` object such as a trained agent) on ``victim``.

    Args:
        victim: a :class:`~headprune.victims.Victim`, a preset name or a victim folder.
        clean_data: the defender's clean labelled rows or a file (default: the victim's defender data).
        strategy: registry name, a :class:`PolicyStrategy` (a ``"prune"`` strategy whose policy is
            built from the env) or a ready policy object with SB3's ``predict``; ``seed`` fixes every
            random choice (same seed, same mask and weights).
        finetune_epochs: clean fine-tuning after pruning (and the FT/FTH/MEFT/PURE fine-tune), may be
            fractional; 0 disables it (the pruned victim is returned as the model).
        finetune_lr: override the strategy's learning rate (2e-5; FTH 1e-4).
        finetune_max_steps: cap on fine-tuning steps (tests).
        max_accuracy_drop / accuracy_floor: the env's floor (default a 0.05 drop).
        budget: most heads pruned (default: the env's, half the heads; PURE: no cap unless given).
        eval_size / stats_size: the env's validation and statistics rows.
        options: strategy options (policy keyword arguments; PURE ``chunk``/``penalty``; MEFT
            ``entropy_epochs``).
        eval_clean / eval_poison: EVALUATION data for the report only (``evaluate_defense`` after the
            defense is fixed); ``eval_clean`` defaults to the validation rows, LFR needs ``eval_poison``.
        curve_points: if > 0, evaluate the pruned victim at up to this many trajectory points (plots).
        cache: cache root for victims and head statistics.
    """
    builder: PolicyStrategy | None = None
    if isinstance(strategy, str):
        spec = get_strategy(strategy)
    elif isinstance(strategy, PolicyStrategy) or callable(getattr(strategy, "predict", None)):
        builder = strategy if isinstance(strategy, PolicyStrategy) else _GivenPolicy(strategy)
        spec = Strategy(builder.name, "prune", builder.description)
    else:
        raise TypeError(f"strategy must be a registry name, a PolicyStrategy or an object with SB3's predict, "
                        f"got {type(strategy).__name__}")
    options = dict(options or {})
    t0 = time.perf_counter()
    victim = resolve_victim(victim, cache=cache, progress=progress)
    if max_accuracy_drop is None and accuracy_floor is None:
        max_accuracy_drop = 0.05
    env = HeadPruneEnv(victim, clean_data=clean_data, eval_size=eval_size, stats_size=stats_size,
                       accuracy_floor=accuracy_floor, max_accuracy_drop=max_accuracy_drop, budget=budget,
                       proxy="pure_variance", reward_weights={"accuracy": 0.0, "proxy": 0.0}, seed=seed,
                       cache=cache, progress=progress)
    L, H = env.num_layers, env.num_heads
    full = torch.ones(L, H)
    config: dict[str, Any] = {
        "victim": victim.name, "strategy": spec.name, "seed": int(seed), "finetune_epochs": float(finetune_epochs),
        "finetune_lr": finetune_lr, "finetune_max_steps": finetune_max_steps, "batch_size": batch_size,
        "max_accuracy_drop": max_accuracy_drop, "accuracy_floor": accuracy_floor, "budget": budget,
        "eval_size": eval_size, "stats_size": stats_size, "options": options,
        "clean_rows": len(env.train_data) + len(env.eval_data),
    }
    if builder is not None:
        config["policy"] = builder.config()
    timings: dict[str, float] = {"setup": time.perf_counter() - t0}

    # ---- 1. prune (never sees evaluation data)
    t1 = time.perf_counter()
    details: dict[str, Any] = {"description": spec.description}
    trajectory = [{"heads_pruned": 0, "accuracy": env.start_score.accuracy, "mask": [1] * (L * H)}]
    if spec.kind == "prune":
        mask, trajectory, more = _run_policy(spec, env, victim, seed, options, progress, builder)
        details.update(more)
    elif spec.kind == "pure":
        chunk = int(options.get("chunk", spec.defaults["chunk"]))
        cap = budget
        mask, trace = pure_prune(env.head_stats.cls_attention_variance, lambda m: env.scorer(m).accuracy,
                                 env.accuracy_floor, chunk=chunk, max_heads=cap)
        trajectory += trace
        details["chunk"] = chunk
    else:
        mask = full.clone()
    pruned_acc = env.scorer(mask).accuracy
    timings["prune"] = time.perf_counter() - t1

    # ---- 2. fine-tune a deep copy with the pruned heads held at zero
    t2 = time.perf_counter()
    model = copy.deepcopy(victim.model)
    epochs = float(finetune_epochs)
    if spec.kind != "none" and epochs > 0:
        lr = finetune_lr if finetune_lr is not None else float(spec.defaults.get("lr", 2e-5))
        cfg = FineTuneConfig(epochs=epochs, lr=lr, batch_size=batch_size, max_length=env.max_length, seed=seed,
                             max_steps=finetune_max_steps)
        bar = f"fine-tune ({spec.name})" if progress else False
        if spec.kind == "pure":
            coef = pure_norm_coefficients(model, victim.tokenizer, env.stats_data, mask, max_length=env.max_length)
            penalty = float(options.get("penalty", spec.defaults["penalty"]))
            details.update(norm_coefficients=coef.tolist(), penalty=penalty)
            with PureAttentionRegulariser(model, mask, coef, penalty) as reg:
                log = fine_tune(model, victim.tokenizer, env.train_data, cfg, mask=mask, regulariser=reg, progress=bar)
        elif spec.name == "meft":
            entropy_epochs = float(options.get("entropy_epochs", spec.defaults["entropy_epochs"]))
            ent_cfg = FineTuneConfig(**{**cfg.to_dict(), "epochs": entropy_epochs})
            ent_log = fine_tune(model, victim.tokenizer, env.train_data, ent_cfg, loss_fn=max_entropy_loss,
                                progress=f"max-entropy ({spec.name})" if progress else False)
            details["entropy_phase"] = {"steps": ent_log.steps, "final_loss": ent_log.final_loss}
            log = fine_tune(model, victim.tokenizer, env.train_data, cfg, mask=mask, progress=bar)
        else:
            log = fine_tune(model, victim.tokenizer, env.train_data, cfg, mask=mask, progress=bar)
        details["finetune"] = {"steps": log.steps, "final_loss": log.final_loss, "lr": lr}
    timings["finetune"] = time.perf_counter() - t2
    final_acc = Evaluator(model, victim.tokenizer, env.eval_data, max_length=env.max_length).accuracy(mask)
    validation = {"start": env.start_score.accuracy, "pruned": pruned_acc, "final": final_acc,
                  "floor": env.accuracy_floor, "rows": len(env.eval_data)}
    timings["defense"] = time.perf_counter() - t0

    # ---- 3. evaluation, after the defense is fixed (the only place LFR is computed)
    t3 = time.perf_counter()
    metrics: dict[str, dict[str, Any]] = {}
    curve: list[dict[str, Any]] | None = None
    clean_eval = _as_texts(eval_clean)
    poison_eval = _as_texts(eval_poison)
    target = int(victim.config.target_label if target_label is None else target_label)
    if clean_eval is not None or poison_eval is not None:
        clean_rows = clean_eval if clean_eval is not None else env.eval_data
        kw = {"poisoned_true_labels": poisoned_true_labels, "max_length": env.max_length}
        for key, m in (("pruned", victim.model), ("final", model)):
            report = evaluate_defense(m, victim.tokenizer, clean_rows, poison_eval, target, mask, **kw)
            metrics[key] = {**report.to_dict(), "acc_data": "eval_clean" if clean_eval is not None else "validation"}
        if curve_points > 0:
            idx = np.unique(np.linspace(0, len(trajectory) - 1, min(curve_points, len(trajectory))).round().astype(int))
            curve = []
            for i in idx:
                point = trajectory[int(i)]
                m = torch.tensor(point["mask"], dtype=torch.float32).view(L, H)
                report = evaluate_defense(victim.model, victim.tokenizer, clean_rows, poison_eval, target, m, **kw)
                curve.append({"heads_pruned": point["heads_pruned"], "acc": report.acc, "lfr": report.lfr})
    timings["evaluation"] = time.perf_counter() - t3
    timings = {k: round(v, 3) for k, v in timings.items()}
    return DefenseResult(strategy=spec.name, seed=int(seed), mask=mask, model=model, tokenizer=victim.tokenizer,
                         validation=validation, metrics=metrics, trajectory=trajectory, curve=curve, timings=timings,
                         config=config, versions=environment_info(), details=details)


