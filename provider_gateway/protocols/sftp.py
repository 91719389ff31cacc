"""SFTP providers: one SSH transport and one SFTP session per connection, several files in flight in it.

:class:`SftpConnection` is a :class:`~provider_gateway.protocols.base.SharedConnection`:
each :meth:`SftpConnection.lane` reads one file at a time over the connection's
one session, and the requests of every lane interleave in it
(``sftp_session``: one reader thread routes each reply to its request). A file
costs one round trip to open and stat, then its reads stream a window ahead
(``sftp_stream``); its close is not waited for. ``files_in_flight`` in the
provider's ``conn_config`` says how many lanes a connection is given.

Memory per connection: at most ``READ_BUDGET`` (32 MiB) of read-ahead shared
by its lanes, plus two 255 KiB pieces per lane (see ``sftp_session``).
"""

from __future__ import annotations

import socket
import threading
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
)
from provider_gateway.protocols import ssh_identities
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.sftp_session import (
    CHANNEL_MAX_PACKET,
    CHANNEL_WINDOW,
    PIECE,
    READ_BUDGET,
    SftpSession,
    translate,
)
from provider_gateway.protocols.sftp_stream import SftpStream
from provider_gateway.protocols.spec import ProtocolSpec, UrlSettings, present, read_fields
from provider_gateway.urls import url_path

# Fastest first (aes128-gcm measured fastest here); paramiko keeps only what both sides offer.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")

__all__ = ["PIECE", "READ_BUDGET", "SftpConnection", "SftpLane", "SftpStream", "parse_host_key", "translate"]


class SftpLane:
    """One file at a time over a :class:`SftpConnection`'s session, beside the other lanes."""

    def __init__(self, owner: SftpConnection) -> None:
        self._owner = owner
        self._lock = threading.Lock()
        self._stream: SftpStream | None = None

    def open(self, url: str, offset: int = 0) -> SftpStream:
        stream = SftpStream(self._owner.session, url_path(url), offset)
        with self._lock:
            self._stream = stream  # before any request: abort() reaches an open on its way
        return stream.open()

    def check(self) -> bool:
        return self._owner.check()

    def abort(self) -> None:
        """Fail this lane's file only; the session and the other lanes go on."""
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.abort()

    def close(self) -> None:
        """Release the lane (its file, if still open); the connection stays."""
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()


class SftpConnection:
    """An authenticated SSH transport with one SFTP session, shared by its lanes (a ``SharedConnection``).

    Used as a plain ``Connection`` (``open``), it serves one file at a time
    through a lane of its own; its ``abort()`` breaks the whole session.
    """

    def __init__(self, conn: SftpConnConfig, settings: ConnectionSettings) -> None:
        self._conn = conn
        self._sock: socket.socket | None = None
        self._transport = self._connect()
        try:
            sftp = paramiko.SFTPClient.from_transport(
                self._transport, window_size=CHANNEL_WINDOW, max_packet_size=CHANNEL_MAX_PACKET
            )
            if sftp is None:
                raise paramiko.SSHException("the server refused the SFTP subsystem")
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(None)  # one reader thread waits on it; each request has its own deadline
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._transport.close()
            raise translate(exc, self._where) from exc
        self.session = SftpSession(sftp, self._sock, self._where, settings.read_timeout_s)
        self._own = SftpLane(self)

    def lane(self) -> SftpLane:
        """One more file in flight over this connection's session."""
        return SftpLane(self)

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
        transport = paramiko.Transport(
            sock, default_window_size=CHANNEL_WINDOW, default_max_packet_size=CHANNEL_MAX_PACKET
        )
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
        return self._own.open(url, offset)

    def check(self) -> bool:
        return self.session.usable and self._transport.is_active()

    def abort(self) -> None:
        """Cut the session under every lane: each read blocked in it ends with SourceUnavailable."""
        self.session.abort()

    def close(self) -> None:
        self.session.close(self._transport)


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
