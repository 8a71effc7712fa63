"""Tests of headprune.engine.export (save_pruned, fold_gates, compact) and headprune.engine.models (loading)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import transformers
from torch import nn
from tiny_models import FAMILIES, HEADS, LAYERS, gated_logits, tiny_batch, tiny_model
from transformers import AutoModelForSequenceClassification

import headprune
from headprune.engine.export import METADATA_FILE, compact, fold_gates, save_pruned
from headprune.engine.gating import HeadGate, UnsupportedArchitectureError, find_attention_sites, head_grid_shape
from headprune.engine.models import (
    HubUnreachableError,
    ModelLoadError,
    build_tiny_classifier,
    default_model_dir,
    load_classifier,
)

GRID = (LAYERS, HEADS)
COMPACT_FAMILIES = ("bert", "roberta", "electra", "distilbert")
# Head 1 of layer 0 and head 2 of layer 1 pruned, head 0 of layer 1 scaled by a float gate.
MASK = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.5, 1.0, 0.0, 1.0]])
# Layer 0 fully pruned, float gate in layer 1.
MASK_FULL_LAYER = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.25, 1.0]])



@functools.cache
def _model(family: str) -> nn.Module:
    """Shared tiny model; every test checks that export functions leave it unchanged."""
    return tiny_model(family)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == snapshot.keys()
    assert all(torch.equal(state[k], snapshot[k]) for k in state)
    assert all(not m._forward_pre_hooks for m in model.modules())


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------ save_pruned
@pytest.mark.parametrize("family", FAMILIES)
def test_save_pruned_reloads_in_plain_transformers(family: str, tmp_path: Path) -> None:
    model, batch = _model(family), tiny_batch()
    snapshot = _snapshot(model)
    gated = gated_logits(model, batch, MASK)
    out = save_pruned(model, MASK, tmp_path / "pruned")
    assert out == tmp_path / "pruned"
    assert {"config.json", "model.safetensors", METADATA_FILE} <= {p.name for p in out.iterdir()}
    reloaded, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert type(reloaded) is type(model)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert (gated_logits(reloaded.eval(), batch) - gated).abs().max() <= 1e-5
    _assert_unchanged(model, snapshot)


def test_save_pruned_loads_without_headprune(tmp_path: Path) -> None:
    model, batch = _model("bert"), tiny_batch()
    out = save_pruned(model, MASK, tmp_path / "pruned")
    torch.save({"batch": batch, "gated": gated_logits(model, batch, MASK)}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys
        import torch
        from transformers import AutoModelForSequenceClassification
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        model = AutoModelForSequenceClassification.from_pretrained({str(out)!r}).eval()
        with torch.no_grad():
            diff = (model(**expected["batch"]).logits - expected["gated"]).abs().max().item()
        assert "headprune" not in sys.modules, "headprune was imported"
        print("MAXDIFF", diff)
        """
    )
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    diff = float(done.stdout.split("MAXDIFF")[1])
    assert diff <= 1e-5


def test_save_pruned_metadata(tmp_path: Path) -> None:
    model = _model("bert")
    out = save_pruned(model, MASK, tmp_path / "pruned", source="tiny/bert")
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["pruned_heads"] == {"0": [1], "1": [2]}
    assert meta["mask"] == MASK.tolist()
    assert (meta["num_pruned"], meta["num_heads_total"], meta["scaled_heads"]) == (2, 8, 1)
    assert meta["grid"] == [LAYERS, HEADS] and meta["head_dim"] == 8
    assert meta["source"] == "tiny/bert"
    assert meta["model_class"] == "BertForSequenceClassification"
    assert meta["config"]["model_type"] == "bert"
    assert meta["config"]["num_attention_heads"] == HEADS and meta["config"]["num_hidden_layers"] == LAYERS
    assert meta["versions"] == {
        "headprune": headprune.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    created = datetime.fromisoformat(meta["created"])
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 600

    # Without `source`, the model's own name_or_path (here: the folder it was loaded from) is recorded.
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    again = save_pruned(reloaded, torch.ones(GRID), tmp_path / "again")
    meta = json.loads((again / METADATA_FILE).read_text())
    assert meta["source"] == str(out) and meta["num_pruned"] == 0 and meta["pruned_heads"] == {}


def test_save_pruned_with_tokenizer_round_trips_through_load_classifier(tmp_path: Path) -> None:
    model, tokenizer = build_tiny_classifier(seed=0)
    batch = tokenizer(["a gorgeous film", "dull , dull , dull"], return_tensors="pt", padding=True)
    mask = torch.ones(GRID)
    mask[0, 3] = 0
    gated = gated_logits(model, batch, mask)
    out = save_pruned(model, mask, tmp_path / "pruned", tokenizer=tokenizer)
    loaded, loaded_tokenizer = load_classifier(str(out))
    assert not loaded.training
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    again = loaded_tokenizer(["a gorgeous film", "dull , dull , dull"], return_tensors="pt", padding=True)
    assert torch.equal(again["input_ids"], batch["input_ids"])
    assert (gated_logits(loaded, again) - gated).abs().max() <= 1e-5


def test_exports_ignore_gates_attached_to_the_callers_model() -> None:
    model, batch = _model("bert"), tiny_batch()
    gated = gated_logits(model, batch, MASK)
    with HeadGate(model, MASK):
        folded = fold_gates(model, MASK)
        small = compact(model, MASK)
    assert (gated_logits(folded, batch) - gated).abs().max() <= 1e-5
    assert (gated_logits(small, batch) - gated).abs().max() <= 1e-4


def test_fold_all_ones_is_identity() -> None:
    model = _model("gpt2")
    folded = fold_gates(model, torch.ones(GRID))
    assert folded is not model
    _assert_unchanged(folded, _snapshot(model))


@pytest.mark.parametrize(
    "mask", [torch.ones(LAYERS, HEADS + 1), torch.ones(3, *GRID), torch.full(GRID, float("nan"))],
    ids=["wrong-grid", "per-example", "nan"],
)
def test_exports_reject_bad_masks(mask: torch.Tensor, tmp_path: Path) -> None:
    model = _model("bert")
    for export in (lambda: save_pruned(model, mask, tmp_path), lambda: compact(model, mask)):
        with pytest.raises(ValueError, match=r"\[2, 4\]|non-finite"):
            export()


def test_save_pruned_needs_a_pretrained_model(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="Sequential"):
        save_pruned(nn.Sequential(_model("bert").bert), MASK, tmp_path)


# --------------------------------------------------------------------------------------- compact
@pytest.mark.parametrize("mask", [MASK, MASK_FULL_LAYER], ids=["float", "full-layer"])
@pytest.mark.parametrize("family", COMPACT_FAMILIES)
def test_compact_keeps_logits_and_removes_parameters(family: str, mask: torch.Tensor) -> None:
    model, batch = _model(family), tiny_batch()
    snapshot = _snapshot(model)
    small = compact(model, mask)
    assert (gated_logits(small, batch) - gated_logits(model, batch, mask)).abs().max() <= 1e-4
    pruned_per_layer = (mask == 0).sum(dim=1)
    head_dim, hidden = 8, 32
    # each pruned head drops q/k/v rows (3 x [d, hidden] + 3 x [d]) and out-projection columns ([hidden, d])
    removed = int(pruned_per_layer.sum()) * (3 * head_dim * hidden + 3 * head_dim + hidden * head_dim)
    assert _num_params(small) == _num_params(model) - removed
    assert [s.num_heads for s in find_attention_sites(small)] == (HEADS - pruned_per_layer).tolist()
    _assert_unchanged(model, snapshot)


@pytest.mark.parametrize("family", COMPACT_FAMILIES)
def test_evenly_compacted_model_can_be_gated_again(family: str) -> None:
    model, batch = _model(family), tiny_batch()
    small = compact(model, torch.tensor([[1.0, 0.0, 1.0, 0.0]] * LAYERS))  # keeps heads 0 and 2
    assert head_grid_shape(small) == (LAYERS, 2)
    assert all(s.head_dim == 8 for s in find_attention_sites(small))
    regated = gated_logits(small, batch, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))  # drops old head 2 of layer 0
    expected = gated_logits(model, batch, torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]]))
    assert (regated - expected).abs().max() <= 1e-5


def test_save_pruned_refuses_a_compacted_model(tmp_path: Path) -> None:
    small = compact(_model("bert"), torch.tensor([[1.0, 0.0, 1.0, 0.0]] * LAYERS))
    with pytest.raises(ValueError, match="compacted"):
        save_pruned(small, torch.ones(LAYERS, 2), tmp_path)


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - set(COMPACT_FAMILIES)))
def test_compact_rejects_other_families(family: str) -> None:
    model = _model(family)
    with pytest.raises(UnsupportedArchitectureError, match=type(model).__name__):
        compact(model, MASK)


# --------------------------------------------------------------------------------------- loading
def test_load_minilm_is_deterministic_quiet_and_in_eval_mode(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="headprune.engine.models")
    torch.manual_seed(123)
    rng = torch.random.get_rng_state()
    first, tokenizer = load_classifier("minilm")
    assert torch.equal(torch.random.get_rng_state(), rng), "loading must not consume the global RNG"
    second, _ = load_classifier("minilm", seed=0)
    three, _ = load_classifier("minilm", num_labels=3, seed=1)
    assert torch.equal(first.classifier.weight, second.classifier.weight)
    assert not first.training and head_grid_shape(first) == (6, 12)
    assert tokenizer.vocab_size == 30522
    batch = tokenizer(["a gorgeous film", "dull"], return_tensors="pt", padding=True)
    assert gated_logits(first, batch).shape == (2, 2) and gated_logits(three, batch).shape == (2, 3)
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "MISSING" not in err and "Loading weights" not in err, err
    records = [r for r in caplog.records if r.name == "headprune.engine.models"]
    assert len(records) == 3 and all("classifier" in r.getMessage() for r in records)
    assert default_model_dir().joinpath("config.json").is_file()


def test_load_hub_id_offline_says_hub_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(HubUnreachableError) as raised:
        load_classifier("headprune-tests/no-such-model")
    message = str(raised.value)
    assert isinstance(raised.value, OSError)
    assert "headprune-tests/no-such-model" in message and "unreachable" in message
    assert "local model folder" in message and "'minilm'" in message


def test_load_local_folder_errors_name_the_folder_and_the_missing_piece(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"missing.*does not exist"):
        load_classifier(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match=rf"{tmp_path}.*config\.json"):
        load_classifier(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors"):
        load_classifier(str(tmp_path))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        load_classifier(str(tmp_path))
    out = save_pruned(_model("bert"), MASK, tmp_path / "no-tokenizer")
    with pytest.raises(ModelLoadError, match=r"no-tokenizer.*tokenizer"):
        load_classifier(str(out))


def test_build_tiny_classifier_is_small_seeded_and_uses_the_minilm_vocabulary() -> None:
    model, tokenizer = build_tiny_classifier(seed=0)
    again, _ = build_tiny_classifier(seed=0)
    other, _ = build_tiny_classifier(seed=1)
    assert not model.training and head_grid_shape(model) == (2, 4)
    assert model.config.hidden_size == 64 and model.config.intermediate_size == 128
    assert model.config.vocab_size == tokenizer.vocab_size == 30522
    assert _num_params(model) < 2_500_000
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(model.classifier.weight, other.classifier.weight)
    with pytest.raises(ValueError, match="multiple"):
        build_tiny_classifier(hidden=30, num_heads=4)
