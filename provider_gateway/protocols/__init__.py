"""Protocols the gateway speaks: one module each, found through :data:`REGISTRY` by ``conn_config.type``.

Each protocol module exports ``SPEC``, a :class:`ProtocolSpec`; :data:`PROTOCOLS`
lists them, and everything else here is derived from that list.
"""

from __future__ import annotations

from provider_gateway.config.model import ConnConfig
from provider_gateway.errors import ConfigError, SourceUnavailable
from provider_gateway.protocols import ftp, gridftp, http, sftp
from provider_gateway.protocols.base import Connection, ConnectionSettings, SourceStream
from provider_gateway.protocols.spec import ConnectionFactory, ProtocolSpec, UrlSettings
from provider_gateway.protocols.urls import check_provider_url
from provider_gateway.urls import Url

PROTOCOLS: tuple[ProtocolSpec, ...] = (
    http.SPEC,
    ftp.SPEC,
    sftp.SPEC,
    gridftp.SPEC,
)
"""Every protocol of this build: a new one is its module and a line here."""

REGISTRY: dict[str, ProtocolSpec] = {kind: spec for spec in PROTOCOLS for kind in spec.schemes}
"""The spec of each ``conn_config.type``."""

CONN_TYPES: tuple[str, ...] = tuple(REGISTRY)

SCHEMES: dict[str, tuple[str, ...]] = {kind: spec.schemes[kind] for kind, spec in REGISTRY.items()}
"""The URL schemes a provider of each type serves."""

URL_TYPES: dict[str, str] = {scheme: kind for spec in PROTOCOLS for scheme, kind in spec.url_types.items()}
"""The type a bare URL of each scheme builds (``provider-gateway download URL``)."""


def connection_factory(conn: ConnConfig) -> ConnectionFactory:
    """The factory for ``conn.type``; ConfigError if this build or this machine does not speak it."""
    try:
        spec = REGISTRY[conn.type]
    except KeyError:
        raise ConfigError(
            f"conn_config.type {conn.type!r} is not supported yet (supported: {', '.join(sorted(REGISTRY))})"
        ) from None
    if spec.ready is not None:
        try:
            spec.ready()
        except SourceUnavailable as exc:
            raise ConfigError(exc.message) from None
    return spec.connect


def check_url(conn: ConnConfig, url: str) -> Url:
    """The parsed URL; InvalidRequest unless its scheme, host and port are this provider's.

    The returned :class:`~provider_gateway.urls.Url` is the one the protocols
    connect to, so what was checked is what is fetched.
    """
    return check_provider_url(conn, url, SCHEMES[conn.type])


def files_in_flight(conn: ConnConfig) -> int:
    """How many files one connection of ``conn`` carries at once (SFTP may interleave several; others 1)."""
    return max(1, int(getattr(conn, "files_in_flight", 1)))


__all__ = [
    "CONN_TYPES",
    "PROTOCOLS",
    "REGISTRY",
    "SCHEMES",
    "URL_TYPES",
    "Connection",
    "ConnectionFactory",
    "ConnectionSettings",
    "ProtocolSpec",
    "SourceStream",
    "UrlSettings",
    "check_url",
    "connection_factory",
    "files_in_flight",
]
