"""SFTP logins, host keys and reads at the protocol layer, against OpenSSH's sshd and the in-process server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from provider_gateway import one_file
from provider_gateway.config.model import SftpConnConfig
from provider_gateway.errors import SourceAccessDenied, SourceNotFound, SourceUnavailable
from provider_gateway.local.sftp_server import InProcessSFTPServer
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.sftp import PIECE, SftpConnection
from provider_gateway.protocols.sftp_session import FILE_AHEAD
from tests.conftest import GatewayFactory
from tests.servers import SSHD, STOCK_HOST_KEYS, CountingProxy, Sshd, keygen
from tests.support import create_state_machine, download_message, start, wait_done

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
    data = os.urandom(FILE_AHEAD * 2 + 12345)  # more than a file reads ahead
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


# --- OpenSSH's sshd with a stock set of host keys -------------------------------------------------

needs_sshd = pytest.mark.skipif(SSHD is None and not os.environ.get("CI"), reason="needs OpenSSH sshd")


@pytest.fixture(scope="module")
def stock_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    sshd = Sshd(tmp_path_factory.mktemp("sshd"), host_key_types=STOCK_HOST_KEYS)
    yield sshd
    sshd.stop()


def sshd_conn(sshd: Sshd, port: int | None = None, **settings: object) -> SftpConnConfig:
    values: dict[str, object] = {
        "type": "sftp",
        "host": "127.0.0.1",
        "port": port or sshd.port,
        "username": sshd.user,
        "private_key_file": str(sshd.client_key),
    }
    values.update(settings)
    return SftpConnConfig(**values)  # type: ignore[arg-type]


def openssh_connects(sshd: Sshd, known_hosts: Path) -> bool:
    """Whether OpenSSH's own sftp, checking host keys strictly against ``known_hosts``, logs in."""
    done = subprocess.run(
        [
            "sftp",
            "-F",
            "/dev/null",
            "-b",
            "-",
            "-P",
            str(sshd.port),
            "-i",
            str(sshd.client_key),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "UpdateHostKeys=no",
            "-o",
            "CheckHostIP=no",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            f"{sshd.user}@127.0.0.1",
        ],
        input="pwd\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0


def known_hosts_cases(sshd: Sshd, other: str) -> dict[str, tuple[list[str], bool]]:
    """known_hosts files for ``sshd`` (which has RSA, ECDSA and ed25519 keys) and whether they let it in."""
    at = f"[127.0.0.1]:{sshd.port}"
    rsa, ecdsa, ed25519 = (sshd.key_line(k) for k in ("rsa", "ecdsa", "ed25519"))
    return {
        "only the RSA key": ([f"{at} {rsa}"], True),
        "only the ECDSA key": ([f"{at} {ecdsa}"], True),
        "only ed25519, among other hosts' keys": ([f"other.example {rsa}", f"{at} {ed25519}"], True),
        "a wildcard pattern": ([f"[127.0.0.*]:{sshd.port} {rsa}"], True),
        "a name list with comments and junk lines": (["# c", "junk", f"x.example,{at} {ecdsa} note"], True),
        "the key under the port-22 name": ([f"127.0.0.1 {rsa}"], False),
        "another host's key": ([f"{at} {other}"], False),
        "a negated pattern": ([f"!{at},* {rsa}"], False),
        "the RSA key, revoked": ([f"{at} {rsa}", f"@revoked * {rsa}"], False),
        "RSA revoked, ed25519 pinned": ([f"{at} {rsa}", f"@revoked {at} {rsa}", f"{at} {ed25519}"], True),
        "a CA line only": ([f"@cert-authority {at} {other}"], False),
        "a CA line beside the RSA key": ([f"@cert-authority * {other}", f"{at} {rsa}"], True),
    }


@needs_sshd
def test_host_keys_are_accepted_and_refused_as_openssh_decides(stock_sshd: Sshd, tmp_path: Path) -> None:
    other = Path(f"{keygen(tmp_path / 'other', 'rsa')}.pub").read_text().rsplit(" ", 1)[0]
    hashed_cases = 0
    for hashed in (False, True):
        for case, (lines, expected) in known_hosts_cases(stock_sshd, other).items():
            known_hosts = tmp_path / "known_hosts"
            known_hosts.write_text("\n".join(lines) + "\n")
            if hashed:
                hashing = subprocess.run(["ssh-keygen", "-H", "-f", str(known_hosts)], capture_output=True)
                if hashing.returncode != 0:  # it refuses files with unreadable lines
                    continue
                hashed_cases += 1
            try:
                conn = SftpConnection(sshd_conn(stock_sshd, known_hosts_file=str(known_hosts)), ConnectionSettings())
                conn.close()
                ours: bool = True
            except SourceAccessDenied as exc:
                assert "host key" in exc.message or "@cert-authority" in exc.message, exc.message
                ours = False
            assert (ours, openssh_connects(stock_sshd, known_hosts)) == (expected, expected), (case, hashed)
    assert hashed_cases >= 10


@needs_sshd
def test_a_mismatch_names_the_offered_key_by_its_sha256_fingerprint(stock_sshd: Sshd, tmp_path: Path) -> None:
    other = Path(f"{keygen(tmp_path / 'other', 'ed25519')}.pub").read_text().rsplit(" ", 1)[0]
    with pytest.raises(SourceAccessDenied) as refused:
        SftpConnection(sshd_conn(stock_sshd, host_key=other), ConnectionSettings())
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{stock_sshd.host_keys['ed25519']}.pub"], capture_output=True, text=True
    )
    fingerprint = listed.stdout.split()[1]
    assert f"ssh-ed25519 {fingerprint}" in refused.value.message
    assert "host key mismatch" in refused.value.message and "MD5" not in refused.value.message


@needs_sshd
def test_a_directory_is_not_found_at_once(stock_sshd: Sshd, tmp_path: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    connection = SftpConnection(sshd_conn(stock_sshd, host_key=stock_sshd.key_line("rsa")), ConnectionSettings())
    try:
        with pytest.raises(SourceNotFound, match="is a directory"):
            connection.open(f"sftp://127.0.0.1:{stock_sshd.port}{folder}")
        assert connection.check()  # the session is fine; only the path is wrong
    finally:
        connection.close()


@needs_sshd
def test_abort_ends_a_read_blocked_on_a_stalled_server(tmp_path: Path) -> None:
    sshd = Sshd(tmp_path / "sshd")  # its own: its sessions are stopped
    data = os.urandom(48 * 1024 * 1024)  # far more than the buffers along the way
    (tmp_path / "big.bin").write_bytes(data)
    connection = SftpConnection(sshd_conn(sshd, host_key=sshd.host_key_line), ConnectionSettings())
    stopped: list[int] = []
    try:
        stream = connection.open(f"sftp://127.0.0.1:{sshd.port}{tmp_path / 'big.bin'}")
        stopped = sshd.signal_sessions(signal.SIGSTOP)
        progress = {"bytes": 0, "at": time.monotonic()}
        outcome: list[BaseException | bytes] = []

        def reader() -> None:
            try:
                while piece := stream.read(1 << 20):
                    progress["bytes"] += len(piece)
                    progress["at"] = time.monotonic()
                outcome.append(b"")
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() - progress["at"] < 1.0:  # the reader has drained every buffer and waits
            assert time.monotonic() < deadline and thread.is_alive(), (progress, outcome)
            thread.join(0.05)
        assert thread.is_alive() and progress["bytes"] < len(data)

        aborted = time.monotonic()
        connection.abort()
        thread.join(5)
        ended = time.monotonic() - aborted
        connection.abort()  # twice is harmless
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        connection.close()
        sshd.stop()
    assert not thread.is_alive() and ended < 1.0, ended
    assert len(outcome) == 1 and isinstance(outcome[0], SourceUnavailable), outcome
    assert not connection.check()


def test_abort_before_any_read_leaves_the_connection_broken(server: InProcessSFTPServer) -> None:
    connection = connect(server, password="secret")
    connection.abort()
    connection.abort()
    assert not connection.check()
    connection.close()


@needs_sshd
@pytest.mark.parametrize("case", ["another key", "no key of the pinned type"])
def test_a_host_key_failure_ends_the_copy_and_the_task_at_once(
    case: str,
    stock_sshd: Sshd,
    tmp_path: Path,
    s3: Any,
    bucket: str,
    gateway: GatewayFactory,
    sfn: Any,
    activity: str,
) -> None:
    (tmp_path / "f.bin").write_bytes(b"payload")
    with contextlib.ExitStack() as stack:
        if case == "another key":
            sshd = stock_sshd
            pinned = Path(f"{keygen(tmp_path / 'other', 'ecdsa')}.pub").read_text().rsplit(" ", 1)[0]
            message = "host key mismatch"
        else:
            sshd = Sshd(tmp_path / "ed25519-only")
            stack.callback(sshd.stop)
            pinned, message = stock_sshd.key_line("rsa"), "no host key of the pinned types (ssh-rsa)"
        proxy = CountingProxy(sshd.port)
        stack.callback(proxy.close)
        url = f"sftp://127.0.0.1:{proxy.port}{tmp_path / 'f.bin'}"
        conn = sshd_conn(sshd, port=proxy.port, host_key=pinned)

        source = one_file.Source(conn=conn, url=url)
        outcome = one_file.download(source, one_file.file_request(source, bucket, "f.bin"), s3, threading.Event())
        assert outcome.result.error_code == "SourceAccessDenied", outcome.result
        assert message in (outcome.result.error or "")
        assert (proxy.total, outcome.seconds < 2) == (1, True)  # one attempt, no backoff

        gateway(activity, {k: v for k, v in conn.__dict__.items() if v is not None})
        machine = create_state_machine(sfn, activity)
        done = wait_done(sfn, start(sfn, machine, download_message([(url, bucket, "f.bin")])))
        assert (done["status"], done["error"]) == ("FAILED", "SourceAccessDenied"), done
        assert message in done["cause"]
        assert proxy.total == 2  # the task's one connection, never retried
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
