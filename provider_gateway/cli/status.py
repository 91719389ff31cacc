"""``provider-gateway status``: a running gateway's ``/status`` as a table."""

from __future__ import annotations

import sys
from typing import Any

import click

TIMEOUT_S = 5.0


@click.command()
@click.option(
    "--url",
    default="http://127.0.0.1:9108",
    show_default=True,
    help="The running gateway's metrics endpoint (run --metrics-port).",
)
@click.option("--check", is_flag=True, help="Print nothing; exit 0 if healthy, 1 if not (container HEALTHCHECK).")
def status(url: str, check: bool) -> None:
    """Show a running gateway's providers: connections busy or idle, files in flight, health."""
    sys.exit(show_status(url, check))


def show_status(url: str, check: bool) -> int:
    """Print the table (or, with ``check``, nothing); 0 if healthy, 1 if not or unreachable."""
    import requests  # here, so that the other commands start without it

    base = url.rstrip("/")
    try:
        if check:
            return 0 if requests.get(f"{base}/healthz", timeout=TIMEOUT_S).status_code == 200 else 1
        document = requests.get(f"{base}/status", timeout=TIMEOUT_S).json()
    except (requests.RequestException, ValueError) as exc:
        if not check:
            click.echo(f"no gateway answers at {base}: {exc}", err=True)
        return 1
    click.echo(render(document))
    return 0 if document.get("healthy") else 1


def render(document: dict[str, Any]) -> str:
    """The per-provider table of a ``/status`` document."""
    health = "healthy" if document.get("healthy") else "UNHEALTHY"
    if document.get("stopping"):
        health += ", stopping"
    lines = [f"provider-gateway {document.get('version', '?')}: {health}"]
    lines += [f"  ! {problem}" for problem in document.get("problems", [])]
    for provider in document.get("providers", []):
        connections = provider.get("connections", [])
        busy = sum(c.get("state") == "busy" for c in connections)
        lines.append(
            f"{provider['id']} ({provider['type']}): {busy} busy, {len(connections) - busy} idle, "
            f"{provider['tasks_in_flight']} task(s) in flight"
        )
        for conn in connections:
            lines.append("  " + _connection_line(conn))
    return "\n".join(lines)


def _connection_line(conn: dict[str, Any]) -> str:
    head = f"{conn['thread']:<20} {conn['state']:<5}"
    if not conn.get("alive", True):
        return f"{head} DEAD"
    if conn.get("state") != "busy":
        return f"{head} {'connected' if conn.get('connected') else 'not connected'}"
    done = f"{conn.get('bytes', 0)}"
    if conn.get("size") is not None:
        done += f"/{conn['size']} B ({conn.get('percent', 0)}%)"
    else:
        done += " B"
    return f"{head} {conn.get('file')} -> {conn.get('target')}  {done}  {conn.get('mb_per_s', 0)} MB/s"
