"""One file from a provider connection into S3: open, stream, verify, classify."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from provider_gateway.errors import GatewayError, InternalError
from provider_gateway.messages import FileRequest, FileResult
from provider_gateway.protocols.base import Connection, SourceStream
from provider_gateway.transfer.s3upload import MiB, part_size_for, upload
from provider_gateway.transfer.stream import CancelCheck, TransferStream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CopyOptions:
    """How a provider's files are copied."""

    min_part_size: int = 8 * MiB
    retries: int = 4
    retry_wait_max_s: float = 10.0


@dataclass(frozen=True)
class CopyOutcome:
    """A finished copy: the result for the task, and its speed for the logs."""

    result: FileResult
    seconds: float


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, GatewayError) and exc.retryable


def open_source(
    connection: Callable[[], Connection],
    request: FileRequest,
    options: CopyOptions,
    stop: threading.Event,
    cancelled: CancelCheck,
) -> SourceStream:
    """Open the file, retrying transient failures with exponential backoff.

    ``connection`` returns the thread's live connection (reconnecting if it was
    dropped); ``stop`` cuts a backoff sleep short when the task is cancelled.
    """

    def sleep(seconds: float) -> None:
        stop.wait(seconds)

    retrying = Retrying(
        stop=stop_after_attempt(options.retries + 1),
        wait=wait_exponential(multiplier=0.5, max=options.retry_wait_max_s),
        retry=retry_if_exception(_retryable),
        sleep=sleep,
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            reason = cancelled()
            if reason is not None:
                raise reason
            return connection().open(request.url)
    raise AssertionError("unreachable: tenacity re-raises the last failure")


def copy_file(
    connection: Callable[[], Connection],
    request: FileRequest,
    s3: Any,
    options: CopyOptions,
    stop: threading.Event,
    cancelled: CancelCheck,
) -> CopyOutcome:
    """Copy one file; every failure becomes a FileResult with its contract code."""
    started = time.monotonic()
    try:
        result = _copy(connection, request, s3, options, stop, cancelled)
    except GatewayError as exc:
        result = FileResult(success=False, error_code=exc.code, error=exc.message)
    except Exception as exc:  # a bug must fail one file, not the connection thread
        log.exception("unexpected failure copying %s", request.url)
        error = InternalError(f"{type(exc).__name__}: {exc}")
        result = FileResult(success=False, error_code=error.code, error=error.message)
    return CopyOutcome(result=result, seconds=time.monotonic() - started)


def _copy(
    connection: Callable[[], Connection],
    request: FileRequest,
    s3: Any,
    options: CopyOptions,
    stop: threading.Event,
    cancelled: CancelCheck,
) -> FileResult:
    source = open_source(connection, request, options, stop, cancelled)
    try:
        size = request.size if request.size is not None else source.size
        stream = TransferStream(source, size, request.checksum, cancelled)
        metadata = {"version": request.version} if request.version is not None else None
        upload(s3, stream, request.bucket, request.key, part_size_for(size, options.min_part_size), metadata)
    finally:
        source.close()
    return FileResult(success=True, bytes=stream.bytes, checksum=stream.checksum)
