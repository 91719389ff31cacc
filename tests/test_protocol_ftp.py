"""The FTP connection's own behaviour against pyftpdlib: reuse, liveness, broken transfers."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provider_gateway.config.model import FtpConnConfig
from provider_gateway.errors import SourceAccessDenied, SourceNotFound
from provider_gateway.local.ftp_server import FileFTPServer
from provider_gateway.protocols import ftp as ftp_protocol
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.ftp import FtpConnection


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileFTPServer]:
    (tmp_path / "a.bin").write_bytes(os.urandom(3_000_000))
    (tmp_path / "b.bin").write_bytes(b"second file")
    with FileFTPServer(tmp_path) as running:
        yield running


def connect(server: FileFTPServer, password: str = "secret") -> FtpConnection:
    config = FtpConnConfig(type="ftp", host="127.0.0.1", port=server.port, username="provider", password=password)
    return FtpConnection(config, ConnectionSettings(read_timeout_s=10))


def read_all(connection: FtpConnection, name: str, offset: int = 0) -> bytes:
    stream = connection.open(f"ftp://127.0.0.1/{name}", offset)
    pieces = []
    while piece := stream.read(1 << 20):
        pieces.append(piece)
    stream.close()
    return b"".join(pieces)


def test_files_share_one_login_and_resume_from_an_offset(server: FileFTPServer) -> None:
    connection = connect(server)
    whole = (server.root / "a.bin").read_bytes()

    assert read_all(connection, "a.bin") == whole
    assert read_all(connection, "b.bin") == b"second file"
    assert read_all(connection, "a.bin", offset=1_000_000) == whole[1_000_000:]
    assert connection.check()
    assert (server.logins, server.sessions_total) == (1, 1)


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
    while server.sessions_open and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not connection.check()
    connection.close()


def test_missing_file_and_refused_login(server: FileFTPServer) -> None:
    with pytest.raises(SourceNotFound, match="550"):
        connect(server).open("ftp://127.0.0.1/missing.bin")
    with pytest.raises(SourceAccessDenied, match="530"):
        connect(server, password="wrong")
