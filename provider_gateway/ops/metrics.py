"""Prometheus metrics of a gateway, in a registry of its own.

Counters move with task events; the gauges (connections open and busy, tasks
in flight, threads dead) are read from a snapshot of the running gateway at
each scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from provider_gateway.messages import FileResult

if TYPE_CHECKING:
    from provider_gateway.engine.snapshot import GatewaySnapshot, ProviderSnapshot

TRANSFER_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600)

# The gauges, per provider: (name, help, value read from the provider's snapshot).
GAUGES: tuple[tuple[str, str, Callable[[ProviderSnapshot], float]], ...] = (
    (
        "provider_gateway_connections_open",
        "Connections open to the provider.",
        lambda p: p.connections_open,
    ),
    (
        "provider_gateway_connections_busy",
        "Connection threads copying a file.",
        lambda p: sum(c.busy for c in p.connections),
    ),
    (
        "provider_gateway_leases_held",
        "Connection slot leases this gateway holds (providers with connection_leases).",
        lambda p: p.leases.held if p.leases is not None else 0,
    ),
    (
        "provider_gateway_tasks_in_flight",
        "Claimed tasks not answered yet.",
        lambda p: p.tasks_in_flight,
    ),
    (
        "provider_gateway_threads_dead",
        "Connection and poller threads that died and are not replaced yet.",
        lambda p: len(p.dead_threads),
    ),
)


class Metrics:
    """The gateway's counters and histogram; :meth:`watch` adds the live gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.bytes = Counter(
            "provider_gateway_bytes",
            "Bytes copied into S3, counted when a file is complete and verified.",
            ["provider"],
            registry=self.registry,
        )
        self.files = Counter(
            "provider_gateway_files",
            "Files finished, by outcome (copied, skipped, failed) and error code.",
            ["provider", "outcome", "error_code"],
            registry=self.registry,
        )
        self.tasks = Counter(
            "provider_gateway_tasks",
            "Tasks answered, by outcome (success, failure) and the error code sent.",
            ["provider", "outcome", "error_code"],
            registry=self.registry,
        )
        self.transfer_seconds = Histogram(
            "provider_gateway_transfer_seconds",
            "Time to copy one file, success or not.",
            ["provider"],
            buckets=TRANSFER_BUCKETS,
            registry=self.registry,
        )
        self.poll_errors = Counter(
            "provider_gateway_poll_errors",
            "GetActivityTask calls that failed.",
            ["provider", "activity"],
            registry=self.registry,
        )
        self.answers_lost = Counter(
            "provider_gateway_answers_lost",
            "Claimed tasks whose SendTaskSuccess/SendTaskFailure failed for good (after retries).",
            ["provider"],
            registry=self.registry,
        )
        self.thread_restarts = Counter(
            "provider_gateway_thread_restarts",
            "Connection or poller threads that died and were replaced.",
            ["provider", "kind"],
            registry=self.registry,
        )

        self.lease_waits = Counter(
            "provider_gateway_lease_waits",
            "Connections that had to wait for a free slot in the lease table.",
            ["provider"],
            registry=self.registry,
        )
        self.leases_taken = Counter(
            "provider_gateway_leases_taken",
            "Slot leases taken (one per connection opened under a lease).",
            ["provider"],
            registry=self.registry,
        )
        self.lease_losses = Counter(
            "provider_gateway_lease_losses",
            "Leases lost before their connection closed (not renewed in time, or taken over): the connection was cut.",
            ["provider"],
            registry=self.registry,
        )
        self.lease_errors = Counter(
            "provider_gateway_lease_errors",
            "Calls to the lease table that failed.",
            ["provider"],
            registry=self.registry,
        )
        self.lease_renew_seconds = Histogram(
            "provider_gateway_lease_renew_seconds",
            "Time of one lease renewal (UpdateItem), failed ones included.",
            ["provider"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )

    def file_done(self, provider: str, result: FileResult, seconds: float) -> None:
        if result.success:
            outcome = "skipped" if result.version_skip else "copied"
            self.bytes.labels(provider).inc(result.bytes)
        else:
            outcome = "failed"
        self.files.labels(provider, outcome, result.error_code or "").inc()
        self.transfer_seconds.labels(provider).observe(seconds)

    def task_done(self, provider: str, error_code: str | None) -> None:
        self.tasks.labels(provider, "failure" if error_code else "success", error_code or "").inc()

    def watch(self, snapshot: Callable[[], GatewaySnapshot]) -> None:
        """Serve the :data:`GAUGES`, read from ``snapshot()`` at each scrape."""
        self.registry.register(_LiveGauges(snapshot))


class _LiveGauges(Collector):
    def __init__(self, snapshot: Callable[[], GatewaySnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Any]:
        providers = self._snapshot().providers
        for name, documentation, value in GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=["provider"])
            for provider in providers:
                family.add_metric([provider.id], value(provider))
            yield family
