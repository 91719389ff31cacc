"""One remote file read over a shared :class:`~provider_gateway.protocols.sftp_session.SftpSession`.

Nothing waits for what it need not: OPEN and STAT (by path) are sent
together, the first READ as soon as the handle arrives, the rest once the
size is known, each new one as a piece is taken, and CLOSE is sent and not
waited for. Reads stay ahead of the reader by up to ``FILE_AHEAD`` bytes,
as far as the session's read budget allows (see ``sftp_session``).
"""

from __future__ import annotations

import contextlib
import stat
import threading
from collections import deque
from collections.abc import Callable

from paramiko.message import Message
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_READ,
    CMD_STAT,
    CMD_STATUS,
    SFTP_FLAG_READ,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

from provider_gateway.errors import GatewayError, SourceNotFound, SourceUnavailable
from provider_gateway.protocols.sftp_session import PIECE, Reply, SftpSession


class SftpStream:
    """A remote file at ``path``, read from ``offset`` on; :meth:`open` before anything else."""

    def __init__(self, session: SftpSession, path: str, offset: int) -> None:
        self._session = session
        self._path = path
        self._lock = threading.Lock()
        self._live: set[Reply] = set()  # sent and not yet taken: what abort() gives up
        self._error: SourceUnavailable | None = None
        self._reads: deque[tuple[int, int, Reply]] = deque()  # (offset, length asked, reply), in file order
        self._held = 0  # read budget this file holds
        self._handle: bytes | None = None
        self._closed = False
        self._failed: GatewayError | None = None
        self.size = 0
        self._position = offset  # the next byte to take from a reply
        self._next = offset  # the next byte to ask for
        self._remainder = b""

    def open(self) -> SftpStream:
        """Open the file and stat it in one round trip, and start reading; the contract's errors."""
        name = self._path.encode("utf-8")
        opening = self._send(CMD_OPEN, name, SFTP_FLAG_READ, SFTPAttributes(), on_orphan=self._session.close_orphan)
        try:
            stating = self._send(CMD_STAT, name)
        except GatewayError:
            self.close()
            raise
        try:
            self._handle = self._expect(opening, CMD_HANDLE).get_binary()
            self._ask(self._next, PIECE)  # before the size is known: the stat's answer is already on its way
            attributes = SFTPAttributes._from_msg(self._expect(stating, CMD_ATTRS))  # type: ignore[attr-defined]
            if attributes.st_mode is not None and stat.S_ISDIR(attributes.st_mode):
                raise SourceNotFound(f"{self._path}: is a directory, not a file")
            if attributes.st_size is None:
                raise SourceUnavailable(f"{self._path}: the server gave no size")
            self.size = attributes.st_size
            self._fill()
        except GatewayError:
            self.close()
            raise
        return self

    def read(self, amount: int) -> bytes:
        """Up to ``amount`` bytes; ``b""`` only at the size the stat gave; after a failure, that failure again."""
        if self._failed is not None:
            raise type(self._failed)(self._failed.message)
        if not self._remainder:
            try:
                self._remainder = self._next_piece()
            except GatewayError as exc:
                self._failed = exc  # the bytes of the failed read are not coming: none after them may be handed out
                raise
        piece, self._remainder = self._remainder[:amount], self._remainder[amount:]
        return piece

    def _next_piece(self) -> bytes:
        if self._position >= self.size:
            return b""
        self._fill()
        offset, length, reply = self._reads[0]
        try:
            kind, msg = self._wait(reply)
        finally:
            self._reads.popleft()
            self._held -= length
            self._session.take(reply)
        want = min(length, self.size - offset)
        if kind == CMD_STATUS:
            error = self._session.status_error(msg, self._path)
            if isinstance(error, EOFError):
                raise SourceUnavailable(f"{self._path}: the file ended at byte {offset} of {self.size}")
            raise error
        if kind != CMD_DATA:
            raise SourceUnavailable(f"{self._path}: the server answered a read with packet type {kind}")
        data = msg.get_string()[:want]
        if not data:
            raise SourceUnavailable(f"{self._path}: the server sent no bytes at {offset} of {self.size}")
        if len(data) < want:  # a short read: the gap is asked for first, beyond the budget
            start, missing = offset + len(data), want - len(data)
            self._session.reserve(missing, 0)
            self._held += missing
            self._reads.appendleft((start, missing, self._read(start, missing)))
        self._position = offset + len(data)
        self._fill()
        return data

    def _fill(self) -> None:
        """Ask for more while the file is short of its read-ahead and the session has budget."""
        while self._next < self.size:
            length = min(PIECE, self.size - self._next)
            if not self._ask(self._next, length):
                return

    def _ask(self, offset: int, length: int) -> bool:
        if not self._session.reserve(length, self._held):
            return False
        self._held += length
        self._reads.append((offset, length, self._read(offset, length)))
        self._next = offset + length
        return True

    def _read(self, offset: int, length: int) -> Reply:
        assert self._handle is not None
        return self._send(CMD_READ, self._handle, int64(offset), length, reserved=length)

    # --- requests of this file ----------------------------------------------------------------

    def _send(
        self, t: int, *args: object, reserved: int = 0, on_orphan: Callable[[int, Message], None] | None = None
    ) -> Reply:
        self._raise_if_given_up()
        reply = self._session.send(t, *args, reserved=reserved, on_orphan=on_orphan)
        with self._lock:
            if self._error is None:
                self._live.add(reply)
                return reply
            error = self._error
        self._session.cancel(reply, error)
        raise SourceUnavailable(error.message)

    def _wait(self, reply: Reply) -> tuple[int, Message]:
        kind, msg = self._session.wait(reply)
        with self._lock:
            if reply not in self._live:  # abort() took it first (and closed a handle in it)
                self._raise_if_given_up()
            self._live.discard(reply)
        return kind, msg

    def _expect(self, reply: Reply, kind: int) -> Message:
        got, msg = self._wait(reply)
        if got == CMD_STATUS:
            error = self._session.status_error(msg, self._path)
            raise error if isinstance(error, GatewayError) else SourceUnavailable(f"{self._path}: end of file")
        if got != kind:
            raise SourceUnavailable(f"{self._path}: the server answered with packet type {got}, not {kind}")
        return msg

    def _raise_if_given_up(self) -> None:
        if self._error is not None:
            raise SourceUnavailable(self._error.message)

    def _give_up(self, error: SourceUnavailable) -> None:
        with self._lock:
            if self._error is None:
                self._error = error
            live, self._live = self._live, set()
        for reply in live:
            self._session.cancel(reply, error)

    def abort(self) -> None:
        """Fail this file only, from any thread: a read blocked on it raises at once; the session goes on."""
        self._give_up(SourceUnavailable(f"{self._path}: the transfer was aborted"))

    def close(self) -> None:
        """Drop what is still on its way and close the handle, without waiting for the answer."""
        if self._closed:
            return
        self._closed = True
        self._give_up(SourceUnavailable(f"{self._path}: the file is closed"))
        self._reads.clear()
        self._remainder = b""
        if self._handle is not None and self._session.usable:
            with contextlib.suppress(SourceUnavailable):  # the session broke meanwhile: its handles went with it
                self._session.send(CMD_CLOSE, self._handle)  # the session drops the answer
