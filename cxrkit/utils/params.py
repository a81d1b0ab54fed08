"""Strict parameters: dataclasses built from parameter files, command lines and notebooks.

Every parameter a run or a study accepts is a field of a dataclass (:class:`cxrkit.training.config.TrainConfig`,
:class:`cxrkit.study.config.StudyConfig`). Parameter files (YAML), command line options and
notebook parameters all go through :func:`from_dict`, which refuses unknown or misspelled keys
and values of the wrong type *before* anything runs, naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter file or option is invalid (unknown key, wrong type, bad value)."""


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits a (simple) type annotation; ints are accepted for floats."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None) or annotation is None:
        return value is None
    if annotation is Any:
        return True
    base = origin or annotation
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is bool:
        return isinstance(value, bool)
    if base is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, base)


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "") if not isinstance(annotation, type) else annotation.__name__


def from_dict(cls: type[T], values: dict[str, Any], *, source: str = "parameters") -> T:
    """Build dataclass ``cls`` from ``values``, refusing unknown keys and wrong types.

    Args:
        cls: A dataclass type such as :class:`TrainConfig`.
        values: Key/value pairs (e.g. a parsed YAML file).
        source: Where the values come from, used in error messages (a file path).

    Raises:
        ConfigError: naming the offending key, its value and, for typos, the closest known key.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown parameter {key!r}{hint}")
        if not _type_ok(value, hints[key]):
            raise ConfigError(
                f"{source}: parameter {key!r} must be {_type_name(hints[key])}, "
                f"got {value!r} ({type(value).__name__})"
            )
    obj = cls(**{k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()})
    if hasattr(obj, "validate"):
        try:
            obj.validate()
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (a relative path is taken from the project root), with errors naming the file."""
    from cxrkit.utils.paths import resolve

    path = resolve(path)
    if not path.is_file():
        raise ConfigError(f"parameter file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of parameters, got {type(data).__name__}")
    return data


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-dict view of a config dataclass (for dumping next to outputs)."""
    return dataclasses.asdict(obj)
