"""``provider-gateway demo``: the whole system on this machine, nothing from AWS.

It starts the embedded S3 + Step Functions and three sample providers on
loopback (HTTP, FTP and SFTP, each serving the same sample granules), creates
an activity and a state machine per provider, starts one execution per file
and per provider (and one for a file the HTTP provider does not have), runs
the gateway with two connections per provider, and prints what happened to
each file.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from provider_gateway.aws import AwsClients, default_session
from provider_gateway.config import load_config
from provider_gateway.engine.gateway import Gateway
from provider_gateway.leases import create_table
from provider_gateway.local.executions import wait_for_execution
from provider_gateway.local.ftp_server import FileFTPServer
from provider_gateway.local.http_server import FileHTTPServer
from provider_gateway.local.sftp_server import InProcessSFTPServer
from provider_gateway.local.stack import LocalStack
from provider_gateway.workflow import download_state_machine

ROLE_ARN = "arn:aws:iam::123456789012:role/provider-gateway-demo"
BUCKET = "demo-science-data"
MB = 1_000_000
MISSING = "not_there.h5"
LEASE_TABLE = "demo-connection-leases"


@dataclass(frozen=True)
class DemoProvider:
    """A sample provider: its id, its conn_config, and how it names a file."""

    id: str
    conn_config: dict[str, Any]
    url_prefix: str
    connections: Callable[[], tuple[int, int]]
    """What the provider saw: connections in all, and the most open at once."""

    def url(self, name: str) -> str:
        return self.url_prefix + quote(name)


@dataclass(frozen=True)
class Row:
    """One line of the summary."""

    provider: str
    file: str
    bytes: int
    seconds: float
    outcome: str


def sample_files(count: int, largest_mb: int) -> dict[str, bytes]:
    """Sample granules from a few MB up to ``largest_mb`` MB."""
    sizes = [max(1, int(largest_mb * MB * (i + 1) / count)) for i in range(count)]
    return {f"granule_{i:03d}.h5": os.urandom(size) for i, size in enumerate(sizes)}


def run_demo(file_count: int = 6, largest_mb: int = 24, replicas: int = 1) -> int:
    """Run the demo; 0 when every file arrived whole and the missing one was reported.

    With ``replicas`` > 1, that many gateways serve the same providers and
    share each provider's 2 connections through a lease table.
    """
    files = sample_files(file_count, largest_mb)
    with ExitStack() as stack:
        local = stack.enter_context(LocalStack(long_poll_s=5))
        providers = _start_providers(stack, files)
        os.environ.update(local.environment())
        session = default_session()
        sfn, s3 = session.client("stepfunctions"), session.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        machines = {p.id: _state_machine(sfn, p.id) for p in providers}
        dynamodb = None
        if replicas > 1:
            dynamodb = AwsClients(session).lease_table()
            create_table(dynamodb, LEASE_TABLE)
        config = load_config(str(_write_config(providers, machines, leases=replicas > 1)))
        gateways = [
            Gateway(config, sfn=sfn, s3=s3, dynamodb=dynamodb, worker_name=f"demo-gateway-{i + 1}")
            for i in range(replicas)
        ]
        print(f"embedded AWS stack on {local.endpoint}")
        shared = f", shared by {replicas} gateways (lease table {LEASE_TABLE})" if replicas > 1 else ""
        for p in providers:
            print(f"  {p.id:<10} {p.url_prefix:<32} 2 connections{shared}, activity {machines[p.id][0]}")
        runners = [
            threading.Thread(target=g.serve_forever, name=f"gateway-{i + 1}", daemon=True)
            for i, g in enumerate(gateways)
        ]
        for runner in runners:
            runner.start()
        try:
            started = time.monotonic()
            rows = _run_executions(sfn, s3, machines, providers, files)
            elapsed = time.monotonic() - started
        finally:
            for gateway in gateways:
                gateway.stop()
            for runner in runners:
                runner.join(30)
        _print_summary(rows, elapsed, providers, replicas)
    failures = [r for r in rows if r.file != MISSING and r.outcome != "SUCCEEDED"]
    missing_reported = any(r.file == MISSING and "SourceNotFound" in r.outcome for r in rows)
    return 0 if not failures and missing_reported else 1


def _start_providers(stack: ExitStack, files: dict[str, bytes]) -> list[DemoProvider]:
    root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="provider-gateway-demo-")))
    for name, data in files.items():
        (root / name).write_bytes(data)
    http = stack.enter_context(FileHTTPServer({f"/MODIS/{n}": d for n, d in files.items()}))
    ftp = stack.enter_context(FileFTPServer(root))
    sftp = stack.enter_context(InProcessSFTPServer(root))
    login = {"username": "provider", "password": "secret"}
    return [
        DemoProvider(
            "HTTP_PROV",
            {"type": "http", "host": http.host},
            f"{http.base_url}/MODIS/",
            lambda: (http.connections.total, http.connections.max),
        ),
        DemoProvider(
            "FTP_PROV",
            {"type": "ftp", "host": "127.0.0.1", "port": ftp.port, **login},
            f"ftp://127.0.0.1:{ftp.port}/",
            lambda: (ftp.connections.total, ftp.connections.max),
        ),
        DemoProvider(
            "SFTP_PROV",
            {"type": "sftp", "host": "127.0.0.1", "port": sftp.port, "host_key": sftp.host_key_line, **login},
            f"sftp://127.0.0.1:{sftp.port}/",
            lambda: (sftp.connections.total, sftp.connections.max),
        ),
    ]


def _state_machine(sfn: Any, provider_id: str) -> tuple[str, str]:
    name = provider_id.title().replace("_", "")
    activity = sfn.create_activity(name=f"{name}DownloadActivity")["activityArn"]
    machine = sfn.create_state_machine(
        name=f"{name}Download", roleArn=ROLE_ARN, definition=json.dumps(download_state_machine(activity, 30))
    )["stateMachineArn"]
    return activity, machine


def _write_config(providers: list[DemoProvider], machines: dict[str, tuple[str, str]], leases: bool) -> Path:
    path = Path(tempfile.mkdtemp(prefix="provider-gateway-demo-")) / "collections.yml"
    document = {
        "providers": [
            {
                "id": p.id,
                "config": {
                    "gateway_config": {
                        "activity_arn": machines[p.id][0],
                        "conn_config": p.conn_config,
                        "num_connections": 2,
                        "heartbeat_interval_s": 5,
                        "allowed_buckets": [BUCKET],
                        **({"connection_leases": {"table": LEASE_TABLE, "idle_release_s": 2}} if leases else {}),
                    }
                },
            }
            for p in providers
        ]
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _run_executions(
    sfn: Any,
    s3: Any,
    machines: dict[str, tuple[str, str]],
    providers: list[DemoProvider],
    files: dict[str, bytes],
) -> list[Row]:
    executions = []
    for provider in providers:
        names = [*files, MISSING] if provider.id == "HTTP_PROV" else list(files)
        for name in names:
            message = {
                "payload": {
                    "files": [{"source": {"url": provider.url(name), "version": "v1"}, "target": "FROM_CONFIG"}]
                },
                "config": {"output": {"bucket": BUCKET, "key_prefix": "{meta.provider}/MODIS"}},
                "meta": {"provider": provider.id},
            }
            arn = sfn.start_execution(stateMachineArn=machines[provider.id][1], input=json.dumps(message))
            executions.append((provider.id, name, arn["executionArn"]))
    return [_row(sfn, s3, provider_id, name, arn, files) for provider_id, name, arn in executions]


def _row(sfn: Any, s3: Any, provider_id: str, name: str, arn: str, files: dict[str, bytes]) -> Row:
    described = wait_for_execution(sfn, arn)
    seconds = (described["stopDate"] - _claimed_at(sfn, arn, described["startDate"])).total_seconds()
    if described["status"] != "SUCCEEDED":
        return Row(provider_id, name, 0, seconds, f"{described['status']} {described.get('error', '')}".strip())
    (entry,) = json.loads(described["output"])["payload"]["files"]
    intact = s3.get_object(Bucket=BUCKET, Key=entry["target"]["key"])["Body"].read() == files[name]
    return Row(provider_id, name, entry["bytes"], seconds, "SUCCEEDED" if intact else "CORRUPTED")


def _claimed_at(sfn: Any, arn: str, default: Any) -> Any:
    """When the gateway claimed the task: the time in queue is not transfer time."""
    for event in sfn.get_execution_history(executionArn=arn)["events"]:
        if event["type"] == "ActivityStarted":
            return event["timestamp"]
    return default


def _print_summary(rows: list[Row], elapsed: float, providers: list[DemoProvider], replicas: int) -> None:
    print(f"\n{'provider':<10} {'file':<18} {'bytes':>12} {'MB/s':>7}  outcome")
    for r in rows:
        rate = f"{r.bytes / r.seconds / MB:7.1f}" if r.bytes and r.seconds > 0 else "      -"
        print(f"{r.provider:<10} {r.file:<18} {r.bytes:>12,} {rate}  {r.outcome}")
    total = sum(r.bytes for r in rows)
    print(f"\n{len(rows)} executions, {total / MB:.1f} MB in {elapsed:.1f} s ({total / elapsed / MB:.1f} MB/s in all)")
    for p in providers:
        total_conns, max_conns = p.connections()
        limit = f"limit 2 for {replicas} gateways together" if replicas > 1 else "limit 2"
        print(f"  {p.id:<10} saw {total_conns} connection(s) in all, at most {max_conns} at once ({limit})")
