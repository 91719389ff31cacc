"""An FTP (or FTPS) server on loopback for the demo and the tests (pyftpdlib).

It serves a directory and counts what a provider operator would watch:
control sessions in all, the most open at once, logins and the commands
received. It can drop every control connection, as a provider restarting
would, and break things on purpose: abort a transfer partway, go silent,
refuse SIZE, or never send a reply (a transfer's 226, say).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from provider_gateway.local.tally import ConnectionTally


class FileFTPServer:
    """pyftpdlib serving ``root`` to ``user``/``password`` (and anonymous if asked)."""

    def __init__(
        self,
        root: Path,
        user: str = "provider",
        password: str = "secret",  # noqa: S107 - a loopback test server
        tls_cert: Path | None = None,
        anonymous: bool = False,
    ) -> None:
        self.root = root
        self.user = user
        self.password = password
        self.connections = ConnectionTally()
        self.logins = 0
        self.retrieved: list[str] = []
        self.bytes_served = 0
        # Fault injection: file name -> fractions of the file at which to abort the transfer, once each.
        self.resets: dict[str, list[float]] = {}
        # Fault injection: file name -> fraction at which the whole server goes silent until ``release`` is set.
        self.stalls: dict[str, float] = {}
        self.release = threading.Event()
        # Every command line received, in order (PASS without its argument).
        self.commands: list[str] = []
        # False: SIZE is refused (550), as servers that deny it do.
        self.size_allowed = True
        # Fault injection: reply codes never sent (say "226": a transfer whose end is never confirmed).
        self.withheld_replies: set[str] = set()
        self._lock = threading.Lock()
        self._handlers: set[Any] = set()
        authorizer = DummyAuthorizer()
        authorizer.add_user(user, password, str(root), perm="elr")
        if anonymous:
            authorizer.add_anonymous(str(root), perm="elr")
        handler = self._handler_class(tls_cert)
        handler.authorizer = authorizer
        handler.auth_failed_timeout = 0.1
        handler.banner = "provider-gateway test FTP"
        handler.passive_ports = None
        quiet = logging.getLogger("pyftpdlib")  # it logs every command at INFO otherwise
        if not quiet.handlers:
            quiet.addHandler(logging.NullHandler())
        quiet.setLevel(logging.WARNING)
        # One event loop per server (not pyftpdlib's process-wide one), so servers do not share it.
        self._server = FTPServer(("127.0.0.1", 0), handler, ioloop=IOLoop())
        self._server.max_cons = 64
        self._thread: threading.Thread | None = None

    def _handler_class(self, tls_cert: Path | None) -> type[FTPHandler]:
        base: type[FTPHandler]
        if tls_cert is not None:
            from pyftpdlib.handlers import TLS_FTPHandler

            base = TLS_FTPHandler
        else:
            base = FTPHandler
        server = self

        class FaultyFS(AbstractedFS):  # type: ignore[misc]
            def open(self, filename: str, mode: str) -> Any:
                return _FaultyFile(super().open(filename, mode), server)

        class CountingHandler(base):  # type: ignore[misc]
            abstracted_fs = FaultyFS
            use_sendfile = False  # reads go through _FaultyFile

            def on_connect(self) -> None:
                server._opened(self)

            def on_disconnect(self) -> None:
                server._closed(self)

            def on_login(self, username: str) -> None:
                with server._lock:
                    server.logins += 1

            def on_file_sent(self, file: str) -> None:
                server.retrieved.append(file)

            def respond(self, resp: str, *args: Any, **kwargs: Any) -> None:
                if resp[:3] not in server.withheld_replies:
                    super().respond(resp, *args, **kwargs)

            def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
                server.commands.append("PASS" if cmd == "PASS" else line)
                if cmd == "SIZE" and not server.size_allowed:
                    self.respond("550 SIZE not allowed here.")
                    return
                super().pre_process_command(line, cmd, arg)

        if tls_cert is not None:
            CountingHandler.certfile = str(tls_cert)
            CountingHandler.tls_control_required = True
            CountingHandler.tls_data_required = True
        return CountingHandler

    def _opened(self, handler: Any) -> None:
        with self._lock:
            self._handlers.add(handler)
            self.connections.opened()

    def _closed(self, handler: Any) -> None:
        with self._lock:
            if handler in self._handlers:
                self._handlers.discard(handler)
                self.connections.closed()

    @property
    def port(self) -> int:
        return int(self._server.address[1])

    def drop_sessions(self) -> int:
        """Close every control connection now; returns how many were closed."""
        with self._lock:
            handlers = list(self._handlers)
        for handler in handlers:
            # Shut the socket from here: the server's loop sees EOF at once and closes the session.
            # (for FTPS the socket is a pyOpenSSL Connection: its TCP shutdown is sock_shutdown)
            raw = handler.socket
            with contextlib.suppress(OSError):
                getattr(raw, "sock_shutdown", raw.shutdown)(socket.SHUT_RDWR)
        return len(handlers)

    def start(self) -> FileFTPServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="ftp-provider", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.close_all()

    def __enter__(self) -> FileFTPServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _FaultyFile:
    """A served file that counts what it gives out and fails where a fault is planned."""

    def __init__(self, file: Any, server: FileFTPServer) -> None:
        self._file = file
        self._server = server
        self._name = Path(file.name).name
        self._size = os.fstat(file.fileno()).st_size
        self.name = file.name
        self.closed = False

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._file.seek(offset, whence))

    def tell(self) -> int:
        return int(self._file.tell())

    def read(self, amount: int = -1) -> bytes:
        position = self._file.tell()
        data: bytes = self._file.read(amount)
        stall = self._server.stalls.get(self._name)
        if stall is not None and position < int(self._size * stall) <= position + len(data):
            del self._server.stalls[self._name]
            self._server.release.wait(60)  # the server's only thread: nothing moves until released
        pending = self._server.resets.get(self._name, [])
        for fraction in sorted(pending):
            at = int(self._size * fraction)
            if position < at <= position + len(data):
                pending.remove(fraction)
                self._server.bytes_served += at - position
                raise ConnectionAbortedError(f"injected fault at byte {at}")
        self._server.bytes_served += len(data)
        return data

    def close(self) -> None:
        self.closed = True
        self._file.close()
