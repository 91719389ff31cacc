"""Payloads too large for Step Functions: S3 pointers in, pointers or OutputTooLarge out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provider_gateway import json_input
from provider_gateway.local.http_server import FileHTTPServer
from tests.conftest import GatewayFactory
from tests.support import create_state_machine, start, unique, wait_done

# Under the 256 KiB input limit, but the output adds a result to each of many files.
FILE_COUNT = 400
INPUT_BYTES = 258_000
LIMIT = 262_144


@pytest.fixture
def provider() -> Iterator[FileHTTPServer]:
    with FileHTTPServer({"/tiny.txt": b"t"}) as server:
        yield server


def _many_files_message(provider: FileHTTPServer, bucket: str) -> dict[str, Any]:
    def entry(i: int, padding: str) -> dict[str, Any]:
        target = {"bucket": bucket, "key": f"k/{i:04d}"}
        return {"source": {"url": provider.url("/tiny.txt")}, "target": target, "note": padding}

    bare = len(json.dumps(entry(0, ""), separators=(",", ":")))
    padding = "p" * (INPUT_BYTES // FILE_COUNT - bare)
    message = {"payload": {"files": [entry(i, padding) for i in range(FILE_COUNT)]}}
    assert len(json.dumps(message, separators=(",", ":"))) < LIMIT
    return message


def test_payload_given_as_s3_pointer_is_followed(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    gateway(activity, {"type": "http", "host": provider.host}, payload_bucket=bucket)
    machine = create_state_machine(sfn, activity)
    payload = {"files": [{"source": {"url": provider.url("/tiny.txt")}, "target": {"bucket": bucket, "key": "t.txt"}}]}
    s3.put_object(Bucket=bucket, Key="in/payload.json", Body=json.dumps(payload).encode())

    done = wait_done(sfn, start(sfn, machine, {"payload": {"Bucket": bucket, "Key": "in/payload.json"}}))

    assert done["status"] == "SUCCEEDED", done
    assert json.loads(done["output"])["payload"]["files"][0]["success"] is True
    assert s3.get_object(Bucket=bucket, Key="t.txt")["Body"].read() == b"t"


def test_output_over_the_limit_goes_to_the_payload_bucket(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    gateway(activity, {"type": "http", "host": provider.host}, payload_bucket=bucket)
    machine = create_state_machine(sfn, activity, timeout_s=600)
    message = _many_files_message(provider, bucket)

    done = wait_done(sfn, start(sfn, machine, message), timeout_s=240)

    assert done["status"] == "SUCCEEDED", done.get("cause", "")[:500]
    pointer = json.loads(done["output"])["payload"]
    assert set(pointer) == {"Bucket", "Key"} and pointer["Bucket"] == bucket
    stored = json.loads(s3.get_object(Bucket=pointer["Bucket"], Key=pointer["Key"])["Body"].read())
    assert len(stored["files"]) == FILE_COUNT
    assert all(f["success"] and f["bytes"] == 1 for f in stored["files"])


def test_output_over_the_limit_without_payload_bucket_is_output_too_large(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, bucket: str, activity: str
) -> None:
    gateway(activity, {"type": "http", "host": provider.host})
    machine = create_state_machine(sfn, activity, timeout_s=600)

    done = wait_done(sfn, start(sfn, machine, _many_files_message(provider, bucket)), timeout_s=240)

    assert (done["status"], done["error"]) == ("FAILED", "OutputTooLarge")
    assert "payload_bucket" in done["cause"]


def test_a_task_of_3000_files_completes_through_s3_pointers(
    gateway: GatewayFactory, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    count = 3000
    files = {f"/many/f{i:04d}": i.to_bytes(2, "big") * 8 for i in range(count)}
    with FileHTTPServer(files) as many:
        gateway(activity, {"type": "http", "host": many.host}, payload_bucket=bucket)
        machine = create_state_machine(sfn, activity, timeout_s=600)
        payload = {"files": [{"source": {"url": many.url(p)}, "target": "FROM_CONFIG"} for p in files]}
        s3.put_object(Bucket=bucket, Key="in/3000.json", Body=json.dumps(payload).encode())
        message = {
            "payload": {"Bucket": bucket, "Key": "in/3000.json"},
            "config": {"output": {"bucket": bucket, "key_prefix": "many"}},
        }

        done = wait_done(sfn, start(sfn, machine, message), timeout_s=300)

    assert done["status"] == "SUCCEEDED", done.get("cause", "")[:500]
    pointer = json.loads(done["output"])["payload"]
    stored = json.loads(s3.get_object(Bucket=pointer["Bucket"], Key=pointer["Key"])["Body"].read())
    assert len(stored["files"]) == count
    assert all(f["success"] and f["bytes"] == 16 for f in stored["files"])
    listed = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="many/")
    assert sum(len(page.get("Contents", [])) for page in listed) == count
    assert s3.get_object(Bucket=bucket, Key="many/f2999")["Body"].read() == files["/many/f2999"]


def test_a_pointer_into_a_bucket_neither_allowed_nor_the_payload_bucket_is_invalid(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    elsewhere = unique("other")
    s3.create_bucket(Bucket=elsewhere)
    payload = {"files": [{"source": {"url": provider.url("/tiny.txt")}, "target": {"bucket": bucket, "key": "t.txt"}}]}
    s3.put_object(Bucket=elsewhere, Key="in/payload.json", Body=json.dumps(payload).encode())
    gateway(activity, {"type": "http", "host": provider.host}, payload_bucket=bucket, allowed_buckets=[bucket])
    machine = create_state_machine(sfn, activity)

    done = wait_done(sfn, start(sfn, machine, {"payload": {"Bucket": elsewhere, "Key": "in/payload.json"}}))

    assert (done["status"], done["error"]) == ("FAILED", "InvalidRequest"), done
    assert f"S3 pointers are read only from allowed buckets ({bucket})" in done["cause"]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)  # nothing was copied


def test_a_pointer_over_the_cap_is_invalid_and_never_read_whole(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    big = 48 * 1024 * 1024
    s3.put_object(Bucket=bucket, Key="in/big.json", Body=b'{"files": [' + b"{}," * (big // 3) + b"{}]}")
    process = gateway(activity, {"type": "http", "host": provider.host}, payload_bucket=bucket)
    machine = create_state_machine(sfn, activity)
    small = wait_done(sfn, start(sfn, machine, {"payload": {"files": []}}))  # the gateway is up and has worked
    before = _peak_rss(process.proc.pid)

    done = wait_done(sfn, start(sfn, machine, {"payload": {"Bucket": bucket, "Key": "in/big.json"}}))

    assert small["error"] == "InvalidRequest"
    assert (done["status"], done["error"]) == ("FAILED", "InvalidRequest"), done
    assert f"is over {json_input.MAX_BYTES} bytes" in done["cause"]
    # Reading it whole would hold 48 MiB of bytes, and parsing it gigabytes.
    assert _peak_rss(process.proc.pid) - before < 16 * 1024 * 1024


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory in bytes (Linux VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")
