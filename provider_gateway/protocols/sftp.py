"""SFTP providers: one SSH transport and SFTP session per connection thread (paramiko).

Reads are pipelined with ``SFTPFile.readv`` over windows of 255 KiB pieces.
paramiko's ``prefetch()`` requests the whole rest of the file and keeps what
arrives until it is read, so with an S3 slower than the provider a large
file would sit in memory. Windows bound that to two windows per connection,
and the next window is requested halfway through the current one, so the
pipe never runs dry. Pieces stay small: reading whole parts in one call is
about half as fast.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import paramiko
from paramiko.ssh_exception import IncompatiblePeer

from provider_gateway import ssh_known_hosts
from provider_gateway.config.fields import Fields
from provider_gateway.config.model import SftpConnConfig
from provider_gateway.errors import (
    ConfigError,
    GatewayError,
    InvalidRequest,
    SourceAccessDenied,
    SourceNotFound,
    SourceUnavailable,
)
from provider_gateway.protocols import ssh_identities
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.spec import ProtocolSpec, UrlSettings, present, read_fields
from provider_gateway.urls import url_path

# One SFTP read request per piece, of OpenSSH's largest read (255 KiB): paramiko's 32 KiB
# requests reached ~110 MB/s here, 255 KiB ones ~200 MB/s. A server that answers with less
# is still read correctly (paramiko reads the gap synchronously).
PIECE = 255 * 1024
WINDOW_PIECES = 64  # ~16 MiB per window: at most two buffered per connection
# Fastest first (aes128-gcm measured fastest here); paramiko keeps only what both sides offer.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")


def translate(exc: BaseException, what: str) -> GatewayError:
    """The contract error for a paramiko or socket failure."""
    if isinstance(exc, paramiko.AuthenticationException):
        return SourceAccessDenied(f"{what}: authentication refused: {exc}")
    if isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == errno.ENOENT:
        return SourceNotFound(f"{what}: no such file")
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EACCES:
        return SourceAccessDenied(f"{what}: permission denied")
    return SourceUnavailable(f"{what}: {exc or type(exc).__name__}")


class SftpStream:
    """A remote file read in pipelined windows."""

    def __init__(self, owner: SftpConnection, handle: paramiko.SFTPFile, size: int, offset: int) -> None:
        self._owner = owner
        self._file = handle
        self.size = size
        self._next_start = offset
        self._windows: list[tuple[Iterator[bytes], int]] = []
        self._remainder = b""
        self._pieces_read = 0
        self._open_window()

    def _open_window(self) -> None:
        start = self._next_start
        if start >= self.size:
            return
        end = min(self.size, start + PIECE * WINDOW_PIECES)
        chunks = [(p, min(PIECE, end - p)) for p in range(start, end, PIECE)]
        self._next_start = end
        self._windows.append((self._file.readv(chunks), len(chunks)))

    def read(self, amount: int) -> bytes:
        if not self._remainder:
            self._remainder = self._next_piece()
        piece, self._remainder = self._remainder[:amount], self._remainder[amount:]
        return piece

    def _next_piece(self) -> bytes:
        while self._windows:
            pieces, count = self._windows[0]
            try:
                piece = next(pieces)
            except StopIteration:
                self._windows.pop(0)
                self._pieces_read = 0
                if not self._windows:
                    self._open_window()
                continue
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self._owner.broken = True
                raise translate(exc, "reading") from exc
            self._pieces_read += 1
            if self._pieces_read == count // 2 + 1 and len(self._windows) == 1:
                self._open_window()
            return bytes(piece)
        return b""

    def close(self) -> None:
        if self._owner.broken:
            return  # no close request over a broken session: the connection is replaced, the handle with it
        try:
            self._file.close()
        except (OSError, EOFError, paramiko.SSHException):
            self._owner.broken = True


class SftpConnection:
    """An authenticated SSH transport with one SFTP session."""

    def __init__(self, conn: SftpConnConfig, settings: ConnectionSettings) -> None:
        self._conn = conn
        self._timeout = settings.read_timeout_s
        self.broken = False
        self._sock: socket.socket | None = None
        self._transport = self._connect()
        try:
            sftp = paramiko.SFTPClient.from_transport(self._transport)
            if sftp is None:
                raise paramiko.SSHException("the server refused the SFTP subsystem")
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(self._timeout)
            self._sftp: paramiko.SFTPClient = sftp
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._transport.close()
            raise translate(exc, self._where) from exc

    @property
    def _where(self) -> str:
        return f"sftp://{self._conn.host}:{self._conn.port}"

    def _connect(self) -> paramiko.Transport:
        conn = self._conn
        pinned = self._pinned_keys()
        try:
            sock = socket.create_connection((conn.host, conn.port), timeout=conn.timeout_s)
            # Each SFTP exchange is a small packet: without this, every one waits out a delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise translate(exc, self._where) from exc
        self._sock = sock
        transport = paramiko.Transport(sock)
        try:
            options = transport.get_security_options()
            preferred = [c for c in PREFERRED_CIPHERS if c in options.ciphers]
            options.ciphers = tuple(preferred + [c for c in options.ciphers if c not in preferred])
            if pinned is not None and pinned.trusted:
                # As OpenSSH does: ask for the key types known for this host, so a server that also
                # has keys of other types shows one that can be checked.
                options.key_types = ssh_known_hosts.algorithms_for(pinned.trusted, options.key_types)
            self._start(transport, pinned)
            if pinned is not None:
                self._check_host_key(transport.get_remote_server_key(), pinned)
            self._authenticate(transport)
        except GatewayError:
            transport.close()
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            transport.close()
            raise translate(exc, self._where) from exc
        return transport

    def _start(self, transport: paramiko.Transport, pinned: ssh_known_hosts.HostKeys | None) -> None:
        try:
            transport.start_client(timeout=self._conn.timeout_s)
        except IncompatiblePeer as exc:
            if pinned is None or "host key" not in str(exc):
                raise
            kinds = ", ".join(sorted({k.get_name() for k in pinned.trusted}))
            raise SourceAccessDenied(
                f"{self._where}: host key check failed: the server has no host key of the pinned types ({kinds})"
            ) from exc

    def _check_host_key(self, key: paramiko.PKey, pinned: ssh_known_hosts.HostKeys) -> None:
        offered = f"{key.get_name()} {ssh_known_hosts.fingerprint(key)}"
        if pinned.is_revoked(key):
            raise SourceAccessDenied(f"{self._where}: host key check failed: the server's key {offered} is revoked")
        if not pinned.trusted:
            raise SourceAccessDenied(
                f"{self._where}: host key check failed: the server's key {offered} is not known "
                "(no entry in known_hosts_file/host_key)"
            )
        if not any(ssh_known_hosts.same_key(key, k) for k in pinned.trusted):
            raise SourceAccessDenied(
                f"{self._where}: host key check failed: the server offered {offered}, "
                "which is not the configured key (host key mismatch)"
            )

    def _pinned_keys(self) -> ssh_known_hosts.HostKeys | None:
        """The keys configured for this host; None when host keys are not checked."""
        conn = self._conn
        if conn.insecure_skip_host_key_check:
            return None
        entries: list[ssh_known_hosts.Entry] = []
        if conn.known_hosts_file:
            try:
                with open(conn.known_hosts_file, encoding="utf-8", errors="replace") as file:
                    entries = ssh_known_hosts.parse(file.read())
            except OSError as exc:
                raise SourceAccessDenied(f"{self._where}: cannot read known_hosts_file: {exc.strerror}") from exc
        pinned = ssh_known_hosts.host_keys(entries, conn.host, conn.port)
        if conn.host_key:
            pinned = pinned.with_key(parse_host_key(conn.host_key))
        problem = ssh_known_hosts.unsupported_authority(pinned, conn.host, conn.port)
        if problem:
            raise SourceAccessDenied(f"{self._where}: known_hosts_file {problem}")
        return pinned

    def _authenticate(self, transport: paramiko.Transport) -> None:
        conn = self._conn
        if conn.private_key_file:
            try:
                passphrase = conn.private_key_passphrase.encode() if conn.private_key_passphrase else None
                key = paramiko.PKey.from_path(conn.private_key_file, password=passphrase)  # type: ignore[arg-type] # it wants bytes; the stubs say str
            except (OSError, ValueError, paramiko.SSHException) as exc:
                raise SourceAccessDenied(f"{self._where}: cannot load private_key_file: {exc}") from exc
            try:
                transport.auth_publickey(conn.username, key)
                return
            except paramiko.AuthenticationException:
                if not conn.password:
                    raise
        elif not conn.password:
            ssh_identities.authenticate(transport, conn.username)
            return
        transport.auth_password(conn.username, conn.password or "")

    def open(self, url: str, offset: int = 0) -> SftpStream:
        path = url_path(url)
        try:
            handle = self._sftp.open(path, "rb")
            handle.MAX_REQUEST_SIZE = PIECE
            attributes = handle.stat()
            if attributes.st_mode is not None and stat.S_ISDIR(attributes.st_mode):
                handle.close()
                raise SourceNotFound(f"{path}: is a directory, not a file")
            size = attributes.st_size
            if size is None:
                raise OSError(f"{path}: the server gave no size")
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if not isinstance(exc, OSError) or isinstance(exc, socket.timeout):
                self.broken = True
            raise translate(exc, path) from exc
        return SftpStream(self, handle, size, offset)

    def check(self) -> bool:
        return not self.broken and self._transport.is_active()

    def abort(self) -> None:
        """Shut the socket down under paramiko: a read blocked on it ends with SourceUnavailable."""
        self.broken = True
        if self._sock is not None:
            with contextlib.suppress(OSError):  # already closed
                self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.broken:
            self.abort()  # nothing more is said on a broken session: no close request waits on a stalled link
        try:
            self._sftp.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the session is gone already (dropped, or abort()); the transport is closed below
        finally:
            self._transport.close()
            if self._sock is not None:
                self._sock.close()  # Transport.close() leaves the socket open when its thread has already ended


def parse_host_key(text: str) -> paramiko.PKey:
    """A ``host_key`` setting (``"ssh-ed25519 AAAA..."``, as in known_hosts) as a key."""
    try:
        return ssh_known_hosts.decode_setting(text)
    except ssh_known_hosts.HostKeyError as exc:
        raise SourceAccessDenied(f"host_key: {exc}") from exc


def _read_config(fields: Fields, kind: str) -> SftpConnConfig:
    conn = read_fields(fields, SftpConnConfig, kind)
    if not conn.password and not conn.private_key_file:
        raise ConfigError(f"{fields.key_path('password')}: sftp needs password or private_key_file")
    if not (conn.known_hosts_file or conn.host_key or conn.insecure_skip_host_key_check):
        raise ConfigError(
            f"{fields.key_path('known_hosts_file')}: sftp needs known_hosts_file or host_key "
            "(or insecure_skip_host_key_check: true)"
        )
    problem = None
    if not conn.insecure_skip_host_key_check:
        problem = ssh_known_hosts.settings_problem(conn.known_hosts_file, conn.host_key, conn.host, conn.port)
    if problem:
        raise ConfigError(f"{fields.key_path(problem[0])}: {problem[1]}")
    return conn


def _from_url(url: UrlSettings) -> SftpConnConfig:
    if not url.username:
        raise InvalidRequest("an sftp URL needs a user name (sftp://user@host/path), or use --config")
    known_hosts = url.known_hosts_file or str(Path("~/.ssh/known_hosts").expanduser())
    if not Path(known_hosts).is_file():
        raise InvalidRequest(f"no known_hosts file at {known_hosts} to check the sftp host key against")
    return SftpConnConfig(
        type="sftp",
        host=url.host,
        username=url.username,
        password=url.password,
        private_key_file=url.identity_file,
        known_hosts_file=known_hosts,
        **present(port=url.port),
    )


SPEC = ProtocolSpec(
    schemes={"sftp": ("sftp",)},
    url_types={"sftp": "sftp"},
    config_class=SftpConnConfig,
    connect=SftpConnection,
    from_url=_from_url,
    read_config=_read_config,
)
