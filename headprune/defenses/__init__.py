"""Defenses: objects with one protocol (:class:`Defense`: ``prune(bench)`` then ``finetune(model, bench, mask,
config)``), registered by name in :data:`DEFENSES`, and :func:`defend`, which runs any of them on a victim.

One module per defense or small family: :mod:`~headprune.defenses.random_heads`, :mod:`~.gradient`,
:mod:`~.layerwise`, :mod:`~.sparsify`, :mod:`~.ensemble`, :mod:`~.mcdropout`, :mod:`~.egreedy` (scripted
pruning policies run in ``HeadPrune-v0``, :mod:`~.scripted`), :mod:`~.pure` (PURE), :mod:`~.finetuning`
(FT, FTH, MEFT and ``none``), and the reference-based defenses that use the public pre-trained model
(:mod:`~.drift`, :mod:`~.reset_attention`, :mod:`~.finemix`, :mod:`~.finepurify`, :mod:`~.distill`,
:mod:`~.purify`; their weight edits in :mod:`~.weight_edits`). Trained agents are
:class:`headprune.agents.AgentDefense`. To add a
defense, write one class with ``@DEFENSES.register("name")`` (its options: a frozen
:class:`~headprune.defenses.defense_options.DefenseOptions` dataclass as ``options_class``) and import its module here.
"""

from headprune.defenses.base import (
    DEFENSES,
    Defense,
    DefenseFineTune,
    DefenseOutcome,
    PruneOutcome,
    Stage,
    check_reads_unlabelled,
    defense_names,
    get_defense,
    validation_rows,
)
from headprune.defenses.defense_options import DefenseOptions, option, options_help
from headprune.defenses.scripted import (
    GivenPolicyDefense,
    PolicyDefense,
    ScriptedPolicy,
    ScriptedPolicyDefense,
    ScriptedPolicyOptions,
    run_policy_episode,
)

# registration order is the order of tables and of ``--help``
from headprune.defenses.random_heads import RandomPolicy, RandomPruning  # noqa: I001
from headprune.defenses.gradient import GradientPolicy, GradientPruning
from headprune.defenses.layerwise import LayerwiseVariancePolicy, LayerwiseVariancePruning, layer_rates
from headprune.defenses.sparsify import SparsificationPolicy, SparsificationPruning
from headprune.defenses.ensemble import EnsemblePolicy, EnsemblePruning
from headprune.defenses.mcdropout import MCDropoutPolicy, MCDropoutPruning
from headprune.defenses.egreedy import EpsilonGreedyPolicy, EpsilonGreedyPruning
from headprune.defenses.pure import PureAttentionRegulariser, PureDefense, pure_norm_coefficients, pure_prune
from headprune.defenses.finetuning import (
    FineTuneDefense,
    HighLRFineTuneDefense,
    MaxEntropyFineTuneDefense,
    NoDefense,
    max_entropy_loss,
)
from headprune.defenses.drift import DriftDefense, DriftPolicy, reset_until_floor
from headprune.defenses.reset_attention import ResetAttentionDefense
from headprune.defenses.finemix import FineMixDefense, choose_mix_ratio
from headprune.defenses.finepurify import FinePurifyDefense, purify_scores
from headprune.defenses.distill import DistillDefense, ReferenceWarning, distillation_targets
from headprune.defenses.purify import PurifyDefense
from headprune.defenses.weight_edits import AttentionReset, FineMix, HeadReset, WeightEdit
from headprune.defenses.defend import DefenseResult, defend, resolve_defense, run_defense

__all__ = [
    "DEFENSES", "AttentionReset", "Defense", "DefenseFineTune", "DefenseOptions", "DefenseOutcome", "DefenseResult",
    "DistillDefense", "ScriptedPolicyOptions", "option", "options_help",
    "DriftDefense", "DriftPolicy", "PurifyDefense", "Stage", "run_defense", "EnsemblePolicy", "EnsemblePruning", "FineMix", "FineMixDefense", "FinePurifyDefense",
    "HeadReset", "ReferenceWarning", "ResetAttentionDefense", "WeightEdit", "choose_mix_ratio", "purify_scores",
    "reset_until_floor",
    "EpsilonGreedyPolicy", "EpsilonGreedyPruning", "FineTuneDefense", "GivenPolicyDefense", "GradientPolicy",
    "GradientPruning", "HighLRFineTuneDefense", "LayerwiseVariancePolicy", "LayerwiseVariancePruning",
    "MCDropoutPolicy", "MCDropoutPruning", "MaxEntropyFineTuneDefense", "NoDefense", "PolicyDefense",
    "PruneOutcome", "PureAttentionRegulariser", "PureDefense", "RandomPolicy", "RandomPruning", "ScriptedPolicy",
    "ScriptedPolicyDefense", "SparsificationPolicy", "SparsificationPruning", "check_reads_unlabelled", "defend",
    "defense_names",
    "distillation_targets", "get_defense", "layer_rates", "max_entropy_loss", "pure_norm_coefficients", "pure_prune", "resolve_defense",
    "run_policy_episode", "validation_rows",
]
