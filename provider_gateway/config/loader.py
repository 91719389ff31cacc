"""Building the typed :class:`Config` from ``collections.yml``.

The file is shared with other components: unknown top-level keys and
providers without ``config.gateway_config`` are ignored, and so are the
providers this gateway does not serve. Only the ``gateway_config`` of the
providers served is ``${NAME}``-expanded and checked; there every key is
checked, numbers are bounded (:data:`BOUNDS`), and unknown keys are errors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import urlsplit

from provider_gateway.config.credentials import check_credentials
from provider_gateway.config.fields import Fields, at_least, one_of
from provider_gateway.config.model import (
    FENCE_MARGIN_S,
    SECRET_KEYS,
    Config,
    ConnConfig,
    FtpConnConfig,
    GatewayConfig,
    GridftpConnConfig,
    HttpConnConfig,
    LeaseConfig,
    ProviderConfig,
    SftpConnConfig,
)
from provider_gateway.config.yaml_source import ResourceRef, expand, parse_yaml, read_text
from provider_gateway.errors import ConfigError, InvalidRequest
from provider_gateway.ssh_known_hosts import settings_problem
from provider_gateway.urls import parse_origin

ResourceResolver = Callable[[str], str]

ACTIVITY_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:states:[a-z0-9-]+:\d{12}:activity:[A-Za-z0-9_.-]{1,80}$")
CONN_TYPES = ("http", "https", "ftp", "ftps", "sftp", "gridftp")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
BOUNDS: dict[str, tuple[float, float]] = {
    "num_connections": (1, 256),  # each is a thread with its own part buffers
    "heartbeat_interval_s": (1, 3600),
    "part_size_mb": (5, 5120),  # S3's smallest and largest part
    "retries": (0, 100),
    "read_timeout_s": (1, 3600),
    "shutdown_grace_s": (0, 3600),
    "timeout_s": (1, 600),
    "port": (1, 65535),
    "lease_s": (10, 600),
    "clock_skew_s": (0, 60),
    "idle_release_s": (1, 3600),
    "files_in_flight": (1, 32),  # sftp: files at once in one SSH session, each with read-ahead
}
"""The range of every number in ``gateway_config``, by key: values outside are config errors naming the key."""


def load_config(
    location: str,
    resolver: ResourceResolver | None = None,
    s3_client_factory: Callable[[], Any] | None = None,
    providers: Collection[str] = (),
) -> Config:
    """Load, expand and check ``collections.yml`` from a path or ``s3://`` URL.

    ``resolver`` turns a ``!GitcResource`` logical id into its physical id; by
    default CloudFormation DescribeStackResources on ``$STACK_NAME``.
    ``providers`` names the providers served (default: every provider with a
    ``gateway_config``); no other part of the file is expanded or checked.
    """
    text = read_text(location, s3_client_factory)
    return parse_config(parse_yaml(text, location), resolver or cloudformation_resolver(), providers)


def parse_config(document: Any, resolver: ResourceResolver, providers: Collection[str] = ()) -> Config:
    """Build a :class:`Config` of ``providers`` (default: all) from a parsed YAML document."""
    entries = gateway_entries(document)
    wanted = set(providers) or set(entries)
    missing = sorted(wanted - set(entries))
    if missing:
        raise ConfigError(f"no provider {', '.join(missing)} with a config.gateway_config in the file")
    if not entries:
        raise ConfigError("providers: no provider has a config.gateway_config")
    parsed = [
        _provider(provider_id, path, data, resolver)
        for provider_id, (path, data) in entries.items()
        if provider_id in wanted
    ]
    return Config(tuple(parsed))


def gateway_entries(document: Any) -> dict[str, tuple[str, Any]]:
    """Each provider id with a ``config.gateway_config``: (its path in the file, the raw gateway_config)."""
    if not isinstance(document, dict):
        raise ConfigError("the file must be a mapping with a 'providers' list")
    providers = document.get("providers")
    if not isinstance(providers, list):
        raise ConfigError("providers: required, a list of providers")
    entries: dict[str, tuple[str, Any]] = {}
    for index, entry in enumerate(providers):
        path = f"providers[{index}]"
        config = entry.get("config") if isinstance(entry, dict) else None
        if not isinstance(config, dict) or "gateway_config" not in config:
            continue  # another component's entry
        provider_id = entry.get("id")
        if not isinstance(provider_id, str) or not provider_id:
            raise ConfigError(f"{path}.id: required, a non-empty string")
        if provider_id in entries:
            raise ConfigError(f"{path}.id: duplicate provider id {provider_id!r}")
        entries[provider_id] = (path, config["gateway_config"])
    return entries


def _provider(provider_id: str, path: str, data: Any, resolver: ResourceResolver) -> ProviderConfig:
    where = f"{path}.config.gateway_config"
    gateway = _gateway(expand(data, where), where, resolver)
    return ProviderConfig(id=provider_id, gateway=gateway)


def _fields(data: Any, path: str) -> Fields:
    return Fields(data, path, bounds=BOUNDS, secrets=SECRET_KEYS)


def _gateway(data: Any, path: str, resolver: ResourceResolver) -> GatewayConfig:
    f = _fields(data, path)
    activity_arn = _arn(f, "activity_arn", resolver, required=True)
    sync_arn = _arn(f, "sync_activity_arn", resolver, required=False)
    conn = _conn(f.raw("conn_config"), f.key_path("conn_config"))
    config = GatewayConfig(
        activity_arn=activity_arn or "",
        sync_activity_arn=sync_arn,
        conn=conn,
        num_connections=f.take("num_connections", int, check=at_least(1)),
        heartbeat_interval_s=f.take("heartbeat_interval_s", float, 15.0, at_least(1)),
        failure_mode=f.take("failure_mode", str, "task", one_of("task", "per_file")),
        allowed_buckets=f.strings("allowed_buckets"),
        part_size_mb=f.take("part_size_mb", int, 8, at_least(5)),
        retries=f.take("retries", int, 4, at_least(0)),
        read_timeout_s=f.take("read_timeout_s", float, 60.0, at_least(1)),
        shutdown_grace_s=f.take("shutdown_grace_s", float, 20.0, at_least(0)),
        payload_bucket=f.take("payload_bucket", str, None),
        connection_leases=_leases(f.raw("connection_leases", None), f.key_path("connection_leases")),
    )
    f.finish()
    return config


def _leases(data: Any, path: str) -> LeaseConfig | None:
    if data is None:
        return None
    f = _fields(data, path)
    config = LeaseConfig(
        table=f.take("table", str, check=_table_name),
        lease_s=f.take("lease_s", float, 30.0),
        clock_skew_s=f.take("clock_skew_s", float, 1.0),
        idle_release_s=f.take("idle_release_s", float, 10.0),
    )
    f.finish()
    if config.lease_s < 4 * (config.clock_skew_s + FENCE_MARGIN_S):
        raise ConfigError(
            f"{path}.lease_s: must be at least 4 x (clock_skew_s + {FENCE_MARGIN_S:g}) = "
            f"{4 * (config.clock_skew_s + FENCE_MARGIN_S):g}, so that renewals have time to succeed"
        )
    return config


def _table_name(value: Any) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", value) else f"must be a DynamoDB table name; got {value!r}"


def _arn(f: Fields, key: str, resolver: ResourceResolver, required: bool) -> str | None:
    value = f.raw(key) if required else f.raw(key, None)
    if value is None:
        return None
    if isinstance(value, ResourceRef):
        if not value.name:
            raise ConfigError(f"{f.key_path(key)}: !GitcResource needs a resource name")
        try:
            value = resolver(value.name)
        except ConfigError as exc:
            raise ConfigError(f"{f.key_path(key)}: {exc}") from exc
    if not isinstance(value, str) or not ACTIVITY_ARN.match(value):
        raise ConfigError(
            f"{f.key_path(key)}: must be an activity ARN "
            f"(arn:aws:states:REGION:ACCOUNT:activity:NAME) or !GitcResource Name; got {value!r}"
        )
    return value


def _conn(data: Any, path: str) -> ConnConfig:
    f = _fields(data, path)
    kind = f.take("type", str, check=one_of(*CONN_TYPES))
    conn: ConnConfig
    if kind in ("http", "https"):
        conn = _http(f, kind)
    elif kind in ("ftp", "ftps"):
        conn = FtpConnConfig(
            type=kind,
            host=f.take("host", str, check=_host_check(allow_port=False)),
            port=f.take("port", int, 21, at_least(1)),
            username=f.take("username", str, "anonymous"),
            password=f.take("password", str, None),
            passive=f.take("passive", bool, True),
            timeout_s=f.take("timeout_s", float, 30.0, at_least(1)),
            verify_tls=f.take("verify_tls", bool, True),
            ca_bundle=f.take("ca_bundle", str, None),
        )
    elif kind == "gridftp":
        conn = _gridftp(f)
    else:
        conn = _sftp(f)
    check_credentials(conn, f.key_path)
    f.finish()
    return conn


def _http(f: Fields, kind: str) -> HttpConnConfig:
    conn = HttpConnConfig(
        type=kind,  # type: ignore[arg-type]
        host=f.take("host", str, None, _host_check(allow_port=True)),
        username=f.take("username", str, None),
        password=f.take("password", str, None),
        token=f.take("token", str, None),
        headers=f.string_map("headers"),
        verify_tls=f.take("verify_tls", bool, True),
        ca_bundle=f.take("ca_bundle", str, None),
        login_hosts=_origins(f, "login_hosts"),
        redirect_hosts=_origins(f, "redirect_hosts"),
        timeout_s=f.take("timeout_s", float, 30.0, at_least(1)),
    )
    return conn


def _origins(f: Fields, key: str) -> tuple[str, ...]:
    entries = tuple(h.lower() for h in f.strings(key))
    for entry in entries:
        try:
            parse_origin(entry, wildcard=key == "redirect_hosts")
        except InvalidRequest as exc:
            raise ConfigError(f"{f.key_path(key)}: {exc.message}") from None
    return entries


def _sftp(f: Fields) -> SftpConnConfig:
    conn = SftpConnConfig(
        type="sftp",
        host=f.take("host", str, check=_host_check(allow_port=False)),
        port=f.take("port", int, 22, at_least(1)),
        username=f.take("username", str),
        password=f.take("password", str, None),
        private_key_file=f.take("private_key_file", str, None),
        private_key_passphrase=f.take("private_key_passphrase", str, None),
        known_hosts_file=f.take("known_hosts_file", str, None),
        host_key=f.take("host_key", str, None),
        insecure_skip_host_key_check=f.take("insecure_skip_host_key_check", bool, False),
        timeout_s=f.take("timeout_s", float, 30.0, at_least(1)),
        files_in_flight=f.take("files_in_flight", int, SftpConnConfig.files_in_flight),
    )
    if not conn.password and not conn.private_key_file:
        raise ConfigError(f"{f.key_path('password')}: sftp needs password or private_key_file")
    if not (conn.known_hosts_file or conn.host_key or conn.insecure_skip_host_key_check):
        raise ConfigError(
            f"{f.key_path('known_hosts_file')}: sftp needs known_hosts_file or host_key "
            "(or insecure_skip_host_key_check: true)"
        )
    problem = None
    if not conn.insecure_skip_host_key_check:
        problem = settings_problem(conn.known_hosts_file, conn.host_key, conn.host, conn.port)
    if problem:
        raise ConfigError(f"{f.key_path(problem[0])}: {problem[1]}")
    return conn


def _gridftp(f: Fields) -> GridftpConnConfig:
    conn = GridftpConnConfig(
        type="gridftp",
        host=f.take("host", str, check=_host_check(allow_port=False)),
        port=f.take("port", int, 2811, at_least(1)),
        username=f.take("username", str, None),
        password=f.take("password", str, None),
        x509_user_proxy=f.take("x509_user_proxy", str, None),
        x509_user_cert=f.take("x509_user_cert", str, None),
        x509_user_key=f.take("x509_user_key", str, None),
        x509_cert_dir=f.take("x509_cert_dir", str, None),
        data_channel_auth=f.take("data_channel_auth", bool, True),
    )
    if conn.password and not conn.username:
        raise ConfigError(f"{f.key_path('password')}: a password needs a username")
    if conn.x509_user_proxy and (conn.x509_user_cert or conn.x509_user_key):
        raise ConfigError(f"{f.key_path('x509_user_proxy')}: give a proxy or a certificate and key, not both")
    if conn.x509_user_key and not conn.x509_user_cert:
        raise ConfigError(f"{f.key_path('x509_user_key')}: a key needs x509_user_cert")
    return conn


def _host_check(allow_port: bool) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if "@" in value:  # user:password@host: the value is not shown
            return "must be a host name; credentials go in username and password (the value is not shown)"
        if not _HOST.match(value):
            return f"must be a host name{' or name:port' if allow_port else ''}; got {value!r}"
        if not allow_port and urlsplit(f"//{value}").port is not None:
            return f"must be a host name without a port (use 'port'); got {value!r}"
        return None

    return check


def cloudformation_resolver(client_factory: Callable[[], Any] | None = None) -> ResourceResolver:
    """Resolve logical ids on the stack named by ``STACK_NAME`` to physical ids.

    The logical id ``Name`` is looked up first, then ``{STACK_NAME}Name``.
    """
    cache: dict[str, str] = {}

    def resolve(name: str) -> str:
        if name in cache:
            return cache[name]
        stack = os.environ.get("STACK_NAME")
        if not stack:
            raise ConfigError(f"!GitcResource {name}: STACK_NAME is not set, so it cannot be resolved")
        if client_factory is None:
            from provider_gateway.aws import AwsClients

            client = AwsClients().cloudformation()
        else:
            client = client_factory()
        for logical_id in (name, f"{stack}{name}"):
            try:
                found = client.describe_stack_resources(StackName=stack, LogicalResourceId=logical_id)
            except Exception as exc:
                if "does not exist" in str(exc):
                    continue
                raise ConfigError(f"!GitcResource {name}: cannot query stack {stack}: {exc}") from exc
            resources = found.get("StackResources", [])
            if resources:
                cache[name] = resources[0]["PhysicalResourceId"]
                return cache[name]
        raise ConfigError(f"!GitcResource {name}: no resource {name} or {stack}{name} in stack {stack}")

    return resolve


def unresolved_resources(name: str) -> str:
    """A resolver for uses that never touch activities (one-file downloads, Lambda handlers).

    It answers a well-formed placeholder ARN without asking CloudFormation, so
    such a use needs neither ``STACK_NAME`` nor CloudFormation permissions.
    """
    return f"arn:aws:states:us-east-1:000000000000:activity:unresolved-{name[:60]}"
