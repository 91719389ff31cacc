"""A TCP proxy on loopback that puts a distance between a client and a server.

    .venv/bin/python bench/delay_proxy.py --target PORT --delay-ms 25 [--rate-mbps 100]
                                          [--window-kib 16384] [--ftp]

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
handshake's answer was back). The one thing it cannot delay is the client's own
``connect()``, which the local kernel completes at once.

FTP (``--ftp``): each 227 (PASV) and 229 (EPSV) reply from the server is rewritten
to name a listener of the proxy's, which forwards one data connection to the port
the server named, through the same delays and the same link. Active mode (PORT,
EPRT) is not proxied.

As a program it prints ``{"port": N}`` once it listens, then answers each line
``stats`` on its standard input with a JSON line of its counters and ``reset``
by zeroing the peaks; it stops when its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import socket
import struct
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

CHUNK = 256 * 1024
DEFAULT_WINDOW = 16 * 1024 * 1024
_EOF = b"EOF"  # markers in a pipe's queue, compared by identity
_RESET = b"RST"
_PASV = re.compile(rb"^227 .*?(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)")
_EPSV = re.compile(rb"^229 .*?\((.)\1\1(\d+)\1\)")


@dataclass
class Link:
    """One direction of the shared link: chunks leave it one after another at ``rate``."""

    rate: float | None
    next_free: float = 0.0

    def departure(self, ready: float, size: int) -> float:
        """When a chunk of ``size`` bytes, ready at ``ready``, has left the link's far end."""
        if not self.rate:
            return ready
        self.next_free = max(ready, self.next_free) + size / self.rate
        return self.next_free


@dataclass
class Counters:
    """Connections the server has seen through the proxy: control (or plain) and FTP data."""

    open: int = 0
    max_open: int = 0
    total: int = 0
    data_open: int = 0
    data_max_open: int = 0
    data_total: int = 0
    bytes: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})

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


class _Window:
    """Bytes in flight in one direction of one connection, bounded."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._freed = asyncio.Event()

    async def take(self, n: int) -> None:
        while self.used and self.used + n > self.size:  # one chunk larger than the window still passes
            self._freed.clear()
            await self._freed.wait()
        self.used += n

    def give(self, n: int) -> None:
        self.used -= n
        self._freed.set()


Transform = Callable[[bytes, bool], Awaitable[bytes]]


def _abort_with_reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class DelayProxy:
    """The proxy's event loop, run in a thread of its own (see the module's docstring)."""

    def __init__(
        self,
        target_port: int,
        delay_s: float,
        rate: float | None = None,
        window: int = DEFAULT_WINDOW,
        ftp: bool = False,
    ) -> None:
        self.target_port = target_port
        self.delay = delay_s
        self.window = window
        self.ftp = ftp
        self.links = {"up": Link(rate), "down": Link(rate)}
        self.counters = Counters()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise RuntimeError("the delay proxy did not start")
        return self

    def close(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """The counters, read in the proxy's own loop."""
        return self._call(lambda: {k: v for k, v in vars(self.counters).items() if k != "bytes"})

    def reset_peaks(self) -> None:
        self._call(self.counters.reset_peaks)

    def _call(self, fn: Callable[[], object]) -> object:
        assert self._loop is not None

        async def run() -> object:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._control, "127.0.0.1", 0, limit=CHUNK)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stopped.wait()

    # --- connections ---------------------------------------------------------------------

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transform = _FtpRewriter(self).rewrite if self.ftp else None
        await self._relay(reader, writer, self.target_port, data=False, transform=transform)

    async def _relay(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        target_port: int,
        data: bool,
        transform: Transform | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        _nodelay(client_writer)
        await asyncio.sleep(self.delay)  # the SYN on its way to the server
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port, limit=CHUNK)
        except OSError:
            _abort_with_reset(client_writer)
            return
        _nodelay(server_writer)
        self.counters.opened(data)
        try:
            await asyncio.gather(
                # the client's bytes leave no sooner than the handshake's answer is back with it
                self._pipe(client_reader, server_writer, "up", accepted + 2 * self.delay),
                self._pipe(server_reader, client_writer, "down", 0.0, transform),
            )
        finally:
            self.counters.closed(data)
            for writer in (client_writer, server_writer):
                writer.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: str,
        not_before: float,
        transform: Transform | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        link, window = self.links[direction], _Window(self.window)
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        def send(chunk: bytes) -> None:
            size = 0 if chunk is _EOF or chunk is _RESET else len(chunk)
            due = link.departure(max(loop.time(), not_before), size) + self.delay
            queue.put_nowait((due, chunk))

        async def receive() -> None:
            while True:
                try:
                    chunk = await reader.read(CHUNK)
                except OSError:
                    send(_RESET)
                    return
                out = chunk if transform is None else await transform(chunk, not chunk)
                if out:
                    await window.take(len(out))
                    self.counters.bytes[direction] += len(out)
                    send(out)
                if not chunk:
                    send(_EOF)
                    return

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                try:
                    if chunk is _EOF:
                        if writer.can_write_eof():
                            writer.write_eof()
                        return
                    if chunk is _RESET:
                        _abort_with_reset(writer)
                        return
                    writer.write(chunk)
                    await writer.drain()
                except OSError:
                    _abort_with_reset(writer)
                    return
                loop.call_later(self.delay, window.give, len(chunk))  # the ACK on its way back

        receiving = asyncio.ensure_future(receive())
        try:
            await deliver()
        finally:
            if not receiving.done():
                receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await receiving

    async def data_listener(self, target_port: int) -> int:
        """A listener for one FTP data connection to ``target_port``; returns its port."""
        accepted = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if accepted.is_set():  # one connection per PASV, as the server itself allows
                _abort_with_reset(writer)
                return
            accepted.set()
            server.close()
            await self._relay(reader, writer, target_port, data=True)

        server = await asyncio.start_server(serve, "127.0.0.1", 0, limit=CHUNK)
        port = int(server.sockets[0].getsockname()[1])

        async def expire() -> None:  # a reply the client never used does not leave a listener behind
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(accepted.wait(), 120)
            server.close()

        asyncio.ensure_future(expire())
        return port


class _FtpRewriter:
    """Rewrites the server's PASV and EPSV replies on one control connection."""

    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy
        self.partial = b""

    async def rewrite(self, chunk: bytes, at_end: bool) -> bytes:
        text = self.partial + chunk
        cut = len(text) if at_end else text.rfind(b"\n") + 1
        self.partial = text[cut:]
        lines = text[:cut].splitlines(keepends=True)
        return b"".join([await self._line(line) for line in lines])

    async def _line(self, line: bytes) -> bytes:
        if found := _PASV.match(line):
            h1, h2, h3, h4, p1, p2 = (int(g) for g in found.groups())
            port = await self.proxy.data_listener(p1 * 256 + p2)
            return b"227 Entering Passive Mode (127,0,0,1,%d,%d).\r\n" % (port // 256, port % 256)
        if found := _EPSV.match(line):
            port = await self.proxy.data_listener(int(found.group(2)))
            return b"229 Entering Extended Passive Mode (|||%d|).\r\n" % port
        return line


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.transport.set_write_buffer_limits(high=CHUNK)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=int, required=True, help="the server's port on 127.0.0.1")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay (RTT = 2 x delay)")
    parser.add_argument("--rate-mbps", type=float, default=0.0, help="link rate per direction, MB/s (0: none)")
    parser.add_argument("--window-kib", type=int, default=DEFAULT_WINDOW // 1024)
    parser.add_argument("--ftp", action="store_true", help="rewrite PASV/EPSV replies to proxied data ports")
    args = parser.parse_args()
    proxy = DelayProxy(
        args.target, args.delay_ms / 1000, args.rate_mbps * 1e6 or None, args.window_kib * 1024, args.ftp
    ).start()
    print(json.dumps({"port": proxy.port}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            print(json.dumps(proxy.stats()), flush=True)
        elif line.strip() == "reset":
            proxy.reset_peaks()
            print("{}", flush=True)
    proxy.close()


if __name__ == "__main__":
    main()
