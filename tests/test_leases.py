"""Connection leases: the table's conditional writes, and the fence that cuts a connection before its lease lapses."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from provider_gateway.config.model import LeaseConfig
from provider_gateway.errors import SourceUnavailable
from provider_gateway.leases import LeaseSlots, LeaseTable, create_table
from provider_gateway.leases.slots import wall_ms
from provider_gateway.local.stack import LocalStack
from provider_gateway.ops.metrics import Metrics
from tests.servers import CountingProxy
from tests.support import unique


def _dynamodb(stack: LocalStack, endpoint: str | None = None) -> Any:
    env = stack.environment()
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint or stack.endpoint,
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=BotoConfig(connect_timeout=1, read_timeout=1, retries={"mode": "standard", "max_attempts": 1}),
    )


@pytest.fixture
def table(stack: LocalStack) -> str:
    name = unique("leases")
    create_table(_dynamodb(stack), name)
    return name


def test_a_slot_is_taken_once_until_it_expires_and_only_its_holder_renews_or_frees_it(
    stack: LocalStack, table: str
) -> None:
    leases = LeaseTable(_dynamodb(stack), table)
    now = wall_ms()

    first = leases.take("P", 0, "a", "lease-a", now, now + 60_000)
    second = leases.take("P", 0, "b", "lease-b", now, now + 60_000)
    other_slot = leases.take("P", 1, "b", "lease-b1", now, now + 60_000)
    renew_by_other = leases.renew("P", 0, "lease-b", now + 90_000)
    leases.release("P", 0, "lease-b")  # not b's: nothing happens
    still_held = leases.take("P", 0, "c", "lease-c", now, now + 60_000)
    after_expiry = leases.take("P", 0, "c", "lease-c", now + 60_001, now + 120_000)
    renew_by_old_holder = leases.renew("P", 0, "lease-a", now + 90_000)

    assert (first, second, other_slot, renew_by_other, still_held) == (True, False, True, False, False)
    assert (after_expiry, renew_by_old_holder) == (True, False)
    assert {(s.slot, s.holder) for s in leases.slots("P")} == {(0, "c"), (1, "b")}
    leases.release("P", 0, "lease-c")
    assert {s.slot for s in leases.slots("P")} == {1}


def test_concurrent_takers_never_share_a_slot(stack: LocalStack, table: str) -> None:
    config = LeaseConfig(table=table, lease_s=30)
    holders = [LeaseSlots(LeaseTable(_dynamodb(stack), table), "P", 3, config, Metrics()) for _ in range(6)]
    won: list[int] = []
    refused: list[str] = []
    lock = threading.Lock()

    def take(slots: LeaseSlots, name: str) -> None:
        try:
            lease = slots.acquire(name, wait_s=0)
        except SourceUnavailable as exc:
            with lock:
                refused.append(exc.message)
            return
        with lock:
            won.append(lease.slot)

    threads = [threading.Thread(target=take, args=(s, f"h{i}")) for i, s in enumerate(holders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(won) == len(set(won)) and set(won) <= {0, 1, 2}
    assert len(won) + len(refused) == 6 and len(won) >= 1
    assert all("slots are held" in message for message in refused)


@pytest.fixture
def stalling_table(stack: LocalStack, table: str) -> Iterator[tuple[CountingProxy, str]]:
    proxy = CountingProxy(int(stack.endpoint.rsplit(":", 1)[1]))
    yield proxy, table
    proxy.close()


def test_a_lease_is_cut_before_it_can_expire_when_the_table_stops_answering(
    stack: LocalStack, stalling_table: tuple[CountingProxy, str]
) -> None:
    proxy, table = stalling_table
    config = LeaseConfig(table=table, lease_s=10, clock_skew_s=0.5)
    metrics = Metrics()
    slots = LeaseSlots(LeaseTable(_dynamodb(stack, proxy.endpoint), table), "P", 2, config, metrics)
    slots.start()
    lease = slots.acquire("holder", wait_s=5)
    cut_at: list[int] = []
    lease.on_lost = lambda: cut_at.append(wall_ms())
    time.sleep(config.lease_s / 3)  # renewed at least once through the proxy
    renewed = LeaseTable(_dynamodb(stack), table).slots("P")[0].expires_ms

    proxy.stall()
    deadline = time.monotonic() + config.lease_s + 5
    while not cut_at and time.monotonic() < deadline:
        time.sleep(0.05)
    expires = LeaseTable(_dynamodb(stack), table).slots("P")[0].expires_ms

    assert cut_at, "the fence never cut the connection"
    assert not lease.valid() and lease.lost_reason == "not renewed in time"
    # Cut before the lease could expire, with the skew and the fence margin to spare.
    assert cut_at[0] <= expires - (config.clock_skew_s + 1) * 1000, (cut_at[0], expires)
    assert expires >= renewed
    assert metrics.lease_losses.labels("P")._value.get() == 1
    assert slots.failing_since is not None
    proxy.unstall()
