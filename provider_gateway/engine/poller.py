"""Polling threads per activity: each claims a task only when a lane can take it now.

Several GetActivityTask calls run at once per activity (the threads of one
:class:`ActivityPoller`), each under a reservation of a free lane in the
provider's work queue: k free lanes mean up to k polls in flight, and never
more tasks claimed than can start. The polling threads are not the threads
that copy files.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from provider_gateway.engine.work_queue import WorkQueue
from provider_gateway.errors import GatewayError, GatewayShutdown, InternalError

log = logging.getLogger(__name__)

POLL_ERROR_BACKOFF_S = (1, 2, 5, 10, 30)
# How long a poller waits before asking again whether a claimed task could start (no slot free).
NOT_READY_WAIT_S = 1.0

# Builds the jobs of a claimed task (starting its heartbeat), or raises (InvalidRequest for bad input).
TaskStarter = Callable[[str, str | None], list[Any]]
# Answers a claimed task that will not run with a failure.
TaskRefuser = Callable[[str, GatewayError], None]


class ActivityPoller:
    """Long-polls GetActivityTask for one activity into the provider's work queue, ``concurrency`` polls at once.

    Each thread backs off on its own failures; ``failing_since`` is the
    activity's: set by the first failure, cleared by any poll that goes through.
    """

    def __init__(
        self,
        sfn: Any,
        activity_arn: str,
        queue: WorkQueue[Any],
        start_task: TaskStarter,
        refuse_task: TaskRefuser,
        worker_name: str,
        name: str,
        on_error: Callable[[], None] | None = None,
        backoff_s: Sequence[float] = POLL_ERROR_BACKOFF_S,
        wait: Callable[[float], object] | None = None,
        ready: Callable[[], bool] | None = None,
        concurrency: int = 1,
    ) -> None:
        self._sfn = sfn
        self._arn = activity_arn
        self._queue = queue
        self._start_task = start_task
        self._refuse = refuse_task
        self._worker_name = worker_name
        self.stopping = threading.Event()
        self.thread_names = [name] if concurrency <= 1 else [f"{name}-{i + 1}" for i in range(concurrency)]
        """The names of its polling threads."""
        self._threads = {n: threading.Thread(target=self._run, name=n, daemon=True) for n in self.thread_names}
        self._lock = threading.Lock()
        self.claimed = 0
        self.name = name
        self.activity_arn = activity_arn
        self._on_error = on_error
        self._backoff_s = tuple(backoff_s)
        self._wait = wait or self.stopping.wait
        """Sleeps between failed polls (the stop event's wait, so a stop cuts it short)."""
        self._ready = ready
        self.failing_since: float | None = None
        """When GetActivityTask began failing without a success since (monotonic), or None."""

    @property
    def threads(self) -> list[threading.Thread]:
        """Its polling threads."""
        return list(self._threads.values())

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Stop claiming; a long poll already under way is answered GatewayShutdown if it brings a task."""
        self.stopping.set()

    def join(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for every polling thread to end (after :meth:`stop`)."""
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def dead_threads(self) -> list[str]:
        """Names of polling threads that died (none once stopping; one not started yet has not died)."""
        if self.stopping.is_set():
            return []
        return [name for name, thread in self._threads.items() if thread_died(thread)]

    def restart(self, name: str) -> None:
        """Replace the dead polling thread ``name`` with a new one."""
        if self._threads[name].is_alive():
            return
        self._threads[name] = threading.Thread(target=self._run, name=name, daemon=True)
        self._threads[name].start()

    def _run(self) -> None:
        failures = 0
        while self._queue.reserve(self.stopping):
            jobs: list[Any] = []
            try:
                if self._ready is not None and not self._ready():
                    self.stopping.wait(NOT_READY_WAIT_S)  # the reservation is given back below
                    continue
                jobs = self._claim()
                failures = 0
                self.failing_since = None
            except (ClientError, BotoCoreError) as exc:
                delay = self._backoff_s[min(failures, len(self._backoff_s) - 1)]
                failures += 1
                with self._lock:
                    if self.failing_since is None:
                        self.failing_since = time.monotonic()
                if self._on_error is not None:
                    self._on_error()
                log.error("GetActivityTask on %s failed (retrying in %ss): %s", self._arn, delay, exc)
                self._wait(delay)
            except Exception:  # a bug must not kill the poller: log it and keep polling
                log.exception("unexpected failure while claiming a task")
                self._wait(self._backoff_s[0])
            finally:
                self._queue.fulfil(jobs)

    def _claim(self) -> list[Any]:
        response = self._sfn.get_activity_task(activityArn=self._arn, workerName=self._worker_name)
        token = response.get("taskToken")
        if not token:
            return []
        with self._lock:
            self.claimed += 1
        if self.stopping.is_set():
            self._refuse(token, GatewayShutdown("the gateway was stopping when this task arrived"))
            return []
        return self._start(token, response.get("input"))

    def _start(self, token: str, raw_input: str | None) -> list[Any]:
        """The task's jobs; a task that cannot start is answered here, whatever went wrong."""
        try:
            return self._start_task(token, raw_input)
        except GatewayError as exc:
            log.warning("refused a task (%s): %s", exc.code, exc.message)
            self._refuse(token, exc)
        except Exception as exc:  # a bug must not leave the claimed task unanswered
            log.exception("starting a claimed task failed")
            self._refuse(token, InternalError(f"the task could not be started: {type(exc).__name__}: {exc}"[:1000]))
        return []


def thread_died(thread: threading.Thread) -> bool:
    """Whether ``thread`` was started and has ended."""
    return thread.ident is not None and not thread.is_alive()
