"""SFTP logins and reads at the protocol layer, against the in-process paramiko server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from provider_gateway.config.model import SftpConnConfig
from provider_gateway.errors import SourceAccessDenied, SourceNotFound
from provider_gateway.local.sftp_server import InProcessSFTPServer
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.sftp import PIECE, WINDOW_PIECES, SftpConnection

KEY_PASSPHRASE = "correct horse"


@pytest.fixture
def client_key(tmp_path: Path) -> tuple[paramiko.Ed25519Key, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(KEY_PASSPHRASE.encode()),
    )
    path = tmp_path / "id_ed25519"
    path.write_bytes(pem)
    return paramiko.Ed25519Key.from_private_key_file(str(path), password=KEY_PASSPHRASE), path


@pytest.fixture
def server(tmp_path: Path, client_key: tuple[paramiko.Ed25519Key, Path]) -> Iterator[InProcessSFTPServer]:
    root = tmp_path / "root"
    root.mkdir()
    with InProcessSFTPServer(root, authorized_key=client_key[0]) as running:
        yield running


def connect(server: InProcessSFTPServer, **conn: object) -> SftpConnection:
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": "provider",
        "host_key": server.host_key_line,
    }
    settings.update(conn)
    return SftpConnection(SftpConnConfig(type="sftp", **settings), ConnectionSettings())  # type: ignore[arg-type]


def read_all(connection: SftpConnection, url: str, offset: int = 0) -> bytes:
    stream = connection.open(url, offset)
    pieces = []
    while piece := stream.read(1 << 20):
        assert len(piece) <= PIECE
        pieces.append(piece)
    stream.close()
    return b"".join(pieces)


def test_password_login_and_windowed_reads_from_any_offset(server: InProcessSFTPServer) -> None:
    data = os.urandom(PIECE * WINDOW_PIECES * 2 + 12345)  # more than two windows
    (server.root / "big.bin").write_bytes(data)
    connection = connect(server, password="secret")
    url = f"sftp://127.0.0.1:{server.port}/big.bin"

    assert read_all(connection, url) == data
    assert read_all(connection, url, offset=PIECE * 3 + 7) == data[PIECE * 3 + 7 :]
    assert connection.check()
    assert server.logins == 1


def test_encrypted_private_key_with_its_passphrase(
    server: InProcessSFTPServer, client_key: tuple[paramiko.Ed25519Key, Path]
) -> None:
    (server.root / "f.txt").write_bytes(b"key login")
    connection = connect(server, private_key_file=str(client_key[1]), private_key_passphrase=KEY_PASSPHRASE)
    assert read_all(connection, f"sftp://127.0.0.1:{server.port}/f.txt") == b"key login"

    with pytest.raises(SourceAccessDenied, match="cannot load private_key_file"):
        connect(server, private_key_file=str(client_key[1]), private_key_passphrase="wrong")


def test_wrong_password_missing_file_and_unknown_host_key(server: InProcessSFTPServer) -> None:
    with pytest.raises(SourceAccessDenied, match="authentication refused"):
        connect(server, password="wrong")
    with pytest.raises(SourceNotFound):
        connect(server, password="secret").open(f"sftp://127.0.0.1:{server.port}/nope.bin")
    with pytest.raises(SourceAccessDenied, match="not known"):
        connect(server, password="secret", host_key=None)
