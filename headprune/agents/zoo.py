"""rl-baselines3-zoo compatibility of the hyperparameter files: the zoo-native keys and value forms.

* ``policy_kwargs`` as a string, the zoo's ``"dict(net_arch=[64, 64], activation_fn=nn.ReLU)"``, is
  parsed by :func:`parse_policy_kwargs` WITHOUT ``eval``: only ``dict(...)`` or ``{...}`` of literals,
  activation names (``nn.ReLU``, ``th.nn.Tanh``) resolved through a fixed table;
* ``policy`` may be a dotted path (``headprune.agents.policy_network.HeadScoringPolicy``),
  imported by :func:`resolve_dotted` only under :data:`TRUSTED_PREFIXES`;
* ``env_wrapper`` (a dotted path, or a list of paths / one-key ``{path: kwargs}`` mappings, as in the
  zoo) becomes one callable by :func:`env_wrapper_factory`;
* ``normalize``: ``false`` (the zoo default) is accepted; ``true`` is refused with the reason
  (:func:`check_normalize`): the statistics are already z-scored per feature, and VecNormalize's
  statistics are saved as a pickle, which a run folder must never hold (run folders are reloaded).
"""

from __future__ import annotations

import ast
import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
from torch import nn

__all__ = ["TRUSTED_PREFIXES", "check_normalize", "env_wrapper_factory", "parse_policy_kwargs", "resolve_dotted"]

TRUSTED_PREFIXES: tuple[str, ...] = ("headprune.", "gymnasium.wrappers.", "stable_baselines3.", "sb3_contrib.")
"""Modules a dotted path in a hyperparameter file may name."""

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU,
                                            "leakyrelu": nn.LeakyReLU, "leaky_relu": nn.LeakyReLU}


def resolve_dotted(path: str, what: str) -> Any:
    """The object ``module.attr`` names, for a module under :data:`TRUSTED_PREFIXES`.

    :param path: ``"package.module.Name"``.
    :param what: what the path is for (in error messages).
    :raises ValueError: an untrusted module, or nothing of that name.
    """
    module, _, name = path.rpartition(".")
    if not module or not any(f"{module}.".startswith(p) for p in TRUSTED_PREFIXES):
        raise ValueError(f"{what}: {path!r} is not under a trusted package ({', '.join(TRUSTED_PREFIXES)})")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ValueError(f"{what}: cannot import {path!r}") from None


def _literal(node: ast.AST, key: str) -> Any:
    if isinstance(node, (ast.Attribute, ast.Name)):  # nn.ReLU, th.nn.Tanh, ReLU
        name = node.attr if isinstance(node, ast.Attribute) else node.id
        if name.lower() in _ACTIVATIONS:
            return _ACTIVATIONS[name.lower()]
        raise ValueError(f"policy_kwargs.{key}: unknown name {ast.unparse(node)!r}; activations: {sorted(_ACTIVATIONS)}")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value, f"{key}.{kw.arg}") for kw in node.keywords}
    if isinstance(node, ast.Dict):
        return {ast.literal_eval(k): _literal(v, key) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(v, key) for v in node.elts]
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(f"policy_kwargs.{key}: not a literal: {ast.unparse(node)!r}") from None


def parse_policy_kwargs(value: Any) -> dict[str, Any]:
    """``policy_kwargs`` as a dict: a mapping as is, a zoo string parsed (no ``eval``), ``None`` -> ``{}``."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str):
        raise ValueError(f"policy_kwargs must be a mapping or a zoo string 'dict(...)', got {value!r}")
    try:
        tree = ast.parse(value.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"policy_kwargs: cannot parse {value!r}") from None
    parsed = _literal(tree, "")
    if not isinstance(parsed, dict):
        raise ValueError(f"policy_kwargs: {value!r} is not a dict")
    return parsed


def env_wrapper_factory(spec: Any) -> Callable[[gym.Env], gym.Env] | None:
    """One callable applying the zoo ``env_wrapper`` entry (``None``: no wrapper).

    :param spec: a dotted path, a list of paths and ``{path: kwargs}`` one-key mappings, or ``None``.
    """
    if spec is None:
        return None
    items = spec if isinstance(spec, list) else [spec]
    wrappers = []
    for item in items:
        if isinstance(item, str):
            wrappers.append(resolve_dotted(item, "env_wrapper"))
        elif isinstance(item, Mapping) and len(item) == 1:
            (path, kwargs), = item.items()
            wrappers.append(functools.partial(resolve_dotted(path, "env_wrapper"), **dict(kwargs or {})))
        else:
            raise ValueError(f"env_wrapper: expected a dotted path or a one-key {{path: kwargs}}, got {item!r}")
    return functools.partial(_apply_all, tuple(wrappers))


def _apply_all(wrappers: tuple[Callable[[gym.Env], gym.Env], ...], env: gym.Env) -> gym.Env:
    for wrapper in wrappers:
        env = wrapper(env)
    return env


def check_normalize(value: Any) -> None:
    """Accept ``normalize: false`` / ``None``; refuse ``true`` or a mapping (see the module docstring)."""
    if value in (None, False):
        return
    raise ValueError("normalize: VecNormalize is not supported: the observation's statistics are already "
                     "z-scored per feature and VecNormalize saves its running statistics as a pickle, which a "
                     "run folder must not hold; use normalize: false")
