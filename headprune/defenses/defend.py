"""``defend``: run one defense on a victim and return a :class:`DefenseResult`.

Protocol (the paper's and PURE's):

1. **Split.** A :class:`~headprune.workbench.Workbench` is built on the victim and the
   defender's clean rows (``env_config.clean_data``) and zero reward weights, with the cheap ``pure_variance``
   proxy for a defense that runs a policy's episode in the env and none otherwise (head statistics are computed
   only when the defense reads them); its seeded split gives the *validation* rows (the floor's rows) and the
   *training* rows (``bench.train_data``: policies' scoring data and all fine-tuning). The floor is the workbench's
   (``max_accuracy_drop`` below the unpruned validation accuracy, default 0.05, or an absolute
   ``accuracy_floor``), so its best mask is the LAST visited mask at or above the floor: "prune until the
   floor", the rule of the paper, enforced by the workbench's floor and nowhere else.
2. **Prune.** ``defense.prune(bench)`` (:class:`~headprune.defenses.base.Defense`) gives the mask, and
   optionally a weight edit (:class:`~headprune.defenses.base.DefenseOutcome`: heads or attention blocks
   reset to the public pre-trained reference, Fine-mixing), which is applied to a deep copy of the
   victim; the "pruned" validation accuracy and metrics are those of the edited copy under the mask.
3. **Fine-tune.** The deep copy is fine-tuned by ``defense.finetune`` with the pruned heads held
   at zero (:class:`~headprune.defenses.base.DefenseFineTune`: 3 epochs by default; 0 disables it).
4. **Evaluate.** Only after the mask and the weights are fixed, :func:`~headprune.engine.metrics.evaluate_defense`
   (the only place LFR is computed) scores the pruned (and edited) victim and the pruned + fine-tuned
   model on the caller's evaluation data. Poisoned data is never passed to the workbench or to a defense, so
   the mask and the edit do not depend on whether it is given.
"""

from __future__ import annotations

import copy
import numbers
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from headprune.data import LabelledTexts, as_labelled_texts
from headprune.data.checks import check_labels
from headprune.defenses.base import (
    BaseSpec,
    Defense,
    DefenseFineTune,
    Stage,
    as_outcome,
    base_label,
    check_reads_unlabelled,
    get_defense,
    validation_rows,
)
from headprune.defenses.scripted import GivenPolicyDefense
from headprune.envs.config import HeadPruneConfig
from headprune.envs.proxies import NO_PROXY
from headprune.engine.evaluator import Evaluator
from headprune.engine.export import save_pruned
from headprune.engine.gating import pruned_from_mask
from headprune.engine.metrics import evaluate_defense
from headprune.common.out_folder import staged_folder
from headprune.common.provenance import environment_info, run_config_hash
from headprune.victims import Victim, resolve_victim
from headprune.workbench import Workbench

__all__ = ["DefendedModel", "DefenseResult", "check_target_label", "defend", "resolve_defense", "run_defense"]

DEFENSE_ENV = {"reward_weights": {"accuracy": 0.0, "proxy": 0.0}, "proxy_kwargs": {}}
"""What :func:`defend` sets in every workbench config: zero rewards (the floor alone decides) and no proxy keyword
arguments (``defend`` chooses the proxy; a trained agent's env options bring its own proxy and keyword arguments)."""

EPISODE_PROXY = "pure_variance"
"""The proxy of the workbench of a defense that runs a policy's episode in the env (the env observes it; the cheap
one every shipped agent was trained with); every other defense's workbench has none
(:data:`~headprune.envs.proxies.NO_PROXY`), so head statistics are computed only for a defense that reads them."""


@dataclass
class DefenseResult:
    """What :func:`defend` did.

    Attributes:
        defense, seed: what ran (the defense's registry name).
        mask: ``[L, H]`` float mask, 1 = kept.
        model: the cleaned model (a deep copy; the victim is untouched): weight edits and fine-tuning
            applied. Pruned heads are still in its weights: gate them with ``mask`` or export with
            :meth:`save_model` (``save_pruned``).
        tokenizer: its tokenizer.
        validation: accuracies on the defender's validation rows: ``start``, ``pruned`` (after the mask
            and any weight edit), ``final``, and the ``floor``.
        metrics: ``{"pruned": EvalReport dict, "final": ...}`` from ``evaluate_defense`` on the caller's
            evaluation data (empty when none was given); ``lfr`` only with poisoned evaluation data. A defense
            with intermediate models (:meth:`Defense.stages`, e.g. ``purify``'s teacher) adds
            ``"stages": {name: EvalReport dict}``.
        trajectory: ``[{"heads_pruned", "accuracy", "mask"}]`` as pruning went (validation accuracy).
        curve: optional ``[{"heads_pruned", "acc", "lfr"}]``: ``evaluate_defense`` of the pruned victim
            at points of the trajectory, computed after the defense was fixed (for plots).
        timings: seconds per phase.
        config: every option that defines the run (``config_hash`` keys resumable benchmarks).
        versions: :func:`~headprune.common.provenance.environment_info`.
    """

    defense: str
    seed: int
    mask: torch.Tensor
    model: nn.Module
    tokenizer: Any
    validation: dict[str, float]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def heads_pruned(self) -> int:
        return int((self.mask == 0).sum())

    @property
    def pruned_heads(self) -> dict[int, list[int]]:
        return pruned_from_mask(self.mask)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (no model)."""
        return {
            "defense": self.defense,
            "seed": self.seed,
            "heads_pruned": self.heads_pruned,
            "pruned_heads": {str(k): v for k, v in self.pruned_heads.items()},
            "mask": self.mask.int().tolist(),
            "validation": self.validation,
            "metrics": self.metrics,
            "trajectory": self.trajectory,
            "curve": self.curve,
            "timings": self.timings,
            "config": self.config,
            "config_hash": run_config_hash(self.config),
            "details": self.details,
            "versions": self.versions,
        }

    def save_model(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Export the cleaned model with its heads pruned (:func:`~headprune.engine.export.save_pruned`), written
        into a temporary folder renamed to ``out_dir`` at the end (:func:`~headprune.common.out_folder.staged_folder`;
        a non-empty ``out_dir`` only with ``overwrite``, and then no stale file of it remains)."""
        with staged_folder(out_dir, overwrite=overwrite, what="model folder") as tmp:
            save_pruned(self.model, self.mask, tmp, tokenizer=self.tokenizer,  # type: ignore[arg-type]
                        source=f"headprune defend --defense {self.defense}")
        return Path(out_dir)


def resolve_defense(defense: str | Defense | Any, options: Mapping[str, Any] | None = None) -> Defense:
    """A :class:`Defense` from a registry name (built with ``options``), a :class:`Defense` object, or a ready
    policy object with SB3's ``predict`` (wrapped as :class:`~headprune.defenses.scripted.GivenPolicyDefense`).

    :raises ValueError: an unknown name (naming the valid ones); an unknown option or a bad value (its options
        class's one-line error naming the defense and the option); ``options`` given with an object.
    :raises TypeError: anything else.
    """
    if isinstance(defense, str):
        return get_defense(defense)(**dict(options or {}))
    if options:
        raise ValueError("options are given with a registry name; a defense object carries its own")
    if isinstance(defense, Defense):
        return defense
    if callable(getattr(defense, "predict", None)):
        return GivenPolicyDefense(defense)
    raise TypeError(f"defense must be a registry name, a Defense or an object with SB3's predict, "
                    f"got {type(defense).__name__}")


def _as_texts(data: LabelledTexts | str | os.PathLike[str] | None, what: str, num_labels: int
              ) -> LabelledTexts | None:
    """``data`` read if it is a path, its labels checked against the model's ``num_labels`` classes."""
    texts = as_labelled_texts(data, what)
    return None if texts is None else check_labels(texts, num_labels, what)


def check_target_label(target: object, num_labels: int) -> int:
    """``target`` if it is a class of a ``num_labels``-class model; ValueError naming the valid labels."""
    if isinstance(target, bool) or not isinstance(target, numbers.Integral) or not 0 <= target < num_labels:
        raise ValueError(f"target_label {target!r} is not a class of the model, which has {num_labels} classes "
                         f"(valid labels 0..{num_labels - 1}): give the attacker's target class (--target-label)")
    return int(target)


def _run_config(victim: Victim, defense: Defense, bench: Workbench, finetune: DefenseFineTune) -> dict[str, Any]:
    """Every option that defines the run (the keys ``defend`` always hashed)."""
    cfg = bench.config
    config: dict[str, Any] = {
        "victim": victim.name, "defense": defense.name, "seed": int(cfg.seed), "finetune_epochs": finetune.epochs,
        "finetune_lr": finetune.lr, "finetune_max_steps": finetune.max_steps, "batch_size": finetune.batch_size,
        "max_accuracy_drop": cfg.floor_drop, "accuracy_floor": cfg.accuracy_floor, "budget": cfg.budget,
        "val_size": cfg.val_size, "stats_size": cfg.stats_size, "options": dict(defense.options),
        "clean_rows": len(bench.train_data) + len(validation_rows(bench)),
    }
    if bench.unlabelled_data:  # only then, so the configs (and hashes) of runs without them stay
        config["unlabelled_rows"] = len(bench.unlabelled_data)
    extra = defense.config()
    if extra is not None:
        config["policy"] = extra
    env_options = defense.env_options()
    if env_options:  # only then, so the configs (and hashes) of other runs stay
        config["env_options"] = env_options
    base = defense.base_given(bench)
    if base is not None:  # recorded only when given, so the configs (and hashes) of other runs stay
        config["base"] = base_label(base)
    return config


@dataclass
class DefendedModel:
    """What a defense made of the workbench's victim, before any evaluation: :func:`run_defense`'s result.

    Attributes:
        mask: ``[L, H]`` float mask, 1 = kept.
        model: the cleaned model (a deep copy of the victim, edited and fine-tuned).
        pruned_model: the model the "pruned" metrics describe: the victim itself when the defense made no
            weight edit (it is then gated by ``mask``), else a copy of the edited weights before fine-tuning.
        trajectory: ``[{"heads_pruned", "accuracy", "mask"}]`` (validation accuracy).
        details: JSON-ready details of the prune and fine-tune steps.
        validation: accuracy on the workbench's validation rows: ``start``, ``pruned``, ``final``, ``floor``, ``rows``.
        stages: the models the defense built before its final one (:meth:`Defense.stages`, e.g. a teacher).
    """

    mask: torch.Tensor
    model: nn.Module
    pruned_model: nn.Module
    trajectory: list[dict[str, Any]]
    details: dict[str, Any]
    validation: dict[str, float]
    stages: list[Stage] = field(default_factory=list)


def run_defense(defense: Defense, bench: Workbench, finetune: DefenseFineTune, *,
                timings: dict[str, float] | None = None) -> DefendedModel:
    """The prune / edit and fine-tune phases of the protocol: ``defense`` on ``bench``'s victim, on the defender's
    rows only; nothing is evaluated on evaluation data. The victim is untouched (the result is a deep copy).
    :func:`defend` runs it, and so does a defense that uses another one's output (``distill``'s teacher).

    :param defense: the defense.
    :param bench: the workbench on the victim and the defender's clean rows (its config's seed, floor, progress).
    :param finetune: the fine-tune after pruning (0 epochs: none).
    :param timings: if given, ``"prune"`` and ``"finetune"`` seconds are written into it.
    """
    cfg = bench.config
    t1 = time.perf_counter()  # ---- prune (never sees evaluation data), edit the weights of a deep copy
    mask, trajectory, more, edit = as_outcome(defense.prune(bench, progress=cfg.progress))
    details: dict[str, Any] = {"description": defense.description, **more}
    model = copy.deepcopy(bench.model)
    val_rows = validation_rows(bench)
    pruned_model: nn.Module = bench.model
    if edit is None:
        pruned_acc = bench.scorer(mask).accuracy
    else:
        details["edit"] = edit.apply(model)
        # the edited model before fine-tuning, for the "pruned" metrics
        pruned_model = copy.deepcopy(model) if finetune.epochs > 0 else model
        pruned_acc = Evaluator(model, bench.tokenizer, val_rows, batch_size=cfg.eval_batch_size,
                               max_length=bench.max_length).accuracy(mask)
    t2 = time.perf_counter()  # ---- fine-tune the copy with the pruned heads held at zero
    if finetune.epochs > 0:
        lr = finetune.lr if finetune.lr is not None else defense.finetune_lr
        ft_config = finetune.config(lr, max_length=bench.max_length, seed=cfg.seed)
        details.update(defense.finetune(model, bench, mask, ft_config, progress=cfg.progress))
    t3 = time.perf_counter()
    final_acc = Evaluator(model, bench.tokenizer, val_rows, max_length=bench.max_length).accuracy(mask)
    validation = {"start": bench.start_score.accuracy, "pruned": pruned_acc, "final": final_acc,
                  "floor": bench.accuracy_floor, "rows": len(val_rows)}
    if timings is not None:
        timings["prune"] = t2 - t1
        timings["finetune"] = t3 - t2
    return DefendedModel(mask=mask, model=model, pruned_model=pruned_model, trajectory=trajectory, details=details,
                         validation=validation, stages=defense.stages())


def _evaluate(victim: Victim, defended: DefendedModel, bench: Workbench, clean_eval: LabelledTexts | None,
              poison_eval: LabelledTexts | None, target: int, poisoned_true_labels: list[int] | None,
              curve_points: int) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """``evaluate_defense`` of the pruned model (the victim, or its edited copy before fine-tuning), of the
    final model, and of each intermediate stage (``metrics["stages"][name]``, only for defenses that have
    stages), on the evaluation data; and the curve: the pruned model under the trajectory's masks."""
    metrics: dict[str, Any] = {}
    if clean_eval is None and poison_eval is None:
        return metrics, None
    clean_rows = clean_eval if clean_eval is not None else validation_rows(bench)
    kw = {"poisoned_true_labels": poisoned_true_labels, "max_length": bench.max_length}
    acc_data = "eval_clean" if clean_eval is not None else "validation"
    mask = defended.mask
    for key, m in (("pruned", defended.pruned_model), ("final", defended.model)):
        report = evaluate_defense(m, victim.tokenizer, clean_rows, poison_eval, target, mask, **kw)
        metrics[key] = {**report.to_dict(), "acc_data": acc_data}
    if defended.stages:
        metrics["stages"] = {
            stage.name: {**evaluate_defense(stage.model, victim.tokenizer, clean_rows, poison_eval, target,
                                            stage.mask, **kw).to_dict(), "acc_data": acc_data}
            for stage in defended.stages}
    if curve_points <= 0:
        return metrics, None
    trajectory = defended.trajectory
    idx = np.unique(np.linspace(0, len(trajectory) - 1, min(curve_points, len(trajectory))).round().astype(int))
    curve = []
    for i in idx:
        point = trajectory[int(i)]
        m = torch.tensor(point["mask"], dtype=torch.float32).view(bench.num_layers, bench.num_heads)
        report = evaluate_defense(defended.pruned_model, victim.tokenizer, clean_rows, poison_eval, target, m, **kw)
        curve.append({"heads_pruned": point["heads_pruned"], "acc": report.acc, "lfr": report.lfr})
    return metrics, curve


# over 60 lines: the protocol's phases (split, prune/edit, fine-tune, evaluate) read top to bottom
def defend(
    victim: Victim | str | os.PathLike[str],
    defense: str | Defense | Any = "gradient",
    env_config: HeadPruneConfig | Mapping[str, Any] | None = None,
    finetune: DefenseFineTune | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    eval_clean: LabelledTexts | str | os.PathLike[str] | None = None,
    eval_poison: LabelledTexts | str | os.PathLike[str] | None = None,
    poisoned_true_labels: list[int] | None = None,
    target_label: int | None = None,
    curve_points: int = 0,
    base: BaseSpec | None = None,
) -> DefenseResult:
    """Run ``defense`` on ``victim`` (see the module docstring for the protocol).

    :param victim: a :class:`~headprune.victims.Victim`, a preset name or a victim folder.
    :param defense: a name of :data:`~headprune.defenses.DEFENSES`, a :class:`Defense` (e.g. a trained agent,
        :class:`headprune.agents.AgentDefense`) or a ready policy object with SB3's ``predict``.
    :param env_config: the workbench's :class:`~headprune.envs.config.HeadPruneConfig` (or a mapping of its fields):
        the defender's ``clean_data`` (default: the victim's defender data), ``val_size``/``stats_size``,
        the floor, ``budget``, ``seed`` (fixes every random choice), ``cache`` and ``progress``;
        ``proxy``, ``proxy_kwargs`` and ``reward_weights`` are set by ``defend`` (a trained agent's own proxy and
        its keyword arguments where it has them; so a registered id's kwargs can be passed as they are).
    :param finetune: the fine-tune after pruning (:class:`DefenseFineTune`, default 3 epochs).
    :param options: the options of a defense given by name.
    :param eval_clean: clean EVALUATION rows for the report only (default: the validation rows).
    :param eval_poison: poisoned evaluation rows (LFR needs them).
    :param poisoned_true_labels: true labels of ``eval_poison`` when its labels are the attacker's.
    :param target_label: the attacker's target for LFR (default: the victim's).
    :param curve_points: if > 0, evaluate the pruned victim at up to this many trajectory points (plots).
    :param base: the public pre-trained reference of reference-based defenses (a folder, a hub id or a
        model; :meth:`Defense.reference`); default: the defense's own, else the env config's ``base``, else
        :func:`~headprune.engine.reference.resolve_base`'s default. Recorded in the run's config only when given.
    """
    defense = resolve_defense(defense, options).with_base(base)
    finetune = finetune or DefenseFineTune()
    proxy = EPISODE_PROXY if defense.runs_episode() else NO_PROXY
    cfg = HeadPruneConfig.from_kwargs(env_config).replace(**{**DEFENSE_ENV, "proxy": proxy, **defense.env_options()})
    if cfg.unlabelled_data:
        check_reads_unlabelled(defense, "unlabelled_data")
    t0 = time.perf_counter()
    victim = resolve_victim(victim, cache=cfg.cache, progress=cfg.progress)
    num_labels = int(victim.model.config.num_labels)  # evaluation data and target checked before any work
    target = check_target_label(victim.config.target_label if target_label is None else target_label, num_labels)
    clean_eval = _as_texts(eval_clean, "eval_clean", num_labels)
    poison_eval = _as_texts(eval_poison, "eval_poison", num_labels)
    bench = Workbench(victim, cfg)
    config = _run_config(victim, defense, bench, finetune)
    timings: dict[str, float] = {"setup": time.perf_counter() - t0}
    defended = run_defense(defense, bench, finetune, timings=timings)
    timings["defense"] = time.perf_counter() - t0

    t3 = time.perf_counter()  # ---- evaluation, after the defense is fixed (the only place LFR is computed)
    metrics, curve = _evaluate(victim, defended, bench, clean_eval, poison_eval, target, poisoned_true_labels,
                               curve_points)
    timings["evaluation"] = time.perf_counter() - t3
    timings = {k: round(v, 3) for k, v in timings.items()}
    return DefenseResult(defense=defense.name, seed=int(cfg.seed), mask=defended.mask, model=defended.model,
                         tokenizer=victim.tokenizer, validation=defended.validation, metrics=metrics,
                         trajectory=defended.trajectory, curve=curve, timings=timings, config=config,
                         versions=environment_info(), details=defended.details)
