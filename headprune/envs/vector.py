"""Batched vector envs: ONE model scores the masks of all ``N`` sub-envs in one batched forward.

:class:`BatchedLanes` holds ``N`` lanes, :class:`~headprune.envs.headprune_env.HeadPruneEnv` views over
one :class:`~headprune.workbench.Workbench` (the template env's) that share its victim, model, statistics,
proxy and :class:`~headprune.envs.incremental.MaskScorer` memo, each with its own episode state. A step first applies every lane's action to a copy of its mask, scores the masks the memo has
not seen in one call of :meth:`Evaluator.logits_for_masks <headprune.engine.evaluator.Evaluator.logits_for_masks>`
(per-example masks through ``HeadGate``: row ``j * B + b`` is mask ``j`` on text ``b``) and stores the
scores in the shared memo; then each lane runs :meth:`HeadPruneEnv.step` unchanged, which finds its
score there. Rewards, observations and infos are therefore those of ``N`` single envs: the reward
reads integer counts of correct predictions and the proxy, and a batched forward predicts what the
single env's incremental forward predicts (its logits agree to float rounding; only an exact near-tie
could flip a prediction; the tests check bit-identical rewards on tiny). A mask any lane has seen is
never scored twice.

With ``scoring="incremental"`` (the CPU default of ``"auto"``) each lane instead keeps its own
:class:`~headprune.envs.incremental.IncrementalForward` layer caches over the one shared model and
evaluator (the code path of a single env), still sharing the memo: on a CPU, recomputing only the
layers after the pruned head's beats a batched full forward of every lane's mask.

Fronts:

* :class:`BatchedHeadPruneVectorEnv`, a ``gymnasium.vector.VectorEnv`` (the registered
  ``vector_entry_point``: ``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")``),
  autoreset ``NEXT_STEP`` (Gymnasium 1.x default: the step after an episode's end resets that
  sub-env, ignores its action, and returns reward 0), ``action_masks()`` ``[N, n]`` for MaskablePPO;
* :class:`SB3BatchedVecEnv`, an SB3 ``VecEnv`` (same-step reset, ``terminal_observation``, Monitor-style
  ``info["episode"]``), what ``headprune train`` uses with ``vec_env: batched``.

Seeds: ``reset(seed=s)`` gives lane ``i`` the seed ``s + i`` (logged at INFO level by the ``headprune.envs.vector`` logger,
kept in :attr:`BatchedLanes.lane_seeds`). They seed only each lane's ``np_random``; the data split and
statistics are the template's (fixed at construction).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn

from headprune.envs.factory import make_registered_env
from headprune.envs.headprune_env import HeadPruneEnv
from headprune.envs.incremental import IncrementalForward, MaskScore, MaskScorer, mask_key
from headprune.envs.registration import step_limit

__all__ = ["SCORING", "BatchedHeadPruneVectorEnv", "BatchedLanes", "SB3BatchedVecEnv", "prefetch_scores"]

SCORING: tuple[str, ...] = ("auto", "batched", "incremental")
"""How lanes score new masks: one batched full forward of all lanes' masks, or each lane's own
incremental forward (layer caches per lane over the one shared model); the memo is shared either way."""

_LOG = logging.getLogger(__name__)

Step = tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]


def prefetch_scores(scorer: MaskScorer, masks: Sequence[np.ndarray], head_shape: tuple[int, int]) -> int:
    """Score the ``masks`` (flat int8 ``[L * H]``) that ``scorer``'s memo lacks in one batched forward
    and store them in the memo; return how many were scored.

    :param scorer: the lanes' shared scorer.
    :param masks: candidate masks (duplicates and known masks cost nothing).
    :param head_shape: ``(L, H)``.
    """
    todo: dict[bytes, np.ndarray] = {}
    for mask in masks:
        key = mask_key(mask)
        if key not in scorer.memo and key not in todo:
            todo[key] = mask
    if not todo:
        return 0
    stacked = torch.from_numpy(np.stack(list(todo.values())).astype(np.float32)).view(-1, *head_shape)  # [K, L, H]
    logits = scorer.forward.evaluator.logits_for_masks(stacked)  # [K, N, C]
    correct = (logits.argmax(dim=-1) == scorer.labels).sum(dim=-1)  # [K]
    total = int(scorer.labels.numel())
    for key, count, mask in zip(todo, correct.tolist(), stacked):
        scorer.memo[key] = MaskScore(correct=int(count), total=total, proxy=float(scorer.proxy(mask)))
        scorer.misses += 1
    return len(todo)


class BatchedLanes:
    """``N`` episode states over one workbench (see the module docstring).

    :param template: lane 0; every other lane is a :class:`HeadPruneEnv` view over its
        :class:`~headprune.workbench.Workbench` (:attr:`bench`: model, data split, statistics, scorer memo).
    :param num_envs: ``N``.
    :param max_episode_steps: truncate a lane's episode after this many steps (Gymnasium's ``TimeLimit``).
    :param scoring: :data:`SCORING` (``"auto"``: ``"batched"`` when the model is on an accelerator,
        ``"incremental"`` on the CPU, where recomputing only the changed layers beats a batched full
        forward: see ``benchmarks/RESULTS.md``).
    """

    def __init__(self, template: HeadPruneEnv, num_envs: int, max_episode_steps: int | None = None,
                 scoring: str = "auto") -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if scoring not in SCORING:
            raise ValueError(f"scoring must be one of {SCORING}, got {scoring!r}")
        self.scoring = scoring if scoring != "auto" else ("incremental" if template.device.type == "cpu" else "batched")
        self.template = template
        self.bench = template.bench
        self.lanes: list[HeadPruneEnv] = [template]
        for _ in range(num_envs - 1):
            lane = HeadPruneEnv(self.bench, render_mode=template.render_mode)  # a view over the one workbench
            if self.scoring == "incremental":  # own layer caches over the shared evaluator, shared memo
                own = template.scorer.forward  # the same reference (reset heads) and mixer (mixed blocks)
                lane.scorer = MaskScorer(IncrementalForward(template.evaluator, reference=own.reference,
                                                            mixer=own.mixer),
                                         template.proxy, memo_size=template.scorer.memo.size)
                lane.scorer.memo = template.scorer.memo
            self.lanes.append(lane)
        self.max_episode_steps = max_episode_steps
        self.elapsed = [0] * num_envs
        self.lane_seeds: list[int | None] = [None] * num_envs

    def __len__(self) -> int:
        return len(self.lanes)

    def reset_lane(self, i: int, seed: int | None = None, options: dict[str, Any] | None = None
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset lane ``i`` (``seed`` seeds its ``np_random``)."""
        if seed is not None:
            self.lane_seeds[i] = int(seed)
            _LOG.info("HeadPrune vector env: lane %d reset with seed %d", i, seed)
        self.elapsed[i] = 0
        return self.lanes[i].reset(seed=seed, options=options)

    def seeds_for(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        """Per-lane seeds: ``seed + i`` for an int, the list itself, or ``None`` each."""
        if seed is None:
            return [None] * len(self)
        if isinstance(seed, (int, np.integer)):
            return [int(seed) + i for i in range(len(self))]
        if len(seed) != len(self):
            raise ValueError(f"{len(seed)} seeds for {len(self)} envs")
        return list(seed)

    def step_lanes(self, indices: Sequence[int], actions: Sequence[int]) -> list[Step]:
        """Step lanes ``indices`` with ``actions``, their new masks scored in one batched forward first."""
        candidates = []
        for i, action in zip(indices, actions):
            lane, a = self.lanes[i], int(action)
            # prefetch keys states by their mask alone: only prunes from a state with no reset head or mixed block
            if 0 <= a < lane.action_space.n and lane.operations.decode(a)[0] == "prune" \
                    and not lane._reset.any() and not lane._mix.any() and lane.scores_next_step():
                mask = lane._mask.copy()
                mask[a] = 0
                candidates.append(mask)
        if self.scoring == "batched":
            prefetch_scores(self.template.scorer, candidates, self.template.head_shape)
        out = []
        for i, action in zip(indices, actions):
            obs, reward, terminated, truncated, info = self.lanes[i].step(action)
            self.elapsed[i] += 1
            if self.max_episode_steps is not None and self.elapsed[i] >= self.max_episode_steps and not terminated:
                truncated = True
            out.append((obs, reward, terminated, truncated, info))
        return out

    def action_masks(self) -> np.ndarray:
        """``[N, n]`` bool: each lane's valid actions."""
        return np.stack([lane.action_masks() for lane in self.lanes])


def stack_obs(observations: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A batch of Dict observations: each key ``[N, ...]``."""
    return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}


SYNC_ONLY_OPTIONS: dict[str, str] = {
    "copy": "SyncVectorEnv/AsyncVectorEnv", "observation_mode": "SyncVectorEnv/AsyncVectorEnv",
    "shared_memory": "AsyncVectorEnv", "context": "AsyncVectorEnv", "daemon": "AsyncVectorEnv",
    "worker": "AsyncVectorEnv", "env_fns": "SyncVectorEnv/AsyncVectorEnv",
}
"""Options of Gymnasium's own vector envs that the one-model vector env refuses by name (it has no copies of
the env, no workers, no shared memory)."""


def _check_vector_options(autoreset_mode: AutoresetMode | str, config: dict[str, Any]) -> AutoresetMode:
    """The autoreset mode, after refusing ``DISABLED`` and the options of Gymnasium's own vector envs (named,
    with why and what to use instead)."""
    sync_only = sorted(set(config) & set(SYNC_ONLY_OPTIONS))
    if sync_only:
        owner = ", ".join(f"{k} ({SYNC_ONLY_OPTIONS[k]})" for k in sync_only)
        raise ValueError(f"{owner}: option(s) of Gymnasium's own vector envs, which run one env per sub-env; the "
                         "one-model vector env (vector_entry_point) has none to copy or spawn: use "
                         "gym.make_vec(..., vectorization_mode='sync' or 'async', vector_kwargs=...) for them")
    try:
        mode = AutoresetMode(autoreset_mode)
    except ValueError:
        raise ValueError(f"autoreset_mode must be one of {[m.value for m in AutoresetMode]}, "
                         f"got {autoreset_mode!r}") from None
    if mode == AutoresetMode.DISABLED:
        raise ValueError("autoreset_mode DISABLED is not supported by the one-model vector env (it needs a per-lane "
                         "reset, reset(options={'reset_mask': ...})): use NEXT_STEP or SAME_STEP, or "
                         "vectorization_mode='sync' with vector_kwargs={'autoreset_mode': AutoresetMode.DISABLED}")
    return mode


class BatchedHeadPruneVectorEnv(VectorEnv):
    """``N`` HeadPrune envs over ONE model, as a ``gymnasium.vector.VectorEnv`` (autoreset ``NEXT_STEP``).

    :param num_envs: ``N``.
    :param victim: as for :class:`~headprune.envs.headprune_env.HeadPruneEnv`.
    :param render_mode: ``None``, ``"ansi"`` or ``"rgb_array"`` (``render()`` returns one per sub-env).
    :param max_episode_steps: the registered id's step limit (``gym.make_vec`` passes it).
    :param scoring: :data:`SCORING`.
    :param autoreset_mode: ``NEXT_STEP`` (default) or ``SAME_STEP`` (the episode's last observation and info in
        ``info["final_obs"]`` / ``info["final_info"]``, as Gymnasium's ``SyncVectorEnv``); ``DISABLED`` is refused
        (it needs a per-lane ``reset(options={"reset_mask": ...})``, which the lanes do not have).
    :param config: :class:`~headprune.envs.config.HeadPruneConfig` fields.

    What ``gym.make_vec(id, N, ...)`` passes here: Gymnasium's ``vector_entry_point`` contract gives a custom
    vector env only keyword arguments, so ``autoreset_mode=`` goes as one (not in ``vector_kwargs``). Gymnasium
    itself refuses ``wrappers=`` and ``vector_kwargs=`` in this mode; the options of its ``SyncVectorEnv`` /
    ``AsyncVectorEnv`` (``copy``, ``shared_memory``, ``context``, ...) are refused here by name
    (:data:`SYNC_ONLY_OPTIONS`): per-env wrappers and those options need one env per sub-env, i.e.
    ``vectorization_mode="sync"`` or ``"async"``; vector wrappers (``gymnasium.wrappers.vector``) wrap the
    returned env.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": HeadPruneEnv.metadata["render_modes"]}

    def __init__(self, num_envs: int = 1, victim: Any = "minilm-syntactic", *, render_mode: str | None = None,
                 max_episode_steps: int | None = None, scoring: str = "auto",
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP, **config: Any) -> None:
        self.autoreset_mode = _check_vector_options(autoreset_mode, config)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        template = make_registered_env(victim, render_mode=render_mode, **config)
        self.lanes = BatchedLanes(template, num_envs, max_episode_steps, scoring)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_observation_space = template.observation_space
        self.single_action_space = template.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._autoreset = np.zeros(num_envs, dtype=bool)

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset every sub-env; lane ``i`` gets ``seed + i`` (see the module docstring)."""
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(
                seed if isinstance(seed, (int, np.integer)) else None)
        observations, infos = [], {}
        for i, lane_seed in enumerate(self.lanes.seeds_for(seed)):
            obs, info = self.lanes.reset_lane(i, lane_seed, options)
            observations.append(obs)
            infos = self._add_info(infos, info, i)
        self._autoreset[:] = False
        return stack_obs(observations), infos

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every sub-env; one that ended at the previous step is reset instead (its action ignored)."""
        actions = np.asarray(actions).reshape(self.num_envs)
        n = self.num_envs
        observations: list[dict[str, np.ndarray] | None] = [None] * n
        rewards, terminated, truncated = np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        infos: dict[str, Any] = {}
        live = [i for i in range(n) if not self._autoreset[i]]
        for i in range(n):
            if self._autoreset[i]:
                observations[i], info = self.lanes.reset_lane(i)
                infos = self._add_info(infos, info, i)
        for i, (obs, reward, term, trunc, info) in zip(live, self.lanes.step_lanes(live, actions[live].tolist())):
            observations[i], rewards[i], terminated[i], truncated[i] = obs, reward, term, trunc
            if self.autoreset_mode == AutoresetMode.SAME_STEP and (term or trunc):
                infos = self._add_info(infos, {"final_obs": obs, "final_info": info}, i)
                observations[i], info = self.lanes.reset_lane(i)
            infos = self._add_info(infos, info, i)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._autoreset = terminated | truncated
        return stack_obs(observations), rewards, terminated, truncated, infos  # type: ignore[arg-type]

    def action_masks(self) -> np.ndarray:
        """``[N, n]`` bool valid actions (for MaskablePPO)."""
        return self.lanes.action_masks()

    def render(self) -> tuple[Any, ...] | None:
        """One render per sub-env (see :meth:`HeadPruneEnv.render`)."""
        if self.render_mode is None:
            return None
        return tuple(lane.render() for lane in self.lanes.lanes)


class SB3BatchedVecEnv(VecEnv):
    """:class:`BatchedLanes` as a Stable-Baselines3 ``VecEnv``: same-step reset (the final observation in
    ``info["terminal_observation"]``), ``info["episode"]`` ``{r, l, t}`` as SB3's ``Monitor`` writes it
    (so ``rollout/ep_rew_mean`` and ``success_rate`` are logged), ``env_method("action_masks")``.

    :param lanes: the lanes (build them with :meth:`from_env_id`).
    """

    def __init__(self, lanes: BatchedLanes) -> None:
        self.lanes = lanes
        template = lanes.template
        super().__init__(len(lanes), template.observation_space, template.action_space)
        self.render_mode = template.render_mode
        self._returns = np.zeros(len(lanes))
        self._lengths = np.zeros(len(lanes), dtype=int)
        self._start = time.perf_counter()
        self._actions: np.ndarray | None = None

    @classmethod
    def from_env_id(cls, env_id: str, num_envs: int, scoring: str = "auto", **kwargs: Any) -> SB3BatchedVecEnv:
        """``N`` lanes of a registered id (its kwargs, ``kwargs`` on top, and its step limit)."""
        spec = gym.spec(env_id)
        template = make_registered_env(**{**spec.kwargs, **kwargs})
        return cls(BatchedLanes(template, num_envs, step_limit(env_id, kwargs), scoring))

    def reset(self) -> VecEnvObs:
        seeds = [s if s is None else int(s) for s in self._seeds] if any(s is not None for s in self._seeds) \
            else [None] * self.num_envs
        obs = [self.lanes.reset_lane(i, seeds[i], self._options[i] or None)[0] for i in range(self.num_envs)]
        self._returns[:], self._lengths[:] = 0.0, 0
        self._reset_seeds()
        self._reset_options()
        return stack_obs(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async first"
        steps = self.lanes.step_lanes(range(self.num_envs), self._actions.tolist())
        observations, rewards = [], np.zeros(self.num_envs, dtype=np.float32)
        dones, infos = np.zeros(self.num_envs, dtype=bool), []
        for i, (obs, reward, term, trunc, info) in enumerate(steps):
            self._returns[i] += reward
            self._lengths[i] += 1
            rewards[i], dones[i] = reward, term or trunc
            info = dict(info, **{"TimeLimit.truncated": bool(trunc and not term)})
            if dones[i]:
                info["terminal_observation"] = obs
                info["episode"] = {"r": float(self._returns[i]), "l": int(self._lengths[i]),
                                   "t": round(time.perf_counter() - self._start, 6)}
                self._returns[i], self._lengths[i] = 0.0, 0
                obs, _ = self.lanes.reset_lane(i)
            observations.append(obs)
            infos.append(info)
        return stack_obs(observations), rewards, dones, infos

    def close(self) -> None:
        return None

    def _lane_list(self, indices: Any) -> list[HeadPruneEnv]:
        return [self.lanes.lanes[i] for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(lane, attr_name) for lane in self._lane_list(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        for lane in self._lane_list(indices):
            setattr(lane, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        return [getattr(lane, method_name)(*method_args, **method_kwargs) for lane in self._lane_list(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [lane.render() if lane.render_mode == "rgb_array" else None for lane in self.lanes.lanes]
