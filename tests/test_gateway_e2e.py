"""End to end: a state machine on the local stack, ``provider-gateway run``, an HTTP provider, S3."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from provider_gateway.local.http_server import FileHTTPServer
from tests.conftest import GatewayFactory
from tests.support import create_state_machine, download_message, start, wait_done

MiB = 1024 * 1024


@pytest.fixture
def provider() -> Iterator[FileHTTPServer]:
    files = {
        "/data/small.h5": os.urandom(300_000),
        "/data/multipart.h5": os.urandom(21 * MiB),  # three 8 MiB parts
        "/data/empty.h5": b"",
    }
    files.update({f"/batch/f{i:02d}.bin": os.urandom(150_000 + i) for i in range(10)})
    with FileHTTPServer(files) as server:
        yield server


def _http(server: FileHTTPServer) -> dict[str, Any]:
    return {"type": "http", "host": server.host}


def _no_uploads_left(s3: Any, bucket: str) -> None:
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_download_succeeds_with_bytes_checksum_and_version(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    gateway(activity, _http(provider))
    machine = create_state_machine(sfn, activity)
    data = provider.files["/data/multipart.h5"]
    digest = hashlib.sha256(data).hexdigest()
    message = {
        "payload": {
            "files": [
                {
                    "type": "download",
                    "source": {
                        "url": provider.url("/data/multipart.h5"),
                        "version": "v2",
                        "size": len(data),
                        "checksum": {"type": "sha256", "value": digest},
                    },
                    "target": {"bucket": bucket, "key": "dir/multipart.h5"},
                }
            ],
            "collection": "passed through",
        },
        "meta": {"key": "MODIS"},
    }

    done = wait_done(sfn, start(sfn, machine, message))

    assert done["status"] == "SUCCEEDED", done
    output = json.loads(done["output"])
    assert output["meta"] == {"key": "MODIS"}
    assert output["payload"]["collection"] == "passed through"
    (entry,) = output["payload"]["files"]
    assert entry["success"] is True
    assert entry["bytes"] == len(data)
    assert entry["target"] == {"bucket": bucket, "key": "dir/multipart.h5"}
    assert entry["checksum"] == {"type": "sha256", "value": digest}
    obj = s3.get_object(Bucket=bucket, Key="dir/multipart.h5")
    assert hashlib.sha256(obj["Body"].read()).hexdigest() == digest
    assert obj["Metadata"] == {"version": "v2", "checksum-sha256": digest}
    _no_uploads_left(s3, bucket)


def test_from_config_target_and_empty_file(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    gateway(activity, _http(provider))
    machine = create_state_machine(sfn, activity)
    message = {
        "payload": {"files": [{"source": {"url": provider.url("/data/empty.h5")}, "target": "FROM_CONFIG"}]},
        "config": {"output": {"bucket": bucket, "key_prefix": "sources/{meta.key}"}},
        "meta": {"key": "MODIS"},
    }

    done = wait_done(sfn, start(sfn, machine, message))

    assert done["status"] == "SUCCEEDED", done
    (entry,) = json.loads(done["output"])["payload"]["files"]
    assert entry["target"] == {"bucket": bucket, "key": "sources/MODIS/empty.h5"}
    assert entry["bytes"] == 0
    assert s3.get_object(Bucket=bucket, Key="sources/MODIS/empty.h5")["Body"].read() == b""


def test_missing_file_fails_the_execution_with_source_not_found(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    gateway(activity, _http(provider))
    machine = create_state_machine(sfn, activity)
    message = download_message(
        [
            (provider.url("/data/small.h5"), bucket, "small.h5"),
            (provider.url("/data/missing.h5"), bucket, "missing.h5"),
        ]
    )

    done = wait_done(sfn, start(sfn, machine, message))

    assert done["status"] == "FAILED"
    assert done["error"] == "SourceNotFound"
    cause = json.loads(done["cause"])
    assert [f["success"] for f in cause["files"]] == [True, False]
    assert cause["files"][1]["error_code"] == "SourceNotFound"
    assert "404" in cause["files"][1]["error"]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="missing.h5")


def test_per_file_mode_succeeds_and_flags_the_missing_file(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, bucket: str, activity: str
) -> None:
    gateway(activity, _http(provider), failure_mode="per_file")
    machine = create_state_machine(sfn, activity)
    message = download_message(
        [
            (provider.url("/data/missing.h5"), bucket, "missing.h5"),
            (provider.url("/data/small.h5"), bucket, "small.h5"),
        ]
    )

    done = wait_done(sfn, start(sfn, machine, message))

    assert done["status"] == "SUCCEEDED", done
    first, second = json.loads(done["output"])["payload"]["files"]
    assert (first["success"], first["error_code"]) == (False, "SourceNotFound")
    assert (second["success"], second["bytes"]) == (True, 300_000)


def test_two_connections_serve_ten_files_over_several_tasks(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    gateway(activity, _http(provider), num_connections=2)
    machine = create_state_machine(sfn, activity)
    names = sorted(p for p in provider.files if p.startswith("/batch/"))
    groups = [names[0:4], names[4:7], names[7:9], names[9:10]]
    executions = [
        start(sfn, machine, download_message([(provider.url(n), bucket, n[1:]) for n in group])) for group in groups
    ]

    results = [wait_done(sfn, arn) for arn in executions]

    assert [r["status"] for r in results] == ["SUCCEEDED"] * 4
    for name in names:
        assert s3.get_object(Bucket=bucket, Key=name[1:])["Body"].read() == provider.files[name]
    assert provider.connections.max <= 2
    assert provider.connections.total == 2


def test_bucket_write_failure_is_target_write_failed_and_leaves_nothing(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, activity: str
) -> None:
    gateway(activity, _http(provider))
    machine = create_state_machine(sfn, activity)
    message = download_message([(provider.url("/data/multipart.h5"), "no-such-bucket-here", "x.h5")])

    done = wait_done(sfn, start(sfn, machine, message))

    assert done["status"] == "FAILED"
    assert done["error"] == "TargetWriteFailed"
    assert "no-such-bucket-here" in json.loads(done["cause"])["files"][0]["error"]


def test_checksum_mismatch_leaves_no_object_and_no_multipart_upload(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    gateway(activity, _http(provider))
    machine = create_state_machine(sfn, activity)
    message = download_message(
        [(provider.url("/data/multipart.h5"), bucket, "bad.h5")],
        checksum={"type": "md5", "value": "0" * 32},
    )

    done = wait_done(sfn, start(sfn, machine, message))

    assert done["status"] == "FAILED"
    assert done["error"] == "IntegrityError"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    _no_uploads_left(s3, bucket)


def test_each_invalid_request_is_refused_and_the_gateway_keeps_serving(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    gateway(activity, _http(provider), allowed_buckets=[bucket])
    machine = create_state_machine(sfn, activity)
    good = (provider.url("/data/small.h5"), bucket, "small.h5")
    cases = {
        "not JSON": '"just a string"',
        "no files": {"payload": {"files": []}},
        "file without url": {"payload": {"files": [{"source": {}, "target": {"bucket": bucket, "key": "k"}}]}},
        "unknown scheme": download_message([("gopher://" + provider.host + "/data/small.h5", bucket, "k")]),
        "another host": download_message([("http://example.org/data/small.h5", bucket, "k")]),
        "bucket not allowed": download_message([(provider.url("/data/small.h5"), "other-bucket", "k")]),
    }
    expected_words = {
        "not JSON": "JSON",
        "no files": "payload.files",
        "file without url": "source.url",
        "unknown scheme": "gopher",
        "another host": "example.org",
        "bucket not allowed": "allowed_buckets",
    }
    executions = {name: start(sfn, machine, msg) for name, msg in cases.items()}
    follow_up = start(sfn, machine, download_message([good]))

    for name, arn in executions.items():
        done = wait_done(sfn, arn)
        assert (done["status"], done.get("error")) == ("FAILED", "InvalidRequest"), name
        assert expected_words[name] in done["cause"], (name, done["cause"])
    assert wait_done(sfn, follow_up)["status"] == "SUCCEEDED"
    assert provider.requests == ["/data/small.h5"]  # nothing invalid was ever fetched


def test_a_transfer_longer_than_heartbeat_seconds_succeeds(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    data = os.urandom(5 * MiB)
    with FileHTTPServer({"/slow.bin": data}, rate_bytes_per_s=1 * MiB) as slow:
        gateway(activity, _http(slow), heartbeat_interval_s=1)
        machine = create_state_machine(sfn, activity, heartbeat_s=2)

        done = wait_done(sfn, start(sfn, machine, download_message([(slow.url("/slow.bin"), bucket, "slow.bin")])))

    assert done["status"] == "SUCCEEDED", done
    assert s3.get_object(Bucket=bucket, Key="slow.bin")["Body"].read() == data


def test_a_refused_heartbeat_cancels_the_transfer_and_frees_the_connection(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    files = {"/slow.bin": os.urandom(12 * MiB), "/next.bin": os.urandom(1000)}
    with FileHTTPServer(files, rate_bytes_per_s=1 * MiB) as slow:
        process = gateway(activity, _http(slow), num_connections=1, heartbeat_interval_s=3)
        impatient = create_state_machine(sfn, activity, heartbeat_s=1)
        timed_out = start(sfn, impatient, download_message([(slow.url("/slow.bin"), bucket, "slow.bin")]))
        assert wait_done(sfn, timed_out)["error"] == "States.Timeout"

        patient = create_state_machine(sfn, activity, heartbeat_s=30)
        follow_up = wait_done(
            sfn, start(sfn, patient, download_message([(slow.url("/next.bin"), bucket, "next.bin")])), timeout_s=30
        )

    assert follow_up["status"] == "SUCCEEDED", follow_up
    assert "heartbeat refused (TaskTimedOut)" in process.log()
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [o["Key"] for o in listed] == ["next.bin"]
    _no_uploads_left(s3, bucket)
