"""The bench's delay proxy: exact bytes, FIN and RST kept, the delay, the rate cap, the window, FTP."""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import io
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.delay_proxy import DelayProxy, ProxyProcess
from bench.run import Bench, distance_markdown  # run.py puts bench/ on the path its modules import from
from provider_gateway.local.ftp_server import FileFTPServer


class OneShotServer:
    """A TCP server on loopback that runs ``handle`` on each connection in a thread."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.errors: list[BaseException] = []
        self._handle = handle
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            try:
                self._handle(conn)
            except BaseException as exc:  # reported by the test
                self.errors.append(exc)

    def close(self) -> None:
        self._listener.close()


def read_to_eof(sock: socket.socket) -> bytes:
    parts = []
    while chunk := sock.recv(1 << 20):
        parts.append(chunk)
    return b"".join(parts)


@pytest.fixture
def server_factory() -> Iterator[Callable[[Callable[[socket.socket], None]], OneShotServer]]:
    made: list[OneShotServer] = []

    def make(handle: Callable[[socket.socket], None]) -> OneShotServer:
        made.append(OneShotServer(handle))
        return made[-1]

    yield make
    for server in made:
        server.close()


def exchange(proxy_port: int, upload: bytes, pieces: int) -> bytes:
    """Sends ``upload`` in ``pieces`` writes, half-closes, and reads the answer to the server's EOF."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=30) as sock:
        step = max(1, len(upload) // pieces)
        for at in range(0, len(upload), step):
            sock.sendall(upload[at : at + step])
        sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(up=st.integers(0, 3_000_000), down=st.integers(0, 3_000_000), pieces=st.integers(1, 40))
def test_bytes_and_half_close_pass_exactly_both_ways(
    server_factory: Callable[[Callable[[socket.socket], None]], OneShotServer], up: int, down: int, pieces: int
) -> None:
    answer = os.urandom(down)
    upload = os.urandom(up)

    def handle(conn: socket.socket) -> None:
        received = read_to_eof(conn)  # ends only if the client's FIN came through
        conn.sendall(hashlib.sha256(received).digest() + answer)

    server = server_factory(handle)
    with DelayProxy(server.port, delay_s=0.002, window=256 * 1024) as proxy:
        got = exchange(proxy.port, upload, pieces)
    assert server.errors == []
    assert got[:32] == hashlib.sha256(upload).digest()
    assert got[32:] == answer


def test_a_reset_arrives_after_the_bytes_before_it(
    server_factory: Callable[[Callable[[socket.socket], None]], OneShotServer],
) -> None:
    sent = os.urandom(100_000)

    def handle(conn: socket.socket) -> None:
        conn.sendall(sent)
        conn.recv(1)  # the client's go-ahead: everything above has left this socket
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server = server_factory(handle)
    with DelayProxy(server.port, delay_s=0.01) as proxy, socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.settimeout(10)
        got = b""
        while len(got) < len(sent):
            got += sock.recv(1 << 20)
        sock.sendall(b"x")
        with pytest.raises(ConnectionResetError):
            while sock.recv(1 << 20):
                pass
    assert got == sent


def echo(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(65536):
        conn.sendall(data)


def wait_closed(proxy: DelayProxy, total: int, deadline_s: float = 5) -> dict[str, int]:
    """The proxy's counters once ``total`` connections have reached the server and all are gone."""
    deadline = time.monotonic() + deadline_s
    while ((stats := proxy.stats())["open"] or stats["total"] < total) and time.monotonic() < deadline:
        time.sleep(0.01)
    return stats


def streamer(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            conn.sendall(b"\0" * 65536)


def answer_after_close(conn: socket.socket) -> None:
    read_to_eof(conn)
    with contextlib.suppress(OSError):
        for _ in range(50):  # the client has closed: its kernel answers these with a reset
            conn.sendall(b"late reply\r\n")


@pytest.mark.parametrize("server", [streamer, answer_after_close, echo])
def test_the_connection_is_gone_once_the_client_has_gone(
    server_factory: Callable[[Callable[[socket.socket], None]], OneShotServer], server: Callable[[socket.socket], None]
) -> None:
    served = server_factory(server)
    with DelayProxy(served.port, delay_s=0.005) as proxy:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
                sock.sendall(b"hello")
                if server is streamer:
                    sock.recv(1000)  # and closes with bytes unread: a reset
        stats = wait_closed(proxy, 3)
    assert stats["total"] == 3
    assert stats["open"] == 0


def ping_pong_rtts(proxy_port: int, count: int) -> list[float]:
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"p")  # the handshake's round trip is paid by the first exchange, not timed
        sock.recv(1)
        rtts = []
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(b"p")
            assert sock.recv(1) == b"p"
            rtts.append(time.perf_counter() - started)
    return rtts


@pytest.mark.parametrize("delay_ms", [10, 25])
def test_a_round_trip_costs_twice_the_delay(
    server_factory: Callable[[Callable[[socket.socket], None]], OneShotServer], delay_ms: int
) -> None:
    server = server_factory(echo)
    with DelayProxy(server.port, delay_s=delay_ms / 1000) as proxy:
        rtts = ping_pong_rtts(proxy.port, 15)
    assert min(rtts) >= 2 * delay_ms / 1000
    # the least of 15: a busy machine delays some round trips, never all (a fault of the proxy would)
    assert min(rtts) == pytest.approx(2 * delay_ms / 1000, abs=0.005)


def test_the_handshake_costs_a_round_trip(
    server_factory: Callable[[Callable[[socket.socket], None]], OneShotServer],
) -> None:
    server = server_factory(echo)
    firsts = []
    with DelayProxy(server.port, delay_s=0.02) as proxy:
        for _ in range(3):
            started = time.perf_counter()
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
                sock.sendall(b"p")
                sock.recv(1)
            firsts.append(time.perf_counter() - started)
    first = min(firsts)
    assert first == pytest.approx(0.08, abs=0.01)  # connect (1 RTT), then the ping (1 RTT); not 0.04


def stream_down(proxy_port: int) -> tuple[int, float]:
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=30) as sock:
        sock.sendall(b"go")
        sock.recv(1)  # the first byte: timing starts once the stream flows
        started = time.perf_counter()
        got = len(read_to_eof(sock))
        return got, time.perf_counter() - started


def sender(size: int) -> Callable[[socket.socket], None]:
    def handle(conn: socket.socket) -> None:
        conn.recv(2)
        conn.sendall(b"\0" * size)

    return handle


def test_the_rate_cap_holds_within_ten_percent(
    server_factory: Callable[[Callable[[socket.socket], None]], OneShotServer],
) -> None:
    server = server_factory(sender(12_000_001))
    with DelayProxy(server.port, delay_s=0.0, rate=10e6) as proxy:
        got, seconds = stream_down(proxy.port)
    assert got == 12_000_000
    assert got / seconds == pytest.approx(10e6, rel=0.1)


def test_bytes_in_flight_are_bounded_by_the_window(
    server_factory: Callable[[Callable[[socket.socket], None]], OneShotServer],
) -> None:
    window, delay = 256 * 1024, 0.025
    server = server_factory(sender(4 * 1024 * 1024 + 1))
    with DelayProxy(server.port, delay_s=delay, window=window) as proxy:
        got, seconds = stream_down(proxy.port)
    # at most one window per round trip (the proxy reads in chunks, so a little less)
    assert got / seconds <= window / (2 * delay) * 1.05
    assert got / seconds >= window / (2 * delay) * 0.6


@pytest.fixture
def ftp_server(tmp_path: Path) -> Iterator[FileFTPServer]:
    (tmp_path / "file.bin").write_bytes(os.urandom(3_000_000))
    with FileFTPServer(tmp_path) as server:
        yield server


@pytest.mark.parametrize("passive", ["PASV", "EPSV"])
def test_ftp_passes_with_its_data_connections_proxied(ftp_server: FileFTPServer, passive: str) -> None:
    expected = (ftp_server.root / "file.bin").read_bytes()
    with DelayProxy(ftp_server.port, delay_s=0.005, ftp=True) as proxy:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", proxy.port, timeout=10)
        ftp.login(ftp_server.user, ftp_server.password)
        if passive == "EPSV":
            ftp.af = socket.AF_INET6  # ftplib sends EPSV for any family but IPv4
        for _ in range(2):
            got = io.BytesIO()
            ftp.retrbinary("RETR file.bin", got.write)
            assert got.getvalue() == expected
        assert "file.bin" in ftp.nlst()
        ftp.quit()
        stats = proxy.stats()
    assert stats["total"] == 1
    assert stats["data_total"] == 3  # two RETR and one NLST, each through a listener of the proxy


def test_an_ftp_session_cut_mid_transfer_is_gone(ftp_server: FileFTPServer) -> None:
    with DelayProxy(ftp_server.port, delay_s=0.005, ftp=True) as proxy:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", proxy.port, timeout=10)
        ftp.login(ftp_server.user, ftp_server.password)
        data = ftp.transfercmd("RETR file.bin")
        data.recv(1000)
        data.close()
        ftp.close()  # the server's 426 reaches a closed socket
        stats = wait_closed(proxy, 1)
    assert (stats["total"], stats["open"], stats["data_open"]) == (1, 0, 0)


def timed_retr(ftp: ftplib.FTP, connect_first: bool) -> float:
    """Seconds from PASV to the 226 of a small file's RETR."""
    started = time.perf_counter()
    host, port = ftp.makepasv()
    if connect_first:  # as ftplib and rclone do: the data connection, then the command
        data = socket.create_connection((host, port), timeout=10)
        ftp.sendcmd("RETR small.bin")
    else:  # the command on its way while the data connection opens
        ftp.putcmd("RETR small.bin")
        data = socket.create_connection((host, port), timeout=10)
        assert ftp.getresp().startswith("150")
    with data:
        read_to_eof(data)
    ftp.voidresp()
    return time.perf_counter() - started


@pytest.mark.parametrize(("connect_first", "round_trips"), [(True, 3), (False, 2)])
def test_an_ftp_data_connection_costs_its_handshake(
    ftp_server: FileFTPServer, connect_first: bool, round_trips: int
) -> None:
    (ftp_server.root / "small.bin").write_bytes(b"x" * 1000)
    rtt = 0.1
    with DelayProxy(ftp_server.port, delay_s=rtt / 2, ftp=True) as proxy:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", proxy.port, timeout=10)
        ftp.login(ftp_server.user, ftp_server.password)
        ftp.voidcmd("TYPE I")
        seconds = min(timed_retr(ftp, connect_first) for _ in range(3))
        ftp.quit()
    # PASV, then the connection's handshake unless RETR is already on its way, then RETR
    assert seconds == pytest.approx(round_trips * rtt, abs=0.02)


def test_the_proxy_process_traces_its_clients(
    server_factory: Callable[[Callable[[socket.socket], None]], OneShotServer],
) -> None:
    server = server_factory(echo)
    with contextlib.ExitStack() as stack:
        proxy = ProxyProcess(stack, server.port, rtt_ms=40, trace=True)
        for _ in range(2):
            ping_pong_rtts(proxy.port, 3)
        traces = proxy.ask("trace")
    assert len(traces) == 2
    for events in traces.values():
        kinds = [what for _, what, _ in events]
        assert kinds == ["sent", "received"] * 4  # the untimed first ping, then 3
        for (sent, _, size), (received, _, back) in zip(events[::2], events[1::2], strict=True):
            assert size == back == 1
            assert received - sent >= 0.04


def test_a_case_over_its_connections_fails_in_the_table(
    server_factory: Callable[[Callable[[socket.socket], None]], OneShotServer],
) -> None:
    server = server_factory(echo)
    bench = Bench()
    with contextlib.ExitStack() as stack:
        proxy = ProxyProcess(stack, server.port, rtt_ms=0)

        def three_at_once() -> dict[str, float]:
            proxy.reset()
            with contextlib.ExitStack() as sockets:
                for _ in range(3):
                    sock = sockets.enter_context(socket.create_connection(("127.0.0.1", proxy.port), timeout=10))
                    sock.sendall(b"p")
                    assert sock.recv(1) == b"p"  # the server has it: counted
            return {"files/s": 1.0, **proxy.peaks()}

        bench.attempt("distance", "http 0 ms: gateway, one task", three_at_once, limit=2)
        bench.attempt("distance", "http 0 ms: rclone --transfers 2", three_at_once, limit=3)
    rows = {row["case"]: row for row in bench.table()}
    assert rows["http 0 ms: gateway, one task"]["provider conns"]["max"] == 3
    assert rows["http 0 ms: gateway, one task"]["failed"] == ["provider conns: 3 at once, more than the 2 allowed"]
    assert "failed" not in rows["http 0 ms: rclone --transfers 2"]
    small_table = distance_markdown(bench.table()).split("\n\n")[1]
    assert "| HTTP | 0 ms | 1.0 | - | 1.0 | - | 3 **FAILED** / - / 3 |" in small_table
