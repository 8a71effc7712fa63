"""Weight edits: what a reference-based defense does to the WEIGHTS of the victim's deep copy.

A defense's :meth:`~headprune.defenses.base.Defense.prune` may return, besides its mask, a
:class:`WeightEdit` (in a :class:`~headprune.defenses.base.DefenseOutcome`). :func:`~headprune.defenses.defend`
applies it to the deep copy of the victim before the "pruned" evaluation and before fine-tuning, so the
"pruned" metrics describe the edited model and the exported model holds the edited + fine-tuned weights.
Every edit copies values from the public pre-trained reference (:mod:`headprune.engine.reference`), never from
data:

* :class:`HeadReset`: the reference's Q/K/V rows and output-projection columns into chosen heads
  (:func:`~headprune.engine.reference.reset_heads`, through the architecture adapters);
* :class:`AttentionReset`: every parameter of every attention block (the adapter's attention module and
  its output projection, whatever they hold) back to the reference;
* :class:`FineMix`: each encoder weight back to the reference with probability ``p`` (Fine-mixing);
* :class:`EmbeddingPurify`: the word embeddings that moved most for how rarely the defender's clean rows
  use them back to the reference (Fine-mixing's E-PUR);
* :class:`EditSequence`: several edits, applied in order.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from headprune.architectures import find_attention_sites
from headprune.engine.reference import reset_heads, shared_parameters

__all__ = ["AttentionReset", "EditSequence", "EmbeddingPurify", "FineMix", "HeadReset", "WeightEdit",
           "attention_parameter_names", "embedding_purify", "fine_mix", "suspicious_tokens", "token_counts"]


class WeightEdit:
    """An in-place change of a model's weights; :meth:`apply` returns JSON-ready details of what changed."""

    def apply(self, model: nn.Module) -> dict[str, Any]:
        """Edit ``model`` in place (a deep copy of the victim); returns details."""
        raise NotImplementedError


@dataclass
class HeadReset(WeightEdit):
    """Copy the reference's per-head weights into the heads where ``heads`` is true.

    :param base: the pre-trained reference (:func:`~headprune.engine.reference.resolve_base`).
    :param heads: ``[L, H]`` bool, True = reset this head.
    """

    base: nn.Module
    heads: torch.Tensor

    def apply(self, model: nn.Module) -> dict[str, Any]:
        count = reset_heads(model, self.base, self.heads)
        return {"operation": "reset", "heads_reset": count, "reset_mask": self.heads.int().tolist()}


def attention_parameter_names(model: nn.Module) -> list[str]:
    """Names of every parameter inside the attention modules the architecture adapters report
    (:attr:`~headprune.architectures.AttentionSite.attention`) and inside their output projections, in
    the model's parameter order. For the BERT family the attention module is ``BertAttention``, so this is
    Q/K/V, the output projection (weight and bias) and the attention output LayerNorm; for DistilBERT,
    GPT-2 and Llama the attention modules hold no norm (theirs sit outside), so it is Q/K/V/O only."""
    sites = find_attention_sites(model)
    wanted = {id(p) for s in sites for m in (s.attention, s.out_proj) for p in m.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in wanted]


@dataclass
class AttentionReset(WeightEdit):
    """Every attention block back to the reference (:func:`attention_parameter_names`); feed-forward,
    embeddings and the task head kept.

    :param base: the pre-trained reference.
    """

    base: nn.Module

    def apply(self, model: nn.Module) -> dict[str, Any]:
        names = set(attention_parameter_names(model))
        reset = []
        with torch.no_grad():
            for name, param, ref in shared_parameters(model, self.base):
                if name in names:
                    param.copy_(ref.to(param.device, param.dtype))
                    reset.append(name)
        return {"operation": "reset-attention", "parameters_reset": reset,
                "values_reset": int(sum(dict(model.named_parameters())[n].numel() for n in reset))}


def _embedding_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters of every ``nn.Embedding`` of ``model``."""
    return {f"{prefix}.{name}" if prefix else name for prefix, module in model.named_modules()
            if isinstance(module, nn.Embedding) for name, _ in module.named_parameters(recurse=False)}


def fine_mix(model: nn.Module, base: nn.Module, p: float, seed: int, *, embeddings: bool = True,
             parameters: Collection[str] | None = None) -> dict[str, Any]:
    """Fine-mixing's mix, in place: every value of every encoder parameter that ``model`` and ``base`` share
    (:func:`~headprune.engine.reference.shared_parameters`: the task head excluded) is replaced by the reference's
    with probability ``p``, independently (one seeded CPU generator, parameters in the model's order, so
    the mix depends only on ``(p, seed)`` and the parameter list).

    :param p: probability of going back to the pre-trained value, in ``[0, 1]`` (0: unchanged, 1: the
        reference's encoder).
    :param seed: seeds the elementwise draws.
    :param embeddings: also mix the ``nn.Embedding`` tables (word, position, token-type).
    :param parameters: mix only the shared parameters of these names (``None``: every one); the draws are made
        for the chosen parameters only, so a mix of one block depends only on ``(p, seed)`` and that block
        (``HeadPrune-v0``'s per-block ``mix`` operation, :mod:`headprune.envs.mixing`).
    :return: ``{"p", "values_mixed", "values_total", "embeddings"}``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    skipped = set() if embeddings else _embedding_parameter_names(model)
    gen = torch.Generator().manual_seed(int(seed))
    mixed = total = 0
    with torch.no_grad():
        for name, param, ref in shared_parameters(model, base):
            if name in skipped or parameters is not None and name not in parameters:
                continue
            chosen = torch.rand(param.shape, generator=gen) < p  # [param.shape] bool, True = back to base
            param.copy_(torch.where(chosen.to(param.device), ref.to(param.device, param.dtype), param))
            mixed += int(chosen.sum())
            total += param.numel()
    return {"p": float(p), "values_mixed": mixed, "values_total": total, "embeddings": bool(embeddings)}


@dataclass
class FineMix(WeightEdit):
    """:func:`fine_mix` as an edit.

    :param base: the pre-trained reference.
    :param p: probability of going back to the pre-trained value.
    :param seed: seeds the draws.
    :param embeddings: also mix the embedding tables.
    """

    base: nn.Module
    p: float
    seed: int
    embeddings: bool = True

    def apply(self, model: nn.Module) -> dict[str, Any]:
        return {"operation": "finemix", **fine_mix(model, self.base, self.p, self.seed, embeddings=self.embeddings)}


def token_counts(tokenizer: Any, sentences: Sequence[str], vocab_size: int, max_length: int) -> torch.Tensor:
    """``[vocab_size]`` float: how often each token id occurs in ``sentences`` as the model reads them
    (tokenised with ``tokenizer``, special tokens included, truncated to ``max_length``)."""
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for start in range(0, len(sentences), 256):
        ids = tokenizer(list(sentences[start:start + 256]), truncation=True, max_length=max_length)["input_ids"]
        for row in ids:
            counts.index_add_(0, torch.tensor(row, dtype=torch.long), torch.ones(len(row), dtype=torch.float64))
    return counts.float()


def suspicious_tokens(model: nn.Module, base: nn.Module, counts: torch.Tensor, top: int, min_count: float = 20.0
                      ) -> torch.Tensor:
    """E-PUR's ranking: the ``top`` token ids with the largest ``||e - e_base||_2 / log(max(count, min_count))``
    (``e``: the suspect's input-embedding row, ``e_base``: the reference's, ``count``: :func:`token_counts` of
    the defender's clean rows), largest first; ties broken by the lower id. ``[min(top, vocab)]`` long."""
    mine, ref = model.get_input_embeddings().weight, base.get_input_embeddings().weight  # [V, d] each
    if mine.shape != ref.shape or counts.shape != mine.shape[:1]:
        raise ValueError(f"embeddings {tuple(mine.shape)} / {tuple(ref.shape)} and counts {tuple(counts.shape)} "
                         "do not match")
    with torch.no_grad():
        drift = (mine.detach().double() - ref.detach().to(mine.device).double()).norm(dim=1).cpu()  # [V]
    score = drift / torch.log(torch.clamp(counts.double(), min=float(min_count)))  # [V]
    return torch.argsort(-score, stable=True)[:max(0, int(top))]  # stable: equal scores keep the lower id first


def embedding_purify(model: nn.Module, base: nn.Module, tokens: torch.Tensor) -> dict[str, Any]:
    """Copy the reference's input-embedding rows of ``tokens`` (``[k]`` long) into ``model``, in place."""
    with torch.no_grad():
        emb, ref = model.get_input_embeddings().weight, base.get_input_embeddings().weight
        idx = tokens.to(emb.device)
        emb[idx] = ref.detach().to(emb.device, emb.dtype)[idx]
    return {"tokens_reset": int(tokens.numel())}


@dataclass
class EmbeddingPurify(WeightEdit):
    """E-PUR (Fine-mixing's Embedding Purification, Zhang et al. 2022): the input-embedding rows of ``tokens``
    back to the reference. Build it with :meth:`ranked`, which ranks the suspect's tokens ONCE (counts from the
    defender's clean rows only, never from poisoned data or the victim's training set), so every copy the edit
    is applied to gets the same rows.

    :param base: the pre-trained reference.
    :param tokens: ``[k]`` long, the token ids to reset (:func:`suspicious_tokens`).
    """

    base: nn.Module
    tokens: torch.Tensor

    @classmethod
    def ranked(cls, model: nn.Module, base: nn.Module, counts: torch.Tensor, top: int, min_count: float = 20.0
               ) -> EmbeddingPurify:
        """The edit of the ``top`` :func:`suspicious_tokens` of ``model`` (``counts``: :func:`token_counts` of the
        defender's clean rows; ``min_count``: below it a token's frequency no longer lowers its score)."""
        return cls(base, suspicious_tokens(model, base, counts, top, min_count))

    def apply(self, model: nn.Module) -> dict[str, Any]:
        return {"operation": "embedding-purify", **embedding_purify(model, self.base, self.tokens)}


@dataclass
class EditSequence(WeightEdit):
    """``edits`` applied in order; the details of each, in order, under ``"edits"``."""

    edits: Sequence[WeightEdit]

    def apply(self, model: nn.Module) -> dict[str, Any]:
        return {"operation": "sequence", "edits": [edit.apply(model) for edit in self.edits]}
