"""The ``provider-gateway`` command line."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

import click
import yaml

from provider_gateway import __version__, errors
from provider_gateway.aws import AwsClients
from provider_gateway.config import Config, load_config, masked, unresolved_resources
from provider_gateway.errors import ConfigError
from provider_gateway.logs import setup_logging
from provider_gateway.messages import CHECKSUM_ALGORITHMS

log = logging.getLogger("provider_gateway")


def _load(location: str, providers: tuple[str, ...] = (), resolve_activities: bool = True) -> Config:
    """Load the config; any problem is a usage error (exit 2) naming the key."""
    clients = AwsClients()
    resolver = None if resolve_activities else unresolved_resources
    try:
        config = load_config(location, resolver=resolver, s3_client_factory=clients.s3, providers=providers)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    return config


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


@main.command()
@click.option("--config", "config_location", required=True, help="collections.yml: a path or s3://bucket/key.")
@click.option("--provider", "providers", multiple=True, help="Serve only this provider id (repeatable).")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve /metrics (Prometheus), /healthz and /status on this port.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address of the metrics endpoint (/status shows what is in flight: give 0.0.0.0 only where it is private).",
)
@click.option(
    "--progress-interval-s",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds between progress lines of a long transfer.",
)
@click.option(
    "--unhealthy-after-s",
    type=click.FloatRange(min=1),
    default=180.0,
    show_default=True,
    help="/healthz fails once GetActivityTask has failed for this long.",
)
def run(
    config_location: str,
    providers: tuple[str, ...],
    metrics_port: int | None,
    metrics_host: str,
    progress_interval_s: float,
    unhealthy_after_s: float,
) -> None:
    """Serve the providers' activities until SIGTERM or SIGINT.

    The first signal stops claiming tasks and gives tasks in flight their
    shutdown_grace_s; a second signal cancels them at once. Every claimed task
    is answered either way.
    """
    from provider_gateway.engine.gateway import Gateway

    config = _load(config_location, providers)
    clients = AwsClients(max_pool=_pool_size(config))
    try:
        leases = any(p.gateway.connection_leases for p in config.providers)
        gateway = Gateway(
            config,
            sfn=clients.sfn(),
            s3=clients.s3(),
            dynamodb=clients.lease_table() if leases else None,
            progress_interval_s=progress_interval_s,
        )
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    if metrics_port is not None:
        from provider_gateway.ops.server import OpsServer

        try:
            OpsServer(gateway, metrics_host, metrics_port, unhealthy_after_s).start()
        except OSError as exc:
            raise click.BadParameter(f"cannot listen on {metrics_host}:{metrics_port}: {exc}") from None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if gateway.stop_requested():
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            gateway.stop_now()
        else:
            log.info("%s: stopping after the tasks in flight (grace period)", signal.Signals(signum).name)
            gateway.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    gateway.serve_forever()
    stuck = gateway.stuck_threads()
    if stuck:  # every task is answered or given up: nothing may hold the exit past ECS's stop timeout
        log.warning("exiting without waiting for thread(s) %s", ", ".join(stuck))
        logging.shutdown()
        os._exit(0)


def _pool_size(config: Config) -> int:
    # Pollers, heartbeats and answers, plus the concurrent part uploads of every connection.
    connections = sum(p.gateway.num_connections for p in config.providers)
    return max(10, 2 * len(config.providers) + connections * 6)


@main.command()
@click.option("--config", "config_location", required=True, help="collections.yml: a path or s3://bucket/key.")
def validate(config_location: str) -> None:
    """Check the config and print each provider it would serve (secrets masked)."""
    config = _load(config_location)
    for provider in config.providers:
        rendered = {"id": provider.id, "gateway_config": masked(provider.gateway)}
        click.echo(yaml.safe_dump(rendered, sort_keys=False).rstrip())
        click.echo("---")
    click.echo(f"valid: {len(config.providers)} provider(s)")


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


@main.command()
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
    from provider_gateway.download_command import run_download

    if provider_id and not config_location:
        raise click.UsageError("--provider needs --config")
    if config_location and (known_hosts or identity_file or ca_bundle):
        raise click.UsageError("--known-hosts, --identity-file and --ca-bundle are for a URL without --config")
    served = (provider_id,) if provider_id else ()
    config = _load(config_location, served, resolve_activities=False) if config_location else None
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


@main.command()
@click.option(
    "--url",
    default="http://127.0.0.1:9108",
    show_default=True,
    help="The running gateway's metrics endpoint (run --metrics-port).",
)
@click.option("--check", is_flag=True, help="Print nothing; exit 0 if healthy, 1 if not (container HEALTHCHECK).")
def status(url: str, check: bool) -> None:
    """Show a running gateway's providers: connections busy or idle, files in flight, health."""
    from provider_gateway.ops.status_command import show_status

    sys.exit(show_status(url, check))


@main.command()
@click.option("--files", "file_count", default=6, show_default=True, help="How many sample files per provider.")
@click.option("--size-mb", default=24, show_default=True, help="Size of the largest sample file, in MB.")
@click.option(
    "--replicas",
    default=1,
    show_default=True,
    type=click.IntRange(1, 8),
    help="Gateways serving the same providers, sharing each one's connections through a lease table.",
)
def demo(file_count: int, size_mb: int, replicas: int) -> None:
    """Run the whole system on this machine: embedded S3 + Step Functions, a sample
    provider, real transfers, and a summary table at the end."""
    try:
        from provider_gateway.local.demo import run_demo
    except ImportError as exc:
        raise click.ClickException(
            f"the demo needs the 'local' extra (pip install 'provider-gateway[local]'): {exc}"
        ) from None
    sys.exit(run_demo(file_count=file_count, largest_mb=size_mb, replicas=replicas))
