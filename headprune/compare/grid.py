"""The experiment grid: every (victim, defense, seed) cell run through :func:`~headprune.defenses.defend`,
one JSONL record per run, skipping the runs already recorded.

A *defense* is a registry defense name (``"gradient"``, ``"pure"``, ``"none"``, ...), a trained agent
``"policy:<path>"`` (a model ``.zip`` or run folder, run as :class:`headprune.agents.AgentDefense`), or
:data:`CLEAN_MODEL`, the reference row (the clean model trained like the victim; evaluated once per victim, seed 0).

Protocol (``defend``'s): the defense sees only the defender's clean rows; the victim's clean and
poisoned TEST rows are passed to ``defend`` as evaluation data, scored by
:func:`~headprune.engine.metrics.evaluate_defense` after the mask and weights are fixed. Same seed, same numbers.

The config hash of a defense run is the hash of exactly the settings ``benchmarks/defense_table.py``
always hashed (``finetune_epochs``, ``finetune_max_steps``, ``budget``, ``max_accuracy_drop``,
``clean_rows``, ``val_size``, ``stats_size``, ``test_limit``, ``options``), so its records and the
runner's are interchangeable; a policy run adds ``policy_sha256``, the digest of the checkpoint, and a defense
taught by a policy (``options["teacher"] = "policy:<path>"``, e.g. ``purify`` after an agent) adds
``teacher_policy_sha256``, the digest of the teacher's, so a retrained agent in the same folder is a new run.
"""

# over 400 lines: run settings, planning, the cell runner and the grid loop share one record format
from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headprune.compare.executors import Executor, LocalExecutor
from headprune.compare.records import CLEAN_MODEL, POLICY_PREFIX, RecordKey, RecordStore
from headprune.data.pools import (
    DEFENDER_POOLS,
    check_pool_dataset,
    check_unlabelled_pool,
    defender_unlabelled_texts,
    load_defender_pool,
)
from headprune.defenses.base import DefenseFineTune
from headprune.defenses.options import (
    DEFEND_SETTINGS,
    SETTING_FLAGS,
    check_settings,
    env_config_from_settings,
    finetune_from_settings,
)
from headprune.envs.config import HeadPruneConfig
from headprune.common.finite import check_finite_fields

if TYPE_CHECKING:
    from headprune.victims import VictimConfig

__all__ = ["DEFEND_SETTINGS", "POLICY_PREFIX", "GridReport", "RunSettings", "RunSpec", "canonical_defense",
           "fast_options", "parse_defense", "plan_grid", "policy_defense", "run_cell", "run_grid"]

def fast_options(defense: str) -> dict[str, Any]:
    """The small "fast" options of a registered defense (smoke runs, ``--fast``); ``{}`` for other defenses."""
    from headprune.defenses import DEFENSES

    return dict(DEFENSES.get(defense).fast_options) if defense in DEFENSES else {}


def _default_env() -> HeadPruneConfig:
    return env_config_from_settings({})


@dataclass(frozen=True)
class RunSettings:
    """Everything besides (victim, defense, seed) that defines a run: ``defend``'s env config and fine-tune
    config, plus the data limits of the runner. Build it from the flat command-line names with
    :meth:`from_values`.

    Attributes:
        env: the env config of every run (``val_size``, ``stats_size``, ``budget``, ``max_accuracy_drop``);
            the defender's rows, the seed and the cache are set per run.
        finetune: the clean fine-tuning after pruning (0 epochs disables it).
        clean_rows: use only the first N defender clean rows (default: all 872 SST-2 dev rows).
        test_limit: evaluate on the first N clean / poisoned test rows (default: all).
        options: ``{defense: {option: value}}`` defense options.
        fast: add each defense's ``fast_options`` (smoke runs).
        base: the public pre-trained reference (a folder or a hub id) of every run (``defend``'s ``base=``);
            ``None``: :func:`~headprune.engine.reference.resolve_base`'s default. Hashed only when given.
        clean_pool: the defender's rows: a pool of :data:`~headprune.data.pools.DEFENDER_POOLS` (its first
            ``clean_rows`` rows), e.g. ``"sst2-dev+glue-train"`` for the clean-data budget curve; ``None``: the
            victim's defender data (the 872 SST-2 dev rows). Hashed only when given.
        unlabelled_rows: the defender also owns this many in-domain sentences without labels: those right after
            its labelled rows in the task's unlabelled pool (:func:`~headprune.data.pools.unlabelled_pool_texts`:
            GLUE SST-2 train phrases, OffensEval train tweets), read by the distillation defenses. ``None``: none.
            Hashed only when given.
    """

    env: HeadPruneConfig = field(default_factory=_default_env)
    finetune: DefenseFineTune = field(default_factory=DefenseFineTune)
    clean_rows: int | None = None
    test_limit: int | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fast: bool = False
    base: str | None = None
    clean_pool: str | None = None
    unlabelled_rows: int | None = None

    def __post_init__(self) -> None:
        check_finite_fields(self)
        object.__setattr__(self, "options", {str(k): dict(v) for k, v in dict(self.options).items()})
        if self.clean_pool is not None and self.clean_pool not in DEFENDER_POOLS:
            raise ValueError(f"unknown clean_pool {self.clean_pool!r}; valid: {', '.join(DEFENDER_POOLS)}")
        check_settings({"clean_rows": self.clean_rows, "test_limit": self.test_limit})
        if self.unlabelled_rows is not None and (isinstance(self.unlabelled_rows, bool) or not isinstance(
                self.unlabelled_rows, int) or self.unlabelled_rows < 1):
            raise ValueError(f"unlabelled_rows must be an integer >= 1 (or None), got {self.unlabelled_rows!r}")
        if self.env.floor_drop is None:
            raise ValueError("RunSettings.env must give max_accuracy_drop (the runner's floor), not accuracy_floor")

    @classmethod
    def from_values(cls, *, options: Mapping[str, Mapping[str, Any]] | None = None, fast: bool = False,
                    base: str | None = None, clean_pool: str | None = None, unlabelled_rows: int | None = None,
                    **values: Any) -> RunSettings:
        """The settings of the flat names of :data:`~headprune.defenses.options.SETTING_FLAGS`
        (``finetune_epochs``, ``val_size``, ...; missing ones take their defaults).

        :raises ValueError: an unknown name or an out-of-range value (naming it)."""
        unknown = sorted(set(values) - set(SETTING_FLAGS))
        if unknown:
            raise ValueError(f"unknown run settings {unknown}; valid: {', '.join(SETTING_FLAGS)}")
        return cls(env=env_config_from_settings(values), finetune=finetune_from_settings(values),
                   clean_rows=values.get("clean_rows"), test_limit=values.get("test_limit"), options=options or {},
                   fast=fast, base=base, clean_pool=clean_pool, unlabelled_rows=unlabelled_rows)

    def defense_options(self, defense: str) -> dict[str, Any]:
        """The defense options of ``defense``: fast defaults (if ``fast``) updated by ``options``."""
        return {**(fast_options(defense) if self.fast else {}), **dict(self.options.get(defense, {}))}

    def defense_config(self, defense: str) -> dict[str, Any]:
        """The hashed config of a run of ``defense`` (the keys defense_table.py always hashed).

        Raises:
            FileNotFoundError / ValueError: a ``policy:`` teacher in ``defense``'s options that does not exist or
            has no path (naming the defense and the option), before any work.
        """
        if defense == CLEAN_MODEL:
            return {"kind": CLEAN_MODEL, "test_limit": self.test_limit}
        cfg: dict[str, Any] = {
            "finetune_epochs": self.finetune.epochs, "finetune_max_steps": self.finetune.max_steps,
            "budget": self.env.budget, "max_accuracy_drop": self.env.floor_drop, "clean_rows": self.clean_rows,
            "val_size": self.env.val_size, "stats_size": self.env.stats_size, "test_limit": self.test_limit,
            "options": self.defense_options(defense),
        }
        if defense.startswith(POLICY_PREFIX):
            cfg["policy_sha256"] = _path_digest(Path(defense[len(POLICY_PREFIX):]))
        teacher = cfg["options"].get("teacher")
        if isinstance(teacher, str) and teacher.startswith(POLICY_PREFIX):
            try:
                parse_defense(teacher)  # an empty or missing path, refused before any work
            except (ValueError, FileNotFoundError) as err:
                raise type(err)(f"{defense} option teacher: {err}") from None
            cfg["teacher_policy_sha256"] = _path_digest(Path(teacher[len(POLICY_PREFIX):]))
        if self.base is not None:  # only when given: the hashes of runs on the default reference stay
            cfg["base"] = self.base
        if self.clean_pool is not None:
            cfg["clean_pool"] = self.clean_pool
        if self.unlabelled_rows is not None:
            cfg["unlabelled_rows"] = self.unlabelled_rows
        return cfg


@dataclass(frozen=True)
class RunSpec:
    """One grid cell, picklable (what an executor ships to a worker)."""

    victim: str
    victim_name: str
    defense: str
    seed: int
    settings: RunSettings
    config: dict[str, Any]
    config_hash: str
    cache: str | None = None

    @property
    def key(self) -> RecordKey:
        return (self.victim_name, self.defense, self.seed, self.config_hash)

    @property
    def label(self) -> str:
        return f"{self.victim_name} {self.defense} seed {self.seed} ({self.config_hash})"


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


# ------------------------------------------------------------------------------------------ defenses
def _path_digest(path: Path) -> str:
    """sha256 of a file, or of every file under a folder (relative names and bytes, sorted)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def canonical_defense(defense: str) -> str:
    """``defense`` with its policy path written one way (normalised; relative to the working directory when under
    it, else absolute): ``policy:./runs/a/`` and ``policy:/<cwd>/runs/a`` both become ``policy:runs/a``, so one
    agent is one defense in the records and a rerun typed differently still skips it. Other defenses unchanged."""
    if not defense.startswith(POLICY_PREFIX) or not defense[len(POLICY_PREFIX):]:
        return defense
    path = Path(os.path.abspath(defense[len(POLICY_PREFIX):]))
    if path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    return POLICY_PREFIX + path.as_posix()


def check_policy_options(defense: str, options: Mapping[str, Any]) -> None:
    """Refuse, before any work, options of a ``policy:<path>`` defense that are not
    :class:`~headprune.defenses.scripted.PolicyEpisodeOptions` (one line naming the defense and the option)."""
    from headprune.defenses.scripted import PolicyEpisodeOptions

    try:
        PolicyEpisodeOptions.from_mapping(options)
    except ValueError as err:
        raise ValueError(f"{defense}: {err}") from None


def parse_defense(defense: str) -> tuple[str, str | None]:
    """``(kind, policy path)`` of a defense: ``("registry", None)``, ``("reference", None)`` or
    ``("policy", path)``.

    Raises:
        ValueError: an unknown defense name (naming the valid ones) or an empty policy path.
        FileNotFoundError: a policy path that does not exist.
    """
    if defense == CLEAN_MODEL:
        return "reference", None
    if defense.startswith(POLICY_PREFIX):
        path = defense[len(POLICY_PREFIX):]
        if not path:
            raise ValueError(f"defense {defense!r}: give the agent's checkpoint as policy:<path>")
        if not Path(path).exists():
            raise FileNotFoundError(f"defense {defense!r}: no such policy file or folder: {path}")
        return "policy", path
    from headprune.defenses import get_defense

    get_defense(defense)
    return "registry", None


# ------------------------------------------------------------------------------------------ worker side
_VICTIMS: dict[tuple[str, str | None], Any] = {}


def _victim(spec: str, cache: str | None, progress: bool = False) -> Any:
    """The victim of ``spec``, loaded (or built) once per process."""
    key = (spec, cache)
    if key not in _VICTIMS:
        from headprune.victims import resolve_victim

        _VICTIMS[key] = resolve_victim(spec, cache=cache, progress=progress)
    return _VICTIMS[key]


def _require_agents(defense: str) -> Callable[..., Any]:
    """``headprune.agents.AgentDefense``; ValueError naming ``defense`` when the agents package lacks it."""
    try:
        from headprune.agents import AgentDefense
    except ImportError as err:
        raise ValueError(f"defense {defense!r} needs headprune.agents.AgentDefense (the agents package), which "
                         f"cannot be imported: {err}") from None
    return AgentDefense  # type: ignore[no-any-return]


def policy_defense(defense: str, options: Mapping[str, Any] | None = None) -> Any:
    """The ``policy:<path>`` defense ``defense`` as a ``defend`` defense: ``headprune.agents.AgentDefense`` named
    ``defense``, with ``options`` (``PolicyEpisodeOptions``). ``defend`` builds its env on the defender's clean rows,
    then the agent loads its policy for that env (``headprune.agents.load_policy``) and runs the same protocol as the
    baselines. The runner's cells and ``distill``'s ``policy:`` teacher are built here.

    Raises:
        ValueError: an empty path, an options error, or no agents package; FileNotFoundError: a missing path.
    """
    _, path = parse_defense(defense)
    return _require_agents(defense)(path, name=defense, **dict(options or {}))


def _environment() -> dict[str, Any]:
    from headprune.common.provenance import environment_info

    return environment_info()


def run_cell(spec: RunSpec) -> dict[str, Any]:
    """Run one grid cell and return its record (no file is written here). Module level, so every
    executor (processes, Ray) can ship it."""
    from headprune.defenses import defend
    from headprune.engine.metrics import evaluate_defense

    s = spec.settings
    victim = _victim(spec.victim, spec.cache)
    splits = victim.splits()  # evaluation only: handed to defend/evaluate_defense as evaluation data
    clean_test, poisoned_test = splits.clean_test, splits.poisoned_test
    if s.test_limit is not None:
        clean_test, poisoned_test = clean_test.take(s.test_limit), poisoned_test.take(s.test_limit)
    base = {"victim": victim.name, "defense": spec.defense, "seed": spec.seed, "config_hash": spec.config_hash}
    kind, _ = parse_defense(spec.defense)
    env = _environment()
    provenance = {"attack": victim.config.attack, "environment": {k: v for k, v in env.items() if k != "versions"}}
    if victim.config.dataset != "sst2":  # only then, so the records of SST-2 victims stay as they were
        provenance["dataset"] = victim.config.dataset

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
    unlabelled = None
    if s.unlabelled_rows is not None:
        unlabelled = defender_unlabelled_texts(s.clean_pool, victim.config.dataset, victim.name, len(clean),
                                               s.unlabelled_rows)
    defense = spec.defense if kind == "registry" else policy_defense(spec.defense, s.defense_options(spec.defense))
    env_config = s.env.replace(clean_data=clean, unlabelled_data=unlabelled, seed=spec.seed, cache=spec.cache,
                               progress=False)
    r = defend(victim, defense, env_config, s.finetune,
               options=s.defense_options(spec.defense) if kind == "registry" else None, base=s.base,
               eval_clean=clean_test, eval_poison=poisoned_test)
    return {**base, "config": spec.config, "acc": r.metrics["final"]["acc"], "lfr": r.metrics["final"]["lfr"],
            "acc_pruned": r.metrics["pruned"]["acc"], "lfr_pruned": r.metrics["pruned"]["lfr"],
            "heads_pruned": r.heads_pruned, "wall_s": r.timings["defense"], "validation": r.validation,
            "pruned_heads": r.pruned_heads, "versions": r.versions.get("versions", env["versions"]),
            "mask": r.mask.tolist(), "timings": r.timings, "edit": r.details.get("edit"), **_stages(r),
            **{key: r.details[key] for key in _SELECTION if key in r.details}, **provenance}


_SELECTION = ("kept_step", "state_selection")
"""A policy defense's choice of the state it kept (``state="repaired"``), copied into its record when present."""


def _stages(result: Any) -> dict[str, Any]:
    """A composed defense's intermediate stages for its record (none for the others, whose records stay as they
    were): ``{"stages": {name: {"acc", "lfr"}}, "teacher": details}``."""
    if "stages" not in result.metrics:
        return {}
    stages = {name: {"acc": m["acc"], "lfr": m["lfr"]} for name, m in result.metrics["stages"].items()}
    return {"stages": stages, "teacher": result.details.get("teacher")}


# ------------------------------------------------------------------------------------------ parent side
def _victim_config(spec: str) -> VictimConfig:
    """The config of a victim preset or folder, without loading its model.

    Raises:
        ValueError: naming the spec when it is neither a preset nor a victim folder.
    """
    from headprune.victims import CARD_FILE, PRESETS, VictimConfig

    if spec in PRESETS:
        return PRESETS[spec]
    card = Path(spec) / CARD_FILE
    if card.is_file():  # the card's schema applies (VictimCardError naming the field)
        from headprune.victims.card import read_card

        return VictimConfig.from_dict(read_card(Path(spec))["config"])
    raise ValueError(f"unknown victim {spec!r}: not a preset ({', '.join(PRESETS)}) and not a victim folder "
                     f"with {CARD_FILE}")


def _require_unlabelled_reader(defense: str, kind: str) -> None:
    """ValueError naming ``unlabelled_rows`` unless the grid's ``defense`` reads unlabelled text (no policy does)."""
    from headprune.defenses import check_reads_unlabelled

    if kind != "registry":
        raise ValueError(f"unlabelled_rows: defense {defense!r} (a policy) does not read unlabelled text")
    check_reads_unlabelled(defense, "unlabelled_rows")


def plan_grid(victims: Sequence[str], defenses: Sequence[str], seeds: Sequence[int], settings: RunSettings, *,
              reference: bool = False, cache: str | os.PathLike[str] | None = None) -> list[RunSpec]:
    """Every cell of the grid, victim-major (then the reference row, then defenses in order, then seeds).
    Validates all arguments before any work (ValueError / FileNotFoundError naming the bad one). Policy paths are
    written as :func:`canonical_defense` writes them."""
    from headprune.common.provenance import run_config_hash

    defenses = [canonical_defense(m) for m in defenses]
    for what, items in (("victims", victims), ("defenses", defenses), ("seeds", seeds)):
        if len(items) == 0 and not (what == "defenses" and reference):
            raise ValueError(f"no {what} given")
        if len(set(items)) != len(items):
            raise ValueError(f"duplicate {what}: {list(items)}")
    for seed in seeds:
        if int(seed) < 0:
            raise ValueError(f"seeds must be >= 0, got {seed}")
    for defense in defenses:
        kind, _ = parse_defense(defense)
        if kind == "policy":
            _require_agents(defense)
            check_policy_options(defense, settings.defense_options(defense))
        if settings.unlabelled_rows is not None:
            _require_unlabelled_reader(defense, kind)
    unknown = set(settings.options) - set(defenses)
    if unknown:
        raise ValueError(f"options given for defenses not in the grid: {sorted(unknown)}")
    cache_str = None if cache is None else str(cache)
    grid = ([(CLEAN_MODEL, 0)] if reference else []) + [(m, int(s)) for m in defenses for s in seeds]
    # one config per defense (it does not depend on the victim or seed): policy files are digested once each
    configs = {defense: settings.defense_config(defense) for defense, _ in grid}
    hashes = {defense: run_config_hash(cfg) for defense, cfg in configs.items()}
    cells = []
    for v in victims:
        victim_config = _victim_config(v)
        check_pool_dataset(settings.clean_pool, victim_config.dataset, v)
        if settings.unlabelled_rows is not None:
            check_unlabelled_pool(settings.clean_pool, victim_config.dataset, v)
        name = victim_config.name
        for defense, seed in grid:
            cells.append(RunSpec(victim=v, victim_name=name, defense=defense, seed=seed, settings=settings,
                                 config=configs[defense], config_hash=hashes[defense], cache=cache_str))
    return cells


# over 60 lines: a long docstring; the body is plan, run, record and report, one call each
def run_grid(
    victims: Sequence[str],
    defenses: Sequence[str],
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
    """Run every (victim, defense, seed) cell not yet in the JSONL ``records`` file and append its record.

    Args:
        victims: preset names or victim folders.
        defenses: registry defense names and/or ``"policy:<path>"``.
        seeds: the seeds of every defense.
        records: the JSONL file (read first; only this process appends to it).
        settings: :class:`RunSettings` (default: the defaults of ``defend``).
        executor: where runs execute (default :class:`~headprune.compare.executors.LocalExecutor`).
        reference: add the clean-model reference row of each victim (defense :data:`CLEAN_MODEL`).
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
    cells = plan_grid(victims, defenses, seeds, settings, reference=reference, cache=cache)
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
