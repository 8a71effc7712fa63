"""The one head-gating engine of headprune.

transformers 5.x removed ``head_mask`` and ``prune_heads`` (a ``head_mask=`` keyword is silently
ignored), so headprune gates heads itself. Every self-attention block of a transformer ends in an
*output projection* whose input is the concatenation of the heads' outputs::

    x: [batch, seq, num_heads * head_dim]  ->  out_proj(x): [batch, seq, hidden]

A forward pre-hook on that projection multiplies head ``h``'s slice ``x[..., h*d:(h+1)*d]`` by a gate
value ``g[layer, h]``. A gate of 0 removes the head exactly as if the matching input columns of the
projection were zero; a gate of 1 leaves the computation bit-identical; any float in between scales
the head, and a gate tensor with ``requires_grad`` gives the gradient importance of Michel et al.
(2019), ``|dL/dg|``.

Supported blocks (found by structure, not by class name, so relatives such as XLM-R, CamemBERT or
Qwen2 work too):

=================  ===================================  =============================
family             attention module                      output projection
=================  ===================================  =============================
BERT/RoBERTa/...   ``*.attention`` (``self`` + ``output``) ``attention.output.dense``
DistilBERT         ``MultiHeadSelfAttention``            ``out_lin``
GPT-2              ``GPT2Attention``                     ``c_proj`` (a ``Conv1D``)
Llama/Mistral/...  ``*Attention`` with ``q_proj``        ``o_proj``
=================  ===================================  =============================

Masks are ``[num_layers, num_heads]`` (one mask for the whole batch) or
``[batch, num_layers, num_heads]`` (one mask per example, so many candidate masks are scored in one
forward). ``1`` means the head is active, ``0`` pruned.

Example::

    with HeadGate(model, mask):          # hooks live only inside the block
        logits = model(**batch).logits
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "AttentionSite",
    "HeadGate",
    "UnsupportedArchitectureError",
    "find_attention_sites",
    "head_grid_shape",
    "mask_from_pruned",
    "pruned_from_mask",
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
        family: ``"bert"``, ``"distilbert"``, ``"gpt2"`` or ``"llama"``.
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


def _in_features(proj: nn.Module) -> int:
    """Input width of an ``nn.Linear`` or a GPT-2 ``Conv1D`` (weight ``[in, out]``)."""
    if isinstance(proj, nn.Linear):
        return proj.in_features
    weight = getattr(proj, "weight", None)
    if type(proj).__name__ == "Conv1D" and isinstance(weight, torch.Tensor):
        return int(weight.shape[0])
    raise UnsupportedArchitectureError(f"output projection of type {type(proj).__name__} is neither nn.Linear nor Conv1D")


def _describe(module: nn.Module) -> tuple[str, str, nn.Module, int] | None:
    """Recognise a self-attention block: returns (family, projection attribute path, projection, head_dim)."""
    children = dict(module.named_children())
    # BERT family: BertAttention has `self` (BertSelfAttention) and `output` (BertSelfOutput with `dense`).
    inner = children.get("self")
    output = children.get("output")
    if inner is not None and output is not None and hasattr(inner, "attention_head_size") and hasattr(output, "dense"):
        if getattr(module, "is_cross_attention", False):
            return None
        return "bert", "output.dense", output.dense, int(inner.attention_head_size)
    # DistilBERT: MultiHeadSelfAttention with q_lin/k_lin/v_lin/out_lin.
    # Prefer `attention_head_size`: `dim // n_heads` is wrong once heads were removed (export.compact).
    if "out_lin" in children and "q_lin" in children and hasattr(module, "n_heads"):
        has_size = hasattr(module, "attention_head_size")
        head_dim = module.attention_head_size if has_size else module.dim // module.n_heads
        return "distilbert", "out_lin", children["out_lin"], int(head_dim)
    # GPT-2: GPT2Attention with c_attn/c_proj (Conv1D). The MLP also has a c_proj, but no head_dim.
    if "c_proj" in children and "c_attn" in children and hasattr(module, "head_dim"):
        if getattr(module, "is_cross_attention", False):
            return None
        return "gpt2", "c_proj", children["c_proj"], int(module.head_dim)
    # Llama / Mistral / Qwen2 / Gemma: q_proj/k_proj/v_proj/o_proj and head_dim.
    if "o_proj" in children and "q_proj" in children and hasattr(module, "head_dim"):
        return "llama", "o_proj", children["o_proj"], int(module.head_dim)
    return None


def find_attention_sites(model: nn.Module) -> list[AttentionSite]:
    """Find every self-attention block of ``model`` in forward order.

    Raises:
        UnsupportedArchitectureError: naming the model class when no known block is found, or when a
            projection's input width is not ``num_heads * head_dim``.
    """
    sites: list[AttentionSite] = []
    for name, module in model.named_modules():
        found = _describe(module)
        if found is None:
            continue
        family, proj_path, proj, head_dim = found
        width = _in_features(proj)
        if head_dim <= 0 or width % head_dim != 0:
            raise UnsupportedArchitectureError(
                f"{type(model).__name__}: projection {name}.{proj_path} has input width {width}, "
                f"which is not a multiple of head_dim={head_dim}"
            )
        sites.append(
            AttentionSite(
                layer=len(sites),
                name=f"{name}.{proj_path}" if name else proj_path,
                family=family,
                attention=module,
                out_proj=proj,
                num_heads=width // head_dim,
                head_dim=head_dim,
            )
        )
    if not sites:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__}: found no self-attention block with a known output projection. "
            "headprune looks for BERT-style `attention.output.dense`, DistilBERT `out_lin`, "
            "GPT-2 `attn.c_proj` and Llama-style `self_attn.o_proj`."
        )
    return sites


def head_grid_shape(model_or_sites: nn.Module | Sequence[AttentionSite]) -> tuple[int, int]:
    """``(num_layers, num_heads)`` of a model whose layers all have the same number of heads."""
    sites = find_attention_sites(model_or_sites) if isinstance(model_or_sites, nn.Module) else list(model_or_sites)
    heads = {s.num_heads for s in sites}
    if len(heads) != 1:
        raise UnsupportedArchitectureError(
            f"layers have different numbers of heads ({sorted(heads)}); head masks need a uniform grid "
            "(was the model already compacted?)"
        )
    return len(sites), heads.pop()


def mask_from_pruned(pruned: Mapping[int, Sequence[int]], shape: tuple[int, int]) -> torch.Tensor:
    """Mask ``[layers, heads]`` of ones with zeros at ``pruned[layer] = [head, ...]``."""
    mask = torch.ones(shape)
    for layer, heads in pruned.items():
        for head in heads:
            if not (0 <= int(layer) < shape[0] and 0 <= int(head) < shape[1]):
                raise ValueError(f"head ({layer}, {head}) is outside the grid {shape}")
            mask[int(layer), int(head)] = 0.0
    return mask


def pruned_from_mask(mask: torch.Tensor) -> dict[int, list[int]]:
    """``{layer: [heads with gate 0]}`` for a ``[layers, heads]`` mask (layers with none pruned omitted)."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be [layers, heads], got shape {tuple(mask.shape)}")
    out: dict[int, list[int]] = {}
    for layer, head in (mask == 0).nonzero().tolist():
        out.setdefault(layer, []).append(head)
    return out


class HeadGate:
    """Gate attention heads of a model through forward pre-hooks on the output projections.

    The hooks are installed by :meth:`attach` (or on entering the ``with`` block) and removed by
    :meth:`detach` (or on leaving it); the model's parameters are never touched, so after
    :meth:`detach` the model is exactly as it was.

    Args:
        model: any module :func:`find_attention_sites` understands.
        mask: optional initial mask, ``[layers, heads]`` or ``[batch, layers, heads]``.

    Shapes:
        ``mask``: ``[L, H]`` applies to every example; ``[B, L, H]`` applies row ``b`` to example ``b``
        of the batch (the hook raises if the batch size differs). A tensor that requires grad is used
        as is, so gradients reach it (see :meth:`differentiable_gates`).
    """

    def __init__(self, model: nn.Module, mask: torch.Tensor | None = None) -> None:
        self.model = model
        self.sites = find_attention_sites(model)
        self.num_layers, self.num_heads = head_grid_shape(self.sites)
        self._mask: torch.Tensor | None = None
        self._active_layers: list[bool] = [False] * self.num_layers
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.set_mask(mask)

    # ----------------------------------------------------------------------------------- masks
    @property
    def shape(self) -> tuple[int, int]:
        """``(num_layers, num_heads)``."""
        return self.num_layers, self.num_heads

    @property
    def mask(self) -> torch.Tensor | None:
        """The mask in use (``None``: no gating)."""
        return self._mask

    def set_mask(self, mask: torch.Tensor | Sequence[Any] | None) -> None:
        """Use ``mask`` from the next forward on; ``None`` turns gating off.

        Raises:
            ValueError: if the trailing dimensions are not ``(num_layers, num_heads)``.
        """
        if mask is None:
            self._mask = None
            self._active_layers = [False] * self.num_layers
            return
        tensor = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(mask)
        if tensor.dim() not in (2, 3) or tuple(tensor.shape[-2:]) != self.shape:
            raise ValueError(
                f"mask must have shape [{self.num_layers}, {self.num_heads}] or [batch, {self.num_layers}, "
                f"{self.num_heads}] for {type(self.model).__name__}, got {tuple(tensor.shape)}"
            )
        if not tensor.is_floating_point():
            tensor = tensor.float()
        self._mask = tensor
        if tensor.requires_grad:
            self._active_layers = [True] * self.num_layers
        else:
            per_layer = tensor.reshape(-1, self.num_layers, self.num_heads).ne(1).any(dim=(0, 2))
            self._active_layers = per_layer.tolist()

    def differentiable_gates(self, initial: torch.Tensor | None = None) -> torch.Tensor:
        """Install and return a leaf gate tensor ``[L, H]`` (ones, or ``initial``) that requires grad.

        After ``loss.backward()``, ``gates.grad[l, h]`` is ``dL/dg_{l,h}``: the gradient importance of
        Michel et al. (2019) when taken in absolute value and summed over examples.
        """
        base = torch.ones(self.shape) if initial is None else initial.detach().clone().float()
        device = next(self.model.parameters()).device
        gates = base.to(device).requires_grad_(True)
        self.set_mask(gates)
        return gates

    # ----------------------------------------------------------------------------------- hooks
    def _make_hook(self, site: AttentionSite):
        layer, heads, head_dim = site.layer, site.num_heads, site.head_dim

        def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            mask = self._mask
            if mask is None or not self._active_layers[layer]:
                return None
            x = args[0]  # [batch, seq, heads * head_dim]
            if mask.dim() == 2:
                gate = mask[layer].to(dtype=x.dtype, device=x.device).view(heads, 1)
            else:
                if mask.shape[0] != x.shape[0]:
                    raise ValueError(
                        f"per-example mask has batch {mask.shape[0]} but layer {layer} got a batch of {x.shape[0]}"
                    )
                gate = mask[:, layer].to(dtype=x.dtype, device=x.device)
                gate = gate.view(x.shape[0], *([1] * (x.dim() - 2)), heads, 1)
            gated = (x.unflatten(-1, (heads, head_dim)) * gate).flatten(-2)
            return (gated, *args[1:])

        return hook

    def attach(self) -> HeadGate:
        """Install the hooks (idempotent)."""
        if not self._handles:
            self._handles = [s.out_proj.register_forward_pre_hook(self._make_hook(s)) for s in self.sites]
        return self

    def detach(self) -> None:
        """Remove the hooks; the model is then exactly as before :meth:`attach`."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def attached(self) -> bool:
        """Whether the hooks are installed."""
        return bool(self._handles)

    def __enter__(self) -> HeadGate:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __iter__(self) -> Iterator[AttentionSite]:
        return iter(self.sites)
