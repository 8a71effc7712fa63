"""Load a trained policy for any ``HeadPrune-v0`` env, and evaluate it with the defenses' protocol.

* :func:`load_policy` rebuilds the saved policy for a target env's spaces (any ``L * H`` for the
  size-agnostic :mod:`headprune.agents.policy_network`) and loads its weights, from a headprune policy
  file (:mod:`headprune.agents.policy_io`: JSON + safetensors, never unpickled); an SB3 pickled zip
  loads only with ``trust_pickle=True``.
* :func:`evaluate` runs :func:`headprune.defenses.defend` with an :class:`AgentDefense` (a defense): one
  deterministic episode of the policy in defend's env, then fine-tuning with the pruned heads held at
  zero, then ``evaluate_defense``, the same code path and report as ``headprune defend``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import ConstantSchedule
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from headprune.agents.policy_io import (
    PolicyFileError,
    is_pickled_sb3,
    read_pickled_sb3,
    read_policy_file,
    restore_training_state,
)
from headprune.agents.policy_network import HeadScoringPolicy, MaskableHeadScoringPolicy
from headprune.agents.rl_training import latest_checkpoint
from headprune.common.assignments import safe_yaml
from headprune.defenses.base import DefenseFineTune
from headprune.defenses.scripted import PolicyEpisodeDefense
from headprune.envs.config import HeadPruneConfig

__all__ = ["ENV_LAYOUT_OPTIONS", "AgentPolicy", "AgentDefense", "evaluate", "evaluate_agent", "load", "load_policy",
           "resolve_policy_path", "trained_env_options"]


def resolve_policy_path(path: str | os.PathLike[str]) -> Path:
    """The model file of ``path``: a ``.zip`` as is; a run folder's ``model.zip``, else its latest checkpoint."""
    p = Path(path)
    if p.is_dir():
        if (p / "model.zip").is_file():
            return p / "model.zip"
        checkpoint = latest_checkpoint(p)
        if checkpoint is None:
            raise FileNotFoundError(f"policy: {p} has no model.zip and no checkpoints/*.zip")
        return checkpoint
    if not p.is_file():
        raise FileNotFoundError(f"policy: no such file or run folder: {p}")
    return p


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _head_shape(env: gym.Env | VecEnv) -> tuple[int, int]:
    if isinstance(env, VecEnv):
        shape = env.get_attr("head_shape", indices=[0])[0]
    else:
        shape = getattr(env.unwrapped, "head_shape", None)
        if shape is None:
            raise ValueError(f"env: {type(env.unwrapped).__name__} has no head_shape; expected a HeadPrune-v0 env")
    return int(shape[0]), int(shape[1])


@dataclass
class AgentPolicy:
    """A trained policy loaded for one env, with SB3's ``predict`` shape, so :func:`defend` (and any
    SB3-style caller) runs it like a scripted policy.

    Attributes:
        policy: the SB3 policy (an ``nn.Module``, eval mode).
        source: the model file it was loaded from.
        meta: ``algo``, ``num_timesteps``, ``policy_class``, ``sha256`` of the file, the run's ``seed``
            and training victim when the file sits in a run folder.
    """

    policy: BasePolicy
    source: Path
    meta: dict[str, Any] = field(default_factory=dict)
    name: str = "agent"

    @property
    def description(self) -> str:
        return (f"trained {self.meta.get('algo', 'SB3')} policy {self.source} ({self.meta.get('num_timesteps')} "
                "timesteps), deterministic")

    @property
    def mask_aware(self) -> bool:
        """Whether the policy takes action masks (MaskablePPO); a plain-PPO policy acts unmasked."""
        return isinstance(self.policy, MaskableActorCriticPolicy)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True,
                action_masks: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        """SB3's ``predict``; ``action_masks`` reaches only a mask-aware policy."""
        if self.mask_aware:
            return self.policy.predict(observation, state, episode_start, deterministic,  # type: ignore[call-arg]
                                       action_masks=action_masks)
        return self.policy.predict(observation, state, episode_start, deterministic)

    def config(self) -> dict[str, Any]:
        """JSON-ready provenance (for reports and config hashes)."""
        return {"policy": str(self.source), **self.meta}


ENV_LAYOUT_OPTIONS: tuple[str, ...] = ("operation", "features", "base", "mix_levels", "budget", "score_every", "proxy",
                                       "proxy_kwargs")
"""The env options that fix a trained policy's parameter shapes or the meaning of what it observes: ``mix_levels``
(what one mix step and the ``"mix"`` observation mean), ``budget`` (the summary's budget left, and how far an episode
goes), ``score_every`` (how stale the summary's accuracy and proxy are), ``proxy`` and ``proxy_kwargs`` (what the
summary's proxy entries measure)."""


def trained_env_options(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The :data:`ENV_LAYOUT_OPTIONS` a policy was trained with, read from its run folder's ``config.yml``
    (``env_kwargs``; ``yaml.safe_load``, never unpickled); ``{}`` when the file has no run folder or the
    run set none (then it was trained on the defaults: ``operation="prune"``, today's features)."""
    source = resolve_policy_path(path)
    conf = next((d / "config.yml" for d in (source.parent, source.parent.parent) if (d / "config.yml").is_file()),
                None)
    if conf is None:
        return {}
    entries = safe_yaml(conf.read_text(), str(conf))
    entry = next(iter(entries.values()), None) if isinstance(entries, dict) and entries else None
    env_kwargs = (entry.get("env_kwargs") if isinstance(entry, dict) else None) or {}
    return {k: env_kwargs[k] for k in ENV_LAYOUT_OPTIONS if k in env_kwargs}


def _check_layout(state: Mapping[str, Any], env: gym.Env | VecEnv, source: Path) -> None:
    """ValueError naming the features and operations when a head-scoring policy's weights do not fit ``env``."""
    phi, score = state.get("features_extractor.phi.0.weight"), state.get("mlp_extractor.score.weight")
    if phi is None or (score is None and "mlp_extractor.block_score.weight" not in state):
        return
    space = env.observation_space
    n, n_features = space["head_stats"].shape
    with_reset, with_mix = "reset" in space.spaces, "mix" in space.spaces
    blocks = int(space["mix"].shape[0]) if with_mix else 0
    wanted = (n_features + 3 + int(with_reset), (int(env.action_space.n) - blocks) // n, with_mix)
    head_ops = 0 if score is None else int(score.shape[0])  # 0: operation "mix" alone
    trained = (int(phi.shape[1]), head_ops, "mlp_extractor.block_score.weight" in state)
    if trained != wanted:
        mixing = {True: "with", False: "without"}
        raise ValueError(
            f"policy: {source} was trained on an observation of width {trained[0]} per head (head features + mask "
            f"(+ reset flag) + 2 positions), {trained[1]} operation(s) per head and {mixing[trained[2]]} the mix "
            f"operation; this env gives {wanted[0]} ({n_features} features{', reset flags' if with_reset else ''}), "
            f"{wanted[1]} and {mixing[wanted[2]]} it. Build the env with the features and operation the policy was "
            f"trained on ({trained_env_options(source) or 'the defaults'})")


def _saved_policy(source: Path, trust_pickle: bool, device: str) -> tuple[type, dict[str, Any], dict[str, Any], int]:
    """``(policy class, policy kwargs, state_dict, timesteps)`` of a policy file: a headprune file (no code
    runs), or an SB3 pickled zip only when ``trust_pickle`` (:func:`~headprune.agents.policy_io.read_pickled_sb3`)."""
    if trust_pickle and is_pickled_sb3(source):
        data, params = read_pickled_sb3(source, trust_pickle=True, device=device)
        return (data["policy_class"], dict(data.get("policy_kwargs") or {}), params["policy"],
                int(data.get("num_timesteps", 0)))
    saved = read_policy_file(source)
    return saved.policy_class, saved.policy_kwargs(), saved.weights, int(saved.meta.get("num_timesteps", 0))


def load(path: str | os.PathLike[str], env: gym.Env | VecEnv | None = None, *, device: str = "cpu") -> Any:
    """The SB3 algorithm (``MaskablePPO``, ``PPO``, ...) saved at ``path``: what ``MaskablePPO.load`` gives for
    a zip SB3 wrote, for headprune's policy files (``model.zip``, checkpoints, ``best_model.zip``), which SB3's
    loader cannot read (they hold JSON and safetensors, no pickle).

    The algorithm and policy class are the ones the file names (from headprune's registries); in a run folder
    (``path`` a run folder or a file in it) the model is rebuilt with the run's ``config.yml`` hyperparameters,
    elsewhere with the algorithm's defaults. The weights, the optimizer state when saved, and the counters
    (``num_timesteps``, ...) are loaded. ``model.predict(obs, action_masks=...)`` works at once; to continue
    a run's training, use ``headprune train --resume RUN`` (it also repairs the run's logs).

    :param path: a headprune policy file or a run folder.
    :param env: the env to attach (its spaces, and ``head_shape`` for the size-agnostic policies); default: a
        run folder's env (``run.json``'s id and ``config.yml``'s env kwargs, one env).
    :param device: where the policy runs.
    :raises PickledPolicyError: an SB3 pickled zip (SB3's own ``load`` reads it, running its pickles).
    :raises ValueError: no ``env`` and ``path`` is not in a run folder.
    """
    from headprune.agents.hyperparams import ALGOS, load_hyperparams
    from headprune.agents.rl_training import _build_model, make_vec

    source = resolve_policy_path(path)
    saved = read_policy_file(source)
    run_dir = next((d for d in (source.parent, source.parent.parent) if (d / "run.json").is_file()), None)
    hp = None
    if run_dir is not None and (run_dir / "config.yml").is_file():
        run = json.loads((run_dir / "run.json").read_text())
        hp = load_hyperparams(saved.meta["algo"], run["env_id"], conf_file=run_dir / "config.yml")
        if env is None:
            from headprune.agents.hyperparams import TrainSettings

            env = make_vec(run["env_id"], TrainSettings.from_hyperparams(hp).env_kwargs, 1, int(run["seed"]))
    if env is None:
        raise ValueError(f"policy: {source} is not in a run folder (no run.json beside it): pass env=, the env "
                         "to attach (e.g. gym.make('HeadPrune-v0', victim=...))")
    vec = env if isinstance(env, VecEnv) else DummyVecEnv([lambda: env])
    if hp is not None:
        model = _build_model(hp, saved.meta["algo"], vec, 0, 0, None)
    else:
        kwargs = saved.policy_kwargs()
        if issubclass(saved.policy_class, (HeadScoringPolicy, MaskableHeadScoringPolicy)):
            kwargs["head_shape"] = _head_shape(vec)
        model = ALGOS[saved.meta["algo"]](saved.policy_class, vec, policy_kwargs=kwargs, device=device, verbose=0)
    model.policy.to(device)
    if saved.optimizer is not None:
        restore_training_state(model, saved)
    else:
        try:
            model.policy.load_state_dict(saved.weights)
        except RuntimeError as err:
            raise PolicyFileError(f"policy: the weights of {source} do not fit the env's model: {err}") from None
        model.num_timesteps = int(saved.meta.get("num_timesteps", 0))
    model.policy.set_training_mode(False)
    return model


def load_policy(path: str | os.PathLike[str], env: gym.Env | VecEnv, *, device: str = "cpu",
                trust_pickle: bool = False) -> AgentPolicy:
    """The policy saved at ``path`` (a model ``.zip`` or a run folder), rebuilt for ``env``'s spaces.

    The saved policy class (named in the file, looked up in
    :data:`~headprune.agents.policy_io.POLICY_CLASSES`) is rebuilt with the target env's observation and
    action spaces (and, for the size-agnostic policies, its ``head_shape``), then the saved ``state_dict``
    is loaded strictly: a size-agnostic policy has the same parameters for every ``L * H``, so it transfers
    to a model of another size; any other policy class loads only into an env of its training size.

    The head-statistic features, the reset flag, the number of head operations and the mix operation DO fix
    parameter shapes: a policy loads only into an env with the ones it was trained on
    (:func:`trained_env_options`; :func:`evaluate_agent` applies them).

    :param path: a headprune policy file or a run folder.
    :param env: the target env (its spaces and ``head_shape``).
    :param device: where the policy runs.
    :param trust_pickle: also load an SB3 pickled zip, which RUNS ANY CODE ITS AUTHOR PUT IN IT
        (:data:`~headprune.agents.policy_io.PICKLE_RISK`); prefer converting it once
        (``headprune convert-policy``).
    :raises FileNotFoundError: no model at ``path``.
    :raises PickledPolicyError: an SB3 pickled zip without ``trust_pickle``.
    :raises PolicyFileError: unreadable, or the weights do not fit the rebuilt policy (naming the file and
        the env's size), or ValueError naming the features and operations it was trained on.
    """
    source = resolve_policy_path(path)
    policy_cls, kwargs, weights, timesteps = _saved_policy(source, trust_pickle, device)
    head_shape = _head_shape(env)
    if issubclass(policy_cls, (HeadScoringPolicy, MaskableHeadScoringPolicy)):
        kwargs["head_shape"] = head_shape
        _check_layout(weights, env, source)
    policy = policy_cls(env.observation_space, env.action_space, ConstantSchedule(0.0), **kwargs)
    try:
        policy.load_state_dict(weights)
    except RuntimeError as err:
        raise PolicyFileError(f"policy: the weights of {source} ({policy_cls.__name__}) do not fit an env with "
                              f"head_shape {head_shape}: {err}") from None
    policy.to(device)
    policy.set_training_mode(False)
    meta: dict[str, Any] = {"policy_class": policy_cls.__name__, "num_timesteps": timesteps, "sha256": _sha256(source)}
    run_json = next((d / "run.json" for d in (source.parent, source.parent.parent) if (d / "run.json").is_file()), None)
    if run_json is not None:
        try:
            run = json.loads(run_json.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            run = {}
        if isinstance(run, dict):
            meta.update(algo=run.get("algo"), train_seed=run.get("seed"), run_dir=str(run_json.parent))
    return AgentPolicy(policy=policy, source=source, meta=meta)


class AgentDefense(PolicyEpisodeDefense):
    """A trained policy file as a :class:`~headprune.defenses.base.Defense`: ``defend`` builds its env, then
    :meth:`build_policy` loads the policy for that env (:func:`load_policy`) and runs one deterministic episode.

    :param path: a model ``.zip`` or a run folder.
    :param name: the defense name in reports.
    :param device: where the policy runs.
    :param trust_pickle: accept an SB3 pickled zip (runs its code: see :func:`load_policy`).
    :param options: :class:`~headprune.defenses.scripted.PolicyEpisodeOptions` (what the defense keeps of the
        episode: the env's best state, or the deepest checkpoint that holds the floor after a short fine-tune).
    """

    def __init__(self, path: str | os.PathLike[str], name: str = "agent", device: str = "cpu",
                 trust_pickle: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self.name = name  # type: ignore[misc]
        self.device = device
        self.trust_pickle = bool(trust_pickle)
        self.source = resolve_policy_path(path)
        self._trained_options = trained_env_options(self.source)  # read once: defend asks for it twice

    def check(self) -> None:
        """Read the policy file now (no code runs): a pickled zip without ``trust_pickle`` or an unreadable
        file fails before any work."""
        if not (self.trust_pickle and is_pickled_sb3(self.source)):
            read_policy_file(self.source)

    @property  # type: ignore[override]
    def description(self) -> str:  # type: ignore[override]
        return f"trained policy {self.source}, deterministic"

    def env_options(self) -> dict[str, Any]:
        """The policy's :func:`trained_env_options` (operation, features, budget, proxy, ...): the env it runs in must
        have the observation layout and operations it was trained on, whatever the run's config says."""
        return dict(self._trained_options)

    def build_policy(self, env: gym.Env) -> AgentPolicy:
        return load_policy(self.source, env, device=self.device, trust_pickle=self.trust_pickle)

    def config(self) -> dict[str, Any]:
        return {"policy": str(self.source), "sha256": _sha256(self.source)}

    def policy_config(self, policy: Any) -> dict[str, Any]:
        return self.config()


def evaluate_agent(
    policy: str | os.PathLike[str],
    victim: Any,
    env_config: HeadPruneConfig | Mapping[str, Any] | None = None,
    finetune: DefenseFineTune | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    command: str | None = None,
    trust_pickle: bool = False,
    options: Mapping[str, Any] | None = None,
    **evaluation: Any,
) -> Any:
    """Evaluate a trained policy with the defenses' protocol: :func:`headprune.defenses.defend` with an
    :class:`AgentDefense` (one deterministic episode, fine-tuning with the pruned heads at zero, then
    ``evaluate_defense`` on ``eval_clean``/``eval_poison``, only after the mask is fixed).

    :param policy: a model ``.zip`` or a run folder.
    :param victim: as :func:`~headprune.defenses.defend` (any model size).
    :param env_config: the env config (defender rows, split sizes, floor, seed, cache, progress); the
        policy's :func:`trained_env_options` (operation, features, budget, proxy, ...) replace those fields.
    :param finetune: the fine-tune after pruning.
    :param out: if given, write the same report as ``headprune defend`` there (``model/``, ``report.json``,
        ``report.md``, plot).
    :param command: the command recorded in the report.
    :param trust_pickle: accept an SB3 pickled zip (runs its code: see :func:`load_policy`).
    :param options: :class:`~headprune.defenses.scripted.PolicyEpisodeOptions` (what the defense keeps of the
        episode; default: the env's best state).
    :param evaluation: ``eval_clean``, ``eval_poison``, ``target_label``, ``curve_points`` (defend's).
    :returns: the :class:`~headprune.defenses.DefenseResult`.
    """
    from headprune.defenses import defend
    from headprune.defenses.report import write_report

    # the policy's trained layout replaces the config's (AgentDefense.env_options, applied by defend)
    agent = AgentDefense(policy, trust_pickle=trust_pickle, **dict(options or {}))
    result = defend(victim, agent, env_config, finetune, **evaluation)
    if out is not None:
        write_report(result, out, command=command)
    return result


def evaluate(*args: Any, **kwargs: Any) -> Any:
    """Deprecated name of :func:`evaluate_agent` (kept for one release)."""
    import warnings

    warnings.warn("headprune.agents.evaluate is deprecated; use evaluate_agent", DeprecationWarning, stacklevel=2)
    return evaluate_agent(*args, **kwargs)
