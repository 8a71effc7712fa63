"""PURE (Zhao et al., ICML 2024): variance pruning in chunks with backtracking, then attention-normalised
fine-tuning (:class:`PureDefense`; :func:`pure_prune`, :func:`pure_norm_coefficients`,
:class:`PureAttentionRegulariser`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from headprune.data import LabelledTexts
from headprune.defenses.base import DEFENSES, Defense, PruneOutcome, unpruned_outcome
from headprune.defenses.defense_options import DefenseOptions, option
from headprune.workbench import Workbench
from headprune.engine.gating import find_attention_sites
from headprune.engine.head_stats import compute_head_stats, eager_attention
from headprune.engine.finetuning import FineTuneConfig, fine_tune

__all__ = ["PureAttentionRegulariser", "PureDefense", "PureOptions", "pure_norm_coefficients", "pure_prune"]


# over 60 lines: PURE's chunk / one-head-per-layer / backtrack loop, one loop as in the authors' code
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
    the victim directly, on the workbench's statistics rows (PURE: its validation rows) and checks accuracy on
    the workbench's validation rows; the floor is the workbench's (an absolute 0.85 in PURE); if a chunk is fully
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


@dataclass(frozen=True)
class PureOptions(DefenseOptions):
    """The options of ``pure``."""

    chunk: int = option(10, "heads pruned per chunk (ascending [CLS]-attention variance)", low=1)
    penalty: float = option(0.15, "weight of the attention-normalisation penalty in the fine-tune", low=0.0)


@DEFENSES.register("pure")
class PureDefense(Defense):
    """PURE: :func:`pure_prune` on the workbench's cached [CLS]-attention variance (its statistics rows), with
    backtracking on the workbench's validation accuracy and floor (no head cap unless the env config's ``budget``
    is given), then fine-tuning with :class:`PureAttentionRegulariser`.

    Options: :class:`PureOptions` (``chunk``, ``penalty``).
    """

    description = "PURE: variance pruning in chunks of 10 with backtracking + attention normalisation"
    options_class = PureOptions
    option_values: PureOptions

    def prune(self, bench: Workbench, *, progress: bool = False) -> PruneOutcome:
        _, trajectory, _ = unpruned_outcome(bench)
        chunk = self.option_values.chunk
        mask, trace = pure_prune(bench.head_stats.cls_attention_variance, lambda m: bench.scorer(m).accuracy,
                                 bench.accuracy_floor, chunk=chunk, max_heads=bench.config.budget)
        return mask, trajectory + trace, {"chunk": chunk}

    def finetune(self, model: nn.Module, bench: Workbench, mask: torch.Tensor, config: FineTuneConfig, *,
                 progress: bool = False) -> dict[str, Any]:
        coef = pure_norm_coefficients(model, bench.tokenizer, bench.stats_data, mask, max_length=bench.max_length)
        penalty = self.option_values.penalty
        with PureAttentionRegulariser(model, mask, coef, penalty) as reg:
            log = fine_tune(model, bench.tokenizer, bench.train_data, config, mask=mask, regulariser=reg,
                            progress=f"fine-tune ({self.name})" if progress else False)
        return {"norm_coefficients": coef.tolist(), "penalty": penalty,
                "finetune": {"steps": log.steps, "final_loss": log.final_loss, "lr": config.lr}}
