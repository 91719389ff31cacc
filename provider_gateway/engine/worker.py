"""A connection thread: copies one file at a time through its lane of a connection slot."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from provider_gateway.engine.connection_slot import ConnectionSlot, Lane
from provider_gateway.engine.events import Events, FileProgress
from provider_gateway.engine.task_run import FileJob, TaskRun
from provider_gateway.engine.work_queue import WorkQueue
from provider_gateway.errors import InternalError, codes_where
from provider_gateway.messages import FileResult
from provider_gateway.protocols import Connection
from provider_gateway.transfer.copy import CopyOptions, copy_file, settle

log = logging.getLogger(__name__)

# Small files whose PutObject may still run while the connection fetches the next ones.
PUTS_IN_FLIGHT = 2

# A failure with one of these codes may have broken the connection: replace it (see GatewayError.drops_connection).
_RECONNECT_CODES = frozenset(codes_where(lambda error: error.drops_connection))


class ConnectionWorker:
    """Serves file jobs from the queue through a lane of ``slot``, whose connection opens lazily and stays."""

    def __init__(
        self,
        slot: ConnectionSlot,
        queue: WorkQueue[FileJob],
        s3: Any,
        options: CopyOptions,
        name: str,
        events: Events,
    ) -> None:
        self.slot = slot
        self._lane: Lane = slot.lane()
        self._queue = queue
        self._s3 = s3
        self._options = options
        self._events = events
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.current: FileJob | None = None
        self.progress: FileProgress | None = None
        self.name = name
        self._puts = ThreadPoolExecutor(max_workers=PUTS_IN_FLIGHT, thread_name_prefix=f"{name}-put")
        self._put_slots = threading.BoundedSemaphore(PUTS_IN_FLIGHT)

    def start(self) -> None:
        self.thread.start()

    @property
    def connected(self) -> bool:
        """Whether the thread's slot holds an open connection to the provider."""
        return self.slot.connected

    def stop(self) -> None:
        """Finish the current file (or be cancelled through its task), then exit."""
        self.stopping.set()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                job = self._queue.get()
                if job is None:
                    self.slot.release_if_idle()
                    continue
                self.current = job
                try:
                    with self._lane.serving():
                        self._serve(job)
                except Exception as exc:  # a bug or a hostile message: the file is answered, the thread lives
                    log.exception("serving a file failed")
                    self._lane.drop()
                    job.run.file_done(job.request, _internal_failure(exc))
                except BaseException as exc:
                    # The thread is dying (killed): the file still gets its answer.
                    job.run.file_done(job.request, _internal_failure(exc, "the connection thread died: "))
                    raise
                finally:
                    self.current = None
                    self.progress = None
                    self._queue.done()
        finally:
            self._puts.shutdown(wait=True)  # every file handed off is answered before the thread ends
            self._lane.close()

    def _upload(self, put: Callable[[], None]) -> Future[None]:
        """Run a small file's PutObject in the background; blocks while PUTS_IN_FLIGHT are running."""
        self._put_slots.acquire()
        try:
            future = self._puts.submit(put)
        except BaseException:
            self._put_slots.release()
            raise
        future.add_done_callback(lambda _: self._put_slots.release())
        return future

    def _serve(self, job: FileJob) -> None:
        run, request = job.run, job.request
        reason = run.cancelled()
        if reason is not None:
            run.file_done(request, FileResult.failed(reason))
            return
        progress = self._events.file_started(run.label, request)
        self.progress = progress

        def on_size(size: int | None) -> None:
            progress.size, progress.bytes = size, 0  # also a restart from byte 0

        with _Serving(run, self._lane.connect) as connect:
            outcome = copy_file(
                connect,
                request,
                self._s3,
                self._options,
                run.stop,
                run.cancelled,
                progress=lambda amount: self._events.bytes_read(progress, amount),
                on_size=on_size,
                uploader=self._upload,
            )
        if not outcome.result.success and outcome.result.error_code in _RECONNECT_CODES:
            self._lane.drop()
        started = time.monotonic() - outcome.seconds

        def finish(_: object = None) -> None:
            try:
                result = settle(outcome)
                self._events.file_finished(progress, result, time.monotonic() - started)
            except Exception as exc:
                log.exception("finishing a file failed")
                result = _internal_failure(exc)
            run.file_done(request, result)

        if outcome.pending is None:
            finish()
        else:
            outcome.pending.add_done_callback(finish)


class _Serving:
    """While a file is copied, the connection serving it is attached to its task, so a cancel aborts it.

    Entering returns the ``connect`` the copy calls: it attaches each
    connection it hands out (a reconnect replaces the attached one).
    """

    def __init__(self, run: TaskRun, connect: Callable[[], Connection]) -> None:
        self._run = run
        self._connect = connect
        self._attached: Connection | None = None

    def __enter__(self) -> Callable[[], Connection]:
        return self.connect

    def connect(self) -> Connection:
        connection = self._connect()
        if connection is not self._attached:
            self._release()
            self._attached = connection
            self._run.attach(connection)
        return connection

    def _release(self) -> None:
        if self._attached is not None:
            self._run.detach(self._attached)
            self._attached = None

    def __exit__(self, *exc: object) -> None:
        self._release()


def _internal_failure(exc: BaseException, prefix: str = "") -> FileResult:
    error = InternalError(f"{prefix}{type(exc).__name__}: {exc}"[:1000])
    return FileResult.failed(error)
