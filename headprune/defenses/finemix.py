"""Fine-mixing (Zhang et al., 2022, arXiv 2210.09545): mix the suspect's weights with the public
pre-trained weights, then fine-tune on clean data.

Each encoder weight goes back to its pre-trained value with probability ``p``
(:func:`~headprune.defenses.weight_edits.fine_mix`, elementwise and seeded), then the protocol's clean
fine-tune recovers the clean task; the backdoor, written in the fine-tuning, is mostly lost with the
mixed-out weights. ``p`` is chosen on the defender's clean rows only (:func:`choose_mix_ratio`) or fixed
by the option ``p``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from headprune.defenses.base import DEFENSES, Defense, DefenseOutcome, unpruned_outcome
from headprune.defenses.repaired_floor import RepairCandidate, deepest_repaired
from headprune.defenses.defense_options import DefenseOptions, option
from headprune.defenses.weight_edits import (
    EditSequence,
    EmbeddingPurify,
    FineMix,
    WeightEdit,
    token_counts,
)
from headprune.workbench import Workbench
from headprune.engine.finetuning import FineTuneConfig

__all__ = ["DEFAULT_GRID", "FineMixDefense", "FineMixOptions", "choose_mix_ratio"]

DEFAULT_GRID = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
"""The mixing probabilities tried, largest first."""


def choose_mix_ratio(bench: Workbench, base: nn.Module, grid: Sequence[float], config: FineTuneConfig, *,
                     embeddings: bool = True, progress: bool = False, pre_edit: WeightEdit | None = None
                     ) -> tuple[float, list[dict[str, Any]]]:
    """The largest ``p`` of ``grid`` whose mixed model, after a short clean fine-tune (``config``, on the
    workbench's training rows), has validation accuracy (the workbench's held-out clean rows) at or above the workbench's
    floor (the repaired-floor rule, :func:`~headprune.defenses.repaired_floor.deepest_repaired`); ``0.0`` (no
    mixing) when none does. Each candidate is mixed with the workbench's seed, as the final edit is (after
    ``pre_edit``, e.g. E-PUR, when given), so the chosen ``p`` is scored on the very edit kept.

    :return: ``(p, trace)``, ``trace = [{"p", "accuracy"}]`` in the order tried (largest ``p`` first,
        stopping at the first that holds the floor).
    """
    mixes = [(p, FineMix(base, p, bench.base_seed, embeddings)) for p in sorted({float(x) for x in grid}, reverse=True)]
    candidates = [RepairCandidate({"p": p}, mix if pre_edit is None else EditSequence([pre_edit, mix]))
                  for p, mix in mixes]
    kept, trace = deepest_repaired(bench, candidates, config, progress="finemix" if progress else False)
    return (0.0 if kept is None else candidates[kept].label["p"]), trace


@dataclass(frozen=True)
class FineMixOptions(DefenseOptions):
    """The options of ``finemix``."""

    p: float | None = option(None, "probability of each weight going back to the pre-trained value (None: the "
                                   "largest p of grid that holds the floor)", low=0.0, high=1.0)
    grid: list[float] = option(list(DEFAULT_GRID), "the p values tried, largest first", low=0.0, high=1.0)
    select_epochs: float = option(1.0, "epochs of the short fine-tune that scores each p", low=0.0)
    select_max_steps: int | None = option(None, "cap on the steps of that fine-tune (None: none)", low=1)
    embeddings: bool = option(True, "mix the embedding tables too (False keeps the fine-tuned ones)")
    epur_tokens: int = option(0, "word embeddings E-PUR resets before the mix (0: off)", low=0)
    epur_min_count: float = option(20.0, "E-PUR's least token count in its score drift / log(count)",
                                   low=1.0, low_open=True)


@DEFENSES.register("finemix")
class FineMixDefense(Defense):
    """Fine-mixing: each encoder weight back to its pre-trained value with probability ``p``, then the
    protocol's clean fine-tune.

    Options (:class:`FineMixOptions`): ``p`` (fixed; default ``None``: chosen by :func:`choose_mix_ratio` over
    ``grid``), ``grid`` (:data:`DEFAULT_GRID`), ``select_epochs`` (1.0) and ``select_max_steps`` (``None``) of the
    short fine-tune that scores each candidate (at the defense's lr, 2e-5), ``embeddings`` (``True``),
    ``epur_tokens`` (0 = off: the number of word embeddings E-PUR resets before the mix) and
    ``epur_min_count`` (20: :func:`~headprune.defenses.weight_edits.suspicious_tokens`).

    Differs from the paper (as we read it):
    (1) ``p`` is the probability of going BACK to the pre-trained weight (the paper speaks of the share of
    fine-tuned weights kept, ``1 - p``); (2) the ratio is chosen by headprune's floor rule: the largest ``p``
    of a grid whose validation accuracy after a SHORT clean fine-tune (one epoch by default, not the full
    fine-tune, to keep the search affordable) is at or above the workbench's floor, on the defender's held-out
    validation rows only, never on test rows or LFR; (3) the embedding tables are mixed like every other
    encoder weight (``embeddings=True``; ``False`` keeps the fine-tuned embeddings); the paper's Embedding
    Purification (E-PUR) is the option ``epur_tokens``, off by default, with token frequencies counted on the
    defender's clean training rows (the paper counts them on a large clean corpus) and the score
    ``drift / log(max(count, epur_min_count))`` (our reading of the paper's rule); (4) only the random
    elementwise mix. The task head (absent from the pre-trained model) is never mixed.
    """

    name = "finemix"
    needs_base = True
    description = "Fine-mixing: weights back to pre-trained with probability p, then clean fine-tuning"
    options_class = FineMixOptions
    option_values: FineMixOptions
    fast_options = {"grid": [0.5, 0.1], "select_max_steps": 2}
    holds_floor = False

    def prune(self, bench: Workbench, *, progress: bool = False) -> DefenseOutcome:
        base = self.reference(bench)
        opts = self.option_values
        embeddings = opts.embeddings
        details: dict[str, Any] = {}
        purify = self._embedding_purify(bench, base)
        if opts.p is not None:
            p = opts.p
        else:
            config = FineTuneConfig(epochs=opts.select_epochs, lr=self.finetune_lr, max_length=bench.max_length,
                                    seed=bench.base_seed, max_steps=opts.select_max_steps)
            p, details["p_selection"] = choose_mix_ratio(bench, base, opts.grid, config,
                                                         embeddings=embeddings, progress=progress, pre_edit=purify)
        details["p"] = p
        mask, trajectory, _ = unpruned_outcome(bench)
        mix = FineMix(base, p, bench.base_seed, embeddings)
        return DefenseOutcome(mask, trajectory, details, mix if purify is None else EditSequence([purify, mix]))

    def _embedding_purify(self, bench: Workbench, base: nn.Module) -> EmbeddingPurify | None:
        """E-PUR over the workbench's clean training rows, or ``None`` when ``epur_tokens`` is 0."""
        top = self.option_values.epur_tokens
        if top == 0:
            return None
        vocab = int(bench.model.get_input_embeddings().weight.shape[0])
        counts = token_counts(bench.tokenizer, bench.train_data.sentences, vocab, bench.max_length)
        return EmbeddingPurify.ranked(bench.model, base, counts, top, self.option_values.epur_min_count)
