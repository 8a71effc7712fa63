"""Tests of the head-gating engine (headprune.engine.gating) on tiny models of every supported family."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn
from tiny_models import FAMILIES, HEADS, LAYERS, gated_logits, tiny_batch, tiny_model

from headprune.engine.gating import (
    HeadGate,
    UnsupportedArchitectureError,
    find_attention_sites,
    head_grid_shape,
    mask_from_pruned,
    pruned_from_mask,
)

GRID = (LAYERS, HEADS)



@functools.cache
def _model(family: str) -> nn.Module:
    """Shared tiny model; tests that change parameters work on a copy."""
    return tiny_model(family)


def _zero_head_columns(model: nn.Module, heads: dict[int, list[int]]) -> nn.Module:
    """Copy of ``model`` whose output projections ignore ``heads``: input columns (Linear) / rows (Conv1D) = 0."""
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for site in find_attention_sites(clone):
            for head in heads.get(site.layer, []):
                cols = slice(head * site.head_dim, (head + 1) * site.head_dim)
                if isinstance(site.out_proj, nn.Linear):
                    site.out_proj.weight[:, cols] = 0  # weight [out, in]
                else:
                    site.out_proj.weight[cols, :] = 0  # GPT-2 Conv1D weight [in, out]
    return clone


@pytest.mark.parametrize("family", FAMILIES)
def test_sites_cover_every_layer(family: str) -> None:
    sites = find_attention_sites(_model(family))
    assert [s.layer for s in sites] == list(range(LAYERS))
    assert head_grid_shape(sites) == GRID
    assert all(s.head_dim == 32 // HEADS for s in sites)


@pytest.mark.parametrize("family", FAMILIES)
def test_gating_one_head_changesgated_logits(family: str) -> None:
    model, batch = _model(family), tiny_batch()
    mask = mask_from_pruned({1: [2]}, GRID)
    assert (gated_logits(model, batch, mask) - gated_logits(model, batch)).abs().max() > 1e-6  # init std 0.02: small logits


@pytest.mark.parametrize("family", FAMILIES)
def test_gating_equals_zeroing_projection_columns(family: str) -> None:
    model, batch = _model(family), tiny_batch()
    pruned = {0: [1], 1: [0, 3]}
    gated = gated_logits(model, batch, mask_from_pruned(pruned, GRID))
    zeroed = gated_logits(_zero_head_columns(model, pruned), batch)
    torch.testing.assert_close(gated, zeroed, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_all_ones_mask_is_bit_identical(family: str) -> None:
    model, batch = _model(family), tiny_batch()
    assert torch.equal(gated_logits(model, batch, torch.ones(GRID)), gated_logits(model, batch))


@pytest.mark.parametrize("family", FAMILIES)
def test_per_example_masks_match_separate_runs(family: str) -> None:
    model, batch = _model(family), tiny_batch(batch=3)
    masks = torch.ones(3, *GRID)
    masks[0, 0, 1] = 0
    masks[1, 1, [0, 2]] = 0
    masks[2, :, 3] = 0.5
    together = gated_logits(model, batch, masks)
    for b in range(3):
        separate = gated_logits(model, batch, masks[b])[b]
        torch.testing.assert_close(together[b], separate, rtol=0, atol=1e-6)


def _float64(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model``, float64 throughout.

    Llama-style RMSNorm layers compute in float32 even in a float64 model, which would put float32
    rounding into the finite differences; they are swapped for ``nn.RMSNorm``, the same function.
    """
    clone = copy.deepcopy(model).double()
    for parent in list(clone.modules()):
        for name, child in parent.named_children():
            if type(child).__name__.endswith("RMSNorm"):
                norm = nn.RMSNorm(child.weight.shape, eps=child.variance_epsilon, dtype=torch.float64)
                norm.load_state_dict(child.state_dict())
                setattr(parent, name, norm)
    return clone


@pytest.mark.parametrize("family", FAMILIES)
def test_gate_gradient_matches_finite_difference(family: str) -> None:
    model = _float64(_model(family))
    batch, labels = tiny_batch(), torch.tensor([0, 1, 1])

    def loss() -> torch.Tensor:
        return nn.functional.cross_entropy(model(**batch).logits, labels)

    gate = HeadGate(model)
    with gate:
        gates = gate.differentiable_gates()
        loss().backward()
        assert gates.grad is not None and gates.grad.shape == GRID
        eps = 1e-5
        for layer, head in [(0, 1), (1, 2)]:
            values = []
            for sign in (1, -1):
                mask = torch.ones(GRID, dtype=torch.float64)
                mask[layer, head] += sign * eps
                gate.set_mask(mask)
                with torch.no_grad():
                    values.append(loss().item())
            numeric = (values[0] - values[1]) / (2 * eps)
            analytic = gates.grad[layer, head].item()
            assert abs(analytic) > 1e-8
            assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-10)


@pytest.mark.parametrize("family", FAMILIES)
def test_context_manager_leaves_model_unchanged(family: str) -> None:
    model, batch = _model(family), tiny_batch()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before = gated_logits(model, batch)
    with pytest.raises(RuntimeError, match="inside"):
        with HeadGate(model, mask_from_pruned({0: [0, 1]}, GRID)) as gate:
            assert gate.attached
            raise RuntimeError("inside the block")
    assert not gate.attached
    state = model.state_dict()
    assert state.keys() == before_state.keys()
    assert all(torch.equal(state[k], before_state[k]) for k in state)
    assert all(not m._forward_pre_hooks and not m._forward_pre_hooks_with_kwargs for m in model.modules())
    assert torch.equal(gated_logits(model, batch), before)


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_mask_shape_raises(family: str) -> None:
    model = _model(family)
    with pytest.raises(ValueError, match=rf"\[{LAYERS}, {HEADS}\]"):
        HeadGate(model, torch.ones(LAYERS, HEADS + 1))
    with pytest.raises(ValueError, match=rf"\[{LAYERS}, {HEADS}\]"):
        HeadGate(model).set_mask(torch.ones(HEADS))


@pytest.mark.parametrize("family", FAMILIES)
def test_per_example_mask_with_wrong_batch_raises(family: str) -> None:
    model, batch = _model(family), tiny_batch(batch=3)
    with HeadGate(model, torch.zeros(2, *GRID)), pytest.raises(ValueError, match="batch 2"):
        model(**batch)


class PlainClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.mark.parametrize("model", [PlainClassifier(), nn.Sequential(nn.Linear(4, 4))], ids=["module", "sequential"])
def test_unsupported_model_raises(model: nn.Module) -> None:
    name = type(model).__name__
    with pytest.raises(UnsupportedArchitectureError, match=name):
        find_attention_sites(model)
    with pytest.raises(UnsupportedArchitectureError, match=name):
        HeadGate(model)


def test_mask_pruned_round_trip() -> None:
    pruned = {0: [1, 3], 2: [0]}
    mask = mask_from_pruned(pruned, (3, 4))
    assert mask.shape == (3, 4) and int(mask.sum()) == 12 - 3
    assert pruned_from_mask(mask) == pruned
    assert torch.equal(mask_from_pruned(pruned_from_mask(mask), (3, 4)), mask)
    assert pruned_from_mask(torch.ones(3, 4)) == {}
    with pytest.raises(ValueError, match="outside"):
        mask_from_pruned({3: [0]}, (3, 4))
    with pytest.raises(ValueError, match=r"\[layers, heads\]"):
        pruned_from_mask(torch.ones(2, 3, 4))
