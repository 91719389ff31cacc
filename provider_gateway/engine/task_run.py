"""One claimed task in flight: its files, their results, and its single answer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from provider_gateway.engine.heartbeat import Heartbeat
from provider_gateway.engine.responder import Responder, bounded_cause
from provider_gateway.errors import GatewayError
from provider_gateway.messages import (
    DownloadTask,
    FileRequest,
    FileResult,
    file_output,
    task_output,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileJob:
    """One file of a task, as queued for a connection thread."""

    run: TaskRun
    request: FileRequest


class TaskRun:
    """Collects the results of a task's files and answers Step Functions exactly once."""

    def __init__(
        self,
        token: str,
        task: DownloadTask,
        responder: Responder,
        failure_mode: Literal["task", "per_file"],
        label: str,
    ) -> None:
        self.token = token
        self.task = task
        self.label = label
        self._responder = responder
        self._failure_mode = failure_mode
        self._results: list[FileResult | None] = [None] * len(task.files)
        self._remaining = len(task.files)
        self._lock = threading.Lock()
        self._answered = False
        self._cancel_reason: GatewayError | None = None
        self.stop = threading.Event()
        """Set when the task is cancelled: cuts backoff sleeps short."""
        self.finished = threading.Event()
        self.heartbeat: Heartbeat | None = None
        self.on_answered: Callable[[str | None, int, int], None] | None = None
        """Told the error code sent (None for success), the number of files and of failed files."""

    def jobs(self) -> list[FileJob]:
        """A queueable job per file."""
        return [FileJob(self, request) for request in self.task.files]

    def cancel(self, reason: GatewayError) -> None:
        """Abort the task's transfers: in-flight reads raise ``reason``, queued files are skipped."""
        with self._lock:
            if self._cancel_reason is None:
                self._cancel_reason = reason
        self.stop.set()

    def cancelled(self) -> GatewayError | None:
        """Why the task was cancelled, or None."""
        return self._cancel_reason

    def file_done(self, request: FileRequest, result: FileResult) -> None:
        """Record a file's result; the last one answers the task."""
        with self._lock:
            if self._results[request.index] is not None:
                return
            self._results[request.index] = result
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            self._answer()

    def _answer(self) -> None:
        with self._lock:
            if self._answered:
                return
            self._answered = True
        if self.heartbeat is not None:
            self.heartbeat.stop()
        results = [r for r in self._results if r is not None]
        failed = [(req, res) for req, res in zip(self.task.files, results, strict=True) if not res.success]
        reason = self._cancel_reason
        code: str | None = None
        if reason is not None:
            code = reason.code
            self._responder.failure(self.token, code, self._cause(results))
        elif failed and self._failure_mode == "task":
            code = str(failed[0][1].error_code)
            self._responder.failure(self.token, code, self._cause(results))
        else:
            self._responder.success(self.token, task_output(self.task, results))
        if self.on_answered is not None:
            self.on_answered(code, len(results), len(failed))
        else:
            log.info("task %s answered: %d file(s), %d failed", self.label, len(results), len(failed))
        self.finished.set()

    def _cause(self, results: list[FileResult]) -> str:
        entries = self.task.entries
        return bounded_cause(
            [file_output(entries[req.index], req, res) for req, res in zip(self.task.files, results, strict=True)]
        )
