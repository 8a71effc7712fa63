"""Head statistics: each one against a direct per-example computation, masks, determinism, caching."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tiny_models import HEADS, LAYERS, minilm_tokenizer, tiny_vocab_bert

from headprune.data import LabelledTexts
from headprune.engine.evaluator import Evaluator
from headprune.engine.gating import HeadGate, find_attention_sites
from headprune.engine.head_stats import FEATURE_NAMES, HeadStats, compute_head_stats, eager_attention



SENTENCES = (
    "a good film .",
    "terrible , just terrible and long and boring beyond all words",
    "ok",
    "the plot is thin but the acting is superb",
    "meh .",
    "an utterly charming , warm and funny picture",
    "bad",
    "i laughed , i cried , i left early",
    "not my cup of tea at all",
    "a triumph",
)
L, H = LAYERS, HEADS


@pytest.fixture(scope="module")
def tiny():
    tok = minilm_tokenizer()
    model = tiny_vocab_bert()
    # labels: the model's own predictions with one flipped, so ablations can only lose accuracy
    preds = Evaluator(model, tok, SENTENCES).predictions().tolist()
    preds[0] = 1 - preds[0]
    return model, tok, LabelledTexts(SENTENCES, tuple(preds), "tiny")


@pytest.fixture(scope="module")
def stats(tiny):
    model, tok, texts = tiny
    return compute_head_stats(model, tok, texts, batch_size=4)


def _single(tok, sentence, max_length=128, padding=False):
    return tok([sentence], truncation=True, max_length=max_length,
               padding="max_length" if padding else False, return_tensors="pt")


def test_importance_is_per_example_abs_gradient(tiny, stats):
    model, tok, texts = tiny
    expected = torch.zeros(L, H)
    for s, y in zip(texts.sentences, texts.labels):
        with HeadGate(model) as gate:
            g = gate.differentiable_gates()
            loss = F.cross_entropy(model(**_single(tok, s)).logits, torch.tensor([y]))
            (grad,) = torch.autograd.grad(loss, g)
            expected += grad.abs()
    torch.testing.assert_close(stats.importance, expected, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())  # compute_head_stats left no .grad behind


def test_cls_variance_matches_pure_definition(tiny, stats):
    """PURE: pad to max_len=128, torch.var of the first 127 entries of each head's flattened attention."""
    model, tok, texts = tiny
    per_example = []
    with eager_attention(model), torch.no_grad():
        for s in texts.sentences:
            atts = model(**_single(tok, s, padding=True), output_attentions=True).attentions
            per_example.append(torch.stack([torch.var(a.reshape(1, H, -1)[:, :, :127], dim=2)[0] for a in atts]))
    torch.testing.assert_close(stats.cls_attention_variance, torch.stack(per_example).mean(0), rtol=1e-4, atol=1e-9)
    assert model.config._attn_implementation == "sdpa"


def test_entropy_and_output_norm_pooled_over_tokens(tiny, stats):
    model, tok, texts = tiny
    sites = find_attention_sites(model)
    ent, norm, count = torch.zeros(L, H), torch.zeros(L, H), 0
    captured: dict[int, torch.Tensor] = {}
    handles = [s.out_proj.register_forward_pre_hook(
        lambda m, a, layer=s.layer: captured.__setitem__(layer, a[0].detach())) for s in sites]
    try:
        with eager_attention(model), torch.no_grad():
            for s in texts.sentences:
                atts = model(**_single(tok, s), output_attentions=True).attentions
                count += atts[0].shape[-1]
                for layer, a in enumerate(atts):
                    p = a[0]  # [H, T, T], no padding
                    ent[layer] += -(p * p.log()).sum((-1, -2))
                    norm[layer] += captured[layer][0].view(-1, H, 32 // H).norm(dim=-1).sum(0)
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(stats.attention_entropy, ent / count, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats.output_norm, norm / count, rtol=1e-4, atol=1e-6)


def test_ablation_drop_equals_direct_computation(tiny, stats):
    model, tok, texts = tiny
    ev = Evaluator(model, tok, texts)
    base = ev.accuracy()
    assert stats.base_accuracy == pytest.approx(base)
    for layer, head in [(0, 1), (1, 3)]:
        mask = torch.ones(L, H)
        mask[layer, head] = 0
        assert stats.ablation_acc_drop[layer, head].item() == pytest.approx(base - ev.accuracy(mask), abs=1e-6)
    assert stats.ablation_acc_drop.abs().sum() > 0  # the fixture makes some heads matter


def test_pruned_head_gets_zero_and_mask_is_used(tiny, stats):
    model, tok, texts = tiny
    mask = torch.ones(L, H)
    mask[0, 2] = 0
    mask[1, 0] = 0
    masked = compute_head_stats(model, tok, texts, mask=mask, batch_size=4)
    for name in FEATURE_NAMES:
        t = getattr(masked, name)
        assert t[0, 2] == 0 and t[1, 0] == 0, name
    assert masked.importance[0, 0] > 0
    assert masked.base_accuracy == pytest.approx(Evaluator(model, tok, texts).accuracy(mask))
    assert not torch.equal(masked.importance[1], stats.importance[1])  # later layers see the pruning


def test_eager_and_sdpa_agree_and_model_restored(tiny):
    model, tok, texts = tiny
    ev = Evaluator(model, tok, texts)
    sdpa = ev.logits()
    with eager_attention(model):
        assert model.config._attn_implementation == "eager"
        eager = ev.logits()
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(eager, sdpa, atol=1e-5, rtol=0)
    model.train()
    try:
        compute_head_stats(model, tok, texts, batch_size=4)
        assert model.training
    finally:
        model.eval()
    assert not HeadGate(model).attached and all(not s.out_proj._forward_pre_hooks for s in find_attention_sites(model))


def test_deterministic_and_features(tiny, stats):
    model, tok, texts = tiny
    again = compute_head_stats(model, tok, texts, batch_size=4)
    assert again == stats
    feats = stats.as_features()
    assert feats.shape == (L * H, len(FEATURE_NAMES))
    assert feats[1 * H + 2, 0] == stats.importance[1, 2]
    assert feats[1 * H + 2, FEATURE_NAMES.index("output_norm")] == stats.output_norm[1, 2]
    z = stats.normalised().as_features()
    nonconstant = feats.std(0) > 0
    torch.testing.assert_close(z.mean(0), torch.zeros(len(FEATURE_NAMES)), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False)[nonconstant], torch.ones(int(nonconstant.sum())),
                               atol=1e-4, rtol=0)


def test_dict_round_trip(stats, tmp_path):
    restored = HeadStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert restored == stats
    stats.save(tmp_path / "stats.json")
    assert HeadStats.load(tmp_path / "stats.json") == stats
    with pytest.raises(ValueError):
        HeadStats(*(torch.zeros(2, 4),) * 4, torch.zeros(3, 4))
