"""The head engine: everything a defense, the env and ``clean`` do to a classifier's attention heads.

* :mod:`~headprune.engine.models` – loading and validating any ``transformers`` sequence classifier.
* :mod:`~headprune.engine.gating` – :class:`~headprune.engine.gating.HeadGate`, the one head-gating mechanism.
* :mod:`~headprune.engine.evaluator` – batched scoring of head masks (clean accuracy, logits).
* :mod:`~headprune.engine.head_stats` – per-head statistics and the gate-gradient importance.
* :mod:`~headprune.engine.reference` – the public pre-trained base: resolution, weight drift per head, head reset.
* :mod:`~headprune.engine.head_drift` – drift statistics of the heads against that base.
* :mod:`~headprune.engine.finetuning` – clean fine-tuning with pruned heads held at zero.
* :mod:`~headprune.engine.export` – saving a pruned model plain ``transformers`` loads; compaction.
* :mod:`~headprune.engine.metrics` – :func:`~headprune.engine.metrics.evaluate_defense`, the only place LFR
  is computed (evaluation, never a defense).

Import the submodules; this package's ``__init__`` imports nothing, so importing one stays cheap.
"""
