"""FTP and FTPS (explicit TLS) providers: one logged-in ``ftplib.FTP`` reused for every file.

A file costs about two round trips in passive mode (the default), whatever
the distance: the passive listener it uses was asked for (EPSV; PASV from
the first time a server refuses EPSV) right after the previous file's closing
reply, and its own SIZE (only when neither the request nor an earlier 150
reply gives the size), REST and RETR leave in one write, before its data
connection is made, so the two cross the link together. A listener held
longer than ``HOLD_MAX_S`` is not used: its reply is read, and NOOP steps
past a notice of its expiry. A command is never sent while a transfer runs
(pyftpdlib, for one, drops the running transfer's data connection on EPSV),
so the next file's listener cannot be asked for sooner.

A transfer is complete only when the server says so: when the data connection ends, the
closing reply is read, and only 226 or 250 make :meth:`FtpStream.read`
return ``b""``. Anything else (426, 451, 522, no reply within the read
timeout, a closed control connection, a data connection that fails) raises
SourceUnavailable with the server's words, so the copy resumes with REST and
a truncated file never becomes an object. Such a break, a stream closed
early, or any transport error marks the connection broken:
:meth:`FtpConnection.check` then says so, and the owner replaces it. An idle
connection is checked with NOOP before reuse.

FTPS verifies the server's certificate and host name (``verify_tls``,
``ca_bundle``) during AUTH TLS, before the user name or password is sent; a
certificate that fails is SourceAccessDenied, never retried. Data
connections resume the control connection's TLS session, as servers that
require session reuse (vsftpd's default) demand.
"""

from __future__ import annotations

import contextlib
import ftplib
import socket
import ssl
import time

from provider_gateway.config.model import FtpConnConfig
from provider_gateway.errors import (
    GatewayError,
    SourceAccessDenied,
    SourceNotFound,
    SourceUnavailable,
)
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.spec import ProtocolSpec, UrlSettings, present
from provider_gateway.urls import url_path

# Checked with NOOP before reuse after this long without traffic.
IDLE_CHECK_S = 15.0
# After a data connection failed, how long to wait for the server's reply that says why.
BREAK_REPLY_WAIT_S = 5.0
# A passive listener asked for ahead of its file is used only this young; servers close unused
# ones after 30 s (pyftpdlib) to 60 s (vsftpd's accept_timeout).
HOLD_MAX_S = 10.0
COMPLETE_REPLIES = ("226", "250")
_TRANSPORT_ERRORS = (OSError, EOFError, ftplib.error_temp, ftplib.error_reply, ftplib.error_proto)


class _RetryFresh(Exception):
    """The listener asked for ahead of time was gone (425): the file is asked again with a new one."""


def _close_quietly(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


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
    if isinstance(exc, ssl.SSLCertVerificationError):
        # Nothing changes on a second try: answered at once, not retried.
        return SourceAccessDenied(f"{what}: certificate verify failed: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return SourceUnavailable(f"{what}: TLS failed: {exc}")
    return SourceUnavailable(f"{what}: {text or type(exc).__name__}")


def tls_context(conn: FtpConnConfig) -> ssl.SSLContext:
    """The TLS settings of an ftps provider: verified against ``ca_bundle`` (else the system's CAs)."""
    if not conn.verify_tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=conn.ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise SourceAccessDenied(f"ca_bundle {conn.ca_bundle}: cannot be read: {exc}") from exc


class SessionReusingFTP_TLS(ftplib.FTP_TLS):  # noqa: N801 - named after ftplib's class
    """FTP_TLS whose data connections resume the control connection's TLS session.

    vsftpd (``require_ssl_reuse=YES``, its default) and proftpd
    (``TLSOptions`` without ``NoSessionReuseRequired``) refuse a data
    connection that starts a TLS session of its own, as a check that the
    data connection comes from the client that logged in.
    """

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        # TLS 1.3 is left on, on purpose. Its session comes in a ticket the server sends just after
        # the handshake; the client takes it in when it reads the next record, so once the login
        # replies are read, ``control.session`` holds it, and OpenSSL servers accept that one ticket
        # for every data connection (checked against vsftpd 3.0.3 on OpenSSL 3: session_reused
        # True, transfer after transfer). Capping at TLS 1.2, the usual workaround for clients that
        # take the session too early, would break that same vsftpd: its default ssl_ciphers
        # (DES-CBC3-SHA) leaves OpenSSL 3 no TLS 1.2 cipher at all, and the handshake fails.
        return self.secure_data(conn), size

    def secure_data(self, conn: socket.socket) -> socket.socket:
        """``conn``, a data connection, in TLS resuming the control connection's session."""
        control = self.sock
        if isinstance(control, ssl.SSLSocket):
            return self.context.wrap_socket(conn, server_hostname=self.host, session=control.session)
        return conn


def shutdown(sock: socket.socket | None) -> None:
    """Shut ``sock`` down for both directions, from any thread; a closed socket is left alone.

    ``socket.socket.shutdown`` is called on the TCP socket itself: for TLS,
    ``SSLSocket.shutdown`` would also drop its TLS state under a thread
    that may be reading through it.
    """
    if sock is None:
        return
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class FtpStream:
    """One RETR's data connection; ``b""`` only once the server confirmed the transfer."""

    def __init__(self, owner: FtpConnection, data: socket.socket, size: int | None, what: str) -> None:
        self._owner = owner
        self._data = data
        self.size = size
        self._what = what
        self._complete = False

    def read(self, amount: int) -> bytes:
        if self._complete:
            return b""
        try:
            piece = self._data.recv(amount)
        except _TRANSPORT_ERRORS as exc:
            raise self._owner.transfer_broken(self._what, exc) from exc
        if piece:
            return piece
        self._owner.transfer_ended(self._what)
        self._complete = True
        return b""

    def close(self) -> None:
        if not self._complete:
            self._owner.transfer_broken(self._what, None)


class FtpConnection:
    """A logged-in FTP or FTPS control connection to one provider."""

    def __init__(self, conn: FtpConnConfig, settings: ConnectionSettings) -> None:
        self._conn = conn
        self._timeout = settings.read_timeout_s
        self.broken = False
        self._data: socket.socket | None = None
        self._passive_verb = "EPSV"  # "PASV" once the server refused EPSV
        self._prefetch: float | None = None  # when the next file's listener was asked for, its reply unread
        self._size_in_150 = False  # the server's 150 reply states the size: SIZE is not asked
        self._ftp: ftplib.FTP = (
            SessionReusingFTP_TLS(context=tls_context(conn), timeout=self._timeout)
            if conn.type == "ftps"
            else ftplib.FTP(timeout=self._timeout)
        )
        self._ftp.encoding = "utf-8"
        self._login()
        self._last_used = time.monotonic()

    def _login(self) -> None:
        conn, ftp = self._conn, self._ftp
        where = f"{conn.type}://{conn.host}:{conn.port}"
        try:
            ftp.connect(conn.host, conn.port, timeout=conn.timeout_s)
            assert ftp.sock is not None  # connect() succeeded
            ftp.sock.settimeout(self._timeout)
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.auth()  # the certificate is verified here, before any credential is sent
            ftp.login(conn.username, conn.password or "")
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()  # the data channel is encrypted too
            ftp.set_pasv(conn.passive)
            ftp.voidcmd("TYPE I")
        except (ftplib.error_perm, *_TRANSPORT_ERRORS) as exc:
            ftp.close()
            raise translate(exc, where) from exc

    def open(self, url: str, offset: int = 0, size: int | None = None) -> FtpStream:
        """Start ``RETR`` of ``url`` from ``offset``; ``size`` (the file's, when the request gives it) spares SIZE."""
        path = url_path(url)  # InvalidRequest for CR, LF, NUL...: nothing is sent then
        what = f"RETR {path}"
        if not self._conn.passive:
            return self._open_active(path, what, offset, size)
        try:
            return self._open_passive(path, what, offset, size)
        except _RetryFresh:
            return self._open_passive(path, what, offset, size)

    def _open_passive(self, path: str, what: str, offset: int, size: int | None) -> FtpStream:
        data: socket.socket | None = None
        in_sync = True  # every reply to what was sent has been read
        try:
            address, prefetched = self._passive_address()
            ask_size = size is None and offset == 0 and not self._size_in_150
            commands = [f"SIZE {path}"] * ask_size + [f"REST {offset}"] * bool(offset) + [what]
            # RETR leaves before the data connection is made: the two cross the link together.
            in_sync = False
            self._send(commands)
            data = socket.create_connection(address, self._conn.timeout_s)
            if ask_size:
                size = self._size_reply()
            if offset:
                self._ftp.getresp()  # 350; a refusal leaves RETR sending from byte 0: the connection is spent
            in_sync = True  # only RETR's reply is left, and an error reply is its only one
            reply = self._ftp.getresp()
            if reply[:1] == "2":  # a server that says more before the transfer starts (as ftplib allows)
                reply = self._ftp.getresp()
            if reply[:1] != "1":
                raise ftplib.error_reply(reply)
            announced = ftplib.parse150(reply) if reply[:3] == "150" else None
            if announced is not None and offset == 0:
                self._size_in_150 = True
                size = size if size is not None else announced
            data = self._ftp.secure_data(data) if isinstance(self._ftp, SessionReusingFTP_TLS) else data
        except ftplib.error_temp as exc:
            _close_quietly(data)
            if in_sync and prefetched and str(exc)[:3] == "425":
                raise _RetryFresh from exc  # the listener asked for ahead was gone: ask for a new one
            self.broken = True
            raise translate(exc, what) from exc
        except ftplib.error_perm as exc:
            _close_quietly(data)
            self.broken = not in_sync
            raise translate(exc, what) from exc
        except _TRANSPORT_ERRORS as exc:
            _close_quietly(data)
            self.broken = True
            raise translate(exc, what) from exc
        return self._stream(data, size, what)

    def _open_active(self, path: str, what: str, offset: int, size: int | None) -> FtpStream:
        """``passive: false``: ftplib's PORT, SIZE and RETR, one after another."""
        try:
            if size is None:
                size = self._size(path)
            data = self._ftp.transfercmd(what, rest=offset or None)
        except ftplib.error_perm as exc:
            raise translate(exc, what) from exc
        except _TRANSPORT_ERRORS as exc:
            self.broken = True
            raise translate(exc, what) from exc
        return self._stream(data, size, what)

    def _stream(self, data: socket.socket, size: int | None, what: str) -> FtpStream:
        data.settimeout(self._timeout)
        self._data = data
        self._last_used = time.monotonic()
        return FtpStream(self, data, size, what)

    def _send(self, commands: list[str]) -> None:
        """Send ``commands`` in one write, without waiting for any reply (their replies come in order)."""
        assert self._ftp.sock is not None, "the control connection is open"
        self._ftp.sock.sendall("".join(f"{command}\r\n" for command in commands).encode(self._ftp.encoding))

    def _passive_address(self) -> tuple[tuple[str, int], bool]:
        """Where to connect the next data connection, and whether it was asked for ahead of time."""
        held, self._prefetch = self._prefetch, None
        if held is not None:
            if time.monotonic() - held <= HOLD_MAX_S:
                try:
                    return self._parse_passive(self._ftp.getresp()), True
                except (ftplib.error_temp, ftplib.error_perm):
                    pass  # refused this time (say 425, too many connections): asked again below
            else:
                self._forget_listener()
        return self._ask_passive(), False

    def _ask_passive(self) -> tuple[str, int]:
        """EPSV, or PASV from the first time a server refuses EPSV (any 5xx) on."""
        while True:
            try:
                return self._parse_passive(self._ftp.sendcmd(self._passive_verb))
            except ftplib.error_perm:
                if self._passive_verb != "EPSV":
                    raise
                self._passive_verb = "PASV"

    def _parse_passive(self, reply: str) -> tuple[str, int]:
        assert self._ftp.sock is not None, "the control connection is open"
        peer = self._ftp.sock.getpeername()
        if self._passive_verb == "EPSV":
            return ftplib.parse229(reply, peer)
        # As ftplib: the address in a 227 is not trusted (NAT, or a server that names another host).
        return peer[0], ftplib.parse227(reply)[1]

    def _prefetch_listener(self) -> None:
        """Ask for the next file's passive listener now; its reply is read when that file starts."""
        try:
            self._send([self._passive_verb])
        except OSError:
            self.broken = True
            return
        self._prefetch = time.monotonic()

    def _forget_listener(self) -> None:
        """Read the reply to a listener asked for and never used, then NOOP past a later notice of its expiry.

        pyftpdlib closes a passive listener unused for 30 s with an unsolicited
        "421 Passive data channel timed out." that leaves the session open:
        replies of 4xx before NOOP's own are taken as such notices. A server
        that is really closing the session ends it, and NOOP then fails.
        """
        with contextlib.suppress(ftplib.error_temp, ftplib.error_perm):
            self._ftp.getresp()
        self._ftp.putcmd("NOOP")
        for _ in range(3):
            try:
                self._ftp.voidresp()
                return
            except ftplib.error_temp:
                continue
            except ftplib.error_perm as exc:  # the connection is out of step, not the file refused
                raise ftplib.error_proto(f"NOOP: {exc}") from exc
        raise ftplib.error_proto("no reply to NOOP after 3 replies of 4xx")

    def _size_reply(self) -> int | None:
        try:
            reply = self._ftp.getresp()
        except (ftplib.error_perm, ftplib.error_temp):
            return None  # no SIZE support, or not a file: RETR says which
        if reply[:3] != "213":
            return None
        with contextlib.suppress(ValueError):
            return int(reply[3:].strip())
        return None

    def _size(self, path: str) -> int | None:
        try:
            return self._ftp.size(path)
        except ftplib.error_perm:
            return None  # no SIZE support, or not a file: RETR says which

    def transfer_ended(self, what: str) -> None:
        """The data connection ended: SourceUnavailable unless the closing reply is 226 or 250."""
        self._close_data(tls_goodbye=True)
        self._last_used = time.monotonic()
        reply = self._closing_reply(self._timeout)
        if reply[:3] not in COMPLETE_REPLIES:
            self.broken = True
            raise SourceUnavailable(f"{what}: the transfer did not complete: {reply}")
        if self._conn.passive:
            self._prefetch_listener()

    def transfer_broken(self, what: str, exc: BaseException | None) -> SourceUnavailable | GatewayError:
        """Give up a transfer that failed (``exc``) or was closed early (None); the connection is spent."""
        self.broken = True
        self._close_data(tls_goodbye=False)
        self._last_used = time.monotonic()
        if exc is None:
            return SourceUnavailable(f"{what}: closed before the end")
        error = translate(exc, f"{what}: the data connection failed")
        if isinstance(exc, TimeoutError):
            return error  # a stalled server has nothing more to say either
        reply = self._closing_reply(min(self._timeout, BREAK_REPLY_WAIT_S))
        return type(error)(f"{error.message}; the server said: {reply}")

    def _closing_reply(self, timeout: float) -> str:
        """The server's reply ending a transfer, or what stood in for it."""
        sock = self._ftp.sock
        try:
            if sock is None:
                raise EOFError
            sock.settimeout(timeout)
            return self._ftp.getresp().strip()
        except (ftplib.error_temp, ftplib.error_perm, ftplib.error_reply, ftplib.error_proto) as exc:
            return str(exc).strip()
        except TimeoutError:
            return f"no reply within {timeout:g} s"
        except (OSError, EOFError) as exc:
            return f"the control connection closed{f' ({exc})' if str(exc) else ''}"
        finally:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.settimeout(self._timeout)

    def _close_data(self, tls_goodbye: bool) -> None:
        data, self._data = self._data, None
        if data is None:
            return
        if tls_goodbye and isinstance(data, ssl.SSLSocket):
            with contextlib.suppress(OSError, ValueError):
                data.unwrap()  # answers the server's close_notify, as ftplib does
        data.close()

    def check(self) -> bool:
        if self.broken:
            return False
        if time.monotonic() - self._last_used < IDLE_CHECK_S:
            return True
        try:
            if self._prefetch is not None:
                self._prefetch = None
                self._forget_listener()  # NOOP among it
            else:
                self._ftp.voidcmd("NOOP")
        except (ftplib.error_perm, *_TRANSPORT_ERRORS):
            self.broken = True
            return False
        self._last_used = time.monotonic()
        return True

    def abort(self) -> None:
        """Cut the data and control connections from another thread: a blocked read ends at once.

        Only ``shutdown`` is called here; the owner's thread closes the sockets.
        """
        self.broken = True
        shutdown(self._data)
        shutdown(self._ftp.sock)

    def close(self) -> None:
        self._close_data(tls_goodbye=False)
        try:
            if not self.broken:
                if self._prefetch is not None:
                    self._prefetch = None
                    self._ftp.getresp()  # the unused listener's reply, so that QUIT's is read as such
                self._ftp.quit()
        except (ftplib.error_perm, *_TRANSPORT_ERRORS):
            pass
        finally:
            self._ftp.close()


def _from_url(url: UrlSettings) -> FtpConnConfig:
    return FtpConnConfig(
        type=url.type,  # type: ignore[arg-type]
        host=url.host,
        password=url.password,
        **present(port=url.port, username=url.username, ca_bundle=url.ca_bundle),
    )


SPEC = ProtocolSpec(
    schemes={"ftp": ("ftp",), "ftps": ("ftp", "ftps")},
    url_types={"ftp": "ftp", "ftps": "ftps"},
    config_class=FtpConnConfig,
    connect=FtpConnection,
    from_url=_from_url,
)
