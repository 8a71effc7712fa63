"""``HeadPrune-v0``: prune attention heads of a backdoored classifier, one per step.

See :class:`HeadPruneEnv` for the spaces, the reward, termination and truncation. The env is a Gymnasium view
over a :class:`~headprune.workbench.Workbench` (the model, the defender's data split, head statistics, scorer,
floor and budget): it adds the spaces, the reward terms and the episode state. Evaluation-only
extras (LFR in ``info``) and the terminal fine-tune are wrappers: :mod:`headprune.envs.wrappers`.
"""

# over 400 lines: the env's class docstring documents every space, term and info key; the code is ~250 lines
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from headprune.envs.config import HeadPruneConfig, episode_step_limit
from headprune.envs.head_space import HeadFlags
from headprune.envs.incremental import MaskScore
from headprune.envs.operations import HeadOperations
from headprune.envs.proxies import DEFAULT_PROXY, NO_PROXY
from headprune.envs.registration import ENV_ID
from headprune.envs.rendering import RENDER_MODES, FrameState, mask_frame
from headprune.envs.reset_options import check_render_mode, episode_success, start_mask_from_options
from headprune.envs.reward import RewardWeights, potential, step_reward
from headprune.victims import DEFAULT_VICTIM, Victim
from headprune.workbench import Workbench

__all__ = ["SUMMARY_FIELDS", "HeadPruneEnv"]

SUMMARY_FIELDS: tuple[str, ...] = (
    "clean_accuracy",
    "accuracy_drop",
    "proxy",
    "proxy_change",
    "fraction_pruned",
    "budget_left",
)
"""The entries of ``observation["summary"]``, in order (with a reset operation, ``"fraction_reset"`` follows)."""

class HeadPruneEnv(gym.Env[dict[str, np.ndarray], np.int64]):
    """Remove attention heads of a backdoored text classifier, one head per step, without the trigger.

    The agent sees the head mask, per-head statistics of the model on the defender's clean data and a
    summary of where the episode stands; each action prunes one head (gates it to zero through
    :class:`~headprune.engine.gating.HeadGate`). The reward trades clean accuracy, measured on held-out clean
    validation rows, against a trigger-agnostic backdoor *proxy* computed from the model and clean data
    only (:mod:`headprune.envs.proxies`). Poisoned data and LFR never enter the observation or the reward.

    **Spaces** (``n = L * H`` heads, row-major: action/index ``l * H + h`` is head ``h`` of layer ``l``)

    * ``action_space``: ``Discrete(n)``, prune head ``a``.
    * ``observation_space``: ``Dict`` with

      - ``"mask"``: ``MultiBinary(n)`` int8, 1 = active, 0 = pruned, head ``(l, h)`` at ``l * H + h``; the
        space is a :class:`~headprune.envs.head_space.HeadFlags`, which also carries ``head_shape``
        ``(L, H)`` (a policy built from the spaces alone reads the grid there);
      - ``"head_stats"``: ``Box(-sqrt(n), sqrt(n), (n, F), float32)``: the
        :class:`~headprune.engine.head_stats.HeadStats` of the unpruned model on the defender's statistics
        rows, z-scored per feature over the ``n`` heads (:meth:`HeadStats.normalised`; a z-score over
        ``n`` values lies within ``sqrt(n - 1)``), columns :attr:`feature_names` (``config.feature_names``).
        Constant over episodes; computed once per victim, data and configuration and cached on disk;
      - ``"summary"``: ``Box(6,)`` float32, :data:`SUMMARY_FIELDS`: clean accuracy ``acc_t``, its drop
        from the start ``acc_0 - acc_t``, the proxy ``p_t``, its change from the start ``p_t - p_0``
        (both clipped to the proxy's documented ``value_range``), the fraction of heads pruned, and the
        fraction of the budget left.

    **Reward** (:mod:`headprune.envs.reward`): named terms; with the potential
    ``Phi(s) = w_acc * acc(s) - w_proxy * p(s)``::

        r_t = w_acc * (acc_t - acc_{t-1}) - w_proxy * (p_t - p_{t-1})
              - c_invalid * [a_t was already pruned] - c_floor * [acc_t < floor]

    so the return telescopes to ``Phi(s_T) - Phi(s_0)`` minus penalties. ``acc`` is ``correct / N``
    on the ``val_size`` held-out clean rows and ``p`` the proxy on the statistics rows (never the
    validation rows), so every quantity is count-based or the proxy's own float. The reward returned
    equals ``info["reward_terms"]["total"]``.

    **Amortised scoring** (``config.score_every = k``, default 1): the state is scored (``acc`` and ``p``) on every
    ``k``-th step and on the step that ends the episode by the budget or the step limit. A step in between earns
    its penalties only (its accuracy and proxy terms are 0: the potential is the last scored state's), the
    observation's summary and ``info`` hold the last scored values, and the floor and ``best_*`` are checked at
    scored steps only. The return is unchanged, ``Phi(s_T) - Phi(s_0)`` minus the penalties, paid at the scored
    steps: a proxy that costs seconds a call (``reference_disagreement``) then costs one call per ``k`` steps.
    ``info["scored"]`` says whether a step scored.

    **Head operations** (``config.operation``; layout and validity in :mod:`headprune.envs.operations`):
    ``"prune"`` (the default: everything here), ``"reset"`` (copy the reference's weights into head
    ``a``) or ``"both"`` (``Discrete(2n)``). With a reset operation the observation gains ``"reset"``
    (``MultiBinary(n)``, a ``HeadFlags`` too) and ``summary`` ends with ``fraction_reset``; the budget counts heads pruned or
    reset; reset weights are swapped in per scoring call (exact; the victim is unchanged between calls).
    ``"mix"`` (alone or joined by ``+``: ``"prune+mix"``) adds ``B`` actions, one per block of
    :mod:`headprune.envs.mixing` (embeddings, each layer's attention and feed-forward), each raising that block's
    Fine-mixing probability toward the reference by ``1 / mix_levels``; the observation gains ``"mix"``
    (``Box(0, 1, (B,))``, level / ``mix_levels``), ``summary`` ends with ``fraction_mixed``, the budget counts
    mix steps too, info gains ``mix_levels``, ``best_mix_levels`` (int8 ``[B]``) and ``mix_steps``, and
    :meth:`state_model` returns a state as a model.

    **Dynamics.** Pruning an active head gates it off. Pruning an already pruned head is a *no-op*:
    the state does not change, the reward is ``-c_invalid``, and it counts as a step (so unmasked
    agents and ``check_env`` work; masked agents use :meth:`action_masks` or ``info["action_mask"]``).

    * ``terminated`` when ``acc_t < floor`` (the floor is ``accuracy_floor``, or
      ``acc_0 - max_accuracy_drop``);
    * ``truncated`` when ``budget`` heads are pruned or ``max_steps`` steps were taken.

    ``info["best_mask"]`` is the visited mask with the highest ``Phi`` among those at or above the
    floor (ties: the later one), so it never includes the step that crossed the floor;
    ``info["best_reset"]`` (int8 ``[n]``, 1 = reset) is that state's reset set (all 0 for ``"prune"``). The dynamics
    are deterministic; ``reset(seed=...)`` seeds :attr:`np_random` (Gymnasium's convention), which
    the env itself does not use. ``reset`` accepts no options (``options`` is ignored).

    **Info** (reset and step): ``clean_accuracy``, ``accuracy_drop``, ``proxy``, ``proxy_change``,
    ``heads_pruned``, ``steps``, ``accuracy_floor``, ``action_mask`` (bool ``[n]``), ``best_mask``
    (int8 ``[n]``), ``best_accuracy``, ``best_proxy``, ``best_heads_pruned``, ``heads_reset``, ``best_reset``,
    ``best_heads_reset``; on steps also
    ``invalid_action``, ``scored`` and ``reward_terms``. LFR (``lfr``, ``best_lfr``) and the terminal fine-tune
    (``finetune``) come from the wrappers in :mod:`headprune.envs.wrappers`.

    :param victim: a :class:`~headprune.workbench.Workbench` (the env is then a view over it: no config may
        be given), or a :class:`~headprune.victims.Victim`, a preset name (``"tiny"``, ``"minilm-syntactic"``,
        ...; built on first use and cached) or a victim folder, for which the env builds its workbench. The
        workbench's attributes (``model``, ``val_data``, ``train_data``, ``scorer``, ``budget``, ...) read
        through the env.
    :param config: a :class:`~headprune.envs.config.HeadPruneConfig` (or a mapping of its fields):
        the defender's data, its split, the floor, the budget, the proxy and the reward weights.
    :param render_mode: ``None``, ``"ansi"`` (text), ``"rgb_array"`` (:mod:`headprune.envs.rendering`) or
        ``"human"`` (the ``"ansi"`` text printed after every reset and step); any other value raises ValueError here.
    :param overrides: config fields on top of ``config`` (what ``gym.make`` keyword arguments become).
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 4}

    def __init__(
        self,
        victim: Workbench | Victim | str | os.PathLike[str] = DEFAULT_VICTIM,
        config: HeadPruneConfig | Mapping[str, Any] | None = None,
        *,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(victim, Workbench):
            if config is not None or overrides:
                raise ValueError("HeadPruneEnv(workbench) takes its config from the workbench; give no config")
            self.bench = victim
        else:
            built = HeadPruneConfig.from_kwargs(config, **overrides)  # built once, checked before the workbench
            if built.unlabelled_data:
                raise ValueError("unlabelled_data: HeadPrune-v0 does not read unlabelled text (only the distillation "
                                 "defenses do: distill, purify); give none")
            self.bench = Workbench(victim, built)
        if self.bench.proxy is None:
            raise ValueError(f"HeadPrune-v0 rewards and observes a backdoor proxy: the workbench was built with "
                             f"proxy={NO_PROXY!r}; give a proxy name (default {DEFAULT_PROXY!r})")
        self.config = cfg = self.bench.config
        super().__init__()
        self.render_mode = check_render_mode(render_mode)
        self._last_action: tuple[int, bool] | None = None  # (action, invalid), for rgb_array frames
        self.weights = RewardWeights.coerce(cfg.reward_weights)
        mixer = self.bench.mixer
        self.operations = HeadOperations(cfg.operation, self.num_layers * self.num_heads,
                                         num_blocks=0 if mixer is None else mixer.num_blocks,
                                         mix_levels=cfg.mix_levels)
        self.feature_names: tuple[str, ...] = cfg.feature_names
        self._features = self.head_stats.normalised().as_features(self.feature_names).numpy().astype(np.float32)
        self._full = np.ones(self.num_layers * self.num_heads, dtype=np.int8)
        limit = episode_step_limit(self.budget, cfg.max_steps)
        assert limit is not None  # the workbench resolved the budget
        self.max_steps = limit
        if self.max_steps < self.budget:
            raise ValueError(f"max_steps ({self.max_steps}) must be >= budget ({self.budget})")
        self._setup_spaces()
        self._start_episode()
        self._done = True  # step() needs a reset() first

    def __getattr__(self, name: str) -> Any:
        """The workbench's attributes (``model``, ``val_data``, ``scorer``, ``budget``, ...) read through the view."""
        if name.startswith("__") or name == "bench":
            raise AttributeError(name)
        return getattr(self.bench, name)

    # ------------------------------------------------------------------------------ construction
    def _setup_spaces(self) -> None:
        """``action_space`` and ``observation_space`` (see the class docstring)."""
        n = self._full.size
        lo, hi = (float(v) for v in self.proxy.value_range)
        bound = math.sqrt(n)
        ops = self.operations
        extra = [0.0] * (int(ops.resets) + int(ops.mixes))  # fraction_reset, fraction_mixed in [0, 1]
        self.summary_fields = (SUMMARY_FIELDS + (("fraction_reset",) if ops.resets else ())
                               + (("fraction_mixed",) if ops.mixes else ()))
        self.action_space = spaces.Discrete(self.operations.num_actions)
        entries: dict[str, spaces.Space[Any]] = {
            "mask": HeadFlags(self.head_shape),
            "head_stats": spaces.Box(-bound, bound, shape=(n, len(self.feature_names)), dtype=np.float32),
            "summary": spaces.Box(
                low=np.array([0.0, -1.0, lo, lo - hi, 0.0, 0.0, *extra], dtype=np.float32),
                high=np.array([1.0, 1.0, hi, hi - lo, 1.0, 1.0, *(1.0 for _ in extra)], dtype=np.float32),
                dtype=np.float32,
            ),
        }
        if self.operations.resets:
            entries["reset"] = HeadFlags(self.head_shape)
        if self.operations.mixes:
            entries["mix"] = spaces.Box(0.0, 1.0, shape=(self.operations.num_blocks,), dtype=np.float32)
        self.observation_space = spaces.Dict(entries)

    def _start_episode(self) -> None:
        """The unpruned state."""
        self._mask = self._full.copy()
        self._reset = np.zeros_like(self._full)  # [n] int8, 1 = reset to the reference
        self._mix = np.zeros(self.operations.num_blocks, dtype=np.int8)  # [B] mixing levels, 0..mix_levels
        self._score = self.start_score
        self._steps = 0
        self._pruned = 0
        self._best = self._candidate()
        self._done = False
        self._return = 0.0  # the episode's undiscounted return, for info["is_success"]

    # ------------------------------------------------------------------------------ helpers
    def score_state(self, mask: np.ndarray, reset: np.ndarray | None = None, mix: np.ndarray | None = None
                    ) -> MaskScore:
        """:class:`MaskScore` of a flat int8 state (``mask``, optionally ``reset`` and the mixing levels ``mix``
        ``[B]``), memoised."""
        return self.scorer(self.mask_tensor(mask), None if reset is None else self.reset_tensor(reset),
                           None if mix is None or not mix.any() else mix)

    @property
    def mix_steps(self) -> int:
        """Mix steps taken in the current state (the sum of the blocks' levels)."""
        return int(self._mix.sum())

    def state(self, which: str = "current") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of ``(mask [n], reset [n], mix levels [B])`` (int8) of the ``"current"`` state or the episode's
        ``"best"`` one (``info["best_*"]``; ``B = 0`` without the ``mix`` operation)."""
        if which not in ("best", "current"):
            raise ValueError(f"which must be 'best' or 'current', got {which!r}")
        _, mask, _, _, reset, mix = self._best if which == "best" else self._candidate()
        return mask.copy(), reset.copy(), mix.copy()

    def state_model(self, which: str = "best") -> torch.nn.Module:
        """The model of an episode's state (:meth:`state`): a deep copy of the suspect with the state's reset heads
        and mixed blocks written into its weights and its pruned heads folded to zero
        (:func:`headprune.envs.state_export.state_model`); ``which``: ``"best"`` (the state a defense keeps) or
        ``"current"``."""
        from headprune.envs.state_export import state_model

        return state_model(self.bench, *self.state(which))

    def _schedule(self, steps: int, changed: int) -> tuple[bool, bool]:
        """``(ends, scored)`` of the step that brings the episode to ``steps`` steps and ``changed`` heads pruned or
        reset plus mix steps: whether the budget or the step limit ends the episode there, and whether the step scores
        its state (it ends the episode, or its number is divisible by ``config.score_every``)."""
        ends = changed >= self.budget or steps >= self.max_steps
        return ends, ends or steps % self.config.score_every == 0

    def scores_next_step(self) -> bool:
        """Whether the next step scores its state (amortised scoring, ``config.score_every``), assuming a valid
        action: a step number divisible by ``score_every``, or the step that reaches the budget or the step limit."""
        return self._schedule(self._steps + 1, self._pruned + self.heads_reset + self.mix_steps + 1)[1]

    @property
    def heads_reset(self) -> int:
        """Heads reset in the current state."""
        return int(self._reset.sum())

    def _candidate(self) -> tuple[float, np.ndarray, MaskScore, int, np.ndarray, np.ndarray]:
        """``(Phi, mask, score, heads pruned, reset, mix levels)`` of the current state."""
        score = self._score
        return (potential(score.accuracy, score.proxy, self.weights), self._mask.copy(), score, self._pruned,
                self._reset.copy(), self._mix.copy())

    def _observation(self) -> dict[str, np.ndarray]:
        n = self._mask.size
        lo, hi = self.observation_space["summary"].low, self.observation_space["summary"].high
        acc, p = self._score.accuracy, self._score.proxy
        summary = np.array([
            acc,
            self.start_score.accuracy - acc,
            p,
            p - self.start_score.proxy,
            self._pruned / n,
            (self.budget - self._pruned - self.heads_reset - self.mix_steps) / self.budget,
            *([self.heads_reset / n] if self.operations.resets else []),
            *([self.mix_steps / max(1, self._mix.size * self.config.mix_levels)] if self.operations.mixes else []),
        ], dtype=np.float32)
        obs = {"mask": self._mask.copy(), "head_stats": self._features.copy(), "summary": np.clip(summary, lo, hi)}
        if self.operations.resets:
            obs["reset"] = self._reset.copy()
        if self.operations.mixes:
            obs["mix"] = (self._mix / self.config.mix_levels).astype(np.float32)
        return obs

    def _info(self) -> dict[str, Any]:
        _, best_mask, best_score, best_pruned, best_reset, best_mix = self._best
        info: dict[str, Any] = {
            "clean_accuracy": self._score.accuracy,
            "accuracy_drop": self.start_score.accuracy - self._score.accuracy,
            "proxy": self._score.proxy,
            "proxy_change": self._score.proxy - self.start_score.proxy,
            "heads_pruned": self._pruned,
            "steps": self._steps,
            "accuracy_floor": self.accuracy_floor,
            "action_mask": self.action_masks(),
            "best_mask": best_mask.copy(),
            "best_accuracy": best_score.accuracy,
            "best_proxy": best_score.proxy,
            "best_heads_pruned": best_pruned,
            "heads_reset": self.heads_reset,
            "best_reset": best_reset.copy(),
            "best_heads_reset": int(best_reset.sum()),
        }
        if self.operations.mixes:
            info.update(mix_levels=self._mix.copy(), best_mix_levels=best_mix.copy(), mix_steps=self.mix_steps)
        return info

    # ------------------------------------------------------------------------------ Gymnasium API
    def action_masks(self) -> np.ndarray:
        """``[action_space.n]`` bool, True for the valid actions (for MaskablePPO): on heads still active
        and not reset (for ``"prune"``: ``[n]``, True where the head is still active)."""
        return self.operations.action_mask(self._mask, self._reset, self._mix)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode unpruned or from ``options["mask"]`` (keys: :mod:`headprune.envs.reset_options`).

        ``seed`` seeds :attr:`np_random` only (the dynamics are deterministic); the data split, the
        statistics and the proxy are fixed at construction by ``HeadPruneConfig.seed``."""
        start = start_mask_from_options(options, self.head_shape, self.budget)
        super().reset(seed=seed)
        self._start_episode()
        self._last_action = None
        if start is not None:
            self._mask = start
            self._pruned = int(start.size - start.sum())
            self._score = self.score_state(self._mask)
            self._best = self._candidate()
        if self.render_mode == "human":
            self.render()
        return self._observation(), self._info()

    def step(self, action: int | np.integer | np.ndarray
             ) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        """Prune or reset a head, or mix a block (see the class docstring for the reward and the episode's end)."""
        if self._done:
            raise RuntimeError("the episode has ended (or never started): call reset() before step()")
        a = int(np.asarray(action).item()) if np.asarray(action).dtype.kind in "iu" and np.size(action) == 1 else -1
        if not self.action_space.contains(a):
            raise ValueError(f"action must be an integer in [0, {self.action_space.n}), got {action!r}")
        op, index = self.operations.decode(a)
        prev = self._score
        invalid = not self.operations.valid(op, index, self._mask, self._reset, self._mix)
        if not invalid and op == "prune":
            self._mask[index] = 0
            self._pruned += 1
        elif not invalid and op == "reset":
            self._reset[index] = 1
        elif not invalid:
            self._mix[index] += 1
        self._steps += 1
        at_limit, scored = self._schedule(self._steps, self._pruned + self.heads_reset + self.mix_steps)
        if scored:  # else the score (so the potential) stays the last scored state's: the step earns its penalties
            self._score = self.score_state(self._mask, self._reset if self.operations.resets else None,
                                           self._mix if self.operations.mixes else None)
        crossed = scored and self._score.accuracy < self.accuracy_floor
        terms = step_reward(prev.accuracy, prev.proxy, self._score.accuracy, self._score.proxy,
                            invalid=bool(invalid), crossed_floor=crossed, weights=self.weights)
        if scored and not crossed:
            candidate = self._candidate()
            if candidate[0] >= self._best[0]:
                self._best = candidate
        terminated = crossed
        truncated = not terminated and at_limit
        self._done = terminated or truncated
        self._last_action = (a, bool(invalid))
        info = self._info()
        info["invalid_action"] = bool(invalid)
        info["scored"] = scored
        info["reward_terms"] = terms.to_dict()
        self._return += float(terms.total)
        if self._done:
            info["is_success"] = episode_success(self._return)
        if self.render_mode == "human":
            self.render()
        return self._observation(), float(terms.total), terminated, truncated, info

    def render(self) -> str | np.ndarray | None:
        """``"ansi"``: a layer x head grid (``#`` active, ``.`` pruned, ``R`` reset) and a status line;
        ``"rgb_array"``: a ``(16 L + 64, 16 H + 32, 3)`` uint8 frame, ``(16 L + 80, 16 H + 64, 3)`` with the per-block
        mixing state of ``mix`` (:func:`headprune.envs.rendering.mask_frame`);
        ``"human"``: the ``"ansi"`` text printed to stdout (returns None); ``None``: nothing, with a warning."""
        if self.render_mode == "rgb_array":
            return mask_frame(FrameState.of_env(self))
        if self.render_mode == "human":
            print(self._ansi(), end="", flush=True)
            return None
        if self.render_mode != "ansi":
            gym.logger.warn(f"{ENV_ID} renders only render_mode='ansi' or 'rgb_array' (this env has "
                            f"{self.render_mode!r})")
            return None
        return self._ansi()

    def _ansi(self) -> str:
        """The ``"ansi"`` text: a status line and the layer x head grid."""
        grid = (self._mask - 2 * self._reset).reshape(self.num_layers, self.num_heads)  # 1 active, 0 pruned, -1 reset
        width = max(2, len(str(self.num_heads - 1)) + 1)
        lines = [
            f"{ENV_ID} {self.victim.name}  step {self._steps}  pruned {self._pruned}/{self.budget}  "
            f"acc {self._score.accuracy:.3f} (floor {self.accuracy_floor:.3f})  proxy {self._score.proxy:.4f}",
            "     " + "".join(f"h{h}".rjust(width + 1) for h in range(self.num_heads)),
        ]
        for layer in range(self.num_layers):
            cells = "".join({1: "#", 0: ".", -1: "R"}[int(v)].rjust(width + 1) for v in grid[layer])
            lines.append(f"L{layer:<3} {cells}")
        if self.operations.mixes:  # each block's level, of mix_levels
            assert self.bench.mixer is not None
            short = {"embeddings": "emb", "attention": "att", "feed_forward": "ffn"}
            levels = "  ".join(f"{short[b.kind]}{'' if b.layer is None else b.layer} {int(k)}"
                               for b, k in zip(self.bench.mixer.blocks, self._mix))
            lines.append(f"mix (of {self.config.mix_levels}): {levels}")
        return "\n".join(lines) + "\n"
