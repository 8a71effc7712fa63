"""Typed defense options (issue 23 item 4): one frozen dataclass per registered defense with help text, checked at
construction with one-line errors naming the defense and the option, listed by ``headprune defend --help-options``;
a run's config still records only the options the user gave."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest

from headprune.cli import main
from headprune.defenses import DEFENSES, ScriptedPolicyDefense, resolve_defense
from headprune.defenses.defense_options import DefenseOptions, options_help

# the constructor arguments a scripted policy gets from the workbench, never options; ``variance`` is a cached
# statistic a caller may hand a policy object (a tensor), not a user's option
_BENCH_ARGUMENTS = {"self", "model", "tokenizer", "clean_data", "seed", "max_length", "variance", "progress"}
# ensemble's options default to the workbench's budget and floor (None) where the policy object has its own
_WORKBENCH_DEFAULTS = {("ensemble", "budget"), ("ensemble", "max_accuracy_drop")}


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_defense_has_a_frozen_options_class_with_help_and_valid_defaults(name):
    cls = DEFENSES.get(name)
    options_class = cls.options_class
    assert issubclass(options_class, DefenseOptions) and dataclasses.is_dataclass(options_class)
    assert options_class.__dataclass_params__.frozen  # type: ignore[attr-defined]
    for f in dataclasses.fields(options_class):
        assert f.metadata.get("help"), (name, f.name)
    defaults = options_class()
    assert cls(**cls.fast_options).option_values == options_class.from_mapping(cls.fast_options)
    assert set(cls.fast_options) <= set(defaults.to_dict())
    assert cls().options == {} and cls().option_values == defaults
    for f in dataclasses.fields(options_class)[:1]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(defaults, f.name, getattr(defaults, f.name))
    assert len(options_help(options_class)) == max(1, len(dataclasses.fields(options_class)))


def _keyword_defaults(policy_class: type) -> dict[str, object]:
    found: dict[str, object] = {}
    for klass in reversed(policy_class.__mro__):
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _BENCH_ARGUMENTS:
                found[p.name] = p.default
    return found


@pytest.mark.parametrize("name", [n for n, c in DEFENSES.items() if issubclass(c, ScriptedPolicyDefense)])
def test_scripted_options_are_the_policy_keyword_arguments(name):
    """A scripted defense's options class has exactly its policy class's keyword arguments, with their defaults
    (the policy object and the CLI cannot drift apart)."""
    cls = DEFENSES.get(name)
    keywords = _keyword_defaults(cls.policy_class)
    if name == "random":  # RandomPolicy takes n_rows=0 unless given (it scores nothing)
        keywords["n_rows"] = 0
    if name == "sparsify":  # SparsificationPolicy takes every row unless given
        keywords["n_rows"] = None
    options = cls.options_class().to_dict()
    assert set(options) == set(keywords), name
    for key, default in options.items():
        if (name, key) not in _WORKBENCH_DEFAULTS:
            assert default == keywords[key], (name, key)


@pytest.mark.parametrize(("name", "options", "message"), [
    ("gradient", {"nonsense": 1}, "defense 'gradient' has no option 'nonsense'; its options: batch_size, n_rows, "
                                  "reestimate_every"),
    ("gradient", {"reestimate_every": True}, "option 'reestimate_every' of 'gradient' must be of type int, got True"),
    ("gradient", {"reestimate_every": 0}, r"option 'reestimate_every' of 'gradient' must be in \[1, inf\], got 0"),
    ("sparsify", {"lam": "big"}, "option 'lam' of 'sparsify' must be of type float, got 'big'"),
    ("sparsify", {"rank": "norms"}, r"option 'rank' of 'sparsify' must be of type 'norm' \| 'gradient'"),
    ("mcdropout", {"kappa": math.inf}, "option 'kappa' of 'mcdropout' must be a finite number, got inf"),
    ("mcdropout", {"passes": 1}, r"option 'passes' of 'mcdropout' must be in \[2, inf\]"),
    ("egreedy", {"epsilon": 1.5}, r"option 'epsilon' of 'egreedy' must be in \[0, 1\], got 1.5"),
    ("finemix", {"grid": [0.5, math.nan]}, "option 'grid' of 'finemix' must be a finite number, got nan"),
    ("finemix", {"grid": 0.5}, r"option 'grid' of 'finemix' must be of type list\[float\], got 0.5"),
    ("finemix", {"p": -0.1}, r"option 'p' of 'finemix' must be in \[0, 1\]"),
    ("finepurify", {"eps": 0}, r"option 'eps' of 'finepurify' must be in \(0, inf\]"),
    ("meft", {"entropy_epochs": None}, "option 'entropy_epochs' of 'meft' must be of type float, got None"),
    ("ft", {"lr": 1e-4}, "defense 'ft' has no option 'lr'; its options: none"),
    ("purify", {"teacher_options": {"p": 2.0}},
     r"option 'teacher_options' of 'purify': option 'p' of 'finemix' must be in \[0, 1\], got 2.0"),
])
def test_bad_options_are_one_line_errors_naming_the_defense_and_the_option(name, options, message):
    with pytest.raises(ValueError, match=message) as info:
        resolve_defense(name, options)
    assert "\n" not in str(info.value)


def test_the_config_records_the_given_options_and_the_defense_reads_typed_values():
    """``Defense.options`` (what a run's config records and hashes) is exactly what was given, while
    ``option_values`` holds every option typed (an int for a float option becomes a float; a tuple a list)."""
    given = {"p": 1, "grid": (0.5, 0.1)}
    defense = resolve_defense("finemix", given)
    assert defense.options == given and type(defense.options["p"]) is int
    values = defense.option_values
    assert values.p == 1.0 and type(values.p) is float and values.grid == [0.5, 0.1] and values.embeddings is True
    assert resolve_defense("purify", {}).option_values.teacher == "finemix"
    assert resolve_defense("distill", {}).option_values.teacher == "suspect"
    assert resolve_defense("ensemble", {"budget": 3}).option_values.max_accuracy_drop is None


def test_help_options_lists_a_defense_s_options_without_other_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["defend", "--defense", "finemix", "--help-options"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("finemix: ") and len(lines) == 1 + len(dataclasses.fields(DEFENSES.get("finemix").options_class))
    assert "  p (float | None in [0, 1], default None): " in out and "  grid (list[float] in [0, 1], default [0.9, " in out
    assert "  epur_tokens (int in [0, inf], default 0): " in out
    with pytest.raises(SystemExit):
        main(["defend", "--help-options", "ft"])
    assert capsys.readouterr().out.strip().splitlines() == ["ft: fine-tune on clean data (lr 2e-5)", "  (no options)"]
    with pytest.raises(SystemExit):
        main(["defend", "--help-options"])
    out = capsys.readouterr().out
    assert all(f"\n{name}: " in "\n" + out for name in DEFENSES)
    with pytest.raises(SystemExit) as exit_info:
        main(["defend", "--help-options", "finemixx"])
    assert exit_info.value.code == 2 and "unknown defense 'finemixx'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["defend", "--help"])
    assert "--help-options [DEFENSE]" in capsys.readouterr().out
