"""Tests of the trigger-agnostic backdoor proxies (headprune.envs.proxies) on the tiny BadNets victim."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import torch

from headprune.data import LabelledTexts
from headprune.envs.proxies import (
    DEFAULT_PROXY,
    PROXIES,
    BackdoorProxy,
    PureVarianceProxy,
    SoftTriggerProxy,
    balanced_subset,
    make_proxy,
)
from headprune.engine.head_stats import compute_head_stats
from headprune.engine.reference import resolve_base
from headprune.victims import Victim, load_victim



@pytest.fixture(scope="module")
def clean(tiny_victim: Victim) -> LabelledTexts:
    return tiny_victim.defender_clean_data()


@pytest.fixture(scope="module")
def clean_reference(tiny_victim: Victim) -> Victim:
    """The clean model trained the same way as the tiny victim (built with it, same cache)."""
    return load_victim(tiny_victim.path.parent / tiny_victim.card["clean_model"])


def _masks(shape: tuple[int, int]) -> list[torch.Tensor]:
    L, H = shape
    half = torch.ones(L, H)
    half[:, : H // 2] = 0
    one = torch.ones(L, H)
    one[L - 1, 0] = 0
    return [torch.ones(L, H), half, one, torch.zeros(L, H)]


def _extra(name: str, victim: Victim) -> dict[str, Any]:
    """Keyword arguments a proxy needs besides the clean data: drift_mass and reference_disagreement read the
    public reference (the latter trains its weak reference for a few steps here)."""
    if name == "reference_disagreement":
        return {"reference": resolve_base(victim), "n_per_class": 16, "reference_epochs": 1.0}
    return {"reference": resolve_base(victim)} if name == "drift_mass" else {}


def test_registry_and_factory() -> None:
    assert set(PROXIES) >= {"soft_trigger", "random_word_flip", "cls_attention_concentration", "pure_variance"}
    assert DEFAULT_PROXY in PROXIES
    for name, cls in PROXIES.items():
        assert cls.name == name and issubclass(cls, BackdoorProxy)
    with pytest.raises(ValueError, match="unknown proxy"):
        make_proxy("lfr", None, None, None)


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_constructor_sees_only_clean_data(name: str) -> None:
    """The constructor takes the model, its tokenizer and clean texts: nothing poisoned, no trigger, no LFR."""
    params = list(inspect.signature(PROXIES.get(name).__init__).parameters)
    assert params[:4] == ["self", "model", "tokenizer", "clean"]
    for p in params:
        assert not any(bad in p.lower() for bad in ("poison", "trigger_word", "lfr", "target"))


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_deterministic_finite_in_range_and_reacts_to_mask(name: str, tiny_victim: Victim, clean: LabelledTexts) -> None:
    model, tok = tiny_victim.model, tiny_victim.tokenizer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    extra = _extra(name, tiny_victim)
    a = make_proxy(name, model, tok, clean, seed=3, cache_size=0, **extra)  # no memo: every call recomputes
    b = make_proxy(name, model, tok, clean, seed=3, **extra)
    lo, hi = a.value_range
    masks = _masks(a.shape)
    values = []
    for m in masks:
        v = a(m)
        assert isinstance(v, float) and math.isfinite(v)
        assert lo <= v <= hi, (name, v, a.value_range)
        assert a(m) == v, "same proxy, same mask: same value"
        assert b(m) == v, "two constructions with the same seed: same value"
        assert b(m.bool()) == v and b(m.int()) == v, "bool/int masks are the same mask"
        values.append(v)
    full, none = values[0], values[-1]
    # every head pruned: the model can no longer read its input, so every proxy drops to 0
    assert none == 0.0
    assert full != none, f"{name} does not react to pruning every head"
    # the model is untouched (no weight change, no parameter gradients)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_rejects_bad_masks(name: str, tiny_victim: Victim, clean: LabelledTexts) -> None:
    proxy = make_proxy(name, tiny_victim.model, tiny_victim.tokenizer, clean, seed=0, **_extra(name, tiny_victim))
    L, H = proxy.shape
    with pytest.raises(ValueError, match="mask must be"):
        proxy(torch.ones(L + 1, H))
    with pytest.raises(ValueError, match="only 0 and 1"):
        proxy(torch.full((L, H), 0.5))


def test_soft_trigger_flips_toward_the_target_of_a_backdoored_model(
    tiny_victim: Victim, clean_reference: Victim, clean: LabelledTexts
) -> None:
    """The tiny victim's BadNets target is 1: a soft trigger flips clean inputs to 1 more easily than to 0,
    and the clean model trained the same way shows a smaller asymmetry (3 seeds averaged).

    Measured with the defaults (8 steps, geometric lr schedule, rates averaged over the curve):
    backdoored asymmetries 0.27 / 0.36 / 0.12 for seeds 0 / 1 / 2, all toward class 1; clean model
    0.11 / 0.06 / 0.10. (With a constant lr of 0.05 and 5 steps the gap was larger, 0.72 vs 0.21, but
    that setting saturates on MiniLM, where both classes flip ~100%.)"""
    assert tiny_victim.config.target_label == 1
    L, H = SoftTriggerProxy(tiny_victim.model, tiny_victim.tokenizer, clean).shape
    full = torch.ones(L, H)
    seeds = (0, 1, 2)
    toward_target, bd_asym, clean_asym = [], [], []
    for seed in seeds:
        bd = SoftTriggerProxy(tiny_victim.model, tiny_victim.tokenizer, clean, seed=seed)
        rates = bd.rates(full)  # [2]: rate toward class 0, toward class 1
        toward_target.append(float(rates[1] - rates[0]))
        bd_asym.append(bd(full))
        ref = SoftTriggerProxy(clean_reference.model, clean_reference.tokenizer, clean, seed=seed)
        clean_asym.append(ref(full))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert all(t > 0.08 for t in toward_target), toward_target
    assert mean(toward_target) > 0.2, toward_target
    assert mean(bd_asym) > mean(clean_asym) + 0.1, (bd_asym, clean_asym)


def test_pure_variance_uses_head_stats_definition(tiny_victim: Victim, clean: LabelledTexts) -> None:
    model, tok = tiny_victim.model, tiny_victim.tokenizer
    idx = balanced_subset(clean.labels, 32, 0)
    sub = LabelledTexts(tuple(clean.sentences[i] for i in idx), tuple(clean.labels[i] for i in idx), "sub")
    stats = compute_head_stats(model, tok, sub)
    given = PureVarianceProxy(model, tok, clean, seed=0, head_stats=stats)
    computed = PureVarianceProxy(model, tok, clean, seed=0)
    raw = PureVarianceProxy(model, tok, clean, seed=0, head_stats=stats, normalise=False)
    mask = _masks(given.shape)[1]
    assert given(mask) == computed(mask)
    expected = float((stats.cls_attention_variance.double() * mask.double()).sum())
    assert raw(mask) == pytest.approx(expected, rel=1e-12)
    assert given(torch.ones(given.shape)) == pytest.approx(1.0)


def test_balanced_subset_is_seeded_and_balanced() -> None:
    labels = [0] * 50 + [1] * 10
    a = balanced_subset(labels, 8, seed=5)
    assert a == balanced_subset(labels, 8, seed=5)
    assert a != balanced_subset(labels, 8, seed=6)
    assert sum(labels[i] for i in a) == 8 and len(a) == 16
    assert len(balanced_subset(labels, 20, seed=0)) == 30  # the minority class has only 10


def test_soft_trigger_curve_and_aggregates(tiny_victim: Victim, clean: LabelledTexts) -> None:
    model, tok = tiny_victim.model, tiny_victim.tokenizer
    mean_p = SoftTriggerProxy(model, tok, clean, seed=0, steps=3)
    final_p = SoftTriggerProxy(model, tok, clean, seed=0, steps=3, aggregate="final")
    full = torch.ones(mean_p.shape)
    curve = mean_p.rate_curve(full)
    assert curve.shape == (4, 2) and bool(((curve >= 0) & (curve <= 1)).all())
    assert mean_p(full) == pytest.approx(float(curve.mean(0).max() - curve.mean(0).min()))
    assert final_p(full) == pytest.approx(float(curve[-1].max() - curve[-1].min()))
    assert 0.0 <= SoftTriggerProxy(model, tok, clean, seed=0, steps=0)(full) <= 1.0  # init point only
    with pytest.raises(ValueError):
        SoftTriggerProxy(model, tok, clean, aggregate="max")


def test_reference_disagreement_counts_flips_the_weak_reference_does_not_share(tiny_victim: Victim,
                                                                                clean: LabelledTexts) -> None:
    import numpy as np

    from headprune.data.augment import Augmentation, augment_sentences, augment_with_sources

    rows = list(clean.sentences[:12])
    aug = Augmentation(drops=2, crops=1, concats=1)
    pairs = augment_with_sources(rows, aug, np.random.default_rng(5))
    assert [t for _, t in pairs] == augment_sentences(rows, aug, np.random.default_rng(5))
    assert all(set(t.split()) <= set(rows[i].split()) for i, t in pairs if not t.startswith(rows[i]))
    proxy = make_proxy("reference_disagreement", tiny_victim.model, tiny_victim.tokenizer, clean, seed=1,
                       cache_size=0, **_extra("reference_disagreement", tiny_victim))
    full = torch.ones(proxy.shape)
    pred = proxy.evaluator.predictions(full)
    flips = pred[proxy.num_rows:] != pred[proxy.sources]
    assert proxy(full) == float((flips & proxy.reference_stable).float().mean())
    assert proxy.sources.max() < proxy.num_rows and proxy.reference_stable.shape == proxy.sources.shape
    with pytest.raises(ValueError, match="needs the pre-trained reference"):
        make_proxy("reference_disagreement", tiny_victim.model, tiny_victim.tokenizer, clean)
