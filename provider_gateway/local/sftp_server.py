"""An in-process SFTP server on loopback (paramiko), serving a directory read-only.

The demo's SFTP provider, and the tests' stand-in where OpenSSH's sshd is not
installed. It counts sessions as a provider operator would.
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

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)
from paramiko.sftp import SFTP_NO_SUCH_FILE, SFTP_OK, SFTP_PERMISSION_DENIED

from provider_gateway.local.tally import ConnectionTally

_SERVER_LOG = "provider_gateway.local.sftp_server"
logging.getLogger(_SERVER_LOG).setLevel(logging.CRITICAL)


class _ReadOnlyHandle(paramiko.SFTPHandle):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.readfile = open(path, "rb")  # noqa: SIM115 - paramiko closes it through the handle

    def stat(self) -> paramiko.SFTPAttributes | int:
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))


class _DirectorySFTP(paramiko.SFTPServerInterface):
    def __init__(self, server: Any, *args: Any, root: Path, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        self._root = root.resolve()

    def _local(self, path: str) -> Path:
        local = (self._root / path.lstrip("/")).resolve()
        if not local.is_relative_to(self._root):
            raise PermissionError(path)
        return local

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> paramiko.SFTPHandle | int:
        if flags & (os.O_WRONLY | os.O_RDWR):
            return SFTP_PERMISSION_DENIED
        try:
            return _ReadOnlyHandle(str(self._local(path)))
        except FileNotFoundError:
            return SFTP_NO_SUCH_FILE
        except (PermissionError, IsADirectoryError):
            return SFTP_PERMISSION_DENIED

    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(self._local(path).stat())
        except FileNotFoundError:
            return SFTP_NO_SUCH_FILE

    lstat = stat

    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes] | int:
        try:
            folder = self._local(path)
            return [paramiko.SFTPAttributes.from_stat(p.stat(), p.name) for p in folder.iterdir()]
        except FileNotFoundError:
            return SFTP_NO_SUCH_FILE

    def canonicalize(self, path: str) -> str:
        return "/" + str(Path("/", path).resolve()).lstrip("/")

    def session_ended(self) -> None:
        return None

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        return SFTP_OK


class _Auth(paramiko.ServerInterface):
    def __init__(self, owner: InProcessSFTPServer) -> None:
        self._owner = owner

    def check_auth_password(self, username: str, password: str) -> int:
        ok = (username, password) == (self._owner.user, self._owner.password)
        if ok:
            self._owner._login()
        return AUTH_SUCCESSFUL if ok else AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        allowed = self._owner.authorized_key
        ok = username == self._owner.user and allowed is not None and key.asbytes() == allowed.asbytes()
        if ok:
            self._owner._login()
        return AUTH_SUCCESSFUL if ok else AUTH_FAILED

    def get_allowed_auths(self, username: str) -> str:
        return "password,publickey"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return OPEN_SUCCEEDED if kind == "session" else OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class InProcessSFTPServer:
    """Serves ``root`` over SFTP to ``user`` (password, or ``authorized_key``)."""

    def __init__(
        self,
        root: Path,
        user: str = "provider",
        password: str = "secret",  # noqa: S107 - a loopback test server
        authorized_key: paramiko.PKey | None = None,
    ) -> None:
        self.root = root
        self.user = user
        self.password = password
        self.authorized_key = authorized_key
        self.host_key = paramiko.Ed25519Key.from_private_key(_fresh_ed25519())
        self.connections = ConnectionTally()
        self.logins = 0
        self._lock = threading.Lock()
        self._transports: list[paramiko.Transport] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def host_key_line(self) -> str:
        """The server's key as ``conn_config.host_key`` takes it."""
        return f"{self.host_key.get_name()} {self.host_key.get_base64()}"

    def _login(self) -> None:
        with self._lock:
            self.logins += 1

    def start(self) -> InProcessSFTPServer:
        threading.Thread(target=self._accept, name="sftp-provider", daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        transport = paramiko.Transport(sock)
        # Server side: a client hanging up is routine here, not an error to print.
        transport.set_log_channel(_SERVER_LOG)
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _DirectorySFTP, root=self.root)
        with self._lock:
            self._transports.append(transport)
            self.connections.opened()
        try:
            transport.start_server(server=_Auth(self))
            while transport.is_active() and not self._stopping.is_set():
                transport.join(0.5)
        except (paramiko.SSHException, EOFError, OSError):
            pass
        finally:
            transport.close()
            with self._lock:
                self.connections.closed()

    def drop_sessions(self) -> int:
        """Close every SSH connection now; returns how many were open."""
        with self._lock:
            live = [t for t in self._transports if t.is_active()]
        for transport in live:
            transport.close()
        return len(live)

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop_sessions()

    def __enter__(self) -> InProcessSFTPServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _fresh_ed25519() -> Any:
    """A new Ed25519 private key, as a file-like object paramiko can read."""
    import io

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return io.StringIO(pem.decode())
