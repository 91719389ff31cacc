"""``provider-gateway download``: one file into S3 without Step Functions (the AWS Batch job's command)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from provider_gateway import errors
from provider_gateway.cli.config_option import load_config_option
from provider_gateway.messages import CHECKSUM_ALGORITHMS


def _blank_is_none(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # An AWS Batch job passes every parameter (Ref::name), so an empty one means "not given".
    return value or None


def _size_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if not value:
        return None
    if not value.isdigit():
        raise click.BadParameter(f"{value!r} is not a size in bytes")
    return int(value)


# What a bare code does not say: click's usage errors share InvalidRequest's status; SIGTERM ends in GatewayShutdown.
_EXIT_NOTES = {errors.InvalidRequest.code: "bad usage or {}", errors.GatewayShutdown.code: "{} (SIGTERM)"}


def _exit_statuses(command: Callable[..., None]) -> Callable[..., None]:
    """Fill ``{exit_statuses}`` in the command's help with the statuses the error classes give."""
    named = sorted((e.exit_status, e.code) for e in errors.error_classes() if e.exit_status != errors.EXIT_OTHER)
    listed = [f"{status} {_EXIT_NOTES.get(code, '{}').format(code)}" for status, code in named]
    statuses = ", ".join(["0 success", *listed, f"{errors.EXIT_OTHER} anything else"])
    command.__doc__ = (command.__doc__ or "").replace("{exit_statuses}", statuses)
    return command


@click.command()
@click.argument("source_url")
@click.argument("target")
@click.option(
    "--config",
    "config_location",
    help="collections.yml (path or s3://): take the provider's settings.",
    callback=_blank_is_none,
)
@click.option(
    "--provider",
    "provider_id",
    help="The provider in --config (default: the one the URL belongs to).",
    callback=_blank_is_none,
)
@click.option(
    "--version",
    "version",
    help="Store as the object's 'version' metadata; skip if already there.",
    callback=_blank_is_none,
)
@click.option(
    "--checksum",
    help=f"Verify the file against ALGO:HEX ({', '.join(CHECKSUM_ALGORITHMS)}).",
    callback=_blank_is_none,
)
@click.option("--size", callback=_size_option, help="Expected size in bytes; a different size fails.")
@click.option("--known-hosts", callback=_blank_is_none, help="known_hosts file for an sftp URL without --config.")
@click.option(
    "--identity-file",
    callback=_blank_is_none,
    help="Private key for an sftp URL without --config (default: ssh-agent, then ~/.ssh/id_*, as ssh).",
)
@click.option(
    "--ca-bundle",
    callback=_blank_is_none,
    help="CA certificates (PEM) to verify an https or ftps URL without --config.",
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar on stderr (default: when stderr is a terminal)."
)
@_exit_statuses
def download(
    source_url: str,
    target: str,
    config_location: str | None,
    provider_id: str | None,
    version: str | None,
    checksum: str | None,
    size: int | None,
    known_hosts: str | None,
    identity_file: str | None,
    ca_bundle: str | None,
    progress: bool | None,
) -> None:
    """Copy one file from SOURCE_URL to TARGET (s3://BUCKET/KEY), without Step Functions.

    Prints one JSON line with the result on stdout. Exit status: {exit_statuses}.
    A TARGET key ending in / gets the file name of the URL. ftp and sftp URL
    paths are absolute from the server's root (sftp://user@host/home/user/f.h5).
    """
    from provider_gateway.cli.download_run import run_download

    if provider_id and not config_location:
        raise click.UsageError("--provider needs --config")
    if config_location and (known_hosts or identity_file or ca_bundle):
        raise click.UsageError("--known-hosts, --identity-file and --ca-bundle are for a URL without --config")
    served = (provider_id,) if provider_id else ()
    config = load_config_option(config_location, served, resolve_activities=False) if config_location else None
    sys.exit(
        run_download(
            source_url,
            target,
            config=config,
            provider_id=provider_id,
            version=version,
            checksum=checksum,
            size=size,
            known_hosts=known_hosts,
            identity_file=identity_file,
            ca_bundle=ca_bundle,
            progress=sys.stderr.isatty() if progress is None else progress,
        )
    )
