"""One file from a provider connection into S3: open, stream, verify, classify."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from provider_gateway.errors import GatewayError, InternalError, ResumeUnsupported
from provider_gateway.messages import Checksum, FileRequest, FileResult, parse_sidecar, redact_url
from provider_gateway.protocols.base import Connection, SourceStream
from provider_gateway.transfer.s3upload import MiB, part_size_for, upload
from provider_gateway.transfer.stream import CancelCheck, TransferStream

log = logging.getLogger(__name__)

SIDECAR_MAX_BYTES = 64 * 1024


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
    offset: int = 0,
    resuming: bool = False,
) -> SourceStream:
    """Open the file (from ``offset``), retrying transient failures with exponential backoff.

    ``connection`` returns the thread's live connection (reconnecting if it was
    dropped); ``stop`` cuts a backoff sleep short when the task is cancelled.
    """

    def sleep(seconds: float) -> None:
        stop.wait(seconds)

    def retryable(exc: BaseException) -> bool:
        # Asking again for a range the server ignores gives the same answer.
        return _retryable(exc) and not (resuming and isinstance(exc, ResumeUnsupported))

    retrying = Retrying(
        stop=stop_after_attempt(options.retries + 1),
        wait=wait_exponential(multiplier=0.5, max=options.retry_wait_max_s),
        retry=retry_if_exception(retryable),
        sleep=sleep,
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            reason = cancelled()
            if reason is not None:
                raise reason
            return connection().open(request.url, offset)
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
        log.exception("unexpected failure copying %s", redact_url(request.url))
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
    if already_there(s3, request):
        return FileResult(success=True, version_skip=True)
    checksum = request.checksum
    if checksum is not None and checksum.url:
        checksum = _sidecar_checksum(connection, request, checksum, options, stop, cancelled)
    restarts = options.retries
    while True:
        try:
            return _stream_once(connection, request, s3, options, stop, cancelled, checksum)
        except ResumeUnsupported:
            # The upload was aborted with its parts; only a fresh start can get the whole file.
            if restarts <= 0 or cancelled() is not None:
                raise
            restarts -= 1
            log.warning("%s cannot be resumed from an offset: starting it over", redact_url(request.url))


def _stream_once(
    connection: Callable[[], Connection],
    request: FileRequest,
    s3: Any,
    options: CopyOptions,
    stop: threading.Event,
    cancelled: CancelCheck,
    checksum: Checksum | None,
) -> FileResult:
    source = open_source(connection, request, options, stop, cancelled)
    size = request.size if request.size is not None else source.size
    stream = TransferStream(
        source,
        size,
        checksum,
        cancelled,
        reopen=lambda offset: open_source(connection, request, options, stop, cancelled, offset, resuming=True),
        resumes=options.retries,
    )
    try:
        metadata = object_metadata(request.version, checksum)
        upload(s3, stream, request.bucket, request.key, part_size_for(size, options.min_part_size), metadata)
    finally:
        stream.close()
    return FileResult(success=True, bytes=stream.bytes, checksum=stream.checksum)


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


def _sidecar_checksum(
    connection: Callable[[], Connection],
    request: FileRequest,
    checksum: Checksum,
    options: CopyOptions,
    stop: threading.Event,
    cancelled: CancelCheck,
) -> Checksum:
    sidecar = FileRequest(index=request.index, url=str(checksum.url), bucket=request.bucket, key=request.key)
    stream = open_source(connection, sidecar, options, stop, cancelled)
    try:
        text = TransferStream(stream, None, None, cancelled).read(SIDECAR_MAX_BYTES)
    finally:
        stream.close()
    value = parse_sidecar(text, checksum.algorithm, f"sidecar {redact_url(str(checksum.url))}")
    return Checksum(checksum.algorithm, value)
