"""FTP and FTPS against servers nobody here wrote: vsftpd (stock TLS defaults) and proftpd.

- vsftpd requires TLS session reuse on data connections by default: files
  arrive byte-exact, and a client that does not reuse gets the server's 522
  in its error, never "received 0 bytes".
- A certificate that is self-signed or for another host is refused before
  USER or PASS reaches the server, at once and without retries.
- A session killed mid-file while SIZE is denied resumes to the exact bytes:
  never a short object. (Both servers state the size in their 150 reply;
  test_protocol_ftp.py covers a server that says it nowhere.)
"""

from __future__ import annotations

import ftplib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from provider_gateway.config.model import FtpConnConfig
from provider_gateway.errors import SourceAccessDenied, SourceUnavailable
from provider_gateway.protocols import ftp as ftp_protocol
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.ftp import FtpConnection
from tests.conftest import GatewayFactory
from tests.ftp_servers import Proftpd, Vsftpd
from tests.support import create_state_machine, download_message, start, wait_done
from tests.test_protocol_ftp import Reconnecting, copy

MiB = 1024 * 1024
# vsftpd without SIZE: every command a download needs, and not SIZE (which it then answers 550).
NO_SIZE = "cmds_allowed=ABOR,AUTH,CWD,EPSV,FEAT,NOOP,OPTS,PASS,PASV,PBSZ,PROT,PWD,QUIT,REST,RETR,SYST,TYPE,USER"


class Certificates:
    """A trusted test CA (``ca``), and server certificates good and bad for 127.0.0.1."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self._authority = trustme.CA()
        self.ca = workdir / "ca.pem"
        self._authority.cert_pem.write_to_path(str(self.ca))

    def issued(self, host: str) -> Path:
        path = self.dir / f"{host}.pem"
        self._authority.issue_cert(host).private_key_and_cert_chain_pem.write_to_path(str(path))
        return path

    def self_signed(self) -> Path:
        path = self.dir / "self-signed.pem"
        request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
        extension = ["-addext", "subjectAltName=IP:127.0.0.1"]
        outputs = ["-keyout", str(path), "-out", str(path) + ".crt"]
        subprocess.run(["openssl", *request, *extension, *outputs], check=True, capture_output=True)
        path.write_text(path.read_text() + Path(str(path) + ".crt").read_text())
        return path


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path)


@pytest.fixture
def vsftpd(tmp_path: Path, certs: Certificates) -> Iterator[Vsftpd]:
    server = Vsftpd(tmp_path / "vsftpd", certs.issued("127.0.0.1"))
    yield server
    server.stop()


def ftps(server: Vsftpd, ca: Path | None, **keys: Any) -> FtpConnection:
    config = FtpConnConfig(type="ftps", host="127.0.0.1", port=server.port, ca_bundle=str(ca) if ca else None, **keys)
    return FtpConnection(config, ConnectionSettings(read_timeout_s=10))


def read_all(connection: FtpConnection, url: str, offset: int = 0) -> bytes:
    stream = connection.open(url, offset)
    pieces = []
    while piece := stream.read(1 << 20):
        pieces.append(piece)
    stream.close()
    return b"".join(pieces)


def put(server: Vsftpd, name: str, data: bytes) -> str:
    """Store a file where vsftpd serves it; returns its URL (absolute path: no chroot)."""
    path = server.log_path.parent / name
    path.write_bytes(data)
    return f"ftp://127.0.0.1:{server.port}{path}"


def test_stock_vsftpd_requires_session_reuse_and_files_arrive_byte_exact(vsftpd: Vsftpd, certs: Certificates) -> None:
    first, second = os.urandom(3 * MiB + 7), os.urandom(100_000)
    urls = put(vsftpd, "first.bin", first), put(vsftpd, "second.bin", second)
    connection = ftps(vsftpd, certs.ca)

    assert read_all(connection, urls[0]) == first
    assert read_all(connection, urls[1]) == second
    assert read_all(connection, urls[0], offset=MiB) == first[MiB:]
    assert connection.check()
    connection.close()
    assert vsftpd.commands("RETR") == 3
    assert "No SSL session reuse" not in vsftpd.log()
    # Its 150 reply states the size: SIZE is asked for the first file only. EPSV, never PASV.
    assert (vsftpd.commands("SIZE"), vsftpd.commands("PASV")) == (1, 0)
    assert vsftpd.commands("EPSV") >= 3


def test_vsftpd_refusing_epsv_is_asked_pasv_and_still_reuses_the_tls_session(
    tmp_path: Path, certs: Certificates
) -> None:
    server = Vsftpd(tmp_path / "noepsv", certs.issued("127.0.0.1"), extra=NO_SIZE.replace("EPSV,", ""))
    try:
        files = [os.urandom(200_000 + i) for i in range(4)]
        urls = [put(server, f"f{i}.bin", data) for i, data in enumerate(files)]
        connection = ftps(server, certs.ca)

        assert [read_all(connection, url) for url in urls] == files
        assert read_all(connection, urls[0], offset=123_456) == files[0][123_456:]
        connection.close()

        assert server.commands("EPSV") == 1  # refused (550), never asked again
        assert server.commands("PASV") >= 5
        assert "No SSL session reuse" not in server.log()
    finally:
        server.stop()


def test_proftpd_files_in_a_row_use_listeners_asked_for_ahead_and_resume_with_rest(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    files = [os.urandom(70_000 + i) for i in range(5)]
    for i, data in enumerate(files):
        (root / f"f{i}.bin").write_bytes(data)
    server = Proftpd(tmp_path / "proftpd", root)
    try:
        config = FtpConnConfig(
            type="ftp", host="127.0.0.1", port=server.port, username=server.user, password=server.password
        )
        connection = FtpConnection(config, ConnectionSettings(read_timeout_s=10))

        assert [read_all(connection, f"ftp://127.0.0.1/f{i}.bin") for i in range(5)] == files
        assert read_all(connection, "ftp://127.0.0.1/f3.bin", offset=50_000) == files[3][50_000:]
        stream = connection.open("ftp://127.0.0.1/f4.bin", size=len(files[4]))
        assert stream.size == len(files[4])
        assert b"".join(iter(lambda: stream.read(1 << 20), b"")) == files[4]
        connection.close()

        assert server.commands("RETR") == 7
        assert server.commands("REST") == 1
        # The 150 reply states the size: SIZE for the first file only; each file's EPSV asked ahead.
        assert (server.commands("SIZE"), server.commands("PASV")) == (1, 0)
        assert server.commands("EPSV") == 8
    finally:
        server.stop()


def test_a_data_connection_without_session_reuse_shows_the_servers_522(
    vsftpd: Vsftpd, certs: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = put(vsftpd, "a.bin", os.urandom(50_000))

    # A data connection in a TLS session of its own, as ftplib's own FTP_TLS makes.
    def fresh_session(self: ftplib.FTP_TLS, conn: socket.socket) -> socket.socket:
        return self.context.wrap_socket(conn, server_hostname=self.host)

    monkeypatch.setattr(ftp_protocol.SessionReusingFTP_TLS, "secure_data", fresh_session)
    connection = ftps(vsftpd, certs.ca)

    with pytest.raises(SourceUnavailable, match="522 SSL connection failed") as raised:
        read_all(connection, url)
    assert "received 0 bytes" not in raised.value.message
    assert "No SSL session reuse" in vsftpd.log()


@pytest.mark.parametrize("bad", ["self-signed", "wrong-host"])
def test_a_bad_certificate_is_refused_before_any_credential(tmp_path: Path, certs: Certificates, bad: str) -> None:
    cert = certs.self_signed() if bad == "self-signed" else certs.issued("wrong.example")
    server = Vsftpd(tmp_path / "bad", cert)
    try:
        with pytest.raises(SourceAccessDenied, match="certificate verify failed") as raised:
            ftps(server, certs.ca, password="secret")
        assert ("self-signed" if bad == "self-signed" else "mismatch") in raised.value.message
        assert (server.commands("USER"), server.commands("PASS")) == (0, 0)

        unchecked = ftps(server, None, verify_tls=False)  # the same server, when the operator says so
        assert unchecked.check()
        assert server.commands("PASS") == 1  # the log does show a PASS when one is sent
        unchecked.close()
    finally:
        server.stop()


def test_a_certificate_failure_fails_the_task_at_once_without_retries(
    gateway: GatewayFactory, tmp_path: Path, certs: Certificates, sfn: Any, bucket: str, activity: str
) -> None:
    server = Vsftpd(tmp_path / "selfsigned", certs.self_signed())
    try:
        url = put(server, "a.bin", b"data")
        conn = {"type": "ftps", "host": "127.0.0.1", "port": server.port, "ca_bundle": str(certs.ca)}
        gateway(activity, conn, provider_id="FTPS_PROV", retries=4)
        execution = start(sfn, create_state_machine(sfn, activity), download_message([(url, bucket, "a.bin")]))

        done = wait_done(sfn, execution)

        assert (done["status"], done["error"]) == ("FAILED", "SourceAccessDenied"), done
        assert "certificate verify failed" in done["cause"]
        # Four retries with backoff would take 0.5 + 1 + 2 + 4 s and negotiate TLS five times.
        assert (done["stopDate"] - done["startDate"]).total_seconds() < 5
        assert server.commands("AUTH") == 1
    finally:
        server.stop()


def kill_at(server: Vsftpd | Proftpd, at: int) -> tuple[Callable[[int], None], list[int]]:
    """A progress callback that kills the server's sessions once ``at`` bytes have been read."""
    read: list[int] = [0]
    killed: list[int] = []

    def progress(count: int) -> None:
        read[0] += count
        if not killed and read[0] >= at:
            killed.append(server.kill_sessions())

    return progress, killed


def test_proftpd_without_size_killed_mid_file_resumes_to_the_exact_bytes(tmp_path: Path, s3: Any, bucket: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(31_457_280)
    (root / "big.bin").write_bytes(data)
    server = Proftpd(tmp_path / "proftpd", root, deny_size=True)
    try:
        config = FtpConnConfig(
            type="ftp", host="127.0.0.1", port=server.port, username=server.user, password=server.password
        )
        connections = Reconnecting(lambda: FtpConnection(config, ConnectionSettings(read_timeout_s=10)))
        probe = connections().open("ftp://127.0.0.1/big.bin")
        assert probe.size == len(data)  # SIZE is denied, but the 150 reply states it
        probe.close()  # closed early: the connection is replaced
        progress, killed = kill_at(server, 9_601_024)

        result = copy(connections, "ftp://127.0.0.1/big.bin", s3, bucket, "big.bin", progress=progress)

        # The probe's session may still be ending in proftpd when the kill comes: it is counted too.
        assert killed and killed[0] >= 1
        assert result.success, result
        assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == data
        assert server.commands("REST") >= 1
    finally:
        server.stop()


def test_vsftpd_without_size_killed_mid_file_resumes_to_the_exact_bytes(
    tmp_path: Path, certs: Certificates, s3: Any, bucket: str
) -> None:
    server = Vsftpd(tmp_path / "nosize", certs.issued("127.0.0.1"), extra=NO_SIZE)
    try:
        data = os.urandom(12 * MiB + 5)
        url = put(server, "big.bin", data)
        connections = Reconnecting(lambda: ftps(server, certs.ca))
        progress, killed = kill_at(server, 5 * MiB)

        started = time.monotonic()
        result = copy(connections, url, s3, bucket, "big.bin", progress=progress)

        assert killed and killed[0] >= 1
        assert result.success, result
        assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == data
        assert server.commands("SIZE") >= 1 and "213 " not in server.log()  # asked, never answered
        assert connections.made == 2, f"resumed once on a new session ({time.monotonic() - started:.1f}s)"
    finally:
        server.stop()
