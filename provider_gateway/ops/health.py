"""What ``/healthz`` and ``/status`` report of a running gateway."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from provider_gateway import __version__

if TYPE_CHECKING:
    from provider_gateway.engine.gateway import Gateway

# The activity API unreachable for longer than this makes the gateway unhealthy.
DEFAULT_UNREACHABLE_AFTER_S = 180.0


def health(gateway: Gateway, unreachable_after_s: float = DEFAULT_UNREACHABLE_AFTER_S) -> dict[str, Any]:
    """``{"healthy": bool, "problems": [...]}``: unhealthy when a thread died or polling has failed too long."""
    problems: list[str] = []
    now = time.monotonic()
    for runtime in gateway.runtimes:
        for name in runtime.dead_threads():
            problems.append(f"{runtime.provider.id}: thread {name} has died")
        for poller in runtime.pollers:
            since = poller.failing_since
            if since is not None and now - since > unreachable_after_s:
                problems.append(
                    f"{runtime.provider.id}: GetActivityTask on {poller.activity_arn} failing for {now - since:.0f} s"
                )
        leases = runtime.leases
        if leases is not None and leases.failing_since is not None:
            # Failing closed: no connection opens while the table cannot be read, so say so at once.
            problems.append(
                f"{runtime.provider.id}: lease table failing for {now - leases.failing_since:.0f} s, "
                f"no new connections ({leases.last_error})"
            )
    return {"healthy": not problems, "stopping": gateway.stop_requested(), "problems": problems}


def status(gateway: Gateway, unreachable_after_s: float = DEFAULT_UNREACHABLE_AFTER_S) -> dict[str, Any]:
    """Every provider's connections (busy or idle, with the file in flight), tasks in flight, and health."""
    providers = []
    for runtime in gateway.runtimes:
        connections = []
        for worker in runtime.workers:
            entry: dict[str, Any] = {
                "thread": worker.name,
                "alive": worker.thread.is_alive(),
                "connected": worker.connected,
                "state": "busy" if worker.current is not None else "idle",
            }
            progress = worker.progress
            if progress is not None:
                entry.update(progress.fields())
            connections.append(entry)
        providers.append(
            {
                "id": runtime.provider.id,
                "type": runtime.provider.gateway.conn.type,
                "num_connections": runtime.provider.gateway.num_connections,
                "leases_held": runtime.leases.held() if runtime.leases is not None else None,
                "tasks_in_flight": runtime.in_flight(),
                "connections": connections,
            }
        )
    return {"version": __version__, **health(gateway, unreachable_after_s), "providers": providers}
