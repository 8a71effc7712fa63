"""The experiment grid: every (victim, method, seed) cell run through :func:`~headprune.defenses.defend`,
one JSONL record per run, skipping the runs already recorded.

A *method* is a registry strategy name (``"gradient"``, ``"pure"``, ``"none"``, ...), a trained agent
``"policy:<path>"`` (a model ``.zip`` or run folder, run as :class:`headprune.agents.AgentStrategy`), or
:data:`CLEAN_MODEL`, the reference row (the clean model trained like the victim; evaluated once per victim, seed 0).

Protocol (``defend``'s): the defense sees only the defender's clean rows; the victim's clean and
poisoned TEST rows are passed to ``defend`` as evaluation data, scored by
:func:`~headprune.metrics.evaluate_defense` after the mask and weights are fixed. Same seed, same numbers.

The config hash of a strategy run is the hash of exactly the settings ``benchmarks/defense_table.py``
always hashed (``finetune_epochs``, ``finetune_max_steps``, ``budget``, ``max_accuracy_drop``,
``clean_rows``, ``eval_size``, ``stats_size``, ``test_limit``, ``options``), so its records and the
runner's are interchangeable; a policy run adds ``policy_sha256``, the digest of the checkpoint.
"""

# over 400 lines: run settings, planning, the cell runner and the grid loop share one record format
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headprune.compare.executors import Executor, LocalExecutor
from headprune.compare.records import CLEAN_MODEL, POLICY_PREFIX, RecordKey, RecordStore
from headprune.data.pools import DEFENDER_POOLS, load_defender_pool
from headprune.defenses.base import DefenseFineTune
from headprune.defenses.options import (
    DEFEND_SETTINGS,
    SETTING_FLAGS,
    add_setting_arguments,
    check_settings,
    env_config_from_settings,
    finetune_from_settings,
    parse_options_json,
)
from headprune.envs.config import HeadPruneConfig

__all__ = ["DEFEND_SETTINGS", "POLICY_PREFIX", "GridReport", "RunSettings", "RunSpec",
           "add_run_settings_arguments", "canonical_method", "fast_options", "parse_method", "plan_grid", "run_cell", "run_grid",
           "run_settings_from_args"]

def fast_options(method: str) -> dict[str, Any]:
    """The small "fast" options of a registered defense (smoke runs, ``--fast``); ``{}`` for other methods."""
    from headprune.defenses import DEFENSES

    return dict(DEFENSES.get(method).fast_options) if method in DEFENSES else {}


def _default_env() -> HeadPruneConfig:
    return env_config_from_settings({})


@dataclass(frozen=True)
class RunSettings:
    """Everything besides (victim, method, seed) that defines a run: ``defend``'s env config and fine-tune
    config, plus the data limits of the runner. Build it from the flat command-line names with
    :meth:`from_values`.

    Attributes:
        env: the env config of every run (``val_size``, ``stats_size``, ``budget``, ``max_accuracy_drop``);
            the defender's rows, the seed and the cache are set per run.
        finetune: the clean fine-tuning after pruning (0 epochs disables it).
        clean_rows: use only the first N defender clean rows (default: all 872 SST-2 dev rows).
        test_limit: evaluate on the first N clean / poisoned test rows (default: all).
        options: ``{method: {option: value}}`` strategy options.
        fast: add each defense's ``fast_options`` (smoke runs).
        base: the public pre-trained reference (a folder or a hub id) of every run (``defend``'s ``base=``);
            ``None``: :func:`~headprune.reference.resolve_base`'s default. Hashed only when given.
        clean_pool: the defender's rows: a pool of :data:`~headprune.data.pools.DEFENDER_POOLS` (its first
            ``clean_rows`` rows), e.g. ``"sst2-dev+glue-train"`` for the clean-data budget curve; ``None``: the
            victim's defender data (the 872 SST-2 dev rows). Hashed only when given.
    """

    env: HeadPruneConfig = field(default_factory=_default_env)
    finetune: DefenseFineTune = field(default_factory=DefenseFineTune)
    clean_rows: int | None = None
    test_limit: int | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fast: bool = False
    base: str | None = None
    clean_pool: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", {str(k): dict(v) for k, v in dict(self.options).items()})
        if self.clean_pool is not None and self.clean_pool not in DEFENDER_POOLS:
            raise ValueError(f"unknown clean_pool {self.clean_pool!r}; valid: {', '.join(DEFENDER_POOLS)}")
        check_settings({"clean_rows": self.clean_rows, "test_limit": self.test_limit})
        if self.env.floor_drop is None:
            raise ValueError("RunSettings.env must give max_accuracy_drop (the runner's floor), not accuracy_floor")

    @classmethod
    def from_values(cls, *, options: Mapping[str, Mapping[str, Any]] | None = None, fast: bool = False,
                    base: str | None = None, clean_pool: str | None = None, **values: Any) -> RunSettings:
        """The settings of the flat names of :data:`~headprune.defenses.options.SETTING_FLAGS`
        (``finetune_epochs``, ``eval_size``, ...; missing ones take their defaults).

        :raises ValueError: an unknown name or an out-of-range value (naming it)."""
        unknown = sorted(set(values) - set(SETTING_FLAGS))
        if unknown:
            raise ValueError(f"unknown run settings {unknown}; valid: {', '.join(SETTING_FLAGS)}")
        return cls(env=env_config_from_settings(values), finetune=finetune_from_settings(values),
                   clean_rows=values.get("clean_rows"), test_limit=values.get("test_limit"), options=options or {},
                   fast=fast, base=base, clean_pool=clean_pool)

    def method_options(self, method: str) -> dict[str, Any]:
        """The strategy options of ``method``: fast defaults (if ``fast``) updated by ``options``."""
        return {**(fast_options(method) if self.fast else {}), **dict(self.options.get(method, {}))}

    def method_config(self, method: str) -> dict[str, Any]:
        """The hashed config of a run of ``method`` (the keys defense_table.py always hashed)."""
        if method == CLEAN_MODEL:
            return {"kind": CLEAN_MODEL, "test_limit": self.test_limit}
        cfg: dict[str, Any] = {
            "finetune_epochs": self.finetune.epochs, "finetune_max_steps": self.finetune.max_steps,
            "budget": self.env.budget, "max_accuracy_drop": self.env.floor_drop, "clean_rows": self.clean_rows,
            "eval_size": self.env.val_size, "stats_size": self.env.stats_size, "test_limit": self.test_limit,
            "options": self.method_options(method),
        }
        if method.startswith(POLICY_PREFIX):
            cfg["policy_sha256"] = _path_digest(Path(method[len(POLICY_PREFIX):]))
        if self.base is not None:  # only when given: the hashes of runs on the default reference stay
            cfg["base"] = self.base
        if self.clean_pool is not None:
            cfg["clean_pool"] = self.clean_pool
        return cfg


def add_run_settings_arguments(parser: argparse.ArgumentParser, fields: Sequence[str] | None = None) -> None:
    """Add the run-setting options to ``parser`` (:func:`headprune.defenses.options.add_setting_arguments`);
    :func:`run_settings_from_args` reads them back."""
    add_setting_arguments(parser, fields)


def run_settings_from_args(args: argparse.Namespace, methods: Collection[str] | None = None) -> RunSettings:
    """The :class:`RunSettings` of options added by :func:`add_run_settings_arguments` (all fields).

    Args:
        args: the parsed command line.
        methods: if given, keep only the ``--options`` of these methods (others are dropped silently).
    Raises:
        ValueError: ``--options`` is not a JSON object of objects, or a setting is out of range.
    """
    options = parse_options_json(args.options)
    if methods is not None:
        options = {k: v for k, v in options.items() if k in methods}
    return RunSettings.from_values(**{name: getattr(args, name) for name in SETTING_FLAGS}, options=options,
                                   fast=args.fast, base=getattr(args, "base", None),
                                   clean_pool=getattr(args, "clean_pool", None))


@dataclass(frozen=True)
class RunSpec:
    """One grid cell, picklable (what an executor ships to a worker)."""

    victim: str
    victim_name: str
    method: str
    seed: int
    settings: RunSettings
    config: dict[str, Any]
    config_hash: str
    cache: str | None = None

    @property
    def key(self) -> RecordKey:
        return (self.victim_name, self.method, self.seed, self.config_hash)

    @property
    def label(self) -> str:
        return f"{self.victim_name} {self.method} seed {self.seed} ({self.config_hash})"


@dataclass
class GridReport:
    """What :func:`run_grid` did: every record of the grid (in grid order), the keys run and skipped,
    and the runs that failed (``(label, error)``; not recorded, so a rerun retries them)."""

    path: Path
    records: list[dict[str, Any]]
    ran: list[RecordKey]
    skipped: list[RecordKey]
    failed: list[tuple[str, str]]

    def report_failures(self, prefix: str = "FAILED") -> int:
        """Print each failed run to stderr as ``<prefix> <label>: <error>``; the exit status of a
        command: 1 if any run failed, else 0."""
        for label, error in self.failed:
            print(f"{prefix} {label}: {error}", file=sys.stderr)
        return 1 if self.failed else 0

    def publish(self, text: str, markdown_out: str | os.PathLike[str] | None = None) -> int:
        """Print ``text`` (a command's Markdown report of this grid), also write it to ``markdown_out`` when
        given, then :meth:`report_failures`; returns the exit status."""
        print(text)
        if markdown_out:
            Path(markdown_out).write_text(text)
        return self.report_failures()


# ------------------------------------------------------------------------------------------ methods
def _path_digest(path: Path) -> str:
    """sha256 of a file, or of every file under a folder (relative names and bytes, sorted)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def canonical_method(method: str) -> str:
    """``method`` with its policy path written one way (normalised; relative to the working directory when under
    it, else absolute): ``policy:./runs/a/`` and ``policy:/<cwd>/runs/a`` both become ``policy:runs/a``, so one
    agent is one method in the records and a rerun typed differently still skips it. Other methods unchanged."""
    if not method.startswith(POLICY_PREFIX) or not method[len(POLICY_PREFIX):]:
        return method
    path = Path(os.path.abspath(method[len(POLICY_PREFIX):]))
    if path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    return POLICY_PREFIX + path.as_posix()


def parse_method(method: str) -> tuple[str, str | None]:
    """``(kind, policy path)`` of a method: ``("strategy", None)``, ``("reference", None)`` or
    ``("policy", path)``.

    Raises:
        ValueError: an unknown strategy name (naming the valid ones) or an empty policy path.
        FileNotFoundError: a policy path that does not exist.
    """
    if method == CLEAN_MODEL:
        return "reference", None
    if method.startswith(POLICY_PREFIX):
        path = method[len(POLICY_PREFIX):]
        if not path:
            raise ValueError(f"method {method!r}: give the agent's checkpoint as policy:<path>")
        if not Path(path).exists():
            raise FileNotFoundError(f"method {method!r}: no such policy file or folder: {path}")
        return "policy", path
    from headprune.defenses import get_defense

    get_defense(method)
    return "strategy", None


# ------------------------------------------------------------------------------------------ worker side
_VICTIMS: dict[tuple[str, str | None], Any] = {}


def _victim(spec: str, cache: str | None, progress: bool = False) -> Any:
    """The victim of ``spec``, loaded (or built) once per process."""
    key = (spec, cache)
    if key not in _VICTIMS:
        from headprune.victims import resolve_victim

        _VICTIMS[key] = resolve_victim(spec, cache=cache, progress=progress)
    return _VICTIMS[key]


def _require_agents(method: str) -> Callable[..., Any]:
    """``headprune.agents.AgentStrategy``; ValueError naming ``method`` when the agents package lacks it."""
    try:
        from headprune.agents import AgentStrategy
    except ImportError as err:
        raise ValueError(f"method {method!r} needs headprune.agents.AgentStrategy (the agents package), which "
                         f"cannot be imported: {err}") from None
    return AgentStrategy  # type: ignore[no-any-return]


def _load_agent(path: str, spec: RunSpec) -> Any:
    """The trained agent at ``path`` as a ``defend`` strategy (``headprune.agents.AgentStrategy``): ``defend``
    builds its env on the defender's clean rows, then the agent loads its policy for that env
    (``headprune.agents.load_policy``) and runs the same protocol as the baselines."""
    return _require_agents(spec.method)(path, name=spec.method)


def _environment() -> dict[str, Any]:
    from headprune.provenance import environment_info

    return environment_info()


def run_cell(spec: RunSpec) -> dict[str, Any]:
    """Run one grid cell and return its record (no file is written here). Module level, so every
    executor (processes, Ray) can ship it."""
    from headprune.defenses import defend
    from headprune.metrics import evaluate_defense

    s = spec.settings
    victim = _victim(spec.victim, spec.cache)
    splits = victim.splits()  # evaluation only: handed to defend/evaluate_defense as evaluation data
    clean_test, poisoned_test = splits.clean_test, splits.poisoned_test
    if s.test_limit is not None:
        clean_test, poisoned_test = clean_test.take(s.test_limit), poisoned_test.take(s.test_limit)
    base = {"victim": victim.name, "strategy": spec.method, "seed": spec.seed, "config_hash": spec.config_hash}
    kind, path = parse_method(spec.method)
    env = _environment()
    provenance = {"attack": victim.config.attack, "environment": {k: v for k, v in env.items() if k != "versions"}}

    if kind == "reference":
        from headprune.victims import build_victim

        ref = build_victim(config=victim.config.clean_reference(), cache=spec.cache, progress=False)
        t = time.perf_counter()
        rep = evaluate_defense(ref.model, ref.tokenizer, clean_test, poisoned_test, victim.config.target_label,
                               max_length=victim.config.max_length)
        return {**base, "acc": rep.acc, "lfr": rep.lfr, "acc_pruned": None, "lfr_pruned": None, "heads_pruned": 0,
                "wall_s": time.perf_counter() - t, "model": ref.name, "versions": env["versions"], **provenance}

    clean = victim.defender_clean_data() if s.clean_pool is None else load_defender_pool(s.clean_pool)
    if s.clean_rows is not None:
        clean = clean.take(s.clean_rows)
    strategy = spec.method if kind == "strategy" else _load_agent(str(path), spec)
    env_config = s.env.replace(clean_data=clean, seed=spec.seed, cache=spec.cache, progress=False)
    r = defend(victim, strategy, env_config, s.finetune,
               options=s.method_options(spec.method), base=s.base,
               eval_clean=clean_test, eval_poison=poisoned_test)
    return {**base, "config": spec.config, "acc": r.metrics["final"]["acc"], "lfr": r.metrics["final"]["lfr"],
            "acc_pruned": r.metrics["pruned"]["acc"], "lfr_pruned": r.metrics["pruned"]["lfr"],
            "heads_pruned": r.heads_pruned, "wall_s": r.timings["defense"], "validation": r.validation,
            "pruned_heads": r.pruned_heads, "versions": r.versions.get("versions", env["versions"]),
            "mask": r.mask.tolist(), "timings": r.timings, "edit": r.details.get("edit"), **_stages(r), **provenance}


def _stages(result: Any) -> dict[str, Any]:
    """A composed defense's intermediate stages for its record (none for the others, whose records stay as they
    were): ``{"stages": {name: {"acc", "lfr"}}, "teacher": details}``."""
    if "stages" not in result.metrics:
        return {}
    stages = {name: {"acc": m["acc"], "lfr": m["lfr"]} for name, m in result.metrics["stages"].items()}
    return {"stages": stages, "teacher": result.details.get("teacher")}


# ------------------------------------------------------------------------------------------ parent side
def _victim_name(spec: str) -> str:
    """The cache name of a victim preset or folder, without loading its model.

    Raises:
        ValueError: naming the spec when it is neither a preset nor a victim folder.
    """
    from headprune.victims import CARD_FILE, PRESETS, VictimConfig

    if spec in PRESETS:
        return PRESETS[spec].name
    card = Path(spec) / CARD_FILE
    if card.is_file():  # the card's schema applies (VictimCardError naming the field)
        from headprune.victim_card import read_card

        return VictimConfig.from_dict(read_card(Path(spec))["config"]).name
    raise ValueError(f"unknown victim {spec!r}: not a preset ({', '.join(PRESETS)}) and not a victim folder "
                     f"with {CARD_FILE}")


def plan_grid(victims: Sequence[str], methods: Sequence[str], seeds: Sequence[int], settings: RunSettings, *,
              reference: bool = False, cache: str | os.PathLike[str] | None = None) -> list[RunSpec]:
    """Every cell of the grid, victim-major (then the reference row, then methods in order, then seeds).
    Validates all arguments before any work (ValueError / FileNotFoundError naming the bad one). Policy paths are
    written as :func:`canonical_method` writes them."""
    from headprune.provenance import config_hash

    methods = [canonical_method(m) for m in methods]
    for what, items in (("victims", victims), ("methods", methods), ("seeds", seeds)):
        if len(items) == 0 and not (what == "methods" and reference):
            raise ValueError(f"no {what} given")
        if len(set(items)) != len(items):
            raise ValueError(f"duplicate {what}: {list(items)}")
    for seed in seeds:
        if int(seed) < 0:
            raise ValueError(f"seeds must be >= 0, got {seed}")
    for method in methods:
        kind, _ = parse_method(method)
        if kind == "policy":
            _require_agents(method)
    unknown = set(settings.options) - set(methods)
    if unknown:
        raise ValueError(f"options given for methods not in the grid: {sorted(unknown)}")
    cache_str = None if cache is None else str(cache)
    cells = []
    for v in victims:
        name = _victim_name(v)
        grid = ([(CLEAN_MODEL, 0)] if reference else []) + [(m, int(s)) for m in methods for s in seeds]
        for method, seed in grid:
            cfg = settings.method_config(method)
            cells.append(RunSpec(victim=v, victim_name=name, method=method, seed=seed, settings=settings, config=cfg,
                                 config_hash=config_hash(cfg), cache=cache_str))
    return cells


# over 60 lines: a long docstring; the body is plan, run, record and report, one call each
def run_grid(
    victims: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    records: str | os.PathLike[str],
    settings: RunSettings | None = None,
    *,
    executor: Executor | None = None,
    reference: bool = False,
    cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> GridReport:
    """Run every (victim, method, seed) cell not yet in the JSONL ``records`` file and append its record.

    Args:
        victims: preset names or victim folders.
        methods: registry strategy names and/or ``"policy:<path>"``.
        seeds: the seeds of every method.
        records: the JSONL file (read first; only this process appends to it).
        settings: :class:`RunSettings` (default: the defaults of ``defend``).
        executor: where runs execute (default :class:`~headprune.compare.executors.LocalExecutor`).
        reference: add the clean-model reference row of each victim (method :data:`CLEAN_MODEL`).
        cache: victim / head-statistics cache root.
        progress: a progress bar over the runs.
        log: where ``[run]/[skip]/[fail]`` lines go (default: above the progress bar).
    Returns:
        :class:`GridReport`. Failed runs are reported, not recorded; the others are kept.
    """
    from tqdm.auto import tqdm

    settings = settings or RunSettings()
    executor = executor or LocalExecutor()
    store = RecordStore(records)
    cells = plan_grid(victims, methods, seeds, settings, reference=reference, cache=cache)
    say = log or tqdm.write
    pending = [c for c in cells if c.key not in store]
    skipped = [c.key for c in cells if c.key in store]
    for c in cells:
        if c.key in store:
            say(f"[skip] {c.label}: in {store.path}")
    # build/load each victim once here, so parallel workers never race to build the same cache folder
    for v in dict.fromkeys(c.victim for c in pending):
        _victim(v, None if cache is None else str(cache), progress)
    ran: list[RecordKey] = []
    failed: list[tuple[str, str]] = []
    bar = tqdm(total=len(pending), desc=f"compare ({executor.name})", unit="run", disable=not progress or not pending)
    say(f"[grid] {len(cells)} runs: {len(pending)} to run ({executor.name}), {len(skipped)} already in {store.path}")
    for cell, outcome in executor.map_unordered(run_cell, pending):
        if isinstance(outcome, BaseException):
            failed.append((cell.label, f"{type(outcome).__name__}: {outcome}"))
            say(f"[fail] {cell.label}: {type(outcome).__name__}: {outcome}")
        else:
            store.append(outcome)
            ran.append(cell.key)
            lfr = "-" if outcome.get("lfr") is None else f"{outcome['lfr']:.3f}"
            say(f"[done] {cell.label}: ACC {outcome['acc']:.3f} LFR {lfr} heads {outcome['heads_pruned']}")
        bar.update(1)
    bar.close()
    return GridReport(path=store.path, records=[store.records[c.key] for c in cells if c.key in store],
                      ran=ran, skipped=skipped, failed=failed)
