"""A frozen picture of a running gateway: what ``/healthz``, ``/status`` and the gauges read.

:func:`provider_snapshot` is the one place that reads the engine's live
objects (connection threads, pollers, leases); everything outside the engine
reads the dataclasses it returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provider_gateway.engine.provider import ProviderRuntime


@dataclass(frozen=True)
class FileInFlight:
    """A file being copied, as its progress stood when the snapshot was taken."""

    task: str
    url: str
    target: str
    connection: str
    bytes: int
    size: int | None
    mb_per_s: float

    @property
    def percent(self) -> float | None:
        return round(100.0 * self.bytes / self.size, 1) if self.size else None

    def fields(self) -> dict[str, object]:
        """The fields a log record or ``/status`` shows of the file."""
        out: dict[str, object] = {"task": self.task, "file": self.url, "target": self.target}
        # s3transfer reads (and so reports progress) in threads of its own: name the connection.
        out["connection"] = self.connection
        out["bytes"] = self.bytes
        if self.size is not None:
            out["size"] = self.size
        if self.percent is not None:
            out["percent"] = self.percent
        out["mb_per_s"] = round(self.mb_per_s, 2)
        return out


@dataclass(frozen=True)
class ConnectionState:
    """One connection thread."""

    name: str
    alive: bool
    connected: bool
    busy: bool
    file: FileInFlight | None
    """The file it copies, once its copy has started (a busy thread may not have one yet)."""


@dataclass(frozen=True)
class PollerState:
    """One activity poller thread."""

    name: str
    activity_arn: str
    alive: bool
    failing_for_s: float | None
    """How long GetActivityTask has failed without a success since, or None."""


@dataclass(frozen=True)
class LeaseState:
    """The provider's connection slot leases (providers with ``connection_leases``)."""

    held: int
    failing_for_s: float | None
    """How long the lease table has failed without a success since, or None."""
    last_error: str


@dataclass(frozen=True)
class ProviderSnapshot:
    """One provider's threads, queue and tasks."""

    id: str
    type: str
    num_connections: int
    tasks_in_flight: int
    files_queued: int
    connections_open: int
    """Network connections open to the provider (a connection carries one or more connection threads' files)."""
    connections: tuple[ConnectionState, ...]
    pollers: tuple[PollerState, ...]
    dead_threads: tuple[str, ...]
    """Connection and poller threads that died (stopped ones do not count) and are not replaced yet."""
    leases: LeaseState | None


@dataclass(frozen=True)
class GatewaySnapshot:
    """Every provider of a gateway, and whether a stop was asked for."""

    stopping: bool
    providers: tuple[ProviderSnapshot, ...]


def _since(start: float | None, now: float) -> float | None:
    return None if start is None else now - start


def provider_snapshot(runtime: ProviderRuntime, now: float | None = None) -> ProviderSnapshot:
    """Read one provider's live objects (``now``: the monotonic clock, read here when not given)."""
    now = time.monotonic() if now is None else now
    connections = []
    for worker in runtime.workers:
        progress = worker.progress
        connections.append(
            ConnectionState(
                name=worker.name,
                alive=worker.thread.is_alive(),
                connected=worker.connected,
                busy=worker.current is not None,
                file=progress.freeze() if progress is not None else None,
            )
        )
    pollers = tuple(
        PollerState(t.name, p.activity_arn, t.is_alive(), _since(p.failing_since, now))
        for p in runtime.pollers
        for t in p.threads
    )
    slots = runtime.leases
    leases = None
    if slots is not None:
        leases = LeaseState(slots.held(), _since(slots.failing_since, now), slots.last_error)
    gateway = runtime.provider.gateway
    return ProviderSnapshot(
        id=runtime.provider.id,
        type=gateway.conn.type,
        num_connections=gateway.num_connections,
        tasks_in_flight=runtime.in_flight(),
        files_queued=runtime.queue.depth(),
        connections_open=sum(s.connected for s in runtime.slots),
        connections=tuple(connections),
        pollers=pollers,
        dead_threads=tuple(runtime.dead_threads()),
        leases=leases,
    )
