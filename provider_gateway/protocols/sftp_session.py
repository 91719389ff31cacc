"""One SFTP session that several files use at once: requests pipelined, replies routed by request id.

paramiko's ``SFTPClient`` is safe for one synchronous request at a time only:
a thread whose ``_read_response`` reads the reply to another thread's
synchronous request drops it. Here one reader thread per session reads every
reply (``SFTPClient._read_response``, as paramiko's own read-ahead in
``SFTPFile`` does) and hands it to the :class:`Reply` registered under its
request id; any thread may send (``SFTPClient._async_request``, under a lock
of the session's, so that two requests never interleave on the channel).

Failures: an error status fails only the request it answers. A broken
session (EOF, a reset, :meth:`SftpSession.abort`, or no reply at all for
``read_timeout_s`` while a request waits) fails every outstanding
:class:`Reply` at once with SourceUnavailable, and every later request too.

Memory: the server sends only what was asked for, and the reader thread
empties the SSH channel as it arrives, so what a session holds is what its
files have asked for and not yet taken. Read-ahead is lent from one budget
per session, :data:`READ_BUDGET` (32 MiB), shared by every file in flight;
a file may always keep one piece (255 KiB) in flight beyond it, and keeps at
most one piece it is handing out in slices, so a session holds at most
``READ_BUDGET + 2 x 255 KiB x files in flight`` of file data (about 34 MiB with
4 files). The SSH channel window (:data:`CHANNEL_WINDOW`) is larger than
anything a session can ask for, so the window never limits a distant
provider; it holds no memory of its own beyond the replies asked for.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from collections.abc import Callable

import paramiko
from paramiko.message import Message
from paramiko.sftp import CMD_CLOSE, CMD_HANDLE

from provider_gateway.errors import GatewayError, SourceAccessDenied, SourceNotFound, SourceUnavailable

PIECE = 255 * 1024
"""Bytes per read request: OpenSSH's largest read (paramiko's 32 KiB reached ~110 MB/s here, 255 KiB ~200)."""
READ_BUDGET = 32 * 1024 * 1024
"""Read-ahead of one session, in bytes asked for and not yet taken, shared by its files in flight."""
FILE_AHEAD = READ_BUDGET // 2
"""The most read-ahead one file takes from the budget, so that one slow reader cannot hold all of it."""
CHANNEL_WINDOW = 2 * READ_BUDGET
"""SSH channel window: above what a session can have in flight, so only the budget bounds a far link."""
CHANNEL_MAX_PACKET = 256 * 1024
"""SSH channel packet size asked of the server: one 255 KiB read reply per packet, not eight."""


def translate(exc: BaseException, what: str) -> GatewayError:
    """The contract error for a paramiko or socket failure, or an SFTP error status."""
    if isinstance(exc, paramiko.AuthenticationException):
        return SourceAccessDenied(f"{what}: authentication refused: {exc}")
    if isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == errno.ENOENT:
        return SourceNotFound(f"{what}: no such file")
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EACCES:
        return SourceAccessDenied(f"{what}: permission denied")
    return SourceUnavailable(f"{what}: {exc or type(exc).__name__}")


class Reply:
    """The answer to one request, filled by the session's reader thread."""

    __slots__ = (
        "__weakref__",
        "_arrived",
        "_done",
        "_session",
        "cancelled",
        "error",
        "kind",
        "msg",
        "on_orphan",
        "reserved",
        "sent_at",
    )

    def __init__(self, session: SftpSession, reserved: int, on_orphan: Callable[[int, Message], None] | None) -> None:
        self._session = session
        self._done = threading.Event()
        self._arrived = False
        self.kind = 0
        self.msg: Message | None = None
        self.error: SourceUnavailable | None = None
        self.cancelled = False
        self.reserved = reserved
        self.on_orphan = on_orphan
        self.sent_at = time.monotonic()

    def _async_response(self, t: int, msg: Message, num: int) -> None:
        """Called by ``SFTPClient._read_response`` on the reader thread with this request's answer."""
        self._session._arrive(self, t, msg)


class SftpSession:
    """An SFTP session whose requests any thread may send and whose replies one thread reads.

    ``where`` names the server in messages; ``timeout_s`` is how long a
    request may wait while the server sends nothing at all before the
    session is declared stalled and broken.
    """

    def __init__(self, sftp: paramiko.SFTPClient, sock: socket.socket | None, where: str, timeout_s: float) -> None:
        self._sftp = sftp
        self._sock = sock
        self._where = where
        self._timeout = timeout_s
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pending: set[Reply] = set()  # strong references: paramiko keeps only weak ones
        self._orphans: list[bytes] = []  # handles opened for files given up before the handle arrived
        self._in_use = 0
        self._last_reply = time.monotonic()
        self._error: SourceUnavailable | None = None
        self._closing = False
        self._reader = threading.Thread(target=self._read_replies, name="sftp-replies", daemon=True)
        self._reader.start()

    @property
    def where(self) -> str:
        return self._where

    @property
    def usable(self) -> bool:
        """Whether the session still works (no break, no abort, not closed)."""
        return self._error is None

    # --- requests ---------------------------------------------------------------------------

    def send(
        self, t: int, *args: object, reserved: int = 0, on_orphan: Callable[[int, Message], None] | None = None
    ) -> Reply:
        """Send one request; its :class:`Reply` is filled when the answer arrives.

        ``reserved`` bytes of read budget are held until the reply is taken
        (:meth:`take`) or dropped (:meth:`cancel`). ``on_orphan`` is called
        on the reader thread with a reply that arrives after it was cancelled.
        """
        reply = Reply(self, reserved, on_orphan)
        with self._send_lock:
            self._raise_if_broken()
            orphans, self._orphans = self._orphans, []
            try:
                for handle in orphans:
                    self._send_locked(Reply(self, 0, None), CMD_CLOSE, handle)
                self._send_locked(reply, t, *args)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self.fail(SourceUnavailable(f"{self._where}: sending a request: {exc or type(exc).__name__}"))
                self._raise_if_broken()
        return reply

    def _send_locked(self, reply: Reply, t: int, *args: object) -> None:
        with self._lock:
            self._raise_if_broken()  # else a reply added after fail() took the others would wait in vain
            self._pending.add(reply)
        self._sftp._async_request(reply, t, *args)  # type: ignore[attr-defined]

    def wait(self, reply: Reply) -> tuple[int, Message]:
        """The reply's type and message; SourceUnavailable if it failed or the session stalled."""
        poll = min(max(self._timeout / 4, 0.05), 5.0)
        while not reply._done.wait(poll):
            with self._lock:
                idle = time.monotonic() - max(self._last_reply, reply.sent_at)
            if idle >= self._timeout:
                self.fail(SourceUnavailable(f"{self._where}: no reply from the server in {self._timeout:g} s"))
        if reply.error is not None:
            raise SourceUnavailable(reply.error.message)
        assert reply.msg is not None
        return reply.kind, reply.msg

    def status_error(self, msg: Message, what: str) -> GatewayError | EOFError:
        """The error an SFTP status reply stands for: EOFError for end of file, else the contract's."""
        try:
            self._sftp._convert_status(msg)  # type: ignore[attr-defined]
        except EOFError as exc:
            return exc
        except OSError as exc:
            return translate(exc, what)
        return SourceUnavailable(f"{what}: the server answered OK where data was due")

    def take(self, reply: Reply) -> None:
        """The reply's data has been taken: its read budget goes back to the session."""
        with self._lock:
            self._release(reply)

    def cancel(self, reply: Reply, error: SourceUnavailable) -> None:
        """Give up on a request: a thread waiting on it gets ``error``; its answer, when it comes, is dropped."""
        orphan = None
        with self._lock:
            if reply._arrived:  # here already, and never taken: a handle in it is closed
                self._release(reply)
                orphan, reply.on_orphan = reply.on_orphan, None
            else:
                reply.cancelled = True
                if reply.error is None:
                    reply.error = error
        if orphan is not None and reply.msg is not None:
            orphan(reply.kind, reply.msg)
        reply._done.set()

    def reserve(self, amount: int, held: int) -> bool:
        """Take ``amount`` bytes of read budget for a file that holds ``held``; False when there is none to lend.

        A file holding nothing always gets its one piece, so that no file waits on another's reader.
        """
        with self._lock:
            if held and (held + amount > FILE_AHEAD or self._in_use + amount > READ_BUDGET):
                return False
            self._in_use += amount
            return True

    @property
    def budget_in_use(self) -> int:
        """Bytes of read budget lent out now."""
        with self._lock:
            return self._in_use

    def _release(self, reply: Reply) -> None:
        self._in_use -= reply.reserved
        reply.reserved = 0

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise SourceUnavailable(self._error.message)

    # --- the reader thread ------------------------------------------------------------------

    def _read_replies(self) -> None:
        try:
            while True:
                self._sftp._read_response()  # type: ignore[attr-defined] # one packet, handed to its Reply
        except Exception as exc:  # noqa: BLE001 - whatever ends the reads ends the session
            what = "closed" if self._closing else f"the SFTP session ended: {exc or type(exc).__name__}"
            self.fail(SourceUnavailable(f"{self._where}: {what}"))

    def _arrive(self, reply: Reply, t: int, msg: Message) -> None:
        with self._lock:
            self._pending.discard(reply)
            self._last_reply = time.monotonic()
            if reply.error is not None:  # cancelled, or failed with the session
                self._release(reply)
                orphan = reply.on_orphan if reply.cancelled else None
            else:
                reply._arrived, reply.kind, reply.msg, orphan = True, t, msg, None
        if orphan is not None:
            orphan(t, msg)
        reply._done.set()

    def close_orphan(self, t: int, msg: Message) -> None:
        """``on_orphan`` for an open request: a handle that nobody will read is closed with the next request."""
        if t == CMD_HANDLE:
            with self._lock:
                self._orphans.append(msg.get_binary())

    # --- the end ----------------------------------------------------------------------------

    def fail(self, error: SourceUnavailable) -> None:
        """Break the session: every request outstanding and every later one fails with ``error``."""
        with self._lock:
            if self._error is None:
                self._error = error
            pending, self._pending = self._pending, set()
            for reply in pending:
                if reply.error is None:
                    reply.error = error
                self._release(reply)
        for reply in pending:
            reply._done.set()
        if not self._closing:
            self._shut_socket()  # the transport and the reader thread end, whatever they wait on

    def abort(self) -> None:
        """Cut the session from any thread without blocking: every wait in it ends with SourceUnavailable."""
        self.fail(SourceUnavailable(f"{self._where}: the connection was aborted"))
        self._shut_socket()

    def _shut_socket(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):  # already closed
                self._sock.shutdown(socket.SHUT_RDWR)

    def close(self, transport: paramiko.Transport) -> None:
        """End the session and its transport; nothing waits on a broken or stalled link."""
        if self._error is not None:
            self._shut_socket()  # nothing more is said on a broken session
        self._closing = True
        try:
            self._sftp.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the session is gone already (dropped, or aborted); the transport is closed below
        finally:
            transport.close()
            if self._sock is not None:
                self._sock.close()  # Transport.close() leaves the socket open when its thread has already ended
            self.fail(SourceUnavailable(f"{self._where}: the connection is closed"))
            self._reader.join(5)
