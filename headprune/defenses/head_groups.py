"""Per-head parameter groups and the group-lasso penalty of the sparsification defense.

:func:`head_group_norms` is the L2 norm of each head's parameter group (its Q/K/V rows and biases and
its output-projection columns), the groups of the group-lasso penalty :func:`group_lasso_penalty`.
:func:`gate_gradient_importance` is re-exported from :mod:`headprune.engine.head_stats`, the one importance routine.
"""

from __future__ import annotations

import torch
from torch import nn

from headprune.engine.gating import find_attention_sites
from headprune.engine.head_stats import gate_gradient_importance

__all__ = ["gate_gradient_importance", "group_lasso_penalty", "head_group_norms", "head_parameter_groups"]


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
