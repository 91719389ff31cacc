"""Which URLs belong to a provider: checked before anything is fetched."""

from __future__ import annotations

from provider_gateway.config.model import ConnConfig, HttpConnConfig
from provider_gateway.errors import InvalidRequest
from provider_gateway.urls import DEFAULT_PORTS, Url, parse_url, redact_url, split_host_port


def check_provider_url(conn: ConnConfig, url: str, allowed: tuple[str, ...]) -> Url:
    """The parsed URL; InvalidRequest unless its scheme is one of ``allowed`` and its host and port ``conn``'s.

    (:func:`provider_gateway.protocols.check_url` passes the schemes of ``conn.type``.)
    """
    parsed = parse_url(url)
    if parsed.scheme not in allowed:
        raise InvalidRequest(
            f"scheme {parsed.scheme!r} of {redact_url(url)!r} is not served by this {conn.type} provider "
            f"(allowed: {', '.join(allowed)})"
        )
    if isinstance(conn, HttpConnConfig):
        _check_http_host(conn, parsed)
    else:
        if parsed.host != conn.host.lower():
            raise InvalidRequest(f"host {parsed.host!r} is not this provider's host {conn.host!r}")
        if parsed.port is not None and parsed.port != conn.port:
            raise InvalidRequest(f"port {parsed.port} is not this provider's port {conn.port}")
    return parsed


def provider_host(conn: HttpConnConfig) -> tuple[str, int | None] | None:
    """(host, port or None) of an http(s) provider's configured ``host``; None when it names none."""
    if conn.host is None:
        return None
    return split_host_port(conn.host, "conn_config.host")


def _check_http_host(conn: HttpConnConfig, parsed: Url) -> None:
    want = provider_host(conn)
    if want is None:
        return
    want_host, want_port = want
    if parsed.host != want_host:
        raise InvalidRequest(f"host {parsed.host!r} is not this provider's host {want_host!r}")
    effective = parsed.effective_port
    if want_port is not None and effective != want_port:
        raise InvalidRequest(f"port {effective} is not this provider's port {want_port}")
    if want_port is None and effective != DEFAULT_PORTS[parsed.scheme]:
        raise InvalidRequest(f"port {effective} is not this provider's port (the {parsed.scheme} default)")
