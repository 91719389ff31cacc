"""SIGTERM with transfers in flight: every claimed task answered exactly once, nothing left behind."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from provider_gateway.local import moto_activities
from provider_gateway.local.http_server import FileHTTPServer
from tests.conftest import GatewayFactory
from tests.support import create_state_machine, download_message, start, wait_done

MiB = 1024 * 1024


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
        deadline = time.monotonic() + 20
        while process.log().count(" claimed: ") < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.log().count(" claimed: ") == 4

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
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_second_signal_stops_at_once_and_still_answers_every_task(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    files = {f"/slow{i}.h5": os.urandom(8 * MiB) for i in range(2)}
    with FileHTTPServer(files, rate_bytes_per_s=1 * MiB) as provider:
        process = gateway(activity, {"type": "http", "host": provider.host}, num_connections=2, shutdown_grace_s=60)
        machine = create_state_machine(sfn, activity)
        answered_before = set(moto_activities.ANSWERS)
        executions = [start(sfn, machine, download_message([(provider.url(p), bucket, p[1:])])) for p in files]
        deadline = time.monotonic() + 20
        while process.log().count(" claimed: ") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)

        process.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        stopped_at = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)
        code = process.proc.wait(30)
        took = time.monotonic() - stopped_at
        results = [wait_done(sfn, arn) for arn in executions]

    assert code == 0
    assert took < 10  # not the 60 s grace
    assert [(r["status"], r.get("error")) for r in results] == [("FAILED", "GatewayShutdown")] * 2
    answers = {t: a for t, a in moto_activities.ANSWERS.items() if t not in answered_before}
    assert len(answers) == 2 and all(len(a) == 1 for a in answers.values()), answers
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
