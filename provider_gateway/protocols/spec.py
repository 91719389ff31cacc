"""What the gateway knows of one protocol, in one frozen :class:`ProtocolSpec` that its module exports."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from provider_gateway.config.fields import Fields, host_name
from provider_gateway.config.model import ConnConfig, ConnectionSettings
from provider_gateway.protocols.base import Connection
from provider_gateway.urls import DEFAULT_PORTS

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ConnectionFactory = Callable[[Any, ConnectionSettings], Connection]
"""Opens a connection from a provider's ``conn_config`` and settings (a protocol's Connection class)."""

ConfigReader = Callable[[Fields, str], ConnConfig]
"""Reads a ``conn_config`` mapping of the given type; ConfigError naming the key if it is wrong."""

C = TypeVar("C", bound="DataclassInstance")


@dataclass(frozen=True)
class UrlSettings:
    """What a bare URL (``provider-gateway download URL``) and the command's options say of its provider."""

    type: str
    host: str
    port: int | None
    netloc: str  # host[:port] as written, without the userinfo
    username: str | None = None
    password: str | None = None
    known_hosts_file: str | None = None
    identity_file: str | None = None
    ca_bundle: str | None = None


@dataclass(frozen=True)
class ProtocolSpec:
    """One protocol: its types, schemes, config, connection and readiness.

    ``schemes`` maps each ``conn_config.type`` the protocol serves to the URL
    schemes a provider of that type accepts. ``url_types`` maps a URL scheme
    to the type a bare URL of it builds (``from_url``). ``read_config`` reads
    a ``conn_config`` mapping (by default :func:`read_fields` of
    ``config_class``). ``ready`` raises SourceUnavailable when this machine
    cannot speak the protocol (a program missing), checked before a provider
    of it is served.
    """

    schemes: Mapping[str, tuple[str, ...]]
    url_types: Mapping[str, str]
    config_class: type[Any]
    connect: ConnectionFactory
    from_url: Callable[[UrlSettings], ConnConfig]
    read_config: ConfigReader | None = None
    ready: Callable[[], object] | None = None

    @property
    def default_ports(self) -> dict[str, int]:
        """The port of each URL scheme of ``url_types`` when a URL names none."""
        return {scheme: DEFAULT_PORTS[scheme] for scheme in self.url_types}

    def read(self, fields: Fields, kind: str) -> ConnConfig:
        """The ``conn_config`` of type ``kind`` read from ``fields``."""
        if self.read_config is not None:
            return self.read_config(fields, kind)
        conn: ConnConfig = read_fields(fields, self.config_class, kind)
        return conn


def read_fields(fields: Fields, config_class: type[C], kind: str, **given: Any) -> C:
    """``config_class`` of type ``kind``: every field not ``given`` read as its type says.

    ``host`` is a host name; it may carry a ``:port`` only in a config without a ``port`` field.
    """
    allow_port = all(f.name != "port" for f in dataclasses.fields(config_class))
    return fields.build(config_class, checks={"host": host_name(allow_port)}, type=kind, **given)


def present(**values: Any) -> dict[str, Any]:
    """The ``values`` that are not None: left out, a config field keeps its dataclass default."""
    return {key: value for key, value in values.items() if value is not None}
