"""Hyperparameters in rl-baselines3-zoo's YAML format: one file per algorithm, one entry per env id.

The package ships ``configs/maskable_ppo.yml`` and ``configs/ppo.yml`` (entry ``HeadPrune-v0``). An
entry mixes keys that :func:`headprune.agents.train` reads itself (:data:`TRAIN_KEYS`) with the
algorithm's constructor arguments. As in the zoo, ``learning_rate`` and ``clip_range`` may be
``"lin_<x>"`` (linear from ``x`` at the start to 0 at the end of training) and ``policy_kwargs`` is
a mapping (``activation_fn`` by name: ``"tanh"``, ``"relu"``, ...). The resolved entry, with the
schedule strings as written, is what a run saves as its ``config.yml`` and can be fed back with
``conf_file``.
"""

from __future__ import annotations

import copy
import inspect
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import LinearSchedule
from torch import nn

from headprune.cli.train import ALGO_NAMES
from headprune.agents.policy_network import POLICIES, policy_class
from headprune.agents.zoo import check_normalize, parse_policy_kwargs, resolve_dotted
from headprune.common.assignments import parse_assignments  # noqa: F401  (re-exported: the one KEY=VALUE parser)
from headprune.common.assignments import safe_yaml
from headprune.envs.registration import ENV_ID
from headprune.victims.card import check_number
from headprune.common.registry import Registry

__all__ = [
    "ALGOS",
    "CONFIG_DIR",
    "SCHEDULE_KEYS",
    "TRAIN_KEYS",
    "TrainSettings",
    "algo_kwargs",
    "load_hyperparams",
    "parse_assignments",
    "parse_schedule",
]

ALGOS: Registry[type[BaseAlgorithm]] = Registry("algorithm")
"""Supported algorithms by name (the YAML file is ``configs/<name>.yml``)."""
ALGOS.add("maskable_ppo", MaskablePPO)
ALGOS.add("ppo", PPO)
assert tuple(ALGOS) == ALGO_NAMES, "headprune.cli.train.ALGO_NAMES must list ALGOS"

CONFIG_DIR = Path(__file__).with_name("configs")
"""The shipped hyperparameter files."""

TRAIN_KEYS: tuple[str, ...] = ("n_envs", "n_timesteps", "policy", "env_kwargs", "eval_freq", "n_eval_episodes",
                               "checkpoint_freq", "normalize", "env_wrapper", "vec_env")
"""Entry keys read by the training loop; every other key is an algorithm argument. ``normalize`` and
``env_wrapper`` are the zoo's (:mod:`headprune.agents.zoo`); ``vec_env`` is ``"auto"`` (DummyVecEnv for one
env, SubprocVecEnv otherwise), ``"dummy"``, ``"subproc"`` or ``"batched"`` (:mod:`headprune.envs.vector`)."""

VEC_ENVS: tuple[str, ...] = ("auto", "dummy", "subproc", "batched")

SCHEDULE_KEYS: tuple[str, ...] = ("learning_rate", "clip_range", "clip_range_vf")
"""Algorithm arguments that accept ``"lin_<x>"`` schedules."""

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU,
                                           "leaky_relu": nn.LeakyReLU}


def _check_algo(algo: str) -> type[BaseAlgorithm]:
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}; known: {', '.join(ALGOS)}")
    return ALGOS[algo]


def load_hyperparams(algo: str = "maskable_ppo", env_id: str = ENV_ID, *,
                     conf_file: str | os.PathLike[str] | None = None,
                     overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The hyperparameter entry of ``env_id`` for ``algo`` with ``overrides`` applied (a new dict).

    Args:
        algo: a key of :data:`ALGOS`.
        env_id: the entry to read.
        conf_file: a YAML file in the zoo format (default: the shipped ``configs/<algo>.yml``).
        overrides: keys replacing the entry's (``env_kwargs`` and ``policy_kwargs`` are merged key by key).
    Raises:
        ValueError: unknown algo, an env id missing from the file, or an unknown key.
        FileNotFoundError: ``conf_file`` does not exist.
    """
    algo_cls = _check_algo(algo)
    path = Path(conf_file) if conf_file is not None else CONFIG_DIR / f"{algo}.yml"
    if not path.is_file():
        raise FileNotFoundError(f"conf_file: no such file: {path}")
    data = safe_yaml(path.read_text(), str(path)) or {}
    if not isinstance(data, Mapping) or env_id not in data:
        known = ", ".join(map(str, data)) if isinstance(data, Mapping) else "none"
        raise ValueError(f"{path}: no hyperparameters for env id {env_id!r} (entries: {known})")
    hp = copy.deepcopy(dict(data[env_id]))
    for key, value in dict(overrides or {}).items():
        if key in ("env_kwargs", "policy_kwargs") and isinstance(value, Mapping):
            hp[key] = {**dict(hp.get(key) or {}), **dict(value)}
        else:
            hp[key] = copy.deepcopy(value)
    valid = set(TRAIN_KEYS) | _algo_arguments(algo_cls)
    unknown = sorted(set(hp) - valid)
    if unknown:
        raise ValueError(f"{path} [{env_id}] (with overrides): unknown hyperparameters {unknown} for {algo}")
    for key in ("n_envs", "n_timesteps"):
        if key in hp and (not isinstance(hp[key], int) or hp[key] < 1):
            raise ValueError(f"hyperparameter {key} must be a positive integer, got {hp[key]!r}")
    return hp


def _algo_arguments(algo_cls: type[BaseAlgorithm]) -> set[str]:
    params = inspect.signature(algo_cls.__init__).parameters
    return {p for p in params if p not in ("self", "policy", "env", "kwargs")}


def parse_schedule(value: Any, key: str = "value") -> Any:
    """``"lin_<x>"`` -> SB3 ``LinearSchedule(x, 0, 1)`` (``x`` at the start, 0 at the end); numbers and
    ``None`` pass through. ValueError naming ``key`` otherwise."""
    if isinstance(value, str):
        if value.startswith("lin_"):
            try:
                start = float(value[4:])
            except ValueError:
                raise ValueError(f"{key}: bad schedule {value!r} (expected lin_<float>, e.g. lin_3e-4)") from None
            return LinearSchedule(start, 0.0, 1.0)
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{key}: expected a number or lin_<float>, got {value!r}") from None
    return value


@dataclass(frozen=True)
class TrainSettings:
    """The entry keys the training loop reads (:data:`TRAIN_KEYS`)."""

    n_envs: int
    n_timesteps: int
    policy: str
    env_kwargs: dict[str, Any]
    eval_freq: int
    n_eval_episodes: int
    checkpoint_freq: int
    env_wrapper: Any = None
    vec_env: str = "auto"

    @classmethod
    def from_hyperparams(cls, hp: Mapping[str, Any]) -> TrainSettings:
        check_normalize(hp.get("normalize"))
        vec_env = str(hp.get("vec_env", "auto"))
        if vec_env not in VEC_ENVS:
            raise ValueError(f"vec_env must be one of {VEC_ENVS}, got {vec_env!r}")
        return cls(n_envs=int(hp.get("n_envs", 1)), n_timesteps=int(hp["n_timesteps"]),
                   policy=str(hp.get("policy", "HeadScoringPolicy")), env_kwargs=dict(hp.get("env_kwargs") or {}),
                   eval_freq=int(hp.get("eval_freq", 0)), n_eval_episodes=int(hp.get("n_eval_episodes", 1)),
                   checkpoint_freq=int(hp.get("checkpoint_freq", 0)), env_wrapper=hp.get("env_wrapper"),
                   vec_env=vec_env)


def algo_kwargs(hp: Mapping[str, Any], algo: str) -> dict[str, Any]:
    """The algorithm's constructor arguments of an entry: schedules parsed, ``policy`` resolved to a
    class, ``activation_fn`` resolved by name. The training-loop keys are dropped."""
    _check_algo(algo)
    kwargs: dict[str, Any] = {k: copy.deepcopy(v) for k, v in hp.items() if k not in TRAIN_KEYS}
    for key in SCHEDULE_KEYS:
        if key in kwargs:
            kwargs[key] = parse_schedule(kwargs[key], key)
    pk = parse_policy_kwargs(kwargs.get("policy_kwargs"))  # a mapping, or the zoo's "dict(...)" string
    act = pk.get("activation_fn")
    if isinstance(act, str):
        if act.lower() not in ACTIVATIONS:
            raise ValueError(f"policy_kwargs.activation_fn: unknown {act!r}; known: {', '.join(ACTIVATIONS)}")
        pk["activation_fn"] = ACTIVATIONS[act.lower()]
    check_policy_kwargs(pk)
    kwargs["policy_kwargs"] = pk
    kwargs["policy"] = _policy(str(hp.get("policy", "HeadScoringPolicy")), algo)
    return kwargs


MAX_WIDTH = 1024
"""The widest layer ``policy_kwargs`` may ask for (``embed_dim``, ``value_dim``, ``net_arch`` entries)."""

MAX_DEPTH = 8
"""The most layers a ``net_arch`` list may have."""

_WIDTH_KEYS = ("embed_dim", "value_dim")
_BOOL_KEYS = ("ortho_init", "share_features_extractor", "normalize_images", "squash_output", "use_sde",
              "full_std", "use_expln")


def check_policy_kwargs(pk: Mapping[str, Any]) -> None:
    """Refuse ``policy_kwargs`` (after :func:`algo_kwargs` resolved ``activation_fn``) before any allocation, with
    one line naming the key: widths (``embed_dim``, ``value_dim``, ``net_arch``) integers in [1, :data:`MAX_WIDTH`]
    and at most :data:`MAX_DEPTH` layers; switches booleans; ``activation_fn`` one of :data:`ACTIVATIONS`;
    anything else a finite number, a string, a bool or None (so a value is never unhashable or a container SB3
    would pass on unchecked).

    :raises ValueError: ``policy_kwargs.<key> must be ...``.
    """
    for key, value in pk.items():
        where = f"policy_kwargs.{key}"
        if key in _WIDTH_KEYS:
            check_number(value, where, integer=True, low=1, high=MAX_WIDTH)
        elif key == "net_arch":
            _check_net_arch(value, where)
        elif key in _BOOL_KEYS:
            if not isinstance(value, bool):
                raise ValueError(f"{where} must be true or false, got {value!r}")
        elif key == "activation_fn":
            if value not in ACTIVATIONS.values():
                raise ValueError(f"{where} must be one of {', '.join(ACTIVATIONS)}, got {value!r}")
        elif key == "head_shape" or value is None or isinstance(value, (bool, str)):
            continue
        elif isinstance(value, numbers.Real):
            check_number(value, where)
        else:
            raise ValueError(f"{where}: unsupported value {value!r}; headprune takes numbers, strings, booleans or "
                             "null here (and widths under embed_dim, value_dim, net_arch)")


def _check_net_arch(value: Any, where: str) -> None:
    """``net_arch``: a list of widths, or ``{"pi": [...], "vf": [...]}`` (SB3's two forms)."""
    if isinstance(value, Mapping):
        unknown = sorted(map(str, set(value) - {"pi", "vf", "qf"}))
        if unknown:
            raise ValueError(f"{where} may have the keys pi, vf (and qf), got {unknown}")
        for sub, layers in value.items():
            _check_net_arch(layers, f"{where}.{sub}")
        return
    if not isinstance(value, (list, tuple)) or len(value) > MAX_DEPTH:
        raise ValueError(f"{where} must be a list of at most {MAX_DEPTH} layer widths (or {{pi: [...], vf: [...]}}), "
                         f"got {value!r}")
    for i, width in enumerate(value):
        check_number(width, f"{where}[{i}]", integer=True, low=1, high=MAX_WIDTH)


def _policy(name: str, algo: str) -> type | str:
    """A registered policy name, SB3's own names, or a dotted path (``headprune.agents.policy_network.X``:
    the variant of ``X`` for ``algo``; anything else under :data:`~headprune.agents.zoo.TRUSTED_PREFIXES`)."""
    if "." not in name:
        return policy_class(name, algo)
    short = name.rpartition(".")[2]
    if name.startswith("headprune.agents.policy_network.") and short in POLICIES:
        return policy_class(short, algo)
    return resolve_dotted(name, "policy")
