"""Building the typed :class:`Config` from ``collections.yml``.

The file is shared with other components: unknown top-level keys and
providers without ``config.gateway_config`` are ignored. Inside
``gateway_config`` every key is checked and unknown keys are errors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from provider_gateway.config.fields import Fields, at_least, one_of
from provider_gateway.config.model import (
    Config,
    ConnConfig,
    FtpConnConfig,
    GatewayConfig,
    GridftpConnConfig,
    HttpConnConfig,
    ProviderConfig,
    SftpConnConfig,
)
from provider_gateway.config.yaml_source import ResourceRef, parse_yaml, read_text
from provider_gateway.errors import ConfigError, InvalidRequest
from provider_gateway.urls import parse_origin

ResourceResolver = Callable[[str], str]

ACTIVITY_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:states:[a-z0-9-]+:\d{12}:activity:[A-Za-z0-9_.-]{1,80}$")
CONN_TYPES = ("http", "https", "ftp", "ftps", "sftp", "gridftp")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def load_config(
    location: str,
    resolver: ResourceResolver | None = None,
    s3_client_factory: Callable[[], Any] | None = None,
) -> Config:
    """Load, expand and check ``collections.yml`` from a path or ``s3://`` URL.

    ``resolver`` turns a ``!GitcResource`` logical id into its physical id; by
    default CloudFormation DescribeStackResources on ``$STACK_NAME``.
    """
    text = read_text(location, s3_client_factory)
    return parse_config(parse_yaml(text, location), resolver or cloudformation_resolver())


def parse_config(document: Any, resolver: ResourceResolver) -> Config:
    """Build a :class:`Config` from an already expanded YAML document."""
    if not isinstance(document, dict):
        raise ConfigError("the file must be a mapping with a 'providers' list")
    providers = document.get("providers")
    if not isinstance(providers, list):
        raise ConfigError("providers: required, a list of providers")
    parsed: list[ProviderConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(providers):
        provider = _provider(entry, f"providers[{index}]", resolver)
        if provider is None:
            continue
        if provider.id in seen:
            raise ConfigError(f"providers[{index}].id: duplicate provider id {provider.id!r}")
        seen.add(provider.id)
        parsed.append(provider)
    if not parsed:
        raise ConfigError("providers: no provider has a config.gateway_config")
    return Config(tuple(parsed))


def _provider(entry: Any, path: str, resolver: ResourceResolver) -> ProviderConfig | None:
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: must be a mapping with 'id' and 'config'")
    config = entry.get("config")
    if not isinstance(config, dict) or "gateway_config" not in config:
        return None
    provider_id = entry.get("id")
    if not isinstance(provider_id, str) or not provider_id:
        raise ConfigError(f"{path}.id: required, a non-empty string")
    gateway = _gateway(config["gateway_config"], f"{path}.config.gateway_config", resolver)
    return ProviderConfig(id=provider_id, gateway=gateway)


def _gateway(data: Any, path: str, resolver: ResourceResolver) -> GatewayConfig:
    f = Fields(data, path)
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
    )
    f.finish()
    return config


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
    f = Fields(data, path)
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
        )
    elif kind == "gridftp":
        conn = _gridftp(f)
    else:
        conn = _sftp(f)
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
    if conn.host is None and (conn.username or conn.token or conn.headers):
        raise ConfigError(f"{f.key_path('host')}: required when credentials or headers are configured")
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
    )
    if not conn.password and not conn.private_key_file:
        raise ConfigError(f"{f.key_path('password')}: sftp needs password or private_key_file")
    if not (conn.known_hosts_file or conn.host_key or conn.insecure_skip_host_key_check):
        raise ConfigError(
            f"{f.key_path('known_hosts_file')}: sftp needs known_hosts_file or host_key "
            "(or insecure_skip_host_key_check: true)"
        )
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
