"""Distillation into the public base: the suspect teaches a student that starts from the pre-trained weights.

The backdoor lives in the weights the suspect's fine-tuning wrote; its clean behaviour shows in its
predictions on clean inputs. :class:`DistillDefense` keeps the second and drops the first: the student is
the suspect with EVERY encoder weight (embeddings included) back to the public pre-trained reference
(:class:`~headprune.defenses.weight_edits.FineMix` with ``p = 1``; the task head, absent from the
reference, starts as the suspect's), and the protocol's fine-tune trains it on soft targets: the suspect's
predicted class probabilities on the defender's clean training rows and on trigger-agnostic augmentations
of them (:func:`~headprune.data.augment.augment_sentences`: word drops, crops, concatenations of two rows,
made of the rows' own words). No training input carries the trigger, so the teacher's backdoor is not
among what it teaches; the augmentations give it many more inputs than the rows' labels alone, which is
what lets a student that starts from the base come within about 2 points of the suspect's clean accuracy
with a few hundred rows (issue 13 showed that plain fine-tuning of the base on 616 rows does not, which is
why fine-mixing's floor rule caps ``p`` well below 1 there).

Measured (benchmarks/RESULTS.md, "Distillation into the public base"): at the default protocol it removes
most of an INSERTED trigger (AddSent, BadNets: 10-12 LFR points above the clean model, where every other
defense leaves it), but on natural triggers (syntactic, style) it does worse than fine-mixing: such a
trigger is partly present in clean text, and the teacher's soft predictions carry its effect.

The teacher need not be the suspect: the option ``teacher`` names another registered defense or a trained agent
(``policy:<run folder or model.zip>``, as the runner names one), or, from Python, is a
:class:`~headprune.defenses.base.Defense` object (e.g. an episode's state), which first runs on the
same defender rows through the same protocol (:func:`~headprune.defenses.defend.run_defense`: its prune /
weight edit and its clean fine-tune); its cleaned model, under its mask, is then the teacher.
:mod:`~headprune.defenses.purify` registers the composition with Fine-mixing's output as the teacher. A
cleaner teacher is what a natural trigger needs: its association travels through the teacher's soft labels on
ordinary text (RESULTS.md, "Purification"). Two options cut that channel without knowing the trigger: ``temperature``
(0 teaches the teacher's argmax, a hard label, instead of its soft scores) and ``reference_weight`` with
``reference_epochs`` (the targets are pulled toward a clean reference: the base trained on the labelled rows alone);
RESULTS.md, "Where the style residue comes from, and hard labels", measures both. ``reference_filter`` uses the same
reference differently: the texts on which its argmax differs from the teacher's are not taught at all (the residue
and the reference's own mistakes both sit there), so the student's targets stay the teacher's elsewhere.

A defender who also owns in-domain sentences WITHOUT labels (``HeadPruneConfig.unlabelled_data``, the
runner's ``unlabelled_rows``) gives them to the student too: the teacher labels them like the augmentations.
They are ordinary text of the task, more varied than recombinations of a few hundred rows, so they carry more
of the teacher's clean behaviour per token (RESULTS.md, "Unlabelled in-domain text").

On the defender's own rows the target is ``alpha * one_hot(label) + (1 - alpha) * teacher``; on the
augmentations it is the teacher's prediction. The defense's learning rate is 5e-5 (the student relearns the
task from the base, as a victim's fine-tune does), the protocol's epochs and seed apply; the teacher runs
once, unpruned, in eval mode. Sees only the workbench's clean training rows, the suspect and the public base.

Not from the paper this project follows. It is close in spirit to knowledge-distillation defenses, but the
roles differ from Neural Attention Distillation (Li et al., ICLR 2021), where a fine-tuned copy teaches the
BACKDOORED model's attention: here the backdoored model is the teacher and only its output on clean-looking
inputs is used, never its weights.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from headprune.data import LabelledTexts
from headprune.data.augment import Augmentation, augment_sentences
from headprune.defenses.base import (
    DEFENSES,
    Defense,
    DefenseFineTune,
    DefenseOutcome,
    Stage,
    get_defense,
    unpruned_outcome,
)
from headprune.defenses.defense_options import DefenseOptions, option
from headprune.defenses.weight_edits import FineMix
from headprune.workbench import Workbench
from headprune.engine.evaluator import Evaluator
from headprune.engine.finetuning import FineTuneConfig, fine_tune

__all__ = ["SUSPECT_TEACHER", "DistillDefense", "DistillOptions", "ReferenceWarning", "check_alpha", "check_teacher",
           "TaughtTexts", "distillation_targets", "tempered_probabilities"]

SUSPECT_TEACHER = "suspect"
"""The ``teacher`` option's value for the suspect itself (``distill``'s default)."""


class ReferenceWarning(UserWarning):
    """The clean reference of ``reference_weight`` / ``reference_filter`` learned a class prior, not the task
    (:meth:`DistillDefense.reference_check`); the run goes on with it, as configured."""


def check_alpha(alpha: object) -> float:
    """``alpha`` as a float if it is a number in ``[0, 1]``; ValueError naming the option otherwise."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"distill option alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def _is_policy(teacher: object) -> bool:
    """Whether ``teacher`` is ``policy:<path>`` (:data:`headprune.compare.POLICY_PREFIX`, the runner's name of a
    trained agent: its episode's best state, then the protocol's fine-tune, teaches)."""
    from headprune.compare.records import POLICY_PREFIX  # lazy: the runner imports the defenses

    return isinstance(teacher, str) and teacher.startswith(POLICY_PREFIX)


def check_teacher(teacher: object, what: str = "distill option teacher") -> str | Defense:
    """``teacher`` if it is :data:`SUSPECT_TEACHER`, a registered defense's name or a
    :class:`~headprune.defenses.base.Defense` object; ValueError naming the option (``what``) and the valid
    names otherwise."""
    if isinstance(teacher, Defense) or teacher == SUSPECT_TEACHER:
        return teacher  # type: ignore[return-value]
    if not isinstance(teacher, str):
        raise ValueError(f"{what} must be {SUSPECT_TEACHER!r} or a defense name, got {teacher!r}")
    if _is_policy(teacher):  # policy:<path>, a trained agent (the runner's policy: defenses) teaches
        from headprune.compare.grid import parse_defense  # lazy: the runner imports the defenses

        try:
            parse_defense(teacher)  # the runner's check of a policy: defense (an empty or missing path)
        except (ValueError, FileNotFoundError):
            raise ValueError(f"{what}: {teacher!r} names no policy file or folder (give policy:<run folder or "
                             f"model.zip>)") from None
        return teacher
    if teacher not in DEFENSES:
        raise ValueError(f"{what}: {teacher!r} is not a defense; valid: {SUSPECT_TEACHER!r} or one of "
                         f"{', '.join(DEFENSES)}")
    return teacher


@dataclass(frozen=True)
class DistillOptions(DefenseOptions):
    """The options of ``distill`` (see :class:`DistillDefense`); checked at construction, ``teacher_options``
    against the named teacher's own options class."""

    teacher: str | Defense = option(SUSPECT_TEACHER, "the model that teaches: 'suspect' (the suspect itself), a "
                                                     "defense's name (from Python also a Defense object), whose "
                                                     "cleaned output teaches, or policy:<run folder or model.zip> "
                                                     "(a trained agent's episode, then the protocol's fine-tune)",
                                    check=check_teacher)
    teacher_options: dict[str, Any] = option({}, "the options of a teacher given by name or policy:<path> (an "
                                                 "agent's: what it keeps of its episode, state='repaired')")
    drops: int = option(3, "augmented copies per row with words dropped", low=0)
    crops: int = option(3, "augmented crops per row", low=0)
    concats: int = option(2, "augmented concatenations per row with another row", low=0)
    alpha: float = option(0.5, "weight of the true label in the targets of the defender's own rows", low=0.0,
                          high=1.0)
    student_epochs: float | None = option(None, "epochs of the distillation (None: the protocol's fine-tune "
                                                "epochs)", low=0.0, low_open=True)
    reference_weight: float = option(0.0, "weight of a clean reference in the taught predictions: the public base "
                                          "trained on the defender's labelled rows alone (no trigger, less "
                                          "accuracy); targets (1 - w) * teacher + w * reference (0: off)",
                                     low=0.0, high=1.0)
    reference_epochs: float | None = option(None, "epochs of the clean reference's fine-tune on the labelled rows "
                                                  "(None: the distillation's epochs)", low=0.0, low_open=True)
    reference_filter: bool = option(False, "drop the augmentations and unlabelled texts on which the teacher's "
                                           "argmax differs from the clean reference's (the one reference_weight "
                                           "mixes in, built when either is on): the student is taught only where "
                                           "a model that never saw a trigger agrees")
    temperature: float = option(1.0, "the teacher's logits are divided by it before the softmax: below 1 the taught "
                                     "probabilities sharpen toward the teacher's argmax (0: its one-hot argmax, a "
                                     "hard label), above 1 they soften", low=0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.teacher_options:
            return
        what = f"option 'teacher_options' of {self._owner()!r}"
        if not isinstance(self.teacher, str) or self.teacher == SUSPECT_TEACHER:
            raise ValueError(f"{what} is for a teacher given by name, not for teacher={self.teacher!r}")
        try:
            if _is_policy(self.teacher):  # an agent's options: what it keeps of its episode
                from headprune.defenses.scripted import PolicyEpisodeOptions

                PolicyEpisodeOptions.from_mapping(self.teacher_options)
            else:
                get_defense(self.teacher).options_class.from_mapping(self.teacher_options)
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from None


def tempered_probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / temperature)`` over the last dimension, in float32; at ``temperature == 0`` the one-hot
    argmax (ties: the lowest class). ``logits``: ``[N, C]``; returns ``[N, C]`` rows that sum to 1."""
    if temperature < 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    logits = logits.float()
    if temperature == 0.0:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    return torch.softmax(logits / temperature, dim=-1)


class TaughtTexts(NamedTuple):
    """What the student is taught (:func:`distillation_targets`)."""

    data: LabelledTexts
    """The kept texts: the defender's rows, then augmentations and unlabelled sentences."""
    targets: torch.Tensor
    """``[len(data), C]`` probabilities taught on them."""
    kept: torch.Tensor
    """``[N + M + U]`` bool over every offered text (rows, augmentations, unlabelled): kept or dropped."""


def distillation_targets(teacher: nn.Module, bench: Workbench, augmentation: Augmentation, alpha: float,
                         seed: int, teacher_mask: torch.Tensor | None = None, *,
                         reference: nn.Module | None = None, reference_weight: float = 0.0,
                         temperature: float = 1.0, reference_filter: bool = False) -> TaughtTexts:
    """The student's training texts and their soft targets.

    :param teacher: the model whose predictions are taught (the suspect, or another defense's output), run in
        eval mode under ``teacher_mask``.
    :param bench: supplies the defender's clean training rows (``bench.train_data``), its unlabelled in-domain
        sentences (``bench.unlabelled_data``, taught like augmentations), tokenizer and lengths.
    :param augmentation: how many augmented texts per row.
    :param alpha: weight of the true label on the defender's own rows (0: teacher only, 1: label only).
    :param seed: seeds the augmentations.
    :param teacher_mask: the teacher's ``[L, H]`` head mask (``None``: every head).
    :param reference: a clean reference (every head, eval mode) whose predictions are mixed into the teacher's
        with weight ``reference_weight`` (``(1 - w) * teacher + w * reference``; ignored at weight 0).
    :param temperature: the teacher's (and the reference's) logits are divided by it before the softmax; ``0``
        teaches the one-hot argmax (a hard label).
    :param reference_filter: keep only the augmentations and unlabelled sentences on which the teacher's argmax
        equals ``reference``'s (the defender's own rows are always kept); needs ``reference``.
    :return: :class:`TaughtTexts` ``(data, targets, kept)``: the ``N`` rows followed by their ``M``
        augmentations and the ``U`` unlabelled sentences (labels: the rows' own, then the teacher's argmax; the
        loss reads only ``targets``), their ``[N + M + U, C]`` probabilities, and ``kept`` ``[N + M + U]`` (all
        True unless ``reference_filter`` dropped texts: ``data`` and ``targets`` then hold only the kept ones).
    """
    if reference_filter and reference is None:
        raise ValueError("distillation_targets: reference_filter needs a reference")
    alpha = check_alpha(alpha)
    rows = bench.train_data
    augmented = augment_sentences(rows.sentences, augmentation, np.random.default_rng(seed))
    unlabelled = list(bench.unlabelled_data)
    texts = list(rows.sentences) + augmented + unlabelled
    evaluator = Evaluator(teacher, bench.tokenizer, texts, batch_size=bench.config.eval_batch_size,
                          max_length=bench.max_length)
    of_teacher = evaluator.logits(teacher_mask)  # [N + M + U, C]
    targets = tempered_probabilities(of_teacher, temperature)
    keep = torch.ones(len(texts), dtype=torch.bool)  # [N + M + U]
    if reference is not None and (reference_weight > 0.0 or reference_filter):
        of_reference = Evaluator(reference, bench.tokenizer, texts, batch_size=bench.config.eval_batch_size,
                                 max_length=bench.max_length).logits()
        if reference_weight > 0.0:
            targets = (1.0 - reference_weight) * targets + reference_weight * tempered_probabilities(of_reference,
                                                                                                       temperature)
        if reference_filter:
            keep[len(rows):] = of_teacher[len(rows):].argmax(dim=-1) == of_reference[len(rows):].argmax(dim=-1)
    own = torch.nn.functional.one_hot(torch.tensor(rows.labels, dtype=torch.long), targets.shape[1]).float()
    targets[: len(rows)] = alpha * own + (1.0 - alpha) * targets[: len(rows)]
    source = f"{rows.source} + {len(augmented)} augmentations" + (
        f" + {len(unlabelled)} unlabelled texts" if unlabelled else "")
    if reference_filter:
        source += f", {int((~keep).sum())} dropped where the teacher and the clean reference disagree"
    texts = [text for text, kept in zip(texts, keep.tolist()) if kept]
    targets = targets[keep]
    labels = list(rows.labels) + targets[len(rows):].argmax(dim=-1).tolist()
    data = LabelledTexts(texts, labels, source=source)
    return TaughtTexts(data, targets, keep)


@DEFENSES.register("distill")
class DistillDefense(Defense):
    """The public base as a student of a teacher on augmented clean rows (see the module docstring).

    Options (:class:`DistillOptions`): ``teacher`` (``"suspect"``: the suspect itself; a registered defense's
    name, or from Python a :class:`~headprune.defenses.base.Defense`, whose protocol output teaches);
    ``teacher_options`` (``{}``): the options of a teacher given by name (checked like any defense's);
    ``drops`` (3), ``crops`` (3), ``concats`` (2): augmented texts per row
    (:class:`~headprune.data.augment.Augmentation`); ``alpha`` (0.5): the true label's weight on the
    defender's own rows; ``student_epochs`` (``None``: the protocol's fine-tune epochs): epochs of the
    distillation itself; ``reference_weight`` (0): the weight of a clean reference's predictions (the base
    trained on the labelled rows alone for ``reference_epochs`` (``None``: the distillation's epochs),
    :meth:`clean_reference`, reported as the stage ``"clean reference"``) mixed into the teacher's;
    ``reference_filter`` (False): drop the augmentations and unlabelled texts on which that reference's argmax
    differs from the teacher's (the count is ``details["finetune"]["dropped"]``); ``temperature`` (1): the
    teacher's logits are divided by it before the softmax (0: its argmax). All are checked at construction
    (:attr:`augmentation` holds the counts, :attr:`alpha` the weight). When a reference is built, its validation
    accuracy and the majority class's share are in ``details["reference"]`` (:meth:`reference_check`). No floor:
    the student starts from the base, below any floor; its fine-tune (the distillation) recovers the accuracy. A
    teacher other than the suspect runs its own protocol fine-tune (the run's epochs; its own learning rate unless
    the run gives one) and is reported as the stage ``"teacher: <name>"``.
    """

    name = "distill"
    needs_base = True
    reads_unlabelled = True
    description = "distil the suspect into the public pre-trained model on augmented clean rows"
    options_class = DistillOptions
    option_values: DistillOptions
    fast_options = {"drops": 1, "crops": 1, "concats": 0}
    finetune_lr = 5e-5
    holds_floor = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        opts = self.option_values  # checked at construction (DistillOptions), before any work
        self.augmentation = Augmentation(drops=opts.drops, crops=opts.crops, concats=opts.concats)
        self.alpha = opts.alpha
        self._stages: list[Stage] = []

    def teacher_defense(self) -> Defense | None:
        """The defense whose output teaches (with this defense's ``base``), or ``None`` for the suspect."""
        spec = self.option_values.teacher
        if isinstance(spec, Defense):
            return spec.with_base(self.base)
        if spec == SUSPECT_TEACHER:
            return None
        if _is_policy(spec):
            from headprune.compare.grid import policy_defense  # lazy: the runner imports the defenses

            return policy_defense(spec, self.option_values.teacher_options).with_base(self.base)
        return get_defense(spec)(**self.option_values.teacher_options).with_base(self.base)

    def runs_episode(self) -> bool:
        """The teacher's (it runs on this defense's workbench)."""
        teacher = self.teacher_defense()
        return teacher is not None and teacher.runs_episode()

    def env_options(self) -> dict[str, Any]:
        """The teacher's env options (a trained agent's observation layout), so it runs in the env it expects."""
        teacher = self.teacher_defense()
        return {} if teacher is None else teacher.env_options()

    def config(self) -> dict[str, Any] | None:
        """A teacher object's provenance (``{"teacher": ...}``); ``None`` for a teacher given by name."""
        spec = self.option_values.teacher
        if not isinstance(spec, Defense):
            return None
        return {"teacher": {"defense": spec.name, "options": dict(spec.options), "config": spec.config()}}

    def teacher(self, bench: Workbench, config: FineTuneConfig) -> tuple[nn.Module, torch.Tensor | None,
                                                                           dict[str, Any]]:
        """``(model, mask, details)`` of the teacher: the suspect (``bench.model``, every head), or the output of
        :meth:`teacher_defense` run on ``bench`` through :func:`~headprune.defenses.defend.run_defense` with the
        protocol's fine-tune of ``config`` (its epochs; its learning rate only where the run overrides this
        defense's own, else the teacher's own), then kept as a :class:`Stage`."""
        from headprune.defenses.defend import run_defense  # defend imports the registry this module fills

        self._stages = []
        teacher = self.teacher_defense()
        if teacher is None:
            return bench.model, None, {"defense": SUSPECT_TEACHER}
        # the run's learning rate when it overrides this defense's own (``--finetune-lr``), else the teacher's own
        lr = None if config.lr == self.finetune_lr else config.lr
        finetune = DefenseFineTune(epochs=config.epochs, lr=lr, max_steps=config.max_steps,
                                   batch_size=config.batch_size)
        defended = run_defense(teacher, bench, finetune)
        self._stages = [*defended.stages, Stage(f"teacher: {teacher.name}", defended.model, defended.mask)]
        details = {k: v for k, v in defended.details.items() if k != "description"}
        return defended.model, defended.mask, {"defense": teacher.name, "validation": defended.validation,
                                               "heads_pruned": int((defended.mask == 0).sum()), **details}

    def student_start(self, bench: Workbench) -> FineMix:
        """The edit that makes the student: every encoder weight (embeddings included) back to the public base
        (Fine-mixing at ``p = 1``, seeded by the workbench); the task head stays the suspect's."""
        return FineMix(self.reference(bench), 1.0, bench.base_seed, True)

    def clean_reference(self, bench: Workbench, config: FineTuneConfig) -> nn.Module:
        """The public base trained on the defender's labelled rows alone (the student's start, then ``config``'s
        fine-tune on the rows' labels): it never saw a trigger, and 616 rows give it less accuracy than the
        teacher. Kept as the stage ``"clean reference"`` (after the teacher's stages)."""
        model = copy.deepcopy(bench.model)
        self.student_start(bench).apply(model)
        fine_tune(model, bench.tokenizer, bench.train_data, config)
        model.eval()
        self._stages.append(Stage("clean reference", model, torch.ones(bench.head_shape)))
        return model

    @staticmethod
    def reference_check(reference: nn.Module, bench: Workbench) -> dict[str, Any]:
        """The clean reference's accuracy on the held-out validation rows beside the majority class's share of
        them: a reference at (or under) that share has learned a class prior, not the task (on the OffensEval
        victim 616 rows x 3 epochs gave exactly that, RESULTS.md "Purification, fourth session"), and mixing it
        in pulls every target toward one class. Reported in ``details["reference"]`` and, for a class prior, as a
        :class:`ReferenceWarning` before the distillation; nothing is refused."""
        accuracy = Evaluator(reference, bench.tokenizer, bench.val_data, batch_size=bench.config.eval_batch_size,
                             max_length=bench.max_length).accuracy()
        majority = bench.val_data.majority_share()
        return {"val_accuracy": accuracy, "majority_rate": majority, "above_majority": accuracy > majority}

    def stages(self) -> list[Stage]:
        """The teacher of the last run when it was not the suspect (and the teacher's own stages before it)."""
        return list(self._stages)

    def prune(self, bench: Workbench, *, progress: bool = False) -> DefenseOutcome:
        mask, trajectory, _ = unpruned_outcome(bench)
        return DefenseOutcome(mask, trajectory, {}, self.student_start(bench))

    def finetune(self, model: nn.Module, bench: Workbench, mask: torch.Tensor, config: FineTuneConfig, *,
                 progress: bool = False) -> dict[str, Any]:
        teacher, teacher_mask, teacher_details = self.teacher(bench, config)
        epochs = self.option_values.student_epochs
        student = config if epochs is None else replace(config, epochs=epochs)
        weight = self.option_values.reference_weight
        reference_epochs = self.option_values.reference_epochs
        reference_config = student if reference_epochs is None else replace(config, epochs=reference_epochs)
        reference_filter = self.option_values.reference_filter
        reference = self.clean_reference(bench, reference_config) if weight > 0.0 or reference_filter else None
        check = None if reference is None else self.reference_check(reference, bench)
        if check is not None and not check["above_majority"]:
            warnings.warn(f"{self.name}: the clean reference's validation accuracy ({check['val_accuracy']:.3f}) is "
                          f"not above the majority class's share ({check['majority_rate']:.3f}): it learned a class "
                          f"prior, and mixing it in pulls every target toward one class (more labelled rows or "
                          f"reference_epochs, or no reference)", ReferenceWarning, stacklevel=2)
        data, targets, kept = distillation_targets(teacher, bench, self.augmentation, self.alpha, config.seed,
                                                   teacher_mask, reference=reference, reference_weight=weight,
                                                   temperature=self.option_values.temperature,
                                                   reference_filter=reference_filter)
        log = fine_tune(model, bench.tokenizer, data, student, mask=mask, soft_targets=targets,
                        progress=f"fine-tune ({self.name})" if progress else False)
        return {"teacher": teacher_details, **({} if check is None else {"reference": check}),
                "finetune": {"steps": log.steps, "final_loss": log.final_loss, "lr": student.lr,
                             "epochs": student.epochs, "seconds": round(log.seconds, 3), "tokens": log.tokens,
                             "texts": len(data), "unlabelled": len(bench.unlabelled_data),
                             "augmented": len(kept) - len(bench.train_data) - len(bench.unlabelled_data),
                             **({"dropped": int((~kept).sum())} if reference_filter else {})}}
