"""Defenses on the tiny victim: scripted policies, PURE, defend() over every registered defense, the CLI. Kept small (threads pinned
to 1: on a busy 2-core machine torch's default threads make these passes ~40x slower)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny_models import write_labelled_tsv

from headprune.defenses.head_groups import group_lasso_penalty, head_group_norms
from headprune.cli import main
from headprune.defenses import (
    DEFENSES,
    Defense,
    DefenseFineTune,
    EnsemblePolicy,
    GradientPolicy,
    LayerwiseVariancePolicy,
    MCDropoutPolicy,
    PureAttentionRegulariser,
    RandomPolicy,
    RandomPruning,
    ScriptedPolicy,
    ScriptedPolicyDefense,
    defend,
    defense_names,
    layer_rates,
    pure_norm_coefficients,
    pure_prune,
    resolve_defense,
    validation_rows,
)
from headprune.envs.config import HeadPruneConfig
from headprune.engine.evaluator import Evaluator
from headprune.engine.head_stats import compute_head_stats, gate_gradient_importance

FINETUNE = DefenseFineTune(epochs=0.5, max_steps=2)


@pytest.fixture(scope="module")
def fast(small_env_config, clean):
    """Small defend() settings: ``fast(seed)`` is the shared small env config on the defender's 200 clean rows."""
    def env_config(seed: int = 0, rows=None) -> HeadPruneConfig:
        return small_env_config(seed, clean_data=clean if rows is None else rows)
    return env_config


@pytest.fixture(scope="module")
def clean(tiny_victim):
    return tiny_victim.defender_clean_data().take(200)


@pytest.fixture(scope="module")
def rows(clean):
    return clean.take(64)


def _obs(mask):
    return {"mask": np.asarray(mask, dtype=np.int8)}


# ------------------------------------------------------------------------------ importance
def test_gate_importance_is_head_stats_importance(tiny_victim, rows):
    ours = gate_gradient_importance(tiny_victim.model, tiny_victim.tokenizer, rows, max_length=64)
    ref = compute_head_stats(tiny_victim.model, tiny_victim.tokenizer, rows, max_length=64).importance
    assert torch.allclose(ours, ref, rtol=1e-3, atol=1e-5)
    assert len(set(ours.reshape(-1).tolist())) == ours.numel()  # one score per head, not per layer


def test_group_lasso_groups_cover_every_head(tiny_victim):
    norms = head_group_norms(tiny_victim.model)
    assert norms.shape == (2, 4) and bool((norms > 0).all())
    assert float(group_lasso_penalty(tiny_victim.model).detach()) == pytest.approx(float(norms.sum()), rel=1e-4)


# ------------------------------------------------------------------------------ policy interface
def test_predict_has_the_sb3_call_shapes_and_respects_masks(tiny_victim, rows):
    policy = RandomPolicy(tiny_victim.model, tiny_victim.tokenizer, rows, 3)
    mask = np.ones(8, dtype=np.int8)
    mask[[0, 5]] = 0
    for _ in range(20):
        a, state = policy.predict(_obs(mask))
        assert mask[a] == 1 and state is None
    a, _ = policy.predict(_obs(mask), None, None, True)
    assert mask[a] == 1
    allowed = np.zeros(8, dtype=bool)
    allowed[6] = True
    assert policy.predict(_obs(mask), action_masks=allowed)[0] == 6
    batched, _ = policy.predict({"mask": np.stack([mask, mask])}, deterministic=True)
    assert batched.shape == (2,) and all(mask[b] == 1 for b in batched)


def test_every_scripted_defense_runs_a_scripted_policy():
    """Each registered pruning-policy defense runs a :class:`ScriptedPolicy` built from the defender's inputs."""
    base = list(inspect.signature(ScriptedPolicy.__init__).parameters)[1:5]
    assert base == ["model", "tokenizer", "clean_data", "seed"]
    scripted = [cls for _, cls in DEFENSES.items() if issubclass(cls, ScriptedPolicyDefense)]
    assert len(scripted) == 7 and all(issubclass(cls.policy_class, ScriptedPolicy) for cls in scripted)


# ------------------------------------------------------------------------------ gradient
def test_gradient_prunes_lower_importance_first(tiny_victim, rows):
    model, tok = tiny_victim.model, tiny_victim.tokenizer
    imp0 = gate_gradient_importance(model, tok, rows, max_length=64).reshape(-1).numpy()
    # scored once: the order is ascending importance
    once = GradientPolicy(model, tok, rows, 0, max_length=64, reestimate_every=100)
    mask = np.ones(8, dtype=np.int8)
    picked = []
    for _ in range(4):
        a = int(once.predict(_obs(mask))[0])
        picked.append(a)
        mask[a] = 0
    assert picked == list(np.argsort(imp0, kind="stable")[:4])
    assert all(imp0[p] <= imp0[q] for p in picked for q in set(range(8)) - set(picked))
    # re-estimated after every head: each pick is the least important head under the current mask
    every = GradientPolicy(model, tok, rows, 0, max_length=64, reestimate_every=1)
    mask = np.ones(8, dtype=np.int8)
    for _ in range(3):
        a = int(every.predict(_obs(mask))[0])
        imp = gate_gradient_importance(model, tok, rows, mask=torch.from_numpy(mask.astype(np.float32)).view(2, 4),
                                       max_length=64).reshape(-1).numpy()
        assert a == int(np.argmin(np.where(mask == 1, imp, np.inf)))
        mask[a] = 0
    assert every.estimates == 3


# ------------------------------------------------------------------------------ MC dropout
def test_mc_dropout_passes_differ_and_are_seeded(tiny_victim, rows):
    model, tok = tiny_victim.model, tiny_victim.tokenizer
    policy = MCDropoutPolicy(model, tok, rows, 0, max_length=64, passes=4)
    full = np.ones(8, dtype=np.int8)
    passes = policy.sample(full)
    assert passes.shape == (4, 2, 4)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(passes[i], passes[j]), "dropout did not sample"
    assert not model.training  # the training flag is restored
    again = MCDropoutPolicy(model, tok, rows, 0, max_length=64, passes=4).sample(full)
    assert torch.equal(passes, again)
    eval_mode = gate_gradient_importance(model, tok, rows, max_length=64)
    assert not torch.allclose(passes.mean(0), eval_mode)
    a = int(policy.predict(_obs(full))[0])
    ucb = (policy.last_passes.double().mean(0) + policy.last_passes.double().std(0)).reshape(-1)
    assert a == int(torch.argmin(ucb))


# ------------------------------------------------------------------------------ ensemble / layer-wise
def test_every_ensemble_member_respects_the_floor(tiny_victim, clean):
    data = clean.take(120)
    policy = EnsemblePolicy(tiny_victim.model, tiny_victim.tokenizer, data, 0, max_length=64, n_members=5,
                            max_accuracy_drop=0.1, budget=6, n_rows=None)
    ev = Evaluator(tiny_victim.model, tiny_victim.tokenizer, data, max_length=64)
    assert policy.floor == pytest.approx(ev.accuracy() - 0.1)
    pruned_counts = []
    for member, acc in zip(policy.member_masks, policy.member_accuracies):
        m = torch.from_numpy(member.astype(np.float32)).view(2, 4)
        assert ev.accuracy(m) == pytest.approx(acc)
        assert acc >= policy.floor
        assert (member == 0).sum() <= 6
        pruned_counts.append(int((member == 0).sum()))
    assert max(pruned_counts) > 0
    assert len({member.tobytes() for member in policy.member_masks}) > 1
    votes = (1 - policy.member_masks).sum(0)
    assert np.array_equal(policy.majority, votes > 2.5)
    assert policy.planned_budget == int((votes >= 3).sum())


def test_layerwise_plan_follows_the_per_layer_rates(tiny_victim, rows):
    assert layer_rates(2) == [0.2, 0.8] and layer_rates(12)[0] == 0.2 and layer_rates(12)[-1] == pytest.approx(0.8)
    policy = LayerwiseVariancePolicy(tiny_victim.model, tiny_victim.tokenizer, rows, 0, max_length=64)
    planned = policy.planned.reshape(2, 4)
    assert planned.sum(1).tolist() == [0, 3]  # floor(4 * 0.2) = 0, min(floor(4 * 0.8), 3) = 3
    var = policy.variance.reshape(2, 4)
    assert var[1][~planned[1]].min() >= var[1][planned[1]].max()  # the lowest-variance heads of the layer


# ------------------------------------------------------------------------------ PURE
def test_pure_backtracking_stops_at_the_floor():
    L, H = 3, 5  # two chunks of 5 never empty a layer
    variance = torch.tensor([[h * 3.0 + layer for h in range(H)] for layer in range(L)])
    calls = []

    def accuracy(mask):
        calls.append(int((mask == 0).sum()))
        return 1.0 - 0.02 * calls[-1]

    mask, trace = pure_prune(variance, accuracy, 0.85, chunk=5)
    assert int((mask == 0).sum()) == 7  # 1 - 0.02 * 7 = 0.86 >= 0.85 > 0.84
    order = torch.argsort(variance.reshape(-1), stable=True)
    assert set(torch.nonzero(mask.reshape(-1) == 0).reshape(-1).tolist()) == set(order[:7].tolist())
    assert calls == [5, 10, 9, 8, 7]  # chunk, chunk, then backtracking and STOP (no third chunk)
    assert [t["event"] for t in trace] == ["chunk", "chunk", "backtrack", "backtrack", "backtrack"]


def test_pure_keeps_one_head_per_layer():
    variance = torch.tensor([[0.1, 0.2, 0.3, 0.4], [5.0, 6.0, 7.0, 8.0]])
    mask, _ = pure_prune(variance, lambda m: 1.0, 0.5, chunk=4)
    assert mask.sum(1).tolist() == [1.0, 1.0]
    assert mask[0].tolist() == [0, 0, 0, 1] and mask[1].tolist() == [0, 0, 0, 1]


def test_pure_defense_holds_the_floor_and_normalises_attention(tiny_victim, clean, fast):
    result = defend(tiny_victim, "pure", fast(0), FINETUNE)
    assert result.validation["pruned"] >= result.validation["floor"]
    events = [t.get("event") for t in result.trajectory[1:]]
    assert events and events[0] == "chunk"
    coef = torch.tensor(result.details["norm_coefficients"])
    assert coef.shape == (2,) and float(coef.min()) >= 0 and float(coef.max()) == pytest.approx(1.0)
    # the penalty is differentiable and excludes pruned heads
    model = tiny_victim.model
    ids = tiny_victim.tokenizer(["a fine movie", "bad"], padding=True, return_tensors="pt")
    mask = torch.ones(2, 4)
    with PureAttentionRegulariser(model, mask, torch.ones(2)) as reg:
        model(**ids)
        full = float(reg(model).detach())
        mask[0] = 0
        model(**ids)
        part = float(reg(model).detach())
    assert 0 < part < full
    assert pure_norm_coefficients(model, tiny_victim.tokenizer, clean.take(32), torch.ones(2, 4),
                                  max_length=64).shape == (2,)


# ------------------------------------------------------------------------------ defend
@pytest.mark.parametrize("name", defense_names())
def test_every_defense_is_deterministic_and_blind_to_evaluation_data(tiny_victim, clean, name, fast):
    """Every registered defense: same seed, same mask and weights; the mask, validation numbers and weights do
    not change when poisoned evaluation data is given, and the env the defense prunes in holds only the
    defender's clean rows (behavioural honesty, for every defense in the registry)."""
    opts = dict(DEFENSES.get(name).fast_options)
    splits = tiny_victim.splits()
    poisoned = splits.poisoned_test.take(40)
    a = defend(tiny_victim, name, fast(1), FINETUNE, options=opts)
    seen = []
    defense = DEFENSES.get(name)(**opts)
    prune = defense.prune

    def spy(env, **kw):
        seen.extend(list(env.train_data.sentences) + list(env.stats_data.sentences)
                    + list(validation_rows(env).sentences))
        return prune(env, **kw)

    defense.prune = spy  # type: ignore[method-assign]
    b = defend(tiny_victim, defense, fast(1), FINETUNE, eval_poison=poisoned, eval_clean=splits.clean_test.take(40))
    assert torch.equal(a.mask, b.mask), name
    assert a.validation == b.validation
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), (name, k)
    assert seen and set(seen) <= set(clean.sentences) and not set(seen) & set(poisoned.sentences)
    assert a.metrics == {} and b.metrics["final"]["lfr"] is not None
    if DEFENSES.get(name).holds_floor:  # a fixed weight edit (reset-attention, finemix) has no floor to hold
        assert a.validation["pruned"] >= a.validation["floor"]
    assert a.details.get("edit") == b.details.get("edit")  # a weight edit does not depend on evaluation data
    if type(defense).prune is Defense.prune:  # a defense that does not prune keeps every head
        assert a.heads_pruned == 0
    assert a.defense == name and a.config["defense"] == name
    json.dumps(a.to_dict())  # the report is JSON-ready


def test_defend_mask_does_not_depend_on_evaluation_data(tiny_victim, clean, fast):
    splits = tiny_victim.splits()
    opts = dict(DEFENSES.get("gradient").fast_options)
    plain = defend(tiny_victim, "gradient", fast(0), FINETUNE, options=opts)
    evaluated = defend(tiny_victim, "gradient", fast(0), FINETUNE, options=opts,
                       eval_poison=splits.poisoned_test.take(60), eval_clean=splits.clean_test.take(60),
                       curve_points=3)
    assert torch.equal(plain.mask, evaluated.mask)
    assert plain.metrics == {} and set(evaluated.metrics) == {"pruned", "final"}
    assert evaluated.metrics["final"]["lfr"] is not None and evaluated.curve


def test_defend_sets_the_proxy_and_its_kwargs(tiny_victim, clean, fast):
    """An env config with another proxy's keyword arguments (a registered id's kwargs, e.g. the mix-only id's
    reference-disagreement options) is defended as without them: ``defend`` chooses the proxy, so its kwargs too
    (before: the episode's ``pure_variance`` was built with the other proxy's kwargs, a TypeError)."""
    opts = dict(DEFENSES.get("random").fast_options)
    plain = defend(tiny_victim, "random", fast(0), FINETUNE, options=opts)
    other = fast(0).replace(proxy="reference_disagreement", proxy_kwargs={"n_per_class": 4, "reference_epochs": 1})
    given = defend(tiny_victim, "random", other, FINETUNE, options=opts)
    assert torch.equal(plain.mask, given.mask) and plain.heads_pruned == given.heads_pruned


def test_resolve_defense_takes_names_objects_and_policies():
    assert isinstance(resolve_defense("random", {"n_rows": 3}), RandomPruning)
    obj = RandomPruning()
    assert resolve_defense(obj) is obj
    with pytest.raises(ValueError, match="options are given with a registry name"):
        resolve_defense(obj, {"n_rows": 3})

    class Ready:
        def predict(self, obs, **kw):
            return 0, None

    wrapped = resolve_defense(Ready())
    assert wrapped.name == "Ready" and wrapped.config() == {"class": "Ready"}
    with pytest.raises(TypeError, match="registry name, a Defense"):
        resolve_defense(3)


def test_defend_rejects_unknown_strategy(tiny_victim, clean, fast):
    with pytest.raises(ValueError, match="valid defenses: random, gradient"):
        defend(tiny_victim, "prune-everything", fast(0), FINETUNE)


# ------------------------------------------------------------------------------ CLI
def test_cli_round_trip_loads_in_plain_transformers(tiny_victim, clean, tmp_path):
    from transformers import AutoModelForSequenceClassification

    clean_file = write_labelled_tsv(tmp_path / "clean.tsv", clean)
    poison_file = write_labelled_tsv(tmp_path / "poison.tsv", tiny_victim.splits().poisoned_test.take(60))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-m", "headprune.cli", "defend", "--model", str(tiny_victim.path), "--clean-data",
         str(clean_file), "--defense", "gradient", "--out", str(out), "--eval-poison", str(poison_file),
         "--finetune-epochs", "0.5", "--val-size", "80", "--stats-size", "64", "--option", "n_rows=64",
         "--cache", str(tmp_path / "cache"), "--quiet"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("report.json", "report.md", "accuracy_vs_heads.png", "model/headprune.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"]["final"]["lfr"] is not None
    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    ids = tiny_victim.tokenizer(["a fine movie"], return_tensors="pt")
    assert model(**ids).logits.shape == (1, 2)
    pruned = [(int(layer), h) for layer, heads in report["pruned_heads"].items() for h in heads]
    assert len(pruned) == report["heads_pruned"]
    for layer, h in pruned:  # the exported weights of a pruned head are zero (folded gates)
        dense = model.bert.encoder.layer[layer].attention.output.dense.weight
        assert float(dense[:, h * 16:(h + 1) * 16].detach().abs().sum()) == 0.0


def test_cli_bad_input_exits_nonzero_with_a_clear_message(tmp_path, capsys):
    code = main(["defend", "--model", "tiny", "--clean-data", str(tmp_path / "missing.tsv"), "--defense",
                 "gradient", "--out", str(tmp_path / "o")])
    assert code == 2 and "--clean-data: no such file" in capsys.readouterr().err
    (tmp_path / "c.tsv").write_text("sentence\tlabel\nok\t1\n")
    code = main(["defend", "--model", "tiny", "--clean-data", str(tmp_path / "c.tsv"), "--defense", "magic",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "unknown defense 'magic'" in err and "pure" in err and "mcdropout" in err


def test_sparsification_shrinks_head_groups_and_ranks_by_them(tiny_victim, rows):
    from headprune.defenses import SparsificationPolicy

    policy = SparsificationPolicy(tiny_victim.model, tiny_victim.tokenizer, rows, 0, max_length=64, lam=1e-2,
                                  max_steps=4)
    assert float(policy.norms.sum()) < float(policy.norms_before.sum())
    a = int(policy.predict(_obs(np.ones(8, dtype=np.int8)))[0])
    assert a == int(torch.argmin(policy.norms.reshape(-1)))
    ranked = SparsificationPolicy(tiny_victim.model, tiny_victim.tokenizer, rows, 0, max_length=64, lam=1e-2,
                                  max_steps=4, rank="gradient")
    assert ranked.config()["rank"] == "gradient"


def test_defend_gives_policies_only_the_defenders_clean_rows(tiny_victim, clean, fast):
    """Honesty beyond signatures: the rows a policy receives are a subset of the defender's clean rows."""
    seen = {}

    class Spy(RandomPolicy):
        def __init__(self, model, tokenizer, clean_data, seed=0, **kw):
            seen["rows"] = list(zip(clean_data.sentences, clean_data.labels))
            super().__init__(model, tokenizer, clean_data, seed, **kw)

    class SpyDefense(RandomPruning):
        policy_class = Spy

    poisoned = tiny_victim.splits().poisoned_test.take(50)
    defend(tiny_victim, SpyDefense(), fast(0), FINETUNE, eval_poison=poisoned)
    assert seen["rows"] and set(seen["rows"]) <= set(zip(clean.sentences, clean.labels))
    assert not set(poisoned.sentences) & {s for s, _ in seen["rows"]}


def test_layerwise_reads_given_head_statistics(tiny_victim, rows):
    """A precomputed variance (an env's cached ``head_stats``) replaces the policy's own pass, value for value."""
    own = LayerwiseVariancePolicy(tiny_victim.model, tiny_victim.tokenizer, rows, 0, max_length=64)
    stats = compute_head_stats(tiny_victim.model, tiny_victim.tokenizer, own.rows, max_length=64)
    given = LayerwiseVariancePolicy(tiny_victim.model, tiny_victim.tokenizer, rows, 0, max_length=64,
                                    variance=stats.cls_attention_variance)
    assert np.array_equal(own.variance, given.variance) and np.array_equal(own.planned, given.planned)
    shifted = LayerwiseVariancePolicy(tiny_victim.model, tiny_victim.tokenizer, rows, 0, max_length=64,
                                      variance=-stats.cls_attention_variance)
    assert not np.array_equal(own.planned, shifted.planned)
