"""IncrementalForward equals a full forward; MaskScorer memoises by mask."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, DistilBertConfig

from headprune.data import LabelledTexts, load_sst2
from headprune.envs.incremental import IncrementalForward, MaskScorer, mask_key
from headprune.engine.evaluator import Evaluator
from headprune.victims import Victim



@pytest.fixture(scope="module")
def texts() -> LabelledTexts:
    return load_sst2("dev").take(56)


def _check_random_walk(inc: IncrementalForward, ev: Evaluator, steps: int, seed: int) -> set[int]:
    """Flip random heads (prune and un-prune) and compare with a full forward after each change."""
    L, H = ev.head_shape
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(L, H)
    starts: set[int] = set()
    for _ in range(steps):
        previous = mask.clone()
        layer, head = int(torch.randint(L, (1,), generator=gen)), int(torch.randint(H, (1,), generator=gen))
        mask[layer, head] = 1.0 - mask[layer, head]
        fast, full = inc.logits(mask), ev.logits(mask)
        torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
        assert torch.equal(fast.argmax(-1), full.argmax(-1))
        changed = (mask != previous).any(dim=1).nonzero()
        assert inc.last_start_layer == int(changed[0])
        starts.add(inc.last_start_layer)
    return starts


def _model(kind: str, victim: Victim, attn: str) -> torch.nn.Module:
    """The trained tiny victim (2 layers: every change starts in the first or the [CLS]-only last
    layer) or a random-init 4-layer BERT (middle layers recomputed in full), with ``attn``."""
    if kind == "victim":
        model = copy.deepcopy(victim.model)
    else:
        torch.manual_seed(0)
        config = BertConfig(vocab_size=victim.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4,
                            num_attention_heads=4, intermediate_size=64, num_labels=2)
        model = AutoModelForSequenceClassification.from_config(config).eval()
    model.set_attn_implementation(attn)
    return model


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["victim", "bert-4-layers"])
def test_incremental_equals_full_forward(tiny_victim: Victim, texts: LabelledTexts, kind: str, attn: str) -> None:
    model = _model(kind, tiny_victim, attn)
    ev = Evaluator(model, tiny_victim.tokenizer, texts, batch_size=32, max_length=64)
    inc = IncrementalForward(ev)
    assert inc.incremental
    torch.testing.assert_close(inc.logits(torch.ones(ev.head_shape)), ev.logits(), atol=1e-5, rtol=0)
    assert inc.last_start_layer == 0
    starts = _check_random_walk(inc, ev, steps=8, seed=1)
    assert {0, ev.head_shape[0] - 1} <= starts  # changes started in the first and in the last layer


def test_incremental_earlier_layer_unchanged_mask_and_reset(tiny_victim: Victim, texts: LabelledTexts) -> None:
    ev = Evaluator(tiny_victim.model, tiny_victim.tokenizer, texts, batch_size=32, max_length=64)
    inc = IncrementalForward(ev)
    L, H = ev.head_shape
    mask = torch.ones(L, H)
    inc.logits(mask)
    mask[L - 1, 0] = 0  # prune in the last layer: only it is recomputed
    torch.testing.assert_close(inc.logits(mask), ev.logits(mask), atol=1e-5, rtol=0)
    assert inc.last_start_layer == L - 1
    mask[0, 2] = 0  # then in an EARLIER layer than the cached change
    torch.testing.assert_close(inc.logits(mask), ev.logits(mask), atol=1e-5, rtol=0)
    assert inc.last_start_layer == 0
    same = inc.logits(mask.clone())  # unchanged mask: no layer recomputed
    assert inc.last_start_layer == L
    torch.testing.assert_close(same, ev.logits(mask), atol=1e-5, rtol=0)
    full = torch.ones(L, H)  # back to the unpruned model (what an env reset does)
    torch.testing.assert_close(inc.logits(full), ev.logits(), atol=1e-5, rtol=0)
    assert inc.last_start_layer == 0
    inc.reset()
    torch.testing.assert_close(inc.logits(mask), ev.logits(mask), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="mask must be"):
        inc.logits(torch.ones(L + 1, H))


def test_other_families_fall_back_to_full_forward(tiny_victim: Victim, texts: LabelledTexts) -> None:
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=tiny_victim.tokenizer.vocab_size, dim=32, n_layers=2, n_heads=4,
                              hidden_dim=64, dropout=0.0, attention_dropout=0.0, num_labels=2)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    ev = Evaluator(model, tiny_victim.tokenizer, texts, batch_size=32, max_length=64)
    inc = IncrementalForward(ev)
    assert not inc.incremental
    mask = torch.ones(ev.head_shape)
    mask[1, 3] = 0
    torch.testing.assert_close(inc.logits(mask), ev.logits(mask), atol=0, rtol=0)
    assert inc.last_start_layer == 0


def test_mask_scorer_memoises(tiny_victim: Victim, texts: LabelledTexts) -> None:
    ev = Evaluator(tiny_victim.model, tiny_victim.tokenizer, texts, batch_size=32, max_length=64)
    calls: list[bytes] = []

    def proxy(mask: torch.Tensor) -> float:
        calls.append(mask_key(mask))
        return float(mask.sum()) / mask.numel()

    scorer = MaskScorer(IncrementalForward(ev), proxy, memo_size=2)
    L, H = ev.head_shape
    a, b, c = torch.ones(L, H), torch.ones(L, H), torch.ones(L, H)
    b[0, 1] = 0
    c[1, 2] = 0
    sa = scorer(a)
    assert sa.total == len(texts)
    assert sa.accuracy == sa.correct / len(texts) == ev.accuracy()
    assert scorer(b).correct == int((ev.predictions(b) == ev.require_labels()).sum())
    assert scorer(a.clone()) is sa  # memo hit: neither forward nor proxy ran
    assert (scorer.hits, scorer.misses, len(calls)) == (1, 2, 2)
    scorer(c)  # the memo holds 2 masks: b (least recently used) is dropped
    assert mask_key(b) not in scorer.memo and mask_key(a) in scorer.memo
    assert mask_key(np.array([1, 0], dtype=np.int8)) == mask_key(torch.tensor([1.0, 0.0]))
