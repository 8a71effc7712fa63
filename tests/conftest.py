"""Shared fixtures: the tiny backdoored victim, trained once per test session.

The tiny preset is a random-init 2-layer x 4-head BERT trained on BadNets-poisoned SST-2 (about a
minute on 2 CPU cores, plus its clean reference). It is cached in a session temp folder, or in
``$HEADPRUNE_TEST_CACHE`` when set (handy when iterating locally: the victim is then reused).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from headprune.data import shared_data_dir
from headprune.envs.config import HeadPruneConfig
from headprune.victims import PRESETS, Victim, build_victim


@pytest.fixture(scope="session")
def victim_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    override = os.environ.get("HEADPRUNE_TEST_CACHE")
    return Path(override) if override else tmp_path_factory.mktemp("headprune-cache")


@pytest.fixture(scope="session")
def tiny_victim(victim_cache: Path) -> Victim:
    """The ``tiny`` preset victim (BadNets, target 1). Tests must not modify its model in place."""
    return build_victim(config=PRESETS["tiny"], cache=victim_cache, progress=False)


@pytest.fixture(scope="module")
def shared() -> Path:
    """The shared data folder; the test is skipped where it is missing (set ``HEADPRUNE_DATA_DIR``)."""
    try:
        return shared_data_dir()
    except FileNotFoundError as e:
        pytest.skip(f"shared data not found (set HEADPRUNE_DATA_DIR): {e}")


@pytest.fixture(scope="session")
def small_env_config(victim_cache: Path) -> Callable[..., HeadPruneConfig]:
    """The one small env config of the tests: ``small_env_config(seed=0, **fields)`` is a
    :class:`HeadPruneConfig` with 80 validation and 64 statistics rows, head statistics cached in the test
    cache (not the user's) and no progress bars; ``fields`` (e.g. ``clean_data``, ``operation``) on top."""
    def make(seed: int = 0, **fields: Any) -> HeadPruneConfig:
        return HeadPruneConfig.from_kwargs({"val_size": 80, "stats_size": 64, "seed": seed, "cache": victim_cache,
                                            "progress": False}, **fields)
    return make


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run every test on one torch thread: tiny models gain nothing from intra-op threads, and on a
    busy 2-core machine OpenMP barriers make each forward up to 30x slower. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
