"""Compare two ``runs.jsonl`` files of ``headprune compare``: masks, metrics and config hashes must be identical.

A refactoring check: run the same grid before and after a change and compare every key of every record except
those that measure the machine (timings, versions, environment). Exit status 0 when every run matches.

    .venv/bin/python benchmarks/compare_runs.py BEFORE/runs.jsonl AFTER/runs.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from headprune.compare.records import upgrade_record

IGNORED = frozenset({"timings", "wall_s", "versions", "environment"})
"""Record keys that describe the machine and the time, not the result."""


def load_records(path: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Records keyed by ``(victim, defense, seed)`` (older records read with their keys' current names:
    :func:`headprune.compare.records.upgrade_record`); a key seen twice is an error naming the line."""
    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        record = upgrade_record(json.loads(line))
        key = (record["victim"], record["defense"], int(record["seed"]))
        if key in out:
            raise SystemExit(f"{path}, line {number}: run {key} recorded twice")
        out[key] = record
    return out


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every compared key whose value differs."""
    keys = (set(before) | set(after)) - IGNORED
    return [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(keys) if before.get(k) != after.get(k)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    before, after = load_records(args.before), load_records(args.after)
    bad = 0
    if set(before) != set(after):
        print("runs in only one file:", sorted(set(before) ^ set(after)))
        bad += 1
    common = sorted(set(before) & set(after))
    for key in common:
        diff = differences(before[key], after[key])
        if diff:
            bad += 1
            print(f"DIFF {key}: " + "; ".join(diff))
    same = sum(1 for key in common if not differences(before[key], after[key]))
    print(f"{len(before)} runs before, {len(after)} after; {same} identical, {len(common) - same} differ "
          f"(compared every key except {sorted(IGNORED)})")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
