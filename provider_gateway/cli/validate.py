"""``provider-gateway validate``: check a config and show what it would serve."""

from __future__ import annotations

import click
import yaml

from provider_gateway.cli.config_option import CONFIG_HELP, load_config_option
from provider_gateway.config import masked


@click.command()
@click.option("--config", "config_location", required=True, help=CONFIG_HELP)
def validate(config_location: str) -> None:
    """Check the config and print each provider it would serve (secrets masked)."""
    config = load_config_option(config_location)
    for provider in config.providers:
        rendered = {"id": provider.id, "gateway_config": masked(provider.gateway)}
        click.echo(yaml.safe_dump(rendered, sort_keys=False).rstrip())
        click.echo("---")
    click.echo(f"valid: {len(config.providers)} provider(s)")
