"""The one loader of configuration sections (params.yaml, or any mapping) into dataclasses.

Every section of params.yaml has a ``*Config`` dataclass next to the code it configures
(``TrainConfig`` in :mod:`ssae_core.train`, ``StudyConfig`` in :mod:`ssae_core.study.config`...).
:func:`load_config` builds one from a mapping and rejects, with a one-line message that names the
parameter (``params.yaml:study.grid.lr``):

- unknown keys, at every depth (a field typed with a dataclass is loaded recursively);
- values of the wrong type (a boolean written as a string, a list where a number belongs...);
- floats that are NaN or infinite;
- whatever the dataclass's own ``__post_init__`` refuses (its message is prefixed with ``where``).

:func:`field_docs` reads the docstring under each field, so the command-line tool's ``--help``
text and the dataclass share one definition of every option.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import math
import os
import re
import textwrap
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ssae_core.errors import InputError

T = TypeVar("T")


def _type_name(hint: object) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _dataclass_in(hint: object) -> type | None:
    """The dataclass a field holds (``X`` or ``X | None``), if any."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [h for h in typing.get_args(hint) if dataclasses.is_dataclass(h)]
        return found[0] if len(found) == 1 else None
    return None


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
    if typing.get_origin(hint) is typing.Literal:
        return value in typing.get_args(hint)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    return False


def _convert(value: object, hint: object, where: str) -> object:
    """``value`` checked against ``hint``; mappings become nested dataclasses, lists tuples."""
    nested = _dataclass_in(hint)
    if nested is not None and isinstance(value, Mapping):
        return load_config(nested, value, where)
    if not _type_ok(value, hint):
        raise InputError(f"{where}: expected {_type_name(hint)}, got {value!r}")
    if _non_finite(value):
        raise InputError(f"{where}: {value!r} is not a finite number")
    if isinstance(value, list) and typing.get_origin(hint) is tuple:
        return tuple(value)
    return value


def load_config(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``values``; ``where`` names the section (params.yaml:train).

    Missing keys take the dataclass defaults. See the module docstring for what is refused.
    """
    if values is not None and not isinstance(values, Mapping):
        raise InputError(f"{where}: expected a mapping of keys to values, got {values!r}")
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in set(values) - set(fields))
    if unknown:
        raise InputError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    converted = {
        name: _convert(value, hints[name], f"{where}.{name}") for name, value in values.items()
    }
    try:
        return cls(**converted)
    except InputError as exc:
        raise InputError(_located(str(exc), where, fields)) from None


def _located(message: str, where: str, fields: Mapping[str, object]) -> str:
    """A dataclass's own message, prefixed with where it happened: ``where.field ...`` when the
    message starts with one of its field names, else ``where: ...``."""
    if message.startswith(where):
        return message
    head = re.match(r"[A-Za-z_]\w*", message)
    if head and head.group(0) in fields and message[head.end() : head.end() + 1] in " :=.[":
        return f"{where}.{message}"
    return f"{where}: {message}"


def read_section(path: str | os.PathLike, section: str) -> Any:
    """One top-level section of a YAML parameters file (None when it is empty)."""
    try:
        params = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{path}: not valid YAML{line}; fix it or restore it from git") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror})") from None
    if not isinstance(params, dict) or section not in params:
        raise InputError(f"{path}: missing section '{section}'; restore it from git")
    return params[section]


def to_dict(obj: object) -> dict[str, Any]:
    """A dataclass as a plain JSON-ready dict (tuples become lists)."""

    def plain(value: object) -> object:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(obj).items()}  # type: ignore[call-overload]


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of dataclass ``cls`` (one line, whitespace folded)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source (frozen app): no help texts
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def check_ranges(limits: Mapping[str, tuple[float | None, float, float | None]]) -> None:
    """``{name: (value, low, high)}``: every value that is set (not None) must lie in low..high
    (``high`` None: no upper bound); the first that does not is a one-line :class:`InputError`."""
    for name, (value, low, high) in limits.items():
        if value is not None and (value < low or (high is not None and value > high)):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            raise InputError(f"{name} {value!r}: must be {span}")


MAX_MULTIPLIER = 1000.0
"""Largest |multiplier| of a fitted alpha: far beyond any steering that still yields text."""


def check_multipliers(values: object, name: str) -> None:
    """A list of steering multipliers: numbers in [-MAX_MULTIPLIER, MAX_MULTIPLIER], at least
    one, none repeated."""
    items = list(values) if isinstance(values, list | tuple) else []
    if not items or not all(abs(float(m)) <= MAX_MULTIPLIER for m in items):  # NaN fails too
        raise InputError(
            f"{name} {values!r}: give numbers in [-{MAX_MULTIPLIER:g}, {MAX_MULTIPLIER:g}]"
        )
    if len(set(items)) != len(items):
        raise InputError(f"{name} {values!r}: a value is repeated")
