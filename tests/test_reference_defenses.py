"""Reference-based defenses on the tiny victim (its reference: the seeded initialisation it was trained from):
drift order, head resets in the returned and exported model, Fine-mixing's extremes and its choice of p,
reset-attention, Fine-purifying's score, and ``base=`` on defend / the runner / the CLI."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from headprune.architectures import find_attention_sites
from headprune.defenses import DEFENSES, DefenseFineTune, defend, purify_scores, validation_rows
from headprune.defenses import repaired_floor as repaired_floor_module
from headprune.defenses.drift import DriftPolicy, descending_order
from headprune.defenses.weight_edits import attention_parameter_names, fine_mix
from headprune.envs.config import HeadPruneConfig
from headprune.engine.evaluator import Evaluator
from headprune.engine.models import build_tiny_classifier
from headprune.common.provenance import config_hash
from headprune.engine.reference import BaseModelError, head_weight_drift, resolve_base, shared_parameters

NO_FINETUNE = DefenseFineTune(epochs=0)
FINETUNE = DefenseFineTune(epochs=0.5, max_steps=2)


@pytest.fixture(scope="module")
def clean(tiny_victim):
    return tiny_victim.defender_clean_data().take(200)


@pytest.fixture(scope="module")
def env_config(clean, small_env_config):
    def make(seed: int = 0, **fields) -> HeadPruneConfig:
        return small_env_config(seed, clean_data=clean, **fields)
    return make


@pytest.fixture(scope="module")
def base(tiny_victim):
    return resolve_base(tiny_victim)


def _heads_equal(model, other, layer: int, head: int) -> bool:
    site, other_site = find_attention_sites(model)[layer], find_attention_sites(other)[layer]
    mine, theirs = site.adapter.head_weights(site, head), other_site.adapter.head_weights(other_site, head)
    return all(torch.equal(mine[k], theirs[k]) for k in mine)


# ------------------------------------------------------------------------------ drift
def test_descending_order_breaks_ties_by_index():
    assert descending_order(torch.tensor([[0.1, 0.5], [0.5, 0.2]])) == [1, 2, 3, 0]


def test_drift_policy_prunes_most_drifted_first(tiny_victim, clean, base):
    drift = head_weight_drift(tiny_victim.model, base)
    assert bool((drift > 0).all())  # every head moved in training
    policy = DriftPolicy(tiny_victim.model, tiny_victim.tokenizer, clean, 0, drift=drift)
    mask, picked = np.ones(8, dtype=np.int8), []
    for _ in range(8):
        a = int(policy.predict({"mask": mask})[0])
        picked.append(a)
        mask[a] = 0
    assert picked == descending_order(drift)


def test_drift_prune_and_reset_follow_the_drift_order(tiny_victim, env_config, base):
    order = descending_order(head_weight_drift(tiny_victim.model, base))
    pruned = defend(tiny_victim, "drift", env_config(max_accuracy_drop=1.0), NO_FINETUNE)
    assert pruned.heads_pruned == 4  # no floor: the budget (half the heads)
    gone = [i for i, kept in enumerate(pruned.mask.reshape(-1).tolist()) if kept == 0]
    assert sorted(gone) == sorted(order[:4]) and "edit" not in pruned.details
    reset = defend(tiny_victim, "drift", env_config(max_accuracy_drop=1.0), NO_FINETUNE,
                   options={"operation": "reset"})
    assert reset.heads_pruned == 0 and reset.details["edit"]["heads_reset"] == 4
    assert [p["head"][0] * 4 + p["head"][1] for p in reset.trajectory[1:]] == order[:4]
    with pytest.raises(ValueError, match=r"option 'operation' of 'drift' must be of type 'prune' \| 'reset', got 'both'"):
        defend(tiny_victim, "drift", env_config(), NO_FINETUNE, options={"operation": "both"})


def test_drift_reset_stops_before_the_floor(tiny_victim, env_config):
    result = defend(tiny_victim, "drift", env_config(max_accuracy_drop=0.05), NO_FINETUNE,
                    options={"operation": "reset"})
    steps = result.trajectory[1:]
    kept = result.details["edit"]["heads_reset"]
    assert all(p["accuracy"] >= result.validation["floor"] for p in steps[:kept])
    if result.details["episode_end"] == "floor":
        assert steps[kept]["accuracy"] < result.validation["floor"] and len(steps) == kept + 1


def test_reset_copies_base_weights_into_exactly_the_chosen_heads(tiny_victim, env_config, base, tmp_path):
    result = defend(tiny_victim, "drift", env_config(max_accuracy_drop=1.0), NO_FINETUNE,
                    options={"operation": "reset"})
    chosen = torch.tensor(result.details["edit"]["reset_mask"], dtype=torch.bool)
    assert int(chosen.sum()) == 4
    for layer in range(2):
        for head in range(4):
            if chosen[layer, head]:
                assert _heads_equal(result.model, base, layer, head)
                assert not _heads_equal(result.model, tiny_victim.model, layer, head)
            else:
                assert _heads_equal(result.model, tiny_victim.model, layer, head)
    # the "pruned" validation accuracy is the edited model's, and the export holds the edited weights
    ev = Evaluator(result.model, tiny_victim.tokenizer, validation_rows_of(tiny_victim, env_config()), max_length=64)
    assert result.validation["pruned"] == pytest.approx(ev.accuracy())
    from transformers import AutoModelForSequenceClassification

    exported = AutoModelForSequenceClassification.from_pretrained(result.save_model(tmp_path / "m")).eval()
    for (name, p), q in zip(result.model.named_parameters(), exported.parameters(), strict=True):
        assert torch.allclose(p, q), name


def validation_rows_of(victim, config: HeadPruneConfig):
    from headprune.envs.headprune_env import HeadPruneEnv

    return validation_rows(HeadPruneEnv(victim, config.replace(proxy="pure_variance")))


def test_edit_then_finetune_keeps_pruned_metrics_of_the_edited_model(tiny_victim, env_config):
    splits = tiny_victim.splits()
    result = defend(tiny_victim, "reset-attention", env_config(), FINETUNE, eval_clean=splits.clean_test.take(40),
                    eval_poison=splits.poisoned_test.take(40))
    untouched = defend(tiny_victim, "none", env_config(), FINETUNE, eval_clean=splits.clean_test.take(40),
                       eval_poison=splits.poisoned_test.take(40))
    assert result.metrics["pruned"] != untouched.metrics["pruned"]  # the edited model, not the victim
    assert result.validation["pruned"] != result.validation["start"]


# ------------------------------------------------------------------------------ reset-attention
def test_reset_attention_resets_attention_blocks_only(tiny_victim, env_config, base):
    result = defend(tiny_victim, "reset-attention", env_config(), NO_FINETUNE)
    names = set(attention_parameter_names(tiny_victim.model))
    assert "bert.encoder.layer.0.attention.output.LayerNorm.weight" in names
    assert "bert.encoder.layer.0.attention.output.dense.bias" in names
    assert not any("intermediate" in n or n.endswith("layer.0.output.dense.weight") for n in names)
    assert set(result.details["edit"]["parameters_reset"]) == names
    base_params, victim_params = dict(base.named_parameters()), dict(tiny_victim.model.named_parameters())
    for name, param in result.model.named_parameters():
        assert torch.equal(param, (base_params if name in names else victim_params)[name]), name


# ------------------------------------------------------------------------------ Fine-mixing
def test_fine_mix_extremes_and_embeddings(tiny_victim, base):
    model = copy.deepcopy(tiny_victim.model)
    assert fine_mix(model, base, 0.0, seed=0)["values_mixed"] == 0
    for p, q in zip(model.parameters(), tiny_victim.model.parameters(), strict=True):
        assert torch.equal(p, q)
    details = fine_mix(model, base, 1.0, seed=0)
    assert details["values_mixed"] == details["values_total"] > 0
    for name, param, ref in shared_parameters(model, base):
        assert torch.equal(param, ref), name
    assert torch.equal(model.classifier.weight, tiny_victim.model.classifier.weight)  # the task head is kept
    kept = copy.deepcopy(tiny_victim.model)
    fine_mix(kept, base, 1.0, seed=0, embeddings=False)
    words = tiny_victim.model.bert.embeddings.word_embeddings.weight
    assert torch.equal(kept.bert.embeddings.word_embeddings.weight, words)
    assert torch.equal(kept.bert.encoder.layer[0].attention.self.query.weight,
                       base.bert.encoder.layer[0].attention.self.query.weight)
    half_a, half_b = copy.deepcopy(tiny_victim.model), copy.deepcopy(tiny_victim.model)
    share = fine_mix(half_a, base, 0.5, seed=3)["values_mixed"] / details["values_total"]
    fine_mix(half_b, base, 0.5, seed=3)
    assert 0.45 < share < 0.55
    assert all(torch.equal(p, q) for p, q in zip(half_a.parameters(), half_b.parameters()))  # seeded
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        fine_mix(model, base, 1.5, seed=0)


def test_finemix_defense_with_fixed_p_gives_the_base_encoder(tiny_victim, env_config, base):
    one = defend(tiny_victim, "finemix", env_config(), NO_FINETUNE, options={"p": 1.0})
    assert one.details["p"] == 1.0 and "p_selection" not in one.details
    for name, param, ref in shared_parameters(one.model, base):
        assert torch.equal(param, ref), name
    zero = defend(tiny_victim, "finemix", env_config(), NO_FINETUNE, options={"p": 0.0})
    for p, q in zip(zero.model.parameters(), tiny_victim.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_finemix_chooses_p_on_clean_validation_rows_only(tiny_victim, env_config, monkeypatch):
    scored = []
    real = repaired_floor_module.Evaluator  # the repaired-floor rule scores every candidate p

    def spy(model, tokenizer, texts, **kw):
        scored.append(tuple(texts.sentences))
        return real(model, tokenizer, texts, **kw)

    monkeypatch.setattr(repaired_floor_module, "Evaluator", spy)
    options = {"grid": [0.9, 0.5, 0.05], "select_max_steps": 2}
    splits = tiny_victim.splits()
    a = defend(tiny_victim, "finemix", env_config(), NO_FINETUNE, options=options)
    expected = tuple(validation_rows_of(tiny_victim, env_config()).sentences)
    assert scored and all(rows == expected for rows in scored)
    trace, floor = a.details["p_selection"], a.validation["floor"]
    assert [t["p"] for t in trace] == [0.9, 0.5, 0.05][:len(trace)]
    assert all(t["accuracy"] < floor for t in trace[:-1])  # the largest p that holds the floor
    chosen = trace[-1]["p"] if trace[-1]["accuracy"] >= floor else 0.0
    assert a.details["p"] == chosen
    b = defend(tiny_victim, "finemix", env_config(), NO_FINETUNE, options=options,
               eval_poison=splits.poisoned_test.take(40), eval_clean=splits.clean_test.take(40))
    assert b.details["p_selection"] == trace and b.details["p"] == a.details["p"]
    lenient = defend(tiny_victim, "finemix", env_config(max_accuracy_drop=1.0), NO_FINETUNE, options=options)
    assert lenient.details["p"] == 0.9  # with no floor the largest p is kept


# ------------------------------------------------------------------------------ Fine-purifying
def test_purify_scores_prefer_drifted_unimportant_heads():
    drift = torch.tensor([[1.0, 1.0, 0.1, 2.0]])
    importance = torch.tensor([[1.0, 0.01, 0.01, 10.0]])
    scores = purify_scores(drift, importance, eps=0.01)
    assert descending_order(scores)[0] == 1  # drifted and unimportant
    assert descending_order(purify_scores(drift, torch.zeros(1, 4), eps=0.01)) == descending_order(drift)


def test_finepurify_resets_in_score_order(tiny_victim, env_config, base):
    result = defend(tiny_victim, "finepurify", env_config(max_accuracy_drop=1.0), NO_FINETUNE)
    order = descending_order(torch.tensor(result.details["scores"]))
    assert [p["head"][0] * 4 + p["head"][1] for p in result.trajectory[1:]] == order[:4]
    chosen = torch.tensor(result.details["edit"]["reset_mask"], dtype=torch.bool)
    assert sorted(torch.nonzero(chosen.reshape(-1)).reshape(-1).tolist()) == sorted(order[:4])


# ------------------------------------------------------------------------------ base=
def test_base_is_recorded_only_when_given_and_checked(tiny_victim, env_config, base):
    plain = defend(tiny_victim, "drift", env_config(), NO_FINETUNE)
    assert "base" not in plain.config
    given = defend(tiny_victim, "drift", env_config(), NO_FINETUNE, base=base)
    assert given.config["base"] == "<BertForSequenceClassification object>"
    assert torch.equal(given.mask, plain.mask)
    assert config_hash({k: v for k, v in given.config.items() if k != "base"}) == config_hash(plain.config)
    other, _ = build_tiny_classifier(seed=0, num_heads=2)
    with pytest.raises(BaseModelError, match="attention layers"):
        defend(tiny_victim, "drift", env_config(), NO_FINETUNE, base=other)
    obj = DEFENSES.get("drift")(base=base)
    assert obj.options == {} and obj.with_base(None) is obj and obj.with_base("x").base == "x" and obj.base is base


def test_runner_and_cli_take_base():
    from headprune.cli import build_parser
    from headprune.compare import RunSettings

    plain, given = RunSettings.from_values(), RunSettings.from_values(base="some/folder")
    assert "base" not in plain.defense_config("drift") and given.defense_config("drift")["base"] == "some/folder"
    assert config_hash(plain.defense_config("gradient")) != config_hash(given.defense_config("gradient"))
    parser = build_parser()
    assert parser.parse_args(["defend", "--model", "tiny", "--clean-data", "c.tsv", "--defense", "drift", "--out",
                              "o", "--base", "b"]).base == "b"
    args = parser.parse_args(["compare", "--victims", "tiny", "--defenses", "drift", "--out", "o"])
    assert args.base is None


def test_cli_names_an_unloadable_base(tiny_victim, clean, tmp_path, capsys):
    from tiny_models import write_labelled_tsv

    from headprune.cli import main

    data = write_labelled_tsv(tmp_path / "clean.tsv", clean)
    code = main(["defend", "--model", str(tiny_victim.path), "--clean-data", str(data), "--defense", "drift",
                 "--out", str(tmp_path / "o"), "--val-size", "80", "--stats-size", "64", "--base",
                 str(tmp_path / "missing"), "--quiet", "--cache", str(tmp_path / "cache")])
    assert code == 2 and "the pre-trained reference" in capsys.readouterr().err


# ------------------------------------------------------------------------------ policies that reset
class _ResetFirstHeads:
    """A ready policy for a ``"both"`` env: resets heads 0 and 1 (actions n, n + 1), then prunes head 2."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, observation, state=None, episode_start=None, deterministic=True, action_masks=None):
        n = len(observation["mask"])
        action = (n, n + 1, 2)[min(self.calls, 2)]
        self.calls += 1
        return np.int64(action), state


def test_resets_of_a_policy_reach_the_defended_model(tiny_victim, env_config, base):
    """defend() applies the resets of an operation-"both" episode (info["best_reset"]) to the copy it returns,
    with the prunes as its mask."""
    result = defend(tiny_victim, _ResetFirstHeads(), env_config(operation="both", budget=3, accuracy_floor=0.0),
                    NO_FINETUNE)
    assert result.mask.flatten().tolist() == [1, 1, 0, 1, 1, 1, 1, 1]
    assert result.details["edit"]["heads_reset"] == 2
    assert _heads_equal(result.model, base, 0, 0) and _heads_equal(result.model, base, 0, 1)
    assert not _heads_equal(result.model, base, 0, 3) and _heads_equal(result.model, tiny_victim.model, 0, 3)


def test_epur_ranks_drift_by_clean_rarity_and_resets_only_those_rows(tiny_victim, base):
    """E-PUR: a token that moved far and is rare in the defender's rows ranks first; a frequent token that
    moved as far ranks below it (its drift is divided by log(count)); only the chosen rows go back to the base."""
    from headprune.defenses.weight_edits import EmbeddingPurify, suspicious_tokens, token_counts

    model = copy.deepcopy(tiny_victim.model)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(base.get_input_embeddings().weight)
        model.get_input_embeddings().weight[[7, 9]] += 0.5  # [2, d]: two rows moved equally far
    vocab = model.get_input_embeddings().weight.shape[0]
    counts = torch.zeros(vocab)
    counts[9] = 1000.0  # token 9 is frequent in the clean rows, token 7 never occurs
    assert suspicious_tokens(model, base, counts, 2).tolist() == [7, 9]
    before = model.get_input_embeddings().weight.detach().clone()
    details = EmbeddingPurify.ranked(model, base, counts, top=1).apply(model)
    after = model.get_input_embeddings().weight.detach()
    assert details == {"operation": "embedding-purify", "tokens_reset": 1}
    assert torch.equal(after[7], base.get_input_embeddings().weight[7])
    assert torch.equal(after[9], before[9]) and torch.equal(after[:7], before[:7])
    rows = ["a film", "a film film"]
    counted = token_counts(tiny_victim.tokenizer, rows, vocab, max_length=16)
    film = tiny_victim.tokenizer.convert_tokens_to_ids("film")
    assert counted[film] == 3 and counted.sum() == sum(len(r) for r in tiny_victim.tokenizer(rows)["input_ids"])


def test_finemix_with_epur_resets_the_suspicious_embeddings_before_the_mix(tiny_victim, env_config, base):
    """``epur_tokens`` > 0 adds E-PUR before the mix (p = 0 here, so only E-PUR edits the weights): the chosen
    rows hold the base's values in the edited model; the same seed gives the same weights."""
    from headprune.defenses.weight_edits import suspicious_tokens, token_counts

    options = {"p": 0.0, "epur_tokens": 5}
    a = defend(tiny_victim, "finemix", env_config(), NO_FINETUNE, options=options)
    b = defend(tiny_victim, "finemix", env_config(), NO_FINETUNE, options=options)
    assert [e["operation"] for e in a.details["edit"]["edits"]] == ["embedding-purify", "finemix"]
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), k
    from headprune.defenses.defend import DEFENSE_ENV
    from headprune.envs.headprune_env import HeadPruneEnv

    env = HeadPruneEnv(tiny_victim, env_config().replace(**DEFENSE_ENV))  # the env defend built: its training rows
    vocab = base.get_input_embeddings().weight.shape[0]
    counts = token_counts(tiny_victim.tokenizer, env.train_data.sentences, vocab, env.max_length)
    expected = suspicious_tokens(tiny_victim.model, base, counts, 5)
    emb, ref = a.model.get_input_embeddings().weight, base.get_input_embeddings().weight
    changed = (emb != tiny_victim.model.get_input_embeddings().weight).any(dim=1).nonzero().flatten()
    assert set(changed.tolist()) <= set(expected.tolist()) and len(changed) >= 1  # rows equal to the base stay
    assert torch.equal(emb[expected], ref[expected])
    with pytest.raises(ValueError, match=r"option 'epur_tokens' of 'finemix' must be in \[0, inf\], got -1"):
        defend(tiny_victim, "finemix", env_config(), NO_FINETUNE, options={"p": 0.0, "epur_tokens": -1})
