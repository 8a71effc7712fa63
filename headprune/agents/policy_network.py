"""A size-agnostic actor-critic for ``HeadPrune-v0``: one score per head from shared weights.

``HeadPrune-v0``'s action space is ``Discrete(L * H)``, so a standard SB3 policy (a flat MLP and a
``Linear(latent, L * H)`` action head) only fits one model. This policy scores every head with the
SAME small network applied to that head's own features, plus a global context, so its parameters do
not depend on ``L * H`` and one trained policy acts on a model with any number of layers and heads
(:func:`headprune.agents.evaluation.load_policy` rebuilds it for the target env and loads the weights).

Per head ``i = l * H + h`` (``n = L * H`` heads, batch ``B``; ``F`` = number of head statistics,
``d`` = ``embed_dim``)::

    x_i   = [head_stats_i (F), mask_i, (reset_i), l / (L - 1), h / (H - 1)]  # [B, n, F + 3 (+1)]
    e_i   = phi(x_i)                                                          # [B, n, d]  shared MLP
    pool  = [mean_i e_i, sum_i mask_i e_i / sum_i mask_i]                     # [B, 2d]    over heads
    ctx   = rho([summary, pool])                                              # [B, d]     global context
    t_i   = psi([e_i, ctx])                                                   # [B, n, d]  head in context
    logit_{k,i} = w_k . t_i + b_k                                             # [B, K * n] actor
    value   = v([ctx, mean_i t_i])                                            # [B, 1]     critic

``K`` is the number of head operations (``(action_space.n - M) // n``: 1 for ``operation="prune"`` or
``"reset"``, 2 for ``"both"``, whose action ``k * n + i`` is operation ``k`` on head ``i``; 0 for ``"mix"`` alone,
whose actions are the blocks: the heads then only feed the context); ``reset_i``
is in ``x_i`` only when the observation has a ``"reset"`` entry (an env with a reset operation).

With the ``mix`` operation (an observation with ``"mix"``, the ``M = 2 L + 1`` blocks' levels: the embeddings,
then each layer's attention and feed-forward, :mod:`headprune.envs.mixing`) the blocks are scored the same way,
after the heads, by networks shared over blocks::

    z_j   = phi_b([level_j, kind_j (3, one-hot), l_j / (L - 1)])              # [B, M, d]  (embeddings: l = 0)
    ctx   = rho([summary, pool, mean_j z_j])                                  # [B, d]
    u_j   = psi_b([z_j, ctx])                                                 # [B, M, d]
    logit_{K n + j} = w_b . u_j + b_b                                         # [B, K * n + M] actor

``F``, ``K``, the reset flag and the mix flag fix parameter shapes (``phi``'s input, ``score``'s output, the
block networks), so a policy loads only into an env with the same features and operations
(:func:`headprune.agents.evaluation.load_policy` checks and names them); ``L * H`` (and ``M``) never does.

Positions are normalised to ``[0, 1]`` (0 when a model has one layer or one head) and held in a
non-persistent buffer, so the state dict has the same keys and shapes for every ``(L, H)``.

In SB3 terms: :class:`HeadFeaturesExtractor` computes ``t`` and ``ctx`` and returns them flattened
(``[B, n * d + d]``); :class:`HeadScoringHead` (the ``mlp_extractor``) turns them into the actor
latent (the ``n`` logits) and the critic latent; the ``action_net`` is the identity. Two policy
classes share this: :class:`MaskableHeadScoringPolicy` (for sb3-contrib's ``MaskablePPO``, masks
applied by the algorithm) and :class:`HeadScoringPolicy` (plain SB3 ``PPO``, which learns validity
from the env's invalid-action penalty).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from headprune.envs.head_space import head_shape_of

__all__ = [
    "POLICIES",
    "HeadFeaturesExtractor",
    "HeadScoringHead",
    "HeadScoringPolicy",
    "MaskableHeadScoringPolicy",
    "block_descriptors",
    "head_positions",
    "policy_class",
]


def head_positions(num_layers: int, num_heads: int) -> torch.Tensor:
    """``[L * H, 2]`` float: ``(l / (L - 1), h / (H - 1))`` per head, row-major (0 for a single layer/head)."""
    if num_layers < 1 or num_heads < 1:
        raise ValueError(f"head_shape must be two positive integers, got ({num_layers}, {num_heads})")
    layer = torch.arange(num_layers, dtype=torch.float32) / max(num_layers - 1, 1)
    head = torch.arange(num_heads, dtype=torch.float32) / max(num_heads - 1, 1)
    return torch.stack(torch.meshgrid(layer, head, indexing="ij"), dim=-1).reshape(-1, 2)


def block_descriptors(num_layers: int) -> torch.Tensor:
    """``[2 L + 1, 4]`` float: each mixing block's kind (one-hot: embeddings, attention, feed-forward) and layer
    position ``l / (L - 1)`` (0 for the embeddings and for a single layer), in the blocks' action order."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers}")
    rows = [[1.0, 0.0, 0.0, 0.0]]
    for layer in range(num_layers):
        position = layer / max(num_layers - 1, 1)
        rows += [[0.0, 1.0, 0.0, position], [0.0, 0.0, 1.0, position]]
    return torch.tensor(rows)


def _mlp(sizes: Sequence[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers)


class HeadFeaturesExtractor(BaseFeaturesExtractor):
    """Per-head embeddings in global context, from ``HeadPrune-v0``'s Dict observation.

    Args:
        observation_space: the env's ``Dict`` space (``mask`` ``[n]``, ``head_stats`` ``[n, F]``,
            ``summary`` ``[S]``; ``reset`` ``[n]`` and ``mix`` ``[M]`` when the env has those operations).
        head_shape: ``(L, H)`` of the env's model (``L * H`` must equal ``n``); default: the grid the
            observation space's ``"mask"`` entry carries (:func:`~headprune.envs.head_space.head_shape_of`).
            Only sets the position buffer, never a parameter shape.
        embed_dim: ``d``, the width of every per-head and context vector.
        activation: the nonlinearity of the shared MLPs.

    ``forward(obs)`` returns ``[B, (n + M) * d + d]``: the ``n`` contextual head vectors ``t`` (flattened,
    head-major), the ``M`` block vectors ``u`` (``M = 0`` without ``mix``), then the context ``ctx``.
    """

    def __init__(self, observation_space: spaces.Dict, head_shape: Sequence[int] | None = None, embed_dim: int = 32,
                 activation: type[nn.Module] = nn.Tanh) -> None:
        for key in ("mask", "head_stats", "summary"):
            if key not in observation_space.spaces:
                raise ValueError(f"observation_space has no {key!r} entry: not a HeadPrune-v0 observation space")
        n, n_features = observation_space["head_stats"].shape
        self.with_reset = "reset" in observation_space.spaces
        num_layers, num_heads = head_shape_of(observation_space, head_shape)
        if num_layers * num_heads != n:
            raise ValueError(f"head_shape {(num_layers, num_heads)} has {num_layers * num_heads} heads, the observation {n}")
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        num_blocks = int(observation_space["mix"].shape[0]) if "mix" in observation_space.spaces else 0
        if num_blocks and num_blocks != 2 * num_layers + 1:
            raise ValueError(f"the observation has {num_blocks} mixing blocks; the head-scoring policy knows the "
                             f"layout of 2 L + 1 = {2 * num_layers + 1} (embeddings, then each layer's attention "
                             "and feed-forward): use MultiInputPolicy for this env")
        super().__init__(observation_space, features_dim=(n + num_blocks + 1) * embed_dim)
        self.num_blocks = num_blocks
        self.n = n
        self.embed_dim = int(embed_dim)
        self.head_shape = (num_layers, num_heads)
        summary_dim = int(observation_space["summary"].shape[0])
        d = self.embed_dim
        self.register_buffer("positions", head_positions(num_layers, num_heads), persistent=False)
        self.phi = _mlp([n_features + 3 + int(self.with_reset), d, d], activation)  # head features -> e_i
        self.rho = _mlp([summary_dim + (3 if num_blocks else 2) * d, d, d], activation)  # summary + pools -> ctx
        self.psi = _mlp([2 * d, d], activation)                      # [e_i, ctx] -> t_i
        if num_blocks:
            self.register_buffer("blocks", block_descriptors(num_layers), persistent=False)  # [M, 4]
            self.phi_block = _mlp([5, d, d], activation)             # [level, kind, position] -> z_j
            self.psi_block = _mlp([2 * d, d], activation)            # [z_j, ctx] -> u_j

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        stats = observations["head_stats"].float()                   # [B, n, F]
        mask = observations["mask"].float().reshape(stats.shape[0], self.n, 1)  # [B, n, 1]
        summary = observations["summary"].float()                    # [B, S]
        pos = self.positions.unsqueeze(0).expand(stats.shape[0], -1, -1)  # [B, n, 2]
        flags = [mask]
        if self.with_reset:
            flags.append(observations["reset"].float().reshape(stats.shape[0], self.n, 1))  # [B, n, 1]
        e = self.phi(torch.cat([stats, *flags, pos], dim=-1))         # [B, n, d]
        mean_all = e.mean(dim=1)                                      # [B, d]
        mean_active = (e * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [B, d]
        pools = [summary, mean_all, mean_active]
        if self.num_blocks:
            levels = observations["mix"].float().reshape(stats.shape[0], self.num_blocks, 1)  # [B, M, 1]
            blocks = self.blocks.unsqueeze(0).expand(stats.shape[0], -1, -1)                 # [B, M, 4]
            z = self.phi_block(torch.cat([levels, blocks], dim=-1))  # [B, M, d]
            pools.append(z.mean(dim=1))                               # [B, d]
        ctx = self.rho(torch.cat(pools, dim=-1))                      # [B, d]
        t = self.psi(torch.cat([e, ctx.unsqueeze(1).expand_as(e)], dim=-1))  # [B, n, d]
        out = [t.flatten(1)]
        if self.num_blocks:
            out.append(self.psi_block(torch.cat([z, ctx.unsqueeze(1).expand_as(z)], dim=-1)).flatten(1))  # [B, M * d]
        return torch.cat([*out, ctx], dim=-1)                         # [B, (n + M) * d + d]


class HeadScoringHead(nn.Module):
    """SB3's ``mlp_extractor`` for :class:`HeadFeaturesExtractor` features ``[B, (n + M) * d + d]``.

    ``forward_actor`` gives the logits ``[B, K * n + M]`` (``latent_dim_pi``; one shared ``Linear(d, K)`` scores
    every head, one logit per operation, operation-major as the env's actions, then one shared ``Linear(d, 1)``
    scores every mixing block when ``num_blocks = M > 0``); ``forward_critic`` gives ``[B, value_dim]`` from the
    context and the mean head vector (``latent_dim_vf = value_dim``).
    """

    def __init__(self, n: int, embed_dim: int, value_dim: int = 64, activation: type[nn.Module] = nn.Tanh,
                 num_ops: int = 1, num_blocks: int = 0) -> None:
        super().__init__()
        self.n, self.embed_dim, self.num_ops, self.num_blocks = int(n), int(embed_dim), int(num_ops), int(num_blocks)
        if self.num_ops + self.num_blocks == 0:
            raise ValueError("the policy needs head operations or mixing blocks to score")
        self.latent_dim_pi = self.n * self.num_ops + self.num_blocks
        self.latent_dim_vf = int(value_dim)
        if self.num_ops:  # operation "mix" alone: blocks only (the heads still feed the context)
            self.score = nn.Linear(embed_dim, self.num_ops)
        if self.num_blocks:
            self.block_score = nn.Linear(embed_dim, 1)
        self.value = _mlp([2 * embed_dim, value_dim], activation)

    def _split(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(t [B, n, d], u [B, M, d], ctx [B, d])`` of the flat features."""
        d, heads = self.embed_dim, self.n * self.embed_dim
        blocks = heads + self.num_blocks * d
        t = features[:, :heads].reshape(features.shape[0], self.n, d)
        u = features[:, heads:blocks].reshape(features.shape[0], self.num_blocks, d)
        return t, u, features[:, blocks:]

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        t, u, _ = self._split(features)
        logits = [self.score(t).transpose(1, 2).flatten(1)] if self.num_ops else []  # [B, n, K] -> [B, K * n]
        if self.num_blocks:
            logits.append(self.block_score(u).squeeze(-1))            # [B, M]
        return torch.cat(logits, dim=1)                               # [B, K * n + M]

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        t, _, ctx = self._split(features)
        return self.value(torch.cat([ctx, t.mean(dim=1)], dim=-1))    # [B, value_dim]

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)


class _HeadScoring:
    """The parts both policy classes share (a mixin placed before the SB3 base class)."""

    head_shape: tuple[int, int]
    embed_dim: int
    value_dim: int

    def _setup_head_scoring(self, observation_space: spaces.Dict, head_shape: Sequence[int] | None, embed_dim: int,
                            value_dim: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.head_shape = head_shape_of(observation_space, head_shape)
        self.embed_dim, self.value_dim = int(embed_dim), int(value_dim)
        kwargs.setdefault("features_extractor_class", HeadFeaturesExtractor)
        fe_kwargs = dict(kwargs.get("features_extractor_kwargs") or {})
        fe_kwargs.update(head_shape=self.head_shape, embed_dim=self.embed_dim)
        kwargs["features_extractor_kwargs"] = fe_kwargs
        kwargs.setdefault("share_features_extractor", True)
        return kwargs

    def _build_mlp_extractor(self) -> None:
        n = self.head_shape[0] * self.head_shape[1]
        spaces_ = self.observation_space.spaces  # type: ignore[attr-defined]
        num_blocks = int(spaces_["mix"].shape[0]) if "mix" in spaces_ else 0
        head_actions = int(self.action_space.n) - num_blocks  # type: ignore[attr-defined]
        if head_actions < 0 or head_actions % n or head_actions + num_blocks == 0:
            raise ValueError(f"the action space has {head_actions} head actions besides {num_blocks} mixing blocks, "
                             f"not a multiple of the {n} heads (0 only with blocks: operation 'mix')")
        activation = self.activation_fn  # type: ignore[attr-defined]
        self.mlp_extractor = HeadScoringHead(n, self.embed_dim, self.value_dim, activation,
                                             num_ops=head_actions // n, num_blocks=num_blocks)

    def _build(self, lr_schedule: Any) -> None:
        """SB3's build, then the action head is the identity (the logits come from the shared scorer).

        SB3 creates ``action_net = Linear(latent_dim_pi, n)``, which would tie the policy to ``n``; it
        is replaced before the optimizer is (re)created, and the scorer gets the small output gain
        (0.01) SB3 gives ``action_net`` so the initial policy is near uniform.
        """
        super()._build(lr_schedule)  # type: ignore[misc]
        self.action_net = nn.Identity()
        if self.ortho_init:  # type: ignore[attr-defined]
            head = self.mlp_extractor  # type: ignore[attr-defined]
            for scorer in ("score", "block_score"):
                if hasattr(head, scorer):
                    getattr(head, scorer).apply(lambda m: self.init_weights(m, gain=0.01))  # type: ignore[attr-defined]
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1),  # type: ignore[attr-defined]
                                              **self.optimizer_kwargs)  # type: ignore[attr-defined]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(head_shape=self.head_shape, embed_dim=self.embed_dim, value_dim=self.value_dim)
        return data


class MaskableHeadScoringPolicy(_HeadScoring, MaskableActorCriticPolicy):
    """The size-agnostic policy for sb3-contrib's ``MaskablePPO`` (see the module docstring).

    Args:
        observation_space, action_space, lr_schedule: as SB3 passes them.
        head_shape: ``(L, H)`` of the env's model; default: read from the observation space (its
            ``"mask"`` is a :class:`~headprune.envs.head_space.HeadFlags`), so a zoo YAML need not name it;
            given, it must agree with the space's grid.
        embed_dim: per-head and context width ``d``.
        value_dim: width of the critic latent.
        kwargs: the other ``MaskableActorCriticPolicy`` arguments (``activation_fn``, ``ortho_init``,
            ``optimizer_kwargs``...; ``net_arch`` is unused).
    """

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, lr_schedule: Any, *,
                 head_shape: Sequence[int] | None = None, embed_dim: int = 32, value_dim: int = 64,
                 **kwargs: Any) -> None:
        kwargs = self._setup_head_scoring(observation_space, head_shape, embed_dim, value_dim, kwargs)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class HeadScoringPolicy(_HeadScoring, ActorCriticPolicy):
    """The size-agnostic policy for plain SB3 ``PPO`` (no action masking during training: invalid
    actions are no-ops that cost the env's ``c_invalid``). Arguments as :class:`MaskableHeadScoringPolicy`."""

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, lr_schedule: Any, *,
                 head_shape: Sequence[int] | None = None, embed_dim: int = 32, value_dim: int = 64,
                 **kwargs: Any) -> None:
        kwargs = self._setup_head_scoring(observation_space, head_shape, embed_dim, value_dim, kwargs)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False,
                action_masks: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        """SB3's ``predict``; ``action_masks`` is accepted (for a shared caller such as ``defend``) and
        ignored: a plain-PPO policy acts as it was trained, unmasked."""
        return super().predict(observation, state, episode_start, deterministic)


POLICIES: dict[str, dict[str, type]] = {
    "HeadScoringPolicy": {"maskable_ppo": MaskableHeadScoringPolicy, "ppo": HeadScoringPolicy},
}
"""Policy names usable in the hyperparameter YAML, per algorithm."""


def policy_class(name: str, algo: str) -> type | str:
    """The policy class called ``name`` for ``algo``; SB3's own names (e.g. ``MultiInputPolicy``) pass through."""
    if name in POLICIES:
        try:
            return POLICIES[name][algo]
        except KeyError:
            known = sorted(POLICIES[name])
            raise ValueError(f"policy {name!r} has no variant for algo {algo!r}; known: {known}") from None
    return name
