"""Faults for real: providers that reset connections mid-file. Nothing may be lost or duplicated."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from provider_gateway.local.ftp_server import FileFTPServer
from provider_gateway.local.http_server import FileHTTPServer
from provider_gateway.local.stack import LocalStack
from provider_gateway.protocols.sftp_session import FILE_AHEAD
from tests.conftest import GatewayFactory
from tests.servers import SSHD, CountingProxy, FaultyS3Proxy, Sshd
from tests.support import create_activity, create_state_machine, download_message, start, wait_done, wait_until

MiB = 1024 * 1024
# How long the provider killed mid-batch stays down.
OUTAGE_S = 1.5


def test_http_resets_at_30_60_90_percent_are_healed_by_range_resumes(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    data = os.urandom(21 * MiB)
    with FileHTTPServer({"/big.h5": data}) as provider:
        provider.resets["/big.h5"] = [0.3, 0.6, 0.9]
        process = gateway(activity, {"type": "http", "host": provider.host}, part_size_mb=5)
        machine = create_state_machine(sfn, activity)

        done = wait_done(sfn, start(sfn, machine, download_message([(provider.url("/big.h5"), bucket, "big.h5")])))

        served = provider.bytes_served
        assert provider.resets["/big.h5"] == []  # every fault fired

    assert done["status"] == "SUCCEEDED", done
    body = s3.get_object(Bucket=bucket, Key="big.h5")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert served < 1.5 * len(data)
    assert process.log().count("resuming") == 3
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_ftp_aborted_transfers_at_30_60_90_percent_are_healed_by_rest_resumes(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str, tmp_path: Path
) -> None:
    data = os.urandom(21 * MiB)
    (tmp_path / "big.h5").write_bytes(data)
    with FileFTPServer(tmp_path) as provider:
        provider.resets["big.h5"] = [0.3, 0.6, 0.9]
        conn = {"type": "ftp", "host": "127.0.0.1", "port": provider.port, "username": "provider", "password": "secret"}
        process = gateway(activity, conn, part_size_mb=5)
        machine = create_state_machine(sfn, activity)
        url = f"ftp://127.0.0.1:{provider.port}/big.h5"

        done = wait_done(sfn, start(sfn, machine, download_message([(url, bucket, "big.h5")])))

        served, pending = provider.bytes_served, provider.resets["big.h5"]

    assert done["status"] == "SUCCEEDED", done
    assert pending == []
    body = s3.get_object(Bucket=bucket, Key="big.h5")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert served < 1.5 * len(data)
    assert process.log().count("resuming") == 3


@pytest.mark.skipif(SSHD is None and not os.environ.get("CI"), reason="needs OpenSSH sshd")
def test_sftp_connections_cut_at_30_60_90_percent_are_healed_by_offset_resumes(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str, tmp_path: Path
) -> None:
    data = os.urandom(21 * MiB)
    (tmp_path / "big.h5").write_bytes(data)
    sshd = Sshd(tmp_path / "sshd")
    proxy = CountingProxy(sshd.port)
    try:
        proxy.cuts = [int(len(data) * f) for f in (0.3, 0.6, 0.9)]
        conn = {
            "type": "sftp",
            "host": "127.0.0.1",
            "port": proxy.port,
            "username": sshd.user,
            "private_key_file": str(sshd.client_key),
            "host_key": sshd.host_key_line,
        }
        process = gateway(activity, conn, part_size_mb=5, num_connections=1)
        machine = create_state_machine(sfn, activity)
        url = f"sftp://127.0.0.1:{proxy.port}{tmp_path / 'big.h5'}"

        done = wait_done(sfn, start(sfn, machine, download_message([(url, bucket, "big.h5")])), timeout_s=120)
        served, pending, most = proxy.relayed, proxy.cuts, proxy.max_open
    finally:
        proxy.close()
        sshd.stop()

    assert done["status"] == "SUCCEEDED", done
    assert pending == []
    body = s3.get_object(Bucket=bucket, Key="big.h5")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    resumed_at = [int(n) for n in re.findall(r"transfer interrupted at byte (\d+)", process.log())]
    # Reads run ahead of the copy, so a cut may land while a file is reopened (retried, not logged as a resume).
    assert 1 <= len(resumed_at) <= 3 and resumed_at == sorted(set(resumed_at)) and resumed_at[0] > 0, resumed_at
    # What was on its way when a cut came is lost: at most a file's read-ahead each time.
    assert served < len(data) + 3 * FILE_AHEAD
    assert most == 1


def test_secrets_never_reach_logs_outputs_or_causes(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    password, token, in_url = "pw-S3CRET-1f9", "tok-S3CRET-77a", "url-S3CRET-42"
    with FileHTTPServer({"/ok.h5": b"fine"}, basic_auth=("alice", password)) as provider:
        with_password = gateway(
            activity,
            {"type": "http", "host": provider.host, "username": "alice", "password": password},
            failure_mode="per_file",
        )
        token_activity = create_activity(sfn, "token")
        with_token = gateway(token_activity, {"type": "http", "host": provider.host, "token": token})
        userinfo_url = provider.url("/ok.h5").replace("http://", f"http://bob:{in_url}@")
        results = [
            wait_done(sfn, start(sfn, create_state_machine(sfn, arn), download_message(files)))
            for arn, files in [
                (
                    activity,
                    [
                        (provider.url("/ok.h5"), bucket, "ok"),
                        (provider.url("/missing"), bucket, "m"),
                        (userinfo_url, bucket, "u"),
                    ],
                ),
                (token_activity, [(provider.url("/ok.h5"), bucket, "t")]),
            ]
        ]

    assert results[0]["status"] == "SUCCEEDED" and results[1]["error"] == "SourceAccessDenied"
    answers = [json.dumps({k: r.get(k) for k in ("output", "error", "cause")}) for r in results]
    seen = " ".join([with_password.log(), with_token.log(), *answers])
    for secret in (password, token, in_url):
        assert secret not in seen
    assert "Traceback" not in seen


def test_a_stalled_provider_is_source_unavailable_after_the_read_timeout_and_the_next_task_is_served(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    files = {"/stuck.h5": os.urandom(4 * MiB), "/next.h5": b"next"}
    with FileHTTPServer(files) as provider:
        provider.stalls["/stuck.h5"] = 0.5
        gateway(activity, {"type": "http", "host": provider.host}, num_connections=1, read_timeout_s=1, retries=1)
        machine = create_state_machine(sfn, activity)

        stuck = wait_done(sfn, start(sfn, machine, download_message([(provider.url("/stuck.h5"), bucket, "s")])))
        after = wait_done(sfn, start(sfn, machine, download_message([(provider.url("/next.h5"), bucket, "n")])))
        connections = provider.connections.total

    assert (stuck["status"], stuck["error"]) == ("FAILED", "SourceUnavailable")
    assert "timed out" in json.loads(stuck["cause"])["files"][0]["error"].lower()
    assert after["status"] == "SUCCEEDED", after
    assert connections >= 2  # the stalled connection was replaced
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="s")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_provider_killed_and_restarted_during_a_batch_of_twenty(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    files = {f"/batch/f{i:02d}.h5": os.urandom(1 * MiB) for i in range(20)}
    first = FileHTTPServer(files, rate_bytes_per_s=4 * MiB).start()
    port = int(first.server_address[1])
    gateway(activity, {"type": "http", "host": first.host}, num_connections=2, retries=6)
    machine = create_state_machine(sfn, activity)
    executions = [start(sfn, machine, download_message([(first.url(p), bucket, p[1:])])) for p in files]
    wait_until(lambda: first.connections.total > 0 and len(first.requests) >= 4, "four files requested")
    first.kill()  # mid-batch, connections and all
    most_first = first.connections.max
    time.sleep(OUTAGE_S)  # the fault itself: the provider stays down this long
    with FileHTTPServer(files, rate_bytes_per_s=4 * MiB, port=port) as second:
        results = [wait_done(sfn, arn, timeout_s=120) for arn in executions]
        most_second = second.connections.max

    outcomes = [(r["status"], r.get("error")) for r in results]
    assert all(o == ("SUCCEEDED", None) or o == ("FAILED", "SourceUnavailable") for o in outcomes), outcomes
    for (status, _), path in zip(outcomes, files, strict=True):
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=path[1:]).get("Contents", [])
        if status == "SUCCEEDED":
            assert s3.get_object(Bucket=bucket, Key=path[1:])["Body"].read() == files[path]
        else:
            assert listed == []
    assert outcomes.count(("SUCCEEDED", None)) >= 18  # a retry budget of 6 outlasts the outage
    assert max(most_first, most_second) <= 2
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_break_on_a_server_that_ignores_range_restarts_the_file(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    data = os.urandom(12 * MiB)
    with FileHTTPServer({"/big.h5": data}) as provider:
        provider.ignore_range = True
        provider.resets["/big.h5"] = [0.5]
        process = gateway(activity, {"type": "http", "host": provider.host}, part_size_mb=5)
        machine = create_state_machine(sfn, activity)

        done = wait_done(sfn, start(sfn, machine, download_message([(provider.url("/big.h5"), bucket, "big.h5")])))

    assert done["status"] == "SUCCEEDED", done
    assert s3.get_object(Bucket=bucket, Key="big.h5")["Body"].read() == data
    assert "starting it over" in process.log()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.parametrize("code", ["AccessDenied", "InternalError"])
def test_s3_failing_a_part_mid_upload_is_target_write_failed_and_aborts_the_upload(
    gateway: GatewayFactory, stack: LocalStack, sfn: Any, s3: Any, bucket: str, activity: str, code: str
) -> None:
    proxy = FaultyS3Proxy(stack.endpoint, lambda method, path: code if "partNumber=2&" in path + "&" else None)
    data = os.urandom(12 * MiB)
    try:
        with FileHTTPServer({"/big.h5": data}) as provider:
            gateway(
                activity,
                {"type": "http", "host": provider.host},
                part_size_mb=5,
                extra_env={"AWS_ENDPOINT_URL_S3": proxy.endpoint},
            )
            machine = create_state_machine(sfn, activity)

            done = wait_done(sfn, start(sfn, machine, download_message([(provider.url("/big.h5"), bucket, "big.h5")])))
    finally:
        proxy.close()

    assert (done["status"], done["error"]) == ("FAILED", "TargetWriteFailed"), done
    assert code in json.loads(done["cause"])["files"][0]["error"]
    assert proxy.failed, "the fault was never injected"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_s3_refusing_small_files_fails_exactly_those_while_the_others_land(
    gateway: GatewayFactory, stack: LocalStack, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    # Small files are written by one PutObject that runs while the connection fetches the next file.
    proxy = FaultyS3Proxy(
        stack.endpoint, lambda method, path: "AccessDenied" if method == "PUT" and "bad" in path else None
    )
    files = {f"/{name}{i}.h5": os.urandom(1000 + i) for i in range(6) for name in ("ok", "bad")}
    try:
        with FileHTTPServer(files) as provider:
            gateway(
                activity,
                {"type": "http", "host": provider.host},
                failure_mode="per_file",
                extra_env={"AWS_ENDPOINT_URL_S3": proxy.endpoint},
            )
            machine = create_state_machine(sfn, activity)
            message = download_message([(provider.url(path), bucket, path[1:]) for path in files])
            done = wait_done(sfn, start(sfn, machine, message))
    finally:
        proxy.close()

    assert done["status"] == "SUCCEEDED", done
    results = {f["target"]["key"]: f for f in json.loads(done["output"])["payload"]["files"]}
    for path, body in files.items():
        result = results[path[1:]]
        if "bad" in path:
            assert (result["success"], result["error_code"]) == (False, "TargetWriteFailed")
        else:
            assert result["success"] is True and result["bytes"] == len(body)
            assert s3.get_object(Bucket=bucket, Key=path[1:])["Body"].read() == body
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == sorted(
        p[1:] for p in files if "ok" in p
    )
