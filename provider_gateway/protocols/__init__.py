"""Protocols the gateway speaks, found through a plain registry by ``conn_config.type``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from provider_gateway.config.model import ConnConfig
from provider_gateway.errors import ConfigError, SourceUnavailable
from provider_gateway.protocols import gridftp
from provider_gateway.protocols.base import Connection, ConnectionSettings, SourceStream
from provider_gateway.protocols.ftp import FtpConnection
from provider_gateway.protocols.gridftp import GridftpConnection
from provider_gateway.protocols.http import HttpConnection
from provider_gateway.protocols.sftp import SftpConnection
from provider_gateway.protocols.urls import check_url

ConnectionFactory = Callable[[Any, ConnectionSettings], Connection]

REGISTRY: dict[str, ConnectionFactory] = {
    "http": HttpConnection,
    "https": HttpConnection,
    "ftp": FtpConnection,
    "ftps": FtpConnection,
    "sftp": SftpConnection,
    "gridftp": GridftpConnection,
}


def connection_factory(conn: ConnConfig) -> ConnectionFactory:
    """The factory for ``conn.type``; ConfigError if this build does not speak it."""
    try:
        factory = REGISTRY[conn.type]
    except KeyError:
        raise ConfigError(
            f"conn_config.type {conn.type!r} is not supported yet (supported: {', '.join(sorted(REGISTRY))})"
        ) from None
    if conn.type == "gridftp":
        try:
            gridftp.program()
        except SourceUnavailable as exc:
            raise ConfigError(exc.message) from None
    return factory


def files_in_flight(conn: ConnConfig) -> int:
    """How many files one connection of ``conn`` carries at once (SFTP may interleave several; others 1)."""
    return max(1, int(getattr(conn, "files_in_flight", 1)))


__all__ = [
    "REGISTRY",
    "Connection",
    "ConnectionFactory",
    "ConnectionSettings",
    "SourceStream",
    "check_url",
    "connection_factory",
    "files_in_flight",
]
