"""Per-head scores the scripted baselines rank heads by.

:func:`gate_gradient_importance` is the gate-gradient importance of
:func:`headprune.head_stats.compute_head_stats` (Michel et al., 2019: ``sum_i |dCE(x_i, y_i)/dg_{l,h}|``,
absolute value PER EXAMPLE through per-example gates ``[B, L, H]``, one gate per head) without that
function's attention statistics and ``L * H`` ablation passes, which the baselines do not need and
which would dominate the cost of re-estimating importance every few pruning steps. It also has the one
thing ``compute_head_stats`` must not do: ``dropout=True`` runs the forward in train mode (dropout
really sampling, seeded) while the gradients flow to the gates, for MC-dropout. In eval mode the two
agree (``tests/test_baselines.py`` checks it), so there is one definition of importance.

:func:`head_group_norms` is the L2 norm of each head's parameter group (its Q/K/V rows and biases and
its output-projection columns), the groups of the group-lasso penalty :func:`group_lasso_penalty`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from headprune.evaluator import Evaluator
from headprune.gating import find_attention_sites

__all__ = ["gate_gradient_importance", "group_lasso_penalty", "head_group_norms", "head_parameter_groups"]


def gate_gradient_importance(
    model: nn.Module,
    tokenizer: Any,
    texts: Any,
    *,
    mask: torch.Tensor | None = None,
    dropout: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    max_length: int = 128,
) -> torch.Tensor:
    """``[L, H]`` gate-gradient importance of every head on labelled clean ``texts`` under ``mask``.

    Args:
        mask: current ``[L, H]`` mask; pruned heads get importance 0 (their gate is 0, and the score
            is zeroed as in ``compute_head_stats``).
        dropout: run the forwards in train mode so dropout samples (MC dropout); ``seed`` fixes the
            dropout masks, so one ``(seed, dropout)`` gives one deterministic pass.
    The model's training flag is restored and no ``.grad`` accumulates on its parameters.
    """
    ev = Evaluator(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    labels = ev.require_labels()
    L, H = ev.head_shape
    base = torch.ones(L, H) if mask is None else mask.detach().float().cpu().reshape(L, H)
    device = next(model.parameters()).device
    total = torch.zeros(L, H, dtype=torch.float64)
    was_training = model.training
    model.train(dropout)
    try:
        with torch.random.fork_rng(devices=[]), ev.gate:
            torch.manual_seed(seed)
            for batch in ev.iter_batches(device):
                gates = ev.gate.differentiable_gates(initial=base.expand(batch.size, L, H))
                logits = model(**batch.inputs).logits
                loss = F.cross_entropy(logits.float(), labels[batch.indices].to(device), reduction="sum")
                (grad,) = torch.autograd.grad(loss, gates)
                total += grad.abs().sum(0).double().cpu()
    finally:
        ev.gate.set_mask(None)
        model.train(was_training)
    return (total * (base != 0)).float()


def head_parameter_groups(model: nn.Module) -> list[tuple[int, int, list[torch.Tensor]]]:
    """``[(layer, head, [views of its parameters])]``: Q/K/V weight rows and bias entries of the head's
    slice, and the output projection's weight columns of that slice (views, so gradients flow), as the
    model's architecture adapter gives them.

    Raises:
        TypeError: for blocks whose heads share parameters (grouped-query attention), which would
            count the shared key/value rows in several groups.
    """
    groups: list[tuple[int, int, list[torch.Tensor]]] = []
    for site in find_attention_sites(model):
        adapter = site.adapter
        if adapter.heads_sharing_parameters(site, 0) != (0,):
            raise TypeError(f"head parameter groups need heads with their own parameters, but the heads of "
                            f"{type(site.attention).__name__} ({site.family}) share key/value projections")
        for h in range(site.num_heads):
            groups.append((site.layer, h, list(adapter.head_parameter_views(site, h).values())))
    return groups


def group_lasso_penalty(model: nn.Module) -> torch.Tensor:
    """``sum_{l,h} ||theta_{l,h}||_2``: the L1 norm over heads of each head group's L2 norm (group lasso,
    "L1/L2" structured sparsity), differentiable in the model's parameters."""
    norms = [torch.sqrt(sum((p * p).sum() for p in params)) for _, _, params in head_parameter_groups(model)]
    return torch.stack(norms).sum()


@torch.no_grad()
def head_group_norms(model: nn.Module) -> torch.Tensor:
    """``[L, H]`` L2 norm of each head's parameter group."""
    groups = head_parameter_groups(model)
    L = 1 + max(g[0] for g in groups)
    H = 1 + max(g[1] for g in groups)
    out = torch.zeros(L, H)
    for layer, head, params in groups:
        out[layer, head] = float(torch.sqrt(sum((p.float() ** 2).sum() for p in params)))
    return out
