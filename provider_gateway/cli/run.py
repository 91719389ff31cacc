"""``provider-gateway run``: the long-running service, until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType

import click

from provider_gateway.aws import AwsClients
from provider_gateway.cli.config_option import CONFIG_HELP, load_config_option
from provider_gateway.config import Config
from provider_gateway.errors import ConfigError

log = logging.getLogger("provider_gateway")


@click.command()
@click.option("--config", "config_location", required=True, help=CONFIG_HELP)
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

    config = load_config_option(config_location, providers)
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
