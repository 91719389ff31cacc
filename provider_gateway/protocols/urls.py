"""Which URLs belong to a provider: checked before anything is fetched."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from provider_gateway.config.model import ConnConfig, HttpConnConfig
from provider_gateway.errors import InvalidRequest

SCHEMES: dict[str, tuple[str, ...]] = {
    "http": ("http", "https"),
    "https": ("https",),
    "ftp": ("ftp",),
    "ftps": ("ftp", "ftps"),
    "sftp": ("sftp",),
    "gridftp": ("gsiftp", "ftp"),
}
DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "ftps": 21, "sftp": 22, "gridftp": 2811}


def check_url(conn: ConnConfig, url: str) -> SplitResult:
    """Raise InvalidRequest unless ``url``'s scheme and host are this provider's."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"not a valid URL: {url!r} ({exc})") from exc
    allowed = SCHEMES[conn.type]
    if parts.scheme.lower() not in allowed:
        raise InvalidRequest(
            f"scheme {parts.scheme or '(none)'!r} is not served by this {conn.type} provider "
            f"(allowed: {', '.join(allowed)})"
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise InvalidRequest(f"URL {url!r} names no host")
    if isinstance(conn, HttpConnConfig):
        _check_http_host(conn, parts, host, port)
    else:
        if host != conn.host.lower():
            raise InvalidRequest(f"host {host!r} is not this provider's host {conn.host!r}")
        if port is not None and port != conn.port:
            raise InvalidRequest(f"port {port} is not this provider's port {conn.port}")
    return parts


def _check_http_host(conn: HttpConnConfig, parts: SplitResult, host: str, port: int | None) -> None:
    if conn.host is None:
        return
    want = urlsplit(f"//{conn.host}")
    want_host = (want.hostname or "").lower()
    if host != want_host:
        raise InvalidRequest(f"host {host!r} is not this provider's host {want_host!r}")
    effective = port if port is not None else DEFAULT_PORTS[parts.scheme.lower()]
    if want.port is not None and effective != want.port:
        raise InvalidRequest(f"port {effective} is not this provider's port {want.port}")
