"""Policy files that never unpickle: save and load trained agents as JSON + safetensors.

A policy ``.zip`` written by SB3's ``model.save`` holds pickled objects (the ``:serialized:`` entries of its
``data`` file: ``policy_class``, spaces, schedules...); loading it with SB3 runs whatever code its author put
there. A downloaded policy is untrusted input, so headprune writes its own format, a zip with three members:

* ``headprune_policy.json``: ``format``, ``version``, ``algo``, the policy class by its name in
  :data:`POLICY_CLASSES` (our registry: only these classes can be rebuilt), ``policy_kwargs`` (JSON values,
  ``activation_fn`` by name), ``head_shape``, the spaces' shapes, the training counters
  (``num_timesteps``, ``n_updates``, ``episode_num``), the recent episode infos, and the optimizer's
  non-tensor state (``param_groups``);
* ``policy.safetensors``: the policy's ``state_dict`` (``[name] -> tensor``);
* ``optimizer.safetensors`` (optional): the optimizer's per-parameter tensors as ``state.<index>.<key>``.

Reading it is ``json.loads`` and ``safetensors.torch.load``: no code runs. :func:`read_policy_file` refuses an
SB3 pickled zip with :class:`PickledPolicyError`; :func:`read_pickled_sb3` (legacy, behind ``trust_pickle``)
and :func:`convert_pickled_policy` (a one-time converter) load one only when the caller says it trusts it.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy, MaskableMultiInputActorCriticPolicy
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy, MultiInputActorCriticPolicy

from headprune.agents.hyperparams import ACTIVATIONS, ALGOS, check_policy_kwargs
from headprune.agents.policy_network import HeadScoringPolicy, MaskableHeadScoringPolicy
from headprune.common.registry import Registry

__all__ = ["FORMAT", "PICKLE_RISK", "POLICY_CLASSES", "PickledPolicyError", "PolicyFile", "PolicyFileError",
           "convert_pickled_policy", "is_pickled_sb3", "read_pickled_sb3", "read_policy_file", "restore_training_state",
           "save_policy"]

FORMAT = "headprune-policy"
VERSION = 1
META_FILE = "headprune_policy.json"
WEIGHTS_FILE = "policy.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
_MAX_META_BYTES = 8 << 20
_MAX_TENSOR_BYTES = 2 << 30
_SB3_MEMBERS = {"data", "policy.pth"}

PICKLE_RISK = ("an SB3 pickled zip runs any code its author put in it when it is loaded; trust it only if you "
               "made it yourself or trust its source")
"""What ``--trust-pickle`` / ``trust_pickle=True`` risks (said in every message that asks for it)."""

SB3_LOAD_HINT = ("a headprune policy file (JSON + safetensors, no pickle), which SB3's load cannot read: load it with "
                 "headprune.agents.load(path), which returns the SB3 model (MaskablePPO, PPO, ...)")
"""What SB3's loader says when it is pointed at a headprune policy file (:func:`_guard_sb3_loader`)."""

POLICY_CLASSES: Registry[type[BasePolicy]] = Registry("policy class")
"""The policy classes a policy file may name: the only classes :func:`read_policy_file`'s callers rebuild."""
for _cls in (MaskableHeadScoringPolicy, HeadScoringPolicy, MaskableActorCriticPolicy,
             MaskableMultiInputActorCriticPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy):
    POLICY_CLASSES.add(_cls.__name__, _cls)


class PolicyFileError(ValueError):
    """A policy file is unreadable, not a policy, or names something outside our registries."""


class PickledPolicyError(PolicyFileError):
    """A policy file is an SB3 pickled zip, refused unless the caller trusts it (``--trust-pickle``)."""


@dataclass
class PolicyFile:
    """A policy file's contents, read without running code.

    Attributes:
        path: the file.
        meta: the JSON config (see the module docstring).
        weights: the policy's ``state_dict`` (``name -> tensor``).
        optimizer: the optimizer's per-parameter tensors (``"state.<i>.<key>" -> tensor``), or ``None``.
    """

    path: Path
    meta: dict[str, Any]
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor] | None = None

    @property
    def policy_class(self) -> type[BasePolicy]:
        return POLICY_CLASSES.get(self.meta["policy_class"])

    def policy_kwargs(self) -> dict[str, Any]:
        """The policy's constructor keyword arguments (``activation_fn`` resolved by name), checked with bounds
        before any allocation (:func:`~headprune.agents.hyperparams.check_policy_kwargs`: the file may come from
        anyone).

        :raises PolicyFileError: naming the file and the bad key.
        """
        kwargs = dict(self.meta.get("policy_kwargs") or {})
        if "activation_fn" in kwargs:
            name = kwargs["activation_fn"]
            if not isinstance(name, str) or name not in ACTIVATIONS:
                raise PolicyFileError(f"policy: {self.path}: policy_kwargs.activation_fn must be one of "
                                      f"{', '.join(ACTIVATIONS)}, got {name!r}")
            kwargs["activation_fn"] = ACTIVATIONS[name]
        if "head_shape" in kwargs:
            kwargs["head_shape"] = tuple(kwargs["head_shape"])
        try:
            check_policy_kwargs(kwargs)
        except ValueError as err:
            raise PolicyFileError(f"policy: {self.path}: {err}") from None
        return kwargs


# ------------------------------------------------------------------------------------------ save
def _algo_name(model: BaseAlgorithm) -> str:
    for name, cls in ALGOS.items():
        if type(model) is cls:
            return name
    raise PolicyFileError(f"cannot save a {type(model).__name__}: known algorithms {', '.join(ALGOS)}")


def _json_kwargs(policy_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``policy_kwargs`` as JSON values; a class other than a known activation cannot be saved."""
    names = {cls: name for name, cls in ACTIVATIONS.items()}
    out: dict[str, Any] = {}
    for key, value in policy_kwargs.items():
        if key == "activation_fn":
            if value not in names:
                raise PolicyFileError(f"policy_kwargs.activation_fn {value!r} is not one of {', '.join(ACTIVATIONS)}")
            value = names[value]
        try:
            out[key] = json.loads(json.dumps(value))
        except (TypeError, ValueError):
            raise PolicyFileError(f"policy_kwargs.{key} ({type(value).__name__}) cannot be saved as JSON") from None
    return out


def _space_shape(space: Any) -> Any:
    if hasattr(space, "spaces") and isinstance(space.spaces, Mapping):
        return {k: _space_shape(v) for k, v in space.spaces.items()}
    n = getattr(space, "n", None)
    return {"n": int(n)} if n is not None and not getattr(space, "shape", None) else list(space.shape)


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The optimizer's state dict split into JSON (param groups, scalars) and tensors."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return {"param_groups": json.loads(json.dumps(state["param_groups"])), "scalars": scalars}, tensors


def _episode_infos(model: BaseAlgorithm) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in ep.items()} for ep in (model.ep_info_buffer or [])]


def save_policy(model: BaseAlgorithm, path: str | os.PathLike[str], *, with_optimizer: bool = True) -> Path:
    """Write ``model``'s policy (and, with ``with_optimizer``, what :func:`restore_training_state` needs to
    continue training) as a headprune policy file, atomically (a temporary file renamed into place).

    :param model: a trained SB3 algorithm of :data:`~headprune.agents.hyperparams.ALGOS`.
    :param path: the file to write (``.zip`` is added when missing, as SB3 does).
    :param with_optimizer: also save the optimizer state (checkpoints; evaluation needs only the weights).
    """
    out = Path(path)
    out = out if out.suffix == ".zip" else out.with_name(out.name + ".zip")
    policy = model.policy
    name = type(policy).__name__
    if name not in POLICY_CLASSES or POLICY_CLASSES.get(name) is not type(policy):
        raise PolicyFileError(f"policy class {name} is not in the policy registry ({', '.join(POLICY_CLASSES)})")
    meta: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "algo": _algo_name(model), "policy_class": name,
        "policy_kwargs": _json_kwargs(model.policy_kwargs or {}),
        "observation_space": _space_shape(model.observation_space), "action_space": _space_shape(model.action_space),
        "num_timesteps": int(model.num_timesteps), "n_updates": int(getattr(model, "_n_updates", 0)),
        "episode_num": int(getattr(model, "_episode_num", 0)), "ep_info_buffer": _episode_infos(model),
    }
    members = {WEIGHTS_FILE: save_safetensors({k: v.detach().cpu().contiguous().clone()
                                              for k, v in policy.state_dict().items()})}
    if with_optimizer and getattr(policy, "optimizer", None) is not None:
        meta["optimizer"], tensors = _optimizer_parts(policy.optimizer)
        members[OPTIMIZER_FILE] = save_safetensors(tensors)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.comment = SB3_LOAD_HINT.encode()  # shown by `unzip -l`
        zf.writestr(META_FILE, json.dumps(meta, indent=1))
        for name, data in members.items():
            zf.writestr(name, data)
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------------------------------------ read
def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise PolicyFileError(f"policy: {path} is not a readable policy file (truncated or not a zip: {err})") from None


def is_pickled_sb3(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an SB3 ``model.save`` zip (pickled entries) rather than a headprune policy file."""
    with _open_zip(Path(path)) as zf:
        names = set(zf.namelist())
    return META_FILE not in names and _SB3_MEMBERS <= names


def _member(zf: zipfile.ZipFile, name: str, path: Path, limit: int) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise PolicyFileError(f"policy: {path}: {name} is {info.file_size} bytes, more than the {limit} allowed")
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise PolicyFileError(f"policy: {path}: {name} is unreadable (truncated or corrupted: {err})") from None


def _tensors(data: bytes, name: str, path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(data)
    except Exception as err:  # safetensors raises its own SafetensorError for any malformed header
        raise PolicyFileError(f"policy: {path}: {name} is not a valid safetensors file ({err})") from None


def _check_meta(meta: Any, path: Path) -> dict[str, Any]:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PolicyFileError(f"policy: {path}: {META_FILE} is not a {FORMAT} config")
    if meta.get("version") != VERSION:
        raise PolicyFileError(f"policy: {path}: format version {meta.get('version')!r}; this headprune reads {VERSION}")
    if meta.get("algo") not in ALGOS:
        raise PolicyFileError(f"policy: {path}: algo {meta.get('algo')!r} is not one of {', '.join(ALGOS)}")
    if meta.get("policy_class") not in POLICY_CLASSES:
        raise PolicyFileError(f"policy: {path}: policy class {meta.get('policy_class')!r} is not one of "
                              f"{', '.join(POLICY_CLASSES.names())}")
    kwargs = meta.get("policy_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise PolicyFileError(f"policy: {path}: policy_kwargs must be a JSON object")
    if "activation_fn" in kwargs and kwargs["activation_fn"] not in ACTIVATIONS:
        raise PolicyFileError(f"policy: {path}: activation_fn {kwargs['activation_fn']!r} is not one of "
                              f"{', '.join(ACTIVATIONS)}")
    return meta


def read_policy_file(path: str | os.PathLike[str]) -> PolicyFile:
    """Read a headprune policy file (no code runs: JSON and safetensors only).

    :raises PickledPolicyError: ``path`` is an SB3 pickled zip (its message says what trusting it risks).
    :raises PolicyFileError: unreadable, truncated, or naming a class/algorithm outside our registries.
    """
    p = Path(path)
    with _open_zip(p) as zf:
        names = set(zf.namelist())
        if META_FILE not in names:
            if _SB3_MEMBERS <= names:
                raise PickledPolicyError(
                    f"policy: {p} is an SB3 pickled zip, refused: {PICKLE_RISK}. Convert it once with "
                    f"`headprune convert-policy --trust-pickle {p} NEW.zip`, or pass --trust-pickle")
            raise PolicyFileError(f"policy: {p} is not a policy file (no {META_FILE})")
        try:
            meta = json.loads(_member(zf, META_FILE, p, _MAX_META_BYTES).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PolicyFileError(f"policy: {p}: {META_FILE} is not valid JSON ({err})") from None
        meta = _check_meta(meta, p)
        if WEIGHTS_FILE not in names:
            raise PolicyFileError(f"policy: {p} has no {WEIGHTS_FILE}")
        weights = _tensors(_member(zf, WEIGHTS_FILE, p, _MAX_TENSOR_BYTES), WEIGHTS_FILE, p)
        optimizer = None
        if OPTIMIZER_FILE in names:
            optimizer = _tensors(_member(zf, OPTIMIZER_FILE, p, _MAX_TENSOR_BYTES), OPTIMIZER_FILE, p)
    return PolicyFile(path=p, meta=meta, weights=weights, optimizer=optimizer)


def _optimizer_state(policy_file: PolicyFile) -> dict[str, Any]:
    saved = policy_file.meta.get("optimizer")
    if saved is None or policy_file.optimizer is None:
        raise PolicyFileError(f"policy: {policy_file.path} has no optimizer state (not a training checkpoint)")
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in policy_file.optimizer.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    for index, scalars in (saved.get("scalars") or {}).items():
        state.setdefault(int(index), {}).update(scalars)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in saved["param_groups"]]
    return {"state": state, "param_groups": groups}


def restore_training_state(model: BaseAlgorithm, policy_file: PolicyFile) -> None:
    """Load a checkpoint into ``model``, freshly built from the run's config: the policy weights (strict),
    the optimizer state and the counters (``num_timesteps``, updates, episodes, recent episode infos).

    :raises PolicyFileError: the checkpoint does not fit the model (other algorithm, class or shapes).
    """
    meta = policy_file.meta
    if meta["algo"] != _algo_name(model) or meta["policy_class"] != type(model.policy).__name__:
        raise PolicyFileError(f"policy: {policy_file.path} holds a {meta['algo']} {meta['policy_class']}, "
                              f"the run builds a {_algo_name(model)} {type(model.policy).__name__}")
    try:
        model.policy.load_state_dict(policy_file.weights)
        model.policy.optimizer.load_state_dict(_optimizer_state(policy_file))
    except (RuntimeError, ValueError, KeyError) as err:
        raise PolicyFileError(f"policy: {policy_file.path} does not fit the run's model: {err}") from None
    model.num_timesteps = int(meta["num_timesteps"])
    model._n_updates = int(meta.get("n_updates", 0))
    model._episode_num = int(meta.get("episode_num", 0))
    model.ep_info_buffer = deque(meta.get("ep_info_buffer") or [], maxlen=model._stats_window_size)
    model.ep_success_buffer = deque(maxlen=model._stats_window_size)


# ------------------------------------------------------------------------------------------ legacy (pickled) zips
def read_pickled_sb3(path: str | os.PathLike[str], *, trust_pickle: bool, device: str = "cpu"
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """SB3's ``(data, params)`` of a pickled zip: UNPICKLES its entries, so only with ``trust_pickle=True``.

    :raises PickledPolicyError: without ``trust_pickle``.
    """
    if not trust_pickle:
        raise PickledPolicyError(f"policy: {path} is an SB3 pickled zip, refused: {PICKLE_RISK}; pass "
                                 "trust_pickle=True (--trust-pickle) only if you do")
    from stable_baselines3.common.save_util import load_from_zip_file

    try:
        data, params, _ = load_from_zip_file(path, device=device)
    except Exception as err:  # noqa: BLE001 - whatever a hostile or broken zip raises, said in one line
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise PolicyFileError(f"policy: {path} is not a readable SB3 model file ({type(err).__name__}: {first}); "
                              "whatever its pickles run has run: do not use this file") from None
    if data is None or "policy_class" not in data or "policy" not in params:
        raise PolicyFileError(f"policy: {path} is not an SB3 model file (no policy class or weights)")
    policy_class = data["policy_class"]
    if not isinstance(policy_class, type) or not issubclass(policy_class, BasePolicy):
        shown = repr(policy_class)[:80]
        raise PolicyFileError(f"policy: {path} is not an SB3 model file: its policy_class unpickled to "
                              f"{type(policy_class).__name__} {shown}, not a policy class (whatever its pickles run "
                              "has run: do not use this file)")
    return data, params


def convert_pickled_policy(source: str | os.PathLike[str], target: str | os.PathLike[str], *,
                           trust_pickle: bool) -> Path:
    """One-time conversion of an SB3 pickled zip into a headprune policy file (weights, optimizer, counters).

    Loading ``source`` unpickles it (runs its code): only with ``trust_pickle=True``. The policy is rebuilt
    by SB3's own loader (with the algorithm named by its ``policy_class``'s module), then saved with
    :func:`save_policy`; the result loads everywhere without the flag.
    """
    data, _ = read_pickled_sb3(source, trust_pickle=trust_pickle)
    policy_name = data["policy_class"].__name__
    if policy_name not in POLICY_CLASSES:
        raise PolicyFileError(f"policy: {source}: policy class {policy_name} is not one of "
                              f"{', '.join(POLICY_CLASSES.names())}")
    algo = "maskable_ppo" if issubclass(data["policy_class"], MaskableActorCriticPolicy) else "ppo"
    model = ALGOS[algo].load(source, device="cpu")
    return save_policy(model, target)


# ------------------------------------------------------------------------------------------ SB3's own loader
def is_policy_file(path: Any) -> bool:
    """Whether ``path`` is a headprune policy file (a zip holding :data:`META_FILE`); False for anything else."""
    try:
        with zipfile.ZipFile(path) as zf:
            return META_FILE in zf.namelist()
    except (OSError, zipfile.BadZipFile, TypeError, ValueError):
        return False


def _guard_sb3_loader() -> None:
    """Make ``MaskablePPO.load`` / ``PPO.load`` (SB3's ``load_from_zip_file``) pointed at a headprune policy file
    raise one clear ValueError naming :func:`headprune.agents.load`, instead of SB3's ``No data found in the saved
    file``. Anything else goes to SB3's loader unchanged. Installed once, when this module is imported."""
    import stable_baselines3.common.base_class as base_class

    sb3_loader = base_class.load_from_zip_file
    if getattr(sb3_loader, "_headprune_guard", False):
        return

    def load_from_zip_file(load_path: Any, *args: Any, **kwargs: Any) -> Any:
        path = load_path if isinstance(load_path, (str, os.PathLike)) else None
        if path is not None:
            found = Path(path) if Path(path).is_file() else Path(f"{os.fspath(path)}.zip")
            if is_policy_file(found):
                raise ValueError(f"{found} is {SB3_LOAD_HINT}")
        return sb3_loader(load_path, *args, **kwargs)

    load_from_zip_file._headprune_guard = True  # type: ignore[attr-defined]
    base_class.load_from_zip_file = load_from_zip_file


_guard_sb3_loader()
