"""Strict reading of one YAML mapping: typed keys, unknown keys rejected by name."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

from provider_gateway.errors import ConfigError

_MISSING: Any = object()


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
        check: Callable[[Any], str | None] | None = None,
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
        if not least <= value <= greatest:
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

    def finish(self) -> None:
        """Reject every key not taken: typos must not pass silently."""
        if self._data:
            names = ", ".join(sorted(str(k) for k in self._data))
            raise ConfigError(f"{self._path}: unknown key(s): {names}")


def at_least(minimum: float) -> Callable[[Any], str | None]:
    """A check that a number is >= ``minimum``."""

    def check(value: Any) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}, got {value}"

    return check


def one_of(*choices: str) -> Callable[[Any], str | None]:
    """A check that a string is one of ``choices``."""

    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}; got {value!r}"

    return check
