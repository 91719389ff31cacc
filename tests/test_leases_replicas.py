"""Several ``provider-gateway run`` processes sharing one provider limit through a lease table."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from provider_gateway.leases import LeaseTable, create_table
from provider_gateway.leases.slots import wall_ms
from provider_gateway.local.http_server import FileHTTPServer
from provider_gateway.local.stack import LocalStack
from tests.conftest import GatewayFactory
from tests.servers import CountingProxy, free_port
from tests.support import ROLE_ARN, download_message, start, unique, wait_done
from tests.test_leases import _dynamodb
from tests.test_operations import metrics_args, wait_until

LEASE_S = 10.0
SKEW_S = 0.5


@pytest.fixture
def table(stack: LocalStack) -> str:
    name = unique("leases")
    create_table(_dynamodb(stack), name)
    return name


@pytest.fixture
def provider() -> Iterator[FileHTTPServer]:
    with FileHTTPServer(rate_bytes_per_s=1_000_000) as server:
        yield server


def _settings(table: str, num_connections: int) -> dict[str, Any]:
    return {
        "num_connections": num_connections,
        "connection_leases": {"table": table, "lease_s": LEASE_S, "clock_skew_s": SKEW_S, "idle_release_s": 2},
    }


def _retrying_machine(sfn: Any, activity: str, heartbeat_s: int = 30) -> str:
    """A machine that retries a task whose gateway went silent (heartbeat timeout), as deployments do."""
    definition = {
        "StartAt": "Download",
        "States": {
            "Download": {
                "Type": "Task",
                "Resource": activity,
                "HeartbeatSeconds": heartbeat_s,
                "TimeoutSeconds": 300,
                "Retry": [{"ErrorEquals": ["States.Timeout"], "IntervalSeconds": 1, "MaxAttempts": 3}],
                "End": True,
            }
        },
    }
    return str(
        sfn.create_state_machine(name=unique("sm"), definition=json.dumps(definition), roleArn=ROLE_ARN)[
            "stateMachineArn"
        ]
    )


def _files(server: FileHTTPServer, count: int, size: int) -> dict[str, bytes]:
    files = {f"f{i:02d}.bin": os.urandom(size + i) for i in range(count)}
    for name, data in files.items():
        server.files[f"/d/{name}"] = data
    return files


def _tasks(sfn: Any, machine: str, base_url: str, bucket: str, names: list[str], per_task: int) -> list[str]:
    return [
        start(sfn, machine, download_message([(f"{base_url}/d/{n}", bucket, n) for n in names[i : i + per_task]]))
        for i in range(0, len(names), per_task)
    ]


def _assert_all_stored(s3: Any, bucket: str, files: dict[str, bytes], results: list[dict[str, Any]]) -> None:
    assert [r["status"] for r in results] == ["SUCCEEDED"] * len(results), [r.get("cause") for r in results]
    for name, data in files.items():
        assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == data, name


def test_three_replicas_share_a_limit_of_four(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str, table: str
) -> None:
    files = _files(provider, 40, 300_000)
    replicas = [
        gateway(activity, {"type": "http", "host": provider.host}, provider_id="P", **_settings(table, 4))
        for _ in range(3)
    ]
    machine = _retrying_machine(sfn, activity)

    arns = _tasks(sfn, machine, provider.base_url, bucket, sorted(files), per_task=2)
    results = [wait_done(sfn, arn, timeout_s=180) for arn in arns]

    _assert_all_stored(s3, bucket, files, results)
    assert provider.connections.max == 4, "the provider's own counter: never above 4, and all 4 slots used"
    assert all(r.proc.poll() is None for r in replicas), "every replica still serving"


def _holders(stack: LocalStack, table: str) -> dict[int, tuple[str, int]]:
    return {s.slot: (s.holder, s.expires_ms) for s in LeaseTable(_dynamodb(stack), table).slots("P")}


def test_a_killed_replica_gives_its_slots_back_within_one_lease(
    gateway: GatewayFactory,
    provider: FileHTTPServer,
    stack: LocalStack,
    sfn: Any,
    s3: Any,
    bucket: str,
    activity: str,
    table: str,
) -> None:
    files = _files(provider, 24, 1_000_000)
    doomed = gateway(activity, {"type": "http", "host": provider.host}, provider_id="P", **_settings(table, 4))
    machine = _retrying_machine(sfn, activity, heartbeat_s=5)
    arns = _tasks(sfn, machine, provider.base_url, bucket, sorted(files), per_task=2)
    deadline = time.monotonic() + 30
    while len(_holders(stack, table)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(_holders(stack, table)) == 4, "the first replica never held all four slots"
    survivor = gateway(activity, {"type": "http", "host": provider.host}, provider_id="P", **_settings(table, 4))

    doomed.kill()
    killed_ms = wall_ms()
    doomed_holder = next(iter(_holders(stack, table).values()))[0]
    taken_back_ms: int | None = None
    while taken_back_ms is None and wall_ms() < killed_ms + (LEASE_S + 10) * 1000:
        holders = _holders(stack, table)
        if holders and all(holder != doomed_holder for holder, _ in holders.values()) and len(holders) == 4:
            taken_back_ms = wall_ms()
        time.sleep(0.1)
    results = [wait_done(sfn, arn, timeout_s=240) for arn in arns]

    assert taken_back_ms is not None, "the survivor never took the killed replica's slots"
    assert taken_back_ms - killed_ms <= (LEASE_S + 2) * 1000, taken_back_ms - killed_ms
    _assert_all_stored(s3, bucket, files, results)
    assert provider.connections.max <= 4
    assert " claimed: " in survivor.log()


def test_connections_close_before_their_leases_expire_while_the_table_is_down(
    gateway: GatewayFactory,
    provider: FileHTTPServer,
    stack: LocalStack,
    sfn: Any,
    s3: Any,
    bucket: str,
    activity: str,
    table: str,
) -> None:
    files = _files(provider, 12, 2_000_000)
    table_proxy = CountingProxy(int(stack.endpoint.rsplit(":", 1)[1]))
    source = CountingProxy(provider.server_address[1])
    port = free_port()
    try:
        gateway(
            activity,
            {"type": "http", "host": f"127.0.0.1:{source.port}"},
            provider_id="P",
            extra_env={"AWS_ENDPOINT_URL_DYNAMODB": table_proxy.endpoint},
            run_args=metrics_args(port),
            **_settings(table, 2),
        )
        machine = _retrying_machine(sfn, activity, heartbeat_s=60)
        arns = _tasks(sfn, machine, f"http://127.0.0.1:{source.port}", bucket, sorted(files), per_task=3)
        deadline = time.monotonic() + 30
        while source.open < 2 and time.monotonic() < deadline:
            time.sleep(0.05)

        table_proxy.stall()
        stalled_ms = wall_ms()
        time.sleep(0.5)  # a renewal already past the proxy lands
        expiries = [expires for _, expires in _holders(stack, table).values()]
        open_at_stall = [r for r in list(source.history.values()) if r.closed_ms is None]
        sick = wait_until(
            lambda: (r := requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)).status_code == 503 and r.json(),
            what="/healthz saying why",
        )
        time.sleep(max(0.0, 30 - (wall_ms() - stalled_ms) / 1000))
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        reopened_during_outage = [r for r in source.history.values() if stalled_ms < r.opened_ms]
        table_proxy.unstall()
        results = [wait_done(sfn, arn, timeout_s=240) for arn in arns]
    finally:
        table_proxy.close()
        source.close()

    assert len(open_at_stall) == 2 and len(expiries) == 2
    for record in open_at_stall:
        assert record.closed_ms is not None
        assert record.closed_ms < min(expiries) - SKEW_S * 1000, (record, expiries)
    assert not reopened_during_outage, "a connection was opened without a lease"
    assert any("lease table failing" in problem for problem in sick["problems"]), sick
    assert 'provider_gateway_lease_losses_total{provider="P"} 2.0' in metrics
    assert 'provider_gateway_leases_held{provider="P"} 0.0' in metrics
    _assert_all_stored(s3, bucket, files, results)
    assert source.max_open <= 2


def test_a_replica_paused_past_its_lease_does_not_use_its_old_connections(
    gateway: GatewayFactory,
    provider: FileHTTPServer,
    stack: LocalStack,
    sfn: Any,
    s3: Any,
    bucket: str,
    activity: str,
    table: str,
) -> None:
    files = _files(provider, 12, 1_500_000)
    source = CountingProxy(provider.server_address[1])
    conn = {"type": "http", "host": f"127.0.0.1:{source.port}"}
    try:
        paused = gateway(activity, conn, provider_id="P", **_settings(table, 2))
        machine = _retrying_machine(sfn, activity, heartbeat_s=60)
        arns = _tasks(sfn, machine, f"http://127.0.0.1:{source.port}", bucket, sorted(files), per_task=2)
        deadline = time.monotonic() + 30
        while source.open < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        gateway(activity, conn, provider_id="P", **_settings(table, 2))

        os.kill(paused.proc.pid, signal.SIGSTOP)
        stopped_ms = wall_ms()
        old = [r for r in list(source.history.values()) if r.closed_ms is None]
        time.sleep(LEASE_S + 3)
        os.kill(paused.proc.pid, signal.SIGCONT)
        resumed_ms = wall_ms()
        results = [wait_done(sfn, arn, timeout_s=240) for arn in arns]
    finally:
        source.close()

    assert len(old) == 2
    for record in old:
        assert record.last_sent_ms is not None and record.last_sent_ms <= stopped_ms, (record, resumed_ms)
    _assert_all_stored(s3, bucket, files, results)
