"""The gateway's snapshot, built from fake connection threads and pollers, and what ops reads of it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from provider_gateway.engine.events import FileProgress
from provider_gateway.engine.snapshot import GatewaySnapshot, ProviderSnapshot, provider_snapshot
from provider_gateway.engine.work_queue import WorkQueue
from provider_gateway.ops.health import health, status
from provider_gateway.ops.metrics import GAUGES, Metrics

NOW = 1000.0


@dataclass
class FakeThread:
    alive: bool = True
    ident: int | None = 1  # None until started

    def is_alive(self) -> bool:
        return self.alive


@dataclass
class FakeWorker:
    name: str
    connected: bool = False
    current: object | None = None
    progress: FileProgress | None = None
    thread: FakeThread = field(default_factory=FakeThread)


@dataclass
class FakePoller:
    name: str
    activity_arn: str = "arn:aws:states:us-east-1:123456789012:activity:a"
    failing_since: float | None = None
    thread: FakeThread = field(default_factory=FakeThread)


@dataclass
class FakeLeases:
    count: int
    failing_since: float | None = None
    last_error: str = ""

    def held(self) -> int:
        return self.count


@dataclass
class FakeRuntime:
    workers: list[FakeWorker]
    pollers: list[FakePoller]
    leases: FakeLeases | None = None
    queued: int = 0
    tasks: int = 0
    dead: list[str] = field(default_factory=list)
    provider: Any = field(
        default_factory=lambda: SimpleNamespace(
            id="PROV", gateway=SimpleNamespace(num_connections=3, conn=SimpleNamespace(type="ftp"))
        )
    )

    def __post_init__(self) -> None:
        self.queue: WorkQueue[int] = WorkQueue(len(self.workers))
        self.queue.reserve(threading.Event())
        self.queue.fulfil(range(self.queued))

    def in_flight(self) -> int:
        return self.tasks

    def dead_threads(self) -> list[str]:
        return self.dead


def _progress(bytes_read: int, size: int | None) -> FileProgress:
    return FileProgress(
        task="task-1",
        url="ftp://provider.test/dir/a.h5",
        target="s3://bucket/dir/a.h5",
        connection="PROV-conn-1",
        size=size,
        bytes=bytes_read,
        started=time.monotonic() - 2.0,
    )


def _snapshot(runtime: FakeRuntime) -> ProviderSnapshot:
    return provider_snapshot(runtime, now=NOW)  # type: ignore[arg-type]


def _busy_runtime() -> FakeRuntime:
    return FakeRuntime(
        workers=[
            FakeWorker("PROV-conn-1", connected=True, current=object(), progress=_progress(3_000_000, 4_000_000)),
            FakeWorker("PROV-conn-2", connected=True),
            FakeWorker("PROV-conn-3", thread=FakeThread(alive=False)),
        ],
        pollers=[FakePoller("PROV-poll-download", failing_since=NOW - 200), FakePoller("PROV-poll-sync")],
        leases=FakeLeases(2, failing_since=NOW - 7, last_error="ThrottlingException"),
        queued=2,
        tasks=4,
        dead=["PROV-conn-3"],
    )


def test_the_snapshot_reads_every_thread_the_queue_the_tasks_and_the_leases() -> None:
    snap = _snapshot(_busy_runtime())

    assert (snap.id, snap.type, snap.num_connections) == ("PROV", "ftp", 3)
    assert (snap.tasks_in_flight, snap.files_queued, snap.dead_threads) == (4, 2, ("PROV-conn-3",))
    busy, idle, dead = snap.connections
    assert (busy.name, busy.alive, busy.connected, busy.busy) == ("PROV-conn-1", True, True, True)
    assert busy.file is not None
    assert (busy.file.bytes, busy.file.size, busy.file.percent) == (3_000_000, 4_000_000, 75.0)
    assert busy.file.task == "task-1"
    assert (idle.busy, idle.connected, idle.file) == (False, True, None)
    assert (dead.alive, dead.connected) == (False, False)
    assert [(p.name, p.failing_for_s) for p in snap.pollers] == [("PROV-poll-download", 200), ("PROV-poll-sync", None)]
    assert snap.leases is not None
    assert (snap.leases.held, snap.leases.failing_for_s, snap.leases.last_error) == (2, 7, "ThrottlingException")


def test_the_snapshot_does_not_follow_the_threads_after_it_is_taken() -> None:
    runtime = _busy_runtime()
    snap = _snapshot(runtime)
    progress = runtime.workers[0].progress
    assert progress is not None
    progress.bytes = 4_000_000
    runtime.workers[1].current = object()
    assert snap.connections[0].file is not None and snap.connections[0].file.bytes == 3_000_000
    assert not snap.connections[1].busy


def test_threads_not_started_yet_have_not_died() -> None:
    runtime = FakeRuntime(
        workers=[FakeWorker("PROV-conn-1", thread=FakeThread(alive=False, ident=None))],
        pollers=[FakePoller("PROV-poll-download", thread=FakeThread(alive=False, ident=None))],
        dead=["PROV-conn-1", "PROV-poll-download"],
    )
    assert _snapshot(runtime).dead_threads == ()


def test_health_names_the_dead_thread_the_failing_poll_and_the_failing_lease_table() -> None:
    snap = GatewaySnapshot(stopping=True, providers=(_snapshot(_busy_runtime()),))

    report = health(snap, unreachable_after_s=180)

    assert report["healthy"] is False and report["stopping"] is True
    assert report["problems"] == [
        "PROV: thread PROV-conn-3 has died",
        "PROV: GetActivityTask on arn:aws:states:us-east-1:123456789012:activity:a failing for 200 s",
        "PROV: lease table failing for 7 s, no new connections (ThrottlingException)",
    ]
    assert len(health(snap, unreachable_after_s=300)["problems"]) == 2  # polling has not failed that long yet


def test_a_gateway_without_problems_is_healthy() -> None:
    runtime = FakeRuntime(workers=[FakeWorker("PROV-conn-1")], pollers=[FakePoller("PROV-poll-download")])
    report = health(GatewaySnapshot(False, (_snapshot(runtime),)))
    assert report == {"healthy": True, "stopping": False, "problems": []}


def test_status_shows_the_file_of_a_busy_connection_only() -> None:
    document = status(GatewaySnapshot(False, (_snapshot(_busy_runtime()),)))

    [provider] = document["providers"]
    assert {k: provider[k] for k in ("id", "type", "num_connections", "leases_held", "tasks_in_flight")} == {
        "id": "PROV",
        "type": "ftp",
        "num_connections": 3,
        "leases_held": 2,
        "tasks_in_flight": 4,
    }
    assert provider["files_queued"] == 2
    busy, idle, dead = provider["connections"]
    assert busy["state"] == "busy" and busy["file"] == "ftp://provider.test/dir/a.h5" and busy["percent"] == 75.0
    assert busy["bytes"] == 3_000_000 and busy["size"] == 4_000_000 and 0 < busy["mb_per_s"] <= 1.5
    assert idle == {"thread": "PROV-conn-2", "alive": True, "connected": True, "state": "idle"}
    assert dead["alive"] is False


def test_the_gauges_are_read_from_the_snapshot_at_each_scrape() -> None:
    runtime = _busy_runtime()
    metrics = Metrics()
    metrics.watch(lambda: GatewaySnapshot(False, (_snapshot(runtime),)))

    def scrape() -> dict[str, float]:
        text = generate_latest(metrics.registry).decode()
        return {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.labels == {"provider": "PROV"} and s.name in {name for name, _, _ in GAUGES}
        }

    assert scrape() == {
        "provider_gateway_connections_open": 2,
        "provider_gateway_connections_busy": 1,
        "provider_gateway_leases_held": 2,
        "provider_gateway_tasks_in_flight": 4,
        "provider_gateway_threads_dead": 1,
    }
    runtime.workers[1].current = object()
    runtime.tasks = 5
    after = scrape()
    assert (after["provider_gateway_connections_busy"], after["provider_gateway_tasks_in_flight"]) == (2, 5)
