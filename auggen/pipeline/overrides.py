"""Nested frozen dataclasses <-> dicts, and type-checked ``--set a.b=value`` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Any


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _suggest(name: str, valid, prefix: str = "") -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
    return f"{hint}; valid: {', '.join(prefix + v for v in valid)}"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` converted to annotation ``tp``, or a TypeError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, a, key)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise TypeError(f"{key}: {value!r} matches none of {tp}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise TypeError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{key}: expected one of {args}, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise TypeError(f"{key}: expected a bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise TypeError(f"{key}: expected an int, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise TypeError(f"{key}: expected an int, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise TypeError(f"{key}: expected a float, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{key}: expected a float, got {value!r}") from None
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. --set data.path=2024 parses as JSON 2024
        if not isinstance(value, str):
            raise TypeError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise TypeError(f"{key}: cannot convert {value!r} to {tp}")


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a (nested) dict; unknown keys raise with a suggestion."""
    hints = _hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        if name not in fields:
            raise KeyError(f"unknown config key {prefix + name!r}" + _suggest(name, fields, prefix))
        kwargs[name] = _coerce(value, hints[name], prefix + name)
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    """JSON-ready nested dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def merge_dict(cfg, data: dict, prefix: str = ""):
    """``cfg`` with the (nested, possibly partial) ``data`` dict applied on top."""
    hints = _hints(type(cfg))
    fields = {f.name for f in dataclasses.fields(cfg)}
    changes = {}
    for name, value in data.items():
        if name not in fields:
            raise KeyError(f"unknown config key {prefix + name!r}" + _suggest(name, fields, prefix))
        current = getattr(cfg, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[name] = merge_dict(current, value, prefix + name + ".")
        else:
            changes[name] = _coerce(value, hints[name], prefix + name)
    return dataclasses.replace(cfg, **changes)


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON when it parses (numbers, lists, null, true), else the string.

    A bracketed list that is not JSON (``[/a.bin,/b.bin]``: unquoted paths, as shells leave
    them) is a list of its comma-separated items, each parsed the same way.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        items = [t.strip() for t in inner[1:-1].split(",")]
        return [parse_value(t) for t in items if t]
    return text


def apply_set(cfg, assignment: str):
    """Apply one ``dotted.key=value`` string to ``cfg`` (returns a new config)."""
    if "=" not in assignment:
        raise ValueError(f"--set expects key=value, got {assignment!r}")
    key, text = assignment.split("=", 1)
    key = key.strip()
    nested: dict = {}
    node = nested
    parts = key.split(".")
    for p in parts[:-1]:
        node[p] = {}
        node = node[p]
    node[parts[-1]] = parse_value(text)
    return merge_dict(cfg, nested)


def all_keys(cfg, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a nested dataclass (for help and error messages)."""
    out = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out += all_keys(v, prefix + f.name + ".")
        else:
            out.append(prefix + f.name)
    return out
