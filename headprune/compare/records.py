"""The runner's JSONL records: one JSON object per finished run, appended by one process only.

A record is keyed by ``(victim, defense, seed, config_hash)``: ``victim`` is the victim's cache name
(its config hash included), ``defense`` the defense (a registry name, ``"policy:<path>"`` or
:data:`CLEAN_MODEL`), ``config_hash`` the :func:`~headprune.common.provenance.run_config_hash` of the settings that
define the run. A grid skips every key already in its file, so an interrupted grid resumes.

Keys of a run record (those of ``benchmarks/defense_table.py``, plus a few): ``victim``, ``defense``,
``seed``, ``config_hash``, ``config``, ``acc``, ``lfr`` (after pruning + fine-tuning), ``acc_pruned``,
``lfr_pruned`` (right after pruning), ``heads_pruned``, ``wall_s`` (the defense itself, evaluation
excluded), ``validation``, ``pruned_heads`` (``{"layer": [heads]}``), ``versions``, and from the
runner ``attack``, ``mask`` (``[L][H]``, 1 = kept), ``timings``, ``environment`` and ``edit`` (the weight edit's
details of a reference-based defense, e.g. Fine-mixing's chosen ``p``; ``None`` for pruning; absent in older
records).
"""

from __future__ import annotations

import json
import warnings
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headprune.common.provenance import upgrade_run_config
from headprune.data.shared import DATASETS

__all__ = ["CLEAN_MODEL", "DEFAULT_DEFENDER_ROWS", "POLICY_PREFIX", "RENAMED_RECORD_KEYS", "SUMMARY_COLUMNS",
           "SUMMARY_DIGITS", "RecordKey", "RecordStore", "configuration", "defense_label", "fine_tune_rows", "format_stat",
           "grid_shape", "head_frequency", "load_records", "mean_std", "record_attack", "summary_markdown", "summary_rows",
           "upgrade_record"]

CLEAN_MODEL = "clean model"
"""Defense name of the reference row: the clean model trained like the victim (no seed, no defense)."""

POLICY_PREFIX = "policy:"
"""Defense names ``policy:<run folder or model.zip>`` run a trained agent instead of a registry defense."""

RecordKey = tuple[str, str, int, str]

DEFAULT_DEFENDER_ROWS = 872
"""Rows of the default defender data (the SST-2 dev split): what a run with no ``clean_rows`` owned."""


RENAMED_RECORD_KEYS: dict[str, str] = {"strategy": "defense"}
"""Keys of a run record renamed since records were first written: old name -> current name."""


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its keys under their current names: ``strategy`` -> ``defense`` (:data:`RENAMED_RECORD_KEYS`,
    in place in the key order) and its config's (``eval_size`` -> ``val_size``:
    :func:`~headprune.common.provenance.upgrade_run_config`). Its ``config_hash`` is unchanged and still
    :func:`~headprune.common.provenance.run_config_hash` of the upgraded config."""
    if not isinstance(record, dict):
        return record
    both = [old for old, new in RENAMED_RECORD_KEYS.items() if old in record and new in record]
    if both:
        raise ValueError(f"record has both {both[0]!r} and {RENAMED_RECORD_KEYS[both[0]]!r}")
    record = {RENAMED_RECORD_KEYS.get(k, k): v for k, v in record.items()}
    if isinstance(record.get("config"), dict):
        record["config"] = upgrade_run_config(record["config"])
    return record


def record_key(record: dict[str, Any]) -> RecordKey:
    """``(victim, defense, seed, config_hash)`` of a record."""
    return (str(record["victim"]), str(record["defense"]), int(record["seed"]), str(record["config_hash"]))


class RecordStore:
    """A JSONL file of run records, read once and appended to (by the calling process only).

    Args:
        path: the JSONL file (created with its folder on the first append).
    Raises:
        ValueError: naming the file and line when a line is not a JSON record with the key fields.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.records: dict[RecordKey, dict[str, Any]] = {}
        if self.path.is_dir():
            raise ValueError(f"records file {self.path} is a folder; give a .jsonl file path")
        if self.path.is_file():
            self._drop_torn_last_line()
            for i, line in enumerate(self.path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = upgrade_record(json.loads(line))
                    key = record_key(record)
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                    raise ValueError(f"{self.path}:{i}: not a run record ({err})") from None
                self.records[key] = record

    def _drop_torn_last_line(self) -> None:
        """Cut a last line without its newline (a run killed while appending): that record is incomplete and
        its run is done again; the next append then starts on a line of its own."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.path.open("r+b") as f:
                f.truncate(keep)
            warnings.warn(f"{self.path}: dropped an incomplete last record ({len(data) - keep} bytes; a killed "
                          "run): it runs again", stacklevel=3)

    def __contains__(self, key: object) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: RecordKey) -> dict[str, Any] | None:
        return self.records.get(key)

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line (flushed) and remember it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        self.records[record_key(record)] = record


def load_records(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Every record of one or more JSONL files (missing files raise FileNotFoundError naming them)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out: list[dict[str, Any]] = []
    for p in items:
        if not Path(p).is_file():
            raise FileNotFoundError(f"no records file {p}")
        out.extend(RecordStore(p).records.values())
    return out


def record_attack(record: dict[str, Any]) -> str:
    """The victim's attack: the record's ``attack`` field, else the second part of the victim name
    (``minilm-syntactic-p0.2-s0-<hash>`` -> ``syntactic``; records of ``defense_table.py``). A victim of another
    dataset than SST-2 has it in front (``dataset`` field, or the name ``minilm-offenseval-syntactic-...``):
    ``offenseval-syntactic``, so tables never pool one attack across two tasks."""
    if record.get("attack"):
        dataset = record.get("dataset")
        return f"{dataset}-{record['attack']}" if dataset and dataset != "sst2" else str(record["attack"])
    parts = str(record["victim"]).split("-")
    if len(parts) > 2 and parts[1] in _OTHER_DATASETS:
        return f"{parts[1]}-{parts[2]}"
    return parts[1] if len(parts) > 1 else str(record["victim"])


_OTHER_DATASETS = tuple(d for d in DATASETS if d != "sst2")


def fine_tune_rows(record: dict[str, Any]) -> int:
    """The defender's fine-tune rows of a run: its clean rows (``config["clean_rows"]``, else
    :data:`DEFAULT_DEFENDER_ROWS`) minus the validation rows held out (``config["val_size"]``)."""
    config = record["config"]
    return int(config.get("clean_rows") or DEFAULT_DEFENDER_ROWS) - int(config["val_size"])


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """``(mean, std with ddof 1 or None for one value, n)`` over the values that are not None."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None, 0
    return float(np.mean(xs)), (float(np.std(xs, ddof=1)) if len(xs) > 1 else None), len(xs)


def format_stat(stat: tuple[float | None, float | None, int], digits: int = 3) -> str:
    """A :func:`mean_std` triple as ``"mean ± std"`` (``"mean"`` for one value, ``"-"`` for none)."""
    m, s, n = stat
    if n == 0 or m is None:
        return "-"
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def defense_label(defense: str) -> str:
    """A short display name of a record's defense: ``"none"`` -> ``"no defense"``,
    ``"policy:<...>/<parent>/<run>[/model.zip]"`` -> ``"agent <parent>/<run>"`` (the run folder and the folder
    holding it: runs of one recipe under different roots stay apart), anything else unchanged."""
    if defense == "none":
        return "no defense"
    if defense.startswith(POLICY_PREFIX):
        path = Path(defense[len(POLICY_PREFIX):])
        run = path.parent if path.name == "model.zip" else path
        return "agent " + "/".join(p for p in (run.parent.name, run.name) if p)
    return defense


SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("heads_pruned", "heads pruned"), ("acc_pruned", "ACC pruned"), ("lfr_pruned", "LFR pruned"),
    ("acc", "ACC"), ("lfr", "LFR"), ("wall_s", "wall s"),
)
"""``(record field, column label)`` of the summary table, in order."""

SUMMARY_DIGITS: dict[str, int] = {"heads_pruned": 1, "wall_s": 0}
"""Decimals of the summary columns that are not rates (every other column gets 3)."""


def configuration(record: dict[str, Any]) -> str:
    """The display name of a run's defense configuration: :func:`defense_label`, followed by the run's
    defense options as JSON when it has any (``drift {"operation": "reset"}``) and by the defender's
    unlabelled sentences when it had some (``purify + 2000 unlabelled``), so runs of one defense under
    different options or data are told apart."""
    config = record.get("config") or {}
    options = config.get("options") or {}
    label = defense_label(str(record["defense"]))
    label += " " + json.dumps(options, sort_keys=True) if options else ""
    return label + (f" + {config['unlabelled_rows']} unlabelled" if config.get("unlabelled_rows") else "")


def summary_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (victim, :func:`configuration`), in first-seen order: the runs, and mean/std/n of every
    :data:`SUMMARY_COLUMNS` field over them."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((str(r["victim"]), configuration(r)), []).append(r)
    rows = []
    for (victim, label), runs in groups.items():
        row: dict[str, Any] = {"victim": victim, "attack": record_attack(runs[0]),
                               "defense": str(runs[0]["defense"]), "configuration": label, "runs": runs,
                               "seeds": len(runs)}
        for key, _ in SUMMARY_COLUMNS:
            row[key] = mean_std(r.get(key) for r in runs)
        rows.append(row)
    return rows


def summary_markdown(records: Iterable[dict[str, Any]]) -> str:
    """The Markdown table (mean ± std, ddof 1, over seeds) of :func:`summary_rows`."""
    head = "| victim | defense | " + " | ".join(label for _, label in SUMMARY_COLUMNS) + " | seeds |"
    lines = [head, "|" + "---|" * (len(SUMMARY_COLUMNS) + 3)]
    for row in summary_rows(records):
        cells = [format_stat(row[key], SUMMARY_DIGITS.get(key, 3)) for key, _ in SUMMARY_COLUMNS]
        lines.append(f"| {row['victim']} | {row['configuration']} | " + " | ".join(cells)
                     + f" | {row['seeds']} |")
    return "\n".join(lines) + "\n"


def grid_shape(record: dict[str, Any], cache: str | os.PathLike[str] | None = None) -> tuple[int, int] | None:
    """``(layers, heads)`` of a record's victim: from its ``mask``, else from the cached victim's
    ``config.json`` (records of ``defense_table.py`` have no mask); ``None`` when neither is there."""
    mask = record.get("mask")
    if mask:
        return len(mask), len(mask[0])
    from headprune.victims.card import check_safe_name
    from headprune.victims import cache_dir

    name = check_safe_name(record["victim"], "record field 'victim'")  # a results file is untrusted input
    config = cache_dir(cache) / "victims" / name / "config.json"
    if config.is_file():
        c = json.loads(config.read_text())
        return int(c["num_hidden_layers"]), int(c["num_attention_heads"])
    return None


def head_frequency(runs: Iterable[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """``[L, H]`` share of ``runs`` that pruned each head (from their ``pruned_heads``)."""
    runs = list(runs)
    freq = np.zeros(shape, dtype=float)
    for r in runs:
        for layer, heads in (r.get("pruned_heads") or {}).items():
            freq[int(layer), [int(h) for h in heads]] += 1
    return freq / max(len(runs), 1)
