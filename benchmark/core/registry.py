"""One registry type for strategies, tasks and model aliases.

A name is registered once: a second, different object under the same name is an error
(re-registering the very same class, e.g. on a module reload, is allowed). An unknown
name is one `UserError` line that lists the known names and suggests the closest one.
A registry can discover its entries by importing every module of a package, so adding
an entry is adding a file; and, from outside the repository, the modules that installed
packages name under an entry point group, and the files or folders an environment variable
lists (`--include-path`; the variable reaches Ray workers, which import them too).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import pkgutil
import sys
from pathlib import Path
from typing import Generic, Iterator, TypeVar

from .errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None,
                 entry_point_group: str | None = None, include_env: str | None = None):
        self.kind = kind  # "strategy", "task", "model": used in messages
        self.package = package  # discovered by importing each of its modules
        self.entry_point_group = entry_point_group  # installed packages' modules, imported
        self.include_env = include_env  # names a variable: paths (os.pathsep) to import
        self._entries: dict[str, T] = {}
        self._discovered = False
        self._included: set[str] = set()

    def register(self, name: str, entry: T) -> T:
        other = self._entries.get(name)
        if other is not None and _identity(other) != _identity(entry):
            raise ValueError(f"{self.kind} name {name!r} is registered twice: by "
                             f"{_identity(other)} and by {_identity(entry)}")
        self._entries[name] = entry
        return entry

    def _discover(self) -> None:
        if not self._discovered and self.package is not None:
            self._discover_package()
        # After the package's own: an outside module reusing a name is a one-line error.
        self._include()  # every time: a path may be added after the first discovery

    def _discover_package(self) -> None:
        self._discovered = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")
        if self.entry_point_group:
            from importlib.metadata import entry_points

            for point in entry_points(group=self.entry_point_group):
                try:
                    point.load()  # importing the module registers its entries
                except Exception as error:
                    raise UserError(f"{self.kind} plugin {point.name!r} ({point.value}, entry "
                                    f"point group {self.entry_point_group}) failed to import: "
                                    f"{_one_line(error)}") from None

    def _include(self) -> None:
        if not self.include_env:
            return
        for path in include_paths(os.environ.get(self.include_env, "")):
            if path not in self._included:
                self._included.add(path)
                import_path(path, self.kind)

    def get(self, name: str) -> T:
        self._discover()
        if name not in self._entries:
            raise UserError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        outside = ""
        if self.include_env:  # a method from outside the repository is named only once imported
            given = include_paths(os.environ.get(self.include_env, ""))
            outside = (f"; a {self.kind} from outside the repository is known once its file is "
                       "given with --include-path PATH (or $" + self.include_env + ")"
                       + (f"; included now: {', '.join(given)}" if given else ""))
        return (f"unknown {self.kind} {name!r}{hint}; known: {', '.join(self.names()) or '(none)'}"
                + outside)

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        self._discover()
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries


def include_paths(value: str) -> list[str]:
    """The paths an include variable lists (os.pathsep between them)."""
    return [p for p in value.split(os.pathsep) if p]


def import_path(path: str, kind: str = "entry") -> None:
    """Import a Python file, every module file of a folder, or a package folder (one with
    `__init__.py`), from anywhere: modules that register entries on import."""
    where = Path(path)
    if not where.exists():
        raise UserError(f"include path {path} does not exist")
    if where.is_file():
        if where.suffix != ".py":
            raise UserError(f"include path {path}: give a .py file or a folder")
        _import_file(where, f"benchmark_include_{where.stem}", kind)
    elif (where / "__init__.py").is_file():
        # A package under its own name, so its modules' relative imports work.
        known = sys.modules.get(where.name)
        if known is not None and Path(getattr(known, "__file__", "") or "").parent != where.resolve():
            raise UserError(f"include path {path}: a module named {where.name!r} is already "
                            "imported from elsewhere; rename the folder")
        _import_file(where / "__init__.py", where.name, kind, package_dir=where)
        for module in pkgutil.iter_modules([str(where)]):
            if not module.name.startswith("_"):
                _import_file(where / f"{module.name}.py", f"{where.name}.{module.name}", kind)
    else:
        for file in sorted(where.glob("*.py")):
            if not file.name.startswith("_"):
                _import_file(file, f"benchmark_include_{file.stem}", kind)


def _import_file(file: Path, name: str, kind: str, package_dir: Path | None = None) -> None:
    if not file.is_file():
        return  # a subpackage folder: its own __init__ imports what it needs
    spec = importlib.util.spec_from_file_location(
        name, file, submodule_search_locations=[str(package_dir)] if package_dir else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's code: one line naming the file, no traceback
        del sys.modules[name]
        raise UserError(f"cannot import {kind} module {file}: {_one_line(error)}") from None


def source_file(entry: object) -> Path | None:
    """The file that defines a registered class or function (None when it has none)."""
    import inspect

    try:
        found = inspect.getsourcefile(entry) or inspect.getfile(entry)
    except (TypeError, OSError):
        return None
    return Path(found).resolve() if found else None


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]


def _identity(entry: object) -> str:
    """Where an entry was defined: a class or function by its module and name."""
    module = getattr(entry, "__module__", None)
    qualname = getattr(entry, "__qualname__", None)
    if module and qualname:
        return f"{module}.{qualname}"
    return repr(entry)
