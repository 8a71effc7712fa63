"""The ``mix`` operation of ``HeadPrune-v0``: per-block Fine-mixing toward the public pre-trained base.

The encoder's parameters shared with the base (:func:`~headprune.engine.reference.shared_parameters`: the task head
excluded) are split into *blocks* (:func:`mix_blocks`), in forward order:

* ``"embeddings"``: every shared parameter outside the encoder layers (BERT: the embedding tables, their LayerNorm
  and the pooler). One block, not one per table, because a change there moves every layer's input (the
  incremental forward recomputes everything, as for a new model), and because Fine-mixing mixes the tables with
  the rest: an insertion trigger's token lives in the word embeddings, so leaving them out would leave the
  agent no way to reach what Fine-mixing's ``embeddings=True`` does;
* ``"layer{l}.attention"``: the adapter's attention module of layer ``l`` and its output projection
  (:func:`~headprune.defenses.weight_edits.attention_parameter_names`, the unit ``reset-attention`` resets);
* ``"layer{l}.feed_forward"``: the rest of layer ``l`` (the module holding the attention; BERT: intermediate,
  output dense and LayerNorm).

A mixing state is ``levels`` ``[B]`` int (``0..K``, ``K = mix_levels``): block ``b`` has each of its values back to
the base's with probability ``levels[b] / K``, by :func:`~headprune.defenses.weight_edits.fine_mix` restricted to the
block and seeded by :meth:`BlockMixer.block_seed` (from the env's seed and ``b`` alone). The weights of a state are
always computed from the suspect's own weights, never from a previous state, and Fine-mixing's draws are uniform
``u < p`` per value, so: the weights are a function of ``levels`` alone (the memo key is exact), and a value mixed
at level ``k`` stays mixed at every level above ``k`` (one step moves a block monotonically toward the base;
level ``K`` is the base's block exactly).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from headprune.architectures import find_attention_sites
from headprune.engine.reference import shared_parameters

__all__ = ["BlockMixer", "MixBlock", "mix_blocks"]


@dataclass(frozen=True)
class MixBlock:
    """One unit of the ``mix`` operation.

    :param name: ``"embeddings"``, ``"layer{l}.attention"`` or ``"layer{l}.feed_forward"``.
    :param layer: the encoder layer (``None`` for ``"embeddings"``).
    :param kind: ``"embeddings"``, ``"attention"`` or ``"feed_forward"``.
    :param parameters: the names of its parameters (shared with the base), in the model's order.
    """

    name: str
    layer: int | None
    kind: str
    parameters: tuple[str, ...]


def mix_blocks(model: nn.Module, base: nn.Module) -> tuple[MixBlock, ...]:
    """The blocks of ``model`` (see the module docstring): ``embeddings`` first (when it has parameters), then per
    layer its attention block and its feed-forward block. Every shared parameter is in exactly one block."""
    shared = [name for name, _, _ in shared_parameters(model, base)]
    names = {id(module): name for name, module in model.named_modules()}
    owner = {id(p): name for name, p in model.named_parameters()}
    taken: set[str] = set()
    layers: list[tuple[int, tuple[str, ...], tuple[str, ...]]] = []
    for site in find_attention_sites(model):
        attention = {owner[id(p)] for m in (site.attention, site.out_proj) for p in m.parameters()}
        prefix = names[id(site.attention)].rpartition(".")[0] + "."  # the layer module holding the attention
        in_layer = [n for n in shared if n.startswith(prefix) and n not in taken]
        att = tuple(n for n in in_layer if n in attention)
        ffn = tuple(n for n in in_layer if n not in attention)
        taken.update(in_layer)
        layers.append((site.layer, att, ffn))
    blocks = []
    outside = tuple(n for n in shared if n not in taken)
    if outside:
        blocks.append(MixBlock("embeddings", None, "embeddings", outside))
    for layer, att, ffn in sorted(layers):
        if att:
            blocks.append(MixBlock(f"layer{layer}.attention", layer, "attention", att))
        if ffn:
            blocks.append(MixBlock(f"layer{layer}.feed_forward", layer, "feed_forward", ffn))
    return tuple(blocks)


class BlockMixer:
    """The weights of mixing states of one model (see the module docstring).

    :param model: the suspect (its block layout is read here; its weights are never changed outside
        :meth:`mixed`).
    :param base: the public pre-trained reference.
    :param levels: ``K``, the steps from the suspect's block (level 0) to the base's (level ``K``): a step
        raises a block's mixing probability by ``1 / K``.
    :param seed: seeds every block's draws (:meth:`block_seed`).
    """

    def __init__(self, model: nn.Module, base: nn.Module, levels: int, seed: int) -> None:
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"mix_levels must be an integer >= 1, got {levels!r}")
        self.base = base
        self.levels = int(levels)
        self.seed = int(seed)
        self.blocks = mix_blocks(model, base)
        if not self.blocks:
            raise ValueError("the model shares no encoder parameter with the pre-trained reference: nothing to mix")
        self.num_layers = len(find_attention_sites(model))

    @property
    def num_blocks(self) -> int:
        """``B``."""
        return len(self.blocks)

    @property
    def names(self) -> tuple[str, ...]:
        """The blocks' names, in action order."""
        return tuple(b.name for b in self.blocks)

    def block_seed(self, block: int) -> int:
        """The seed of block ``block``'s draws: a function of (:attr:`seed`, ``block``) only."""
        return int(np.random.SeedSequence([self.seed & 0xFFFFFFFF, int(block)]).generate_state(1)[0])

    def check_state(self, levels: np.ndarray | torch.Tensor) -> np.ndarray:
        """``levels`` as an int64 ``[B]`` array in ``[0, K]``; ValueError otherwise."""
        arr = np.asarray(levels.detach().cpu() if isinstance(levels, torch.Tensor) else levels)
        if arr.shape != (self.num_blocks,) or arr.dtype.kind not in "iu":
            raise ValueError(f"mix levels must be {self.num_blocks} integers, got {arr.dtype} {arr.shape}")
        if arr.min() < 0 or arr.max() > self.levels:
            raise ValueError(f"mix levels must be in [0, {self.levels}], got {arr.tolist()}")
        return arr.astype(np.int64)

    def apply(self, model: nn.Module, levels: np.ndarray | torch.Tensor) -> dict[str, Any]:
        """Mix ``model`` in place to the state ``levels`` ``[B]``; ``model`` must hold the suspect's weights in the
        mixed blocks (a deep copy of it, possibly with reset heads: a reset value is the base's already, and
        mixing it keeps it). Returns ``{"mix_levels", "mix_probabilities", "values_mixed"}``."""
        from headprune.defenses.weight_edits import fine_mix  # lazy: the defenses import the env

        state = self.check_state(levels)
        mixed = 0
        for b, level in enumerate(state.tolist()):
            if level:
                mixed += fine_mix(model, self.base, level / self.levels, self.block_seed(b),
                                  parameters=self.blocks[b].parameters)["values_mixed"]
        return {"mix_levels": state.tolist(), "mix_probabilities": [k / self.levels for k in state.tolist()],
                "values_mixed": mixed, "mix_blocks": list(self.names)}

    @contextmanager
    def mixed(self, model: nn.Module, levels: np.ndarray | torch.Tensor | None) -> Iterator[None]:
        """Within the block, ``model`` carries the mixed weights of ``levels`` (``None`` or all 0: unchanged); on
        exit every parameter of a mixed block gets its values back, bit for bit (also when the block raises)."""
        state = None if levels is None else self.check_state(levels)
        if state is None or not state.any():
            yield
            return
        params = dict(model.named_parameters())
        saved = {n: params[n].detach().clone() for b, k in zip(self.blocks, state.tolist()) if k for n in b.parameters}
        try:
            self.apply(model, state)
            yield
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    params[name].copy_(value)

    def layer_rows(self, levels: np.ndarray | None) -> tuple[int, np.ndarray, np.ndarray]:
        """Where a state's levels sit: ``(embeddings level, attention levels [L], feed-forward levels [L])`` (absent
        blocks and ``levels=None`` give 0); the incremental forward compares two states with it."""
        att = np.zeros(self.num_layers, np.int64)
        ffn = np.zeros(self.num_layers, np.int64)
        emb = 0
        if levels is None:
            return emb, att, ffn
        for block, level in zip(self.blocks, self.check_state(levels).tolist()):
            if block.kind == "embeddings":
                emb = level
            elif block.kind == "attention":
                att[block.layer] = level
            else:
                ffn[block.layer] = level
        return emb, att, ffn
