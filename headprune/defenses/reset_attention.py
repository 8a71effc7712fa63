"""Reset every attention block to the public pre-trained reference, feed-forward kept."""

from __future__ import annotations

from headprune.defenses.base import DEFENSES, Defense, DefenseOutcome, unpruned_outcome
from headprune.defenses.weight_edits import AttentionReset
from headprune.workbench import Workbench

__all__ = ["ResetAttentionDefense"]


@DEFENSES.register("reset-attention")
class ResetAttentionDefense(Defense):
    """Every attention block back to the pre-trained reference, then the protocol's clean fine-tune.

    What is reset (:func:`~headprune.defenses.weight_edits.attention_parameter_names`): every parameter of
    the attention module the architecture adapter reports and of its output projection. For the BERT
    family (BERT, MiniLM, RoBERTa) that is Q/K/V, the output projection (weight AND bias) and the attention
    output LayerNorm (``attention.output.LayerNorm``, inside ``BertAttention``); for DistilBERT, GPT-2 and
    Llama, whose attention norms sit outside the attention module, Q/K/V/O only. Feed-forward blocks, their
    norms, the embeddings and the task head keep their fine-tuned values. Not from a paper: the issue's
    measurement. No floor: the edit is fixed, so the "pruned" validation accuracy may be below the floor;
    the fine-tune recovers it.
    """

    name = "reset-attention"
    needs_base = True
    description = "reset every attention block to the pre-trained reference (feed-forward kept)"
    holds_floor = False

    def prune(self, bench: Workbench, *, progress: bool = False) -> DefenseOutcome:
        mask, trajectory, _ = unpruned_outcome(bench)
        return DefenseOutcome(mask, trajectory, {}, AttentionReset(self.reference(bench)))
