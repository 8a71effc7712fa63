"""The distillation defense (headprune.defenses.distill), its augmentations and fine_tune's soft targets."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from headprune.data import LabelledTexts
from headprune.data.augment import Augmentation, augment_sentences
from headprune.defenses import DefenseFineTune, defend, distillation_targets, resolve_defense
from headprune.defenses.distill import tempered_probabilities
from headprune.envs.headprune_env import HeadPruneEnv
from headprune.workbench import Workbench
from headprune.engine.evaluator import Evaluator
from headprune.engine.finetuning import FineTuneConfig, fine_tune, soft_cross_entropy

ROWS = ["a gripping , funny film", "dull and far too long", "it works", "one of the best of the year"]


def test_augmentations_are_made_of_the_rows_own_words_and_are_seeded():
    aug = Augmentation(drops=2, crops=2, concats=2)
    out = augment_sentences(ROWS, aug, np.random.default_rng(0))
    assert out == augment_sentences(ROWS, aug, np.random.default_rng(0))
    assert out != augment_sentences(ROWS, aug, np.random.default_rng(1))
    words = {w for s in ROWS for w in s.split()}
    assert all(set(text.split()) <= words for text in out)  # no word the clean rows do not hold
    assert all(len(text.split()) >= aug.min_words for text in out)
    # "it works" (2 words) is too short for a drop or a crop: only its 2 concatenations
    assert len(out) == 3 * aug.per_row + 2
    assert sum(text.startswith("it works ") for text in out) >= 2
    assert augment_sentences(ROWS, Augmentation(0, 0, 0), np.random.default_rng(0)) == []


@pytest.mark.parametrize(("field", "value"), [("drops", -1), ("crops", 1.5), ("concats", True), ("drop_rate", 1.0)])
def test_augmentation_rejects_bad_counts_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        Augmentation(**{field: value})


def test_soft_cross_entropy_is_cross_entropy_on_one_hot_targets():
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2, 1, 1, 0])
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    assert torch.allclose(soft_cross_entropy(logits, one_hot), torch.nn.functional.cross_entropy(logits, labels))
    with pytest.raises(ValueError, match="differ in shape"):
        soft_cross_entropy(logits, one_hot[:, :2])


def test_fine_tune_checks_soft_targets(tiny_victim):
    data = LabelledTexts(ROWS, [1, 0, 1, 1], source="rows.tsv")
    model = copy.deepcopy(tiny_victim.model)
    config = FineTuneConfig(epochs=1, max_steps=1, max_length=64)
    with pytest.raises(ValueError, match=r"soft_targets must be \[N=4, C\].*rows.tsv"):
        fine_tune(model, tiny_victim.tokenizer, data, config, soft_targets=torch.ones(3, 2) / 2, progress=False)
    with pytest.raises(ValueError, match="not both"):
        fine_tune(model, tiny_victim.tokenizer, data, config, soft_targets=torch.ones(4, 2) / 2,
                  loss_fn=soft_cross_entropy, progress=False)


def test_soft_targets_pull_the_student_towards_them(tiny_victim):
    """Soft targets on the class the model predicts least, labels on the other one: after training every
    prediction is the targets' class (the loss reads the targets, not the labels)."""
    model = copy.deepcopy(tiny_victim.model)
    before = Evaluator(model, tiny_victim.tokenizer, ROWS * 8, max_length=64).predictions()
    rare = int(before.bincount(minlength=2).argmin())
    texts = LabelledTexts(ROWS * 8, [1 - rare] * 32)
    targets = torch.nn.functional.one_hot(torch.full((32,), rare), 2).float()
    fine_tune(model, tiny_victim.tokenizer, texts, FineTuneConfig(epochs=10, lr=1e-3, batch_size=8, max_length=64),
              soft_targets=targets, progress=False)
    after = Evaluator(model, tiny_victim.tokenizer, ROWS * 8, max_length=64).predictions()
    assert bool((before != rare).any()) and bool((after == rare).all())


def test_distillation_targets_mix_the_rows_labels_and_take_the_teacher_on_augmentations(tiny_victim,
                                                                                        small_env_config):
    rows = tiny_victim.defender_clean_data().take(120)
    env = HeadPruneEnv(tiny_victim, small_env_config(0, clean_data=rows))
    aug = Augmentation(drops=1, crops=1, concats=1)
    data, targets, _ = distillation_targets(env.model, env, aug, 0.25, seed=3)
    n = len(env.train_data)
    assert data.sentences[:n] == env.train_data.sentences and len(data) == targets.shape[0] > n
    teacher = torch.softmax(Evaluator(env.model, env.tokenizer, list(data.sentences), max_length=64).logits(), -1)
    own = torch.nn.functional.one_hot(torch.tensor(env.train_data.labels), 2).float()
    assert torch.allclose(targets[:n], 0.25 * own + 0.75 * teacher[:n], atol=1e-6)
    assert torch.allclose(targets[n:], teacher[n:], atol=1e-6)
    assert list(data.labels[n:]) == teacher[n:].argmax(-1).tolist()
    again, _, _ = distillation_targets(env.model, env, aug, 0.25, seed=3)
    assert again == data
    with pytest.raises(ValueError, match="alpha"):
        distillation_targets(env.model, env, aug, 1.5, seed=3)


def test_unlabelled_texts_follow_the_augmentations_with_the_teachers_targets(tiny_victim, small_env_config):
    rows = tiny_victim.defender_clean_data().take(120)
    unlabelled = ["a quiet , lovely film", "the plot goes nowhere", "stunning"]
    plain = HeadPruneEnv(tiny_victim, small_env_config(0, clean_data=rows))
    env = Workbench(tiny_victim, small_env_config(0, clean_data=rows, unlabelled_data=unlabelled))
    with pytest.raises(ValueError, match="unlabelled_data: HeadPrune-v0 does not read unlabelled text"):
        HeadPruneEnv(tiny_victim, small_env_config(0, clean_data=rows, unlabelled_data=unlabelled))
    aug = Augmentation(drops=1, crops=0, concats=0)
    without, _, _ = distillation_targets(plain.model, plain, aug, 0.5, seed=3)
    data, targets, _ = distillation_targets(env.model, env, aug, 0.5, seed=3)
    assert data.sentences == without.sentences + tuple(unlabelled)  # same rows and augmentations, then the texts
    teacher = torch.softmax(Evaluator(env.model, env.tokenizer, unlabelled, max_length=64).logits(), -1)
    assert torch.allclose(targets[-3:], teacher, atol=1e-6)
    assert list(data.labels[-3:]) == teacher.argmax(-1).tolist()
    assert "3 unlabelled texts" in data.source


@pytest.mark.filterwarnings("ignore::headprune.defenses.distill.ReferenceWarning")  # tiny: a class prior
def test_a_clean_reference_is_mixed_into_the_teachers_targets_and_reported_as_a_stage(tiny_victim, small_env_config):
    rows = tiny_victim.defender_clean_data().take(120)
    env = HeadPruneEnv(tiny_victim, small_env_config(0, clean_data=rows))
    aug = Augmentation(drops=1, crops=0, concats=0)
    reference = copy.deepcopy(env.model)
    torch.nn.init.normal_(reference.classifier.weight, std=1.0)  # another model than the teacher
    plain, teacher, _ = distillation_targets(env.model, env, aug, 0.0, seed=3)
    _, only_reference, _ = distillation_targets(env.model, env, aug, 0.0, seed=3, reference=reference,
                                             reference_weight=1.0)
    data, half, _ = distillation_targets(env.model, env, aug, 0.0, seed=3, reference=reference, reference_weight=0.5)
    of_reference = torch.softmax(Evaluator(reference, env.tokenizer, list(data.sentences), max_length=64).logits(), -1)
    assert torch.allclose(only_reference, of_reference, atol=1e-6) and not torch.allclose(teacher, of_reference)
    assert torch.allclose(half, 0.5 * teacher + 0.5 * of_reference, atol=1e-6)
    defense = resolve_defense("distill", {"reference_weight": 0.5, "drops": 1, "crops": 0, "concats": 0})
    result = defend(tiny_victim, defense, small_env_config(0, clean_data=rows), DefenseFineTune(epochs=0.5),
                    eval_clean=tiny_victim.defender_clean_data().subset(range(120, 200)))
    assert list(result.metrics["stages"]) == ["clean reference"]
    with pytest.raises(ValueError, match="reference_weight"):
        resolve_defense("distill", {"reference_weight": 1.5})


@pytest.mark.filterwarnings("ignore::headprune.defenses.distill.ReferenceWarning")  # tiny: a class prior
def test_reference_filter_drops_exactly_the_texts_where_teacher_and_reference_disagree(tiny_victim,
                                                                                       small_env_config):
    rows = tiny_victim.defender_clean_data().take(120)
    env = Workbench(tiny_victim, small_env_config(0, clean_data=rows, unlabelled_data=["a quiet , lovely film",
                                                                                       "the plot goes nowhere"]))
    aug = Augmentation(drops=1, crops=1, concats=0)
    full, targets, kept_all = distillation_targets(env.model, env, aug, 0.5, seed=3, temperature=0.0)
    n = len(env.train_data)
    def logits(model: torch.nn.Module) -> torch.Tensor:  # as distillation_targets computes them
        return Evaluator(model, env.tokenizer, list(full.sentences), batch_size=env.config.eval_batch_size,
                         max_length=env.max_length).logits()

    margins = logits(env.model).diff(dim=-1)[n:, 0].sort().values
    middle = len(margins) // 2
    reference = copy.deepcopy(env.model)
    with torch.no_grad():  # the teacher with its decision threshold between the two middle margins: it disagrees
        reference.classifier.bias[1] -= (margins[middle - 1] + margins[middle]) / 2  # between 0 and there only
    data, kept_targets, kept = distillation_targets(env.model, env, aug, 0.5, seed=3, temperature=0.0,
                                                    reference=reference, reference_filter=True)
    texts = list(full.sentences)
    expected = logits(env.model).argmax(-1) == logits(reference).argmax(-1)
    expected[:n] = True  # the defender's own rows are always taught
    assert bool(kept_all.all()) and torch.equal(kept, expected)
    assert 0 < int((~kept).sum()) < len(texts) - n  # the random head disagrees somewhere, not everywhere
    assert list(data.sentences) == [t for t, k in zip(texts, kept.tolist()) if k]
    assert torch.equal(kept_targets, targets[kept])  # weight 0: the teacher's targets, only fewer
    assert f"{int((~kept).sum())} dropped" in data.source
    with pytest.raises(ValueError, match="reference_filter needs a reference"):
        distillation_targets(env.model, env, aug, 0.5, seed=3, reference_filter=True)
    defense = resolve_defense("purify", {"reference_filter": True, "reference_epochs": 0.5, "drops": 1, "crops": 0,
                                         "concats": 0, "teacher_options": {"p": 0.5}})
    result = defend(tiny_victim, defense, small_env_config(0, clean_data=rows), DefenseFineTune(epochs=0.5),
                    eval_clean=tiny_victim.defender_clean_data().subset(range(120, 160)))
    finetune = result.details["finetune"]
    assert list(result.metrics["stages"]) == ["teacher: finemix", "clean reference"]  # built for the filter alone
    assert set(result.details["reference"]) == {"val_accuracy", "majority_rate", "above_majority"}
    assert finetune["texts"] + finetune["dropped"] == n + finetune["augmented"] + finetune["unlabelled"]
    assert "dropped" not in defend(tiny_victim, resolve_defense("distill", {"drops": 1, "crops": 0, "concats": 0}),
                                   small_env_config(0, clean_data=rows), DefenseFineTune(epochs=0.5)
                                   ).details["finetune"]


def answer_one_class(model: torch.nn.Module, label: int) -> torch.nn.Module:
    """``model`` (a BERT classifier) with its head set to answer ``label`` whatever the input: a class prior."""
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[label] = 1.0
    return model


def test_reference_check_tells_a_class_prior_from_a_model_of_the_task(tiny_victim, small_env_config):
    """A clean reference that predicts one class everywhere scores exactly the majority share of the validation
    rows and is flagged; the suspect itself (a model of the task) is measured like any evaluator would."""
    from headprune.defenses.distill import DistillDefense

    rows = tiny_victim.defender_clean_data().take(120)
    env = Workbench(tiny_victim, small_env_config(0, clean_data=rows))
    labels = np.asarray(env.val_data.labels)
    majority = int(np.bincount(labels).argmax())
    constant = answer_one_class(copy.deepcopy(env.model), majority)
    check = DistillDefense.reference_check(constant, env)
    assert check["val_accuracy"] == pytest.approx(check["majority_rate"]) == pytest.approx(
        np.mean(labels == majority))
    assert check["above_majority"] is False
    real = DistillDefense.reference_check(env.model, env)
    assert real["val_accuracy"] == pytest.approx(Evaluator(env.model, env.tokenizer, env.val_data,
                                                           max_length=env.max_length).accuracy())


def test_a_class_prior_reference_warns_before_the_distillation(tiny_victim, small_env_config, monkeypatch):
    """A clean reference that predicts the majority class everywhere is reported (``above_majority`` False) and
    warned about with :class:`ReferenceWarning`; the run goes on as configured."""
    from headprune.defenses.distill import DistillDefense, ReferenceWarning

    built = DistillDefense.clean_reference

    def constant_reference(self, bench, config):
        majority = int(np.bincount(np.asarray(bench.val_data.labels)).argmax())
        return answer_one_class(built(self, bench, config), majority)

    monkeypatch.setattr(DistillDefense, "clean_reference", constant_reference)
    rows = tiny_victim.defender_clean_data().take(120)
    defense = resolve_defense("distill", {"reference_weight": 0.5, "drops": 1, "crops": 0, "concats": 0})
    with pytest.warns(ReferenceWarning, match="not above the majority class's share"):
        result = defend(tiny_victim, defense, small_env_config(0, clean_data=rows), DefenseFineTune(epochs=0.5))
    assert result.details["reference"]["above_majority"] is False


@pytest.mark.filterwarnings("ignore::headprune.defenses.distill.ReferenceWarning")  # tiny: a class prior
@pytest.mark.parametrize(("options", "epochs"), [({}, 0.5), ({"reference_epochs": 1.5}, 1.5)])
def test_the_clean_reference_trains_for_its_own_epochs_or_the_distillations(tiny_victim, small_env_config, monkeypatch,
                                                                            options, epochs):
    from headprune.defenses.distill import DistillDefense

    seen = []
    real = DistillDefense.clean_reference

    def spy(self, bench, config):
        seen.append(config.epochs)
        return real(self, bench, replace(config, max_steps=1))

    monkeypatch.setattr(DistillDefense, "clean_reference", spy)
    rows = tiny_victim.defender_clean_data().take(120)
    defense = resolve_defense("distill", {"reference_weight": 0.5, "student_epochs": 0.5, "drops": 0, "crops": 0,
                                          "concats": 0, **options})
    defend(tiny_victim, defense, small_env_config(0, clean_data=rows), DefenseFineTune(epochs=0.5, max_steps=2))
    assert seen == [epochs]


def test_temperature_sharpens_the_taught_probabilities_and_zero_teaches_the_argmax(tiny_victim, small_env_config):
    logits = torch.tensor([[2.0, 0.0], [-1.0, 3.0], [0.5, 0.5]])
    assert torch.allclose(tempered_probabilities(logits, 1.0), torch.softmax(logits, -1))
    assert torch.allclose(tempered_probabilities(logits, 0.5), torch.softmax(2.0 * logits, -1))
    assert tempered_probabilities(logits, 0.0).tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
    with pytest.raises(ValueError, match="temperature"):
        tempered_probabilities(logits, -1.0)
    rows = tiny_victim.defender_clean_data().take(120)
    env = HeadPruneEnv(tiny_victim, small_env_config(0, clean_data=rows))
    aug = Augmentation(drops=1, crops=1, concats=0)
    data, soft, _ = distillation_targets(env.model, env, aug, 0.5, seed=3)
    _, hard, _ = distillation_targets(env.model, env, aug, 0.5, seed=3, temperature=0.0)
    n = len(env.train_data)
    own = torch.nn.functional.one_hot(torch.tensor(env.train_data.labels), 2).float()
    teacher_argmax = torch.nn.functional.one_hot(soft.argmax(-1), 2).float()
    assert torch.equal(hard[n:], teacher_argmax[n:]) and not torch.equal(soft[n:], hard[n:])
    assert torch.allclose(hard[:n], 0.5 * own + 0.5 * torch.nn.functional.one_hot(
        torch.softmax(Evaluator(env.model, env.tokenizer, list(data.sentences[:n]), max_length=64).logits(), -1
                      ).argmax(-1), 2).float())
    assert resolve_defense("purify", {"temperature": 0}).option_values.temperature == 0.0


@pytest.mark.parametrize(("value", "message"), [("one sentence", "sequence of sentences"), (["ok", "  "], r"\[1\]"),
                                               ([b"bytes"], r"\[0\]"), (["ok", None], r"\[1\]")])
def test_unlabelled_data_refuses_what_is_not_a_list_of_sentences(value, message):
    from headprune.envs.config import HeadPruneConfig

    with pytest.raises(ValueError, match=r"unlabelled_data.*" + message):
        HeadPruneConfig(unlabelled_data=value)
    assert HeadPruneConfig(unlabelled_data=["a", "b"]).unlabelled_data == ("a", "b")


def test_defend_refuses_unlabelled_text_to_a_defense_that_would_ignore_it(tiny_victim, small_env_config):
    config = small_env_config(0, unlabelled_data=["a fine film"])
    for name in ("finemix", "ft", "gradient"):
        with pytest.raises(ValueError, match=f"unlabelled_data: defense '{name}' does not read unlabelled text; "
                                             "only distill, purify do"):
            defend(tiny_victim, name, config)


def test_distill_removes_most_of_the_tiny_backdoor_where_the_reset_alone_does_not(tiny_victim, small_env_config):
    """The tiny victim (BadNets, LFR ~0.99): the student (every weight back to tiny's seeded initialisation,
    its "base") taught by the suspect on augmented clean rows keeps most of the accuracy and loses most of
    the backdoor; the same reset followed by plain fine-tuning on the rows (no teacher) stays at chance.
    (Tiny's base is a random initialisation, so both train at tiny's own learning rate, 1e-3.)"""
    splits = tiny_victim.splits()
    clean_test, poisoned_test = splits.clean_test.take(400), splits.poisoned_test.take(400)
    config = small_env_config(0)
    finetune = DefenseFineTune(epochs=3, lr=1e-3)
    victim = defend(tiny_victim, "none", config, DefenseFineTune(epochs=0),
                    eval_clean=clean_test, eval_poison=poisoned_test).metrics["final"]
    student = defend(tiny_victim, "distill", config, finetune, options={"drops": 1, "crops": 1, "concats": 1},
                     eval_clean=clean_test, eval_poison=poisoned_test)
    control = defend(tiny_victim, "finemix", config, finetune, options={"p": 1.0},
                     eval_clean=clean_test, eval_poison=poisoned_test).metrics["final"]
    final = student.metrics["final"]
    assert victim["lfr"] > 0.95
    assert final["lfr"] < 0.75 and final["acc"] > victim["acc"] - 0.1
    assert control["acc"] < final["acc"] - 0.1
    assert student.details["edit"]["operation"] == "finemix" and student.details["finetune"]["augmented"] > 0


@pytest.mark.parametrize(("options", "message"), [({"drops": -1}, "drops"), ({"alpha": 2.0}, "alpha"),
                                                  ({"concats": 1.5}, "concats"), ({"temprature": 2}, "no option"),
                                                  ({"temperature": -0.5}, "temperature"),
                                                  ({"reference_epochs": 0}, "reference_epochs")])
def test_distill_rejects_bad_options_before_any_work(options, message):
    with pytest.raises(ValueError, match=message):
        resolve_defense("distill", options)
