"""Turning a composed config section into a checked, frozen dataclass.

Every config group (data, model, trainer, tracking, and each stage's own section)
goes through `build`, so a mistyped key or a wrong type gets the same one-line
error wherever it is. No Hydra here: sections arrive as plain mappings.
"""

from __future__ import annotations

import typing
from collections.abc import Collection, Iterable, Mapping
from dataclasses import MISSING, fields

from pgsweep.errors import ConfigError


def section(resolved: Mapping, name: str) -> Mapping:
    """The mapping `resolved[name]`, or one clear error if it is missing."""
    value = resolved.get(name)
    if not isinstance(value, Mapping):
        raise ConfigError(f"config section '{name}' is missing or not a mapping")
    return value


def _example(hint: object) -> object:
    """A value of annotated type `hint` for _convert to convert like (int, float, str, bool,
    tuple[X, ...])."""
    if typing.get_origin(hint) is tuple:
        return (_example(typing.get_args(hint)[0]),)
    if hint in (bool, int, float, str):
        return hint()
    raise TypeError(f"no config conversion for a field of type {hint}")


def _convert(value: object, default: object) -> object:
    """`value` as the type of `default`; raises ValueError/TypeError when it is not one."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    if isinstance(default, tuple):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ValueError
        # a tuple field converts each element like its default's first element (int if empty)
        element = default[0] if default else 0
        return tuple(_convert(v, element) for v in value)
    if isinstance(value, (Mapping, list, tuple)):
        raise ValueError
    return str(value)


def build(kind: type, values: Mapping, prefix: str, **fixed: object):
    """Make dataclass `kind` from a config section, converting and checking each type.

    Fields given in `fixed` come from elsewhere (the data, the seed) and are not config
    keys. A field whose default is None is optional text; every other field must be
    set and must convert to its default's type. A field without a default (its default
    lives in the YAML alone) is required and converts to its annotated type.
    `kind.validate()` runs when it exists.
    """
    known = {f.name: f for f in fields(kind) if f.name not in fixed}
    hints = typing.get_type_hints(kind)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key {prefix}.{unknown[0]}; valid keys: {', '.join(known)}")
    converted: dict[str, object] = dict(fixed)
    for name, value in values.items():
        default = known[name].default
        if default is MISSING:
            default = _example(hints[name])
        try:
            if value is None or value == "???":
                if default is not None:  # only optional keys may be left unset
                    raise ConfigError(f"{prefix}.{name} is required")
                converted[name] = None
            else:
                converted[name] = _convert(value, default)
        except (TypeError, ValueError, OverflowError):
            expected = type(default).__name__ if default is not None else "text"
            if isinstance(default, tuple):
                element = type(default[0]).__name__ if default else "int"
                expected = f"a list of {element}"
            raise ConfigError(f"{prefix}.{name} must be {expected}, got {value!r}") from None
    missing = [name for name, f in known.items() if name not in converted and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        raise ConfigError(f"{prefix}.{missing[0]} is required")
    result = kind(**converted)
    validate = getattr(result, "validate", None)
    if callable(validate):
        validate()
    return result


def override_keys(overrides: Iterable[str]) -> frozenset[str]:
    """The config keys command-line overrides set: `data.root=X`, `+a.b=1`, `~c`, `data=yale`.

    A group choice (`data=yale`) is reported as the group's name, `data`.
    """
    return frozenset(k for k in map(override_key, overrides) if k)


def override_key(override: str) -> str:
    """The config key one command-line override sets: `+data.root=X` -> `data.root`."""
    key = str(override).split("=", 1)[0].lstrip("~+").strip()
    return key.split("@", 1)[0]  # `data@target=...` still chooses the data group


def chose(keys: Collection[str], name: str) -> bool:
    """Did the overrides `keys` set config key `name` (`data.root`), or its group (`data`)?"""
    parts = name.split(".")
    return any(".".join(parts[:n]) in keys for n in range(1, len(parts) + 1))
