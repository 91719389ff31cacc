"""``--config``: loading collections.yml for a command, any problem a usage error (exit 2) naming the key."""

from __future__ import annotations

import click

from provider_gateway.aws import AwsClients
from provider_gateway.config import Config, load_config, unresolved_resources
from provider_gateway.errors import ConfigError

CONFIG_HELP = "collections.yml: a path or s3://bucket/key."


def load_config_option(location: str, providers: tuple[str, ...] = (), resolve_activities: bool = True) -> Config:
    """The config at ``location`` (only ``providers``, if given); ``click.BadParameter`` if it is not valid.

    Without ``resolve_activities``, ``!GitcResource`` names are kept as they
    are instead of being looked up in CloudFormation.
    """
    clients = AwsClients()
    resolver = None if resolve_activities else unresolved_resources
    try:
        config = load_config(location, resolver=resolver, s3_client_factory=clients.s3, providers=providers)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    return config
