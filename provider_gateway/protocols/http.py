"""HTTP and HTTPS providers: one ``requests.Session`` holding at most one connection.

Redirects are followed here, hop by hop, rather than by requests, so that each
hop is checked the same way:

- credentials (basic, bearer token) and configured headers go only to the
  exact origin (scheme, host, port) of the provider or of a ``login_hosts``
  entry, and never over plain http when the provider is https;
- a redirect to any other host is followed without them (the Earthdata Login
  pattern ends at a CDN or a pre-signed S3 URL), unless ``redirect_hosts``
  is set and does not name it;
- every connection is checked, on the address its socket actually reached,
  against link-local and cloud metadata addresses;
- the session keeps one connection pool with one connection, so a redirect
  to another origin closes the previous connection (one connection at a time).

Bodies are read raw (no content decoding) so the object in S3 has exactly the
provider's bytes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import ssl
import threading
import weakref
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3._collections import RecentlyUsedContainer
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from provider_gateway import __version__
from provider_gateway.config.fields import Fields
from provider_gateway.config.model import HttpConnConfig
from provider_gateway.errors import (
    ConfigError,
    GatewayError,
    InvalidRequest,
    ResumeUnsupported,
    SourceAccessDenied,
    SourceNotFound,
    SourceUnavailable,
)
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.spec import ProtocolSpec, UrlSettings, read_fields
from provider_gateway.protocols.urls import provider_host
from provider_gateway.urls import DEFAULT_PORTS, Url, parse_origin, parse_url, redact_text, redact_url

MAX_REDIRECTS = 10
_NOT_FOUND = {404, 410}
_DENIED = {401, 403, 407}
_DRAIN_LIMIT = 64 * 1024  # a redirect's body up to this size is read so that its connection stays open
METADATA_ADDRESSES = {ipaddress.ip_address("fd00:ec2::254")}

Origin = tuple[str, str, int]


class _RedactUrls(logging.Filter):
    """Masks credentials in URLs that urllib3 and requests log (their debug lines show path and query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_text(a) if isinstance(a, str) else a for a in record.args)
        return True


for _name in ("urllib3", "urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry", "requests"):
    logging.getLogger(_name).addFilter(_RedactUrls())


def refuse_address(host: str, address: str) -> None:
    """SourceAccessDenied if ``address`` is link-local or a cloud metadata address.

    Those (169.254.169.254 above all) hand out the gateway's own credentials.
    """
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return  # not an IP socket (never the case for TCP): nothing to compare
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    for candidate in (ip, mapped):
        if candidate is not None and (candidate.is_link_local or candidate in METADATA_ADDRESSES):
            raise SourceAccessDenied(f"{host} is a link-local or metadata address ({candidate}): refused")


class _Sockets:
    """The sockets one HttpConnection opened, so that abort() can cut the one being read.

    The socket objects themselves are kept, not the connections' ``sock``:
    http.client drops that reference when a response will close the
    connection, and the response then reads a socket no connection names.
    """

    def __init__(self) -> None:
        self._live: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._live.add(sock)

    def cut(self) -> None:
        with self._lock:
            live = list(self._live)
        for sock in live:
            if sock.fileno() != -1:  # a socket wrapped for TLS is detached: its SSLSocket is in the set too
                # socket.socket's own shutdown: SSLSocket's would also drop its SSL object under the reader.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _guarded_pools(sockets: _Sockets) -> dict[str, type[HTTPConnectionPool]]:
    """Pool classes whose connections check the peer address and are known to ``sockets``."""

    def new_conn(connection: HTTPConnection, opened: socket.socket) -> socket.socket:
        try:
            refuse_address(connection.host, str(opened.getpeername()[0]))
        except GatewayError:
            opened.close()
            raise
        sockets.add(opened)
        return opened

    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return new_conn(self, super()._new_conn())

    class GuardedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return new_conn(self, super()._new_conn())

        def connect(self) -> None:
            super().connect()
            if self.sock is not None:  # the TLS socket that replaced the one _new_conn opened
                sockets.add(self.sock)

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


class _OnePoolAdapter(HTTPAdapter):
    """One pool of one connection: a request to another origin closes the previous connection."""

    def __init__(self, pools: dict[str, type[HTTPConnectionPool]]) -> None:
        self._pools = pools
        super().__init__(pool_connections=1, pool_maxsize=1, pool_block=True, max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools
        # urllib3 2 drops an evicted pool without closing it: its idle connection would stay open.
        self.poolmanager.pools = RecentlyUsedContainer(connections, dispose_func=lambda pool: pool.close())


class HttpStream:
    """The body of one GET response; ``b""`` only once urllib3 has seen all of it."""

    def __init__(self, response: requests.Response, url: Url, size: int | None) -> None:
        self._response = response
        self._raw: urllib3.BaseHTTPResponse = response.raw
        self._url = url
        self.size = size

    def read(self, amount: int) -> bytes:
        # urllib3 raises for a Content-Length body cut short and for a chunked body without its
        # terminator, so an empty read is the protocol's own end of the body.
        try:
            return bytes(self._raw.read(amount, decode_content=False))
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError, ValueError) as exc:
            raise SourceUnavailable(f"reading {redact_url(self._url.raw)} failed: {_reason(exc)}") from exc

    def close(self) -> None:
        self._response.close()


class HttpConnection:
    """A persistent HTTP(S) connection to one provider."""

    def __init__(self, conn: HttpConnConfig, settings: ConnectionSettings) -> None:
        self._conn = conn
        self._timeouts = (conn.timeout_s, settings.read_timeout_s)
        # Passed on every request: a session-level value loses to REQUESTS_CA_BUNDLE in the environment.
        self._verify: bool | str = conn.ca_bundle or conn.verify_tls
        self._sockets = _Sockets()
        self._aborted = False
        self._session = self._new_session(settings)

    def _new_session(self, settings: ConnectionSettings) -> requests.Session:
        session = requests.Session()
        adapter = _OnePoolAdapter(_guarded_pools(self._sockets))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update({"User-Agent": f"{settings.user_agent}/{__version__}", "Accept-Encoding": "identity"})
        return session

    def open(self, url: str, offset: int = 0) -> HttpStream:
        target = parse_url(url)
        if self._aborted:
            raise SourceUnavailable("the connection was aborted")
        response, final = self._follow(target, offset)
        try:
            return self._stream(final, response, offset)
        except GatewayError:
            response.close()
            raise

    def _follow(self, first: Url, offset: int) -> tuple[requests.Response, Url]:
        credentialed = self._credential_origins(first)
        current = first
        for hop in range(MAX_REDIRECTS + 1):
            refuse_address(current.host, current.host)  # a literal address is refused before connecting
            if hop:
                self._check_redirect(current)
            response = self._get(current, offset, current.origin in credentialed)
            if not response.is_redirect:
                return response, current
            location = response.headers["Location"]
            _release(response)
            current = _redirect_target(current, location)
        # Not retried: the same request meets the same loop (an Earthdata login loop is a refused login).
        raise SourceAccessDenied(
            f"GET {redact_url(first.raw)}: more than {MAX_REDIRECTS} redirects (a redirect loop?), "
            f"the last to {redact_url(current.raw)}"
        )

    def _get(self, url: Url, offset: int, credentials: bool) -> requests.Response:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        auth: tuple[str, str] | None = None
        if credentials:
            headers.update(self._conn.headers)
            if self._conn.token:
                headers["Authorization"] = f"Bearer {self._conn.token}"
            elif self._conn.username is not None:
                auth = (self._conn.username, self._conn.password or "")
        try:
            return self._session.get(
                url.request_url,
                headers=headers,
                auth=auth,
                stream=True,
                timeout=self._timeouts,
                verify=self._verify,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            failure = _certificate_failure(exc)
            if failure is not None:
                raise SourceAccessDenied(f"GET {redact_url(url.raw)}: certificate verify failed: {failure}") from exc
            raise SourceUnavailable(f"GET {redact_url(url.raw)} failed: {_reason(exc)}") from exc
        except requests.RequestException as exc:
            raise SourceUnavailable(f"GET {redact_url(url.raw)} failed: {_reason(exc)}") from exc

    def _credential_origins(self, first: Url) -> set[Origin]:
        """The exact origins that may see the credentials and configured headers."""
        provider = provider_host(self._conn)
        host, port = provider if provider is not None else (first.host, first.port)
        origins = {(scheme, host, port or DEFAULT_PORTS[scheme]) for scheme in SCHEMES[self._conn.type]}
        for entry in self._conn.login_hosts:
            scheme, login_host, login_port = parse_origin(entry)
            for s in (scheme,) if scheme else ("https", "http"):
                origins.add((s, login_host, login_port or DEFAULT_PORTS[s]))
        if self._conn.type == "https":
            origins = {origin for origin in origins if origin[0] == "https"}
        return origins

    def _check_redirect(self, url: Url) -> None:
        if url.scheme not in ("http", "https"):
            raise SourceAccessDenied(f"redirect to a {url.scheme} URL refused: {redact_url(url.raw)}")
        allowed = self._conn.redirect_hosts
        if allowed and not self._may_redirect_to(url.host):
            raise SourceAccessDenied(
                f"redirect to {url.host} refused: it is not the provider's host, a login host or in redirect_hosts"
            )

    def _may_redirect_to(self, host: str) -> bool:
        provider = provider_host(self._conn)
        names = {provider[0]} if provider else set()
        names |= {parse_origin(entry)[1] for entry in self._conn.login_hosts}
        for entry in self._conn.redirect_hosts:
            name = parse_origin(entry, wildcard=True)[1]
            if name.startswith("*.") and host.endswith(name[1:]):
                return True
            names.add(name)
        return host in names

    def _stream(self, url: Url, response: requests.Response, offset: int) -> HttpStream:
        status = response.status_code
        shown = redact_url(url.raw)
        if status in _NOT_FOUND:
            raise SourceNotFound(f"GET {shown}: {status} {response.reason}")
        if status in _DENIED:
            raise SourceAccessDenied(f"GET {shown}: {status} {response.reason}")
        if offset and status == 200:
            raise ResumeUnsupported(f"GET {shown}: the server ignored the Range request")
        if status not in (200, 206):
            raise SourceUnavailable(f"GET {shown}: {status} {response.reason}")
        length = response.headers.get("Content-Length")
        size = int(length) + offset if length and length.isdigit() else None
        return HttpStream(response, url, size)

    def check(self) -> bool:
        # urllib3 replaces a dropped keep-alive connection within its one-slot pool
        return not self._aborted

    def abort(self) -> None:
        """Shut down the socket being read (from any thread); the connection is unusable afterwards."""
        self._aborted = True
        self._sockets.cut()

    def close(self) -> None:
        self._session.close()


def _redirect_target(current: Url, location: str) -> Url:
    try:
        return parse_url(urljoin(current.request_url, location))
    except InvalidRequest as exc:
        raise SourceAccessDenied(f"redirect from {redact_url(current.raw)} refused: {exc.message}") from None


def _release(response: requests.Response) -> None:
    """Close a redirect response, keeping its connection for reuse when its body is small."""
    length = response.headers.get("Content-Length", "")
    with contextlib.suppress(requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        if length.isdigit() and int(length) <= _DRAIN_LIMIT:
            response.content  # noqa: B018 - read, so the connection goes back to the pool
    response.close()


def _certificate_failure(exc: BaseException) -> str | None:
    """The verification error inside a requests SSLError, if the failure was the certificate's."""
    seen: set[int] = set()
    pending: list[Any] = [exc]
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLCertVerificationError):
            return str(item.verify_message or item.reason or item)
        pending.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    text = str(exc)
    return text if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text else None


def _reason(exc: BaseException) -> str:
    """A short description of a transport failure, with credentials in any URL masked."""
    text = redact_text(str(exc))
    return text if len(text) < 300 else text[:300] + "..."


def _origins(fields: Fields, key: str) -> tuple[str, ...]:
    entries = tuple(h.lower() for h in fields.strings(key))
    for entry in entries:
        try:
            parse_origin(entry, wildcard=key == "redirect_hosts")
        except InvalidRequest as exc:
            raise ConfigError(f"{fields.key_path(key)}: {exc.message}") from None
    return entries


def _read_config(fields: Fields, kind: str) -> HttpConnConfig:
    login_hosts = _origins(fields, "login_hosts")
    redirect_hosts = _origins(fields, "redirect_hosts")
    return read_fields(fields, HttpConnConfig, kind, login_hosts=login_hosts, redirect_hosts=redirect_hosts)


def _from_url(url: UrlSettings) -> HttpConnConfig:
    return HttpConnConfig(
        type=url.type,  # type: ignore[arg-type]
        host=url.netloc,
        username=url.username,
        password=url.password,
        ca_bundle=url.ca_bundle,
    )


SPEC = ProtocolSpec(
    schemes={"http": ("http", "https"), "https": ("https",)},
    url_types={"http": "http", "https": "https"},
    config_class=HttpConnConfig,
    connect=HttpConnection,
    from_url=_from_url,
    read_config=_read_config,
)
SCHEMES = SPEC.schemes  # what the credentials of each type are scoped to
