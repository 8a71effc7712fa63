"""The defender's workbench: what a defender has and has computed, in one plain object (no Gymnasium).

:class:`Workbench` holds the suspicious model and its tokenizer, the public pre-trained base (when one is
known), the seeded split of the defender's clean rows (statistics / fine-tune / validation), the head
statistics (cached on disk), the mask scorer with its memo (clean accuracy on the validation rows and the
trigger-agnostic proxy), the accuracy floor and the budget. ``defend``, every defense and ``clean`` take a
workbench; ``HeadPrune-v0`` (:class:`~headprune.envs.headprune_env.HeadPruneEnv`) is a Gymnasium view over
one (spaces, reward terms and the episode state), and the vector env's lanes share one::

    bench = Workbench("tiny", HeadPruneConfig(val_size=80, stats_size=64))
    bench.score_state(mask)            # MaskScore: accuracy on bench.val_data, proxy on bench.stats_data
    env = HeadPruneEnv(bench)          # the Gym view: the same split, statistics and scorer memo

A Python caller's clean rows enter here and their labels are checked against the model's classes; rows that
entered through ``clean`` or the CLI were checked there under their flag's name, carry the mark
(``LabelledTexts.checked_classes``) and are not scanned again.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from headprune.common.devices import model_on, resolve_device
from headprune.data import LabelledTexts, as_labelled_texts
from headprune.data.checks import check_labels
from headprune.engine.evaluator import Evaluator
from headprune.engine.gating import head_grid_shape
from headprune.engine.head_stats import HeadStats
from headprune.envs.config import HeadPruneConfig, operation_units
from headprune.envs.incremental import IncrementalForward, MaskScore, MaskScorer
from headprune.envs.mixing import BlockMixer
from headprune.envs.proxies import DEFAULT_PROXY, NO_PROXY, PROXIES, BackdoorProxy
from headprune.envs.stats_cache import env_reference, load_or_compute_stats
from headprune.victims import DEFAULT_VICTIM, Victim, resolve_victim

__all__ = ["Workbench"]


class Workbench:
    """The defender's model, data split, head statistics, scorer, floor and budget (see the module docstring).

    Attributes (read by the defenses; none is Gymnasium's):

    * ``victim``, ``model`` (on ``device``; a copy when moved), ``tokenizer``, ``max_length``;
    * ``val_data`` (held-out validation rows: accuracy and the floor, nothing else), ``train_data`` (the other
      rows: fine-tuning) and ``stats_data`` (the first ``stats_size`` rows of ``train_data``: statistics and
      the proxy), a split seeded by ``config.seed`` (``base_seed``); ``unlabelled_data``: the defender's
      in-domain sentences without labels (``config.unlabelled_data``; empty by default), read only by the
      distillation defenses;
    * ``base_model``: the public pre-trained reference, or ``None`` when none is known;
    * ``head_stats``: :class:`~headprune.engine.head_stats.HeadStats` ``[L, H]`` of the unpruned model on
      ``stats_data``, computed (or read from the disk cache) on first use; ``num_layers``, ``num_heads``,
      ``head_shape``;
    * ``proxy`` (and :meth:`build_proxy`; ``None`` with ``proxy="none"``), ``evaluator``, ``scorer`` (memoised
      :class:`MaskScore` of a mask; its ``proxy`` is 0.0 without a proxy), ``start_score`` (the unpruned model's);
    * ``accuracy_floor`` and ``budget`` (most heads changed, each mix step counting one);
    * ``mixer``: the :class:`~headprune.envs.mixing.BlockMixer` of the ``mix`` operation (``None`` without it).

    :param victim: a :class:`~headprune.victims.Victim`, a preset name or a victim folder.
    :param config: a :class:`~headprune.envs.config.HeadPruneConfig` (or a mapping of its fields); only its
        defender fields are read here (data, split, floor, budget, proxy, base, device, cache).
    :param overrides: config fields on top of ``config``.
    """

    def __init__(self, victim: Victim | str | os.PathLike[str] = DEFAULT_VICTIM,
                 config: HeadPruneConfig | Mapping[str, Any] | None = None, **overrides: Any) -> None:
        self.config = cfg = HeadPruneConfig.from_kwargs(config, **overrides)
        self.base_seed = int(cfg.seed)
        self.cache = cfg.cache
        self.victim = resolve_victim(victim, cache=cfg.cache, progress=cfg.progress)
        self.device = resolve_device(cfg.device)
        self.model = model_on(self.victim.model, self.device).eval()  # a copy when moved: the victim stays put
        self.tokenizer = self.victim.tokenizer
        self.max_length = int(self.victim.config.max_length)
        self._split_data(cfg)
        self.base_model = env_reference(self.victim, cfg.base)  # the public pre-trained reference, or None
        if cfg.operation != "prune" and self.base_model is None:
            raise ValueError(f"operation={cfg.operation!r} needs a pre-trained reference; none is known for "
                             f"{self.victim.name}: pass base= (a folder or a hub id)")
        self.num_layers, self.num_heads = head_grid_shape(self.model)
        self.mixer: BlockMixer | None = None  # the mix operation's blocks and seeded draws
        if "mix" in operation_units(cfg.operation):
            assert self.base_model is not None
            self.mixer = BlockMixer(self.model, self.base_model, cfg.mix_levels, self.base_seed)
        self._setup_proxy(cfg)
        self._setup_scorer(cfg)
        self._setup_limits(cfg)

    # ------------------------------------------------------------------------------ construction
    def _split_data(self, cfg: HeadPruneConfig) -> None:
        """A seeded split of the defender's clean rows: ``val_data`` (accuracy; used nowhere else),
        ``train_data`` (the rest: fine-tuning) and ``stats_data`` (its first ``stats_size`` rows:
        statistics and the proxy); ``unlabelled_data`` beside them."""
        clean = self.victim.defender_clean_data() if cfg.clean_data is None else as_labelled_texts(
            cfg.clean_data, "clean_data")
        clean = check_labels(clean, self.victim.model.config.num_labels, "clean_data")  # no rescan of checked rows
        if not 0 < cfg.val_size < len(clean):
            raise ValueError(f"val_size must be in [1, {len(clean) - 1}] for {len(clean)} clean rows, "
                             f"got {cfg.val_size}")
        perm = np.random.default_rng(self.base_seed).permutation(len(clean))
        rest = perm[cfg.val_size:]
        self.val_data: LabelledTexts = clean.subset(np.sort(perm[:cfg.val_size]))
        self.train_data: LabelledTexts = clean.subset(np.sort(rest))
        self.stats_data: LabelledTexts = clean.subset(np.sort(rest[:cfg.stats_size]))
        self.unlabelled_data: tuple[str, ...] = tuple(cfg.unlabelled_data or ())

    @functools.cached_property
    def head_stats(self) -> HeadStats:
        """:class:`~headprune.engine.head_stats.HeadStats` ``[L, H]`` of the unpruned model on ``stats_data`` (with
        the drift statistics when a base is known), computed on first use and cached on disk: a defense that
        reads none (``finemix``, ``purify``) under a workbench without a proxy never pays for them."""
        cfg = self.config
        return load_or_compute_stats(self.victim, self.stats_data, max_length=self.max_length,
                                     reference=self.base_model, cache=cfg.cache, progress=cfg.progress)

    def _setup_proxy(self, cfg: HeadPruneConfig) -> None:
        """The proxy class and its instance on the victim (``proxy_cls``, ``proxy``; both ``None`` for
        :data:`~headprune.envs.proxies.NO_PROXY`)."""
        self.proxy_kwargs = dict(cfg.proxy_kwargs or {})
        if cfg.proxy == NO_PROXY:
            self.proxy_cls: type[BackdoorProxy] | None = None
            self.proxy: BackdoorProxy | None = None
            return
        self.proxy_cls = self._proxy_class(DEFAULT_PROXY if cfg.proxy is None else cfg.proxy)
        self.proxy = self.build_proxy(self.model)

    @staticmethod
    def _proxy_class(proxy: str | type[BackdoorProxy]) -> type[BackdoorProxy]:
        if isinstance(proxy, str):
            return PROXIES.get(proxy)  # ValueError naming the known proxies
        if isinstance(proxy, type) and issubclass(proxy, BackdoorProxy):
            return proxy
        raise TypeError(f"proxy must be a proxy name or a BackdoorProxy subclass, got {proxy!r}")

    def build_proxy(self, model: torch.nn.Module, *, with_stats: bool = True,
                    proxy: str | type[BackdoorProxy] | None = None, **overrides: Any) -> BackdoorProxy:
        """A new instance of the configured proxy (or of ``proxy``, a name or a class: e.g. a candidate under
        evaluation) on ``model`` and the statistics rows, seeded like the split.

        :param model: the model the proxy reads (the victim, or a fine-tuned copy).
        :param with_stats: pass the cached head statistics to a proxy that accepts ``head_stats``
            (they describe the victim, so not for a fine-tuned copy).
        :param overrides: keyword arguments on top of ``proxy_kwargs`` (e.g. ``cache_size=0``).
        A proxy that accepts ``reference`` gets the pre-trained reference.
        """
        cls = self.proxy_cls if proxy is None else self._proxy_class(proxy)
        if cls is None:
            raise ValueError(f"this workbench was built with proxy={NO_PROXY!r}: give a proxy name to build one")
        kwargs = {**(self.proxy_kwargs if proxy is None else {}), **overrides}
        accepts = inspect.signature(cls.__init__).parameters
        if with_stats and "head_stats" in accepts and "head_stats" not in kwargs:
            kwargs["head_stats"] = self.head_stats
        if "reference" in accepts and "reference" not in kwargs:
            kwargs["reference"] = self.base_model
        return cls(model, self.tokenizer, self.stats_data, seed=self.base_seed, **kwargs)

    def _setup_scorer(self, cfg: HeadPruneConfig) -> None:
        """Incremental forward over the validation rows plus the proxy, memoised by mask; the start score."""
        self.evaluator = Evaluator(self.model, self.tokenizer, self.val_data, batch_size=cfg.eval_batch_size,
                                   max_length=self.max_length)
        self.scorer = MaskScorer(IncrementalForward(self.evaluator, reference=self.base_model, mixer=self.mixer),
                                 self.proxy)
        full = np.ones(self.num_layers * self.num_heads, dtype=np.int8)
        self.start_score: MaskScore = self.scorer(self.mask_tensor(full))

    def _setup_limits(self, cfg: HeadPruneConfig) -> None:
        """The accuracy floor and the budget (most heads pruned or reset)."""
        drop = cfg.floor_drop
        if drop is not None:
            self.accuracy_floor = self.start_score.accuracy - drop
        else:
            self.accuracy_floor = float(cfg.accuracy_floor)  # type: ignore[arg-type]
            if self.start_score.accuracy < self.accuracy_floor:
                raise ValueError(f"the unpruned model's accuracy {self.start_score.accuracy:.4f} on the validation "
                                 f"rows is already below accuracy_floor={self.accuracy_floor}")
        n = self.num_layers * self.num_heads
        self.budget = n // 2 if cfg.budget is None else int(cfg.budget)
        most = n + (0 if self.mixer is None else self.mixer.num_blocks * self.mixer.levels)  # mix steps count too
        if not 1 <= self.budget <= most:
            raise ValueError(f"budget must be in [1, {most}], got {self.budget}")

    # ------------------------------------------------------------------------------ masks
    @property
    def head_shape(self) -> tuple[int, int]:
        """``(L, H)``."""
        return self.num_layers, self.num_heads

    def mask_tensor(self, flat: np.ndarray) -> torch.Tensor:
        """``[L, H]`` float mask of a flat int8 mask ``[L * H]``."""
        return torch.from_numpy(flat.astype(np.float32)).view(self.num_layers, self.num_heads)

    def reset_tensor(self, flat: np.ndarray) -> torch.Tensor | None:
        """``[L, H]`` bool of a flat int8 reset set ``[L * H]``, or ``None`` when no head is reset."""
        return torch.from_numpy(flat != 0).view(self.num_layers, self.num_heads) if flat.any() else None

    def score_state(self, mask: np.ndarray, reset: np.ndarray | None = None, mix: np.ndarray | None = None
                    ) -> MaskScore:
        """:class:`MaskScore` of a flat int8 state (``mask`` ``[L * H]``, optionally ``reset`` ``[L * H]`` and the
        mixing levels ``mix`` ``[B]``), memoised."""
        return self.scorer(self.mask_tensor(mask), None if reset is None else self.reset_tensor(reset),
                           None if mix is None or not mix.any() else mix)
