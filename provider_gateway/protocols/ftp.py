"""FTP and FTPS (explicit TLS) providers: one logged-in ``ftplib.FTP`` reused for every file.

A file is streamed with ``transfercmd("RETR ...", rest=offset)``; when its
data connection ends cleanly, the closing reply is read so that the control
connection is ready for the next file. A stream closed early, or any
transport error, marks the connection broken: :meth:`FtpConnection.check`
then says so, and the owner replaces it (closing it first, so the provider
never sees one connection more). An idle connection is checked with NOOP
before reuse.
"""

from __future__ import annotations

import ftplib
import socket
import ssl
import time

from provider_gateway.config.model import FtpConnConfig
from provider_gateway.errors import GatewayError, SourceAccessDenied, SourceNotFound, SourceUnavailable
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.urls import url_path

# Checked with NOOP before reuse after this long without traffic.
IDLE_CHECK_S = 15.0
_TRANSPORT_ERRORS = (OSError, EOFError, ftplib.error_temp, ftplib.error_reply, ftplib.error_proto)


def translate(exc: BaseException, what: str) -> GatewayError:
    """The contract error for an ftplib or socket failure."""
    text = str(exc).strip()
    if isinstance(exc, ftplib.error_perm):
        code = text[:3]
        if code in ("530", "532"):
            return SourceAccessDenied(f"{what}: login refused: {text}")
        if code == "550" and "denied" in text.lower():
            return SourceAccessDenied(f"{what}: {text}")
        if code in ("550", "450", "553"):
            return SourceNotFound(f"{what}: {text}")
        return SourceAccessDenied(f"{what}: {text}")
    if isinstance(exc, ssl.SSLError):
        return SourceUnavailable(f"{what}: TLS failed: {exc}")
    return SourceUnavailable(f"{what}: {text or type(exc).__name__}")


class FtpStream:
    """One RETR's data connection."""

    def __init__(self, owner: FtpConnection, data: socket.socket, size: int | None) -> None:
        self._owner = owner
        self._data = data
        self.size = size
        self._ended = False

    def read(self, amount: int) -> bytes:
        try:
            piece = self._data.recv(amount)
        except _TRANSPORT_ERRORS as exc:
            self._owner.broken = True
            raise translate(exc, "reading the data connection") from exc
        if not piece:
            self._ended = True
        return piece

    def close(self) -> None:
        self._data.close()
        self._owner.finish_transfer(clean=self._ended)


class FtpConnection:
    """A logged-in FTP or FTPS control connection to one provider."""

    def __init__(self, conn: FtpConnConfig, settings: ConnectionSettings) -> None:
        self._conn = conn
        self._timeout = settings.read_timeout_s
        self.broken = False
        self._ftp = self._login()
        self._last_used = time.monotonic()

    def _login(self) -> ftplib.FTP:
        conn = self._conn
        ftp: ftplib.FTP = (
            ftplib.FTP_TLS(timeout=self._timeout) if conn.type == "ftps" else ftplib.FTP(timeout=self._timeout)
        )
        ftp.encoding = "utf-8"
        where = f"{conn.type}://{conn.host}:{conn.port}"
        try:
            ftp.connect(conn.host, conn.port, timeout=conn.timeout_s)
            assert ftp.sock is not None  # connect() succeeded
            ftp.sock.settimeout(self._timeout)
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.auth()
            ftp.login(conn.username, conn.password or "")
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()  # the data channel is encrypted too
            ftp.set_pasv(conn.passive)
            ftp.voidcmd("TYPE I")
        except (ftplib.error_perm, *_TRANSPORT_ERRORS) as exc:
            ftp.close()
            raise translate(exc, where) from exc
        return ftp

    def open(self, url: str, offset: int = 0) -> FtpStream:
        path = url_path(url)
        try:
            size = self._size(path)
            data = self._ftp.transfercmd(f"RETR {path}", rest=offset or None)
        except ftplib.error_perm as exc:
            raise translate(exc, f"RETR {path}") from exc
        except _TRANSPORT_ERRORS as exc:
            self.broken = True
            raise translate(exc, f"RETR {path}") from exc
        data.settimeout(self._timeout)
        self._last_used = time.monotonic()
        return FtpStream(self, data, size)

    def _size(self, path: str) -> int | None:
        try:
            return self._ftp.size(path)
        except ftplib.error_perm:
            return None  # no SIZE support, or not a file: RETR says which

    def finish_transfer(self, clean: bool) -> None:
        """Read the transfer's closing reply, or give the connection up if it ended early."""
        self._last_used = time.monotonic()
        if not clean:
            self.broken = True
            return
        try:
            self._ftp.voidresp()
        except (ftplib.error_perm, *_TRANSPORT_ERRORS):
            self.broken = True

    def check(self) -> bool:
        if self.broken:
            return False
        if time.monotonic() - self._last_used < IDLE_CHECK_S:
            return True
        try:
            self._ftp.voidcmd("NOOP")
        except (ftplib.error_perm, *_TRANSPORT_ERRORS):
            self.broken = True
            return False
        self._last_used = time.monotonic()
        return True

    def close(self) -> None:
        try:
            if not self.broken:
                self._ftp.quit()
        except (ftplib.error_perm, *_TRANSPORT_ERRORS):
            pass
        finally:
            self._ftp.close()
