"""HTTP and HTTPS providers: one ``requests.Session`` holding one connection.

Credentials (basic, bearer token, extra headers) go only to the provider's
host and to ``login_hosts``; after a redirect elsewhere they are dropped, and
after a redirect to a login host (the Earthdata Login pattern) they are sent
again. Bodies are read raw (no content decoding) so the object in S3 has
exactly the provider's bytes.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from provider_gateway import __version__
from provider_gateway.config.model import HttpConnConfig
from provider_gateway.errors import (
    GatewayError,
    ResumeUnsupported,
    SourceAccessDenied,
    SourceNotFound,
    SourceUnavailable,
)
from provider_gateway.messages import redact_url
from provider_gateway.protocols.base import ConnectionSettings

_NOT_FOUND = {404, 410}
_DENIED = {401, 403, 407}


class _ScopedAuth(requests.auth.AuthBase):
    """Adds the provider's credentials to requests for the hosts allowed to see them."""

    def __init__(self, conn: HttpConnConfig, hosts: set[str]) -> None:
        self._conn = conn
        self.hosts = hosts

    def allowed(self, url: str) -> bool:
        return (urlsplit(url).hostname or "").lower() in self.hosts

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        url = request.url or ""
        if not self.allowed(url):
            return request
        for name, value in self._conn.headers.items():
            request.headers[name] = value
        if self._conn.token:
            request.headers["Authorization"] = f"Bearer {self._conn.token}"
        elif self._conn.username is not None:
            request.prepare_auth((self._conn.username, self._conn.password or ""))
        return request


class _Session(requests.Session):
    """A session that follows redirects only to allowed hosts, re-sending credentials there only."""

    scoped_auth: _ScopedAuth

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        if target:
            url = urljoin(resp.url, target)
            try:
                check_redirect(url, self.scoped_auth.hosts)
            except GatewayError:
                resp.close()  # its connection must go back to the one-slot pool
                raise
        return target

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        prepared_request.headers.pop("Authorization", None)
        for name in self.scoped_auth._conn.headers:
            prepared_request.headers.pop(name, None)
        self.scoped_auth(prepared_request)


class HttpStream:
    """The body of one GET response."""

    def __init__(self, response: requests.Response, size: int | None) -> None:
        self._response = response
        self._raw: urllib3.BaseHTTPResponse = response.raw
        self.size = size

    def read(self, amount: int) -> bytes:
        try:
            return bytes(self._raw.read(amount, decode_content=False))
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            raise SourceUnavailable(f"reading {redact_url(self._response.url)} failed: {_reason(exc)}") from exc

    def close(self) -> None:
        self._response.close()


class HttpConnection:
    """A persistent HTTP(S) connection to one provider."""

    def __init__(self, conn: HttpConnConfig, settings: ConnectionSettings) -> None:
        self._conn = conn
        self._timeouts = (conn.timeout_s, settings.read_timeout_s)
        # Passed on every request: a session-level value loses to REQUESTS_CA_BUNDLE in the environment.
        self._verify: bool | str = conn.ca_bundle or conn.verify_tls
        self._session = self._new_session(settings)

    def _new_session(self, settings: ConnectionSettings) -> _Session:
        session = _Session()
        # One connection per host, and a caller that waits for it rather than opening a second.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=1, pool_block=True, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update({"User-Agent": f"{settings.user_agent}/{__version__}", "Accept-Encoding": "identity"})
        hosts = {h.lower() for h in self._conn.login_hosts}
        if self._conn.host:
            hosts.add((urlsplit(f"//{self._conn.host}").hostname or "").lower())
        session.scoped_auth = _ScopedAuth(self._conn, hosts)
        return session

    def _auth_for(self, url: str) -> Any:
        auth = self._session.scoped_auth
        if not self._conn.host:
            # No host configured: the task's own host is the provider's.
            auth.hosts = {h.lower() for h in self._conn.login_hosts} | {(urlsplit(url).hostname or "").lower()}
        return auth

    def open(self, url: str, offset: int = 0) -> HttpStream:
        refuse_link_local(url)
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = self._session.get(
                url,
                headers=headers,
                stream=True,
                timeout=self._timeouts,
                auth=self._auth_for(url),
                verify=self._verify,
            )
        except requests.RequestException as exc:
            raise SourceUnavailable(f"GET {redact_url(url)} failed: {_reason(exc)}") from exc
        try:
            return self._stream(url, response, offset)
        except GatewayError:
            response.close()
            raise

    def _stream(self, url: str, response: requests.Response, offset: int) -> HttpStream:
        status = response.status_code
        if status in _NOT_FOUND:
            raise SourceNotFound(f"GET {redact_url(url)}: {status} {response.reason}")
        if status in _DENIED:
            raise SourceAccessDenied(f"GET {redact_url(url)}: {status} {response.reason}")
        if offset and status == 200:
            raise ResumeUnsupported(f"GET {redact_url(url)}: the server ignored the Range request")
        if status not in (200, 206):
            raise SourceUnavailable(f"GET {redact_url(url)}: {status} {response.reason}")
        length = response.headers.get("Content-Length")
        size = int(length) + offset if length and length.isdigit() else None
        return HttpStream(response, size)

    def check(self) -> bool:
        return True  # urllib3 replaces a dropped keep-alive connection within its one-slot pool

    def close(self) -> None:
        self._session.close()


METADATA_ADDRESSES = {ipaddress.ip_address("fd00:ec2::254")}


def refuse_link_local(url: str) -> None:
    """SourceAccessDenied if the URL's host is a link-local or cloud metadata address.

    Those (169.254.169.254 above all) hand out the gateway's own credentials.
    """
    host = urlsplit(url).hostname or ""
    for address in _addresses(host):
        if address.is_link_local or address in METADATA_ADDRESSES:
            raise SourceAccessDenied(f"{host} is a link-local or metadata address ({address}): refused")


@functools.lru_cache(maxsize=1024)
def _addresses(host: str) -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return frozenset()  # unresolvable: the request itself fails
    return frozenset(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)


def check_redirect(url: str, allowed_hosts: set[str]) -> None:
    """SourceAccessDenied unless a redirect target is http(s), on an allowed host, and not link-local."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise SourceAccessDenied(f"redirect to a {parts.scheme or 'relative'} URL refused: {redact_url(url)}")
    if (parts.hostname or "").lower() not in allowed_hosts:
        raise SourceAccessDenied(
            f"redirect to another host refused: {parts.hostname} is neither the provider's host nor in login_hosts"
        )
    refuse_link_local(url)


def _reason(exc: BaseException) -> str:
    """A short description of a transport failure, without URLs' credentials."""
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."
