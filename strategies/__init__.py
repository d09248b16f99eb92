"""Strategy registry: one file per strategy, each registering itself by name.

    from strategies import get_strategy
    strategy = get_strategy("ir-tuning", {"split_num": 2}, seed=0)
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

_REGISTRY: dict[str, type] = {}
_MODULES = ("full_ft", "lora", "ir_tuning", "lisa", "random_layers")


def register_strategy(cls):
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")


def list_strategies() -> dict[str, str]:
    """Name -> one-line description."""
    _load_all()
    return {name: cls.description for name, cls in sorted(_REGISTRY.items())}


def strategy_class(name: str):
    from benchmark.errors import UserError

    _load_all()
    if name not in _REGISTRY:
        raise UserError(f"unknown strategy {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_strategy(name: str, options: dict[str, Any] | None = None, seed: int = 0):
    """Build a strategy from its name and options (unknown or bad options: UserError)."""
    from benchmark.errors import UserError

    cls = strategy_class(name)
    options = dict(options or {})
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"strategy {name!r} has no option {unknown[0]!r}; "
                        f"its options: {', '.join(sorted(known)) or '(none)'}")
    try:
        config = cls.config_class(**options)
    except (TypeError, ValueError) as error:
        raise UserError(f"strategy {name!r}: {error}") from None
    return cls(config, seed=seed)


def strategy_options(name: str) -> dict[str, Any]:
    """The options a strategy takes, with their defaults."""
    cls = strategy_class(name)
    return {f.name: (f.default if f.default is not dataclasses.MISSING else None)
            for f in dataclasses.fields(cls.config_class)}
