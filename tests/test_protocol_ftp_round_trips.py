"""What the FTP connection asks per file, against pyftpdlib: the commands that cost round trips.

After the first file, a file costs RETR (SIZE sent with it, none when the
size is known) and the next file's EPSV, asked right after the closing reply
and read when that file starts. RETR leaves before the data connection is
made. A server that refuses EPSV is asked PASV from then on. A listener asked
for ahead of time and left unused past ``HOLD_MAX_S`` is not used, including
once pyftpdlib has closed it with its unsolicited 421; check(), REST,
abort() and close() work with one held. Nothing here is timed.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provider_gateway.local.ftp_server import FileFTPServer
from provider_gateway.protocols import ftp as ftp_protocol
from provider_gateway.protocols.ftp import FtpConnection
from tests.test_protocol_ftp import Reconnecting, connect, copy, read_all

FILES = 6
DATA_CONNECTED = "<data connection>"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileFTPServer]:
    for i in range(FILES):
        (tmp_path / f"f{i}.bin").write_bytes(bytes([i]) * (1000 + i))
    (tmp_path / "a.bin").write_bytes(os.urandom(2_000_000))
    with FileFTPServer(tmp_path) as running:
        yield running


@pytest.fixture
def replies(server: FileFTPServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every reply the server sends."""
    handler = server._server.handler
    sent: list[str] = []
    respond = handler.respond

    def recording_respond(self: Any, resp: str, *args: Any, **kwargs: Any) -> None:
        sent.append(resp)
        respond(self, resp, *args, **kwargs)

    monkeypatch.setattr(handler, "respond", recording_respond)
    return sent


@pytest.fixture
def client_steps(server: FileFTPServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the client does, in order: each command it writes, and each data connection it makes."""
    steps: list[str] = []
    send, connect_data = FtpConnection._send, socket.create_connection

    def noting_send(self: FtpConnection, commands: list[str]) -> None:
        steps.extend(commands)
        send(self, commands)

    def noting_connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        if address[1] != server.port:  # not the control connection
            steps.append(DATA_CONNECTED)
        return connect_data(address, *args, **kwargs)

    monkeypatch.setattr(FtpConnection, "_send", noting_send)
    monkeypatch.setattr(socket, "create_connection", noting_connect)
    return steps


def after_login(server: FileFTPServer, ending: str | None = "EPSV") -> list[str]:
    """The commands after login and TYPE I, once the server has received one ``ending`` the last.

    The next file's EPSV leaves after the closing reply has been read: the
    server may not have it yet when a test looks.
    """

    def commands() -> list[str]:
        return server.commands[server.commands.index("TYPE I") + 1 :]

    if ending is not None:
        wait_for(lambda: commands()[-1:] == [ending], f"{ending} to reach the server last")
    return commands()


def expected(indexes: range, sizes: bool, connects: bool = False) -> list[str]:
    """The commands of each file in ``indexes`` (and where its data connection is made, if ``connects``)."""
    per_file = []
    for i in indexes:
        per_file += [f"SIZE /f{i}.bin"] * (not sizes) + [f"RETR /f{i}.bin"] + [DATA_CONNECTED] * connects + ["EPSV"]
    return per_file


@pytest.mark.parametrize("sizes", [False, True], ids=["size-unknown", "size-given"])
def test_a_file_costs_retr_and_the_next_files_epsv(server: FileFTPServer, client_steps: list[str], sizes: bool) -> None:
    connection = connect(server)
    for i in range(FILES):
        size = 1000 + i
        stream = connection.open(f"ftp://127.0.0.1/f{i}.bin", size=size if sizes else None)
        assert stream.size == size  # from SIZE, or as given
        received = b""
        while piece := stream.read(1 << 16):
            received += piece
        assert received == bytes([i]) * size

    # The first file asks for its listener itself; every file ends by asking for the next one's.
    assert after_login(server) == ["EPSV", *expected(range(FILES), sizes)]
    # RETR is written before the data connection is made (the first EPSV is ftplib's, not noted).
    assert client_steps == expected(range(FILES), sizes, connects=True)
    assert "PASV" not in server.commands
    assert server.logins == 1
    connection.close()


def test_the_size_is_the_one_given_even_where_the_server_would_answer_size(server: FileFTPServer) -> None:
    connection = connect(server)
    stream = connection.open("ftp://127.0.0.1/a.bin", size=2_000_000)
    assert stream.size == 2_000_000
    stream.close()
    assert not any(c.startswith("SIZE") for c in server.commands)


def test_a_server_that_refuses_epsv_is_asked_pasv_from_then_on(
    server: FileFTPServer, replies: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = server._server.handler
    monkeypatch.setattr(handler, "proto_cmds", {k: v for k, v in handler.proto_cmds.items() if k != "EPSV"})
    connection = connect(server)

    for i in range(3):
        assert read_all(connection, f"f{i}.bin") == bytes([i]) * (1000 + i)

    assert after_login(server, "PASV") == [
        "EPSV",  # refused with 500: never asked again
        "PASV",
        *[c if c != "EPSV" else "PASV" for c in expected(range(3), sizes=False)],
    ]
    assert after_login(server, "PASV")[-1] == "PASV"
    assert any(r.startswith("500 ") for r in replies)
    assert connection.check()
    connection.close()


def test_a_resume_with_rest_uses_the_listener_asked_for_ahead(server: FileFTPServer) -> None:
    connection = connect(server)
    whole = (server.root / "a.bin").read_bytes()
    assert read_all(connection, "f0.bin") == bytes([0]) * 1000

    assert read_all(connection, "a.bin", offset=1_234_567) == whole[1_234_567:]

    assert after_login(server)[-4:] == ["EPSV", "REST 1234567", "RETR /a.bin", "EPSV"]
    assert connection.check()
    connection.close()


def wait_for(condition: Any, what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


@pytest.fixture
def short_listeners(server: FileFTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyftpdlib closes an unused passive listener after 0.2 s instead of 30, with its 421 notice."""
    monkeypatch.setattr(server._server.handler.passive_dtp, "timeout", 0.2)


@pytest.mark.usefixtures("short_listeners")
def test_a_held_listener_the_server_closed_is_not_used(
    server: FileFTPServer, replies: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ftp_protocol, "HOLD_MAX_S", 0.0)  # anything held is too old
    connection = connect(server)
    assert read_all(connection, "f0.bin") == bytes([0]) * 1000
    wait_for(lambda: "421 Passive data channel timed out." in replies, "the server's 421 for the unused listener")

    assert read_all(connection, "f1.bin") == bytes([1]) * 1001

    assert after_login(server)[-5:] == ["NOOP", "EPSV", "SIZE /f1.bin", "RETR /f1.bin", "EPSV"]
    assert connection.check() and server.connections.total == 1
    connection.close()


@pytest.mark.usefixtures("short_listeners")
def test_a_held_listener_gone_before_its_age_limit_costs_one_reconnect_not_the_file(
    server: FileFTPServer, replies: list[str], s3: Any, bucket: str
) -> None:
    connections = Reconnecting(lambda: connect(server))
    assert read_all(connections(), "f0.bin") == bytes([0]) * 1000
    wait_for(lambda: "421 Passive data channel timed out." in replies, "the server's 421 for the unused listener")

    result = copy(connections, "ftp://127.0.0.1/a.bin", s3, bucket, "a.bin")

    assert result.success, result
    assert s3.get_object(Bucket=bucket, Key="a.bin")["Body"].read() == (server.root / "a.bin").read_bytes()
    assert connections.made == 2


def test_check_sends_noop_with_a_listener_held_and_the_next_file_still_arrives(
    server: FileFTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = connect(server)
    assert read_all(connection, "f0.bin") == bytes([0]) * 1000
    monkeypatch.setattr(ftp_protocol, "IDLE_CHECK_S", 0.0)

    assert connection.check()
    assert read_all(connection, "f1.bin") == bytes([1]) * 1001

    assert after_login(server)[-6:] == ["EPSV", "NOOP", "EPSV", "SIZE /f1.bin", "RETR /f1.bin", "EPSV"]
    assert server.connections.total == 1
    connection.close()


@pytest.mark.parametrize("end", ["close", "abort"])
def test_close_and_abort_with_a_listener_held_end_the_session(server: FileFTPServer, end: str) -> None:
    connection: FtpConnection = connect(server)
    assert read_all(connection, "f0.bin") == bytes([0]) * 1000
    assert after_login(server)[-1] == "EPSV"

    if end == "abort":
        connection.abort()
        assert not connection.check()
    connection.close()

    wait_for(lambda: server.connections.open == 0, "the session to end")
    assert (server.commands[-1] == "QUIT") == (end == "close")
