"""A connection thread: owns one provider connection and copies one file at a time."""

from __future__ import annotations

import logging
import threading
from typing import Any

from provider_gateway.config.model import ConnConfig
from provider_gateway.engine.task_run import FileJob
from provider_gateway.engine.work_queue import WorkQueue
from provider_gateway.messages import FileResult, redact_url
from provider_gateway.protocols import Connection, ConnectionFactory, ConnectionSettings
from provider_gateway.transfer.copy import CopyOptions, copy_file

log = logging.getLogger(__name__)

# A failure with one of these codes may have broken the connection: replace it.
_RECONNECT_CODES = {"SourceUnavailable", "GatewayInternalError", "TaskCancelled", "GatewayShutdown"}


class ConnectionWorker:
    """Serves file jobs from the queue over a connection it opens lazily and keeps."""

    def __init__(
        self,
        conn_config: ConnConfig,
        factory: ConnectionFactory,
        settings: ConnectionSettings,
        queue: WorkQueue[FileJob],
        s3: Any,
        options: CopyOptions,
        name: str,
    ) -> None:
        self._conn_config = conn_config
        self._factory = factory
        self._settings = settings
        self._queue = queue
        self._s3 = s3
        self._options = options
        self._connection: Connection | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.current: FileJob | None = None

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Finish the current file (or be cancelled through its task), then exit."""
        self.stopping.set()

    def _connect(self) -> Connection:
        if self._connection is not None and not self._connection.check():
            self._disconnect()
        if self._connection is None:
            # The old connection is closed before a new one opens: never more than one.
            self._connection = self._factory(self._conn_config, self._settings)
        return self._connection

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # closing a broken connection may fail: it is gone either way
                log.debug("closing a connection failed", exc_info=True)

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                job = self._queue.get()
                if job is None:
                    continue
                self.current = job
                try:
                    self._serve(job)
                finally:
                    self.current = None
                    self._queue.done()
        finally:
            self._disconnect()

    def _serve(self, job: FileJob) -> None:
        run, request = job.run, job.request
        reason = run.cancelled()
        if reason is not None:
            run.file_done(request, FileResult(False, error_code=reason.code, error=reason.message))
            return
        log.info("task %s: copying %s -> s3://%s/%s", run.label, redact_url(request.url), request.bucket, request.key)
        outcome = copy_file(self._connect, request, self._s3, self._options, run.stop, run.cancelled)
        result = outcome.result
        if result.success:
            rate = result.bytes / outcome.seconds / 1e6 if outcome.seconds > 0 else 0.0
            log.info("task %s: copied %s (%d bytes, %.1f MB/s)", run.label, redact_url(request.url), result.bytes, rate)
        else:
            log.warning(
                "task %s: %s failed: %s %s", run.label, redact_url(request.url), result.error_code, result.error
            )
            if result.error_code in _RECONNECT_CODES:
                self._disconnect()
        run.file_done(request, result)
