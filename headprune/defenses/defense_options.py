"""Typed defense options: one frozen dataclass per defense (as peft's method configs), whose fields carry
their type, default and help (``metadata={"help": ...}``, with :func:`option` adding a range or a check).

A defense class names its options class in :attr:`~headprune.defenses.base.Defense.options_class`; the
defense's constructor builds it from the options the user gave (:meth:`DefenseOptions.from_mapping`), which
refuses, before any work and in one line naming the defense and the option, an unknown option (listing the
valid ones), a value of the wrong type (a bool for a number, ``2.5`` for an integer), NaN/inf, or a value out
of range. The same fields give ``headprune defend --help-options`` (:func:`options_help`). A run's config
still records only the options the user gave (``Defense.options``), so config hashes do not change.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from headprune.victims.card import check_number

__all__ = ["DefenseOptions", "option", "options_help"]


def option(default: Any, help: str, *, low: float | None = None, high: float | None = None,  # noqa: A002
           low_open: bool = False, high_open: bool = False, check: Callable[[Any, str], Any] | None = None) -> Any:
    """A field of a :class:`DefenseOptions` class: ``default``, its ``help`` text and an optional range
    (numbers, or each number of a list: ``low``/``high``, excluded with ``low_open``/``high_open``) or
    ``check(value, what)`` (returns the value to keep; ValueError naming ``what`` otherwise).

    A list or dict default is copied for each instance (``default_factory``)."""
    metadata = {"help": help, "low": low, "high": high, "low_open": low_open, "high_open": high_open, "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _type_name(hint: Any) -> str:
    """How help text and errors spell a field type (``int``, ``float | None``, ``'prune' | 'reset'``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (list, tuple, Sequence):
        return f"list[{_type_name(args[0])}]"
    if origin in (dict, Mapping):
        return "dict"
    if hint is type(None):
        return "None"
    return "any" if hint is Any else getattr(hint, "__name__", str(hint))


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of type ``hint`` (a bool is not a number; an int is a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple, Sequence):
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value)
    if origin in (dict, Mapping):
        return isinstance(value, Mapping)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return isinstance(value, hint)


def _numbers_in(value: Any) -> list[Any]:
    """The numbers of ``value`` that a range or finiteness check reads (itself, or a list's items)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in items if isinstance(v, numbers.Real) and not isinstance(v, bool)]


@dataclass(frozen=True)
class DefenseOptions:
    """Base of every defense's options: a frozen dataclass checked at construction. A defense without
    options uses it as it is (no fields)."""

    @classmethod
    def _owner(cls) -> str:
        """The name of the registered defense whose options these are (errors name it); the class's name
        for a class no registered defense uses."""
        from headprune.defenses.base import DEFENSES  # the registry's classes name this one

        return next((name for name, defense in DEFENSES.items() if defense.options_class is cls), cls.__name__)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        owner = self._owner()
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            what = f"option {f.name!r} of {owner!r}"
            hint = hints[f.name]
            if not _matches(value, hint):
                raise ValueError(f"{what} must be of type {_type_name(hint)}, got {value!r}")
            for number in _numbers_in(value):
                check_number(number, what, low=meta.get("low"), high=meta.get("high"),
                             low_open=meta.get("low_open", False), high_open=meta.get("high_open", False))
            if meta.get("check") is not None:
                value = meta["check"](value, what)
            if isinstance(value, tuple):
                value = list(value)  # one spelling of a list option, whatever the caller gave
            if hint is float or (typing.get_origin(hint) in (Union, types.UnionType) and value is not None
                                 and float in typing.get_args(hint) and isinstance(value, numbers.Real)):
                value = float(value)
            object.__setattr__(self, f.name, value)

    @classmethod
    def from_mapping(cls, given: Mapping[str, Any] | None) -> DefenseOptions:
        """The options of ``given`` (the user's; missing ones take their defaults).

        :raises ValueError: ``defense 'x' has no option 'y'; its options: ...`` for an unknown key, or the
            field check's one-line error naming the option."""
        given = dict(given or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(given) - set(valid))
        if unknown:
            raise ValueError(f"defense {cls._owner()!r} has no option {', '.join(map(repr, unknown))}; its options: "
                             f"{', '.join(sorted(valid)) or 'none'}")
        return cls(**given)

    def to_dict(self) -> dict[str, Any]:
        """Every option by name (given or default)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _range_text(meta: Mapping[str, Any]) -> str:
    """`` in [0, 1]`` / `` in (0, inf]`` of a field's range (the form of check_number's errors); ``""`` if none."""
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return ""
    left, right = "(" if meta.get("low_open") else "[", ")" if meta.get("high_open") else "]"
    return f" in {left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"


def options_help(options_class: type[DefenseOptions]) -> list[str]:
    """One line per option of ``options_class``: ``name (type[ in range], default D): help``; ``["(no options)"]``
    if none."""
    hints = typing.get_type_hints(options_class)
    lines = []
    for f in dataclasses.fields(options_class):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kind = _type_name(hints[f.name]) + _range_text(f.metadata)
        lines.append(f"{f.name} ({kind}, default {default!r}): {f.metadata.get('help', '')}")
    return lines or ["(no options)"]
