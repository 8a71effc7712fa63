"""benchmarks/mix_proxy_offline.py: the recorded mixing states and the cheap candidates' arithmetic."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def offline():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("mix_proxy_offline")
    finally:
        sys.path.remove(str(BENCHMARKS))


def _state(index: int, mix: list[int], lfr: float, acc: float, kind: str = "mix") -> str:
    return json.dumps({"kind": kind, "attack": "syntactic", "index": index, "mix": mix, "lfr_finetuned": lfr,
                       "val_acc": acc})


def test_states_merge_across_files_and_a_conflict_is_refused(offline, tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(_state(0, [10, 0], 0.5, 0.8) + "\n" + _state(1, [0, 0], 0.9, 0.9, kind="mask") + "\n")
    b.write_text(_state(0, [10, 0], 0.5, 0.8) + "\n" + _state(2, [5, 5], 0.7, 0.85) + "\n")
    states = offline.mixing_states([a, b])
    assert sorted(states["syntactic"]) == [0, 2]  # the mask state is not a mixing state
    b.write_text(_state(0, [10, 0], 0.6, 0.8) + "\n")
    with pytest.raises(ValueError, match=r"b.jsonl:1: state 0 of syntactic differs"):
        offline.mixing_states([a, b])


def test_candidates_are_the_unmixed_share_of_each_weighting(offline) -> None:
    states = {0: {"mix": [10, 0], "val_acc": 0.8}, 1: {"mix": [0, 5], "val_acc": 0.75}}
    values = offline.candidate_values(states, {"block_drift": np.array([3.0, 1.0])})
    # state 0: block 0 fully mixed, block 1 untouched -> 1/4 of the drift left; state 1: 3/4 + 1/4 * 1/2
    assert values["block_drift"] == pytest.approx([0.25, 0.875])
    assert values["accuracy_loss"] == pytest.approx([0.2, 0.25])
