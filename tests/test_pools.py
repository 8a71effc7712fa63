"""Named defender pools (headprune.data.pools) and the runner's ``clean_pool`` setting."""

from __future__ import annotations

import argparse

import pytest

from headprune.cli.settings import add_setting_arguments, run_settings_from_args
from headprune.compare import RunSettings
from headprune.compare import plan_grid
from headprune.data import DEFENDER_POOLS, load_defender_pool, load_glue_sst2_train, load_sst2
from headprune.data.pools import check_unlabelled_pool, defender_unlabelled_texts, unlabelled_pool_texts
from headprune.common.provenance import config_hash


def test_the_glue_pool_starts_with_the_dev_rows_and_never_holds_a_test_or_dev_sentence() -> None:
    dev, test = load_sst2("dev"), load_sst2("test")
    pool = load_defender_pool("sst2-dev+glue-train")
    assert list(pool.take(len(dev))) == list(dev)
    glue_part = pool.sentences[len(dev):]
    held = {" ".join(s.lower().split()) for s in dev.sentences + test.sentences}
    assert not held & {" ".join(s.lower().split()) for s in glue_part}
    assert len(set(zip(glue_part, pool.labels[len(dev):]))) == len(glue_part)  # no repeats
    glue = load_glue_sst2_train()
    assert 60_000 < len(glue_part) <= len(glue)
    assert glue_part[:50] != glue.sentences[:50]  # permuted, not the file's order
    assert list(load_defender_pool("sst2-dev+glue-train").take(3000)) == list(pool.take(3000))  # fixed order
    assert list(load_defender_pool("sst2-dev")) == list(dev)


def test_an_unknown_pool_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown defender pool 'glue'.*sst2-dev\+glue-train"):
        load_defender_pool("glue")
    with pytest.raises(ValueError, match="unknown clean_pool 'glue'"):
        RunSettings.from_values(clean_pool="glue")


def test_clean_pool_is_hashed_only_when_given() -> None:
    default = RunSettings.from_values(clean_rows=2256)
    pooled = RunSettings.from_values(clean_rows=2256, clean_pool="sst2-dev+glue-train")
    assert "clean_pool" not in default.defense_config("ft")
    assert pooled.defense_config("ft")["clean_pool"] == "sst2-dev+glue-train"
    assert config_hash(default.defense_config("ft")) != config_hash(pooled.defense_config("ft"))
    parser = argparse.ArgumentParser()
    add_setting_arguments(parser)
    assert run_settings_from_args(parser.parse_args(["--clean-rows", "2256", "--clean-pool",
                                                     "sst2-dev+glue-train"])) == pooled
    assert set(DEFENDER_POOLS) == {"sst2-dev", "sst2-dev+glue-train", "offenseval-dev", "offenseval-dev+train"}


def test_unlabelled_texts_come_after_the_labelled_rows_and_grow_by_prefix() -> None:
    pool = load_defender_pool("sst2-dev+glue-train")
    small, large = unlabelled_pool_texts("sst2-dev+glue-train", 872, 50), unlabelled_pool_texts("sst2-dev+glue-train",
                                                                                               872, 200)
    assert large[:50] == small and small == list(pool.sentences[872:922])
    assert not set(large) & set(pool.sentences[:872])  # never a labelled row (nor dev / test: the pool's rule)
    assert unlabelled_pool_texts("sst2-dev+glue-train", 2256, 10) == list(pool.sentences[2256:2266])
    with pytest.raises(ValueError, match=r"do not fit the \d+ rows"):
        unlabelled_pool_texts("sst2-dev+glue-train", 872, len(pool))


def test_a_defenders_unlabelled_texts_are_its_own_tasks_pool_after_its_labelled_rows() -> None:
    pool = load_defender_pool("offenseval-dev+train")
    assert defender_unlabelled_texts(None, "offenseval", "v", 872, 20) == list(pool.sentences[872:892])
    assert defender_unlabelled_texts("sst2-dev+glue-train", "sst2", "v", 2256, 5) == \
        unlabelled_pool_texts("sst2-dev+glue-train", 2256, 5)
    with pytest.raises(ValueError, match="'offenseval-dev' are not a prefix"):  # checked before any row is read
        defender_unlabelled_texts("offenseval-dev", "sst2", "v", 872, 5)
    with pytest.raises(ValueError, match="do not fit"):
        defender_unlabelled_texts(None, "sst2", "v", 872, 10 ** 7)


def test_unlabelled_rows_is_hashed_only_when_given_and_refused_where_no_pool_holds_the_labelled_rows() -> None:
    default, extra = RunSettings.from_values(), RunSettings.from_values(unlabelled_rows=2000)
    assert "unlabelled_rows" not in default.defense_config("purify")
    assert extra.defense_config("purify")["unlabelled_rows"] == 2000
    parser = argparse.ArgumentParser()
    add_setting_arguments(parser)
    assert run_settings_from_args(parser.parse_args(["--unlabelled-rows", "2000"])) == extra
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match="unlabelled_rows must be an integer >= 1"):
            RunSettings.from_values(unlabelled_rows=bad)
    assert check_unlabelled_pool(None, "sst2", "v") == "sst2-dev+glue-train"
    assert check_unlabelled_pool(None, "offenseval", "v") == "offenseval-dev+train"
    assert plan_grid(["minilm-offenseval-syntactic"], ["purify"], [0], extra)[0].config["unlabelled_rows"] == 2000
    with pytest.raises(ValueError, match="trained on imdb, which has no unlabelled pool"):
        check_unlabelled_pool(None, "imdb", "v")
    with pytest.raises(ValueError, match="'offenseval-dev' are not a prefix of the unlabelled pool 'sst2-dev"):
        check_unlabelled_pool("offenseval-dev", "sst2", "v")


def test_offensevals_unlabelled_tweets_follow_its_defender_rows_and_are_never_dev_or_test() -> None:
    from headprune.data import load_offenseval

    pool, dev_rows = load_defender_pool("offenseval-dev+train"), load_defender_pool("offenseval-dev")
    assert list(pool.take(len(dev_rows))) == list(dev_rows)
    texts = unlabelled_pool_texts("offenseval-dev+train", len(dev_rows), 5000)
    held = load_offenseval("dev").sentences + load_offenseval("test").sentences
    assert not {" ".join(t.lower().split()) for t in texts} & {" ".join(t.lower().split()) for t in held}
    assert len(set(texts)) == len(texts)
