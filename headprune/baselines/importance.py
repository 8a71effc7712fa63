"""Per-head parameter groups and the group-lasso penalty of the sparsification defense.

:func:`head_group_norms` is the L2 norm of each head's parameter group (its Q/K/V rows and biases and
its output-projection columns), the groups of the group-lasso penalty :func:`group_lasso_penalty`.
:func:`gate_gradient_importance` is re-exported from :mod:`headprune.head_stats`, the one importance routine.
"""

from __future__ import annotations

import torch
from torch import nn

from headprune.gating import AttentionSite, find_attention_sites
from headprune.head_stats import gate_gradient_importance

__all__ = ["gate_gradient_importance", "group_lasso_penalty", "head_group_norms", "head_parameter_groups"]


def _linear_rows_cols(site: AttentionSite) -> tuple[list[nn.Linear], nn.Linear]:
    """The Q, K, V projections (rows = head outputs) and the output projection (columns = head inputs)."""
    att = site.attention
    if site.family == "bert":
        inner = att.self
        return [inner.query, inner.key, inner.value], site.out_proj
    if site.family == "distilbert":
        return [att.q_lin, att.k_lin, att.v_lin], site.out_proj
    if site.family == "llama" and att.k_proj.out_features == att.q_proj.out_features:  # no grouped KV
        return [att.q_proj, att.k_proj, att.v_proj], site.out_proj
    raise TypeError(f"head parameter groups are defined for BERT, DistilBERT and MHA Llama blocks, "
                    f"not {site.family} ({type(att).__name__})")


def head_parameter_groups(model: nn.Module) -> list[tuple[int, int, list[torch.Tensor]]]:
    """``[(layer, head, [views of its parameters])]``: Q/K/V weight rows and bias entries of the head's
    slice, and the output projection's weight columns of that slice (views, so gradients flow)."""
    groups: list[tuple[int, int, list[torch.Tensor]]] = []
    for site in find_attention_sites(model):
        qkv, out = _linear_rows_cols(site)
        d = site.head_dim
        for h in range(site.num_heads):
            sl = slice(h * d, (h + 1) * d)
            params = []
            for lin in qkv:
                params.append(lin.weight[sl, :])
                if lin.bias is not None:
                    params.append(lin.bias[sl])
            params.append(out.weight[:, sl])
            groups.append((site.layer, h, params))
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
