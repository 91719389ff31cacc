"""JSON written by others, read within bounds: size, depth, and only what JSON can say back.

Whatever passes :func:`load` or :func:`check` can be copied, serialized
(``json.dumps``) and encoded as UTF-8 without an error: no value nested
deeper than :data:`MAX_DEPTH`, no key that is not a string, no lone
surrogate, no NaN or infinity. Anything else is refused with
:class:`~provider_gateway.errors.InvalidRequest` and a message that says why.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from provider_gateway.errors import InvalidRequest

MAX_DEPTH = 100
"""Objects and lists nested deeper than this are refused (the recursion of copy and dumps stays small)."""
MAX_BYTES = 4 * 1024 * 1024
"""The largest document read: a task's message or the payload an S3 pointer names."""
MAX_CONTAINERS = 200_000
"""The most objects and lists a document may hold: each costs memory far beyond its few bytes of text."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_Path = tuple[Any, ...] | None  # (parent path, key): a linked list, rendered only for a message


def load(text: str | bytes | None, what: str, max_bytes: int = MAX_BYTES) -> Any:
    """Parse ``text`` (``what`` names it in messages) within the bounds, or raise InvalidRequest."""
    if text is None:
        raise InvalidRequest(f"{what} is empty, not JSON")
    if len(text) > max_bytes:
        raise InvalidRequest(f"{what} is over {max_bytes} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"{what} is not UTF-8: {exc.reason} at byte {exc.start}") from None
    containers = text.count("{") + text.count("[")  # an upper bound, counted before any is built
    if containers > MAX_CONTAINERS:
        raise InvalidRequest(f"{what} holds more than {MAX_CONTAINERS} objects and lists")
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidRequest(f"{what} is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise InvalidRequest(f"{what} is not JSON: {exc}") from None
    check(value, what)
    return value


def check(value: Any, what: str) -> None:
    """Raise InvalidRequest unless ``value`` is a JSON value within the bounds (see the module)."""
    stack: list[tuple[Any, int, _Path]] = [(value, 0, None)]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict):
            if depth >= MAX_DEPTH:
                raise InvalidRequest(f"{what} is nested deeper than {MAX_DEPTH} levels (at {render(path)})")
            for key, child in node.items():
                if not isinstance(key, str):
                    raise InvalidRequest(f"{what}: a key at {render(path)} is not a string: {type(key).__name__}")
                _check_text(key, what, (path, key), "key")
                stack.append((child, depth + 1, (path, key)))
        elif isinstance(node, list):
            if depth >= MAX_DEPTH:
                raise InvalidRequest(f"{what} is nested deeper than {MAX_DEPTH} levels (at {render(path)})")
            stack.extend((child, depth + 1, (path, i)) for i, child in enumerate(node))
        elif isinstance(node, str):
            _check_text(node, what, path, "value")
        elif isinstance(node, float) and not math.isfinite(node):
            raise InvalidRequest(f"{what}: {render(path)} is {node}, which JSON cannot carry")
        elif node is not None and not isinstance(node, bool | int | float):
            raise InvalidRequest(f"{what}: {render(path)} is a {type(node).__name__}, not a JSON value")


def render(path: _Path) -> str:
    """A path as ``payload.files[0].source``; ``(top)`` for the document itself."""
    parts: list[str] = []
    while path is not None:
        path, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{ascii(key)[1:-1]}")
    text = "".join(reversed(parts)).lstrip(".")
    return text or "(top)"


def _check_text(text: str, what: str, path: _Path, kind: str) -> None:
    found = _SURROGATE.search(text)
    if found:
        code = ord(found.group())
        raise InvalidRequest(
            f"{what}: the {kind} at {render(path)} holds a lone surrogate (U+{code:04X}), which is not Unicode text"
        )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value
