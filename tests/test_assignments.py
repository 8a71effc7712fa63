"""The one KEY=VALUE parser (headprune.common.assignments)."""

from __future__ import annotations

import pytest

from headprune.common.assignments import parse_assignments, parse_value


@pytest.mark.parametrize(("text", "value"), [
    ("3", 3), ("1e-3", 1e-3), ("true", True), ('{"a": 1}', {"a": 1}), ("[a, b]", ["a", "b"]),
    ("{a: 1}", {"a": 1}), ("lin_3e-4", "lin_3e-4"), ("", ""), ("a: b: c", "a: b: c"),
])
def test_values_parse_as_json_then_yaml_then_text(text: str, value: object) -> None:
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_assignments_and_their_errors_name_the_flag() -> None:
    assert parse_assignments(["n_envs=2", " budget =4", "name=x=y"], "--hyperparams") == {
        "n_envs": 2, "budget": 4, "name": "x=y"}
    assert parse_assignments(None, "--x") == {}
    with pytest.raises(ValueError, match=r"--option must be KEY=VALUE, got 'nonsense'"):
        parse_assignments(["nonsense"], "--option")
    with pytest.raises(ValueError, match="--option must be KEY=VALUE"):
        parse_assignments(["=3"], "--option")
    with pytest.raises(ValueError, match=r"--env-kwargs: 'budget' given twice"):
        parse_assignments(["budget=3", "budget=4"], "--env-kwargs")
