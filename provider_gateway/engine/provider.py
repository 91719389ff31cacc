"""Everything serving one provider: its pollers, its queue, its connection slots and their threads."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from provider_gateway.config.model import ProviderConfig
from provider_gateway.engine.connection_slot import ConnectionSlot
from provider_gateway.engine.events import Events
from provider_gateway.engine.heartbeat import Heartbeat
from provider_gateway.engine.poller import NOT_READY_WAIT_S, ActivityPoller, thread_died
from provider_gateway.engine.responder import Responder
from provider_gateway.engine.task_run import FileJob, TaskRun
from provider_gateway.engine.work_queue import WorkQueue
from provider_gateway.engine.worker import ConnectionWorker
from provider_gateway.errors import ConfigError, GatewayError, GatewayShutdown, InvalidRequest, TaskCancelled
from provider_gateway.leases import LeasedFactory, LeaseSlots, LeaseTable
from provider_gateway.messages import DownloadTask, FileResult, parse_download_task, parse_sync_task
from provider_gateway.ops.metrics import Metrics
from provider_gateway.protocols import ConnectionFactory, check_url, connection_factory, files_in_flight

log = logging.getLogger(__name__)

TaskParser = Callable[..., DownloadTask]

# GetActivityTask calls one activity keeps in flight at most. Each holds a connection of the
# Step Functions client's pool (shared by every provider's polls, heartbeats and answers) for
# up to a minute; 8 already claims 8 tasks in one round trip, more than any provider's free
# lanes usually are at one moment.
MAX_POLLS_PER_ACTIVITY = 8


class ProviderRuntime:
    """Serves one provider over exactly ``num_connections`` connection slots.

    Each slot has ``files_in_flight`` connection threads (lanes): one for
    every protocol but those whose connection carries several files at once.
    """

    def __init__(
        self,
        provider: ProviderConfig,
        sfn: Any,
        s3: Any,
        worker_name: str,
        events: Events | None = None,
        dynamodb: Any | None = None,
    ) -> None:
        self.provider = provider
        gateway = provider.gateway
        self._sfn = sfn
        self._s3 = s3
        self.events = events or Events(provider.id, Metrics())
        self._worker_name = worker_name
        self._dead_since: dict[str, float] = {}
        self.lanes_per_slot = files_in_flight(gateway.conn)
        self.queue: WorkQueue[FileJob] = WorkQueue(gateway.num_connections * self.lanes_per_slot)
        self._responder = Responder(
            sfn,
            s3,
            provider.id,
            gateway.payload_bucket,
            on_lost=lambda: self.events.metrics.answers_lost.labels(provider.id).inc(),
        )
        self._runs: set[TaskRun] = set()
        self._runs_lock = threading.Lock()
        self.leases = self._lease_slots(dynamodb)
        self._free_leases_cache: tuple[float, int] | None = None
        self._free_leases_lock = threading.Lock()
        self.slots = [self._slot() for _ in range(gateway.num_connections)]
        self.workers = [
            self._worker(slot, self._worker_thread_name(i, j))
            for i, slot in enumerate(self.slots)
            for j in range(self.lanes_per_slot)
        ]
        self._activities = {f"{provider.id}-poll-download": (gateway.activity_arn, parse_download_task)}
        if gateway.sync_activity_arn:
            self._activities[f"{provider.id}-poll-sync"] = (gateway.sync_activity_arn, parse_sync_task)
        # Download and sync tasks share the provider's queue, so they share its connections.
        self.pollers = [self._poller(name) for name in self._activities]

    def _lease_slots(self, dynamodb: Any | None) -> LeaseSlots | None:
        leases = self.provider.gateway.connection_leases
        if leases is None:
            return None
        if dynamodb is None:
            raise ConfigError(f"{self.provider.id}: connection_leases needs a DynamoDB client")
        table = LeaseTable(dynamodb, leases.table)
        return LeaseSlots(table, self.provider.id, self.provider.gateway.num_connections, leases, self.events.metrics)

    def _factory(self) -> ConnectionFactory:
        gateway = self.provider.gateway
        factory = connection_factory(gateway.conn)
        if self.leases is None:
            return factory
        holder = f"{self._worker_name} pid {os.getpid()}"
        return LeasedFactory(factory, self.leases, holder=holder, wait_s=gateway.read_timeout_s)

    def _can_claim(self) -> bool:
        """Whether a task claimed now could start.

        With connection leases, the lanes that could start a file now (idle
        lanes of open connections, and every lane of as many closed slots as
        the table has free leases) must cover the jobs queued and the claims
        reserved, the caller's included.
        """
        if self.leases is None:
            return True
        waiting = self.queue.waiting()
        startable = sum(s.lanes - s.busy() for s in self.slots if s.connected)
        closed = [s for s in self.slots if not s.connected]
        if closed and startable < waiting:
            startable += sum(s.lanes for s in closed[: self._free_leases()])
        return startable >= waiting

    def _free_leases(self) -> int:
        """The table's free slots, read at most once per NOT_READY_WAIT_S however many pollers ask."""
        assert self.leases is not None
        with self._free_leases_lock:
            now = time.monotonic()
            if self._free_leases_cache is None or now - self._free_leases_cache[0] >= NOT_READY_WAIT_S:
                self._free_leases_cache = (now, self.leases.free())
            return self._free_leases_cache[1]

    def _slot(self) -> ConnectionSlot:
        gateway = self.provider.gateway
        leases = gateway.connection_leases
        return ConnectionSlot(
            self._factory(),
            gateway.conn,
            gateway.connection_settings,
            idle_release_s=leases.idle_release_s if leases is not None else None,
        )

    def _worker_thread_name(self, slot: int, lane: int) -> str:
        name = f"{self.provider.id}-conn-{slot + 1}"
        return name if self.lanes_per_slot == 1 else f"{name}.{lane + 1}"

    def _worker(self, slot: ConnectionSlot, name: str) -> ConnectionWorker:
        gateway = self.provider.gateway
        return ConnectionWorker(
            slot,
            self.queue,
            self._s3,
            gateway.copy_options,
            name=name,
            events=self.events,
        )

    def _polls_per_activity(self) -> int:
        """Each activity's share of the lanes: the polls of one must not hold every reservation.

        A long poll keeps its lane reserved for up to a minute; with the
        download activity polling on every lane, the sync activity would
        never be asked.
        """
        return max(1, min(len(self.workers) // len(self._activities), MAX_POLLS_PER_ACTIVITY))

    def _poller(self, name: str) -> ActivityPoller:
        arn, parse = self._activities[name]
        return ActivityPoller(
            self._sfn,
            arn,
            self.queue,
            functools.partial(self._start_task, parse=parse),
            self._refuse,
            worker_name=self._worker_name,
            name=name,
            on_error=lambda: self.events.metrics.poll_errors.labels(self.provider.id, arn).inc(),
            ready=self._can_claim,
            concurrency=self._polls_per_activity(),
        )

    def start(self) -> None:
        """Start the connection threads, then the pollers."""
        if self.leases is not None:
            self.leases.start()
        for worker in self.workers:
            worker.start()
        for poller in self.pollers:
            poller.start()
        log.info(
            "serving provider %s (%s) with %d connection(s), %d file(s) in flight each, from %s",
            self.provider.id,
            self.provider.gateway.conn.type,
            len(self.slots),
            self.lanes_per_slot,
            self.provider.gateway.activity_arn,
        )

    def _start_task(self, token: str, raw_input: str | None, parse: TaskParser) -> list[FileJob]:
        """The jobs of a claimed task, its heartbeat started; raises InvalidRequest for input it cannot take.

        Anything else raised here leaves nothing running: the poller answers the task.
        """
        task = self._parse(raw_input, parse)
        gateway = self.provider.gateway
        heartbeat = Heartbeat(
            self._sfn,
            token,
            gateway.heartbeat_interval_s,
            on_lost=lambda code: run.cancel(
                TaskCancelled(f"Step Functions answered {code}")
            ),  # run is bound by start()
            name=f"{self.provider.id}-heartbeat-{token[-8:]}",
        )
        run = TaskRun(
            token,
            task,
            self._responder,
            gateway.failure_mode,
            label=token[-12:],
            on_answered=self._answered,
            heartbeat=heartbeat,
        )
        try:
            jobs = run.jobs()
            with self._runs_lock:
                self._runs.add(run)
            heartbeat.start()
            self.events.task_claimed(run.label, task.kind, len(task.files))
        except BaseException:
            heartbeat.stop()
            with self._runs_lock:
                self._runs.discard(run)
            raise
        if not jobs:
            run.answer()  # nothing to copy: answered now, not never
        return jobs

    def _parse(self, raw_input: str | None, parse: TaskParser) -> DownloadTask:
        gateway = self.provider.gateway
        try:
            return parse(
                raw_input,
                url_check=functools.partial(check_url, gateway.conn),
                allowed_buckets=gateway.allowed_buckets,
                read_pointer=self._read_pointer,
                payload_bucket=gateway.payload_bucket,
            )
        except GatewayError:
            raise
        except Exception as exc:  # whatever the parser could not take is the request's fault
            log.warning("the task message could not be parsed", exc_info=True)
            raise InvalidRequest(f"the task input could not be read: {type(exc).__name__}: {exc}"[:1000]) from exc

    def _answered(self, run: TaskRun, error_code: str | None, files: int, failed: int) -> None:
        with self._runs_lock:
            self._runs.discard(run)
        self.events.task_answered(run.label, error_code, files, failed)

    def _read_pointer(self, bucket: str, key: str, limit: int) -> bytes:
        body = self._s3.get_object(Bucket=bucket, Key=key)["Body"]
        with contextlib.closing(body):  # the rest of a larger object is never read
            return bytes(body.read(limit))

    def _refuse(self, token: str, error: GatewayError) -> None:
        self._responder.failure(token, error.code, error.message)

    def stop_polling(self) -> None:
        """Claim no more tasks."""
        for poller in self.pollers:
            poller.stop()

    def in_flight(self) -> int:
        """How many claimed tasks are not answered yet."""
        with self._runs_lock:
            return len(self._runs)

    def cancel_all(self, reason: GatewayError) -> None:
        """Cancel every task in flight and answer the files still queued."""
        if self.leases is not None:
            self.leases.closing.set()
        with self._runs_lock:
            runs = list(self._runs)
        for run in runs:
            run.cancel(reason)
        for job in self.queue.drain():
            job.run.file_done(job.request, FileResult.failed(reason))

    def give_up_all(self, reason: GatewayError) -> list[TaskRun]:
        """Answer every task still in flight with ``reason`` without waiting for its transfers; returns them."""
        with self._runs_lock:
            runs = list(self._runs)
        for run in runs:
            threading.Thread(target=run.give_up, args=(reason,), name=f"give-up-{run.label}", daemon=True).start()
        return runs

    def dead_threads(self) -> list[str]:
        """Names of connection and poller threads that have died (stopped ones do not count)."""
        # A thread not started yet (the ops server answers while the gateway starts) has not died.
        dead = [w.name for w in self.workers if thread_died(w.thread) and not w.stopping.is_set()]
        dead += [name for p in self.pollers for name in p.dead_threads()]
        return dead

    def supervise(self, restart_delay_s: float) -> None:
        """Replace threads that died, each ``restart_delay_s`` after its death was seen.

        The delay keeps a thread that dies at once from spinning, and lets
        health checks see the failure before it is repaired.
        """
        now = time.monotonic()
        for name in self.dead_threads():
            first_seen = self._dead_since.setdefault(name, now)
            if now - first_seen < restart_delay_s:
                continue
            del self._dead_since[name]
            poller = next((p for p in self.pollers if name in p.thread_names), None)
            kind = "poller" if poller is not None else "connection"
            log.error("%s thread %s died: replacing it", kind, name)
            self.events.metrics.thread_restarts.labels(self.provider.id, kind).inc()
            if poller is not None:
                poller.restart(name)
            else:
                dead = next(w for w in self.workers if w.name == name)
                replacement = self._worker(dead.slot, name)
                self.workers = [replacement if w is dead else w for w in self.workers]
                replacement.start()

    def stop_workers(self, timeout_s: float) -> None:
        """Stop the connection threads and wait for them up to ``timeout_s``."""
        for worker in self.workers:
            worker.stop()
        deadline = time.monotonic() + timeout_s
        for worker in self.workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        if self.leases is not None:
            self.leases.flush()


def shutdown_error() -> GatewayShutdown:
    """The error in-flight tasks get when the grace period ends."""
    return GatewayShutdown("the gateway stopped before the task finished")
