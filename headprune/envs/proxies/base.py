"""The proxy protocol (:class:`BackdoorProxy`), the registry :data:`PROXIES` and shared helpers."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from headprune.data import LabelledTexts
from headprune.envs.memo import StateMemo, state_key
from headprune.engine.gating import head_grid_shape
from headprune.common.registry import Registry

__all__ = ["PROXIES", "BackdoorProxy", "balanced_subset", "make_proxy"]

PROXIES: Registry[type[BackdoorProxy]] = Registry("proxy")
"""Every proxy class by name (a :class:`~headprune.common.registry.Registry`: ``PROXIES.get(name)``, ``in``, ``list``)."""


def balanced_subset(labels: Sequence[int], n_per_class: int, seed: int) -> list[int]:
    """Indices of up to ``n_per_class`` rows of each label, drawn without replacement with a
    generator seeded by ``seed``; returned sorted (so the subset does not depend on label order)."""
    y = np.asarray(list(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        take = min(n_per_class, rows.size)
        chosen.extend(int(i) for i in rng.choice(rows, size=take, replace=False))
    return sorted(chosen)


def _subset_texts(clean: LabelledTexts, idx: Sequence[int]) -> LabelledTexts:
    return LabelledTexts(tuple(clean.sentences[i] for i in idx), tuple(int(clean.labels[i]) for i in idx),
                         f"{clean.source}[proxy subset of {len(idx)}]")


class BackdoorProxy(ABC):
    """A trigger-agnostic backdoor score of ``model`` under a head mask.

    Args:
        model: a sequence classifier (any family :class:`~headprune.engine.gating.HeadGate` supports). It is
            used in eval mode and never modified; its weights must stay fixed while the proxy lives.
        tokenizer: its tokenizer.
        clean: the defender's clean labelled texts (the only data a proxy sees).
        seed: seeds every random choice of the proxy.
        cache_size: masks whose values are memoised (0 turns memoisation off).

    Calling the proxy with a mask ``[L, H]`` (0/1; bool, int or float) returns a Python float; higher
    means more backdoor-like.
    """

    name: ClassVar[str]
    #: the interval the values lie in (documented, tested).
    value_range: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def __init__(self, model: nn.Module, tokenizer: Any, clean: LabelledTexts, *, seed: int = 0,
                 cache_size: int = 4096) -> None:
        if len(clean) == 0:
            raise ValueError("a proxy needs some clean texts")
        self.model = model
        self.tokenizer = tokenizer
        self.seed = int(seed)
        self.shape: tuple[int, int] = head_grid_shape(model)
        self.cache_size = int(cache_size)
        self._cache: StateMemo[float] = StateMemo(self.cache_size)

    def _check(self, mask: torch.Tensor) -> torch.Tensor:
        m = torch.as_tensor(mask).detach().cpu()
        if tuple(m.shape) != self.shape:
            raise ValueError(f"mask must be {list(self.shape)}, got {list(m.shape)}")
        m = m.float()
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("a proxy mask must hold only 0 and 1")
        return m

    def __call__(self, mask: torch.Tensor, reset: torch.Tensor | None = None,
                 mix: torch.Tensor | None = None) -> float:
        """The proxy value under ``mask`` ``[L, H]`` (1 = active head) with the heads where ``reset``
        ``[L, H]`` is true reset to the pre-trained reference and the blocks of
        :class:`~headprune.envs.mixing.BlockMixer` mixed to the levels ``mix`` ``[B]`` (int).

        A proxy that reads the model sees reset heads and mixed blocks only if the caller has put those
        weights into the model for the call (:class:`~headprune.envs.incremental.MaskScorer` does,
        through :func:`headprune.engine.reference.heads_reset_to` and :meth:`BlockMixer.mixed`); values are
        memoised by the whole state (:func:`~headprune.envs.memo.state_key`).
        """
        m = self._check(mask)
        r = None if reset is None else self._check(reset)
        if r is not None and not bool(r.any()):
            r = None
        levels = None if mix is None or not bool(torch.as_tensor(mix).any()) else torch.as_tensor(mix).long()
        key = state_key(m, r, levels)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if levels is not None:
            value = float(self._compute_with_mix(m, r, levels))
        else:
            value = float(self._compute(m) if r is None else self._compute_with_reset(m, r))
        if not math.isfinite(value):
            raise RuntimeError(f"{self.name} proxy returned {value}")
        self._cache[key] = value
        return value

    def _compute_with_reset(self, mask: torch.Tensor, reset: torch.Tensor) -> float:
        """The value under a mask and a (non-empty) float 0/1 reset set ``[L, H]``. Default:
        :meth:`_compute` of the mask, right for proxies that read the model (which carries the reset
        weights during the call); a proxy computed once from the unpruned model (``pure_variance``)
        thereby counts a reset head like an untouched active one."""
        return self._compute(mask)

    def _compute_with_mix(self, mask: torch.Tensor, reset: torch.Tensor | None, mix: torch.Tensor) -> float:
        """The value under a mask, a reset set (``None``: none) and non-zero mixing levels ``[B]``. Default: the
        value without the mix, right for proxies that read the model (which carries the mixed weights during
        the call); a proxy computed once from the unmixed model (``pure_variance``, ``drift_mass``) thereby does
        not see the mix (issue 24, item 2: a proxy that ranks mixing states is open)."""
        return self._compute(mask) if reset is None else self._compute_with_reset(mask, reset)

    @abstractmethod
    def _compute(self, mask: torch.Tensor) -> float:
        """The value under a validated float mask ``[L, H]``."""

    def clear_cache(self) -> None:
        """Forget memoised values (needed only if the model's weights were changed in place)."""
        self._cache.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, shape={self.shape})"


def _class_asymmetry(rates: Sequence[float]) -> float:
    """``max_c rate_c - min_c rate_c``."""
    return float(max(rates) - min(rates))



def _word_token_ids(tokenizer: Any) -> torch.Tensor:
    """Sorted ids of whole-word alphabetic ASCII vocabulary tokens (>= 2 letters, not special)."""
    special = set(getattr(tokenizer, "all_special_tokens", []))
    vocab = tokenizer.get_vocab()
    ids = sorted(i for t, i in vocab.items()
                 if t.isascii() and t.isalpha() and len(t) >= 2 and t not in special)
    if not ids:
        raise ValueError(f"{type(tokenizer).__name__}: no whole-word vocabulary tokens found")
    return torch.tensor(ids, dtype=torch.long)


def make_proxy(name: str, model: nn.Module, tokenizer: Any, clean: LabelledTexts, *, seed: int = 0,
               **kwargs: Any) -> BackdoorProxy:
    """Build the proxy registered as ``name`` in :data:`PROXIES` with its keyword arguments.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    return PROXIES.get(name)(model, tokenizer, clean, seed=seed, **kwargs)
