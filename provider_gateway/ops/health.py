"""What ``/healthz`` and ``/status`` report of a running gateway, read from its snapshot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from provider_gateway import __version__

if TYPE_CHECKING:
    from provider_gateway.engine.snapshot import ConnectionState, GatewaySnapshot, ProviderSnapshot

# The activity API unreachable for longer than this makes the gateway unhealthy.
DEFAULT_UNREACHABLE_AFTER_S = 180.0


def health(snapshot: GatewaySnapshot, unreachable_after_s: float = DEFAULT_UNREACHABLE_AFTER_S) -> dict[str, Any]:
    """``{"healthy": bool, "problems": [...]}``: unhealthy when a thread died or polling has failed too long."""
    problems = [problem for provider in snapshot.providers for problem in _problems(provider, unreachable_after_s)]
    return {"healthy": not problems, "stopping": snapshot.stopping, "problems": problems}


def _problems(provider: ProviderSnapshot, unreachable_after_s: float) -> list[str]:
    problems = [f"{provider.id}: thread {name} has died" for name in provider.dead_threads]
    for poller in provider.pollers:
        failing = poller.failing_for_s
        if failing is not None and failing > unreachable_after_s:
            problems.append(f"{provider.id}: GetActivityTask on {poller.activity_arn} failing for {failing:.0f} s")
    leases = provider.leases
    if leases is not None and leases.failing_for_s is not None:
        # Failing closed: no connection opens while the table cannot be read, so say so at once.
        problems.append(
            f"{provider.id}: lease table failing for {leases.failing_for_s:.0f} s, "
            f"no new connections ({leases.last_error})"
        )
    return problems


def status(snapshot: GatewaySnapshot, unreachable_after_s: float = DEFAULT_UNREACHABLE_AFTER_S) -> dict[str, Any]:
    """Every provider's connections (busy or idle, with the file in flight), tasks in flight, and health."""
    providers = [
        {
            "id": provider.id,
            "type": provider.type,
            "num_connections": provider.num_connections,
            "leases_held": provider.leases.held if provider.leases is not None else None,
            "tasks_in_flight": provider.tasks_in_flight,
            "files_queued": provider.files_queued,
            "connections": [_connection(c) for c in provider.connections],
        }
        for provider in snapshot.providers
    ]
    return {"version": __version__, **health(snapshot, unreachable_after_s), "providers": providers}


def _connection(connection: ConnectionState) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "thread": connection.name,
        "alive": connection.alive,
        "connected": connection.connected,
        "state": "busy" if connection.busy else "idle",
    }
    if connection.file is not None:
        entry.update(connection.file.fields())
    return entry
