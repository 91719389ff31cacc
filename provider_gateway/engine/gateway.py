"""The gateway: every configured provider served until a stop is asked for."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from provider_gateway import __version__
from provider_gateway.config.model import Config
from provider_gateway.engine.events import Events
from provider_gateway.engine.provider import ProviderRuntime, shutdown_error
from provider_gateway.engine.snapshot import GatewaySnapshot, provider_snapshot
from provider_gateway.ops.metrics import Metrics

log = logging.getLogger(__name__)

# After the grace period, how long cancelled transfers get to abort and answer.
CANCEL_WAIT_S = 5.0
# Then, how long the answers of tasks whose transfers are stuck get.
GIVE_UP_WAIT_S = 2.0
SUPERVISE_EVERY_S = 1.0
# A thread that died is replaced this long after its death was seen.
RESTART_DELAY_S = 5.0


class Gateway:
    """Runs a :class:`ProviderRuntime` per provider; :meth:`stop` ends it in order.

    The first stop is warm: pollers stop claiming at once, tasks in flight get
    their providers' ``shutdown_grace_s`` to finish, then are cancelled and
    answered GatewayShutdown. :meth:`stop_now` (a second signal) skips the
    grace period but still answers every task.
    """

    def __init__(
        self,
        config: Config,
        sfn: Any,
        s3: Any,
        dynamodb: Any | None = None,
        worker_name: str | None = None,
        metrics: Metrics | None = None,
        progress_interval_s: float = 30.0,
        restart_delay_s: float = RESTART_DELAY_S,
    ) -> None:
        name = worker_name or f"provider-gateway/{__version__}@{socket.gethostname()}"
        self.metrics = metrics or Metrics()
        self.runtimes = [
            ProviderRuntime(
                p, sfn, s3, worker_name=name, events=Events(p.id, self.metrics, progress_interval_s), dynamodb=dynamodb
            )
            for p in config.providers
        ]
        self.metrics.watch(self.snapshot)
        self._restart_delay_s = restart_delay_s
        self._stop_asked = threading.Event()
        self._hard = threading.Event()

    def start(self) -> None:
        """Start serving every provider."""
        log.info("provider-gateway %s starting %d provider(s)", __version__, len(self.runtimes))
        for runtime in self.runtimes:
            runtime.start()

    def stop(self) -> None:
        """Ask for a warm stop (safe from a signal handler: only sets a flag)."""
        self._stop_asked.set()

    def stop_requested(self) -> bool:
        """Whether a stop was already asked for."""
        return self._stop_asked.is_set()

    def stop_now(self) -> None:
        """Ask for an immediate stop: tasks in flight are cancelled at once."""
        self._hard.set()
        self._stop_asked.set()

    def serve_forever(self) -> None:
        """Start, serve until :meth:`stop`, then shut down in order."""
        self.start()
        while not self._stop_asked.wait(SUPERVISE_EVERY_S):
            for runtime in self.runtimes:
                runtime.supervise(self._restart_delay_s)
        self._shutdown()

    def _shutdown(self) -> None:
        log.info("stopping: no more tasks will be claimed")
        for runtime in self.runtimes:
            runtime.stop_polling()
        grace = max((r.provider.gateway.shutdown_grace_s for r in self.runtimes), default=0.0)
        deadline = time.monotonic() + grace
        while self._in_flight() and time.monotonic() < deadline and not self._hard.is_set():
            self._hard.wait(0.2)
        # One deadline for the cancelled tasks' answers and the threads' ends: grace + CANCEL_WAIT_S at most.
        cancel_deadline = time.monotonic() + CANCEL_WAIT_S
        if self._in_flight():
            log.warning("cancelling %d task(s) still in flight: GatewayShutdown", self._in_flight())
            for runtime in self.runtimes:
                runtime.cancel_all(shutdown_error())
            while self._in_flight() and time.monotonic() < cancel_deadline:
                time.sleep(0.05)
            self._give_up()
        for runtime in self.runtimes:
            runtime.stop_workers(timeout_s=max(1.0, cancel_deadline - time.monotonic()))
        log.info("stopped")

    def _give_up(self) -> None:
        """Answer the tasks whose transfers did not end when aborted, waiting at most GIVE_UP_WAIT_S."""
        runs = [run for runtime in self.runtimes for run in runtime.give_up_all(shutdown_error())]
        if runs:
            log.error("%d task(s) still in flight after their connections were cut: answering them now", len(runs))
        deadline = time.monotonic() + GIVE_UP_WAIT_S
        for run in runs:
            run.finished.wait(max(0.0, deadline - time.monotonic()))

    def stuck_threads(self) -> list[str]:
        """After :meth:`serve_forever`: threads that would hold the process's exit.

        Connection threads still alive after the stop are stuck in a transfer
        (a protocol whose abort did not end its read): the transfer manager's
        threads they wait on are joined at exit. Non-daemon threads would be too.
        """
        workers = [w.thread for r in self.runtimes for w in r.workers if w.thread.is_alive()]
        current = threading.current_thread()
        others = [t for t in threading.enumerate() if t is not current and not t.daemon and t.is_alive()]
        return [t.name for t in (*workers, *others)]

    def snapshot(self) -> GatewaySnapshot:
        """Every provider's threads, queue and tasks as they are now: what health, status and gauges read."""
        now = time.monotonic()
        return GatewaySnapshot(self.stop_requested(), tuple(provider_snapshot(r, now) for r in self.runtimes))

    def _in_flight(self) -> int:
        return sum(r.in_flight() for r in self.runtimes)
