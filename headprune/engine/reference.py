"""The public pre-trained reference: the model a suspect classifier was fine-tuned from.

Every defender of a fine-tuned BERT/MiniLM/RoBERTa also has the public pre-trained checkpoint it
started from. It carries no trigger knowledge, and the backdoor was written during fine-tuning, so how
far a head moved from it (its *drift*) is a fair, trigger-agnostic signal, and copying its weights back
into a head (a *reset*) undoes whatever fine-tuning wrote there.

* :func:`resolve_base` finds the reference of a victim or a checkpoint (``base=`` overrides);
* :func:`check_compatible` refuses a reference whose head grid or encoder shapes differ;
* :func:`head_weight_drift` gives the ``[L, H]`` relative weight drift of every head;
* :func:`reset_heads` copies the reference's Q/K/V rows and output columns into chosen heads;
* :func:`heads_reset_to` does the same for the length of a ``with`` block and restores the suspect's
  own weights exactly afterwards (how the env scores a state with reset heads without keeping a copy);
* :func:`weights_digest` is the sha256 of a model's state (cache keys of anything computed from it);
* :func:`shared_parameters` pairs the encoder parameters the two models share (Fine-mixing mixes them).

The per-head weights go through the architecture adapters (:mod:`headprune.architectures`), so every
supported family works the same way.

Trust: the reference of a victim is the one its kind names in the victims' table
(:data:`~headprune.victims.bases.PRETRAINED_BASES`: the offline MiniLM folder, a tiny victim's seeded random
initialisation); for any other model the reference must be given (``base=``, a folder or
a hub id). A checkpoint's own ``_name_or_path`` is used only when it is a plain hub id (``org/name``,
no path) and the machine is online: a folder named inside an untrusted checkpoint is never opened.
A checkpoint whose config names no usable hub id (``save_pretrained`` writes the folder it was loaded
from) is matched by its WEIGHTS against the bases that ship offline (:func:`recognise_offline_base`:
same shapes and a relative encoder drift below :data:`RECOGNISE_MAX_DRIFT`); nothing in the checkpoint
chooses what is loaded. Weights are loaded from safetensors only (never unpickled).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from headprune.architectures import AttentionSite, find_attention_sites

__all__ = ["OFFLINE_BASES", "RECOGNISE_MAX_DRIFT", "BaseModelError", "check_compatible", "encoder_drift",
           "head_weight_drift", "heads_reset_to", "recognise_offline_base", "reset_heads", "resolve_base",
           "resolve_base_with_source", "shared_parameters", "weights_digest"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


OFFLINE_BASES: dict[str, str] = {"sentence-transformers/all-MiniLM-L6-v2": "minilm"}
"""Hub ids whose weights ship offline (``headprune.engine.models.load_classifier`` names): a checkpoint fine-tuned from
one of them finds its reference without internet. A fixed table: a checkpoint's config never names a path."""


RECOGNISE_MAX_DRIFT = 0.2
"""Largest relative encoder drift (:func:`encoder_drift`) at which a checkpoint counts as fine-tuned from an
offline base. Measured: our MiniLM victims (3 epochs at lr 5e-5) and their clean reference sit at 0.014-0.015
from all-MiniLM-L6-v2; a random initialisation of the same config at 1.05."""


class BaseModelError(ValueError):
    """No usable pre-trained reference: it cannot be found, or its shapes differ from the suspect's."""


# ------------------------------------------------------------------------------------------ resolution
def _load_base(source: str | os.PathLike[str], num_labels: int) -> PreTrainedModel:
    """The reference as a sequence classifier (its new classification head is never compared)."""
    from headprune.engine.models import ModelLoadError, load_classifier

    try:
        model, _ = load_classifier(str(source), num_labels=num_labels, seed=0)
    except ModelLoadError as err:
        raise BaseModelError(f"the pre-trained reference {os.fspath(source)!r} cannot be loaded: {err}") from err
    return model


def resolve_base(suspect: Any, base: str | os.PathLike[str] | nn.Module | None = None) -> nn.Module:
    """The pre-trained reference of ``suspect`` (a :class:`~headprune.victims.Victim` or a model).

    :param suspect: a victim (its config names how it was built) or a ``transformers`` classifier.
    :param base: a model object, a folder or a hub id; default: a victim's base from the victims' table
        (:data:`~headprune.victims.bases.PRETRAINED_BASES`), else the checkpoint's
        ``_name_or_path`` when it is a plain hub id (a bundled one offline, any one online), else the
        offline base its weights match (:func:`recognise_offline_base`).
    :raises BaseModelError: when no reference can be found (with the ``base=`` hint) or it does not
        match the suspect (:func:`check_compatible`).
    """
    return resolve_base_with_source(suspect, base)[0]


def resolve_base_with_source(suspect: Any, base: str | os.PathLike[str] | nn.Module | None = None
                             ) -> tuple[nn.Module, str]:
    """:func:`resolve_base` and how the reference was found, in words (for reports)."""
    from headprune.victims import Victim
    from headprune.victims.bases import PRETRAINED_BASES

    model = suspect.model if isinstance(suspect, Victim) else suspect
    num_labels = int(getattr(model.config, "num_labels", 2))
    if isinstance(base, nn.Module):
        reference, source = base, "given (a model object)"
    elif base is not None:
        reference, source = _load_base(base, num_labels), f"given: {os.fspath(base)}"
    elif isinstance(suspect, Victim) and suspect.config.model in PRETRAINED_BASES:  # the victims' own table
        found, source = PRETRAINED_BASES[suspect.config.model](suspect)
        reference = found if isinstance(found, nn.Module) else _load_base(found, num_labels)
    else:  # the checkpoint's hub id (a known offline one is read from its bundled copy), else its weights
        try:
            hub_id = _hub_id_of(model)
            reference, source = _load_base(hub_id, num_labels), f"the hub id in the checkpoint's config ({hub_id})"
        except BaseModelError as err:
            recognised = recognise_offline_base(model)
            if recognised is None:
                found, _, hint = str(err).rpartition(": pass base=")
                raise BaseModelError(f"{found or err}, and its weights match none of the offline bases "
                                     f"({', '.join(OFFLINE_BASES)}) within relative drift {RECOGNISE_MAX_DRIFT}"
                                     + (f": pass base={hint}" if found else "")) from err
            reference, hub_id, drift = recognised
            source = f"recognised by its weights as {hub_id} (relative encoder drift {drift:.3f})"
    check_compatible(model, reference)
    return reference.eval(), source


def encoder_drift(model: nn.Module, base: nn.Module) -> float:
    """Relative distance ``||theta - theta_0|| / ||theta_0||`` over the encoder parameters both hold
    (:func:`shared_parameters`; the task head excluded): how far ``model`` moved from ``base``."""
    moved = total = 0.0
    with torch.no_grad():
        for _, param, other in shared_parameters(model, base):
            moved += float((param.detach().float() - other.float()).pow(2).sum())
            total += float(other.float().pow(2).sum())
    return (moved / total) ** 0.5 if total > 0 else float("inf")


def recognise_offline_base(model: nn.Module) -> tuple[nn.Module, str, float] | None:
    """``(reference, hub id, drift)`` of the offline base (:data:`OFFLINE_BASES`) ``model`` was fine-tuned
    from, recognised by its weights: the first with the same head grid and encoder shapes
    (:func:`check_compatible`) and :func:`encoder_drift` at most :data:`RECOGNISE_MAX_DRIFT`; ``None`` if none."""
    num_labels = int(getattr(model.config, "num_labels", 2))
    for hub_id, name in OFFLINE_BASES.items():
        if not _same_shape_config(model, name):
            continue  # no weights loaded for a base of another size
        try:
            candidate = _load_base(name, num_labels)
            check_compatible(model, candidate)
        except BaseModelError:
            continue
        drift = encoder_drift(model, candidate)
        if drift <= RECOGNISE_MAX_DRIFT:
            return candidate.eval(), hub_id, drift
    return None


def _same_shape_config(model: nn.Module, name: str) -> bool:
    """Whether the offline base ``name``'s config (read alone, no weights) has ``model``'s layer count,
    width, heads and vocabulary; True when either config lacks one of them (the weights decide)."""
    from transformers import AutoConfig

    from headprune.engine.models import DEFAULT_MODEL, default_model_dir

    if name != DEFAULT_MODEL:
        return True
    theirs = AutoConfig.from_pretrained(str(default_model_dir()))
    keys = ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")
    return all(getattr(model.config, k, None) is None or getattr(theirs, k, None) is None
               or getattr(model.config, k) == getattr(theirs, k) for k in keys)


def _hub_id_of(model: nn.Module) -> str:
    name = str(getattr(model.config, "_name_or_path", "") or "")
    from headprune.engine.models import _offline

    if name in OFFLINE_BASES:
        return OFFLINE_BASES[name]
    if not _HUB_ID.match(name) or Path(name).exists():
        raise BaseModelError(f"no pre-trained reference known for this {type(model).__name__} "
                             f"(its config names {name!r}, not a hub id): pass base= (a folder or a hub id)")
    if _offline():
        raise BaseModelError(f"the pre-trained reference {name!r} is a hub id and this machine is offline: "
                             f"pass base= (a local folder)")
    return name


def check_compatible(model: nn.Module, base: nn.Module) -> None:
    """Refuse a reference with another head grid, family or encoder parameter shape.

    :raises BaseModelError: naming the first mismatch.
    """
    sites, base_sites = find_attention_sites(model), find_attention_sites(base)
    grid = [(s.family, s.num_heads, s.head_dim) for s in sites]
    base_grid = [(s.family, s.num_heads, s.head_dim) for s in base_sites]
    if grid != base_grid:
        raise BaseModelError(f"the reference's attention layers {base_grid} differ from the suspect's {grid}")
    base_params = dict(base.named_parameters())
    for name, param in _encoder_parameters(model):
        other = base_params.get(name)
        if other is not None and other.shape != param.shape:
            raise BaseModelError(f"parameter {name}: reference shape {tuple(other.shape)} != suspect "
                                 f"shape {tuple(param.shape)}")


# ------------------------------------------------------------------------------------------ parameters
def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Names of the task head's modules (not in the pre-trained model, never mixed or compared)."""
    prefixes = [name for name, _ in model.named_children() if name in ("classifier", "score", "pre_classifier",
                                                                       "qa_outputs", "lm_head")]
    return tuple(f"{p}." for p in prefixes)


def _encoder_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    heads = _classifier_prefixes(model)
    for name, param in model.named_parameters():
        if not name.startswith(heads):
            yield name, param


def shared_parameters(model: nn.Module, base: nn.Module) -> list[tuple[str, nn.Parameter, torch.Tensor]]:
    """``(name, suspect parameter, reference tensor)`` for every encoder parameter both models hold
    with the same shape (the task head excluded), in the suspect's parameter order."""
    base_params = dict(base.named_parameters())
    out = []
    for name, param in _encoder_parameters(model):
        other = base_params.get(name)
        if other is not None and other.shape == param.shape:
            out.append((name, param, other.detach()))
    return out


# ------------------------------------------------------------------------------------------ heads
def _head_pairs(model: nn.Module, base: nn.Module) -> Iterator[tuple[AttentionSite, AttentionSite]]:
    yield from zip(find_attention_sites(model), find_attention_sites(base), strict=True)


def head_weight_drift(model: nn.Module, base: nn.Module) -> torch.Tensor:
    """``[L, H]`` float: each head's relative Frobenius distance from the reference,
    ``||W - W_base||_F / ||W_base||_F`` over its Q/K/V rows (and biases) and output-projection columns
    concatenated (the adapters' :meth:`head_weights`). 0 = untouched by fine-tuning."""
    rows = []
    with torch.no_grad():
        for site, base_site in _head_pairs(model, base):
            drift = []
            for head in range(site.num_heads):
                mine = site.adapter.head_weights(site, head)
                ref = base_site.adapter.head_weights(base_site, head)
                diff = sum(float((mine[k].double() - ref[k].double()).pow(2).sum()) for k in mine)
                norm = sum(float(ref[k].double().pow(2).sum()) for k in mine)
                drift.append((diff / norm) ** 0.5 if norm > 0 else float(diff > 0))
            rows.append(drift)
    return torch.tensor(rows, dtype=torch.float32)


def reset_heads(model: nn.Module, base: nn.Module, heads: torch.Tensor) -> int:
    """Copy the reference's Q/K/V rows and output columns into the heads where ``heads`` is true.

    :param heads: ``[L, H]`` bool (or 0/1) tensor, True = reset this head.
    :return: the number of heads reset. Under grouped-query attention a head's K/V rows are its
        group's, so resetting one head resets those rows for the whole group (see the adapter's
        ``heads_sharing_parameters``).
    """
    chosen = heads.bool()
    pairs = list(_head_pairs(model, base))
    if tuple(chosen.shape) != (len(pairs), pairs[0][0].num_heads):
        raise ValueError(f"heads must be [L, H] = {(len(pairs), pairs[0][0].num_heads)}, got {tuple(chosen.shape)}")
    count = 0
    with torch.no_grad():
        for site, base_site in pairs:
            for head in chosen[site.layer].nonzero().flatten().tolist():
                site.adapter.set_head_weights(site, head, base_site.adapter.head_weights(base_site, head))
                count += 1
    return count


@contextmanager
def heads_reset_to(model: nn.Module, base: nn.Module | None, heads: torch.Tensor | None) -> Iterator[int]:
    """Within the block, the heads where ``heads`` is true carry the reference's weights
    (:func:`reset_heads`); on exit every changed parameter slice gets the suspect's own values back,
    bit for bit (also when the block raises).

    :param model: the suspect (changed in place for the block's duration only).
    :param base: the reference; may be ``None`` only when no head is chosen.
    :param heads: ``[L, H]`` bool (or 0/1) tensor, or ``None`` (nothing reset).
    :return: (as the ``with`` target) the number of heads reset.
    """
    if heads is None or not bool(torch.as_tensor(heads).bool().any()):
        yield 0
        return
    if base is None:
        raise BaseModelError("heads to reset but no pre-trained reference: pass base=")
    chosen = torch.as_tensor(heads).bool()
    saved = [(site, head, site.adapter.head_weights(site, head)) for site in find_attention_sites(model)
             for head in chosen[site.layer].nonzero().flatten().tolist()]
    try:
        yield reset_heads(model, base, chosen)
    finally:
        for site, head, weights in reversed(saved):  # reversed: shared (grouped K/V) rows end as they began
            site.adapter.set_head_weights(site, head, weights)


def weights_digest(model: nn.Module) -> str:
    """sha256 of ``model``'s state (names and raw bytes of every tensor; about 0.1 s for MiniLM)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()
