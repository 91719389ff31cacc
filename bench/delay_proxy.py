"""A TCP proxy on loopback that puts a distance between a client and a server.

    .venv/bin/python bench/delay_proxy.py --target PORT --delay-ms 25 [--rate-mbps 100]
                                          [--window-kib 16384] [--ftp] [--trace]

Each direction of each connection is delayed by ``delay`` (so a round trip costs
2 x delay), optionally squeezed through a shared link of ``rate`` bytes/s per direction,
and holds at most ``window`` bytes in flight. A byte counts against the window from
when the proxy reads it until one delay after it is delivered, as a TCP sender's byte
counts until its ACK is back: one connection carries at most ``window / RTT``, and the
proxy never buffers more than ``window`` per direction of a connection.

What it keeps exactly: the byte stream in each direction, a half-close (FIN) delivered
after the bytes before it, and a reset (RST) delivered likewise.

Connecting costs a round trip as on a real link: the server sees the connection one
delay after the client made it, and the client's first bytes reach the server no
sooner than three delays after it (the client could only have sent them once the
handshake's answer was back). The client's own ``connect()`` returns at once (the
local kernel completes it); for FTP data connections the proxy makes up for that
(see :meth:`DelayProxy.data_listener`).

FTP (``--ftp``): each 227 (PASV) and 229 (EPSV) reply from the server is rewritten
to name a listener of the proxy's, which forwards one data connection to the port
the server named, through the same delays and the same link. Active mode (PORT,
EPRT) is not proxied.

As a program it prints ``{"port": N}`` once it listens, then answers each line
``stats`` on its standard input with a JSON line of its counters, and ``reset`` by
zeroing the peaks once the connections still closing are gone (``{}``), and ``trace``
(with ``--trace``) with what :meth:`DelayProxy.trace` returns; it stops when its
standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import socket
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

CHUNK = 256 * 1024  # asyncio's own most per read
DEFAULT_WINDOW = 16 * 1024 * 1024
_EOF = b"EOF"  # markers in a pipe's queue, compared by identity
_RESET = b"RST"
_PASV = re.compile(rb"^227 .*?(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)")
_EPSV = re.compile(rb"^229 .*?\((.)\1\1(\d+)\1\)")


@dataclass
class Link:
    """One direction of the shared link: chunks leave it one after another at ``rate`` bytes/s."""

    rate: float | None
    next_free: float = 0.0

    def departure(self, ready: float, size: int) -> float:
        """When a chunk of ``size`` bytes, ready at ``ready``, has left the link's near end."""
        if not self.rate:
            return ready
        self.next_free = max(ready, self.next_free) + size / self.rate
        return self.next_free


@dataclass
class Counters:
    """Connections the server has seen through the proxy: control (or plain), and FTP data."""

    open: int = 0
    max_open: int = 0
    total: int = 0
    data_open: int = 0
    data_max_open: int = 0
    data_total: int = 0

    def opened(self, data: bool) -> None:
        if data:
            self.data_open += 1
            self.data_total += 1
            self.data_max_open = max(self.data_max_open, self.data_open)
        else:
            self.open += 1
            self.total += 1
            self.max_open = max(self.max_open, self.open)

    def closed(self, data: bool) -> None:
        if data:
            self.data_open -= 1
        else:
            self.open -= 1

    def reset_peaks(self) -> None:
        self.max_open, self.data_max_open = self.open, self.data_open


def _abort_with_reset(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert isinstance(transport, asyncio.Transport)
    transport.abort()


class _Pipe:
    """One direction of one connection: what its source sends reaches its sink later, in order."""

    def __init__(self, proxy: DelayProxy, direction: str, not_before: float) -> None:
        self.proxy = proxy
        self.loop = asyncio.get_running_loop()
        self.link = proxy.links[direction]
        self.not_before = not_before
        self.source: asyncio.Transport | None = None
        self.sink: asyncio.Transport | None = None
        self.rewrite: Callable[[bytes, bool], bytes] | None = None
        self.queue: deque[tuple[float, bytes]] = deque()
        self.in_flight = 0
        self.source_paused = False
        self.sink_paused = False
        self.ended = False  # EOF or RST received from the source
        self.done = False  # ... and delivered
        self.timer: asyncio.TimerHandle | None = None
        self.on_done: Callable[[], None] = lambda: None
        self.trace: list[tuple[float, str, int]] | None = None  # the client's side, when the proxy traces

    def receive(self, data: bytes) -> None:
        if self.rewrite is not None:
            data = self.rewrite(data, False)
        if data:
            if self.trace is not None and self.link is self.proxy.links["up"]:
                self.trace.append((self.loop.time(), "sent", len(data)))
            self._enqueue(data)
            self.in_flight += len(data)
            if self.in_flight >= self.proxy.window and self.source is not None:
                self.source.pause_reading()
                self.source_paused = True

    def end(self, reset: bool) -> None:
        if self.ended:
            return
        self.ended = True
        if self.rewrite is not None and not reset and (tail := self.rewrite(b"", True)):
            self._enqueue(tail)
        self._enqueue(_RESET if reset else _EOF)

    def _enqueue(self, item: bytes) -> None:
        size = 0 if item is _EOF or item is _RESET else len(item)
        due = self.link.departure(max(self.loop.time(), self.not_before), size) + self.proxy.delay
        self.queue.append((due, item))
        if self.timer is None:
            self.flush()

    def flush(self) -> None:
        """Delivers every chunk that is due; wakes again when the next one is."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        now = self.loop.time()
        while self.queue and self.sink is not None and not self.sink_paused:
            due, item = self.queue[0]
            if due > now:
                self.timer = self.loop.call_at(due, self.flush)
                return
            self.queue.popleft()
            self._deliver(item)

    def _deliver(self, item: bytes) -> None:
        sink = self.sink
        assert sink is not None
        try:
            if item is _RESET:
                _abort_with_reset(sink)
            elif item is _EOF:
                if sink.can_write_eof() and not sink.is_closing():
                    sink.write_eof()
            elif not sink.is_closing():
                sink.write(item)
                if self.trace is not None and self.link is self.proxy.links["down"]:
                    self.trace.append((self.loop.time(), "received", len(item)))
                self.loop.call_later(self.proxy.delay, self._release, len(item))  # the ACK on its way back
                return
        except OSError:  # the sink's peer is gone already (a shutdown on a reset socket, say)
            sink.abort()
        self.done = True
        self.on_done()

    def _release(self, size: int) -> None:
        self.in_flight -= size
        if self.source_paused and self.in_flight < self.proxy.window and self.source is not None:
            self.source_paused = False
            self.source.resume_reading()


class _Side(asyncio.Protocol):
    """One socket of a relayed connection: it feeds ``out`` and is the sink of ``into``."""

    def __init__(self, relay: _Relay, out: _Pipe, into: _Pipe) -> None:
        self.relay, self.out, self.into = relay, out, into

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=CHUNK)
        self.out.source = transport
        self.into.sink = transport
        self.into.flush()

    def data_received(self, data: bytes) -> None:
        self.out.receive(data)

    def eof_received(self) -> bool:
        self.out.end(reset=False)
        return True  # half-closed: the other direction goes on

    def connection_lost(self, exc: Exception | None) -> None:
        self.out.end(reset=exc is not None)
        self.relay.lost()

    def pause_writing(self) -> None:
        self.into.sink_paused = True

    def resume_writing(self) -> None:
        self.into.sink_paused = False
        self.into.flush()


class _Relay:
    """One connection through the proxy: the client's socket, the server's, and a pipe each way."""

    def __init__(self, proxy: DelayProxy, target_port: int, data: bool) -> None:
        self.proxy, self.target_port, self.data = proxy, target_port, data
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        # the client's bytes leave no sooner than the handshake's answer is back with it
        self.up = _Pipe(proxy, "up", accepted + 2 * proxy.delay)
        self.down = _Pipe(proxy, "down", 0.0)
        if proxy.ftp and not data:
            self.down.rewrite = _FtpRewriter(proxy, self.up).rewrite
        for pipe in (self.up, self.down):
            pipe.on_done = self._maybe_close
        self.client = _Side(self, self.up, self.down)
        if proxy.traces is not None and not data:
            self.up.trace = self.down.trace = proxy.traces.setdefault(len(proxy.traces), [])
        self.sides_lost = 0
        self.counted = False
        loop.call_later(proxy.delay, proxy.spawn, self._connect)  # the SYN on its way

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _Side(self, self.down, self.up), "127.0.0.1", self.target_port)
        except OSError:
            if self.up.source is not None:
                _abort_with_reset(self.up.source)
            return
        self.counted = True
        self.proxy.counters.opened(self.data)
        self.proxy.live.add(self)

    def _maybe_close(self) -> None:
        if self.up.done and self.down.done:
            for transport in (self.up.source, self.down.source):
                if transport is not None:
                    transport.close()

    def lost(self) -> None:
        self.sides_lost += 1
        if self.sides_lost == 2 and self.counted:
            self.proxy.counters.closed(self.data)
            self.proxy.live.discard(self)

    def abort(self) -> None:
        for transport in (self.up.source, self.down.source):
            if transport is not None:
                transport.abort()


class DelayProxy:
    """The proxy's event loop, run in a thread of its own (see the module's docstring)."""

    def __init__(
        self,
        target_port: int,
        delay_s: float,
        rate: float | None = None,
        window: int = DEFAULT_WINDOW,
        ftp: bool = False,
        trace: bool = False,
    ) -> None:
        self.target_port = target_port
        self.delay = delay_s
        self.window = window
        self.ftp = ftp
        self.links = {"up": Link(rate), "down": Link(rate)}
        self.counters = Counters()
        self.traces: dict[int, list[tuple[float, str, int]]] | None = {} if trace else None
        self.live: set[_Relay] = set()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Future[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delay-proxy", daemon=True)

    def start(self) -> DelayProxy:
        self._thread.start()
        self.port = self._call(self._listen)
        return self

    def close(self) -> None:
        self._call(self._shut)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """The counters, read in the proxy's own loop."""
        return dict(self._call(lambda: vars(self.counters)))

    def trace(self) -> dict[int, list[tuple[float, str, int]]]:
        """With ``trace``: per connection (not FTP data), when its client sent bytes and received them.

        Each event is ``(seconds, "sent" | "received", bytes)`` at the client's end of the
        link: ``sent`` when the proxy read them from the client, ``received`` when it
        handed them to the client. The traces are cleared.
        """

        def take() -> dict[int, list[tuple[float, str, int]]]:
            traces = dict(self.traces or {})
            if self.traces is not None:
                self.traces.clear()
            return traces

        return dict(self._call(take))

    def reset_peaks(self) -> None:
        """Waits (8 s at most) for the connections still closing to be gone, then zeroes the peaks."""
        self._call(self._quiesce)

    async def _quiesce(self) -> None:
        deadline = self._loop.time() + 8
        while (self.counters.open or self.counters.data_open) and self._loop.time() < deadline:
            await asyncio.sleep(0.01)
        self.counters.reset_peaks()

    def _call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            result = fn()
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    async def _listen(self) -> int:
        server = await self._loop.create_server(lambda: self._accept(self.target_port, False), "127.0.0.1", 0)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def _shut(self) -> None:
        for server in self._servers:
            server.close()
        for relay in list(self.live):
            relay.abort()

    def spawn(self, coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Runs ``coroutine()`` as a task, held until it ends."""
        task = asyncio.ensure_future(coroutine())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _accept(self, target_port: int, data: bool) -> _Side:
        return _Relay(self, target_port, data).client

    def data_listener(self, target_port: int, control: _Pipe) -> int:
        """A listener for one FTP data connection to ``target_port``; returns its port at once.

        The client's ``connect()`` to it returns at once, where a real link would take a
        round trip: so the commands the client sends on ``control`` after connecting leave
        no sooner than that round trip after the connection. A client that sends its
        command first and connects after is not held. The order of the two is the order
        in which the kernel saw them, which is the order in which the event loop runs
        their callbacks, so the listener accepts in its own reader, not in a task.
        """
        sock = socket.create_server(("127.0.0.1", 0))  # listening now: the reply may name it at once
        sock.setblocking(False)
        port = int(sock.getsockname()[1])

        def close() -> None:
            self._loop.remove_reader(sock)
            sock.close()

        def accept() -> None:
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                return
            close()  # one connection per reply, as the server itself allows
            expiry.cancel()
            control.not_before = max(control.not_before, self._loop.time() + 2 * self.delay)
            relay = _Relay(self, target_port, data=True)

            async def attach() -> None:
                await self._loop.connect_accepted_socket(lambda: relay.client, conn)

            self.spawn(attach)

        self._loop.add_reader(sock, accept)
        expiry = self._loop.call_later(120, close)  # a reply the client never used leaves no listener behind
        return port


class _FtpRewriter:
    """Rewrites the server's PASV and EPSV replies on one control connection."""

    def __init__(self, proxy: DelayProxy, control: _Pipe) -> None:
        self.proxy = proxy
        self.control = control  # the client's commands
        self.partial = b""

    def rewrite(self, chunk: bytes, at_end: bool) -> bytes:
        text = self.partial + chunk
        cut = len(text) if at_end else text.rfind(b"\n") + 1
        self.partial = text[cut:]
        return b"".join(self._line(line) for line in text[:cut].splitlines(keepends=True))

    def _line(self, line: bytes) -> bytes:
        if found := _PASV.match(line):
            p1, p2 = int(found.group(5)), int(found.group(6))
            port = self.proxy.data_listener(p1 * 256 + p2, self.control)
            return b"227 Entering Passive Mode (127,0,0,1,%d,%d).\r\n" % (port // 256, port % 256)
        if found := _EPSV.match(line):
            port = self.proxy.data_listener(int(found.group(2)), self.control)
            return b"229 Entering Extended Passive Mode (|||%d|).\r\n" % port
        return line


class ProxyProcess:
    """This proxy as a program in a process of its own, so it shares no interpreter lock with its clients.

    ``stack`` stops it; :meth:`peaks` and :meth:`reset` ask it over its standard input.
    """

    def __init__(
        self,
        stack: contextlib.ExitStack,
        target: int,
        rtt_ms: float,
        rate_mbps: float = 0.0,
        ftp: bool = False,
        trace: bool = False,
    ) -> None:
        command = [sys.executable, __file__, "--target", str(target), "--delay-ms", str(rtt_ms / 2)]
        command += ["--rate-mbps", str(rate_mbps)] + (["--ftp"] if ftp else []) + (["--trace"] if trace else [])
        self.ftp = ftp
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        stack.callback(self.stop)
        self.port = int(self._answer()["port"])

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the delay proxy exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def peaks(self) -> dict[str, float]:
        """The most connections the server saw at once since the last reset (FTP: data apart)."""
        stats = self.ask("stats")
        peaks = {"provider conns": float(stats["max_open"])}
        if self.ftp:
            peaks["provider data conns"] = float(stats["data_max_open"])
        return peaks

    def peak(self) -> int:
        return int(self.ask("stats")["max_open"])

    def reset(self) -> None:
        """Zeroes the peaks once the connections still closing are gone."""
        self.ask("reset")

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=int, required=True, help="the server's port on 127.0.0.1")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay (RTT = 2 x delay)")
    parser.add_argument("--rate-mbps", type=float, default=0.0, help="link rate per direction, MB/s (0: none)")
    parser.add_argument("--window-kib", type=int, default=DEFAULT_WINDOW // 1024)
    parser.add_argument("--ftp", action="store_true", help="rewrite PASV/EPSV replies to proxied data ports")
    parser.add_argument("--trace", action="store_true", help="record when each client sent and received bytes")
    args = parser.parse_args()
    proxy = DelayProxy(
        args.target, args.delay_ms / 1000, args.rate_mbps * 1e6 or None, args.window_kib * 1024, args.ftp, args.trace
    ).start()
    print(json.dumps({"port": proxy.port}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            print(json.dumps(proxy.stats()), flush=True)
        elif line.strip() == "trace":
            print(json.dumps(proxy.trace()), flush=True)
        elif line.strip() == "reset":
            proxy.reset_peaks()
            print("{}", flush=True)
    proxy.close()


if __name__ == "__main__":
    main()
