"""A small HTTP/1.1 file server on loopback: the demo's provider, and the tests'.

It keeps connections alive, honours ``Range``, can be slowed down to a byte
rate, and counts what a provider operator would watch: TCP connections
accepted in all, and the most open at once.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from provider_gateway.local.tally import ConnectionTally

CHUNK = 256 * 1024


class FileHTTPServer(ThreadingHTTPServer):
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1."""

    daemon_threads = True

    def __init__(
        self,
        files: dict[str, bytes] | None = None,
        rate_bytes_per_s: float | None = None,
        basic_auth: tuple[str, str] | None = None,
        port: int = 0,
    ) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.files: dict[str, bytes] = dict(files or {})
        self.authorization = (
            "Basic " + base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode() if basic_auth else None
        )
        self.rate = rate_bytes_per_s
        self.connections = ConnectionTally()
        self.requests: list[str] = []
        self.bytes_served = 0
        # Fault injection: path -> fractions of the file at which to reset the connection, once each.
        self.resets: dict[str, list[float]] = {}
        # Fault injection: path -> fraction of the file after which every response stops sending.
        self.stalls: dict[str, float] = {}
        self.unstall = threading.Event()
        self.ignore_range = False  # as some providers do: every GET sends the whole file
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as a provider's ``conn_config.host``."""
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> FileHTTPServer:
        self._thread = threading.Thread(target=self.serve_forever, name="http-provider", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.unstall.set()
        self.shutdown()
        self.server_close()

    def kill(self) -> None:
        """Stop and cut every open connection at once, as a crashed provider would."""
        self.stop()
        with self._lock:
            live = list(self._live)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FileHTTPServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self.connections.opened()
            self._live.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._lock:
            self.connections.closed()
            self._live.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY each small
    # response waits ~40 ms for a delayed ACK, as real servers (nginx) never make it.
    disable_nagle_algorithm = True
    server: FileHTTPServer

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):  # the client went away: nothing to answer
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append(path)
        if self.server.authorization and self.headers.get("Authorization") != self.server.authorization:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="provider"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = self.server.files.get(path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = self._range_start(len(data))
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body:
            stall = self.server.stalls.get(path)
            if stall is not None:
                self._send_body(memoryview(data)[start : max(start, int(len(data) * stall))])
                self.server.unstall.wait(300)  # silent, connection open, as a hung provider
                self.close_connection = True
                return
            self._send_body(memoryview(data)[start:], self._reset_offset(path, start, len(data)))

    def _range_start(self, size: int) -> int:
        header = self.headers.get("Range", "")
        if self.server.ignore_range:
            return 0
        if header.startswith("bytes=") and header.endswith("-"):
            start = int(header[6:-1] or 0)
            return start if start < size else 0
        return 0

    def _reset_offset(self, path: str, start: int, size: int) -> int | None:
        """Where in this response to cut the connection, if a fault is pending for the path."""
        pending = self.server.resets.get(path, [])
        for fraction in sorted(pending):
            at = int(size * fraction)
            if at > start:
                pending.remove(fraction)
                return at - start
        return None

    def _send_body(self, view: memoryview, reset_after: int | None = None) -> None:
        rate = self.server.rate
        started = time.monotonic()
        sent = 0
        try:
            while sent < len(view):
                piece = view[sent : sent + CHUNK]
                if reset_after is not None and sent + len(piece) >= reset_after:
                    self.wfile.write(view[sent:reset_after])
                    self.server.bytes_served += reset_after - sent
                    self._reset()
                    return
                self.wfile.write(piece)
                self.server.bytes_served += len(piece)
                sent += len(piece)
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _reset(self) -> None:
        """Abort the connection with a TCP reset, as a failing provider does."""
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()
