"""Fault-injecting proxies on loopback, for the randomized invariant suite.

- :class:`FaultProxy`: a TCP proxy in front of a provider that stalls, resets or
  truncates the provider's data at chosen byte offsets, and counts the sessions
  the provider sees. In FTP mode it also proxies the passive data connections
  (rewriting 227/229 replies) and can deny commands such as SIZE.
- :class:`StepFunctionsProxy`: an HTTP proxy in front of the Step Functions
  endpoint that counts the tokens handed out by GetActivityTask and the
  answers sent for each, and answers SendTask* with ThrottlingException when
  asked to.
- :class:`RangeFiles`: a pytest-httpserver handler serving files with Range,
  with or without Content-Length (chunked).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from werkzeug import Request, Response

FaultKind = Literal["reset", "truncate", "stall"]


@dataclass
class Fault:
    """Break one stream of the provider's data once ``at`` bytes of it have reached the client.

    ``reset``: a TCP reset both ways. ``truncate``: a clean end of the data
    stream (FIN) while the server side is reset (for FTP, the control
    connection is killed too, so no closing reply can vouch for the bytes).
    ``stall``: the bytes stop, the connection stays open until the client
    gives up.
    """

    kind: FaultKind
    at: int
    fired: bool = False


def _hard_close(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0).

    Shutting the reading side first wakes a thread blocked in recv() on it:
    until that call returns the kernel keeps the socket, and sends nothing.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


def _hung_up(sock: socket.socket, settle_s: float = 0.0) -> bool:
    """Whether the peer closed ``sock``: its end of file is the next thing to read, or will be
    once the bytes it sent before (still being relayed) are consumed, within ``settle_s``."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                return True
        except (OSError, ValueError):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _quiet_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@dataclass(eq=False)
class _Session:
    """One client connection and its upstream; ``cut`` once a fault ended it."""

    client: socket.socket
    upstream: socket.socket
    counted: bool
    control: _Session | None = None  # for an FTP data connection: its control session
    cut: threading.Event = field(default_factory=threading.Event)
    opened: float = field(default_factory=time.monotonic)
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    # FTP control sessions: data streams still being relayed, which a closing reply waits for.
    relaying: int = 0
    relayed: threading.Condition = field(default_factory=threading.Condition)


class FaultProxy:
    """A TCP proxy in front of ``target_port`` that applies :attr:`faults` to the server's data.

    Each fault is taken by the first data stream (an HTTP or SSH connection's
    server-to-client bytes, or an FTP data connection) that reaches its
    offset; a stream ended short of it leaves it for the next. ``max_open``
    is the most sessions open at once (FTP: control connections only).
    """

    def __init__(self, target_port: int, ftp: bool = False, deny: frozenset[str] = frozenset()) -> None:
        self._target = target_port
        self._ftp = ftp
        self.deny = {verb.upper() for verb in deny}
        self.faults: list[Fault] = []
        self.open = 0
        self.max_open = 0
        self.total = 0
        self.denied: list[str] = []
        self.peak = ""  # the sessions open when max_open was reached
        self._lock = threading.Lock()
        self._sessions: set[_Session] = set()
        self._listeners: list[socket.socket] = []
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, args=(self._listener,), name="fault-proxy", daemon=True).start()

    # connections

    def _accept(self, listener: socket.socket, control: _Session | None = None, data_port: int | None = None) -> None:
        while not self._closed.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", data_port or self._target), timeout=10)
                upstream.settimeout(None)
            except OSError:
                _hard_close(client)
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = _Session(client, upstream, counted=data_port is None, control=control)
            if control is not None:
                with control.relayed:
                    control.relaying += 1
            if session.counted:
                self._end_hung_up()  # a client closes one session before it opens the next
            with self._lock:
                self._sessions.add(session)
                if session.counted:
                    self.total += 1
                    self.open += 1
                    if self.open > self.max_open:
                        self.max_open = self.open
                        self.peak = self._describe()
            if self._ftp and data_port is None:
                down, up = self._ftp_replies, self._ftp_commands
            else:
                down, up = self._data_down, self._plain_up
            done = [threading.Event(), threading.Event()]
            threading.Thread(target=self._run, args=(down, session, done[0]), daemon=True).start()
            threading.Thread(target=self._run, args=(up, session, done[1]), daemon=True).start()
            threading.Thread(target=self._reap, args=(session, done), daemon=True).start()
            if data_port is not None:
                listener.close()  # one data connection per PASV
                return

    @staticmethod
    def _run(pump: Any, session: _Session, done: threading.Event) -> None:
        try:
            pump(session)
        except OSError:
            pass
        finally:
            done.set()

    def _reap(self, session: _Session, done: list[threading.Event]) -> None:
        done[0].wait()
        # After a fault the client still holds its end until it notices; otherwise let the
        # last request or reply pass before closing both sides.
        done[1].wait(120 if session.cut.is_set() else 0.5)
        self._end(session)

    def _describe(self) -> str:
        now = time.monotonic()
        return ", ".join(
            f"opened {now - s.opened:.2f}s ago{' (faulted)' if s.cut.is_set() else ''}"
            for s in sorted(self._sessions, key=lambda s: s.opened)
            if s.counted
        )

    def _end_hung_up(self) -> None:
        with self._lock:
            sessions = [s for s in self._sessions if s.counted]
        for session in sessions:
            if _hung_up(session.client, settle_s=0.5 if session.cut.is_set() else 0.0):
                self._end(session)

    def _end(self, session: _Session, hard: bool = False) -> None:
        with self._lock:
            if session not in self._sessions:
                return
            self._sessions.discard(session)
            if session.counted:
                self.open -= 1
        for sock in (session.client, session.upstream):
            (_hard_close if hard else _quiet_close)(sock)

    # plain streams (HTTP, SSH, FTP data)

    @staticmethod
    def _plain_up(session: _Session) -> None:
        while chunk := session.client.recv(1 << 16):
            if session.cut.is_set():
                continue  # after a truncation: drain, so the client reads a clean end
            session.upstream.sendall(chunk)
        if not session.cut.is_set():
            with contextlib.suppress(OSError):
                session.upstream.shutdown(socket.SHUT_WR)

    def _data_down(self, session: _Session) -> None:
        try:
            self._relay_data(session)
        finally:
            if session.control is not None:
                with session.control.relayed:
                    session.control.relaying -= 1
                    session.control.relayed.notify_all()

    def _relay_data(self, session: _Session) -> None:
        sent = 0
        while chunk := session.upstream.recv(1 << 16):
            fault = self._due(sent, len(chunk))
            if fault is None:
                session.client.sendall(chunk)
                sent += len(chunk)
                continue
            session.client.sendall(chunk[: fault.at - sent])
            self._fire(fault, session)
            return
        with contextlib.suppress(OSError):
            session.client.shutdown(socket.SHUT_WR)

    def _due(self, sent: int, count: int) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if not fault.fired and sent <= fault.at < sent + count:
                    fault.fired = True
                    return fault
        return None

    def _fire(self, fault: Fault, session: _Session) -> None:
        session.cut.set()
        if fault.kind == "reset":
            self._end(session, hard=True)
        elif fault.kind == "truncate":
            _hard_close(session.upstream)
            with contextlib.suppress(OSError):
                session.client.shutdown(socket.SHUT_WR)
            if session.control is not None:
                session.control.cut.set()
                self._end(session.control, hard=True)  # the session is killed: no closing reply
        # stall: nothing more is relayed; the session ends when the client gives up

    # FTP control connections

    _PASV = re.compile(rb"^227 .*?\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)")
    _EPSV = re.compile(rb"^229 .*?\(\|\|\|(\d+)\|\)")

    def _ftp_replies(self, session: _Session) -> None:
        reader = session.upstream.makefile("rb")
        for line in reader:
            if line[:3] in (b"226", b"250"):
                # The server may finish sending before the relay has passed its data on: a
                # truncation still to come must not be vouched for by a reply relayed before it.
                with session.relayed:
                    session.relayed.wait_for(lambda: session.relaying == 0, timeout=60)
            if session.cut.is_set():
                return
            line = self._rewrite_passive(line, session)
            with session.write_lock:
                session.client.sendall(line)

    def _rewrite_passive(self, line: bytes, session: _Session) -> bytes:
        if match := self._PASV.match(line):
            port = self._data_listener(int(match[5]) * 256 + int(match[6]), session)
            return f"227 Entering Passive Mode (127,0,0,1,{port // 256},{port % 256}).\r\n".encode()
        if match := self._EPSV.match(line):
            port = self._data_listener(int(match[1]), session)
            return f"229 Entering Extended Passive Mode (|||{port}|).\r\n".encode()
        return line

    def _data_listener(self, data_port: int, control: _Session) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        with self._lock:
            self._listeners.append(listener)
        threading.Thread(target=self._accept, args=(listener, control, data_port), daemon=True).start()
        return int(listener.getsockname()[1])

    def _ftp_commands(self, session: _Session) -> None:
        reader = session.client.makefile("rb")
        for line in reader:
            if session.cut.is_set():
                return
            verb = line.split(b" ", 1)[0].strip().decode("ascii", "replace").upper()
            if verb in self.deny:
                self.denied.append(verb)
                with session.write_lock:
                    session.client.sendall(f"550 {verb} denied by the site's policy.\r\n".encode())
                continue
            session.upstream.sendall(line)
        with contextlib.suppress(OSError):
            session.upstream.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stop listening and cut every session."""
        self._closed.set()
        self._listener.close()
        with self._lock:
            sessions, listeners = list(self._sessions), list(self._listeners)
        for listener in listeners:
            with contextlib.suppress(OSError):
                listener.close()
        for session in sessions:
            self._end(session)


class RangeFiles:
    """A pytest-httpserver handler for ``files`` (URL path -> bytes) that honours ``Range: bytes=N-``.

    With ``sized`` False no Content-Length is sent: the body is chunked, and a
    206's Content-Range gives no total length.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.sized = True

    def __call__(self, request: Request) -> Response:
        data = self.files.get(request.path)
        if data is None:
            return Response(b"", status=404)
        start = 0
        header = request.headers.get("Range", "")
        if header.startswith("bytes=") and header.endswith("-"):
            start = int(header[6:-1] or 0)
            if start >= len(data) > 0:
                return Response(b"", status=416, headers={"Content-Range": f"bytes */{len(data)}"})
        status = 206 if start else 200
        headers = {"Accept-Ranges": "bytes"}
        total = str(len(data)) if self.sized else "*"
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{total}"
        body = data[start:]
        if request.method == "HEAD" or self.sized:
            return Response(body, status=status, headers=headers)
        return Response(self._chunks(body), status=status, headers=headers)

    @staticmethod
    def _chunks(body: bytes) -> Iterator[bytes]:
        for offset in range(0, len(body), 256 * 1024):
            yield body[offset : offset + 256 * 1024]


@dataclass
class Throttle:
    """SendTask* throttling: the first ``answers`` SendTaskSuccess/Failure and ``heartbeats``
    SendTaskHeartbeat calls of every token are answered ThrottlingException."""

    answers: int = 0
    heartbeats: int = 0


ANSWER_ACTIONS = ("SendTaskSuccess", "SendTaskFailure")


class StepFunctionsProxy:
    """An HTTP proxy in front of a Step Functions endpoint, counting what crosses it.

    :attr:`claims` lists the task tokens GetActivityTask delivered to a client
    whose connection was still open; :attr:`answers` maps a token to the
    (action, HTTP status) of every SendTaskSuccess/Failure forwarded;
    :attr:`throttled` counts the calls answered ThrottlingException here.
    """

    def __init__(self, target: str, throttle: Throttle | None = None) -> None:
        target_port = int(target.rsplit(":", 1)[1])
        self.throttle = throttle or Throttle()
        self.polls = threading.Event()  # set by the first GetActivityTask
        self.claims: list[str] = []
        self.orphaned: list[str] = []  # delivered by the server after the polling client had gone
        self.answers: dict[str, list[tuple[str, int]]] = {}
        self.throttled: dict[str, int] = {}
        self._attempts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
                pass

            def handle(self) -> None:
                with contextlib.suppress(ConnectionError):  # the gateway exited: nobody to answer
                    super().handle()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
                token = _token(body)
                if action == "GetActivityTask":
                    proxy.polls.set()
                if token and proxy._throttles(action, token):
                    self._reply(
                        400,
                        b'{"__type":"ThrottlingException","message":"Rate exceeded"}',
                        {"Content-Type": "application/x-amz-json-1.0"},
                    )
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=90)
                try:
                    upstream.request("POST", self.path, body, dict(self.headers.items()))
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                if action in ANSWER_ACTIONS and token:
                    with proxy._lock:
                        proxy.answers.setdefault(token, []).append((action, response.status))
                if action == "GetActivityTask":
                    claimed = _token(data)
                    if claimed:
                        with proxy._lock:
                            (proxy.claims if self._client_alive() else proxy.orphaned).append(claimed)
                headers = {
                    k: v
                    for k, v in response.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                }
                self._reply(response.status, data, headers)

            def _client_alive(self) -> bool:
                return not _hung_up(self.connection)

            def _reply(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="sfn-proxy", daemon=True).start()

    def _throttles(self, action: str, token: str) -> bool:
        if action in ANSWER_ACTIONS:
            limit, kind = self.throttle.answers, "answer"
        elif action == "SendTaskHeartbeat":
            limit, kind = self.throttle.heartbeats, "heartbeat"
        else:
            return False
        with self._lock:
            seen = self._attempts.get((kind, token), 0)
            self._attempts[(kind, token)] = seen + 1
            if seen < limit:
                self.throttled[action] = self.throttled.get(action, 0) + 1
                return True
        return False

    def lost(self) -> list[str]:
        """Claimed tokens with no accepted answer."""
        with self._lock:
            return [t for t in self.claims if not any(status == 200 for _, status in self.answers.get(t, []))]

    def answered_twice(self) -> dict[str, list[tuple[str, int]]]:
        """Tokens for which more than one answer reached the server."""
        with self._lock:
            return {t: a for t, a in self.answers.items() if len(a) > 1}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _token(body: bytes) -> str | None:
    try:
        value = json.loads(body or b"{}").get("taskToken")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None
