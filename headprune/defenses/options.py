"""The run settings shared by ``headprune defend``/``evaluate`` and the experiment runner (``headprune compare``):
their names, types, help and defaults (:data:`SETTING_FLAGS`; the command-line flags are added by
:mod:`headprune.cli.settings`), their checks, the configs they build (a
:class:`~headprune.envs.config.HeadPruneConfig` and a :class:`~headprune.defenses.base.DefenseFineTune`) and the
``--options`` JSON of defense options (each defense's options class checks them:
:mod:`headprune.defenses.defense_options`). Lives here (not in the runner) so the single-run commands never import the runner.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from headprune.defenses.base import DefenseFineTune
from headprune.envs.config import HeadPruneConfig
from headprune.victims.card import check_number

__all__ = ["DEFEND_SETTINGS", "SETTING_DEFAULTS", "SETTING_FLAGS", "check_settings", "env_config_from_settings",
           "finetune_from_settings", "parse_options_json"]

SETTING_FLAGS: dict[str, tuple[type, str]] = {
    "finetune_epochs": (float, "clean fine-tuning after pruning (0 disables)"),
    "finetune_max_steps": (int, "cap on the fine-tuning steps (default none)"),
    "budget": (int, "most heads pruned (default half)"),
    "max_accuracy_drop": (float, "the accuracy floor below the start"),
    "clean_rows": (int, "use only the first N defender clean rows"),
    "val_size": (int, "defender rows held out for validation"),
    "stats_size": (int, "defender rows for head statistics"),
    "test_limit": (int, "evaluate on the first N clean/poisoned test rows"),
}
"""The scalar run settings given on command lines: ``(type, help)`` by name (the names of the hashed config)."""

SETTING_DEFAULTS: dict[str, Any] = {
    "finetune_epochs": 3.0, "finetune_max_steps": None, "budget": None, "max_accuracy_drop": 0.05,
    "clean_rows": None, "val_size": 256, "stats_size": 256, "test_limit": None,
}
"""Their defaults (``defend``'s)."""

DEFEND_SETTINGS = ("finetune_epochs", "budget", "max_accuracy_drop", "val_size", "stats_size")
"""The settings that ``headprune defend`` / ``evaluate`` take as options."""


def parse_options_json(text: str) -> dict[str, dict[str, Any]]:
    """The ``--options`` JSON: ``{"defense": {option: value}}``; ValueError naming the flag otherwise."""
    try:
        options = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--options must be a JSON object, got {text!r} ({err})") from None
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise ValueError(f'--options must be a JSON object {{"defense": {{option: value}}}}, got {text!r}')
    return options


def _check_kind(name: str, value: Any) -> None:
    """ValueError unless ``value`` is a finite number of the setting's type (an int setting takes no 2.5)."""
    check_number(value, name, integer=SETTING_FLAGS[name][0] is int)


def check_settings(values: Mapping[str, Any]) -> None:
    """ValueError naming the first bad setting of ``values`` (names of :data:`SETTING_FLAGS`): a bool, a
    non-number, NaN/inf, a non-integer where an integer is needed, or a value out of range."""
    for name, value in values.items():
        if name in SETTING_FLAGS and value is not None:
            _check_kind(name, value)
    if values.get("finetune_epochs", 0) < 0:
        raise ValueError(f"finetune_epochs must be >= 0, got {values['finetune_epochs']}")
    for name in ("finetune_max_steps", "budget", "clean_rows", "test_limit"):
        if values.get(name) is not None and values[name] < 1:
            raise ValueError(f"{name} must be >= 1 (or None), got {values[name]}")
    for name in ("val_size", "stats_size"):
        if name in values and values[name] < 1:
            raise ValueError(f"{name} must be >= 1, got {values[name]}")
    drop = values.get("max_accuracy_drop")
    if drop is not None and not 0 <= drop <= 1:
        raise ValueError(f"max_accuracy_drop must be in [0, 1], got {drop}")


def env_config_from_settings(values: Mapping[str, Any], **fields: Any) -> HeadPruneConfig:
    """The env config of the settings ``values`` (``val_size``, ``stats_size``, ``budget``,
    ``max_accuracy_drop``; missing ones take :data:`SETTING_DEFAULTS`) with more config ``fields`` on top."""
    v = {**SETTING_DEFAULTS, **values}
    check_settings(v)
    drop = None if v["max_accuracy_drop"] is None else float(v["max_accuracy_drop"])
    return HeadPruneConfig(val_size=v["val_size"], stats_size=v["stats_size"], budget=v["budget"],
                           max_accuracy_drop=drop, **fields)


def finetune_from_settings(values: Mapping[str, Any]) -> DefenseFineTune:
    """The fine-tune of the settings ``values`` (``finetune_epochs``, ``finetune_max_steps``)."""
    v = {**SETTING_DEFAULTS, **values}
    check_settings(v)
    return DefenseFineTune(epochs=v["finetune_epochs"], max_steps=v["finetune_max_steps"])
