"""Validated configuration dataclasses that mirror params.yaml sections.

Every dataclass is built with :func:`from_mapping`, which rejects unknown keys and wrong types
with a one-line message that names the parameter, so a typo in params.yaml never passes silently.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from ssae_core.errors import InputError

T = TypeVar("T")


def _type_ok(value: object, hint: object) -> bool:
    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return isinstance(value, list | tuple) and all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def from_mapping(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``values``; ``where`` names the section (params.yaml:train)."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if isinstance(value, list) and typing.get_origin(hints[name]) is tuple:
            values[name] = tuple(value)
        if not _type_ok(values[name], hints[name]):
            raise InputError(
                f"{where}.{name}: expected {getattr(hints[name], '__name__', hints[name])}, "
                f"got {value!r}"
            )
    return cls(**values)


def to_dict(obj: object) -> dict[str, Any]:
    """A dataclass as a plain JSON-ready dict."""
    return dataclasses.asdict(obj)  # type: ignore[call-overload]
