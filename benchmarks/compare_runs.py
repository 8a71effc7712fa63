"""Compare two runs.jsonl files of `headprune compare`: masks, metrics and config hashes must be identical
(timings, versions, environment may differ)."""
import json
import sys

IGNORED = {"timings", "wall_s", "versions", "environment"}


def load(path):
    out = {}
    for line in open(path):
        r = json.loads(line)
        out[(r["strategy"], r["seed"])] = r
    return out


before, after = load(sys.argv[1]), load(sys.argv[2])
bad = 0
if set(before) != set(after):
    print("different runs:", sorted(set(before) ^ set(after)))
    bad += 1
for key in sorted(set(before) & set(after), key=str):
    b, a = before[key], after[key]
    keys = (set(b) | set(a)) - IGNORED
    diff = sorted(k for k in keys if b.get(k) != a.get(k))
    if diff:
        bad += 1
        print(f"DIFF {key}: " + ", ".join(f"{k}: {b.get(k)!r} -> {a.get(k)!r}" for k in diff))
print(f"{len(before)} runs before, {len(after)} after; {len(set(before) & set(after)) - bad} identical, {bad} differ "
      f"(compared every key except {sorted(IGNORED)})")
sys.exit(1 if bad else 0)
