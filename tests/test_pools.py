"""Named defender pools (headprune.data.pools) and the runner's ``clean_pool`` setting."""

from __future__ import annotations

import argparse

import pytest

from headprune.cli.settings import add_setting_arguments, run_settings_from_args
from headprune.compare import RunSettings
from headprune.data import DEFENDER_POOLS, load_defender_pool, load_glue_sst2_train, load_sst2
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
    assert set(DEFENDER_POOLS) == {"sst2-dev", "sst2-dev+glue-train", "offenseval-dev"}
