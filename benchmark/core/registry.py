"""One registry type for strategies, tasks and model aliases.

A name is registered once: a second, different object under the same name is an error
(re-registering the very same class, e.g. on a module reload, is allowed). An unknown
name is one `UserError` line that lists the known names and suggests the closest one.
A registry can discover its entries by importing every module of a package, so adding
an entry is adding a file.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Generic, Iterator, TypeVar

from .errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind  # "strategy", "task", "model": used in messages
        self.package = package  # discovered by importing each of its modules
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str, entry: T) -> T:
        other = self._entries.get(name)
        if other is not None and _identity(other) != _identity(entry):
            raise ValueError(f"{self.kind} name {name!r} is registered twice: by "
                             f"{_identity(other)} and by {_identity(entry)}")
        self._entries[name] = entry
        return entry

    def _discover(self) -> None:
        if self._discovered or self.package is None:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")

    def get(self, name: str) -> T:
        self._discover()
        if name not in self._entries:
            raise UserError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; known: {', '.join(self.names()) or '(none)'}"

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        self._discover()
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries


def _identity(entry: object) -> str:
    """Where an entry was defined: a class or function by its module and name."""
    module = getattr(entry, "__module__", None)
    qualname = getattr(entry, "__qualname__", None)
    if module and qualname:
        return f"{module}.{qualname}"
    return repr(entry)
