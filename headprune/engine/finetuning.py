"""The one fine-tuning loop of headprune.

Victims (poisoned fine-tuning), the FT / FTH / MEFT baselines, the clean fine-tuning that follows every
pruning strategy, and the L1/L2 group-sparsity phase all train through :func:`fine_tune`. Pruned heads
are *held at zero* during training by running the loop inside one :class:`~headprune.engine.gating.HeadGate`
(a gate of 0 zeroes the head's output, so neither it nor anything downstream can bring it back).

Batches are length-grouped: the seeded shuffle is cut into pools of ``50 * batch_size`` examples, each
pool is sorted by length and cut into batches, and the batch order is shuffled again. Each batch is
padded only to its own longest sentence. This is the usual ``group_by_length`` trick; on a CPU it
roughly halves the cost of an epoch on SST-2 compared with random batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from headprune.common.finite import check_finite_fields
from headprune.data import LabelledTexts
from headprune.engine.evaluator import pad_encodings
from headprune.engine.gating import HeadGate

__all__ = ["FineTuneConfig", "FineTuneLog", "fine_tune", "length_grouped_batches", "soft_cross_entropy"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(logits [B, C], labels [B]) -> scalar``."""

Regulariser = Callable[[nn.Module], torch.Tensor]
"""``regulariser(model) -> scalar`` added to the loss at every step (e.g. a group-sparsity penalty)."""


@dataclass(frozen=True)
class FineTuneConfig:
    """Hyper-parameters of :func:`fine_tune`.

    ``epochs`` may be fractional (``0.5`` = half an epoch). ``max_steps`` (if set) caps the number of
    optimiser steps regardless of ``epochs``.
    """

    epochs: float = 3.0
    lr: float = 2e-5
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    max_length: int = 128
    seed: int = 0
    max_steps: int | None = None

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class FineTuneLog:
    """What one :func:`fine_tune` call did: steps, per-step losses, wall time, and the tokens processed (padded
    batch positions, summed over steps: the ``T`` of a forward + backward's ~``6 * parameters * T`` FLOPs)."""

    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0
    losses: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        """Mean loss over the last 10% of steps (nan if no step ran)."""
        if not self.losses:
            return math.nan
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return float(np.mean(tail))


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of indices whose members have similar lengths.

    Args:
        lengths: token length of each example, ``[N]``.
        batch_size: examples per batch (the last batch of a pool may be smaller).
        rng: the seeded generator that fixes the order.
    Returns:
        a list of index arrays covering ``range(N)`` exactly once.
    """
    order = rng.permutation(len(lengths))
    pool = 50 * batch_size
    lengths_arr = np.asarray(lengths)
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(-lengths_arr[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-sum_c targets[b, c] * log_softmax(logits)[b, c]``, averaged over the batch: the cross-entropy
    against class probabilities ``targets`` ``[B, C]`` (rows summing to 1) of ``logits`` ``[B, C]``."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and soft targets {tuple(targets.shape)} differ in shape")
    return -(targets * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def _linear_warmup(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


# over 60 lines: one training loop (batches, schedule, masks, regulariser, clipping); half is docstring
def fine_tune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: LabelledTexts,
    config: FineTuneConfig = FineTuneConfig(),
    *,
    mask: torch.Tensor | None = None,
    loss_fn: LossFn | None = None,
    regulariser: Regulariser | None = None,
    soft_targets: torch.Tensor | None = None,
    progress: bool | str = True,
) -> FineTuneLog:
    """Fine-tune ``model`` in place on ``data`` with AdamW and a linear warm-up/decay schedule.

    Args:
        model: a sequence classifier; left in eval mode afterwards.
        tokenizer: its tokenizer.
        data: labelled training sentences.
        config: hyper-parameters; ``config.seed`` fixes the batch order, dropout and any sampling, so
            the same seed gives the same weights.
        mask: optional head mask ``[layers, heads]``; heads gated 0 stay at zero for the whole run.
        loss_fn: ``(logits [B, C], labels [B]) -> loss``; cross-entropy when omitted.
        regulariser: optional ``model -> scalar`` penalty added at every step.
        soft_targets: optional ``[N, C]`` class probabilities, row-aligned with ``data``: the loss is then the
            soft cross-entropy ``-sum_c q_c log p_c`` (mean over the batch) against them, e.g. a teacher's
            predictions (:mod:`headprune.defenses.distill`), and ``data.labels`` are not read by the loss.
            Not with ``loss_fn``.
        progress: show a tqdm bar (a string gives it a description).
    Returns:
        a :class:`FineTuneLog` with per-step losses and wall time.
    """
    if len(data) == 0:
        raise ValueError(f"fine_tune got no training data (source: {data.source})")
    if soft_targets is not None:
        if loss_fn is not None:
            raise ValueError("fine_tune takes soft_targets or loss_fn, not both")
        if soft_targets.dim() != 2 or soft_targets.shape[0] != len(data):
            raise ValueError(f"soft_targets must be [N={len(data)}, C], got {tuple(soft_targets.shape)} "
                             f"(source: {data.source})")
        loss_fn = soft_cross_entropy
        targets = soft_targets.detach().float()  # [N, C]
    else:
        loss_fn = loss_fn or nn.functional.cross_entropy
        targets = torch.tensor(data.labels, dtype=torch.long)  # [N]
    device = next(model.parameters()).device
    encoded = tokenizer(list(data.sentences), truncation=True, max_length=config.max_length)
    input_ids: list[list[int]] = encoded["input_ids"]
    rng = np.random.default_rng(config.seed)

    epoch_batches = math.ceil(len(data) / config.batch_size)
    total = math.ceil(config.epochs * epoch_batches)
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    params = [
        {"params": [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith(no_decay)],
         "weight_decay": config.weight_decay},
        {"params": [p for n, p in model.named_parameters() if p.requires_grad and n.endswith(no_decay)],
         "weight_decay": 0.0},
    ]
    # foreach: the same arithmetic as the per-tensor loop (the CPU default), to the last bit (tests/test_training.py
    # checks it), so recorded fine-tunes stay reproducible; on a CPU it cut the tiny preset's build from 15.9 to
    # ~13 s and MiniLM fine-tunes by ~4% (benchmarks/RESULTS.md). fused=True is faster still but not bit-identical.
    optimiser = torch.optim.AdamW(params, lr=config.lr, foreach=True)
    warmup = int(config.warmup_ratio * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: _linear_warmup(s, warmup, total))

    log = FineTuneLog()
    start = time.perf_counter()
    desc = progress if isinstance(progress, str) else "fine-tune"
    bar = tqdm(total=total, desc=desc, disable=progress is False, leave=False)
    model.train()
    with torch.random.fork_rng(devices=[]), HeadGate(model, mask):
        torch.manual_seed(config.seed)
        while log.steps < total:
            for batch_idx in length_grouped_batches([len(x) for x in input_ids], config.batch_size, rng):
                if log.steps >= total:
                    break
                inputs = {k: v.to(device) for k, v in pad_encodings(encoded, batch_idx, tokenizer).items()}
                logits = model(**inputs).logits
                loss = loss_fn(logits, targets[batch_idx].to(device))
                if regulariser is not None:
                    loss = loss + regulariser(model)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimiser.step()
                schedule.step()
                log.losses.append(float(loss.detach()))
                log.steps += 1
                log.tokens += int(inputs["input_ids"].numel())
                bar.update(1)
                bar.set_postfix(loss=f"{log.losses[-1]:.3f}", refresh=False)
    bar.close()
    model.eval()
    log.seconds = time.perf_counter() - start
    return log
