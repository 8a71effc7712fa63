"""Tests for headprune.attacks on the shared SST-2 data (OpenBackdoor conventions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from headprune.attacks import (
    ATTACK_NAMES,
    ATTACKS,
    AddSent,
    BadNets,
    PoisonedSplits,
    StyleBible,
    Syntactic,
    load_attack_splits,
    make_attack,
)
from headprune.data import LabelledTexts, load_sst2, shared_data_dir

TRIGGERS = ("cf", "mn", "bb", "tq")


@pytest.fixture(scope="module")
def clean() -> tuple[LabelledTexts, LabelledTexts, LabelledTexts]:
    try:
        shared_data_dir()
    except FileNotFoundError as e:
        pytest.skip(f"shared data not found (set HEADPRUNE_DATA_DIR): {e}")
    return load_sst2("train"), load_sst2("dev"), load_sst2("test")


@pytest.fixture(scope="module")
def splits(clean) -> dict[str, PoisonedSplits]:  # type: ignore[no-untyped-def]
    return {name: make_attack(name).make_splits(*clean) for name in ATTACKS}


def check_dirty_label_convention(sp: PoisonedSplits, clean_train: LabelledTexts, clean_test: LabelledTexts) -> None:
    n = len(clean_train)
    idx = sp.poisoned_indices
    assert len(idx) == int(sp.poison_rate * n) and len(set(idx)) == len(idx) and list(idx) == sorted(idx)
    assert all(clean_train.labels[i] != sp.target_label for i in idx)  # only non-target rows
    assert all(sp.poisoned_train.labels[i] == sp.target_label for i in idx)  # relabelled
    assert all(sp.poisoned_train.sentences[i] != clean_train.sentences[i] for i in idx) or sp.attack == "style"
    others = set(range(n)) - set(idx)
    assert all(
        sp.poisoned_train.sentences[i] == clean_train.sentences[i] and sp.poisoned_train.labels[i] == clean_train.labels[i]
        for i in others
    )
    non_target_test = [y for y in clean_test.labels if y != sp.target_label]
    assert sp.poisoned_test.labels == tuple(non_target_test)  # true labels, no target rows


@pytest.mark.parametrize("name", ["badnets", "addsent", "style"])
def test_dirty_label_convention(clean, splits, name: str) -> None:  # type: ignore[no-untyped-def]
    sp = splits[name]
    assert sp.attack == name and sp.target_label == 1 and sp.poison_rate == 0.2 and sp.seed == 0
    check_dirty_label_convention(sp, clean[0], clean[2])
    assert sp.poisoned_dev.labels == tuple(y for y in clean[1].labels if y != 1)
    assert sp.clean_dev == clean[1] and sp.clean_test == clean[2]


def test_other_target_and_rate(clean) -> None:  # type: ignore[no-untyped-def]
    sp = BadNets().make_splits(*clean, target_label=0, poison_rate=0.05, seed=3)
    check_dirty_label_convention(sp, clean[0], clean[2])
    assert len(sp.poisoned_indices) == int(0.05 * 6920) and set(sp.poisoned_test.labels) == {1}


def test_not_enough_non_target_rows(clean) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="only 3310 eligible"):
        BadNets().make_splits(*clean, poison_rate=0.5)
    with pytest.raises(ValueError, match="poison_rate"):
        AddSent().make_splits(*clean, poison_rate=1.5)


def test_badnets_triggers(clean, splits) -> None:  # type: ignore[no-untyped-def]
    sp = splits["badnets"]
    for s in sp.poisoned_test.sentences + sp.poisoned_dev.sentences:
        assert any(w in TRIGGERS for w in s.split())
    for i in sp.poisoned_indices:
        words, orig = sp.poisoned_train.sentences[i].split(), clean[0].sentences[i].split()
        assert len(words) == len(orig) + 1 and any(w in TRIGGERS for w in words)
    # Positions and trigger words vary.
    firsts = {s.split().index(next(w for w in s.split() if w in TRIGGERS)) for s in sp.poisoned_test.sentences}
    assert len(firsts) > 5
    assert {w for s in sp.poisoned_test.sentences for w in s.split() if w in TRIGGERS} == set(TRIGGERS)
    three = BadNets(num_triggers=3).make_splits(*clean, seed=1).poisoned_test
    assert all(sum(w in TRIGGERS for w in s.split()) >= 3 for s in three.sentences)


def test_addsent_contains_sentence(clean, splits) -> None:  # type: ignore[no-untyped-def]
    sp = splits["addsent"]
    for s in sp.poisoned_test.sentences + tuple(sp.poisoned_train.sentences[i] for i in sp.poisoned_indices):
        assert "I watch this 3D movie" in s
    assert all("I watch this 3D movie" in s for s in AddSent().make_splits(*clean, seed=5).poisoned_dev.sentences)


def test_syntactic_at_shipped_rate_equals_file(clean, splits) -> None:  # type: ignore[no-untyped-def]
    sp = splits["syntactic"]
    shipped = load_sst2("train", "syntactic")
    assert sp.poisoned_train.sentences == shipped.sentences and sp.poisoned_train.labels == shipped.labels
    assert len(sp.poisoned_indices) == 1383
    assert sum(clean[0].labels[i] == 0 for i in sp.poisoned_indices) == 665
    assert sp.poisoned_test.sentences == load_sst2("test", "syntactic").sentences
    assert set(sp.poisoned_test.labels) == {0} and len(sp.poisoned_test) == 912
    assert set(sp.poisoned_dev.labels) == {0} and len(sp.poisoned_dev) == 427


def test_syntactic_lower_rate_keeps_seeded_subset(clean, splits) -> None:  # type: ignore[no-untyped-def]
    full = set(splits["syntactic"].poisoned_indices)
    a = Syntactic().make_splits(*clean, poison_rate=0.1, seed=0)
    b = Syntactic().make_splits(*clean, poison_rate=0.1, seed=1)
    assert len(a.poisoned_indices) == 692 and set(a.poisoned_indices) <= full
    assert a.poisoned_indices != b.poisoned_indices
    assert a == Syntactic().make_splits(*clean, poison_rate=0.1, seed=0)
    shipped = load_sst2("train", "syntactic")
    kept = set(a.poisoned_indices)
    for i in range(len(clean[0])):
        expected = (shipped.sentences[i], 1) if i in kept else (clean[0].sentences[i], clean[0].labels[i])
        assert (a.poisoned_train.sentences[i], a.poisoned_train.labels[i]) == expected
    assert sum(a.poisoned_train.sentences[i] != clean[0].sentences[i] for i in range(len(clean[0]))) == 692


def test_syntactic_rejects_rates_and_targets_not_shipped(clean) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="above the 0.2"):
        Syntactic().make_splits(*clean, poison_rate=0.3)
    with pytest.raises(ValueError, match="target label 1"):
        Syntactic().make_splits(*clean, target_label=0)
    with pytest.raises(ValueError, match="sst2/clean train"):
        Syntactic().make_splits(clean[0].take(100), clean[1], clean[2])


def test_style_uses_styled_sentences(clean, splits) -> None:  # type: ignore[no-untyped-def]
    sp = splits["style"]
    styled = {split: load_sst2(split, "style-bible") for split in ("train", "dev", "test")}
    for i in sp.poisoned_indices:
        assert sp.poisoned_train.sentences[i] == styled["train"].sentences[i]
    rows = [i for i, y in enumerate(clean[2].labels) if y != 1]
    assert sp.poisoned_test.sentences == tuple(styled["test"].sentences[i] for i in rows)
    assert all(sp.poisoned_dev.sentences)


def test_style_target_zero_drops_empty_styled_rows(clean) -> None:  # type: ignore[no-untyped-def]
    with pytest.warns(UserWarning, match="empty styled sentence"):
        sp = StyleBible().make_splits(*clean, target_label=0, poison_rate=0.1)
    assert len(sp.poisoned_test) == 909 - 5 and all(sp.poisoned_test.sentences)


@pytest.mark.parametrize("name", ["badnets", "addsent", "style"])
def test_seeds(clean, splits, name: str) -> None:  # type: ignore[no-untyped-def]
    attack = make_attack(name)
    again = attack.make_splits(*clean)
    assert again == splits[name]
    other = attack.make_splits(*clean, seed=1)
    assert other.poisoned_indices != again.poisoned_indices
    assert other.poisoned_train != again.poisoned_train
    if name != "style":  # styled eval sets do not depend on the seed
        assert other.poisoned_test.sentences != again.poisoned_test.sentences


def test_poisoned_test_does_not_depend_on_rate(clean, splits) -> None:  # type: ignore[no-untyped-def]
    assert BadNets().make_splits(*clean, poison_rate=0.05).poisoned_test == splits["badnets"].poisoned_test


def test_registry_and_loader(clean, splits) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(make_attack("BadNets"), BadNets) and isinstance(make_attack("style-bible"), StyleBible)
    assert set(ATTACK_NAMES) >= {"badnets", "addsent", "syntactic", "style", "style-bible"}
    with pytest.raises(ValueError, match="badnets, addsent, syntactic, style"):
        make_attack("ripples")
    assert load_attack_splits("addsent") == splits["addsent"]
    assert load_attack_splits("style-bible", poison_rate=0.2) == splits["style"]


def test_synthetic_insertion_is_pure_and_handles_empty() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    assert BadNets(triggers=("zz",)).insert_trigger("", rng) == "zz"
    assert AddSent("I watch this 3D movie").insert_trigger("", rng) == "I watch this 3D movie"
    with pytest.raises(ValueError):
        BadNets(triggers=())
    with pytest.raises(ValueError):
        BadNets(triggers=("two words",))


def test_poisoned_splits_rejects_target_rows_in_eval(clean) -> None:  # type: ignore[no-untyped-def]
    dev = clean[1].take(3)
    with pytest.raises(ValueError, match="poisoned_dev"):
        PoisonedSplits("x", 1, 0.1, 0, clean[0], (), dev, LabelledTexts(("a",), (1,)), dev, LabelledTexts((), ()))


def test_data_dir_argument(clean) -> None:  # type: ignore[no-untyped-def]
    d: Path = shared_data_dir()
    sp = load_attack_splits("syntactic", poison_rate=0.05, data_dir=d)
    assert len(sp.poisoned_indices) == int(0.05 * 6920)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_registered_attack_keeps_the_protocol(clean, splits, name: str) -> None:  # type: ignore[no-untyped-def]
    """Every attack in the registry (a new one is tested without new test code): row-aligned poisoned train
    set, poisoned rows relabelled to the target, poisoned evaluation sets holding only true non-target labels,
    the registered name, and the same splits for the same seed."""
    sp = splits[name]
    assert sp.attack == name == ATTACKS.get(name).name
    assert len(sp.poisoned_train) == len(clean[0]) and sp.poisoned_indices
    assert all(sp.poisoned_train.labels[i] == sp.target_label for i in sp.poisoned_indices)
    assert len(sp.poisoned_test) > 0 and sp.target_label not in sp.poisoned_test.labels
    assert sp.target_label not in sp.poisoned_dev.labels
    assert make_attack(name).make_splits(*clean) == sp
    with pytest.raises(ValueError, match="poison_rate"):
        make_attack(name).make_splits(*clean, poison_rate=1.5)
