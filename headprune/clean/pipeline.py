"""``clean``: the practitioner's path. Clean any suspicious sequence classifier with a little clean data.

The defender has a checkpoint of unknown origin (a plain ``transformers`` folder, a hub id, or a headprune
victim) and some labelled clean rows of the model's task. :func:`clean_model` runs the defense our evidence
recommends (:data:`RECOMMENDED_DEFENSE`, see :data:`RECOMMENDATION`) through
:func:`~headprune.defenses.defend.defend` and measures what it did:

1. **Split.** A seeded share of the clean rows (``holdout_fraction``, at most ``max_holdout`` rows) is held out
   as the *report rows*: the defense never sees them (``defend`` splits the rest into its validation rows,
   which set the accuracy floor, and its statistics / fine-tuning rows). Before/after clean accuracy is
   measured on the report rows, with a 95 % Wilson score interval (:func:`wilson_interval`).
2. **Defend.** ``defend`` runs :data:`RECOMMENDED_DEFENSE` (Fine-mixing against the public pre-trained model;
   :data:`FALLBACK_DEFENSE`, layerwise pruning, when no pre-trained reference is known: :func:`choose_defense`)
   and fine-tunes (3 epochs) a copy of the model.
3. **Evaluate.** Only after the model is fixed, and only when the user passes poisoned evaluation rows,
   :func:`~headprune.engine.metrics.evaluate_defense` (the only place LFR is computed) scores LFR: against the
   victim's target, the given ``target_label``, or, for a model of unknown origin, against every class
   (each class taken as the target; LFR counts rows whose true label differs from it).

Differs from ``headprune defend`` (the full-control command) in what it asks: no attack, target label or
training recipe; the number of classes is the model's; the held-out report rows are separate from the
floor's rows; the defaults are sized for a 2-core CPU (128 statistics rows, at most 160 validation rows,
4 curve points on the report rows instead of 12 on thousands of test rows).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headprune.data import LabelledTexts
from headprune.data.checks import check_enough_rows, check_labels
from headprune.defenses.base import DefenseFineTune, check_reads_unlabelled, get_defense
from headprune.defenses.defend import DefenseResult, defend
from headprune.envs.config import HeadPruneConfig
from headprune.engine.metrics import EvalReport, evaluate_defense
from headprune.engine.models import load_classifier
from headprune.common.provenance import config_hash
from headprune.common.finite import check_finite_fields
from headprune.victims.card import CARD_FILE
from headprune.victims import PRESETS, Victim, VictimConfig, resolve_victim

__all__ = ["FALLBACK_DEFENSE", "RECOMMENDATION", "RECOMMENDED_DEFENSE", "CleanResult", "CleanSettings",
           "SuspectModel", "choose_defense", "clean_model", "load_suspect", "split_report_rows", "wilson_interval"]

RECOMMENDED_DEFENSE: tuple[str, float] = ("finemix", 3.0)
"""The defense ``clean`` runs: (registry name, epochs of clean fine-tuning after it). The ONE place the
recommendation lives; :data:`RECOMMENDATION` says why. It needs the public pre-trained model the suspect was
fine-tuned from; without one, ``clean`` runs :data:`FALLBACK_DEFENSE` and says so."""

FALLBACK_DEFENSE: tuple[str, float] = ("layerwise", 3.0)
"""What ``clean`` runs when no pre-trained reference resolves for the suspect (and none is given with ``--base``)."""

RECOMMENDATION = (
    "Fine-mixing (each encoder weight back to the public pre-trained model's with probability p, p the largest "
    "whose accuracy after a short clean fine-tune holds the floor on held-out clean rows) followed by 3 epochs of "
    "clean fine-tuning: chosen by attack-family cross-validation in benchmarks/RESULTS.md (issue 13), the "
    "lowest LFR above the clean floor on the syntactic and BadNets MiniLM victims within 2 points of ACC "
    "(syntactic 0.435 vs layerwise pruning 0.560 and fine-tuning alone 0.838; BadNets 0.708 vs 0.862 / 0.999), "
    "then confirmed on style and AddSent. It needs the pre-trained model the suspect was fine-tuned from "
    "(--base; known for MiniLM victims and hub checkpoints); without one, layerwise pruning (PURE's "
    "[CLS]-attention variance) + 3 epochs of fine-tuning runs instead. purify (--defense purify: Fine-mixing, then "
    "distillation into the public base) ends closer to the clean floor on all four SST-2 attacks (3 seeds: 4-11 "
    "points above it), the insertion backdoors included, and on both held-out families, but it is not the "
    "default: it loses up to 2.8 points of clean ACC (Fine-mixing at most 1.5) and stays 55 points above the "
    "floor on OffensEval syntactic (benchmarks/RESULTS.md, Purification, session of 2026-12-06)."
)
"""Why :data:`RECOMMENDED_DEFENSE` (shown in ``headprune clean --help``)."""

Z_95 = 1.959963984540054
"""The two-sided 95 % normal quantile of the Wilson interval."""


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``successes / n`` (95 % by default).

    Chosen over the normal (Wald) interval because it stays inside [0, 1] and keeps its coverage near 0 and 1
    (an LFR of 0.98, an accuracy of 0.95 on 200 rows). ``n == 0`` gives ``(0.0, 1.0)``.
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


@dataclass
class SuspectModel(Victim):
    """A model of unknown origin wrapped as a :class:`~headprune.victims.Victim` so ``defend`` and the workbench
    take it: no attack, no target, no card metrics. ``config`` only carries ``max_length`` and ``seed``
    (``attack="none"``); :attr:`name` is the folder's (or id's) last part plus a digest of its weights."""

    label: str = "suspect"

    @property
    def name(self) -> str:
        return self.label

    def splits(self) -> Any:
        raise ValueError(f"{self.label} is not a headprune victim: it has no attack splits; pass --eval-poison")


def _weights_digest(model: torch.nn.Module) -> str:
    """A short digest of the first and last parameter tensors (names the head-statistics cache entry)."""
    params = list(model.state_dict().values())
    blob = b"".join(p.detach().cpu().contiguous().numpy().tobytes()[:4096] for p in (params[0], params[-1]))
    return config_hash({"n": len(params), "bytes": blob.hex()}, 8)


def load_suspect(spec: str, *, cache: str | None = None, progress: bool = True, reference: bool = False) -> Victim:
    """The model to clean: a victim (preset name or folder with ``victim.json``) as it is, else any
    sequence-classification checkpoint folder or hub id (``load_classifier(..., num_labels=None,
    require_head=True)``: the classes are the checkpoint's) as a :class:`SuspectModel`.

    :param reference: for a victim preset, also build its clean reference (the floor; needed only with LFR).
    :raises ModelLoadError: unreadable folder; :class:`~headprune.engine.models.HubUnreachableError` offline.
    :raises UnsupportedModelError: not a trained sequence classifier of a supported family.
    """
    if spec in PRESETS or (Path(spec).expanduser() / CARD_FILE).is_file():
        return resolve_victim(spec if spec in PRESETS else Path(spec).expanduser(), cache=cache, progress=progress,
                              reference=reference)
    model, tokenizer = load_classifier(spec, num_labels=None, require_head=True)
    max_positions = int(getattr(model.config, "max_position_embeddings", 128) or 128)
    config = VictimConfig(model=spec, attack="none", poison_rate=0.0, target_label=0, max_length=min(128, max_positions))
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(spec.rstrip("/\\")).name or "model").strip(".-")[:48] or "model"
    return SuspectModel(config=config, path=Path(spec), model=model, tokenizer=tokenizer, card={},
                        label=f"{stem}-{_weights_digest(model)}")


def is_victim(model: Victim) -> bool:
    """Whether ``model`` is a headprune victim (it knows its attack and target), not a suspect."""
    return not isinstance(model, SuspectModel)


@dataclass(frozen=True)
class CleanSettings:
    """The knobs of :func:`clean_model`; the defaults are what ``headprune clean`` runs (sized for a 2-core CPU).

    :param holdout_fraction: share of the clean rows held out as report rows (never seen by the defense).
    :param max_holdout: at most this many report rows.
    :param val_size: at most this many validation rows (the floor's); also at most a third of what is left.
    :param stats_size: rows for head statistics (PURE's variance is stable on ~100 rows).
    :param curve_points: trajectory points evaluated on the report rows for the accuracy-vs-heads plot.
    :param finetune_epochs: clean fine-tuning after pruning (0 disables it).
    :param max_accuracy_drop: the floor, below the unpruned validation accuracy.
    :param seed: fixes the split, the defense and the fine-tune.
    :param base: the public pre-trained model the suspect was fine-tuned from (a folder or a hub id) for
        the reference-based default; ``None``: :func:`~headprune.engine.reference.resolve_base`'s default.
    :param options: options of ``defense`` (``headprune defend --help-options``), checked against its options class
        at construction; a run that falls back to :data:`FALLBACK_DEFENSE` refuses them.
    """

    defense: str = RECOMMENDED_DEFENSE[0]
    finetune_epochs: float = RECOMMENDED_DEFENSE[1]
    base: str | None = None
    holdout_fraction: float = 0.2
    max_holdout: int = 300
    val_size: int = 160
    stats_size: int = 128
    curve_points: int = 4
    max_accuracy_drop: float = 0.05
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_finite_fields(self)
        get_defense(self.defense).options_class.from_mapping(self.options)  # unknown options or bad values, named
        object.__setattr__(self, "options", dict(self.options))
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        for name in ("max_holdout", "val_size", "stats_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.curve_points < 0 or self.finetune_epochs < 0:
            raise ValueError("curve_points and finetune_epochs must be >= 0")


def split_report_rows(clean: LabelledTexts, settings: CleanSettings) -> tuple[LabelledTexts, LabelledTexts]:
    """A seeded split of the clean rows into (defense rows, report rows); the report rows are
    ``min(max_holdout, round(holdout_fraction * N))`` rows (at least 1), both in file order."""
    check_enough_rows(clean, 20, "--clean-data", "report rows + validation rows + statistics/fine-tuning rows")
    n_report = max(1, min(settings.max_holdout, round(settings.holdout_fraction * len(clean))))
    perm = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(15,))).permutation(len(clean))
    return clean.subset(np.sort(perm[n_report:])), clean.subset(np.sort(perm[:n_report]))


def _env_config(defense_rows: LabelledTexts, settings: CleanSettings, cache: str | None,
                progress: bool, base: torch.nn.Module | None = None,
                unlabelled_data: Sequence[str] | None = None) -> HeadPruneConfig:
    """The env config of ``defend``: validation rows at most ``val_size`` and a third of the defense rows;
    ``base``, the reference :func:`choose_defense` already loaded (so the workbench does not load it again), else
    the workbench's own resolution (``"auto"``)."""
    val_size = max(1, min(settings.val_size, len(defense_rows) // 3))
    return HeadPruneConfig(clean_data=defense_rows, unlabelled_data=unlabelled_data, val_size=val_size,
                           stats_size=settings.stats_size,
                           max_accuracy_drop=settings.max_accuracy_drop, seed=settings.seed, cache=cache,
                           progress=progress, base="auto" if base is None else base)


def stage_metrics(report: EvalReport) -> dict[str, Any]:
    """An :class:`EvalReport` as a dict with the Wilson intervals of ACC (and of LFR when there is one)."""
    out: dict[str, Any] = report.to_dict()
    out["acc_ci95"] = wilson_interval(round(report.acc * report.n_clean), report.n_clean)
    if report.lfr is not None:
        out["lfr_ci95"] = wilson_interval(round(report.lfr * report.n_poison), report.n_poison)
    return out


@dataclass
class CleanResult:
    """What :func:`clean_model` did.

    Attributes:
        model_name: the cleaned model's name (victim name, or folder name + weights digest).
        is_victim: whether it was a headprune victim (its card's floor is reported).
        defense: the :class:`~headprune.defenses.defend.DefenseResult` (mask ``[L, H]``, cleaned model, ...).
        stages: ``{"before" | "pruned" | <a composed defense's intermediate stage, e.g. "teacher: finemix"> |
            "after": metrics}`` on the report rows (``stage_metrics``; LFR only
            with poisoned evaluation rows and one target).
        lfr_per_label: ``{target: {stage: LFR}}`` when the target is unknown (one entry per class), else empty.
        target_label: the target LFR was computed for (None: unknown, see ``lfr_per_label``).
        report_rows, defense_rows: how many clean rows each part had.
        timings: seconds per phase (``load``, ``statistics``, ``prune``, ``finetune``, ``evaluation``, ...).
        floor: the victim card's clean-model LFR (the LFR no defense can beat), when known.
        choice: ``{"defense", "reason"}`` (and ``"base"``: how the reference was found): which defense ran and
            why (:func:`choose_defense`).
    """

    model_name: str
    is_victim: bool
    defense: DefenseResult
    stages: dict[str, dict[str, Any]]
    lfr_per_label: dict[int, dict[str, float | None]] = field(default_factory=dict)
    target_label: int | None = None
    report_rows: int = 0
    defense_rows: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    floor: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    choice: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (no model)."""
        return {"model": self.model_name, "is_victim": self.is_victim, "defense": self.defense.defense,
                "recommendation": RECOMMENDATION, "heads_pruned": self.defense.heads_pruned,
                "heads_total": int(self.defense.mask.numel()), "mask": self.defense.mask.int().tolist(),
                "pruned_heads": {str(k): v for k, v in self.defense.pruned_heads.items()},
                "stages": self.stages, "target_label": self.target_label,
                "lfr_per_label": {str(k): v for k, v in self.lfr_per_label.items()},
                "report_rows": self.report_rows, "defense_rows": self.defense_rows,
                "interval": "Wilson score, 95%", "validation": self.defense.validation,
                "trajectory": self.defense.trajectory, "curve": self.defense.curve, "timings": self.timings,
                "floor": self.floor, "settings": self.settings, "defense_choice": self.choice,
                "edit": self.defense.details.get("edit"), "defend_config": self.defense.config,
                "versions": self.defense.versions}


def _targets(model: Victim, target_label: int | None) -> list[int]:
    """The targets LFR is computed for: the given one, the victim's, or every class of a suspect."""
    num_labels = int(model.model.config.num_labels)
    if target_label is not None:
        if not 0 <= target_label < num_labels:
            raise ValueError(f"--target-label {target_label} is not a class of the model (0..{num_labels - 1})")
        return [int(target_label)]
    if is_victim(model):
        return [int(model.config.target_label)]
    return list(range(num_labels))


def _card_floor(model: Victim) -> dict[str, Any]:
    card = model.card
    keys = ("acc", "lfr", "clean_model", "clean_model_acc", "clean_model_lfr", "n_clean_test", "n_poisoned_test")
    return {k: card[k] for k in keys if k in card} if is_victim(model) else {}


def _stage(metrics: dict[str, Any]) -> dict[str, Any]:
    """``defend``'s metrics of one stage in the form of :func:`stage_metrics`."""
    keys = ("acc", "lfr", "n_clean", "n_poison")
    return stage_metrics(EvalReport(**{k: metrics[k] for k in keys}))


def _lfr_per_label(model: Victim, result: DefenseResult, report_rows: LabelledTexts, poison: LabelledTexts,
                   targets: list[int]) -> dict[int, dict[str, float | None]]:
    """LFR of each stage with each class as the target (a model of unknown origin); evaluation only. A class that
    every poisoned row already has as its true label has no LFR (nothing can flip to it): its stages are None."""
    models = {"before": (model.model, None), "pruned": (model.model, result.mask), "after": (result.model, result.mask)}
    per_label: dict[int, dict[str, float | None]] = {}
    true_labels = set(np.asarray(poison.labels).tolist())
    for target in targets:
        if true_labels <= {target}:
            per_label[target] = {stage: None for stage in models}
            continue
        per_label[target] = {
            stage: evaluate_defense(m, model.tokenizer, report_rows, poison, target, mask,
                                    max_length=int(model.config.max_length)).lfr
            for stage, (m, mask) in models.items()}
    return per_label


def clean_model(
    model: str | Victim,
    clean_data: LabelledTexts,
    settings: CleanSettings | None = None,
    *,
    eval_poison: LabelledTexts | None = None,
    target_label: int | None = None,
    unlabelled_data: Sequence[str] | None = None,
    cache: str | None = None,
    progress: bool = True,
) -> CleanResult:
    """Clean ``model`` with the defender's ``clean_data`` (see the module docstring for the protocol).

    :param model: a checkpoint folder, a hub id, a victim preset or folder (:func:`load_suspect`), or a Victim.
    :param clean_data: the defender's labelled clean rows (labels must be classes of the model).
    :param settings: :class:`CleanSettings` (default: what ``headprune clean`` runs).
    :param eval_poison: poisoned evaluation rows with their TRUE labels; used only after the defense is fixed.
    :param target_label: the attacker's target for LFR (default: the victim's; a suspect's: every class).
    :param unlabelled_data: in-domain sentences without labels, for a defense that reads them (distill, purify;
        :func:`~headprune.defenses.check_reads_unlabelled`); never evaluated on.
    :param cache: cache root (victims, head statistics).
    :param progress: progress bars.
    :raises ValueError: labels that are not classes of the model, too few clean rows, a bad target.
    """
    settings = settings or CleanSettings()
    t0 = time.perf_counter()
    suspect = model if isinstance(model, Victim) else load_suspect(model, cache=cache, progress=progress)
    num_labels = int(suspect.model.config.num_labels)
    clean = check_labels(clean_data, num_labels, "--clean-data")
    poison = None if eval_poison is None else check_labels(eval_poison, num_labels, "--eval-poison")
    targets = _targets(suspect, target_label)
    defense_rows, report_rows = split_report_rows(clean, settings)
    defense, base, choice = choose_defense(suspect, settings)
    if unlabelled_data:
        check_reads_unlabelled(defense, "--unlabelled-data")  # e.g. the fallback chosen where no base resolves
    if settings.options and defense != settings.defense:
        raise ValueError(f"--option is for {settings.defense}, but {defense} runs instead: {choice['reason']}")
    load_s = time.perf_counter() - t0
    one_target = poison if poison is not None and len(targets) == 1 else None
    result = defend(suspect, defense, _env_config(defense_rows, settings, cache, progress, base, unlabelled_data),
                    DefenseFineTune(epochs=settings.finetune_epochs), options=settings.options, base=base,
                    eval_clean=report_rows,
                    eval_poison=one_target, target_label=targets[0], curve_points=settings.curve_points)
    t1 = time.perf_counter()  # ---- evaluation of the unpruned model, after the defense is fixed
    before = evaluate_defense(suspect.model, suspect.tokenizer, report_rows, one_target, targets[0],
                              max_length=int(suspect.config.max_length))
    stages = {"before": stage_metrics(before), "pruned": _stage(result.metrics["pruned"]),
              **{name: _stage(m) for name, m in result.metrics.get("stages", {}).items()},  # e.g. purify's teacher
              "after": _stage(result.metrics["final"])}
    per_label = {} if poison is None or one_target is not None else _lfr_per_label(
        suspect, result, report_rows, poison, targets)
    t = result.timings
    timings = {"load": load_s, "statistics": t["setup"], "prune": t["prune"], "finetune": t["finetune"],
               "evaluation": t["evaluation"] + time.perf_counter() - t1}
    return CleanResult(model_name=suspect.name, is_victim=is_victim(suspect), defense=result, stages=stages,
                       lfr_per_label=per_label, target_label=targets[0] if len(targets) == 1 else None,
                       report_rows=len(report_rows), defense_rows=len(defense_rows),
                       timings={k: round(v, 3) for k, v in timings.items()}, floor=_card_floor(suspect),
                       settings={**settings.__dict__, "targets": targets,
                                 **({"unlabelled_rows": len(unlabelled_data)} if unlabelled_data else {})},
                       choice=choice)


def choose_defense(suspect: Victim, settings: CleanSettings) -> tuple[str, torch.nn.Module | None, dict[str, Any]]:
    """``(defense name, pre-trained reference or None, {"defense", "reason"})`` for ``clean``: the settings'
    defense, with its pre-trained reference resolved before any work when it needs one
    (:attr:`~headprune.defenses.base.Defense.needs_base`; ``settings.base``, else
    :func:`~headprune.engine.reference.resolve_base`'s default). When none resolves, :data:`FALLBACK_DEFENSE` with
    the reason for :data:`RECOMMENDED_DEFENSE`, an error for a defense the user chose. A ``settings.base`` that
    cannot be loaded or does not match is an error, not a fallback.

    :raises BaseModelError: ``settings.base`` is given and unusable, or a chosen defense has no reference.
    """
    from headprune.engine.reference import BaseModelError, resolve_base_with_source

    recommended = settings.defense == RECOMMENDED_DEFENSE[0]
    if not get_defense(settings.defense).needs_base:
        return settings.defense, None, {"defense": settings.defense, "reason": "given"}
    try:
        base, source = resolve_base_with_source(suspect, settings.base)
    except BaseModelError as err:
        if settings.base is not None:
            raise
        if not recommended:
            raise BaseModelError(f"--defense {settings.defense} needs the pre-trained model the suspect was fine-tuned "
                                 f"from and none was found ({str(err).splitlines()[0]}): give it with --base") from None
        return FALLBACK_DEFENSE[0], None, {
            "defense": FALLBACK_DEFENSE[0],
            "reason": f"{RECOMMENDED_DEFENSE[0]} needs the pre-trained model the suspect was fine-tuned from and "
                      f"none was found ({str(err).splitlines()[0]}); give it with --base to run "
                      f"{RECOMMENDED_DEFENSE[0]}"}
    reason = "recommended" if recommended else "given"
    return settings.defense, base, {"defense": settings.defense, "base": source,
                                    "reason": f"{reason} (the pre-trained reference: {source})"}


def victim_test_rows(model: Victim, limit: int | None, seed: int = 0) -> LabelledTexts:
    """A seeded subset of ``limit`` rows (all when None) of a victim's poisoned test set (evaluation only)."""
    poisoned = model.splits().poisoned_test
    if limit is None or limit >= len(poisoned):
        return poisoned
    rows = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(16,))).permutation(len(poisoned))[:limit]
    return poisoned.subset(np.sort(rows))
