"""One claimed task in flight: its files, their results, and its single answer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from provider_gateway.engine.heartbeat import Heartbeat
from provider_gateway.engine.responder import Responder, bounded_cause
from provider_gateway.errors import GatewayError, InternalError
from provider_gateway.messages import (
    DownloadTask,
    FileRequest,
    FileResult,
    file_output,
    task_output,
)
from provider_gateway.protocols.base import Connection

log = logging.getLogger(__name__)

AnswerCallback = Callable[["TaskRun", str | None, int, int], None]
"""Told the task, the error code sent (None for success), the number of files and of failed files."""


@dataclass(frozen=True)
class FileJob:
    """One file of a task, as queued for a connection thread."""

    run: TaskRun
    request: FileRequest


class TaskRun:
    """Collects the results of a task's files and answers Step Functions exactly once.

    A cancel aborts every connection registered with :meth:`attach`, so a read
    blocked in one of them ends at once; a connection attached after the
    cancel is aborted as it is attached. Once the answer is sent, the task's
    ``heartbeat`` (if any) is stopped and ``on_answered`` is told.
    """

    def __init__(
        self,
        token: str,
        task: DownloadTask,
        responder: Responder,
        failure_mode: Literal["task", "per_file"],
        label: str,
        on_answered: AnswerCallback | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.token = token
        self.task = task
        self.label = label
        self._responder = responder
        self._failure_mode = failure_mode
        self._results: list[FileResult | None] = [None] * len(task.files)
        self._remaining = len(task.files)
        self._lock = threading.Lock()
        self._answering = False
        self._cancel_reason: GatewayError | None = None
        self._connections: list[Connection] = []
        self.stop = threading.Event()
        """Set when the task is cancelled: cuts backoff sleeps short."""
        self.finished = threading.Event()
        """Set once the answer was sent, or could not be sent at all."""
        self._heartbeat = heartbeat
        self._on_answered = on_answered or _log_answer

    def jobs(self) -> list[FileJob]:
        """A queueable job per file."""
        return [FileJob(self, request) for request in self.task.files]

    def cancel(self, reason: GatewayError) -> None:
        """Abort the task's transfers: blocked reads end at once, queued files are skipped."""
        with self._lock:
            if self._cancel_reason is None:
                self._cancel_reason = reason
            connections = list(self._connections)
        self.stop.set()
        for connection in connections:
            _abort(connection)

    def cancelled(self) -> GatewayError | None:
        """Why the task was cancelled, or None."""
        return self._cancel_reason

    def attach(self, connection: Connection) -> None:
        """Register a connection now serving one of the task's files (aborted at once if cancelled)."""
        with self._lock:
            self._connections.append(connection)
            cancelled = self._cancel_reason is not None
        if cancelled:
            _abort(connection)

    def detach(self, connection: Connection) -> None:
        """The connection no longer serves this task."""
        with self._lock:
            self._connections = [c for c in self._connections if c is not connection]

    def give_up(self, reason: GatewayError) -> None:
        """Answer now with ``reason`` for every file still running (its transfer did not end when aborted)."""
        self.cancel(reason)
        failed = FileResult.failed(reason)
        with self._lock:
            missing = [i for i, result in enumerate(self._results) if result is None]
            for index in missing:
                self._results[index] = failed
            self._remaining -= len(missing)
        if missing:
            self.answer()

    def file_done(self, request: FileRequest, result: FileResult) -> None:
        """Record a file's result; the last one answers the task. Never raises."""
        with self._lock:
            if self._results[request.index] is not None:
                return
            self._results[request.index] = result
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            self.answer()

    def answer(self) -> None:
        """Send the task's answer unless it was already sent; a task without files is answered at once."""
        with self._lock:
            if self._answering or self._remaining > 0:
                return
            self._answering = True
        try:
            code, files, failed = self._send()
        except Exception:  # the answer path must not kill the thread that finished the last file
            log.exception("answering task %s failed", self.label)
            code, files, failed = InternalError.code, len(self._results), 0
        finally:
            if self._heartbeat is not None:
                self._heartbeat.stop()
        try:
            self._on_answered(self, code, files, failed)
        except Exception:
            log.exception("recording the answer of task %s failed", self.label)
        finally:
            self.finished.set()

    def _send(self) -> tuple[str | None, int, int]:
        results = [r for r in self._results if r is not None]
        failed = sum(not r.success for r in results)
        try:
            code, build = self._decide(results)
            answer = build()
        except Exception as exc:
            # Input that passed the parser but cannot be rendered back: still one answer.
            log.exception("building the answer of task %s failed", self.label)
            error = InternalError(f"building the task's answer failed: {type(exc).__name__}: {exc}"[:1000])
            self._responder.failure(self.token, error.code, error.message)
            return error.code, len(results), failed
        if code is None:
            self._responder.success(self.token, answer)
        else:
            self._responder.failure(self.token, code, answer)
        return code, len(results), failed

    def _decide(self, results: list[FileResult]) -> tuple[str | None, Callable[[], Any]]:
        """The error code to send (None for success) and how to build the output or cause."""
        reason = self._cancel_reason
        if reason is not None:
            return reason.code, lambda: self._cause(results)
        first_failed = next((r for r in results if not r.success), None)
        if first_failed is not None and self._failure_mode == "task":
            return str(first_failed.error_code), lambda: self._cause(results)
        return None, lambda: task_output(self.task, results)

    def _cause(self, results: list[FileResult]) -> str:
        entries = self.task.entries
        return bounded_cause(
            [file_output(entries[req.index], req, res) for req, res in zip(self.task.files, results, strict=True)]
        )


def _log_answer(run: TaskRun, error_code: str | None, files: int, failed: int) -> None:
    log.info("task %s answered: %d file(s), %d failed", run.label, files, failed)


def _abort(connection: Connection) -> None:
    try:
        connection.abort()
    except Exception:  # abort must not block or raise; if one does, the read timeout still ends the read
        log.warning("aborting a connection failed", exc_info=True)
