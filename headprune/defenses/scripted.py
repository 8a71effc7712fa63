"""Scripted pruning policies with the Stable-Baselines3 call shape, and the defenses that run a policy.

Every scripted policy is built from what a defender owns, ``(model, tokenizer, clean_data, seed, **options)``
(never poisoned data), and answers ``predict(obs, state=None, episode_start=None, deterministic=True,
action_masks=None) -> (action, state)`` like an SB3 model, so one episode loop
(:func:`run_policy_episode`) runs them and trained agents inside ``HeadPrune-v0``. A policy reads the
current mask from ``obs["mask"]`` (1 = active) and only ever returns an active head that ``action_masks``
(if given) allows; a batched observation (``mask`` of shape ``[n_envs, n]``) gets an array of actions.
Stopping is the environment's rule: the env terminates when validation accuracy falls below the floor and
``info["best_mask"]`` never includes the crossing step, so no policy needs to (or may) monitor accuracy
itself, except the ensemble, whose members are themselves masks that must respect the floor.

Rankings: every deterministic policy ranks heads by a score, prunes the lowest-scoring active head and
breaks ties by the lowest index ``l * H + h``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from headprune.data import LabelledTexts
from headprune.defenses.base import Defense, DefenseOutcome, PruneOutcome
from headprune.defenses.defense_options import DefenseOptions, option
from headprune.defenses.repaired_floor import RepairCandidate, deepest_repaired
from headprune.defenses.weight_edits import HeadReset, WeightEdit
from headprune.engine.finetuning import FineTuneConfig
from headprune.envs.headprune_env import HeadPruneEnv
from headprune.workbench import Workbench
from headprune.engine.gating import head_grid_shape

__all__ = ["GivenPolicyDefense", "PolicyDefense", "PolicyEpisodeDefense", "PolicyEpisodeOptions", "ScriptedPolicy",
           "ScriptedPolicyDefense", "ScriptedPolicyOptions", "UniformMixPolicy", "checkpoint_steps", "run_policy_episode"]


def _rows(data: LabelledTexts, n_rows: int | None, seed: int) -> LabelledTexts:
    """At most ``n_rows`` seeded rows of ``data`` (kept in their original order)."""
    if n_rows is None or n_rows >= len(data):
        return data
    idx = np.sort(np.random.default_rng(seed).permutation(len(data))[:n_rows])
    return data.subset(idx)


class ScriptedPolicy:
    """Base class: the SB3 ``predict`` shape over a per-policy :meth:`choose`.

    Args:
        model: the victim classifier (read only; policies that train work on a deep copy).
        tokenizer: its tokenizer.
        clean_data: the defender's clean labelled rows (never poisoned data).
        seed: fixes every random choice of the policy.
        max_length: truncation length (the victim's).
        batch_size: rows per forward of the policy's own scoring passes.
        n_rows: at most this many seeded clean rows are used for scoring (``None``: all).
    """

    name: ClassVar[str] = "base"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, clean_data: LabelledTexts, seed: int = 0, *,
                 max_length: int = 128, batch_size: int = 32, n_rows: int | None = 256) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.clean_data = clean_data
        self.seed = int(seed)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.rows = _rows(clean_data, n_rows, self.seed)
        self.shape: tuple[int, int] = head_grid_shape(model)
        self.n = self.shape[0] * self.shape[1]

    # the number of heads the method itself plans to prune (None: no plan of its own; the env's budget)
    planned_budget: int | None = None

    def reset(self) -> None:
        """Forget per-episode state (the random policies restart their generator)."""

    def config(self) -> dict[str, Any]:
        """The options that define this policy (for reports)."""
        return {"name": self.name, "seed": self.seed, "n_rows": len(self.rows), "max_length": self.max_length}

    # fixed per-head scores ``[n]`` (lowest pruned first) of policies that rank heads once; None: override choose
    _scores: np.ndarray | None = None

    def choose(self, mask: np.ndarray, valid: np.ndarray) -> int:
        """Index of the head to prune, given the flat int8 ``mask`` and the bool ``valid`` actions
        (default: the valid head with the lowest fixed score, ties to the lowest index)."""
        if self._scores is None:
            raise NotImplementedError(f"{type(self).__name__} sets no scores and overrides no choose()")
        return self._argmin(self._scores, valid)

    def predict(self, observation: Mapping[str, Any] | np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True, action_masks: Any = None) -> tuple[Any, Any]:
        """SB3's ``predict``: ``(action, state)``. ``deterministic`` is accepted and ignored (a seeded
        policy is deterministic either way); ``state`` is passed through."""
        mask = np.asarray(observation["mask"] if isinstance(observation, Mapping) else observation)
        if mask.ndim == 2:
            # the head actions come first (prune or reset); a mix operation's block actions follow them
            am = None if action_masks is None else \
                np.asarray(action_masks).reshape(mask.shape[0], -1)[:, :mask.shape[1]]
            actions = np.array([self._act(mask[i], None if am is None else am[i]) for i in range(mask.shape[0])],
                               dtype=np.int64)
            return actions, state
        return np.int64(self._act(mask, action_masks)), state

    def _act(self, mask: np.ndarray, action_masks: Any) -> int:
        flat = np.asarray(mask).reshape(-1).astype(np.int8)
        if flat.size != self.n:
            raise ValueError(f"observation mask has {flat.size} heads, the model has {self.n}")
        valid = flat == 1
        if action_masks is not None:
            valid &= np.asarray(action_masks, dtype=bool).reshape(-1)[:flat.size]  # the head actions come first
        if not valid.any():
            raise RuntimeError("no active head left to prune")
        action = int(self.choose(flat, valid))
        assert valid[action], "policy chose an invalid head"
        return action

    def _mask_tensor(self, flat: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(flat.astype(np.float32)).view(*self.shape)

    @staticmethod
    def _argmin(scores: np.ndarray, valid: np.ndarray) -> int:
        """Lowest score among valid heads, ties to the lowest index."""
        return int(np.argmin(np.where(valid, scores, np.inf)))


_POLICY_DETAILS = ("member_accuracies", "floor", "planned_budget", "estimates")
"""Policy attributes copied into a run's details when the policy has them (not None)."""


def run_policy_episode(env: HeadPruneEnv, policy: Any, seed: int, label: str, *, progress: bool = False,
                       states: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
                       ) -> tuple[torch.Tensor, list[dict[str, Any]], str, dict[str, Any]]:
    """One deterministic episode of ``policy`` in ``env`` from ``env.reset(seed=seed)`` until the env
    terminates (accuracy below the floor: ``"floor"``), truncates (budget: ``"truncated"``) or the policy's own
    plan (``planned_budget``) is done (``"plan done"``; ``"plan empty"`` when it plans nothing).

    :param states: if given, a list that receives ``env.state("current")`` (``(mask [n], reset [n], mix [B])``)
        after the reset and after every step, so ``states[t]`` is the state after ``t`` steps.
    :returns: the env's best mask ``[L, H]``, the trajectory, how the episode ended and the last ``info``.
    """
    obs, info = env.reset(seed=seed)
    if states is not None:
        states.append(env.state("current"))
    trajectory = [{"heads_pruned": 0, "accuracy": info["clean_accuracy"], "mask": obs["mask"].tolist()}]
    planned = getattr(policy, "planned_budget", None)
    end = "truncated"
    if planned is not None and planned == 0:
        end = "plan empty"
    else:
        from tqdm.auto import tqdm
        bar = tqdm(total=env.budget if planned is None else min(planned, env.budget), desc=f"prune ({label})",
                   disable=not progress, leave=False)
        while True:
            action, _ = policy.predict(obs, action_masks=env.action_masks(), deterministic=True)
            obs, _reward, terminated, truncated, info = env.step(action)
            if states is not None:
                states.append(env.state("current"))
            bar.update(1)
            trajectory.append({"heads_pruned": info["heads_pruned"], "accuracy": info["clean_accuracy"],
                               "mask": obs["mask"].tolist()})
            if terminated:
                end = "floor"
                break
            if truncated:
                break
            if planned is not None and info["heads_pruned"] >= planned:
                end = "plan done"
                break
        bar.close()
    mask = torch.from_numpy(info["best_mask"].astype(np.float32)).view(env.num_layers, env.num_heads)
    return mask, trajectory, end, info


@dataclass(frozen=True)
class PolicyEpisodeOptions(DefenseOptions):
    """What a policy defense keeps of its episode (the options of a trained agent or a given policy)."""

    state: Literal["best", "repaired"] = option(
        "best", "the state kept: 'best' (the env's best scored state, above its floor before any fine-tune) or "
                "'repaired' (the deepest checkpoint of the episode whose state, after a short clean fine-tune, "
                "holds the floor: Fine-mixing's rule for its p, applied along the policy's schedule; 'best' when "
                "none does)")
    checkpoints: int = option(9, "with state='repaired': the episode's states tried, evenly spaced in steps, the "
                                 "last step always one (9: as many as finemix's grid of p)", low=1)
    select_epochs: float = option(1.0, "with state='repaired': epochs of the short clean fine-tune that scores each "
                                       "checkpoint (finemix's select_epochs)", low=0.0)
    select_max_steps: int | None = option(None, "with state='repaired': cap on that fine-tune's steps (None: none)",
                                          low=1)

    @classmethod
    def _owner(cls) -> str:
        """Errors name the runner's kind of defense (``policy:<path>``, a given policy object)."""
        return "policy"


def checkpoint_steps(steps: int, count: int) -> list[int]:
    """The step counts of ``count`` checkpoints evenly spaced over an episode of ``steps`` steps, deepest first,
    the last step always included and step 0 (the unedited suspect) never: ``checkpoint_steps(78, 9)`` is
    ``[78, 69, 61, 52, 43, 35, 26, 17, 9]``."""
    return sorted({max(1, round(steps * k / count)) for k in range(1, count + 1)} if steps > 0 else set(),
                  reverse=True)


class PolicyDefense(Defense):
    """A defense whose pruning is one episode of a policy with SB3's ``predict`` in the env; subclasses
    give :meth:`build_policy` (from the env alone) and :meth:`policy_config`. What it keeps of the episode is
    :meth:`episode_options`' ``state``: the env's best scored state, or the deepest checkpoint that holds the floor
    after a short clean fine-tune (:func:`~headprune.defenses.repaired_floor.deepest_repaired`)."""

    needs_head_operation: ClassVar[bool] = False
    """Whether the policy acts on heads only (a scripted head policy), so an env whose operation is ``"mix"`` alone
    is refused; a trained agent or a given policy may mix only."""

    def runs_episode(self) -> bool:
        return True

    def episode_options(self) -> PolicyEpisodeOptions:
        """What this defense keeps of its episode: here the env's best state (a scripted head policy's options are
        its policy's keyword arguments, and the env's floor stops its episode); a trained agent or a given policy
        takes :class:`PolicyEpisodeOptions` as its options (:class:`PolicyEpisodeDefense`)."""
        return PolicyEpisodeOptions()

    def build_policy(self, env: HeadPruneEnv) -> Any:
        """The policy for ``env`` (built from its spaces and the defender's data only)."""
        raise NotImplementedError

    def policy_config(self, policy: Any) -> dict[str, Any]:
        """The options of the built ``policy`` (for reports)."""
        config = getattr(policy, "config", None)
        return dict(config()) if callable(config) else {"class": type(policy).__name__}

    def prune(self, bench: Workbench, *, progress: bool = False) -> PruneOutcome:
        """One episode of the policy in ``HeadPrune-v0`` over ``bench`` (a Gym view: the same split, statistics,
        scorer memo, floor and budget; no second workbench)."""
        env = HeadPruneEnv(bench)
        if self.needs_head_operation and not env.operations.acts_on_heads:
            raise ValueError(f"{self.name}: a head policy needs a head operation (prune or reset), got "
                             f"operation={env.config.operation!r}")
        policy = self.build_policy(env)
        opts = self.episode_options()
        states: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = [] if opts.state == "repaired" else None
        _, trajectory, end, info = run_policy_episode(env, policy, env.base_seed, self.name, progress=progress,
                                                      states=states)
        details = {"policy": self.policy_config(policy), "episode_end": end, "best_accuracy": info["best_accuracy"]}
        for attr in _POLICY_DETAILS:
            if getattr(policy, attr, None) is not None:
                details[attr] = getattr(policy, attr)
        best = (info["best_mask"], info.get("best_reset"), info.get("best_mix_levels"))
        if states is None:
            return _state_outcome(env, *best, trajectory, details)
        candidates = [RepairCandidate({"step": t}, *_state_edit(env, *states[t]))
                      for t in checkpoint_steps(len(states) - 1, opts.checkpoints)]
        config = FineTuneConfig(epochs=opts.select_epochs, lr=self.finetune_lr, max_length=bench.max_length,
                                seed=bench.base_seed, max_steps=opts.select_max_steps)
        kept, details["state_selection"] = deepest_repaired(bench, candidates, config,
                                                             progress=self.name if progress else False)
        details["kept_step"] = None if kept is None else candidates[kept].label["step"]
        return _state_outcome(env, *(best if kept is None else states[details["kept_step"]]), trajectory, details)


def _state_edit(env: HeadPruneEnv, mask: np.ndarray, reset: np.ndarray | None, mix: np.ndarray | None
                ) -> tuple[WeightEdit | None, torch.Tensor]:
    """``(edit, mask [L, H])`` of a state of ``env`` (flat ``mask`` / ``reset`` ``[L * H]``, ``mix`` levels
    ``[B]``): the reset heads and mixed blocks as one weight edit (None when the state has neither) and its
    head gates."""
    gates = torch.from_numpy(np.asarray(mask).astype(np.float32)).view(env.num_layers, env.num_heads)
    heads = torch.zeros(env.num_layers, env.num_heads, dtype=torch.bool) if reset is None else \
        torch.from_numpy(np.asarray(reset) != 0).view(env.num_layers, env.num_heads)
    if mix is not None and np.any(mix):  # mixed blocks (and any reset heads): the state's weights go into the copy
        from headprune.envs.state_export import StateEdit

        assert env.bench.mixer is not None
        return StateEdit(env.bench.mixer, heads, np.asarray(mix)), gates
    if bool(heads.any()):  # reset heads only: the same reference weights go into the copy
        return HeadReset(base=env.base_model, heads=heads), gates
    return None, gates


def _state_outcome(env: HeadPruneEnv, mask: np.ndarray, reset: np.ndarray | None, mix: np.ndarray | None,
                   trajectory: list[dict[str, Any]], details: dict[str, Any]) -> PruneOutcome:
    """The defense outcome of the kept state: its head gates ``[L, H]``, the trajectory, ``details`` and the
    state's weight edit (:func:`_state_edit`) when it has one."""
    edit, gates = _state_edit(env, mask, reset, mix)
    return (gates, trajectory, details) if edit is None else DefenseOutcome(gates, trajectory, details, edit)


@dataclass(frozen=True)
class ScriptedPolicyOptions(DefenseOptions):
    """The options every scripted policy takes (:class:`ScriptedPolicy`'s keyword arguments); a policy's own
    options class adds its keyword arguments (a test keeps the fields and the keyword arguments equal)."""

    batch_size: int = option(32, "rows per forward of the policy's own scoring passes", low=1)
    n_rows: int | None = option(256, "score heads on at most this many seeded clean training rows (None: all)",
                                low=0)


class ScriptedPolicyDefense(PolicyDefense):
    """A defense that runs one :class:`ScriptedPolicy` class (:attr:`policy_class`), built from the victim,
    its tokenizer, the env's training rows (the defender's non-validation clean rows) and the env's seed,
    with :meth:`policy_options` as keyword arguments."""

    policy_class: ClassVar[type[ScriptedPolicy]]
    options_class: ClassVar[type[DefenseOptions]] = ScriptedPolicyOptions
    needs_head_operation = True

    def policy_options(self, env: HeadPruneEnv) -> dict[str, Any]:
        """The policy's keyword arguments: every option (given or default)."""
        return self.option_values.to_dict()

    def build_policy(self, env: HeadPruneEnv) -> ScriptedPolicy:
        return self.policy_class(env.model, env.tokenizer, env.train_data, env.base_seed, max_length=env.max_length,
                                 **self.policy_options(env))

    def policy_config(self, policy: Any) -> dict[str, Any]:
        return dict(policy.config())


class PolicyEpisodeDefense(PolicyDefense):
    """A policy defense whose options are :class:`PolicyEpisodeOptions` (what it keeps of its episode): a trained
    agent (:class:`headprune.agents.AgentDefense`) or a given policy object (:class:`GivenPolicyDefense`)."""

    options_class: ClassVar[type[DefenseOptions]] = PolicyEpisodeOptions

    def episode_options(self) -> PolicyEpisodeOptions:
        return self.option_values  # type: ignore[return-value]


class GivenPolicyDefense(PolicyEpisodeDefense):
    """A defense around a ready policy object (anything with SB3's ``predict``, e.g.
    :func:`headprune.agents.load_policy`'s result); its ``name``, ``description`` and ``config()`` are
    used when it has them.

    :param policy: the policy object.
    :param options: :class:`PolicyEpisodeOptions` (what the defense keeps of the episode).
    """

    def __init__(self, policy: Any, **options: Any) -> None:
        super().__init__(**options)
        self.policy = policy
        self.name = str(getattr(policy, "name", type(policy).__name__))  # type: ignore[misc]
        self.description = str(getattr(policy, "description",  # type: ignore[misc]
                                       f"policy object {type(policy).__name__}"))

    def build_policy(self, env: HeadPruneEnv) -> Any:
        return self.policy

    def config(self) -> dict[str, Any]:
        return self.policy_config(self.policy)


class UniformMixPolicy:
    """The scripted baseline of the ``mix`` operation: each step raises the block with the lowest mixing level
    (ties to the lowest block index), so every block moves toward the public reference together, as Fine-mixing's
    one global ``p`` does, until the env's floor or budget ends the episode. It never prunes or resets a head.

    SB3's ``predict`` shape, single or batched: it reads ``obs["mix"]`` (``[B]`` or ``[n_envs, B]``, level / K) and
    needs ``action_masks`` (``[A]`` or ``[n_envs, A]``), whose last ``B`` entries are the mix actions
    (:mod:`headprune.envs.operations`). Run it as a defense with :class:`GivenPolicyDefense` in an env whose
    ``operation`` has a head operation and ``mix`` (e.g. ``"prune+mix"``).
    """

    name = "uniform-mix"
    description = "raise the least-mixed block one level a step (Fine-mixing's one p, in the env's mix steps)"

    def config(self) -> dict[str, Any]:
        """The policy's options (it has none but its name)."""
        return {"name": self.name}

    def predict(self, observation: Mapping[str, Any], state: Any = None, episode_start: Any = None,
                deterministic: bool = True, action_masks: Any = None) -> tuple[Any, Any]:
        """``(action, state)``: the mix action of the least-mixed valid block (an array for a batch)."""
        if not isinstance(observation, Mapping) or "mix" not in observation:
            raise ValueError(f"{self.name} needs an env with the mix operation (an observation with 'mix')")
        if action_masks is None:
            raise ValueError(f"{self.name} needs action_masks (the mix actions are their last B entries)")
        levels = np.asarray(observation["mix"], dtype=np.float64)
        rows = levels.reshape(-1, levels.shape[-1])  # [n_envs, B]
        masks = np.asarray(action_masks, dtype=bool).reshape(rows.shape[0], -1)  # [n_envs, A]
        valid = masks[:, -rows.shape[1]:]
        if not valid.any(axis=1).all():
            raise RuntimeError(f"{self.name}: no block left to mix")
        blocks = np.argmin(np.where(valid, rows, np.inf), axis=1)  # ties to the lowest block index
        actions = masks.shape[1] - rows.shape[1] + blocks
        return (actions.astype(np.int64) if levels.ndim == 2 else np.int64(actions[0])), state
