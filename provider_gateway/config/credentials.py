"""Credentials checked at load time: only what their protocol can carry, and only where they may go.

A header, token or password holding a line break, a NUL or another control
character cannot be sent; found at the first fetch, the error would carry
the value into logs and task failures. Here ``validate`` refuses it, and
the message names the key and the kind of character, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from provider_gateway.config.model import ConnConfig, FtpConnConfig, HttpConnConfig
from provider_gateway.errors import ConfigError

KeyPath = Callable[[str], str]
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token


def check_credentials(conn: ConnConfig, key_path: KeyPath) -> None:
    """Raise ConfigError if a credential of ``conn`` cannot be carried, or could go to any host."""
    if isinstance(conn, HttpConnConfig):
        _check_http(conn, key_path)
    elif isinstance(conn, FtpConnConfig):
        for key in ("username", "password"):
            _refuse(_control(getattr(conn, key)), key_path(key), "FTP")


def _check_http(conn: HttpConnConfig, key_path: KeyPath) -> None:
    for name, value in conn.headers.items():
        if not _HEADER_NAME.match(name):
            raise ConfigError(f"{key_path('headers')}: {name!r} is not a valid HTTP header name")
        _refuse(_field_problem(value), f"{key_path('headers')}.{name}", "an HTTP header")
    _refuse(_field_problem(conn.token), key_path("token"), "an HTTP header")
    for key in ("username", "password"):
        _refuse(_control(getattr(conn, key)) or _outside_latin1(getattr(conn, key)), key_path(key), "Basic auth")
    if conn.username and ":" in conn.username:
        raise ConfigError(f"{key_path('username')}: holds a colon, which Basic auth cannot carry in a user name")
    if conn.host is None and (conn.username or conn.password or conn.token or conn.headers):
        raise ConfigError(
            f"{key_path('host')}: required when username, password, token or headers are set; "
            "without it they would go to any host a task names"
        )


def _refuse(problem: str | None, where: str, carrier: str) -> None:
    if problem:
        raise ConfigError(f"{where}: holds {problem}, which {carrier} cannot carry (the value is not shown)")


def _field_problem(value: str | None) -> str | None:
    """What keeps ``value`` from being an HTTP field value (RFC 9110), if anything."""
    if not value:
        return None
    if value != value.strip(" \t"):
        return "leading or trailing whitespace"
    return _control(value, allow_tab=True) or _outside_latin1(value)


def _control(value: str | None, allow_tab: bool = False) -> str | None:
    for char in value or "":
        code = ord(char)
        if (code < 0x20 and not (allow_tab and char == "\t")) or 0x7F <= code <= 0x9F:
            if char in "\r\n":
                return "a line break (CR or LF)"
            return "a NUL character" if code == 0 else f"a control character (U+{code:04X})"
    return None


def _outside_latin1(value: str | None) -> str | None:
    return "a character outside Latin-1" if value and any(ord(c) > 0xFF for c in value) else None
