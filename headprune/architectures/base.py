"""The adapter protocol every architecture implements, the registry of adapters and the site lookup.

An :class:`ArchitectureAdapter` is all headprune knows about one family of transformers: how to
recognise its self-attention blocks (:meth:`~ArchitectureAdapter.match`), where each head's weights
live (:meth:`~ArchitectureAdapter.head_parameter_views`, read by
:meth:`~ArchitectureAdapter.head_weights`, written by :meth:`~ArchitectureAdapter.set_head_weights`),
how gates fold into the output projection, how heads are physically removed
(:meth:`~ArchitectureAdapter.compact_layer`, optional) and how its classifier's forward splits into
layers (:meth:`~ArchitectureAdapter.layerwise_forward`, optional, for
:class:`~headprune.envs.incremental.IncrementalForward`).

Per-head weights use one layout for every family (``d`` = head_dim, ``D`` = hidden size)::

    "query.weight" [d, D]   "query.bias" [d]     (rows of the query projection that make head h)
    "key.weight"   [d, D]   "key.bias"   [d]
    "value.weight" [d, D]   "value.bias" [d]
    "output.weight" [D, d]                       (input columns of the output projection that read head h)

(biases only where the model has them; the output projection's bias is shared by all heads and so
belongs to none).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import torch
from torch import nn

from headprune.common.registry import Registry

__all__ = [
    "ARCHITECTURES",
    "ArchitectureAdapter",
    "AttentionSite",
    "BlockMatch",
    "LayerwiseForward",
    "UnsupportedArchitectureError",
    "adapter_for",
    "find_attention_sites",
    "register_architecture",
]


class UnsupportedArchitectureError(TypeError):
    """Raised when no self-attention block with a known output projection is found in a model."""


@dataclass(frozen=True)
class AttentionSite:
    """One self-attention block and the projection whose input holds its heads.

    Attributes:
        layer: index of the block in forward order (0 = closest to the embeddings).
        name: qualified module name of the output projection, e.g.
            ``"bert.encoder.layer.3.attention.output.dense"``.
        family: name of the registered adapter that recognised it (``"bert"``, ``"distilbert"``,
            ``"gpt2"``, ``"llama"``, ...).
        attention: the attention module that computes the heads.
        out_proj: the projection ``[.., num_heads * head_dim] -> [.., hidden]``.
        num_heads: heads feeding ``out_proj``.
        head_dim: size of each head's slice.
    """

    layer: int
    name: str
    family: str
    attention: nn.Module
    out_proj: nn.Module
    num_heads: int
    head_dim: int

    @property
    def adapter(self) -> ArchitectureAdapter:
        """The adapter of :attr:`family`."""
        return ARCHITECTURES.get(self.family)

    def head_slice(self, head: int) -> slice:
        """Head ``head``'s slice ``[head * head_dim, (head + 1) * head_dim)`` of the concatenated heads."""
        if not 0 <= head < self.num_heads:
            raise IndexError(f"head {head} is outside 0..{self.num_heads - 1} of layer {self.layer}")
        return slice(head * self.head_dim, (head + 1) * self.head_dim)


@dataclass(frozen=True)
class BlockMatch:
    """What :meth:`ArchitectureAdapter.match` reports for a recognised self-attention block.

    Attributes:
        proj_path: attribute path of the output projection inside the block (``"output.dense"``).
        out_proj: that projection.
        head_dim: size of each head's slice of its input.
    """

    proj_path: str
    out_proj: nn.Module
    head_dim: int


class LayerwiseForward(ABC):
    """A sequence classifier's eval-mode forward split at its layers (for the incremental forward).

    ``h`` is a layer's input ``[B, T, D]``; ``first_query_only`` computes position 0 only (what the
    classifier reads from the last layer), so the context is ``[B, 1, H*d]`` and the layer's output
    ``[B, 1, D]``. Composing the steps must reproduce the model's own forward exactly.
    """

    @abstractmethod
    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(h_0 [B, T, D], attention bias)`` of a tokenized batch; the bias is passed to every layer."""

    @abstractmethod
    def head_outputs(self, layer: int, h: torch.Tensor, bias: torch.Tensor | None, *,
                     first_query_only: bool) -> torch.Tensor:
        """Layer ``layer``'s heads before gating, ``[B, T, H*d]`` (``[B, 1, H*d]``), from its input ``h``."""

    @abstractmethod
    def finish_layer(self, layer: int, context: torch.Tensor, h: torch.Tensor, *,
                     first_query_only: bool) -> torch.Tensor:
        """Layer ``layer``'s output from its (gated) head outputs ``context`` and its input ``h``."""

    @abstractmethod
    def classify(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` from the last layer's output ``h`` (``[B, 1, D]``)."""


class ArchitectureAdapter(ABC):
    """What headprune knows about one transformer family; subclasses are registered instances.

    Implement :meth:`match` and :meth:`head_parameter_views`; override :meth:`compact_layer`,
    :meth:`layerwise_forward`, :meth:`heads_sharing_parameters`, :meth:`projection_input_width` and
    :meth:`scale_head_inputs` where the defaults (no compaction, no incremental forward, heads with
    their own parameters, an ``nn.Linear`` output projection) do not hold.
    """

    name: ClassVar[str]
    """Registry key, stored as :attr:`AttentionSite.family`."""
    description: ClassVar[str]
    """One phrase naming the family and its output projection, for error messages."""
    model_types: ClassVar[tuple[str, ...]]
    """Hugging Face ``model_type``s the adapter is tested on (``tests/test_architectures.py``)."""

    @abstractmethod
    def match(self, module: nn.Module) -> BlockMatch | None:
        """The block's output projection and head_dim if ``module`` is one of this family's self-attention blocks."""

    @abstractmethod
    def head_parameter_views(self, site: AttentionSite, head: int) -> dict[str, torch.Tensor]:
        """Views (gradients flow, writes land in the model) of head ``head``'s weights, in the module layout."""

    # ------------------------------------------------------------------------- head weights
    def head_weights(self, site: AttentionSite, head: int) -> dict[str, torch.Tensor]:
        """Copies of head ``head``'s weights (keys and shapes in the module docstring)."""
        with torch.no_grad():
            return {key: view.detach().clone() for key, view in self.head_parameter_views(site, head).items()}

    def set_head_weights(self, site: AttentionSite, head: int, weights: Mapping[str, torch.Tensor]) -> None:
        """Write ``weights`` (any subset of :meth:`head_weights`' keys) into head ``head``, in place.

        Values are copied exactly (cast to the parameter's dtype if they differ). Where
        :meth:`heads_sharing_parameters` names other heads, a ``"key.*"``/``"value.*"`` write changes them too.

        Raises:
            ValueError: for an unknown key or a shape that differs from the head's.
        """
        with torch.no_grad():
            views = self.head_parameter_views(site, head)
            unknown = sorted(set(weights) - set(views))
            if unknown:
                raise ValueError(f"unknown head weights {unknown} for {site.name}; known: {list(views)}")
            for key, value in weights.items():
                if tuple(value.shape) != tuple(views[key].shape):
                    raise ValueError(f"{key} of head {head} of {site.name} has shape {tuple(views[key].shape)}, "
                                     f"got {tuple(value.shape)}")
            for key, value in weights.items():
                views[key].copy_(value)

    def heads_sharing_parameters(self, site: AttentionSite, head: int) -> tuple[int, ...]:
        """The heads whose weights overlap head ``head``'s (itself included); more than one under grouped KV."""
        return (head,)

    # ----------------------------------------------------------------------- output projection
    def projection_input_width(self, proj: nn.Module) -> int:
        """Input width ``num_heads * head_dim`` of the output projection (an ``nn.Linear`` here)."""
        if not isinstance(proj, nn.Linear):
            raise UnsupportedArchitectureError(f"output projection of type {type(proj).__name__} is not nn.Linear")
        return proj.in_features

    def scale_head_inputs(self, site: AttentionSite, gates: torch.Tensor) -> None:
        """Multiply the output projection's input columns of head ``h`` by ``gates[h]`` (``[H]``), in place."""
        weight = site.out_proj.weight
        weight.mul_(head_scale(site, gates, weight))  # [out, in] * [in]

    # ------------------------------------------------------------------- optional capabilities
    @property
    def supports_compaction(self) -> bool:
        """Whether :meth:`compact_layer` is implemented."""
        return type(self).compact_layer is not ArchitectureAdapter.compact_layer

    def compact_layer(self, model: nn.Module, site: AttentionSite, gates: torch.Tensor) -> None:
        """Physically remove the heads of ``site`` whose gate (``[H]``) is 0 and fold the others, in place."""
        raise UnsupportedArchitectureError(f"{self.description} blocks cannot be compacted")

    def layerwise_forward(self, model: nn.Module) -> LayerwiseForward | None:
        """``model``'s forward split at its layers, or ``None`` where the incremental forward does not apply."""
        return None


def head_scale(site: AttentionSite, gates: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``gates`` ``[H]`` repeated ``head_dim`` times, ``[H * d]``, on ``like``'s device and dtype."""
    return gates.to(device=like.device, dtype=like.dtype).repeat_interleave(site.head_dim)


ARCHITECTURES: Registry[ArchitectureAdapter] = Registry("architecture")
"""Adapter instances by name, in registration order (the order :func:`find_attention_sites` tries them)."""

A = TypeVar("A", bound=type[ArchitectureAdapter])


def register_architecture(cls: A) -> A:
    """Class decorator: register an instance of ``cls`` under ``cls.name``; returns ``cls``."""
    ARCHITECTURES.add(cls.name, cls())
    return cls


def _supported() -> str:
    return "; ".join(adapter.description for _, adapter in ARCHITECTURES.items())


def find_attention_sites(model: nn.Module) -> list[AttentionSite]:
    """Find every self-attention block of ``model`` in forward order, asking each registered adapter.

    Raises:
        UnsupportedArchitectureError: naming the model class when no known block is found, or when a
            projection's input width is not ``num_heads * head_dim``.
    """
    sites: list[AttentionSite] = []
    for name, module in model.named_modules():
        for family, adapter in ARCHITECTURES.items():
            found = adapter.match(module)
            if found is None:
                continue
            width = adapter.projection_input_width(found.out_proj)
            if found.head_dim <= 0 or width % found.head_dim != 0:
                raise UnsupportedArchitectureError(
                    f"{type(model).__name__}: projection {name}.{found.proj_path} has input width {width}, "
                    f"which is not a multiple of head_dim={found.head_dim}"
                )
            sites.append(AttentionSite(
                layer=len(sites), name=f"{name}.{found.proj_path}" if name else found.proj_path, family=family,
                attention=module, out_proj=found.out_proj, num_heads=width // found.head_dim,
                head_dim=found.head_dim,
            ))
            break
    if not sites:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__}: found no self-attention block with a known output projection; "
            f"supported: {_supported()}"
        )
    return sites


def adapter_for(model: nn.Module) -> ArchitectureAdapter:
    """The adapter of ``model``'s self-attention blocks.

    Raises:
        UnsupportedArchitectureError: naming the model class and the supported families, when no adapter
            recognises a block or when blocks of several families are mixed.
    """
    families = list(dict.fromkeys(site.family for site in find_attention_sites(model)))
    if len(families) != 1:
        raise UnsupportedArchitectureError(f"{type(model).__name__} mixes attention blocks of {families}; "
                                           f"one family per model is supported: {_supported()}")
    return ARCHITECTURES.get(families[0])
