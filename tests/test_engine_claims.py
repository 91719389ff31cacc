"""A provider over lanes: claims with leases counted in lanes, polling threads per lane, a dead one replaced."""

from __future__ import annotations

import threading

import pytest

from provider_gateway.config.model import GatewayConfig, HttpConnConfig, ProviderConfig
from provider_gateway.engine.connection_slot import ConnectionSlot
from provider_gateway.engine.provider import ProviderRuntime
from provider_gateway.protocols import ConnectionSettings
from tests.engine_fakes import CountingFactory, FakeConnection, FakeS3, FakeSfn

CONN = HttpConnConfig(type="http", host="provider.test")


class _Leases:
    def __init__(self) -> None:
        self.free_slots = 0

    def free(self) -> int:
        return self.free_slots


def _runtime(num_connections: int) -> ProviderRuntime:
    gateway = GatewayConfig(activity_arn="arn:activity", conn=CONN, num_connections=num_connections)
    return ProviderRuntime(ProviderConfig("prov", gateway), FakeSfn(), FakeS3(), worker_name="w")


def test_with_leases_a_claim_needs_a_lane_that_could_start_now_for_every_claim_and_queued_file() -> None:
    runtime = _runtime(2)
    leases = _Leases()
    runtime.leases = leases  # type: ignore[assignment]
    runtime.slots = [ConnectionSlot(CountingFactory(FakeConnection), CONN, ConnectionSettings()) for _ in range(2)]
    lanes = [slot.lane() for slot in runtime.slots]
    stop = threading.Event()

    def can_claim(free: int) -> bool:
        leases.free_slots, runtime._free_leases_cache = free, None
        return runtime._can_claim()

    assert runtime.queue.reserve(stop)
    assert not can_claim(0)  # nothing open, every slot held by other gateways
    assert can_claim(1)
    assert runtime.queue.reserve(stop)
    assert not can_claim(1)  # two claims, one lane that could start
    lanes[0].connect()
    assert can_claim(1)  # an open idle lane, and a free slot for the closed one
    assert not can_claim(0)
    with lanes[0].serving():
        assert not can_claim(1)
        assert not can_claim(2)  # only the closed slot's one lane could start, for two claims
    runtime.queue.fulfil(["queued"])  # a claim became a queued file: it still waits for a lane
    assert not can_claim(0) and can_claim(1)


def test_without_leases_the_queue_alone_decides_and_each_lane_gets_a_polling_thread() -> None:
    runtime = _runtime(3)
    assert runtime._can_claim()
    assert len(runtime.workers) == 3 and runtime.queue.reserve(threading.Event())
    assert [p.thread_names for p in runtime.pollers] == [
        ["prov-poll-download-1", "prov-poll-download-2", "prov-poll-download-3"]
    ]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_supervise_replaces_a_dead_polling_thread_and_leaves_the_others() -> None:
    class Killed(BaseException):
        pass

    runtime = _runtime(2)
    sfn = runtime._sfn
    sfn.poll_gate = threading.Semaphore(1)  # the first poll goes through, and dies; the other waits
    sfn.fail["get_activity_task"] = [Killed()]
    runtime.start()
    poller = runtime.pollers[0]
    assert sfn.wait_for(lambda: len(runtime.dead_threads()) == 1 and sfn.polls_in_flight == 1)
    [dead] = runtime.dead_threads()
    alive = [t for t in poller.threads if t.is_alive()]

    runtime.supervise(restart_delay_s=0)
    assert runtime.dead_threads() == []
    assert sfn.wait_for(lambda: sfn.polls_in_flight == 2)
    assert [t for t in poller.threads if t.name != dead] == alive  # the live thread was left alone
    runtime.stop_polling()
    for _ in range(2):
        sfn.poll_gate.release()
    poller.join(5)
    runtime.stop_workers(5)
    assert not any(t.is_alive() for t in poller.threads)


def test_threads_not_started_yet_have_not_died() -> None:
    runtime = _runtime(2)  # the ops server may answer before the runtime starts
    assert runtime.dead_threads() == []
