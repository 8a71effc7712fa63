"""The one evaluator of headprune: fast, exact scoring of a classifier under head masks.

:class:`Evaluator` tokenizes a fixed set of texts once, sorts them by token length and cuts them into
batches padded only to the longest member (dynamic padding). Every forward runs under
``torch.inference_mode()`` with the model in eval mode, and head masks go through one
:class:`~headprune.engine.gating.HeadGate` (the only gating mechanism of headprune). Results are always
returned in the ORIGINAL order of the texts.

Shapes used below: ``N`` texts, ``C`` labels, ``L`` layers, ``H`` heads per layer, ``K`` masks.

:func:`naive_logits` is the slow reference (unsorted, every batch padded to ``max_length``), the way
PURE (Zhao et al., ICML 2024) evaluates; tests and ``benchmarks/bench_evaluator.py`` compare against it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from headprune.data import LabelledTexts
from headprune.engine.gating import HeadGate
from headprune.common.modes import eval_mode

__all__ = ["Batch", "Evaluator", "naive_logits", "pad_encodings"]


@dataclass(frozen=True)
class Batch:
    """One dynamically padded batch.

    Attributes:
        indices: ``[B]`` long, positions of the batch's rows in the original order of the texts.
        inputs: model inputs, each ``[B, T]`` with ``T`` the longest member's token count
            (``input_ids``, ``attention_mask`` and ``token_type_ids`` when the tokenizer makes them).
    """

    indices: torch.Tensor
    inputs: dict[str, torch.Tensor]

    @property
    def size(self) -> int:
        """``B``, the number of examples."""
        return int(self.indices.numel())

    @property
    def seq_len(self) -> int:
        """``T``, the padded length."""
        return int(self.inputs["input_ids"].shape[1])

    def to(self, device: torch.device) -> Batch:
        """The same batch with its inputs on ``device`` (indices stay on the CPU)."""
        return Batch(self.indices, {k: v.to(device, non_blocking=True) for k, v in self.inputs.items()})


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    if pad is None:
        raise ValueError(f"{type(tokenizer).__name__} has neither a pad nor an eos token to pad with")
    return int(pad)


def pad_encodings(encodings: Mapping[str, Sequence[Sequence[int]]], rows: Sequence[int], tokenizer: Any) -> dict[str, torch.Tensor]:
    """Pad the chosen rows of an unpadded tokenizer output to their longest member.

    Args:
        encodings: the tokenizer's output without padding (``input_ids`` and, when present,
            ``attention_mask`` / ``token_type_ids``: one list of ints per text).
        rows: which texts form the batch, in batch order (``B`` of them).
        tokenizer: supplies the pad id and ``padding_side``.

    Returns:
        ``input_ids``, ``attention_mask`` (and ``token_type_ids`` if given), each ``[B, T]`` long with
        ``T`` the longest chosen text. This is the one padding routine of headprune (evaluation and
        fine-tuning both use it).
    """
    lengths = [len(encodings["input_ids"][i]) for i in rows]
    width = max(lengths)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    pad_values = {"input_ids": _pad_id(tokenizer), "attention_mask": 0, "token_type_ids": 0}
    inputs: dict[str, torch.Tensor] = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if key not in encodings:
            continue
        out = torch.full((len(rows), width), pad_values[key], dtype=torch.long)
        for r, i in enumerate(rows):
            seq = torch.as_tensor(encodings[key][i], dtype=torch.long)
            if left:
                out[r, width - seq.numel() :] = seq
            else:
                out[r, : seq.numel()] = seq
        inputs[key] = out
    if "attention_mask" not in inputs:
        att = torch.zeros(len(rows), width, dtype=torch.long)
        for r, n in enumerate(lengths):
            if left:
                att[r, width - n :] = 1
            else:
                att[r, :n] = 1
        inputs["attention_mask"] = att
    return inputs


class Evaluator:
    """Scores a classifier on a fixed set of texts, optionally with attention heads gated off.

    Args:
        model: a sequence classifier whose output has ``.logits`` ``[B, C]``.
        tokenizer: its tokenizer (called once, without padding).
        texts: a :class:`headprune.data.LabelledTexts` (then :meth:`accuracy` works) or plain strings.
        batch_size: examples per forward (``B``).
        max_length: truncation length in tokens, special tokens included.
        max_effective_batch: bound on rows per forward in :meth:`logits_for_masks`, where each batch
            is repeated for several masks (at least one mask per forward whatever the bound).

    Batching is deterministic: a stable sort by token length (ties keep the original order), cut into
    consecutive chunks of ``batch_size``, each padded on the tokenizer's ``padding_side`` to its
    longest member. The batches are built once, at construction.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        texts: LabelledTexts | Sequence[str],
        *,
        batch_size: int = 64,
        max_length: int = 128,
        max_effective_batch: int = 512,
    ) -> None:
        if batch_size < 1 or max_effective_batch < 1:
            raise ValueError("batch_size and max_effective_batch must be positive")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.max_effective_batch = max_effective_batch
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings or a LabelledTexts, not one string")
        if isinstance(texts, LabelledTexts):
            self.sentences: tuple[str, ...] = tuple(texts.sentences)
            self.labels: torch.Tensor | None = torch.as_tensor(list(texts.labels), dtype=torch.long)
            if self.labels.numel() != len(self.sentences):
                raise ValueError(f"{len(self.sentences)} sentences but {self.labels.numel()} labels")
        else:
            self.sentences = tuple(texts)
            self.labels = None
        self.gate = HeadGate(model)
        self.batches: list[Batch] = self._make_batches()
        self._device_batches: dict[torch.device, list[Batch]] = {}

    # ------------------------------------------------------------------------------ batching
    def _make_batches(self) -> list[Batch]:
        if not self.sentences:
            return []
        enc = self.tokenizer(list(self.sentences), truncation=True, max_length=self.max_length, padding=False)
        lengths = [len(ids) for ids in enc["input_ids"]]
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])  # stable: ties keep original order
        return [
            Batch(torch.as_tensor(idx, dtype=torch.long), pad_encodings(enc, idx, self.tokenizer))
            for idx in (order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size))
        ]

    def __len__(self) -> int:
        """``N``, the number of texts."""
        return len(self.sentences)

    @property
    def head_shape(self) -> tuple[int, int]:
        """``(L, H)`` of the model."""
        return self.gate.shape

    @property
    def num_labels(self) -> int:
        """``C``, from the model config."""
        return int(self.model.config.num_labels)  # type: ignore[union-attr]

    def iter_batches(self, device: torch.device | None = None) -> Iterator[Batch]:
        """The batches in a fixed order, moved to ``device`` (default: the model's) and cached there."""
        device = _model_device(self.model) if device is None else device
        if device.type == "cpu":
            yield from self.batches
            return
        if device not in self._device_batches:
            self._device_batches[device] = [b.to(device) for b in self.batches]
        yield from self._device_batches[device]

    # ------------------------------------------------------------------------------ scoring
    def _check_mask(self, mask: torch.Tensor, per_example_rows: int | None) -> torch.Tensor:
        L, H = self.head_shape
        if mask.dim() == 2 and tuple(mask.shape) == (L, H):
            return mask
        if mask.dim() == 3 and tuple(mask.shape[1:]) == (L, H) and per_example_rows is not None:
            if mask.shape[0] != per_example_rows:
                raise ValueError(f"per-example mask has {mask.shape[0]} rows for {per_example_rows} texts")
            return mask
        raise ValueError(f"mask must be [{L}, {H}] or [N, {L}, {H}], got {tuple(mask.shape)}")

    def logits(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of every text under ``mask``.

        Args:
            mask: ``None`` (all heads), ``[L, H]`` for every text, or ``[N, L, H]`` one row per text
                (original order). ``1`` keeps a head, ``0`` removes it; floats scale it.

        Returns:
            ``[N, C]`` float tensor on the CPU, row ``i`` for ``texts[i]``.
        """
        if mask is not None:
            mask = self._check_mask(mask, per_example_rows=len(self))
        device = _model_device(self.model)
        out = torch.empty(len(self), self.num_labels)
        try:
            with eval_mode(self.model), torch.inference_mode(), self.gate:
                for batch in self.iter_batches(device):
                    if mask is None or mask.dim() == 2:
                        self.gate.set_mask(None if mask is None else mask.to(device))
                    else:
                        self.gate.set_mask(mask[batch.indices].to(device))
                    logits = self.model(**batch.inputs).logits
                    out[batch.indices] = logits.float().cpu()
        finally:
            self.gate.set_mask(None)
        return out.clone()

    def predictions(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[N]`` long: the argmax label of each text under ``mask`` (see :meth:`logits`)."""
        return self.logits(mask).argmax(dim=-1)

    def accuracy(self, mask: torch.Tensor | None = None) -> float:
        """Share of texts whose prediction under ``mask`` equals its label.

        Raises:
            ValueError: when the evaluator was built from plain strings (no labels).
        """
        labels = self.require_labels()
        if labels.numel() == 0:
            raise ValueError("accuracy of an empty set is undefined")
        return int((self.predictions(mask) == labels).sum()) / labels.numel()

    def require_labels(self) -> torch.Tensor:
        """``[N]`` long labels, or a ValueError when the texts had none."""
        if self.labels is None:
            raise ValueError("these texts have no labels: build the Evaluator from a LabelledTexts")
        return self.labels

    def logits_for_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Logits of every text under each of ``K`` candidate masks, several masks per forward.

        Each batch of ``B`` texts is repeated for ``k`` masks at a time (``k * B <=
        max_effective_batch``, ``k >= 1``) and scored in one forward with a per-example mask
        ``[k * B, L, H]`` (row ``j * B + b`` is mask ``j`` on text ``b``).

        Args:
            masks: ``[K, L, H]``.

        Returns:
            ``[K, N, C]`` float tensor on the CPU; ``out[k]`` equals ``self.logits(masks[k])`` up to
            float rounding.
        """
        L, H = self.head_shape
        if masks.dim() != 3 or tuple(masks.shape[1:]) != (L, H):
            raise ValueError(f"masks must be [K, {L}, {H}], got {tuple(masks.shape)}")
        K = masks.shape[0]
        device = _model_device(self.model)
        masks = masks.float().to(device)
        out = torch.empty(K, len(self), self.num_labels)
        try:
            with eval_mode(self.model), torch.inference_mode(), self.gate:
                for batch in self.iter_batches(device):
                    B = batch.size
                    per_forward = max(1, self.max_effective_batch // B)
                    for k0 in range(0, K, per_forward):
                        chunk = masks[k0 : k0 + per_forward]  # [k, L, H]
                        k = chunk.shape[0]
                        inputs = {name: t.repeat(k, 1) for name, t in batch.inputs.items()}  # [k*B, T]
                        self.gate.set_mask(chunk.repeat_interleave(B, dim=0))  # [k*B, L, H]
                        logits = self.model(**inputs).logits.float().cpu()  # [k*B, C]
                        out[k0 : k0 + k, batch.indices] = logits.view(k, B, -1)
        finally:
            self.gate.set_mask(None)
        return out.clone()


def naive_logits(
    model: nn.Module,
    tokenizer: Any,
    sentences: Sequence[str],
    max_length: int = 128,
    batch_size: int = 32,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference scoring as PURE does it: original order, every batch padded to ``max_length``.

    Args:
        sentences: ``N`` strings.
        mask: optional ``[L, H]`` head mask (through :class:`HeadGate`).

    Returns:
        ``[N, C]`` float logits on the CPU.
    """
    device = _model_device(model)
    chunks: list[torch.Tensor] = []
    with eval_mode(model), torch.no_grad(), HeadGate(model, mask):
        for start in range(0, len(sentences), batch_size):
            enc = tokenizer(
                list(sentences[start : start + batch_size]),
                truncation=True,
                max_length=max_length,
                padding="max_length",
                return_tensors="pt",
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            chunks.append(model(**enc).logits.float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, int(model.config.num_labels))  # type: ignore[union-attr]
