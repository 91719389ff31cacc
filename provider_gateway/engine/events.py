"""Task events: one log record each, with its fields, and the metrics each one moves.

Events: ``task_claimed``, ``file_started``, ``file_progress`` (every
``progress_interval_s`` of a long transfer), ``file_finished``,
``file_failed``, ``task_answered``. Each record carries ``event``,
``provider`` and, where they apply, ``task``, ``file`` (the URL without
credentials), ``target``, ``bytes``, ``size``, ``percent``, ``mb_per_s``,
``seconds`` and ``error_code``; the thread name comes with every record.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from provider_gateway.engine.snapshot import FileInFlight
from provider_gateway.messages import FileRequest, FileResult
from provider_gateway.ops.metrics import Metrics
from provider_gateway.urls import redact_url

log = logging.getLogger("provider_gateway.events")


@dataclass
class FileProgress:
    """A file being copied: what ``status`` shows and progress lines report."""

    task: str
    url: str
    target: str
    connection: str = ""
    size: int | None = None
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    last_report: float = field(default_factory=time.monotonic)

    def freeze(self) -> FileInFlight:
        """The progress as it stands now, with the rate since the start."""
        elapsed = time.monotonic() - self.started
        rate = self.bytes / elapsed / 1e6 if elapsed > 0 else 0.0
        return FileInFlight(self.task, self.url, self.target, self.connection, self.bytes, self.size, rate)

    def fields(self) -> dict[str, object]:
        return self.freeze().fields()


class Events:
    """The task events of one provider."""

    def __init__(self, provider_id: str, metrics: Metrics, progress_interval_s: float = 30.0) -> None:
        self.provider = provider_id
        self.metrics = metrics
        self.progress_interval_s = progress_interval_s

    def _fields(self, event: str, **fields: object) -> dict[str, object]:
        return {"event": event, "provider": self.provider, **fields}

    def task_claimed(self, task: str, kind: str, files: int) -> None:
        if not log.isEnabledFor(logging.INFO):  # thousands of small tasks: skip building the fields
            return
        log.info(
            "%s task %s claimed: %d file(s)",
            kind,
            task,
            files,
            extra=self._fields("task_claimed", task=task, files=files),
        )

    def file_started(self, task: str, request: FileRequest) -> FileProgress:
        progress = FileProgress(
            task=task,
            url=redact_url(request.url),
            target=f"s3://{request.bucket}/{request.key}",
            connection=threading.current_thread().name,
            size=request.size,
        )
        if not log.isEnabledFor(logging.INFO):
            return progress
        log.info(
            "task %s: copying %s -> %s",
            task,
            progress.url,
            progress.target,
            extra=self._fields("file_started", **progress.fields()),
        )
        return progress

    def bytes_read(self, progress: FileProgress, amount: int) -> None:
        """Called for every piece read; logs a progress line every ``progress_interval_s``."""
        progress.bytes += amount
        now = time.monotonic()
        if now - progress.last_report >= self.progress_interval_s:
            progress.last_report = now
            now_at = progress.freeze()
            log.info(
                "task %s: %s %s bytes (%.1f MB/s)",
                now_at.task,
                now_at.url,
                f"{now_at.bytes}/{now_at.size} ({now_at.percent}%)" if now_at.size else now_at.bytes,
                now_at.mb_per_s,
                extra=self._fields("file_progress", **now_at.fields()),
            )

    def file_finished(self, progress: FileProgress, result: FileResult, seconds: float) -> None:
        self.metrics.file_done(self.provider, result, seconds)
        if not log.isEnabledFor(logging.INFO if result.success else logging.WARNING):
            return
        fields = progress.fields()
        fields.update(bytes=result.bytes, seconds=round(seconds, 3))
        fields["mb_per_s"] = round(result.bytes / seconds / 1e6, 2) if seconds > 0 else 0.0
        if result.success:
            skip = " (already there: version skip)" if result.version_skip else ""
            log.info(
                "task %s: copied %s (%d bytes, %.1f MB/s)%s",
                progress.task,
                progress.url,
                result.bytes,
                fields["mb_per_s"],
                skip,
                extra=self._fields("file_finished", version_skip=result.version_skip, **fields),
            )
        else:
            log.warning(
                "task %s: %s failed: %s %s",
                progress.task,
                progress.url,
                result.error_code,
                result.error,
                extra=self._fields("file_failed", error_code=result.error_code, error=result.error, **fields),
            )

    def task_answered(self, task: str, error_code: str | None, files: int, failed: int) -> None:
        self.metrics.task_done(self.provider, error_code)
        if not log.isEnabledFor(logging.INFO):
            return
        log.info(
            "task %s answered: %d file(s), %d failed%s",
            task,
            files,
            failed,
            f" ({error_code})" if error_code else "",
            extra=self._fields(
                "task_answered",
                task=task,
                files=files,
                failed=failed,
                success=error_code is None,
                error_code=error_code,
            ),
        )
