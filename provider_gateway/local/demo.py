"""``provider-gateway demo``: the whole system on this machine, nothing from AWS.

It starts the embedded S3 + Step Functions, a local HTTP provider with
sample files, creates the activity and the state machine, starts one
execution per file (and one for a file the provider does not have), runs the
gateway, and prints what happened to each file.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml

from provider_gateway.config import load_config
from provider_gateway.engine.gateway import Gateway
from provider_gateway.local.http_server import FileHTTPServer
from provider_gateway.local.stack import LocalStack
from provider_gateway.workflow import download_state_machine

ROLE_ARN = "arn:aws:iam::123456789012:role/provider-gateway-demo"
BUCKET = "demo-science-data"
MB = 1_000_000


@dataclass(frozen=True)
class Row:
    """One line of the summary."""

    file: str
    bytes: int
    seconds: float
    outcome: str


def sample_files(count: int, largest_mb: int) -> dict[str, bytes]:
    """Sample granules from a few hundred KB up to ``largest_mb`` MB."""
    sizes = [max(1, int(largest_mb * MB * (i + 1) / count)) for i in range(count)]
    return {f"/MODIS/2026/325/granule_{i:03d}.h5": os.urandom(size) for i, size in enumerate(sizes)}


def run_demo(file_count: int = 6, largest_mb: int = 24) -> int:
    """Run the demo; 0 when every file arrived whole and the missing one was reported."""
    files = sample_files(file_count, largest_mb)
    with LocalStack(long_poll_s=5) as stack, FileHTTPServer(files) as provider:
        os.environ.update(stack.environment())
        session = boto3.session.Session()
        sfn, s3 = session.client("stepfunctions"), session.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        activity = sfn.create_activity(name="HttpProvDownloadActivity")["activityArn"]
        machine = sfn.create_state_machine(
            name="DemoDownload",
            roleArn=ROLE_ARN,
            definition=json.dumps(download_state_machine(activity, heartbeat_s=30)),
        )["stateMachineArn"]
        config = load_config(str(_write_config(provider, activity)))
        gateway = Gateway(config, sfn=sfn, s3=s3)
        print(f"embedded AWS stack on {stack.endpoint}; provider on {provider.base_url}")
        print(f"gateway: provider HTTP_PROV, 2 connections, activity {activity}\n")
        runner = threading.Thread(target=gateway.serve_forever, name="gateway", daemon=True)
        runner.start()
        try:
            started = time.monotonic()
            rows = _run_executions(sfn, s3, machine, provider, [*files, "/MODIS/2026/325/not_there.h5"])
            elapsed = time.monotonic() - started
        finally:
            gateway.stop()
            runner.join(30)
    _print_summary(rows, elapsed, provider)
    ok = all(r.outcome == "SUCCEEDED" for r in rows[:-1]) and "SourceNotFound" in rows[-1].outcome
    return 0 if ok else 1


def _write_config(provider: FileHTTPServer, activity: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="provider-gateway-demo-")) / "collections.yml"
    document = {
        "providers": [
            {
                "id": "HTTP_PROV",
                "config": {
                    "gateway_config": {
                        "activity_arn": activity,
                        "conn_config": {"type": "http", "host": provider.host},
                        "num_connections": 2,
                        "heartbeat_interval_s": 5,
                        "allowed_buckets": [BUCKET],
                    }
                },
            }
        ]
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _run_executions(sfn: Any, s3: Any, machine: str, provider: FileHTTPServer, paths: list[str]) -> list[Row]:
    executions = {}
    for path in paths:
        message = {
            "payload": {"files": [{"source": {"url": provider.url(path), "version": "v1"}, "target": "FROM_CONFIG"}]},
            "config": {"output": {"bucket": BUCKET, "key_prefix": "sources/{meta.collection}"}},
            "meta": {"collection": "MODIS"},
        }
        executions[path] = sfn.start_execution(stateMachineArn=machine, input=json.dumps(message))["executionArn"]
    rows = []
    for path, arn in executions.items():
        described = _wait(sfn, arn)
        seconds = (described["stopDate"] - _claimed_at(sfn, arn, described["startDate"])).total_seconds()
        if described["status"] == "SUCCEEDED":
            (entry,) = json.loads(described["output"])["payload"]["files"]
            key = entry["target"]["key"]
            intact = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == provider.files[path]
            outcome = "SUCCEEDED" if intact else "CORRUPTED"
            rows.append(Row(path, entry["bytes"], seconds, outcome))
        else:
            error = described.get("error", "")
            rows.append(Row(path, 0, seconds, f"{described['status']} {error}".strip()))
    return rows


def _claimed_at(sfn: Any, arn: str, default: Any) -> Any:
    """When the gateway claimed the task: the time in queue is not transfer time."""
    for event in sfn.get_execution_history(executionArn=arn)["events"]:
        if event["type"] == "ActivityStarted":
            return event["timestamp"]
    return default


def _wait(sfn: Any, arn: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        described: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.1)
    raise TimeoutError(f"execution {arn} did not finish in {timeout_s}s")


def _print_summary(rows: list[Row], elapsed: float, provider: FileHTTPServer) -> None:
    width = max(len(r.file) for r in rows)
    print(f"{'file':<{width}}  {'bytes':>12}  {'MB/s':>7}  outcome")
    for r in rows:
        rate = f"{r.bytes / r.seconds / MB:7.1f}" if r.bytes and r.seconds > 0 else "      -"
        print(f"{r.file:<{width}}  {r.bytes:>12,}  {rate}  {r.outcome}")
    total = sum(r.bytes for r in rows)
    print(
        f"\n{len(rows)} executions, {total / MB:.1f} MB in {elapsed:.1f} s "
        f"({total / elapsed / MB:.1f} MB/s over 2 connections); "
        f"the provider saw {provider.connections_total} TCP connection(s), at most {provider.connections_max} at once"
    )
