"""The HTTP(S) connection against real servers on loopback."""

from __future__ import annotations

import base64
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from provider_gateway.config.model import HttpConnConfig
from provider_gateway.errors import SourceAccessDenied, SourceNotFound, SourceUnavailable
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.http import HttpConnection
from provider_gateway.urls import redact_url

BASIC = "Basic " + base64.b64encode(b"alice:pw").decode()


def connect(server: HTTPServer, read_timeout_s: float = 10, **conn: object) -> HttpConnection:
    config = HttpConnConfig(type="http", host=f"{server.host}:{server.port}", **conn)  # type: ignore[arg-type]
    return HttpConnection(config, ConnectionSettings(read_timeout_s=read_timeout_s))


def read_all(connection: HttpConnection, url: str, offset: int = 0) -> bytes:
    stream = connection.open(url, offset)
    try:
        pieces = []
        while piece := stream.read(1 << 20):
            pieces.append(piece)
        return b"".join(pieces)
    finally:
        stream.close()


@pytest.fixture
def login_server() -> Iterator[HTTPServer]:
    """A second server, on another host name (127.0.0.1 vs localhost)."""
    server = HTTPServer(host="127.0.0.1")
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, SourceNotFound),
        (410, SourceNotFound),
        (401, SourceAccessDenied),
        (403, SourceAccessDenied),
        (500, SourceUnavailable),
        (503, SourceUnavailable),
    ],
)
def test_statuses_become_contract_errors(httpserver: HTTPServer, status: int, error: type[Exception]) -> None:
    httpserver.expect_request("/f").respond_with_data("no", status=status)
    with pytest.raises(error, match=str(status)):
        connect(httpserver).open(httpserver.url_for("/f"))


def test_basic_auth_token_and_headers_reach_the_provider(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/basic", headers={"Authorization": BASIC, "X-Api-Key": "k"}).respond_with_data("b")
    httpserver.expect_request("/token", headers={"Authorization": "Bearer tok"}).respond_with_data("t")

    basic = connect(httpserver, username="alice", password="pw", headers={"X-Api-Key": "k"})
    token = connect(httpserver, token="tok")

    assert read_all(basic, httpserver.url_for("/basic")) == b"b"
    assert read_all(token, httpserver.url_for("/token")) == b"t"


def test_range_resumes_and_a_server_ignoring_range_is_detected(httpserver: HTTPServer) -> None:
    body = bytes(range(256)) * 100

    def ranged(request: Request) -> Response:
        start = int(request.headers["Range"].removeprefix("bytes=").rstrip("-"))
        return Response(
            body[start:], status=206, headers={"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
        )

    httpserver.expect_request("/ranged").respond_with_handler(ranged)
    httpserver.expect_request("/plain").respond_with_data(body)
    connection = connect(httpserver)

    stream = connection.open(httpserver.url_for("/ranged"), offset=1000)
    assert stream.size == len(body)
    stream.close()
    assert read_all(connection, httpserver.url_for("/ranged"), offset=1000) == body[1000:]
    with pytest.raises(SourceUnavailable, match="ignored the Range"):
        connection.open(httpserver.url_for("/plain"), offset=1000)


def test_a_stalled_provider_times_out_as_source_unavailable(httpserver: HTTPServer) -> None:
    def stall(request: Request) -> Response:
        time.sleep(3)
        return Response("late")

    httpserver.expect_request("/stall").respond_with_handler(stall)
    started = time.monotonic()
    with pytest.raises(SourceUnavailable):
        connect(httpserver, read_timeout_s=1).open(httpserver.url_for("/stall"))
    assert time.monotonic() - started < 2.5


def test_connection_refused_is_source_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = HttpConnConfig(type="http", host=f"127.0.0.1:{port}")
    with pytest.raises(SourceUnavailable, match="failed"):
        HttpConnection(config, ConnectionSettings()).open(f"http://127.0.0.1:{port}/f")


def test_content_is_read_raw_never_decoded(httpserver: HTTPServer) -> None:
    gz = b"\x1f\x8b\x08\x00fake-gzip-bytes"
    httpserver.expect_request("/a.gz").respond_with_data(gz, headers={"Content-Encoding": "gzip"})
    assert read_all(connect(httpserver), httpserver.url_for("/a.gz")) == gz


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[HTTPServer, Path]]:
    authority = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("localhost").configure_cert(context)
    server = HTTPServer(host="localhost", ssl_context=context)
    server.start()
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    yield server, ca_file
    server.clear()
    server.stop()


def test_tls_is_verified_by_default_and_trusts_ca_bundle(tls_server: tuple[HTTPServer, Path]) -> None:
    server, ca_file = tls_server
    server.expect_request("/secure").respond_with_data("s")
    url = server.url_for("/secure")
    assert url.startswith("https://")

    def https(**conn: object) -> HttpConnection:
        config = HttpConnConfig(type="https", host=f"localhost:{server.port}", **conn)  # type: ignore[arg-type]
        return HttpConnection(config, ConnectionSettings())

    started = time.monotonic()
    with pytest.raises(SourceAccessDenied, match=r"^GET .*: certificate verify failed: "):
        https().open(url)
    assert time.monotonic() - started < 2  # answered at once, not retried
    with pytest.raises(SourceAccessDenied, match=r"certificate verify failed: .*mismatch"):
        HttpConnection(
            HttpConnConfig(type="https", host=f"127.0.0.1:{server.port}", ca_bundle=str(ca_file)), ConnectionSettings()
        ).open(url.replace("localhost", "127.0.0.1"))
    assert read_all(https(ca_bundle=str(ca_file)), url) == b"s"
    assert read_all(https(verify_tls=False), url) == b"s"


SECRET_URLS = [
    "/f?access_token=TOPSECRET1&granule=a.h5",
    "/f?X-Amz-Credential=TOPSECRET2&X-Amz-Signature=TOPSECRET3&X-Amz-Security-Token=TOPSECRET4",
    "/f?api_key=TOPSECRET5",
    "/f?sig=TOPSECRET6&se=2030",
]


def test_query_credentials_never_reach_logs_or_errors(httpserver: HTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    httpserver.expect_request("/f").respond_with_data("gone", status=404)
    caplog.set_level(logging.DEBUG)  # urllib3's own debug lines show every request's path and query
    messages = []
    for path in SECRET_URLS:
        url = httpserver.url_for(path).replace("http://", "http://user:TOPSECRET0@")
        with pytest.raises(SourceNotFound) as caught:
            connect(httpserver).open(url)
        messages.append(caught.value.message)
        messages.append(redact_url(url))
    client_log = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug"))
    shown = "\n".join(messages) + client_log
    assert '"GET /f?access_token=***&granule=a.h5 HTTP/1.1" 404' in client_log  # urllib3's line, masked
    assert "TOPSECRET" not in shown, shown


def test_a_transport_error_message_masks_query_credentials() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = HttpConnConfig(type="http", host=f"127.0.0.1:{port}")
    with pytest.raises(SourceUnavailable) as caught:
        HttpConnection(config, ConnectionSettings()).open(f"http://127.0.0.1:{port}/f?token=TOPSECRET&x=1")
    assert "TOPSECRET" not in caught.value.message
    assert "token=***" in caught.value.message
