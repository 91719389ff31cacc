"""Strict reading of one YAML mapping: typed keys, unknown keys rejected by name."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

from provider_gateway.config.model import field_default
from provider_gateway.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_MISSING: Any = object()
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")

Check = Callable[[Any], str | None]
"""A check of a value already of the right type: the problem, or None."""

D = TypeVar("D", bound="DataclassInstance")


def _describe(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class Fields:
    """Takes typed values out of a mapping; :meth:`finish` rejects what is left.

    ``bounds`` gives the (least, greatest) value of numeric keys; every float
    must be finite. The value of a key in ``secrets`` is never put in a message.
    """

    def __init__(
        self,
        data: Any,
        path: str,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        secrets: Collection[str] = (),
    ) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: must be a mapping, got {type(data).__name__}")
        self._data = dict(data)
        self._path = path
        self._bounds = bounds or {}
        self._secrets = secrets

    def key_path(self, key: str) -> str:
        """The dotted path of ``key`` inside this mapping, for messages."""
        return f"{self._path}.{key}"

    def has(self, key: str) -> bool:
        """Whether ``key`` is present (and not yet taken)."""
        return key in self._data

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """Take ``key`` as it is; required unless ``default`` is given."""
        if key not in self._data:
            if default is _MISSING:
                raise ConfigError(f"{self.key_path(key)}: required key is missing")
            return default
        return self._data.pop(key)

    def take(
        self,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = _MISSING,
        check: Check | None = None,
    ) -> Any:
        """Take ``key`` checked to be of ``kind``; ``check`` returns a problem or None."""
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        # bool is an int in Python, but "true" is not a valid num_connections.
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            shown = (
                f"a value of type {type(value).__name__} (not shown: a secret)" if key in self._secrets else repr(value)
            )
            raise ConfigError(f"{self.key_path(key)}: must be {_describe(kind)}, got {shown}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{self.key_path(key)}: must be a finite number, got {value}")
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"{self.key_path(key)}: {problem}")
        self._check_bounds(key, value)
        return value

    def _check_bounds(self, key: str, value: Any) -> None:
        if key not in self._bounds or isinstance(value, bool) or not isinstance(value, int | float):
            return
        least, greatest = self._bounds[key]
        if value < least:
            raise ConfigError(f"{self.key_path(key)}: must be at least {_number(least)}, got {_number(value)}")
        if value > greatest:
            raise ConfigError(
                f"{self.key_path(key)}: must be from {_number(least)} to {_number(greatest)}, got {_number(value)}"
            )

    def strings(self, key: str) -> tuple[str, ...]:
        """Take ``key`` as a list of strings (absent: empty)."""
        value = self.take(key, list, default=[])
        for item in value:
            if not isinstance(item, str):
                raise ConfigError(f"{self.key_path(key)}: every item must be a string")
        return tuple(value)

    def string_map(self, key: str) -> dict[str, str]:
        """Take ``key`` as a mapping of strings to strings (absent: empty)."""
        value = self.take(key, dict, default={})
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ConfigError(f"{self.key_path(key)}: keys and values must be strings")
        return dict(value)

    def build(self, cls: type[D], checks: Mapping[str, Check] | None = None, **given: Any) -> D:
        """A ``cls`` whose fields not ``given`` are taken from this mapping, each as its type says.

        A key left out gets the field's default (so the dataclass is the one
        place defaults are written); a field without one is a required key.
        ``checks`` adds a :data:`Check` to some keys.
        """
        hints = typing.get_type_hints(cls)
        values = dict(given)
        for f in dataclasses.fields(cls):
            if f.name not in values:
                default = field_default(cls, f.name)
                absent = default is not dataclasses.MISSING and not self.has(f.name)
                values[f.name] = default if absent else self._typed(f.name, hints[f.name], (checks or {}).get(f.name))
        return cls(**values)

    def _typed(self, key: str, hint: Any, check: Check | None) -> Any:
        """Take the required or present ``key`` as the type ``hint`` says."""
        if hint == tuple[str, ...]:
            return self.strings(key)
        if hint == dict[str, str]:
            return self.string_map(key)
        if typing.get_origin(hint) is Literal:
            return self.take(key, str, check=one_of(*typing.get_args(hint)))
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        kinds = tuple(k for k in typing.get_args(hint) if k is not type(None)) if optional else hint
        return self.take(key, kinds, None if optional else _MISSING, check)

    def finish(self) -> None:
        """Reject every key not taken: typos must not pass silently."""
        if self._data:
            names = ", ".join(sorted(str(k) for k in self._data))
            raise ConfigError(f"{self._path}: unknown key(s): {names}")


def one_of(*choices: str) -> Check:
    """A check that a string is one of ``choices``."""

    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}; got {value!r}"

    return check


def host_name(allow_port: bool) -> Check:
    """A check that a string is a host name (or ``name:port`` if ``allow_port``), with no credentials."""

    def check(value: Any) -> str | None:
        if "@" in value:  # user:password@host: the value is not shown
            return "must be a host name; credentials go in username and password (the value is not shown)"
        if not _HOST.match(value):
            return f"must be a host name{' or name:port' if allow_port else ''}; got {value!r}"
        if not allow_port and urlsplit(f"//{value}").port is not None:
            return f"must be a host name without a port (use 'port'); got {value!r}"
        return None

    return check
