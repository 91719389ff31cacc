"""``provider-gateway demo``: the whole system on this machine, with nothing from AWS."""

from __future__ import annotations

import sys

import click


@click.command()
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
