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

from botocore.exceptions import BotoCoreError, ClientError

# The protocols' registry says which conn_config types there are and how each is read. It is
# imported as a module, because the protocols import the config classes: its names are read at call time.
from provider_gateway import protocols
from provider_gateway.config.credentials import check_credentials
from provider_gateway.config.fields import Fields, one_of
from provider_gateway.config.model import (
    FENCE_MARGIN_S,
    SECRET_KEYS,
    Config,
    ConnConfig,
    GatewayConfig,
    LeaseConfig,
    ProviderConfig,
)
from provider_gateway.config.yaml_source import ResourceRef, expand, parse_yaml, read_text
from provider_gateway.errors import ConfigError

ResourceResolver = Callable[[str], str]

ACTIVITY_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:states:[a-z0-9-]+:\d{12}:activity:[A-Za-z0-9_.-]{1,80}$")
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
    config = f.build(
        GatewayConfig,
        activity_arn=_arn(f, "activity_arn", resolver, required=True) or "",
        sync_activity_arn=_arn(f, "sync_activity_arn", resolver, required=False),
        conn=_conn(f.raw("conn_config"), f.key_path("conn_config")),
        connection_leases=_leases(f.raw("connection_leases", None), f.key_path("connection_leases")),
    )
    f.finish()
    return config


def _leases(data: Any, path: str) -> LeaseConfig | None:
    if data is None:
        return None
    f = _fields(data, path)
    config = f.build(LeaseConfig, checks={"table": _table_name})
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
    kind = f.take("type", str, check=one_of(*protocols.CONN_TYPES))
    conn = protocols.REGISTRY[kind].read(f, kind)
    check_credentials(conn, f.key_path)
    f.finish()
    return conn


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
            except (ClientError, BotoCoreError) as exc:
                if _not_found(exc):
                    continue
                raise ConfigError(f"!GitcResource {name}: cannot query stack {stack}: {exc}") from exc
            resources = found.get("StackResources", [])
            if resources:
                cache[name] = resources[0]["PhysicalResourceId"]
                return cache[name]
        raise ConfigError(f"!GitcResource {name}: no resource {name} or {stack}{name} in stack {stack}")

    return resolve


def _not_found(exc: Exception) -> bool:
    """Whether CloudFormation answered that the resource (or the stack) does not exist: a ValidationError."""
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "ValidationError"


def unresolved_resources(name: str) -> str:
    """A resolver for uses that never touch activities (one-file downloads, Lambda handlers).

    It answers a well-formed placeholder ARN without asking CloudFormation, so
    such a use needs neither ``STACK_NAME`` nor CloudFormation permissions.
    """
    return f"arn:aws:states:us-east-1:000000000000:activity:unresolved-{name[:60]}"
