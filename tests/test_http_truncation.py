"""An HTTP body is complete only when the protocol says so: Content-Length reached or the chunked terminator.

A raw-socket server sends a whole response, or cuts it at a random byte
offset and closes the connection; the stream must then raise, never end as if
the short body were the whole file.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator

import pytest

from provider_gateway.config.model import HttpConnConfig
from provider_gateway.errors import SourceUnavailable
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.http import HttpConnection

SEED = 1415
CASES = 40


def chunked(body: bytes, rng: random.Random) -> bytes:
    out, at = [], 0
    while at < len(body):
        size = rng.randint(1, 5000)
        out.append(b"%x\r\n" % len(body[at : at + size]) + body[at : at + size] + b"\r\n")
        at += size
    return b"".join(out) + b"0\r\n\r\n"


class OneShotServer:
    """Answers each connection with ``head + body[:cut]`` and closes it."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.response = b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with client:
                client.recv(65536)
                client.sendall(self.response)
                client.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def server() -> Iterator[OneShotServer]:
    running = OneShotServer()
    yield running
    running.close()


def read_all(port: int) -> bytes:
    connection = HttpConnection(HttpConnConfig(type="http", host=f"127.0.0.1:{port}"), ConnectionSettings(5))
    stream = connection.open(f"http://127.0.0.1:{port}/f")
    try:
        pieces = []
        while piece := stream.read(4096):
            pieces.append(piece)
        return b"".join(pieces)
    finally:
        stream.close()
        connection.close()


@pytest.mark.parametrize("encoding", ["content-length", "chunked"])
def test_a_body_cut_anywhere_is_never_read_as_complete(server: OneShotServer, encoding: str) -> None:
    rng = random.Random(f"{SEED}-{encoding}")
    for case in range(CASES):
        body = rng.randbytes(rng.randint(1, 50_000))
        if encoding == "chunked":
            head, payload = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", chunked(body, rng)
        else:
            head, payload = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body), body
        cut = rng.randrange(len(payload))  # always short of the end (for chunked: of the terminator)
        server.response = head + payload[:cut]
        with pytest.raises(SourceUnavailable):
            got = read_all(server.port)
            pytest.fail(f"seed {SEED} case {case}: {len(got)} of {len(body)} bytes read as complete (cut {cut})")
        server.response = head + payload
        assert read_all(server.port) == body, f"seed {SEED} case {case}"
