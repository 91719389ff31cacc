"""Typed, frozen configuration of the providers a gateway serves.

Secrets are kept out of ``repr`` so that logging a config object never shows
them; :func:`masked` renders a config for people with secrets replaced.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from provider_gateway.urls import DEFAULT_PORTS

if TYPE_CHECKING:
    from provider_gateway.transfer.copy import CopyOptions

FailureMode = Literal["task", "per_file"]

# Time between a lease holder cutting its connection and the earliest moment another gateway may take the slot.
FENCE_MARGIN_S = 2.0

SECRET_MASK = "****"  # noqa: S105 - the mask shown instead of a secret


def field_default(cls: type[Any], name: str) -> Any:
    """The default of the dataclass field ``cls.name``; :data:`dataclasses.MISSING` when it is required."""
    found = next(f for f in dataclasses.fields(cls) if f.name == name)
    if found.default_factory is not dataclasses.MISSING:
        return found.default_factory()
    return found.default


def secret() -> Any:
    """A dataclass field holding a secret: hidden from repr, masked by :func:`masked`."""
    return field(default=None, repr=False, metadata={"secret": True})


@dataclass(frozen=True)
class HttpConnConfig:
    """``conn_config`` of an ``http`` or ``https`` provider."""

    type: Literal["http", "https"]
    host: str | None = None
    username: str | None = None
    password: str | None = secret()
    token: str | None = secret()
    headers: dict[str, str] = field(default_factory=dict, repr=False, metadata={"secret": True})
    verify_tls: bool = True
    ca_bundle: str | None = None
    login_hosts: tuple[str, ...] = ()
    redirect_hosts: tuple[str, ...] = ()
    timeout_s: float = 30.0


@dataclass(frozen=True)
class FtpConnConfig:
    """``conn_config`` of an ``ftp`` or ``ftps`` (explicit TLS) provider."""

    type: Literal["ftp", "ftps"]
    host: str
    port: int = DEFAULT_PORTS["ftp"]
    username: str = "anonymous"
    password: str | None = secret()
    passive: bool = True
    timeout_s: float = 30.0
    verify_tls: bool = True  # ftps: the certificate and host name, checked before logging in
    ca_bundle: str | None = None  # ftps: CA certificates (PEM) to verify against instead of the system's


@dataclass(frozen=True)
class SftpConnConfig:
    """``conn_config`` of an ``sftp`` provider."""

    type: Literal["sftp"]
    host: str
    username: str
    port: int = DEFAULT_PORTS["sftp"]
    password: str | None = secret()
    private_key_file: str | None = None
    private_key_passphrase: str | None = secret()
    known_hosts_file: str | None = None
    host_key: str | None = None
    insecure_skip_host_key_check: bool = False
    timeout_s: float = 30.0
    files_in_flight: int = 4  # files read at once over each connection's one SSH session (docs/performance.md)


@dataclass(frozen=True)
class GridftpConnConfig:
    """``conn_config`` of a ``gridftp`` provider (``gsiftp://`` and ``ftp://`` URLs).

    ``gsiftp://`` authenticates with an X.509 credential: ``x509_user_proxy``,
    or ``x509_user_cert`` with ``x509_user_key``, or whatever the standard
    ``X509_*`` environment variables name. ``ftp://`` logs in with
    ``username``/``password``, anonymously without them.
    """

    type: Literal["gridftp"]
    host: str
    port: int = DEFAULT_PORTS["gsiftp"]
    username: str | None = None
    password: str | None = secret()
    x509_user_proxy: str | None = None
    x509_user_cert: str | None = None
    x509_user_key: str | None = None
    x509_cert_dir: str | None = None
    data_channel_auth: bool = True


ConnConfig = HttpConnConfig | FtpConnConfig | SftpConnConfig | GridftpConnConfig

SECRET_KEYS = frozenset(
    f.name
    for cls in (HttpConnConfig, FtpConnConfig, SftpConnConfig, GridftpConnConfig)
    for f in dataclasses.fields(cls)
    if f.metadata.get("secret")
)
"""The ``conn_config`` keys that hold secrets: never shown, in any message."""


@dataclass(frozen=True)
class LeaseConfig:
    """``connection_leases``: ``num_connections`` shared by every gateway using ``table``.

    ``clock_skew_s`` is the most the wall clocks of two gateways may differ;
    ``idle_release_s`` is how long an idle connection keeps its slot.
    """

    table: str
    lease_s: float = 30.0
    clock_skew_s: float = 1.0
    idle_release_s: float = 10.0

    @property
    def usable_s(self) -> float:
        """How long after sending a take or a renewal its holder may use the slot.

        Another gateway can take the slot ``lease_s - clock_skew_s`` after
        that at the earliest; :data:`FENCE_MARGIN_S` leaves time for the
        connection to be cut before then.
        """
        return self.lease_s - self.clock_skew_s - FENCE_MARGIN_S


@dataclass(frozen=True)
class GatewayConfig:
    """``config.gateway_config`` of one provider."""

    activity_arn: str
    conn: ConnConfig
    num_connections: int
    sync_activity_arn: str | None = None
    heartbeat_interval_s: float = 15.0
    failure_mode: FailureMode = "task"
    allowed_buckets: tuple[str, ...] = ()
    part_size_mb: int = 8
    retries: int = 4
    read_timeout_s: float = 60.0
    shutdown_grace_s: float = 20.0
    payload_bucket: str | None = None
    connection_leases: LeaseConfig | None = None

    @property
    def connection_settings(self) -> ConnectionSettings:
        """What every connection to this provider honours."""
        return ConnectionSettings(read_timeout_s=self.read_timeout_s)

    @property
    def copy_options(self) -> CopyOptions:
        """How this provider's files are copied: the smallest part and the retries."""
        # The transfer layer sits above this one, so it is imported only when asked for.
        from provider_gateway.transfer.copy import CopyOptions
        from provider_gateway.transfer.s3upload import MiB

        return CopyOptions(min_part_size=self.part_size_mb * MiB, retries=self.retries)


@dataclass(frozen=True)
class ConnectionSettings:
    """Provider-wide settings that every protocol honours (a provider's: :attr:`GatewayConfig.connection_settings`)."""

    read_timeout_s: float = field_default(GatewayConfig, "read_timeout_s")
    user_agent: str = "provider-gateway"


@dataclass(frozen=True)
class ProviderConfig:
    """One provider the gateway serves."""

    id: str
    gateway: GatewayConfig


@dataclass(frozen=True)
class Config:
    """Everything the gateway serves, in file order."""

    providers: tuple[ProviderConfig, ...]

    def provider(self, provider_id: str) -> ProviderConfig:
        """The provider named ``provider_id``; KeyError if there is none."""
        for provider in self.providers:
            if provider.id == provider_id:
                return provider
        raise KeyError(provider_id)


def masked(obj: Any) -> Any:
    """A plain dict/list rendering of a config object with every secret masked."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("secret") and value:
                value = dict.fromkeys(value, SECRET_MASK) if isinstance(value, dict) else SECRET_MASK
            out[f.name] = masked(value)
        return out
    if isinstance(obj, tuple | list):
        return [masked(v) for v in obj]
    return obj
