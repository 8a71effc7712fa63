"""Per-architecture adapters: everything headprune knows about a transformer family, one module per family.

=================  ===================  ==========================================================
module             adapter name         blocks
=================  ===================  ==========================================================
``bert``           ``"bert"``           BERT, RoBERTa, ELECTRA, XLM-R, ...: ``attention.output.dense``
``distilbert``     ``"distilbert"``     DistilBERT ``MultiHeadSelfAttention``: ``out_lin``
``gpt2``           ``"gpt2"``           GPT-2 ``GPT2Attention`` (fused ``c_attn``, ``Conv1D``): ``c_proj``
``llama``          ``"llama"``          Llama, Mistral, Qwen2, ... ``*Attention``: ``o_proj`` (grouped KV)
=================  ===================  ==========================================================

Gating (:mod:`headprune.engine.gating`), export (:mod:`headprune.engine.export`), head parameter groups
(:mod:`headprune.defenses.head_groups`) and the incremental forward
(:mod:`headprune.envs.incremental`) call the adapter of a model's attention sites and never test the
family themselves. :func:`adapter_for` gives a model's adapter; :func:`find_attention_sites` its blocks.

To add an architecture, write ONE new module in this package (it is imported automatically) with a
subclass of :class:`~headprune.architectures.base.ArchitectureAdapter` decorated by
:func:`~headprune.architectures.base.register_architecture`, setting ``name``, ``description`` and
``model_types`` (the Hugging Face ``model_type``s ``tests/test_architectures.py`` builds and checks)
and implementing ``match`` (recognise a block: output projection and head_dim) and
``head_parameter_views`` (each head's Q/K/V rows and output columns). Override
``heads_sharing_parameters`` (grouped KV), ``projection_input_width``/``scale_head_inputs`` (an output
projection that is not ``nn.Linear``), ``compact_layer`` (physical head removal) and
``layerwise_forward`` (the incremental forward) where they apply.
"""

from __future__ import annotations

import importlib
import pkgutil

from headprune.architectures import base as _base
from headprune.architectures.base import *  # noqa: F403  (the public names of the adapter protocol)

__all__ = list(_base.__all__)

# Every public module of this package is an adapter: importing it registers it (in name order).
for _module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_") and _module != "base":
        importlib.import_module(f"{__name__}.{_module}")
