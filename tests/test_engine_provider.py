"""A provider's runtime: a task that cannot be parsed or started leaves nothing running and is answered."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from provider_gateway.config.model import GatewayConfig, HttpConnConfig, ProviderConfig
from provider_gateway.engine.provider import ProviderRuntime
from provider_gateway.errors import InvalidRequest
from tests.engine_fakes import FakeS3, FakeSfn, download_task


def _runtime(sfn: FakeSfn) -> ProviderRuntime:
    gateway = GatewayConfig(
        activity_arn="arn:activity",
        conn=HttpConnConfig(type="http", host="provider.test"),
        num_connections=1,
        heartbeat_interval_s=0.01,
    )
    return ProviderRuntime(ProviderConfig("prov", gateway), sfn, FakeS3(), worker_name="w")


@pytest.mark.parametrize(
    "raised",
    [
        AttributeError("'str' object has no attribute 'get'"),
        RecursionError("maximum recursion depth"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    ],
    ids=["attribute", "recursion", "surrogate"],
)
def test_whatever_the_parser_raises_is_invalid_request(raised: Exception) -> None:
    runtime = _runtime(FakeSfn())

    def parse(*_: Any, **__: Any) -> Any:
        raise raised

    with pytest.raises(InvalidRequest, match=type(raised).__name__):
        runtime._start_task("token-0123456789abcdef", "{}", parse)
    assert runtime.in_flight() == 0


def test_a_task_without_files_is_answered_at_once() -> None:
    sfn = FakeSfn()
    runtime = _runtime(sfn)
    jobs = runtime._start_task("token-0123456789abcdef", "{}", lambda *_, **__: download_task(0))
    assert jobs == []
    assert runtime.in_flight() == 0
    assert [m for m, _ in sfn.answers()] == ["send_task_success"]


def test_a_claimed_task_is_in_flight_with_its_heartbeat_until_answered() -> None:
    sfn = FakeSfn()
    runtime = _runtime(sfn)
    assert runtime.queue.reserve(threading.Event())
    [job] = runtime._start_task("token-0123456789abcdef", "{}", lambda *_, **__: download_task(1))
    runtime.queue.fulfil([job])  # as the poller does; no connection thread runs here
    assert runtime.in_flight() == 1
    assert sfn.wait_for(lambda: len(sfn.calls["send_task_heartbeat"]) >= 2)
    runtime.cancel_all(InvalidRequest("x"))  # queued: answered from the queue
    assert job.run.finished.is_set()
    assert runtime.in_flight() == 0
    [(method, call)] = sfn.answers()
    assert (method, call["error"]) == ("send_task_failure", "InvalidRequest")


@pytest.mark.parametrize("connections", [1, 2, 3, 8, 40])
def test_the_download_and_sync_polls_together_never_need_more_lanes_than_there_are(connections: int) -> None:
    gateway = GatewayConfig(
        activity_arn="arn:activity",
        sync_activity_arn="arn:sync-activity",
        conn=HttpConnConfig(type="http", host="provider.test"),
        num_connections=connections,
    )
    runtime = ProviderRuntime(ProviderConfig("prov", gateway), FakeSfn(), FakeS3(), worker_name="w")
    polls = [len(p.threads) for p in runtime.pollers]
    assert len(polls) == 2 and min(polls) >= 1
    # A long poll holds a lane's reservation: polling on every lane for one activity starves the other.
    assert sum(polls) <= max(connections, 2)
