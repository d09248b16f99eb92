"""Strategies: one file each in this folder, found without a hand-kept list.

A strategy module defines a `Strategy` subclass and decorates it with
`@register_strategy`; every module here is imported when the registry is first asked.

    from strategies import get_strategy
    strategy = get_strategy("ir-tuning", {"split_num": 2}, seed=0)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmark.core.errors import UserError
from benchmark.core.registry import Registry

STRATEGIES: Registry[type] = Registry("strategy", package=__name__)


def register_strategy(cls):
    STRATEGIES.register(cls.name, cls)
    return cls


def list_strategies() -> dict[str, str]:
    """Name -> one-line description."""
    return {name: cls.description for name, cls in STRATEGIES.items()}


def strategy_class(name: str):
    return STRATEGIES.get(name)


def canonical_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Options under their current names (old names in `option_aliases` still load)."""
    aliases = strategy_class(name).config_class.option_aliases
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        key = aliases.get(key, key)
        if key in out:
            raise UserError(f"strategy {name!r}: option {key!r} is given twice (once under an old name)")
        out[key] = value
    return out


def get_strategy(name: str, options: dict[str, Any] | None = None, seed: int = 0):
    """Build a strategy from its name and options (unknown or bad options: UserError)."""
    cls = strategy_class(name)
    options = canonical_options(name, options)
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
    return {f.name: (f.default if f.default is not dataclasses.MISSING
                     else f.default_factory() if f.default_factory is not dataclasses.MISSING
                     else None)
            for f in dataclasses.fields(cls.config_class)}


def option_names(name: str) -> set[str]:
    """Every option name a strategy accepts, old aliases included."""
    cls = strategy_class(name)
    return set(strategy_options(name)) | set(cls.config_class.option_aliases)
