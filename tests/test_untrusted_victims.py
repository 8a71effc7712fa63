"""Untrusted victim folders: the card is checked against a schema, the files against their digests,
the model and tokenizer against what headprune can clean, and a victim says whether it is usable."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file, save_file
from transformers import BertTokenizerFast

from headprune.engine.models import ModelLoadError, UnsupportedModelError
from headprune.victims.card import CorruptVictimError, VictimCardError, min_usable_acc
from headprune.victims import PRESETS, VictimConfig, VictimWarning, build_victim, load_victim, victim_summary

EMBEDDING = "bert.embeddings.word_embeddings.weight"


def _copy(victim: Any, tmp_path: Path, name: str = "victim") -> Path:
    return Path(shutil.copytree(victim.path, tmp_path / name))


def _edit_card(folder: Path, edit: Any) -> None:
    card = json.loads((folder / "victim.json").read_text())
    edit(card)
    (folder / "victim.json").write_text(json.dumps(card))


def _drop_digests(folder: Path) -> None:
    _edit_card(folder, lambda card: card.pop("files", None))


def _zero_half_embedding(folder: Path) -> None:
    tensors = load_file(folder / "model.safetensors")
    emb = tensors[EMBEDDING]
    emb[: emb.shape[0] // 2] = 0
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_card_path_traversal_is_refused_and_writes_nothing(tiny_victim, tmp_path):
    from headprune.envs import HeadPruneEnv

    folder = _copy(tiny_victim, tmp_path)
    _edit_card(folder, lambda card: card["config"].update(attack="x/../../../escaped_by_card/y"))
    cache = tmp_path / "a" / "b" / "cache"
    with pytest.raises(ValueError, match="attack"):
        load_victim(folder)
    with pytest.raises(ValueError, match="attack"):
        HeadPruneEnv(str(folder), cache=cache, progress=False)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and folder not in p.parents]
    assert written == [] and not (tmp_path / "a" / "escaped_by_card").exists()


@pytest.mark.parametrize(
    ("knob", "value"),
    [("attack", "../up"), ("attack", "bad nets"), ("attack", "nosuchattack"), ("model", "tiny\n"), ("lr", float("nan")),
     ("epochs", float("inf")), ("seed", True), ("seed", -1), ("batch_size", 2.5), ("target_label", 5),
     ("max_length", "64"), ("poison_rate", 1.0)],
)
def test_config_fields_are_checked(knob, value):
    with pytest.raises(ValueError, match=knob if knob != "attack" or value != "nosuchattack" else "unknown attack"):
        VictimConfig(**{"model": "tiny", "attack": "badnets", knob: value})


def test_valid_config_names_are_unchanged():
    assert PRESETS["tiny"].name == "tiny-badnets-p0.2-s0-4207a22c"
    assert PRESETS["minilm-syntactic"].name == "minilm-syntactic-p0.2-s0-7810e385"
    assert VictimConfig(model="tiny", attack="BadNets", epochs=3).name.startswith("tiny-BadNets-p0.2-s0-")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(acc="high"), "field 'acc'"),
        (lambda c: c.update(lfr=1.5), "field 'lfr'"),
        (lambda c: c.update(clean_model="../../etc"), "field 'clean_model'"),
        (lambda c: c.update(files={"../model.safetensors": "0" * 64}), "file name"),
        (lambda c: c.update(colour="red"), "unknown fields"),
        (lambda c: c.update(name="../../escaped"), "field 'name'"),
        (lambda c: c.pop("config"), "missing fields"),
        (lambda c: c.update(train_steps=-3), "field 'train_steps'"),
        (lambda c: c["config"].update(epochs="2"), "epochs"),
    ],
)
def test_card_fields_are_checked(tiny_victim, tmp_path, edit, message):
    folder = _copy(tiny_victim, tmp_path)
    _edit_card(folder, edit)
    with pytest.raises(VictimCardError, match=message) as raised:
        load_victim(folder)
    assert "victim.json" in str(raised.value) and "\n" not in str(raised.value)


def test_nan_in_a_card_is_refused(tiny_victim, tmp_path):
    folder = _copy(tiny_victim, tmp_path)
    text = (folder / "victim.json").read_text()
    (folder / "victim.json").write_text(re.sub(r'"acc": [0-9.e-]+', '"acc": NaN', text, count=1))
    with pytest.raises(VictimCardError, match="NaN"):
        load_victim(folder)


def test_card_records_the_model_digest(tiny_victim):
    files = tiny_victim.card["files"]
    assert set(files) >= {"model.safetensors", "config.json"} and all(len(d) == 64 for d in files.values())


def test_corrupted_weights_are_refused_with_the_force_hint(tiny_victim, tmp_path):
    folder = _copy(tiny_victim, tmp_path)
    _zero_half_embedding(folder)
    with pytest.raises(CorruptVictimError, match=r"model\.safetensors.*--force"):
        load_victim(folder)


def test_corrupted_cached_victim_is_rebuilt(tiny_victim, victim_cache, tmp_path):
    cache = tmp_path / "cache"
    for name in (tiny_victim.name, tiny_victim.card["clean_model"]):
        shutil.copytree(victim_cache / "victims" / name, cache / "victims" / name)
    _zero_half_embedding(cache / "victims" / tiny_victim.name)
    with pytest.warns(VictimWarning, match="rebuilding"):
        rebuilt = build_victim(config=PRESETS["tiny"], cache=cache, progress=False)
    emb = rebuilt.model.get_input_embeddings().weight
    assert emb[: emb.shape[0] // 2].abs().sum() > 0
    assert rebuilt.card["acc"] >= 0.65 and rebuilt.card["lfr"] >= 0.9
    load_victim(rebuilt.path)  # the new card's digests match the new files


def test_truncated_safetensors_is_one_line_naming_the_file(tiny_victim, tmp_path):
    folder = _copy(tiny_victim, tmp_path)
    _drop_digests(folder)  # an exported folder without digests: the reader itself must say what is wrong
    weights = folder / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(ModelLoadError, match="truncated") as raised:
        load_victim(folder)
    assert str(weights) in str(raised.value) and "\n" not in str(raised.value)


def test_folder_without_tokenizer_files_is_refused(tiny_victim, tmp_path):
    folder = _copy(tiny_victim, tmp_path)
    _drop_digests(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_victim(folder)


def test_tokenizer_of_another_vocabulary_is_refused(tiny_victim, tmp_path):
    folder = _copy(tiny_victim, tmp_path)
    _drop_digests(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"word{i}" for i in range(995))]
    BertTokenizerFast(vocab={word: i for i, word in enumerate(words)}).save_pretrained(folder)
    with pytest.raises(ModelLoadError, match=r"1000 tokens but the model's embedding has 30522 rows"):
        load_victim(folder)


def test_victim_without_a_classification_head_is_refused(tiny_victim, tmp_path):
    folder = _copy(tiny_victim, tmp_path)
    _drop_digests(folder)
    (folder / "model.safetensors").unlink()
    tiny_victim.model.bert.save_pretrained(folder)  # a BertModel checkpoint: config and weights without a head
    with pytest.raises(UnsupportedModelError, match="classification head"):
        load_victim(folder)


def test_usability_threshold():
    assert min_usable_acc(0.5) == 0.6
    assert min_usable_acc(0.85) == pytest.approx(0.95)


def test_tiny_preset_is_usable(tiny_victim):
    card = tiny_victim.card
    assert card["usable"] is True and card["acc"] >= card["min_acc"] >= 0.6
    assert "NOT USABLE" not in victim_summary(card)


def test_untrained_victim_says_loudly_it_is_not_usable(tmp_path):
    config = VictimConfig(model="tiny", attack="none", poison_rate=0.0, epochs=0.01, lr=1e-6, max_length=16)
    with pytest.warns(VictimWarning, match="NOT USABLE"):
        victim = build_victim(config=config, cache=tmp_path, progress=False)
    assert victim.card["usable"] is False and victim.card["acc"] < victim.card["min_acc"]
    assert "NOT USABLE" in victim_summary(victim.card)
    with pytest.warns(VictimWarning, match="NOT USABLE"):
        load_victim(victim.path)


def test_cache_file_stem_is_never_a_path(tiny_victim):
    from dataclasses import replace

    assert tiny_victim.file_stem == tiny_victim.name
    odd = replace(tiny_victim, config=VictimConfig(model="/models/my model v2", attack="badnets"))
    assert odd.name.startswith("my model v2-") and re.fullmatch(r"victim-[0-9a-f]{16}", odd.file_stem)
