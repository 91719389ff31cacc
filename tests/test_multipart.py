"""The multipart loop against the local S3 over HTTP: whole objects, or nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provider_gateway.errors import GatewayError, GatewayShutdown, IntegrityError, SourceUnavailable, TargetWriteFailed
from provider_gateway.local.stack import LocalStack
from provider_gateway.transfer.multipart import PartRetry, Target, send
from provider_gateway.transfer.part_schedule import MiB, PartSchedule
from provider_gateway.transfer.s3upload import upload
from provider_gateway.transfer.stream import TransferStream
from tests.servers import FaultyS3Proxy
from tests.support import unique

MIN = 5 * MiB
# Parts double from the third on (5, 5, 10, 20, 40 MiB...): the growth, seen on objects moto can hold.
GROWING = PartSchedule(MIN, growth=1)
FAST_RETRY = PartRetry(attempts=3, wait_min_s=0.01, wait_max_s=0.05)


class Source:
    """A provider's file: fails with ``error`` after ``fail_at`` bytes, or waits at ``hold_at`` until released."""

    def __init__(
        self, data: bytes, fail_at: int | None = None, error: GatewayError | None = None, hold_at: int | None = None
    ) -> None:
        self.data, self.pos, self.size = data, 0, None
        self.fail_at, self.error, self.hold_at = fail_at, error, hold_at
        self.held = threading.Event()
        self.release = threading.Event()

    def read(self, amount: int) -> bytes:
        if self.fail_at is not None and self.pos >= self.fail_at:
            raise self.error or SourceUnavailable("connection reset by the provider")
        if self.hold_at is not None and self.pos >= self.hold_at and not self.release.is_set():
            self.held.set()
            assert self.release.wait(30), "never released"
        end = self.pos + min(amount, 256 * 1024)
        for limit in (self.fail_at, self.hold_at):
            if limit is not None and self.pos < limit:
                end = min(end, limit)
        piece = self.data[self.pos : end]
        self.pos += len(piece)
        return piece

    def close(self) -> None:
        pass


def client(endpoint: str, env: dict[str, str]) -> Any:
    """An S3 client with botocore's own retries off, so every part retry is the loop's."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


@pytest.fixture
def direct(stack: LocalStack) -> Any:
    return client(stack.endpoint, stack.environment())


def stream_of(
    source: Source, size: int | None = None, cancelled: Callable[[], GatewayError | None] = lambda: None
) -> TransferStream:
    return TransferStream(source, size, None, cancelled)


def nothing_left(s3: Any, bucket: str) -> None:
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket), "an object exists after a failure"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], "a multipart upload was left"


def expected_parts(schedule: PartSchedule, total: int) -> int:
    count = done = 0
    while done < total or count == 0:
        done += schedule.part_size(count, done)
        count += 1
    return count


def wait_until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def part_number(path: str) -> int:
    return int(parse_qs(urlsplit(path).query).get("partNumber", ["0"])[0])


class Stalling:
    """Holds every UploadPart at the proxy until released, counting the parts it holds."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.held = 0
        self.changed = threading.Condition()

    def __call__(self, method: str, path: str) -> None:
        if method == "PUT" and part_number(path):
            with self.changed:
                self.held += 1
                self.changed.notify_all()
            self.release.wait(30)

    def wait_held(self, count: int, timeout_s: float = 20) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.held >= count, timeout_s), f"{self.held} parts held"


@pytest.fixture
def proxy_for(stack: LocalStack) -> Iterator[Callable[[Callable[[str, str], str | None]], tuple[FaultyS3Proxy, Any]]]:
    """An S3 proxy failing what ``fail`` picks, and a client that goes through it."""
    proxies: list[FaultyS3Proxy] = []

    def make(fail: Callable[[str, str], str | None]) -> tuple[FaultyS3Proxy, Any]:
        proxy = FaultyS3Proxy(stack.endpoint, fail)
        proxies.append(proxy)
        return proxy, client(proxy.endpoint, stack.environment())

    yield make
    for proxy in proxies:
        proxy.close()


interesting = st.sampled_from([0, 1, MIN - 1, MIN, MIN + 1, 2 * MIN, 4 * MIN + 3, 40 * MiB, 45 * MiB + 17])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(total=st.one_of(interesting, st.integers(0, 48 * MiB)), known=st.booleans())
def test_objects_are_byte_exact_whatever_their_size_known_or_not(
    direct: Any, bucket: str, total: int, known: bool
) -> None:
    data = os.urandom(total)
    schedule = PartSchedule(MIN, total if known else None, growth=1)
    key = unique("obj")

    sent = send(direct, stream_of(Source(data), total if known else None), Target(bucket, key), schedule)

    assert direct.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    if total < MIN:  # ended within the first part: one PutObject
        assert sent.parts == 0
    else:
        assert sent.parts == expected_parts(schedule, total)
        assert direct.head_object(Bucket=bucket, Key=key)["ETag"].endswith(f'-{sent.parts}"')
    assert sent.bytes == total
    assert sent.peak_buffered <= schedule.memory_bound(total)
    assert direct.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_parts_grow_and_the_object_keeps_its_metadata(direct: Any, bucket: str) -> None:
    data = os.urandom(47 * MiB + 5)

    upload(direct, stream_of(Source(data)), bucket, "grown.bin", MIN, {"version": "7"})

    head = direct.head_object(Bucket=bucket, Key="grown.bin")
    assert head["Metadata"] == {"version": "7"}
    assert head["ContentLength"] == len(data)
    assert direct.get_object(Bucket=bucket, Key="grown.bin")["Body"].read() == data
    grown = send(direct, stream_of(Source(data)), Target(bucket, "g2"), GROWING)
    assert grown.parts == 5  # 5, 5, 10, 20 MiB, then the last 7 MiB: not 10 parts of 5 MiB
    assert direct.get_object(Bucket=bucket, Key="g2")["Body"].read() == data


@pytest.mark.parametrize(
    ("size", "total", "fail_at", "error"),
    [
        (None, 30 * MiB, 17 * MiB, SourceUnavailable),
        (None, 30 * MiB, MIN, SourceUnavailable),  # at a part's edge
        (5 * 1024**4, 12 * MiB, None, IntegrityError),  # a claimed size that lies
        (11 * MiB, 12 * MiB, None, IntegrityError),
    ],
)
def test_a_source_failure_mid_upload_leaves_no_object_and_no_upload(
    direct: Any, bucket: str, size: int | None, total: int, fail_at: int | None, error: type[GatewayError]
) -> None:
    source = Source(os.urandom(total), fail_at=fail_at)
    with pytest.raises(error):
        upload(direct, stream_of(source, size), bucket, "broken.bin", MIN, size=size)
    nothing_left(direct, bucket)


def test_a_cancel_raised_from_read_aborts_the_upload(direct: Any, bucket: str) -> None:
    source = Source(os.urandom(30 * MiB))

    def cancelled() -> GatewayError | None:
        return GatewayShutdown("the gateway is stopping") if source.pos > 12 * MiB else None

    with pytest.raises(GatewayShutdown):
        upload(direct, stream_of(source, cancelled=cancelled), bucket, "cancelled.bin", MIN)
    nothing_left(direct, bucket)


def test_a_failing_part_is_sent_again_and_the_object_is_whole(proxy_for: Any, direct: Any, bucket: str) -> None:
    attempts: Counter[int] = Counter()

    def fail(method: str, path: str) -> str | None:
        number = part_number(path)
        attempts[number] += 1
        return "InternalError" if number == 2 and attempts[number] <= 2 else None

    _, s3 = proxy_for(fail)
    data = os.urandom(23 * MiB)

    send(s3, stream_of(Source(data)), Target(bucket, "retried.bin"), PartSchedule(MIN), retry=FAST_RETRY)

    assert attempts[2] == 3
    assert direct.get_object(Bucket=bucket, Key="retried.bin")["Body"].read() == data


@pytest.mark.parametrize(("code", "tries"), [("InternalError", FAST_RETRY.attempts), ("AccessDenied", 1)])
def test_a_part_failing_past_its_retries_fails_cleanly(
    proxy_for: Any, direct: Any, bucket: str, code: str, tries: int
) -> None:
    attempts: Counter[int] = Counter()

    def fail(method: str, path: str) -> str | None:
        attempts[part_number(path)] += 1
        return code if part_number(path) == 3 else None

    _, s3 = proxy_for(fail)

    with pytest.raises(TargetWriteFailed, match=code) as raised:
        send(
            s3,
            stream_of(Source(os.urandom(40 * MiB))),
            Target(bucket, "refused.bin"),
            PartSchedule(MIN),
            retry=FAST_RETRY,
        )

    assert "s3://" in raised.value.message and "UploadPart" in raised.value.message
    assert attempts[3] == tries
    nothing_left(direct, bucket)


def test_a_cancel_while_parts_are_stalled_aborts_at_once_and_reads_no_further(
    proxy_for: Any, direct: Any, bucket: str
) -> None:
    stalling = Stalling()
    _, s3 = proxy_for(stalling)
    source = Source(os.urandom(60 * MiB))
    cancel = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            upload(
                s3,
                stream_of(source),
                bucket,
                "stalled.bin",
                MIN,
                cancelled=lambda: GatewayShutdown("stop") if cancel.is_set() else None,
            )
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    try:
        worker.start()
        stalling.wait_held(4)
        parts = [t for t in threading.enumerate() if "-part-" in t.name]
        cancelled_at = time.monotonic()
        cancel.set()
        worker.join(10)
        took = time.monotonic() - cancelled_at

        assert not worker.is_alive() and isinstance(outcome[0], GatewayShutdown), outcome
        assert took < 3, f"the cancel took {took:.1f} s"
        assert source.pos == 4 * MIN, "read beyond the parts it may hold"
        assert parts and all(t.daemon for t in parts)
        nothing_left(direct, bucket)
    finally:
        stalling.release.set()


def test_a_failed_part_aborts_the_upload_while_the_source_is_still_blocked(
    proxy_for: Any, direct: Any, bucket: str
) -> None:
    proxy, s3 = proxy_for(lambda method, path: "AccessDenied" if part_number(path) == 2 else None)
    source = Source(os.urandom(30 * MiB), hold_at=12 * MiB)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            upload(s3, stream_of(source), bucket, "blocked.bin", MIN)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        assert source.held.wait(20)
        wait_until(lambda: bool(proxy.failed) and not direct.list_multipart_uploads(Bucket=bucket).get("Uploads"))
        assert worker.is_alive(), "the upload ended before the source was released"
    finally:
        source.release.set()
    worker.join(10)
    assert isinstance(outcome[0], TargetWriteFailed) and "AccessDenied" in outcome[0].message
    nothing_left(direct, bucket)


EXIT_SCRIPT = """
import os, sys, boto3
from provider_gateway.errors import GatewayShutdown
from provider_gateway.transfer.s3upload import upload

endpoint, bucket, flag = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint)

class Zeros:
    left = 60 << 20
    def read(self, n):
        n = min(n, self.left)
        self.left -= n
        return bytes(n)

def cancelled():
    return GatewayShutdown("stop") if os.path.exists(flag) else None

try:
    upload(s3, Zeros(), bucket, "exit.bin", 5 << 20, cancelled=cancelled)
except GatewayShutdown:
    print("cancelled", flush=True)
"""


def test_parts_stalled_in_s3_never_hold_up_the_process_exit(
    proxy_for: Any, stack: LocalStack, direct: Any, bucket: str, tmp_path: Path
) -> None:
    stalling = Stalling()
    proxy, _ = proxy_for(stalling)
    flag = tmp_path / "cancel"
    env = {**os.environ, **stack.environment(), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    process = subprocess.Popen(
        [sys.executable, "-c", EXIT_SCRIPT, proxy.endpoint, bucket, str(flag)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        stalling.wait_held(4)
        flag.touch()
        out, _ = process.communicate(timeout=15)

        assert (process.returncode, out.strip()) == (0, "cancelled")
        assert not stalling.release.is_set()  # the parts were still stalled when it exited
        nothing_left(direct, bucket)
    finally:
        stalling.release.set()
        process.kill()


def test_an_abort_that_s3_fails_once_is_sent_again(proxy_for: Any, direct: Any, bucket: str) -> None:
    aborts: list[str] = []

    def fail(method: str, path: str) -> str | None:
        if method == "DELETE":
            aborts.append(path)
            return "InternalError" if len(aborts) == 1 else None
        return "AccessDenied" if part_number(path) == 2 else None

    _, s3 = proxy_for(fail)

    with pytest.raises(TargetWriteFailed, match="AccessDenied"):
        send(s3, stream_of(Source(os.urandom(12 * MiB))), Target(bucket, "abort.bin"), PartSchedule(MIN))

    assert len(aborts) >= 2
    nothing_left(direct, bucket)
