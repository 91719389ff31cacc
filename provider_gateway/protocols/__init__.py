"""Protocols the gateway speaks, found through a plain registry by ``conn_config.type``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from provider_gateway.config.model import ConnConfig
from provider_gateway.errors import ConfigError
from provider_gateway.protocols.base import Connection, ConnectionSettings, SourceStream
from provider_gateway.protocols.ftp import FtpConnection
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
}


def connection_factory(conn: ConnConfig) -> ConnectionFactory:
    """The factory for ``conn.type``; ConfigError if this build does not speak it."""
    try:
        return REGISTRY[conn.type]
    except KeyError:
        raise ConfigError(
            f"conn_config.type {conn.type!r} is not supported yet (supported: {', '.join(sorted(REGISTRY))})"
        ) from None


__all__ = [
    "REGISTRY",
    "Connection",
    "ConnectionFactory",
    "ConnectionSettings",
    "SourceStream",
    "check_url",
    "connection_factory",
]
