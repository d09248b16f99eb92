"""Strategies: one file each in this folder, found without a hand-kept list.

A strategy module defines a `Strategy` subclass and decorates it with
`@register_strategy`; every module here is imported when the registry is first asked, and
so are strategies from outside the repository: modules that installed packages name under
the entry point group `revision_benchmark.strategies`, and the files or folders listed in
$BENCHMARK_INCLUDE_PATH (what `--include-path` sets; Ray workers inherit it).

    from strategies import get_strategy
    strategy = get_strategy("ir-tuning", {"split_num": 2}, seed=0)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from benchmark.core.errors import UserError
from benchmark.core.registry import Registry

ENTRY_POINT_GROUP = "revision_benchmark.strategies"
INCLUDE_ENV = "BENCHMARK_INCLUDE_PATH"
STRATEGIES: Registry[type] = Registry("strategy", package=__name__,
                                      entry_point_group=ENTRY_POINT_GROUP, include_env=INCLUDE_ENV)


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
    hints = typing.get_type_hints(cls.config_class)
    options = {key: coerce_option(name, key, hints[key], value) for key, value in options.items()}
    try:
        config = cls.config_class(**options)
    except (TypeError, ValueError) as error:
        raise UserError(f"strategy {name!r}: {error}") from None
    return cls(config, seed=seed)


def coerce_option(strategy: str, key: str, hint: Any, value: Any) -> Any:
    """`value` as the option's declared type: numbers from text, a list from `a,b,c` (or a
    YAML list), a choice checked against its Literal. A value that does not fit is a
    UserError naming the option and what it accepts."""
    try:
        return _coerce(hint, value)
    except (TypeError, ValueError):
        raise UserError(f"strategy {strategy!r}: option {key}={_show(value)} is not valid; it "
                        f"takes {_describe_type(hint)}") from None


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _union_args(hint: Any) -> tuple | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


def _coerce(hint: Any, value: Any) -> Any:
    members = _union_args(hint)
    if members is not None:
        concrete = [m for m in members if m is not type(None)]
        optional = len(concrete) < len(members)
        if optional and (value is None or str(value).strip().lower() in ("none", "null")):
            return None
        for member in concrete:
            try:
                return _coerce(member, value)
            except (TypeError, ValueError):
                continue
        raise ValueError(value)
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ValueError(value)
        return value
    if origin in (list, tuple):
        if isinstance(value, str):  # `a,b,c` (the CLI), or `[a, b, c]` written inside quotes
            text = value.strip()
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1]
            value = [part.strip().strip("'\"") for part in text.split(",") if part.strip()]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        kinds = typing.get_args(hint)
        if origin is tuple and kinds and kinds[-1] is not Ellipsis:
            if len(value) != len(kinds):
                raise ValueError(value)
            return tuple(_coerce(k, v) for k, v in zip(kinds, value))
        inner = kinds[0] if kinds else Any
        items = [_coerce(inner, v) for v in value]
        if not items:
            raise ValueError(value)
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "1", "on"):
            return True
        if text in ("false", "no", "0", "off"):
            return False
        raise ValueError(value)
    if hint is int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(value)
            return int(value)
        return int(value) if isinstance(value, int) else int(str(value).strip())
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    if hint is str:
        if isinstance(value, (list, tuple, dict)) or value is None:
            raise ValueError(value)
        return str(value)
    return value


def _describe_type(hint: Any) -> str:
    members = _union_args(hint)
    if members is not None:
        parts = [_describe_type(m) for m in members if m is not type(None)]
        if len(parts) < len(members):
            parts.append("none")
        return " or ".join(parts)
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        kinds = typing.get_args(hint)
        if origin is tuple and kinds and kinds[-1] is not Ellipsis:
            return f"{len(kinds)} {_plural(kinds[0])} as a,b (e.g. " + ",".join(
                _example(k, i + 1) for i, k in enumerate(kinds)) + ")"
        inner = kinds[0] if kinds else str
        return (f"a list of {_plural(inner)} as a,b,c or [a,b,c] "
                f"(e.g. {_example(inner)},{_example(inner, 2)})")
    return {int: "an integer", float: "a number", str: "a text", bool: "true or false"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _plural(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "names"}.get(hint, _describe_type(hint))


def _example(hint: Any, second: int = 1) -> str:
    return {int: str(second), float: f"0.{second * 3}", str: ("q_proj", "v_proj")[second - 1]}.get(hint, "x")


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
