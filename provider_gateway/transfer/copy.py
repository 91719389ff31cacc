"""One file from a provider connection into S3: open, stream, verify, classify."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from provider_gateway.config.model import GatewayConfig, field_default
from provider_gateway.errors import GatewayError, InternalError, ResumeUnsupported
from provider_gateway.messages import Checksum, FileRequest, FileResult, parse_sidecar
from provider_gateway.protocols.base import Connection, SourceStream
from provider_gateway.transfer.s3upload import MiB, part_size_for, put_small, upload
from provider_gateway.transfer.stream import CancelCheck, ProgressCallback, TransferStream
from provider_gateway.urls import redact_url

log = logging.getLogger(__name__)

SIDECAR_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class CopyOptions:
    """How a provider's files are copied (a provider's: :attr:`GatewayConfig.copy_options`)."""

    min_part_size: int = field_default(GatewayConfig, "part_size_mb") * MiB
    retries: int = field_default(GatewayConfig, "retries")
    retry_wait_max_s: float = 10.0


@dataclass(frozen=True)
class CopyOutcome:
    """A finished copy: the result for the task, and its speed for the logs.

    ``pending`` is set when the source was read whole and its PutObject was
    handed to the ``uploader``: ``result`` holds only once it completes
    (see :func:`settle`).
    """

    result: FileResult
    seconds: float
    pending: Future[None] | None = None


Uploader = Callable[[Callable[[], None]], "Future[None]"]
"""Runs a PutObject in the background, so the connection can fetch the next file meanwhile."""


def settle(outcome: CopyOutcome) -> FileResult:
    """The final result of ``outcome`` once its PutObject (if handed off) has completed."""
    if outcome.pending is None:
        return outcome.result
    try:
        outcome.pending.result()
    except GatewayError as exc:
        return FileResult.failed(exc)
    except Exception as exc:  # a bug in the upload must fail the file, not leave it unanswered
        log.exception("unexpected failure writing a small file")
        error = InternalError(f"{type(exc).__name__}: {exc}")
        return FileResult.failed(error)
    return outcome.result


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, GatewayError) and exc.retryable


def copy_file(
    connection: Callable[[], Connection],
    request: FileRequest,
    s3: Any,
    options: CopyOptions,
    stop: threading.Event,
    cancelled: CancelCheck,
    progress: ProgressCallback | None = None,
    on_size: Callable[[int | None], None] | None = None,
    uploader: Uploader | None = None,
) -> CopyOutcome:
    """Copy one file; every failure becomes a FileResult with its contract code.

    ``connection`` returns the thread's live connection (reconnecting if it was
    dropped); ``stop`` cuts a backoff sleep short when the task is cancelled;
    ``progress`` is told the size of every piece read from the source, and
    ``on_size`` the file's size once the source is open (None if unknown).
    With an ``uploader``, a file that fits in one part is read whole and its
    PutObject runs there: the outcome is then ``pending``.
    """
    started = time.monotonic()
    copier = _Copier(connection, s3, options, stop, cancelled, progress, on_size, uploader)
    try:
        result = copier.copy(request)
    except GatewayError as exc:
        reason = cancelled()
        # A cancel's reason wins over what the aborted connection raised (but not over a final answer).
        error = reason if reason is not None and exc.retryable else exc
        result = FileResult.failed(error)
    except Exception as exc:
        error = cancelled() or InternalError(f"{type(exc).__name__}: {exc}")
        if not isinstance(error, InternalError):  # a library's error from the connection it was aborted in
            log.debug("copy of a cancelled task's file ended with %r", exc)
        else:  # a bug must fail one file, not the connection thread
            log.exception("unexpected failure copying %s", redact_url(request.url))
        result = FileResult.failed(error)
    return CopyOutcome(result=result, seconds=time.monotonic() - started, pending=copier.pending)


@dataclass
class _Copier:
    """The collaborators of one copy, so its steps need not pass them along; ``pending`` is its handed-off PutObject."""

    connection: Callable[[], Connection]
    s3: Any
    options: CopyOptions
    stop: threading.Event
    cancelled: CancelCheck
    progress: ProgressCallback | None = None
    on_size: Callable[[int | None], None] | None = None
    uploader: Uploader | None = None
    pending: Future[None] | None = None

    def copy(self, request: FileRequest) -> FileResult:
        if already_there(self.s3, request):
            return FileResult(success=True, version_skip=True)
        checksum = request.checksum
        if checksum is not None and checksum.url:
            checksum = self._sidecar_checksum(checksum)
        restarts = self.options.retries
        while True:
            try:
                return self._stream_once(request, checksum)
            except ResumeUnsupported:
                # The upload was aborted with its parts; only a fresh start can get the whole file.
                if restarts <= 0 or self.cancelled() is not None:
                    raise
                restarts -= 1
                log.warning("%s cannot be resumed from an offset: starting it over", redact_url(request.url))

    def open(self, url: str, offset: int = 0, resuming: bool = False) -> SourceStream:
        """Open ``url`` from ``offset``, retrying transient failures with exponential backoff."""

        def sleep(seconds: float) -> None:
            self.stop.wait(seconds)

        def retryable(exc: BaseException) -> bool:
            # Asking again for a range the server ignores gives the same answer.
            return _retryable(exc) and not (resuming and isinstance(exc, ResumeUnsupported))

        retrying = Retrying(
            stop=stop_after_attempt(self.options.retries + 1),
            wait=wait_exponential(multiplier=0.5, max=self.options.retry_wait_max_s),
            retry=retry_if_exception(retryable),
            sleep=sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                reason = self.cancelled()
                if reason is not None:
                    raise reason
                return self.connection().open(url, offset)
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    def _stream_once(self, request: FileRequest, checksum: Checksum | None) -> FileResult:
        source = self.open(request.url)
        size = request.size if request.size is not None else source.size
        if self.on_size is not None:
            self.on_size(size)
        stream = TransferStream(
            source,
            size,
            checksum,
            self.cancelled,
            progress=self.progress,
            reopen=lambda offset: self.open(request.url, offset, resuming=True),
            resumes=self.options.retries,
        )
        try:
            metadata = object_metadata(request.version, checksum)
            part_size = part_size_for(size, self.options.min_part_size)
            if size is not None and size <= part_size:
                # Read whole (the stream's size check bounds it) and verified before the object exists.
                body = stream.read()
                put = functools.partial(put_small, self.s3, body, request.bucket, request.key, metadata)
                if self.uploader is None:
                    put()
                else:
                    self.pending = self.uploader(put)
            else:
                upload(
                    self.s3,
                    stream,
                    request.bucket,
                    request.key,
                    part_size,
                    metadata,
                    size=size,
                    cancelled=self.cancelled,
                )
        finally:
            stream.close()
        return FileResult(success=True, bytes=stream.bytes, checksum=stream.checksum)

    def _sidecar_checksum(self, checksum: Checksum) -> Checksum:
        url = str(checksum.url)
        stream = self.open(url)
        try:
            text = TransferStream(stream, None, None, self.cancelled).read(SIDECAR_MAX_BYTES)
        finally:
            stream.close()
        value = parse_sidecar(text, checksum.algorithm, f"sidecar {redact_url(url)}")
        return Checksum(checksum.algorithm, value)


def object_metadata(version: str | None, checksum: Checksum | None) -> dict[str, str]:
    """S3 user metadata: ``version``, and ``checksum-<algorithm>`` (the upload completes only if it matches)."""
    metadata = {}
    if version is not None:
        metadata["version"] = version
    if checksum is not None:
        metadata[f"checksum-{checksum.algorithm}"] = checksum.value
    return metadata


def already_there(s3: Any, request: FileRequest) -> bool:
    """Whether the target object already carries the requested version (asked of S3, not the provider)."""
    if request.version is None:
        return False
    try:
        head = s3.head_object(Bucket=request.bucket, Key=request.key)
    except ClientError:
        return False  # absent (404) or not readable: the download decides
    return bool(head.get("Metadata", {}).get("version") == request.version)
