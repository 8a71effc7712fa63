"""The one configuration object of ``HeadPrune-v0``: :class:`HeadPruneConfig`.

The env takes a victim, one :class:`HeadPruneConfig` and ``render_mode``; ``gym.make`` keyword
arguments are config fields (``gym.make("HeadPrune-v0", victim="tiny", budget=4)``). Defenses and the
experiment runner pass the same object, so one set of names describes the defender's split, the floor,
the budget and the reward everywhere.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from headprune.common.finite import check_finite_fields

__all__ = ["OPERATIONS", "HeadPruneConfig", "episode_step_limit", "operation_units"]

OPERATIONS: tuple[str, ...] = ("prune", "reset", "mix")
"""The operations of ``HeadPrune-v0``, in action-block order: gate a head off, copy the reference's weights into
a head, or move one block of weights (an attention block, a feed-forward block, the embeddings) one step toward the
reference (:mod:`headprune.envs.mixing`). ``operation=`` names one, or several joined by ``+``
(``"prune+mix"``); ``"both"`` is ``"prune+reset"``."""


def operation_units(operation: object) -> tuple[str, ...]:
    """The operations of an ``operation=`` value, in :data:`OPERATIONS` order (the action layout's); ValueError
    naming the valid values for anything else (an unknown or repeated name, an empty part)."""
    parts = ("prune", "reset") if operation == "both" else tuple(operation.split("+")) if isinstance(
        operation, str) else ()
    if not parts or any(p not in OPERATIONS for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"operation must be one of {list(OPERATIONS)}, 'both' (= 'prune+reset') or several joined "
                         f"by '+' (e.g. 'prune+mix'), got {operation!r}")
    return tuple(op for op in OPERATIONS if op in parts)


def episode_step_limit(budget: int | None, max_steps: int | None) -> int | None:
    """The env's own step limit: ``max_steps``, else ``2 * budget`` (invalid actions count as steps); ``None`` when
    neither is known yet (the env resolves a missing budget from its model: half the heads)."""
    if max_steps is not None:
        return int(max_steps)
    return None if budget is None else 2 * int(budget)


def _check_unlabelled(config: HeadPruneConfig) -> None:
    """Make ``unlabelled_data`` a tuple of non-blank str (or leave ``None``); ValueError naming the field and the
    first bad entry's index otherwise (a bare str, which would be read as its characters, included)."""
    texts = config.unlabelled_data
    if texts is None:
        return
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise ValueError(f"unlabelled_data must be a sequence of sentences (str), got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"unlabelled_data[{i}] must be a non-blank sentence (str), got {text!r}")
    object.__setattr__(config, "unlabelled_data", tuple(texts))


def _help(text: str, **kwargs: Any) -> Any:
    """A dataclass field with its help text in ``metadata["help"]`` (shown by CLIs and docs)."""
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True)
class HeadPruneConfig:
    """Everything besides the victim and ``render_mode`` that defines a ``HeadPrune-v0`` env.

    Every field's help text is in ``dataclasses.fields(HeadPruneConfig)[i].metadata["help"]``.
    """

    clean_data: Any = _help("the defender's clean labelled rows (LabelledTexts) or a file path; "
                            "default: the victim's defender data (872 clean SST-2 dev rows)", default=None)
    unlabelled_data: Any = _help("in-domain sentences the defender owns WITHOUT labels (a sequence of str); only the "
                                 "distillation defenses (distill, purify) read them: the teacher labels them for the "
                                 "student; default: none", default=None)
    val_size: int = _help("defender rows held out for validation accuracy (seeded split); "
                          "the rest feed statistics, proxies and fine-tuning", default=256)
    stats_size: int = _help("at most this many non-validation rows for head statistics and the proxy",
                            default=256)
    accuracy_floor: float | None = _help("absolute validation-accuracy floor (give this or max_accuracy_drop)",
                                         default=None)
    max_accuracy_drop: float | None = _help("the floor as a drop below the unpruned validation accuracy "
                                            "(default 0.05 when no floor is given)", default=None)
    budget: int | None = _help("most heads pruned per episode (default: half the heads)", default=None)
    max_steps: int | None = _help("most steps per episode, invalid ones included (default 2 * budget)",
                                  default=None)
    proxy: Any = _help("backdoor proxy: a registered name or a BackdoorProxy subclass (default pure_variance); "
                       "'none' for a workbench whose scores need none (defend; not for the env)",
                       default=None)
    proxy_kwargs: Mapping[str, Any] = _help("extra keyword arguments of the proxy", default_factory=dict)
    reward_weights: Any = _help("RewardWeights or a mapping of its fields (default: accuracy 1, proxy 1)",
                                default=None)
    seed: int = _help("seeds the data split, the proxy and any fine-tune", default=0)
    eval_batch_size: int = _help("rows per forward when scoring a mask", default=32)
    cache: str | os.PathLike[str] | None = _help("cache root for victims and head statistics", default=None)
    progress: bool = _help("show progress bars while building a victim or statistics", default=True)
    base: Any = _help("the public pre-trained reference: 'auto' (the victim's known reference, see "
                      "headprune.engine.reference.resolve_base; none when it has none), a folder, a hub id or a model; "
                      "None or 'none': no reference (no drift statistics, no reset)", default="auto")
    operation: str = _help("what an action does: 'prune' (gate a head off), 'reset' (copy the reference's "
                           "weights into a head), 'mix' (one block of weights one step toward the reference), or "
                           "several joined by '+' ('prune+mix'; 'both' = 'prune+reset': Discrete(2n), a < n prunes "
                           "head a, a >= n resets head a - n); action blocks in the order prune, reset, mix",
                           default="prune")
    mix_levels: int = _help("steps of the 'mix' operation from a block's own weights to the reference's: each step "
                            "raises the block's Fine-mixing probability by 1 / mix_levels", default=10)
    score_every: int = _help("score the state (validation accuracy and proxy) on every k-th step and on the "
                             "episode's last; between scorings a step earns only its penalties and the observation's "
                             "summary holds the last score, so the return still telescopes to Phi(s_T) - Phi(s_0). "
                             "For a proxy that costs seconds a call (reference_disagreement); 1 (default): every step",
                             default=1)
    features: Any = _help("observation columns of head_stats: names from headprune.engine.head_stats.ALL_FEATURE_NAMES, "
                          "'all', or None (FEATURE_NAMES for operation 'prune', every feature otherwise)",
                          default=None)
    device: str | None = _help("where the model, the evaluator's batches and its caches live: cpu (default), "
                               "cuda, cuda:<i>, mps or auto (headprune.common.devices.resolve_device)", default=None)

    def __post_init__(self) -> None:
        check_finite_fields(self)  # NaN/inf in any field, reward_weights and proxy_kwargs included
        _check_unlabelled(self)
        for name in ("val_size", "stats_size", "eval_batch_size", "mix_levels", "score_every"):
            _check_int(self, name, minimum=1)
        for name in ("budget", "max_steps"):
            if getattr(self, name) is not None:
                _check_int(self, name, minimum=1)
        _check_int(self, "seed", minimum=None)
        for name in ("accuracy_floor", "max_accuracy_drop"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.accuracy_floor is not None and self.max_accuracy_drop is not None:
            raise ValueError("give accuracy_floor or max_accuracy_drop, not both")
        if self.max_accuracy_drop is not None and self.max_accuracy_drop < 0:
            raise ValueError(f"max_accuracy_drop must be >= 0, got {self.max_accuracy_drop}")
        object.__setattr__(self, "proxy_kwargs", dict(self.proxy_kwargs or {}))
        operation_units(self.operation)  # ValueError naming the valid values
        if self.mix_levels > 255:
            raise ValueError(f"mix_levels must be <= 255, got {self.mix_levels}")
        if isinstance(self.base, str) and self.base.lower() == "none":
            object.__setattr__(self, "base", None)
        if self.operation != "prune" and self.base is None:
            raise ValueError(f"operation={self.operation!r} moves weights to the pre-trained reference: give base=")
        _check_features(self)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The observation's head-statistic columns (``features`` with its default applied)."""
        from headprune.engine.head_stats import ALL_FEATURE_NAMES, FEATURE_NAMES

        if self.features is None:
            return FEATURE_NAMES if self.operation == "prune" else ALL_FEATURE_NAMES
        return ALL_FEATURE_NAMES if self.features == "all" else tuple(self.features)

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_kwargs(cls, base: HeadPruneConfig | Mapping[str, Any] | None = None, /,
                    **overrides: Any) -> HeadPruneConfig:
        """A config from ``base`` (a config or a mapping of fields) with ``overrides`` on top.

        Unknown keys raise ValueError naming them and the valid fields."""
        values: dict[str, Any] = {}
        if isinstance(base, HeadPruneConfig):
            values.update({f.name: getattr(base, f.name) for f in dataclasses.fields(cls)})
        elif base is not None:
            values.update(dict(base))
        values.update(overrides)
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown HeadPrune-v0 option(s) {unknown}; valid: {', '.join(cls.field_names())}")
        return cls(**values)

    def replace(self, **changes: Any) -> HeadPruneConfig:
        """A copy with ``changes`` (field names)."""
        return HeadPruneConfig.from_kwargs(self, **changes)

    @property
    def floor_drop(self) -> float | None:
        """``max_accuracy_drop`` with its default (0.05) applied when no floor of either kind is given."""
        if self.accuracy_floor is None and self.max_accuracy_drop is None:
            return 0.05
        return None if self.max_accuracy_drop is None else float(self.max_accuracy_drop)


def _check_int(config: HeadPruneConfig, name: str, *, minimum: int | None) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    object.__setattr__(config, name, value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_features(config: HeadPruneConfig) -> None:
    """Normalise ``features`` (a sequence becomes a tuple) and refuse unknown or repeated names."""
    from headprune.engine.head_stats import ALL_FEATURE_NAMES

    value = config.features
    if value is None or value == "all":
        return
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"features must be None, 'all' or a sequence of names, got {value!r}")
    names = tuple(value)
    unknown = sorted(set(names) - set(ALL_FEATURE_NAMES))
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"features {list(names)}: unknown {unknown} or repeated/empty; valid: {list(ALL_FEATURE_NAMES)}")
    object.__setattr__(config, "features", names)
