"""The ``provider-gateway`` command line: the click group; each command is a module of this package."""

from __future__ import annotations

import click

from provider_gateway import __version__
from provider_gateway.cli.demo import demo
from provider_gateway.cli.download import download
from provider_gateway.cli.run import run
from provider_gateway.cli.status import status
from provider_gateway.cli.validate import validate
from provider_gateway.logs import setup_logging

__all__ = ["main"]


@click.group()
@click.version_option(__version__, prog_name="provider-gateway")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Verbosity of the log on stderr.",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    default=None,
    help="Log lines as JSON objects or text  [default: json, text when stderr is a terminal]",
)
def main(log_level: str, log_format: str | None) -> None:
    """Move files from data providers (HTTP, FTP, SFTP) into S3 for Step Functions."""
    setup_logging(log_level, log_format)


for _command in (run, validate, download, status, demo):
    main.add_command(_command)
