"""A stream into S3 as a multipart upload whose part size grows (see part_schedule).

s3transfer gives every part of an upload the same size, so with an unknown size
an object is capped at 10,000 x the first part. This loop keeps what it gave:
parts upload in parallel, a failed part is sent again, and any failure aborts
the upload.

Memory: the parts of one upload hold at most
``min(UPLOAD_CONCURRENCY x L, max(UPLOAD_BUFFER, L)) + L`` bytes
(:meth:`PartSchedule.memory_bound`): up to 4 parts upload at once, fewer once
they would hold more than 256 MiB, and one more part is being read. ``L``, the
largest part so far, is at most ``PartSchedule.limit(bytes read)``: the minimum
part size for the first 1,000 parts, then 1/1000 of the bytes read, at most
2 GiB. With the default 8 MiB minimum that is 40 MiB up to 8,000 MiB read,
359 MiB at 100 GiB and 4 GiB near 5 TiB. It follows the bytes actually read: a
size claimed in the request can make parts smaller, never larger. Parts are
kept as the pieces the source returned and sent without a copy (part_body).

Failures: a source failure raised from ``stream.read()``, an S3 error on any call,
a part that still fails after its retries, a cancel seen while waiting for S3,
or anything else raised: the multipart upload is aborted (at once, from the part's
own thread when a part fails) and no object is created. Part threads are daemon
threads and nothing waits for them after a failure: a stalled S3 call never holds
up the caller or the process's exit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from provider_gateway.errors import GatewayError, TargetWriteFailed
from provider_gateway.transfer.part_body import Part, PartBody, Readable
from provider_gateway.transfer.part_schedule import MAX_OBJECT_SIZE, MAX_PARTS, PartSchedule

log = logging.getLogger(__name__)

READ_PIECE = 1024 * 1024
WAIT_TICK_S = 0.5
ABORT_ATTEMPTS = 4
ABORT_WAIT_S = 60.0
RETRYABLE_CODES = frozenset(
    {"RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable", "Throttling", "ThrottlingException"}
)

CancelCheck = Callable[[], GatewayError | None]


@dataclass(frozen=True)
class Target:
    """Where the object goes, and its user metadata."""

    bucket: str
    key: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class PartRetry:
    """How a failed part is sent again: ``attempts`` in all, backing off up to ``wait_max_s``."""

    attempts: int = 3
    wait_min_s: float = 0.5
    wait_max_s: float = 8.0


@dataclass(frozen=True)
class Sent:
    """What an upload did: its parts (0 for one PutObject), bytes, and the most part bytes held at once."""

    parts: int
    bytes: int
    peak_buffered: int


@contextmanager
def s3_errors(target: Target) -> Iterator[None]:
    """S3's own failures as TargetWriteFailed, naming the object and carrying S3's error code."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise TargetWriteFailed(f"writing {target} failed: {exc}") from exc


def put_object(s3: Any, target: Target, body: bytes | PartBody) -> None:
    """One PutObject."""
    extra: dict[str, Any] = {"Metadata": target.metadata} if target.metadata else {}
    with s3_errors(target):
        s3.put_object(Bucket=target.bucket, Key=target.key, Body=body, **extra)


def send(
    s3: Any,
    stream: Readable,
    target: Target,
    schedule: PartSchedule,
    cancelled: CancelCheck | None = None,
    retry: PartRetry = PartRetry(),
) -> Sent:
    """Stream ``stream`` to ``target``: one PutObject if it ends within the first part, else a multipart upload.

    The object is created only after ``stream.read()`` has returned b"" (the end, proven
    and verified by the stream); anything raised before leaves no object and no upload.
    """
    first = Part()
    if first.fill(stream, schedule.part_size(0, 0), READ_PIECE, lambda: None):
        put_object(s3, target, first.body())
        return Sent(parts=0, bytes=first.size, peak_buffered=first.size)
    return MultipartUpload(s3, target, schedule, cancelled or (lambda: None), retry).run(stream, first)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or exc.response.get("Error", {}).get("Code") in RETRYABLE_CODES
    return isinstance(exc, HTTPClientError | BotoConnectionError | IncompleteReadError)


class MultipartUpload:
    """One multipart upload: the caller's thread reads parts, a daemon thread per part sends it."""

    def __init__(
        self, s3: Any, target: Target, schedule: PartSchedule, cancelled: CancelCheck, retry: PartRetry
    ) -> None:
        self._s3 = s3
        self._target = target
        self._schedule = schedule
        self._cancelled = cancelled
        self._retry = retry
        self._lock = threading.Condition()
        self._stopped = threading.Event()  # set on abort: part threads stop retrying
        self._abort_done = threading.Event()
        self._etags: dict[int, str] = {}
        self._uploading = 0
        self._uploading_bytes = 0
        self._largest = 0
        self._failure: BaseException | None = None
        self._aborted = False
        self._upload_id = ""
        self._bytes_done = 0
        self._reading = Part()
        self.peak_buffered = 0

    def run(self, stream: Readable, first: Part) -> Sent:
        """Upload ``first`` and the rest of ``stream``, then complete; abort on any failure."""
        extra: dict[str, Any] = {"Metadata": self._target.metadata} if self._target.metadata else {}
        with s3_errors(self._target):
            created = self._s3.create_multipart_upload(Bucket=self._target.bucket, Key=self._target.key, **extra)
        self._upload_id = created["UploadId"]
        try:
            parts = self._send_all(stream, first)
            self._complete(parts)
        except BaseException:
            self._abort()
            raise
        return Sent(parts=parts, bytes=self._bytes_done, peak_buffered=self.peak_buffered)

    def _send_all(self, stream: Readable, first: Part) -> int:
        number = 1
        self._start(number, first)
        while True:
            size = self._schedule.part_size(number, self._bytes_done)
            self._wait_for_slot(size)
            self._reading = part = Part()
            ended = part.fill(stream, size, READ_PIECE, self._check)
            self._reading = Part()
            if not part.size:
                return number
            number += 1
            if number > MAX_PARTS or self._bytes_done + part.size > MAX_OBJECT_SIZE:
                raise TargetWriteFailed(f"writing {self._target} failed: the object is larger than S3's 5 TiB")
            self._start(number, part)
            if ended:
                return number

    def _start(self, number: int, data: Part) -> None:
        with self._lock:
            self._uploading += 1
            self._uploading_bytes += data.size
            self._largest = max(self._largest, data.size)
        self._bytes_done += data.size
        name = f"{threading.current_thread().name}-part-{number}"
        threading.Thread(target=self._upload_part, args=(number, data), name=name, daemon=True).start()

    def _wait_for_slot(self, size: int) -> None:
        """Wait until a part of ``size`` may be read without exceeding the memory bound."""
        self._wait(lambda: self._uploading < self._schedule.slots(max(self._largest, size)))

    def _check(self) -> None:
        """Between two reads: stop at once on a failed part or a cancel, and count the bytes held."""
        with self._lock:
            self._raise_failure()
            self.peak_buffered = max(self.peak_buffered, self._uploading_bytes + self._reading.size)
        reason = self._cancelled()
        if reason is not None:
            raise reason

    def _wait(self, ready: Callable[[], bool]) -> None:
        """Wait until ``ready()`` (under the lock), a part fails, or the transfer is cancelled."""
        while True:
            with self._lock:
                self._raise_failure()
                if ready():
                    return
                self._lock.wait(WAIT_TICK_S)
            reason = self._cancelled()
            if reason is not None:
                raise reason

    def _upload_part(self, number: int, data: Part) -> None:
        try:
            etag = self._send_part(number, data)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, which raises it
            self._fail(exc)
        else:
            with self._lock:
                self._etags[number] = etag
                late = self._aborted
            if late:  # S3 may keep a part that finished during the abort: abort again
                self._abort_request()
        finally:
            with self._lock:
                self._uploading -= 1
                self._uploading_bytes -= data.size
                self._lock.notify_all()

    def _send_part(self, number: int, data: Part) -> str:
        retrying = Retrying(
            stop=stop_after_attempt(self._retry.attempts),
            wait=wait_exponential(multiplier=self._retry.wait_min_s, max=self._retry.wait_max_s),
            retry=retry_if_exception(lambda exc: _retryable(exc) and not self._stopped.is_set()),
            sleep=self._pause,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    log.warning(
                        "%s: sending part %d again (attempt %d)",
                        self._target,
                        number,
                        attempt.retry_state.attempt_number,
                    )
                response = self._s3.upload_part(
                    Bucket=self._target.bucket,
                    Key=self._target.key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=data.body(),
                )
                return str(response["ETag"])
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    def _pause(self, seconds: float) -> None:
        self._stopped.wait(seconds)  # an abort cuts the backoff short

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._failure is None and not self._aborted:
                self._failure = exc
            self._lock.notify_all()
        self._abort()

    def _raise_failure(self) -> None:
        """Raise a part's failure in the reading thread (S3's own as TargetWriteFailed)."""
        failure = self._failure
        if failure is None:
            return
        if isinstance(failure, ClientError | BotoCoreError):
            raise TargetWriteFailed(f"writing {self._target} failed: {failure}") from failure
        raise failure

    def _complete(self, parts: int) -> None:
        self._wait(lambda: self._uploading == 0)
        listed = [{"PartNumber": n, "ETag": self._etags[n]} for n in range(1, parts + 1)]
        with s3_errors(self._target):
            self._s3.complete_multipart_upload(
                Bucket=self._target.bucket,
                Key=self._target.key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": listed},
            )

    def _abort(self) -> None:
        """Abort once, from whichever thread fails first; the others wait until it is done."""
        with self._lock:
            first = not self._aborted
            self._aborted = True
        if not first:
            if not self._abort_done.wait(ABORT_WAIT_S):
                log.warning("the multipart upload of %s is still being aborted", self._target)
            return
        self._stopped.set()
        try:
            self._abort_request()
        finally:
            self._abort_done.set()

    def _abort_request(self) -> None:
        """AbortMultipartUpload, sent again while S3 answers with a transient error."""
        retrying = Retrying(
            stop=stop_after_attempt(ABORT_ATTEMPTS),
            wait=wait_exponential(multiplier=0.2, max=2),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._s3.abort_multipart_upload(
                        Bucket=self._target.bucket, Key=self._target.key, UploadId=self._upload_id
                    )
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return
            log.warning("aborting the multipart upload of %s failed: %s", self._target, exc)
