"""Trigger-agnostic backdoor proxies: how backdoor-like a classifier looks under a head mask.

A proxy maps a head mask ``[L, H]`` (1 = active, 0 = pruned) to a float; HIGHER means MORE
backdoor-like. It reads only the model and the defender's clean labelled texts: never trigger
words, poisoned data or LFR. Every proxy is deterministic for a given ``(mask, seed)``, also across
two constructions with the same arguments (all sampling uses generators seeded by ``seed``; the
model runs in eval mode, so there is no dropout). Values are memoised by mask, so the model's
weights must not change after construction (build a new proxy after fine-tuning).

Proxies, one module each, registered in :data:`PROXIES` by ``@PROXIES.register(name)`` (adding one is
one new module in this package, imported below):

``soft_trigger`` (:class:`SoftTriggerProxy`)
    Class asymmetry of the success of a universal adversarial soft trigger (one embedding vector
    after [CLS], optimised with Adam on clean sentences).
``random_word_flip`` (:class:`RandomWordFlipProxy`)
    Class asymmetry of the net prediction flips caused by inserting random vocabulary words into
    clean sentences (forward-only over a perturbed set built once).
``cls_attention_concentration`` (:class:`ClsAttentionConcentrationProxy`)
    Mean over active heads of the largest [CLS] attention weight on a single content token.
``pure_variance`` (:class:`PureVarianceProxy`)
    PURE's [CLS]-attention variance, computed once for the unpruned model and summed over the
    mask's active heads (as a share of the total); free per call, and free to build when the caller
    passes the head statistics it already has.
``drift_mass`` (:class:`DriftMassProxy`)
    The share of the fine-tuning drift (distance from the public pre-trained reference) still carried
    by heads neither pruned nor reset; needs the env's ``base``.
``reference_disagreement`` (:class:`ReferenceDisagreementProxy`)
    The share of augmentations of clean rows on which the model's prediction flips while a weak reference (the
    public base fine-tuned briefly on the clean rows) does not; needs the env's ``base``. Measured at a fixed
    budget (issue 24, item 2): it ranks head masks on the natural triggers (Spearman +0.79 / +0.56 with LFR after
    the terminal fine-tune) but not mixing schedules (its sign changes between the attack halves).

Costs per call and the correlations with LFR behind :data:`DEFAULT_PROXY` are in
``benchmarks/RESULTS.md`` ("Backdoor proxies vs LFR"; ``benchmarks/proxy_evidence.py``).
"""

from __future__ import annotations

from headprune.envs.proxies.base import PROXIES, BackdoorProxy, balanced_subset, make_proxy
# isort: off  (import order = registration order = the order of the evidence tables)
from headprune.envs.proxies.soft_trigger import SoftTriggerProxy
from headprune.envs.proxies.random_word_flip import RandomWordFlipProxy
from headprune.envs.proxies.cls_attention_concentration import ClsAttentionConcentrationProxy
from headprune.envs.proxies.pure_variance import PureVarianceProxy
from headprune.envs.proxies.drift_mass import DriftMassProxy
from headprune.envs.proxies.reference_disagreement import ReferenceDisagreementProxy
# isort: on

__all__ = [
    "DEFAULT_PROXY",
    "NO_PROXY",
    "PROXIES",
    "BackdoorProxy",
    "ClsAttentionConcentrationProxy",
    "DriftMassProxy",
    "PureVarianceProxy",
    "RandomWordFlipProxy",
    "ReferenceDisagreementProxy",
    "SoftTriggerProxy",
    "balanced_subset",
    "make_proxy",
]

DEFAULT_PROXY: str = "pure_variance"
"""The proxy the env uses unless told otherwise: of the four, the only one whose correlation with LFR
was positive and significant on both MiniLM victims (syntactic and style), and free per step."""

NO_PROXY: str = "none"
"""The ``proxy`` value of a workbench whose scores need no proxy (``defend``: its reward weights are zero): no
proxy is built, so neither are the head statistics a proxy reads, and every score's ``proxy`` is 0.0. Not a
registered proxy: ``HeadPrune-v0`` refuses a workbench without one."""
