"""One registry mechanism for every pluggable family: attacks, proxies, defenses, architectures, RL algorithms.

A :class:`Registry` maps a name to an object (usually a class) and is filled by a decorator next to the
object's definition, so adding an attack, proxy, defense or architecture is one new class with one
``@REGISTRY.register("name")`` line::

    DEFENSES = Registry("defense")

    @DEFENSES.register("layerwise")
    class LayerwiseVariance(PruningDefense): ...

    DEFENSES.get("layerwise")      # the class; ValueError naming the valid names otherwise
    list(DEFENSES)                 # names in registration order

Names are case-sensitive unless ``case_insensitive=True`` (attacks accept ``"BadNets"``); aliases map
extra names to a registered one without listing them twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind, in registration order.

    :param kind: what the entries are, for error messages (``"defense"``, ``"proxy"``, ...).
    :param case_insensitive: look names up case-insensitively (stored lower-case).
    :param name_attribute: an attribute that registration sets to the registered name on each entry
        (``"name"``: the class then never repeats its own name); an entry that already sets it to
        another value is refused.
    """

    def __init__(self, kind: str, *, case_insensitive: bool = False, name_attribute: str | None = None) -> None:
        self.kind = kind
        self.case_insensitive = case_insensitive
        self.name_attribute = name_attribute
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def _key(self, name: str) -> str:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        return name.lower() if self.case_insensitive else name

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator: register the decorated object as ``name`` (and ``aliases``); returns it unchanged.

        Registering a taken name raises ValueError (two entries must never share a name)."""
        key = self._key(name)

        def decorate(obj: T) -> T:
            self.add(key, obj, *aliases)
            return obj

        return decorate

    def add(self, name: str, obj: T, *aliases: str) -> None:
        """Register ``obj`` as ``name`` (and ``aliases``) without a decorator."""
        key = self._key(name)
        for taken in (key, *(self._key(a) for a in aliases)):
            if taken in self._entries or taken in self._aliases:
                raise ValueError(f"{self.kind} {taken!r} is already registered")
        if self.name_attribute is not None:
            own = vars(obj).get(self.name_attribute) if isinstance(obj, type) else None
            if own is not None and own != key:
                raise ValueError(f"{self.kind} {key!r} sets {self.name_attribute}={own!r}")
            setattr(obj, self.name_attribute, key)
        self._entries[key] = obj
        for alias in aliases:
            self._aliases[self._key(alias)] = key

    def canonical(self, name: str) -> str:
        """The registered name that ``name`` (a name or an alias) stands for; ValueError otherwise."""
        key = self._key(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return key

    def get(self, name: str) -> T:
        """The entry registered as ``name`` (or an alias of it); ValueError naming the valid names otherwise."""
        return self._entries[self.canonical(name)]

    def names(self, *, aliases: bool = False) -> list[str]:
        """Registered names in registration order (with the aliases after them when ``aliases``)."""
        return [*self._entries, *(self._aliases if aliases else ())]

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs in registration order."""
        return list(self._entries.items())

    def __getitem__(self, name: str) -> T:
        """``registry[name]``: the same as :meth:`get`."""
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not name:
            return False
        key = name.lower() if self.case_insensitive else name
        return key in self._entries or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
