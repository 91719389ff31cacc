"""SIGTERM with transfers in flight: every claimed task answered exactly once, nothing left behind."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
import requests

from provider_gateway.local import moto_activities
from provider_gateway.local.http_server import FileHTTPServer
from tests import test_protocol_gridftp
from tests.conftest import GatewayFactory
from tests.servers import free_port
from tests.support import create_state_machine, download_message, metrics_args, start, wait_done, wait_until
from tests.test_protocol_gridftp import Site

site = test_protocol_gridftp.site  # the GridFTP server with X.509 logins, shared with its own tests

MiB = 1024 * 1024
# Beyond the grace period: cancelled reads end at once, so the answers and the exit follow within this.
AFTER_GRACE_S = 5.0


def _uploads(s3: Any, bucket: str) -> list[Any]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


@pytest.mark.parametrize(
    ("grace_s", "outcome"), [(20, "SUCCEEDED"), (1, "GatewayShutdown")], ids=["grace", "too-short"]
)
def test_sigterm_with_four_transfers_in_flight(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str, grace_s: int, outcome: str
) -> None:
    files = {f"/slow{i}.h5": os.urandom(3 * MiB) for i in range(4)}
    with FileHTTPServer(files, rate_bytes_per_s=1 * MiB) as provider:
        process = gateway(
            activity,
            {"type": "http", "host": provider.host},
            num_connections=4,
            shutdown_grace_s=grace_s,
            heartbeat_interval_s=1,
        )
        machine = create_state_machine(sfn, activity)
        answered_before = set(moto_activities.ANSWERS)
        executions = [start(sfn, machine, download_message([(provider.url(p), bucket, p[1:])])) for p in files]
        wait_until(lambda: set(provider.requests) >= set(files), "every file requested")

        process.proc.send_signal(signal.SIGTERM)
        code = process.proc.wait(40)
        results = [wait_done(sfn, arn, timeout_s=60) for arn in executions]

    assert code == 0
    if outcome == "SUCCEEDED":
        assert [r["status"] for r in results] == ["SUCCEEDED"] * 4, results
        for path, data in files.items():
            assert s3.get_object(Bucket=bucket, Key=path[1:])["Body"].read() == data
    else:
        assert [(r["status"], r.get("error")) for r in results] == [("FAILED", "GatewayShutdown")] * 4
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    answers = {t: a for t, a in moto_activities.ANSWERS.items() if t not in answered_before}
    assert len(answers) == 4 and all(len(a) == 1 for a in answers.values()), answers
    assert _uploads(s3, bucket) == []


class _Stalled:
    """Two 20 MiB files whose provider sends 9 MiB of each, then holds the connection open in silence."""

    SIZE = 20 * MiB
    SENT = 9 * MiB

    def __init__(self, gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str, grace_s: float):
        self.files = {f"/stalled{i}.h5": os.urandom(self.SIZE) for i in range(2)}
        self.provider = FileHTTPServer(self.files).start()
        self.provider.stalls = dict.fromkeys(self.files, self.SENT / self.SIZE)
        port = free_port()
        self.status_url = f"http://127.0.0.1:{port}/status"
        self.process = gateway(
            activity,
            {"type": "http", "host": self.provider.host},
            num_connections=2,
            shutdown_grace_s=grace_s,
            heartbeat_interval_s=1,
            run_args=metrics_args(port),
        )
        self.sfn, self.s3, self.bucket = sfn, s3, bucket
        machine = create_state_machine(sfn, activity)
        self.answered_before = set(moto_activities.ANSWERS)
        self.executions = [
            start(sfn, machine, download_message([(self.provider.url(p), bucket, p[1:])])) for p in self.files
        ]
        # Both transfers blocked in a read, each with a part already in S3.
        wait_until(lambda: self.provider.bytes_served >= 2 * self.SENT, "the provider to stall")
        wait_until(lambda: len(_uploads(s3, bucket)) == 2, "the multipart uploads")

    def stopping(self) -> bool:
        """Whether the gateway says a stop was asked for (its /status)."""
        return bool(requests.get(self.status_url, timeout=5).json()["stopping"])

    def check_answered(self) -> None:
        results = [wait_done(self.sfn, arn, timeout_s=10) for arn in self.executions]
        assert [(r["status"], r.get("error")) for r in results] == [("FAILED", "GatewayShutdown")] * 2
        answers = {t: a for t, a in moto_activities.ANSWERS.items() if t not in self.answered_before}
        assert len(answers) == 2 and all(len(a) == 1 for a in answers.values()), answers
        assert _uploads(self.s3, self.bucket) == []
        assert "Contents" not in self.s3.list_objects_v2(Bucket=self.bucket)

    def close(self) -> None:
        self.provider.unstall.set()
        self.provider.stop()


def test_sigterm_ends_reads_blocked_on_a_silent_provider_after_the_grace_period(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    grace_s = 2.0
    stalled = _Stalled(gateway, sfn, s3, bucket, activity, grace_s)
    try:
        signalled = time.monotonic()
        stalled.process.proc.send_signal(signal.SIGTERM)
        code = stalled.process.proc.wait(grace_s + AFTER_GRACE_S)
        took = time.monotonic() - signalled
        stalled.check_answered()
    finally:
        stalled.close()
    assert code == 0
    assert grace_s <= took < grace_s + AFTER_GRACE_S  # the 60 s read timeout never decides


def test_a_second_signal_ends_blocked_reads_at_once_and_still_answers_every_task(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    stalled = _Stalled(gateway, sfn, s3, bucket, activity, grace_s=60)
    try:
        stalled.process.proc.send_signal(signal.SIGTERM)
        # Signals do not queue: the second is sent once the first was handled.
        wait_until(stalled.stopping, "the first signal handled")
        signalled = time.monotonic()
        stalled.process.proc.send_signal(signal.SIGTERM)
        code = stalled.process.proc.wait(AFTER_GRACE_S)
        took = time.monotonic() - signalled
        stalled.check_answered()
    finally:
        stalled.close()
    assert code == 0
    assert took < AFTER_GRACE_S  # not the 60 s grace, nor the 60 s read timeout


def test_sigterm_ends_a_gridftp_transfer_whose_server_froze(
    site: Site, gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    grace_s = 2.0
    site.server.put("frozen.h5", os.urandom(64 * MiB))
    process = gateway(activity, site.with_certificate(), part_size_mb=5, shutdown_grace_s=grace_s)
    machine = create_state_machine(sfn, activity)
    answered_before = set(moto_activities.ANSWERS)
    execution = start(sfn, machine, download_message([(site.url("frozen.h5"), bucket, "frozen.h5")]))
    frozen: list[int] = []

    def freeze() -> bool:  # the server's session stops mid-file, its connections left open
        for pid in site.server.session_pids():
            if site.server.bytes_read(pid) > 16 * MiB:
                os.kill(pid, signal.SIGSTOP)
                frozen.append(pid)
        return bool(frozen)

    try:
        wait_until(freeze, "the session mid-file", timeout_s=60)
        wait_until(lambda: len(_uploads(s3, bucket)) == 1, "a part in S3")
        signalled = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)
        code = process.proc.wait(grace_s + AFTER_GRACE_S)
        took = time.monotonic() - signalled
        result = wait_done(sfn, execution, timeout_s=10)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGKILL)

    assert code == 0
    assert took < grace_s + AFTER_GRACE_S
    assert (result["status"], result.get("error")) == ("FAILED", "GatewayShutdown")
    answers = {t: a for t, a in moto_activities.ANSWERS.items() if t not in answered_before}
    assert [len(a) for a in answers.values()] == [1]
    assert _uploads(s3, bucket) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
