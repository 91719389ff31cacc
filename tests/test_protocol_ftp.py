"""The FTP connection's own behaviour against pyftpdlib: reuse, liveness, broken transfers, abort.

A transfer is complete only on the server's 226/250: truncations at random
offsets (seeded; the seed is printed) must resume to the exact bytes, with
and without SIZE. The same rules against vsftpd and proftpd are in
test_protocol_ftp_servers.py.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provider_gateway.config.model import FtpConnConfig
from provider_gateway.errors import InvalidRequest, SourceAccessDenied, SourceNotFound, SourceUnavailable
from provider_gateway.local.ftp_server import FileFTPServer
from provider_gateway.messages import FileRequest
from provider_gateway.protocols import ftp as ftp_protocol
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.ftp import FtpConnection
from provider_gateway.transfer.copy import CopyOptions, copy_file
from provider_gateway.transfer.s3upload import MiB


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileFTPServer]:
    (tmp_path / "a.bin").write_bytes(os.urandom(3_000_000))
    (tmp_path / "b.bin").write_bytes(b"second file")
    with FileFTPServer(tmp_path) as running:
        yield running


def connect(server: FileFTPServer, password: str = "secret", **keys: Any) -> FtpConnection:
    config = FtpConnConfig(
        type=keys.pop("type", "ftp"), host="127.0.0.1", port=server.port, username="provider", password=password, **keys
    )
    return FtpConnection(config, ConnectionSettings(read_timeout_s=10))


def read_all(connection: FtpConnection, name: str, offset: int = 0) -> bytes:
    stream = connection.open(f"ftp://127.0.0.1/{name}", offset)
    pieces = []
    while piece := stream.read(1 << 20):
        pieces.append(piece)
    stream.close()
    return b"".join(pieces)


class Reconnecting:
    """What a connection thread hands the copy: its live connection, replaced once broken."""

    def __init__(self, make: Callable[[], FtpConnection]) -> None:
        self._make = make
        self.current: FtpConnection | None = None
        self.made = 0

    def __call__(self) -> FtpConnection:
        if self.current is not None and not self.current.check():
            self.current.close()
            self.current = None
        if self.current is None:
            self.current = self._make()
            self.made += 1
        return self.current


def copy(
    connections: Reconnecting,
    url: str,
    s3: Any,
    bucket: str,
    key: str,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> Any:
    """Copy one file into S3 as the gateway does; returns its FileResult."""
    request = FileRequest(index=0, url=url, bucket=bucket, key=key)
    settings_ = {"min_part_size": 5 * MiB, "retry_wait_max_s": 0.2, **options}
    outcome = copy_file(
        connections, request, s3, CopyOptions(**settings_), threading.Event(), lambda: None, progress=progress
    )
    return outcome.result


def test_files_share_one_login_and_resume_from_an_offset(server: FileFTPServer) -> None:
    connection = connect(server)
    whole = (server.root / "a.bin").read_bytes()

    assert read_all(connection, "a.bin") == whole
    assert read_all(connection, "b.bin") == b"second file"
    assert read_all(connection, "a.bin", offset=1_000_000) == whole[1_000_000:]
    assert connection.check()
    assert (server.logins, server.connections.total) == (1, 1)


def test_size_comes_from_the_server(server: FileFTPServer) -> None:
    stream = connect(server).open("ftp://127.0.0.1/a.bin")
    assert stream.size == 3_000_000
    stream.close()


def test_a_transfer_closed_early_retires_the_connection(server: FileFTPServer) -> None:
    connection = connect(server)
    stream = connection.open("ftp://127.0.0.1/a.bin")
    stream.read(1000)
    stream.close()
    assert not connection.check()


def test_an_idle_connection_dropped_by_the_server_is_detected_with_noop(
    server: FileFTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = connect(server)
    assert read_all(connection, "b.bin") == b"second file"
    monkeypatch.setattr(ftp_protocol, "IDLE_CHECK_S", 0.0)
    assert connection.check()  # idle, alive: NOOP answered

    assert server.drop_sessions() == 1
    deadline = time.monotonic() + 5
    while server.connections.open and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not connection.check()
    connection.close()


def test_missing_file_and_refused_login(server: FileFTPServer) -> None:
    with pytest.raises(SourceNotFound, match="550"):
        connect(server).open("ftp://127.0.0.1/missing.bin")
    with pytest.raises(SourceAccessDenied, match="530"):
        connect(server, password="wrong")


@pytest.mark.parametrize("size_allowed", [True, False], ids=["with-SIZE", "without-SIZE"])
def test_a_data_connection_cut_short_is_a_break_with_the_servers_reply(
    server: FileFTPServer, size_allowed: bool
) -> None:
    server.size_allowed = size_allowed
    server.resets["a.bin"] = [0.4]
    connection = connect(server)
    stream = connection.open("ftp://127.0.0.1/a.bin")
    assert stream.size == (3_000_000 if size_allowed else None)
    received = 0
    with pytest.raises(SourceUnavailable, match="426") as raised:
        while piece := stream.read(1 << 20):
            received += len(piece)
    assert received < 3_000_000
    assert "RETR /a.bin" in raised.value.message
    assert not connection.check()


@pytest.mark.parametrize("fault", ["no-reply", "control-closed"])
def test_all_the_data_without_a_226_is_not_a_complete_file(server: FileFTPServer, fault: str) -> None:
    server.size_allowed = False
    config = FtpConnConfig(type="ftp", host="127.0.0.1", port=server.port, username="provider", password="secret")
    connection = FtpConnection(config, ConnectionSettings(read_timeout_s=1))
    if fault == "no-reply":
        server.withheld_replies.add("226")
        words = "no reply within 1 s"
    else:
        server.resets["a.bin"] = [0.5]
        server.withheld_replies.add("426")
        words = "the control connection closed"
    stream = connection.open("ftp://127.0.0.1/a.bin")
    if fault == "control-closed":
        stream.read(1000)
        server.drop_sessions()

    with pytest.raises(SourceUnavailable, match=words):
        while stream.read(1 << 20):
            pass
    assert not connection.check()
    stream.close()
    connection.close()


def test_truncations_at_random_offsets_resume_to_the_exact_bytes(
    tmp_path: Path, s3: Any, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int(os.environ.get("FTP_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))
    with capsys.disabled():
        print(f"\nFTP truncation seed: {seed} (replay with FTP_FAULT_SEED={seed})")
    rng = random.Random(seed)
    root = tmp_path / "root"
    root.mkdir()
    with FileFTPServer(root) as server:
        for case in range(12):
            size = rng.choice([rng.randrange(1000, 200_000), rng.randrange(5 * MiB, 12 * MiB)])
            data = rng.randbytes(size)
            name = f"f{case}.bin"
            (root / name).write_bytes(data)
            cuts = sorted(rng.uniform(0.01, 0.99) for _ in range(rng.randrange(1, 3)))
            server.resets[name] = list(cuts)
            server.size_allowed = rng.random() < 0.5
            where = f"seed {seed} case {case}: {size} bytes, cuts at {cuts}, SIZE {server.size_allowed}"
            connections = Reconnecting(lambda: connect(server))

            result = copy(connections, f"ftp://127.0.0.1/{name}", s3, bucket, name)

            assert result.success, f"{where}: {result}"
            assert server.resets[name] == [], f"{where}: a planned cut never happened"
            assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == data, where
            assert connections.made == 1 + len(cuts), where  # every break resumed on a new connection


def test_an_unconfirmed_end_never_becomes_an_object(server: FileFTPServer, s3: Any, bucket: str) -> None:
    """No size known anywhere, and every attempt cut: the copy fails, and nothing is stored."""
    server.size_allowed = False
    server.resets["a.bin"] = [0.5] * 10

    result = copy(Reconnecting(lambda: connect(server)), "ftp://127.0.0.1/a.bin", s3, bucket, "a.bin", retries=2)

    assert (result.success, result.error_code) == (False, "SourceUnavailable")
    assert "426" in str(result.error)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


BREAKERS = st.sampled_from(["\r", "\n", "\x00", "\r\n"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.text(max_size=12), breaker=BREAKERS, after=st.text(max_size=12))
def test_cr_lf_or_nul_in_a_path_is_refused_before_anything_is_sent(
    server: FileFTPServer, before: str, breaker: str, after: str
) -> None:
    connection = connect(server)
    try:
        sent = len(server.commands)
        url = "ftp://127.0.0.1/" + quote(before + breaker + after, safe="/")

        with pytest.raises(InvalidRequest, match=r"control characters \(CR, LF, NUL"):
            connection.open(url)

        assert server.commands[sent:] == []
        assert read_all(connection, "b.bin") == b"second file"  # the connection is still usable
    finally:
        connection.close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[FileFTPServer, Path]]:
    authority = trustme.CA()
    cert, ca = tmp_path / "cert.pem", tmp_path / "ca.pem"
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    authority.cert_pem.write_to_path(str(ca))
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.bin").write_bytes(os.urandom(8_000_000))
    with FileFTPServer(root, tls_cert=cert) as running:
        yield running, ca


def test_ftps_checks_the_certificate_before_the_password(tls_server: tuple[FileFTPServer, Path]) -> None:
    server, ca = tls_server
    with pytest.raises(SourceAccessDenied, match="certificate verify failed"):
        connect(server, type="ftps")  # the test CA is in no system store
    assert [c for c in server.commands if c.split(" ")[0] in ("USER", "PASS")] == []

    trusted = connect(server, type="ftps", ca_bundle=str(ca))
    unchecked = connect(server, type="ftps", verify_tls=False)
    assert trusted.check() and unchecked.check()
    assert server.commands.count("PASS") == 2


class BlockedReader(threading.Thread):
    """Reads a stream to its end in a thread, noting when it sits in one read and how that read ended."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self._stream = stream
        self.received = 0
        self.entered: float | None = None  # when the pending read() began (None between reads)
        self.error: BaseException | None = None
        self.ended_at = 0.0

    def run(self) -> None:
        try:
            while True:
                self.entered = time.monotonic()
                piece = self._stream.read(1 << 16)
                self.entered = None
                if not piece:
                    break
                self.received += len(piece)
        except BaseException as exc:
            self.error = exc
        self.ended_at = time.monotonic()

    def wait_blocked(self, for_s: float = 0.3, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            entered = self.entered
            if entered is not None and time.monotonic() - entered > for_s:
                return
            time.sleep(0.02)
        raise AssertionError(f"the reader never blocked (received {self.received})")


@pytest.mark.parametrize("tls", [False, True], ids=["ftp", "ftps"])
def test_abort_ends_a_read_blocked_on_a_stalled_server_at_once(
    tls_server: tuple[FileFTPServer, Path], tls: bool
) -> None:
    server, ca = tls_server
    if not tls:  # the same server and file, without TLS
        server = FileFTPServer(server.root).start()
    keys: dict[str, Any] = {"type": "ftps", "ca_bundle": str(ca)} if tls else {}
    try:
        connection = connect(server, **keys)
        server.stalls["a.bin"] = 0.5
        reader = BlockedReader(connection.open("ftp://127.0.0.1/a.bin"))
        reader.start()
        reader.wait_blocked()

        aborted = time.monotonic()
        connection.abort()
        reader.join(5)

        assert not reader.is_alive()
        assert reader.ended_at - aborted < 1.0
        assert isinstance(reader.error, SourceUnavailable), reader.error
        assert reader.received < 8_000_000
        assert not connection.check()
        connection.abort()  # twice is harmless
        connection.close()
    finally:
        if not tls:
            server.stop()


def test_abort_with_nothing_open_leaves_the_connection_broken(server: FileFTPServer) -> None:
    connection = connect(server)
    connection.abort()
    assert not connection.check()
    connection.close()
