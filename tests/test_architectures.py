"""Every registered architecture adapter, on a tiny random model of each ``model_type`` it declares.

The tests are parametrised over :data:`headprune.architectures.ARCHITECTURES`, so a new adapter is
tested without new test code (its ``model_types`` are built from configs, never downloaded).
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn
from tiny_models import FAMILIES, HEADS, LAYERS, VOCAB, gated_logits, minilm_tokenizer, tiny_batch, tiny_config
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig

from headprune.architectures import (
    ARCHITECTURES,
    ArchitectureAdapter,
    UnsupportedArchitectureError,
    adapter_for,
    find_attention_sites,
)
from headprune.defenses.head_groups import head_parameter_groups
from headprune.envs.incremental import IncrementalForward
from headprune.engine.evaluator import Evaluator
from headprune.engine.export import compact

CASES = [(name, model_type) for name, adapter in ARCHITECTURES.items() for model_type in adapter.model_types]
IDS = [f"{name}-{model_type}" for name, model_type in CASES]
LAYER, HEAD = LAYERS - 1, 2  # the head the write tests change
MASK = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.5, 1.0, 0.0, 1.0]])


def _config(model_type: str, vocab: int, init: float | None) -> PretrainedConfig:
    """``tiny_config`` where it knows the type, else a 2 x 4-head config of the standard field names."""
    if model_type in FAMILIES:
        config = tiny_config(model_type)
    else:
        config = AutoConfig.for_model(model_type, hidden_size=32, num_hidden_layers=LAYERS,
                                      num_attention_heads=HEADS, intermediate_size=64, max_position_embeddings=64,
                                      num_labels=2, pad_token_id=0)
    config.vocab_size = vocab
    if init is not None:
        config.initializer_range = init
    return config


@functools.cache
def _model(model_type: str, seed: int = 0, vocab: int = VOCAB, init: float | None = None) -> nn.Module:
    """Shared random-init tiny classifier in eval mode (``init``: weight std, default the config's);
    tests that write weights work on a copy."""
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(_config(model_type, vocab, init)).eval()


def _site(model: nn.Module, layer: int = LAYER):
    return find_attention_sites(model)[layer]


def _footprint(adapter: ArchitectureAdapter, model: nn.Module, head: int) -> dict[str, torch.Tensor]:
    """``{parameter name: bool mask}`` of the elements ``set_head_weights`` writes for ``head``."""
    marker = copy.deepcopy(model)
    with torch.no_grad():
        for p in marker.parameters():
            p.zero_()
    site = _site(marker)
    adapter.set_head_weights(site, head, {k: torch.ones_like(v) for k, v in adapter.head_weights(site, head).items()})
    return {name: p != 0 for name, p in marker.named_parameters()}


def test_registry_covers_every_tiny_family_once() -> None:
    assert ARCHITECTURES.names() == ["bert", "distilbert", "gpt2", "llama"]
    declared = [model_type for _, model_type in CASES]
    assert sorted(declared) == sorted(FAMILIES)  # each tiny family belongs to exactly one adapter
    assert all(adapter.name == name and adapter.description for name, adapter in ARCHITECTURES.items())


@pytest.mark.parametrize(("name", "model_type"), CASES, ids=IDS)
def test_sites_and_head_weight_shapes(name: str, model_type: str) -> None:
    model = _model(model_type)
    adapter = adapter_for(model)
    assert adapter is ARCHITECTURES.get(name)
    sites = find_attention_sites(model)
    assert [s.layer for s in sites] == list(range(LAYERS))
    hidden, head_dim = 32, 32 // HEADS
    for site in sites:
        assert (site.family, site.num_heads, site.head_dim) == (name, HEADS, head_dim)
        assert site.adapter is adapter and model.get_submodule(site.name) is site.out_proj
        weights = adapter.head_weights(site, HEAD)
        assert list(weights)[-1] == "output.weight" and weights["output.weight"].shape == (hidden, head_dim)
        for role in ("query", "key", "value"):
            assert weights[f"{role}.weight"].shape == (head_dim, hidden)
            bias = weights.get(f"{role}.bias")
            assert bias is None or bias.shape == (head_dim,)
        assert HEAD in adapter.heads_sharing_parameters(site, HEAD)
    with pytest.raises(IndexError, match="outside"):
        adapter.head_weights(sites[0], HEADS)


@pytest.mark.parametrize(("name", "model_type"), CASES, ids=IDS)
def test_writing_a_head_from_another_model_changes_exactly_that_head(name: str, model_type: str) -> None:
    adapter = ARCHITECTURES.get(name)
    source, target = _model(model_type, seed=1), copy.deepcopy(_model(model_type))
    before = {n: p.detach().clone() for n, p in target.named_parameters()}
    written = adapter.head_weights(_site(source), HEAD)
    adapter.set_head_weights(_site(target), HEAD, written)
    read = adapter.head_weights(_site(target), HEAD)
    assert list(read) == list(written) and all(torch.equal(read[k], written[k]) for k in written)
    footprint = _footprint(adapter, target, HEAD)
    assert sum(int(f.sum()) for f in footprint.values()) == sum(v.numel() for v in written.values())
    source_params = dict(source.named_parameters())
    for n, p in target.named_parameters():
        inside = footprint[n]
        assert torch.equal(p[~inside], before[n][~inside]), n  # every other element unchanged
        assert torch.equal(p[inside], source_params[n][inside]), n
    assert not torch.equal(read["output.weight"], adapter.head_weights(_site(_model(model_type)), HEAD)["output.weight"])


@pytest.mark.parametrize(("name", "model_type"), CASES, ids=IDS)
def test_writing_a_head_from_the_same_model_leaves_logits_identical(name: str, model_type: str) -> None:
    adapter, model, batch = ARCHITECTURES.get(name), copy.deepcopy(_model(model_type)), tiny_batch()
    before = gated_logits(model, batch)
    for site in find_attention_sites(model):
        for head in range(site.num_heads):
            adapter.set_head_weights(site, head, adapter.head_weights(site, head))
    assert torch.equal(gated_logits(model, batch), before)
    site = _site(model)
    with pytest.raises(ValueError, match="unknown"):
        adapter.set_head_weights(site, 0, {"gate.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        adapter.set_head_weights(site, 0, {"output.weight": torch.zeros(3, 3)})


@pytest.mark.parametrize(("name", "model_type"), CASES, ids=IDS)
def test_value_rows_and_output_columns_are_the_heads(name: str, model_type: str) -> None:
    """Zeroing a head's value rows or output columns equals gating it off (its K/V group under grouped KV)."""
    adapter, original, batch = ARCHITECTURES.get(name), _model(model_type), tiny_batch()
    group = list(adapter.heads_sharing_parameters(_site(original), HEAD))
    for prefix, heads in (("value.", group), ("output.", [HEAD])):
        model = copy.deepcopy(original)
        zeros = {k: torch.zeros_like(v) for k, v in adapter.head_weights(_site(model), HEAD).items()
                 if k.startswith(prefix)}
        adapter.set_head_weights(_site(model), HEAD, zeros)
        mask = torch.ones(LAYERS, HEADS)
        mask[LAYER, heads] = 0
        torch.testing.assert_close(gated_logits(model, batch), gated_logits(original, batch, mask), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "model_type"), CASES, ids=IDS)
def test_query_and_key_rows_are_the_heads(name: str, model_type: str) -> None:
    """Doubling a head's query (its group's) and halving its key leaves every score, so the logits, unchanged;
    scaling the query alone does not."""
    adapter, original, batch = ARCHITECTURES.get(name), _model(model_type, seed=2), tiny_batch()
    expected = gated_logits(original, batch)

    def scaled(query: float, key: float) -> torch.Tensor:
        model = copy.deepcopy(original)
        site = _site(model)
        for head in adapter.heads_sharing_parameters(site, HEAD):
            weights = adapter.head_weights(site, head)
            adapter.set_head_weights(site, head, {k: v * query for k, v in weights.items() if k.startswith("query.")})
        weights = adapter.head_weights(site, HEAD)
        adapter.set_head_weights(site, HEAD, {k: v * key for k, v in weights.items() if k.startswith("key.")})
        return gated_logits(model, batch)

    assert torch.equal(scaled(2.0, 0.5), expected)  # powers of two: every product is exact
    assert not torch.equal(scaled(8.0, 1.0), expected)


@pytest.mark.parametrize(("name", "model_type"), CASES, ids=IDS)
def test_key_bias_is_the_heads(name: str, model_type: str) -> None:
    """Adding a constant to a head's key bias adds ``q_i . c`` to every score of query ``i``: the softmax, so
    the logits, do not change; the same shift of the query bias does. (Needs key biases and no rotary
    positions, which rotate the shift differently per position.)"""
    adapter, original, batch = ARCHITECTURES.get(name), _model(model_type, init=0.2), tiny_batch()
    rotary = any("Rotary" in type(m).__name__ for m in original.modules())
    if "key.bias" not in adapter.head_weights(_site(original), HEAD) or rotary:
        pytest.skip(f"{model_type} has no key bias or uses rotary positions")
    expected = gated_logits(original, batch)

    def shifted(role: str) -> torch.Tensor:
        model = copy.deepcopy(original)
        bias = adapter.head_weights(_site(model), HEAD)[f"{role}.bias"]
        adapter.set_head_weights(_site(model), HEAD, {f"{role}.bias": bias + 10.0})
        return gated_logits(model, batch)

    torch.testing.assert_close(shifted("key"), expected, rtol=0, atol=1e-5)
    assert (shifted("query") - expected).abs().max() > 1e-3


@pytest.mark.parametrize(("name", "model_type"), CASES, ids=IDS)
def test_head_parameter_groups_are_the_adapters_views(name: str, model_type: str) -> None:
    adapter, model = ARCHITECTURES.get(name), _model(model_type)
    sites = find_attention_sites(model)
    if any(adapter.heads_sharing_parameters(s, 0) != (0,) for s in sites):
        with pytest.raises(TypeError, match="share"):
            head_parameter_groups(model)
        return
    groups = head_parameter_groups(model)
    assert [(layer, head) for layer, head, _ in groups] == [(s.layer, h) for s in sites for h in range(HEADS)]
    layer, head, params = groups[LAYERS * HEADS - 1]
    views = adapter.head_parameter_views(sites[layer], head)
    assert [p.data_ptr() for p in params] == [v.data_ptr() for v in views.values()]


@pytest.mark.parametrize(("name", "model_type"), CASES, ids=IDS)
def test_compaction_where_supported_else_the_same_error(name: str, model_type: str) -> None:
    adapter, model, batch = ARCHITECTURES.get(name), _model(model_type), tiny_batch()
    if not adapter.supports_compaction:
        with pytest.raises(UnsupportedArchitectureError, match=type(model).__name__):
            compact(model, MASK)
        return
    small = compact(model, MASK)
    assert (gated_logits(small, batch) - gated_logits(model, batch, MASK)).abs().max() <= 1e-4
    assert [s.num_heads for s in find_attention_sites(small)] == [3, 3]


@pytest.mark.parametrize(("name", "model_type"), CASES, ids=IDS)
def test_incremental_forward_where_the_adapter_gives_layers(name: str, model_type: str) -> None:
    tokenizer = minilm_tokenizer()
    model = _model(model_type, vocab=tokenizer.vocab_size)
    texts = ["a gorgeous film", "dull , dull , dull", "the best movie of the year", "i hated it", "fine"] * 2
    ev = Evaluator(model, tokenizer, texts, batch_size=4, max_length=32)
    inc = IncrementalForward(ev)
    assert inc.incremental == (ARCHITECTURES.get(name).layerwise_forward(model) is not None)
    def check(fast: torch.Tensor, full: torch.Tensor) -> None:
        if inc.incremental:
            torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
            assert torch.equal(fast.argmax(-1), full.argmax(-1))
        else:
            assert torch.equal(fast, full)

    mask = torch.ones(LAYERS, HEADS)
    check(inc.logits(mask), ev.logits(mask))
    for layer, head in [(1, 2), (0, 1), (1, 0), (0, 1)]:
        mask[layer, head] = 1 - mask[layer, head]
        check(inc.logits(mask), ev.logits(mask))
        assert inc.last_start_layer == (layer if inc.incremental else 0)


@pytest.mark.parametrize("model", [nn.Sequential(nn.Linear(4, 4)), nn.Module()], ids=["sequential", "module"])
def test_unknown_model_names_its_class_and_the_supported_families(model: nn.Module) -> None:
    with pytest.raises(UnsupportedArchitectureError) as raised:
        adapter_for(model)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(type(model).__name__)
    assert all(adapter.description in message for _, adapter in ARCHITECTURES.items())
