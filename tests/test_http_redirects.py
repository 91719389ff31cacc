"""Redirects over real loopback servers: credentials to exact origins only, every hop guarded,
one connection at a time, a redirect loop answered with a code that is not retried."""

from __future__ import annotations

import base64
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from provider_gateway.config import load_config
from provider_gateway.config.model import HttpConnConfig
from provider_gateway.errors import ConfigError, SourceAccessDenied, SourceUnavailable
from provider_gateway.protocols import http as http_protocol
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.http import HttpConnection
from tests.servers import CountingProxy
from tests.support import write_config
from tests.test_protocol_http import read_all

BASIC = "Basic " + base64.b64encode(b"alice:pw").decode()
SECRET_HEADER = "X-Api-Key"


def serve(host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> HTTPServer:
    server = HTTPServer(host=host, ssl_context=ssl_context)
    server.start()
    return server


@pytest.fixture
def servers() -> Iterator[dict[str, HTTPServer]]:
    """provider (127.0.0.1), another port on the provider's host, a login host and a CDN (127.0.0.2)."""
    running = {
        "provider": serve(),
        "other_port": serve(),
        "login": serve("localhost"),
        "cdn": serve("127.0.0.2"),
    }
    yield running
    for server in running.values():
        server.clear()
        server.stop()


def connection(provider: HTTPServer, kind: str = "http", **conn: Any) -> HttpConnection:
    config = HttpConnConfig(type=kind, host=f"{provider.host}:{provider.port}", **conn)  # type: ignore[arg-type]
    return HttpConnection(config, ConnectionSettings(read_timeout_s=10))


def redirect(server: HTTPServer, path: str, location: str) -> None:
    server.expect_request(path).respond_with_data("", status=302, headers={"Location": location})


def secrets_seen(server: HTTPServer) -> list[tuple[str, str | None, str | None]]:
    return [(r.path, r.headers.get("Authorization"), r.headers.get(SECRET_HEADER)) for r, _ in server.log]


@pytest.mark.parametrize("credentials", [{"username": "alice", "password": "pw"}, {"token": "tok"}])
def test_the_earthdata_pattern_sends_credentials_to_the_provider_and_login_host_only(
    servers: dict[str, HTTPServer], credentials: dict[str, str]
) -> None:
    provider, login, cdn = servers["provider"], servers["login"], servers["cdn"]
    authorization = BASIC if "username" in credentials else "Bearer tok"
    redirect(provider, "/granule.h5", login.url_for("/oauth/authorize"))
    redirect(login, "/oauth/authorize", provider.url_for("/granted"))
    redirect(provider, "/granted", cdn.url_for("/bucket/granule.h5") + "?X-Amz-Signature=abc")
    cdn.expect_request("/bucket/granule.h5").respond_with_data(b"granule bytes")
    conn = connection(
        provider, headers={SECRET_HEADER: "k"}, login_hosts=(f"http://localhost:{login.port}",), **credentials
    )

    assert read_all(conn, provider.url_for("/granule.h5")) == b"granule bytes"

    assert secrets_seen(provider) == [("/granule.h5", authorization, "k"), ("/granted", authorization, "k")]
    assert secrets_seen(login) == [("/oauth/authorize", authorization, "k")]
    assert secrets_seen(cdn) == [("/bucket/granule.h5", None, None)]


def test_another_port_or_a_login_host_on_its_default_port_gets_no_credentials(
    servers: dict[str, HTTPServer],
) -> None:
    provider, other, login = servers["provider"], servers["other_port"], servers["login"]
    redirect(provider, "/a", other.url_for("/a"))
    redirect(provider, "/b", login.url_for("/b"))
    other.expect_request("/a").respond_with_data(b"A")
    login.expect_request("/b").respond_with_data(b"B")
    # "localhost" means https://localhost:443 (and http://localhost:80): not the login server's port
    conn = connection(
        provider, username="alice", password="pw", headers={SECRET_HEADER: "k"}, login_hosts=("localhost",)
    )

    assert read_all(conn, provider.url_for("/a")) == b"A"
    assert read_all(conn, provider.url_for("/b")) == b"B"

    assert secrets_seen(other) == [("/a", None, None)]
    assert secrets_seen(login) == [("/b", None, None)]
    assert all(auth == BASIC for _, auth, _ in secrets_seen(provider))


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[HTTPServer, str]]:
    authority = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    server = serve("127.0.0.1", context)
    yield server, str(ca_file)
    server.clear()
    server.stop()


def test_an_https_provider_never_sends_credentials_over_http(
    servers: dict[str, HTTPServer], tls: tuple[HTTPServer, str]
) -> None:
    secure, ca_file = tls
    plain = servers["other_port"]
    redirect(secure, "/f", plain.url_for("/f"))
    plain.expect_request("/f").respond_with_data(b"F")
    conn = connection(
        secure,
        "https",
        token="tok",
        headers={SECRET_HEADER: "k"},
        ca_bundle=ca_file,
        login_hosts=(f"http://127.0.0.1:{plain.port}", f"127.0.0.1:{plain.port}"),
    )

    assert read_all(conn, secure.url_for("/f")) == b"F"
    assert secrets_seen(secure) == [("/f", "Bearer tok", "k")]
    assert secrets_seen(plain) == [("/f", None, None)]


def test_a_redirect_loop_ends_in_source_access_denied(servers: dict[str, HTTPServer]) -> None:
    provider, login = servers["provider"], servers["login"]
    redirect(provider, "/data", login.url_for("/login"))
    redirect(login, "/login", provider.url_for("/data"))
    conn = connection(provider)

    with pytest.raises(SourceAccessDenied, match="more than 10 redirects") as caught:
        conn.open(provider.url_for("/data"))

    assert not caught.value.retryable
    assert len(provider.log) + len(login.log) == http_protocol.MAX_REDIRECTS + 1


def test_redirect_hosts_pins_where_redirects_may_lead(servers: dict[str, HTTPServer]) -> None:
    provider, cdn = servers["provider"], servers["cdn"]
    redirect(provider, "/f", cdn.url_for("/f"))
    cdn.expect_request("/f").respond_with_data(b"F")

    with pytest.raises(SourceAccessDenied, match="not the provider's host, a login host or in redirect_hosts"):
        connection(provider, redirect_hosts=("cdn.example.org",)).open(provider.url_for("/f"))
    assert cdn.log == []
    assert read_all(connection(provider, redirect_hosts=("127.0.0.2",)), provider.url_for("/f")) == b"F"


def test_the_metadata_guard_checks_the_address_connected_to(
    servers: dict[str, HTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name that resolves to a forbidden address (as after DNS rebinding) is caught on the socket's peer.
    provider, login = servers["cdn"], servers["login"]
    redirect(provider, "/f", login.url_for("/f"))
    login.expect_request("/f").respond_with_data(b"F")
    monkeypatch.setattr(http_protocol, "METADATA_ADDRESSES", {ipaddress.ip_address(a) for a in ("127.0.0.1", "::1")})

    with pytest.raises(SourceAccessDenied, match=r"localhost is a link-local or metadata address"):
        connection(provider).open(provider.url_for("/f"))
    assert login.log == []
    assert [r.path for r, _ in provider.log] == ["/f"]


def established_to(ports: set[int]) -> int:
    """Client sockets of this machine in ESTABLISHED state towards any of ``ports`` (from /proc/net/tcp)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) in ports:
                    count += 1
    return count


class KeepAliveRedirects(http.server.ThreadingHTTPServer):
    """An HTTP/1.1 server that keeps connections open (as nginx does) and redirects every GET to ``target``."""

    daemon_threads = True

    def __init__(self, target: str) -> None:
        self.target = target

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = int(self.server_address[1])
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_one_connection_at_a_time_across_an_http_to_https_redirect(tls: tuple[HTTPServer, str]) -> None:
    # Both proxies stand for the provider's host: one for its http port, one for its https port.
    secure, ca_file = tls
    secure_proxy = CountingProxy(secure.port)
    plain = KeepAliveRedirects(f"https://127.0.0.1:{secure_proxy.port}")
    plain_proxy = CountingProxy(plain.port)
    ports = {plain_proxy.port, secure_proxy.port}
    seen_open: list[int] = []

    def answer(request: Request) -> Response:
        seen_open.append(established_to(ports))  # the client's connections while the https one is in use
        return Response(request.path.encode() * 1000)

    for name in ("/a", "/b", "/c"):
        secure.expect_request(name).respond_with_handler(answer)
    config = HttpConnConfig(type="http", host=f"127.0.0.1:{plain_proxy.port}", ca_bundle=ca_file)
    conn = HttpConnection(config, ConnectionSettings())
    try:
        for name in ("/a", "/b", "/c"):
            assert read_all(conn, f"http://127.0.0.1:{plain_proxy.port}{name}") == name.encode() * 1000
    finally:
        conn.close()
        plain_proxy.close()
        secure_proxy.close()
        plain.shutdown()
    assert seen_open == [1, 1, 1]
    assert (plain_proxy.total, secure_proxy.total) == (3, 3)  # each hop closed the other scheme's connection


def _stalling_server() -> tuple[socket.socket, threading.Event]:
    """A raw server that sends headers and ten bytes of a 1,000-byte body, then stalls until told."""
    listener = socket.create_server(("127.0.0.1", 0))
    release = threading.Event()

    def run() -> None:
        client, _ = listener.accept()
        with client:
            client.recv(65536)
            client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            release.wait(30)

    threading.Thread(target=run, daemon=True).start()
    return listener, release


def test_abort_ends_a_read_blocked_on_a_stalled_body_at_once() -> None:
    listener, release = _stalling_server()
    port = listener.getsockname()[1]
    conn = HttpConnection(HttpConnConfig(type="http", host=f"127.0.0.1:{port}"), ConnectionSettings(read_timeout_s=30))
    stream = conn.open(f"http://127.0.0.1:{port}/slow")
    assert stream.read(10) == b"x" * 10
    outcome: list[BaseException | bytes] = []
    entered = threading.Event()

    def blocked_read() -> None:
        entered.set()
        try:
            outcome.append(stream.read(1000))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=blocked_read)
    reader.start()
    entered.wait(5)
    aborted_at = time.monotonic()
    conn.abort()
    reader.join(5)
    try:
        assert not reader.is_alive()
        assert time.monotonic() - aborted_at < 1
        assert len(outcome) == 1 and isinstance(outcome[0], SourceUnavailable), outcome
        assert not conn.check()
        conn.abort()  # twice is fine
        with pytest.raises(SourceUnavailable, match="aborted"):
            conn.open(f"http://127.0.0.1:{port}/slow")
    finally:
        release.set()
        listener.close()
        conn.close()


def _load(tmp_path: Path, conn_config: dict[str, Any]) -> HttpConnConfig:
    gateway = {"activity_arn": "arn:aws:states:us-east-1:123456789012:activity:a", "conn_config": conn_config}
    path = write_config(tmp_path / "c.yml", [{"id": "P", "gateway_config": {**gateway, "num_connections": 1}}])
    conn = load_config(str(path)).providers[0].gateway.conn
    assert isinstance(conn, HttpConnConfig)
    return conn


@pytest.mark.parametrize(
    ("conn_config", "message"),
    [
        ({"type": "http", "token": "t"}, "host: required when username, password, token or headers are set"),
        ({"type": "https", "headers": {"X-Api-Key": "k"}}, "host: required when username, password, token or headers"),
        ({"type": "https", "host": "h", "login_hosts": ["ftp://login.example"]}, "login_hosts: .*http or https"),
        ({"type": "https", "host": "h", "login_hosts": ["*.example.org"]}, "login_hosts: .*not a host name"),
        ({"type": "https", "host": "h", "redirect_hosts": ["cdn\\@x"]}, "redirect_hosts: .*backslash"),
    ],
)
def test_the_config_refuses_credentials_without_a_host_and_bad_origins(
    tmp_path: Path, conn_config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, conn_config)


def test_login_and_redirect_hosts_load(tmp_path: Path) -> None:
    conn = _load(
        tmp_path,
        {
            "type": "https",
            "host": "h",
            "login_hosts": ["URS.example.org", "https://login:8443"],
            "redirect_hosts": ["*.cdn.example"],
        },
    )
    assert (conn.login_hosts, conn.redirect_hosts) == (("urs.example.org", "https://login:8443"), ("*.cdn.example",))
