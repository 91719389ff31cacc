"""The connection slot: one network connection at most, lent to threads as lanes."""

from __future__ import annotations

import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from provider_gateway.config.model import HttpConnConfig
from provider_gateway.engine.connection_slot import ConnectionSlot, Lane
from provider_gateway.leases import Lease, LeasedFactory
from provider_gateway.protocols import ConnectionSettings
from tests.engine_fakes import CountingFactory, FakeConnection, FakeLane, FakeSharedConnection

CONFIG = HttpConnConfig(type="http", host="provider.test")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _slot(factory: Any, idle_release_s: float | None = None, clock: Any = None) -> ConnectionSlot:
    return ConnectionSlot(factory, CONFIG, ConnectionSettings(), idle_release_s, **({"clock": clock} if clock else {}))


def test_a_broken_plain_connection_is_closed_before_its_replacement_opens() -> None:
    factory = CountingFactory(FakeConnection)
    slot = _slot(factory)
    lane = slot.lane()
    first = lane.connect()
    assert lane.connect() is first  # kept while it works
    first.abort()  # check() is False now
    second = lane.connect()

    assert second is not first and factory.made == [first, second]
    assert first.closed and factory.peak == 1
    lane.close()
    assert second.closed and not slot.connected  # the last lane closes the connection


def test_lanes_of_a_shared_connection_fail_with_it_and_reconnect_to_the_new_one() -> None:
    factory = CountingFactory(FakeSharedConnection)
    slot = _slot(factory)
    lanes = [slot.lane() for _ in range(3)]
    old = [lane.connect() for lane in lanes]
    [shared] = factory.made
    assert len({id(c) for c in old}) == 3 and all(isinstance(c, FakeLane) and c.shared is shared for c in old)

    shared.abort()  # the session broke under every lane
    new = [lane.connect() for lane in lanes]

    [_, replacement] = factory.made
    assert shared.closed and factory.peak == 1
    assert all(isinstance(c, FakeLane) and c.shared is replacement for c in new)
    assert all(c.closed for c in old)  # each old lane was let go when its thread took a new one
    assert len(replacement.lanes) == 3


def test_dropping_a_lane_of_a_working_shared_connection_leaves_the_others() -> None:
    factory = CountingFactory(FakeSharedConnection)
    slot = _slot(factory)
    one, two = slot.lane(), slot.lane()
    first, other = one.connect(), two.connect()
    first.abort()  # a cancelled file: only its lane
    one.drop()

    assert first.closed and not other.closed  # type: ignore[attr-defined]
    assert two.connect() is other and len(factory.made) == 1
    assert one.connect() is not first  # a fresh lane of the same connection
    factory.made[0].abort()
    one.drop()  # a lane failure on a broken connection closes the connection
    assert factory.made[0].closed and not slot.connected


def test_dropping_a_plain_connection_closes_it() -> None:
    factory = CountingFactory(FakeConnection)
    slot = _slot(factory)
    lane = slot.lane()
    first = lane.connect()
    lane.drop()  # e.g. a cancelled file: the connection may be mid-response
    assert first.closed and not slot.connected
    assert lane.connect() is not first and factory.peak == 1


def test_idle_release_waits_for_every_lane_to_be_idle() -> None:
    clock = _Clock()
    factory = CountingFactory(FakeSharedConnection)
    slot = _slot(factory, idle_release_s=10, clock=clock)
    busy, idle = slot.lane(), slot.lane()
    with busy.serving():
        busy.connect()
        idle.connect()
        clock.now = 100
        assert not slot.release_if_idle()  # a lane is busy: the connection stays
        assert slot.connected
    clock.now = 105
    assert not slot.release_if_idle()  # idle for 5 s only
    clock.now = 110
    assert slot.release_if_idle()
    assert factory.made[0].closed and not slot.connected
    assert isinstance(idle.connect(), FakeLane) and len(factory.made) == 2 and factory.peak == 1


def test_without_idle_release_the_connection_stays() -> None:
    clock = _Clock()
    slot = _slot(CountingFactory(FakeConnection), clock=clock)
    slot.lane().connect()
    clock.now = 1e9
    assert not slot.release_if_idle() and slot.connected


class _FakeLeaseSlots:
    """What LeasedFactory asks of LeaseSlots, counting leases held."""

    def __init__(self) -> None:
        self.held = 0
        self.peak = 0
        self.taken = 0

    def acquire(self, holder: str, wait_s: float) -> Lease:
        self.held += 1
        self.taken += 1
        self.peak = max(self.peak, self.held)
        return Lease(slot=0, lease_id=str(self.taken), valid_until=float("inf"), renewed_at=0.0)

    def release(self, lease: Lease) -> None:
        lease.lost = True
        self.held -= 1


def test_a_leased_shared_connection_takes_one_lease_for_all_its_lanes_and_gives_it_back_before_the_next() -> None:
    leases = _FakeLeaseSlots()
    inner = CountingFactory(FakeSharedConnection)
    slot = _slot(LeasedFactory(inner, leases, holder="h", wait_s=1))  # type: ignore[arg-type]
    lanes = [slot.lane() for _ in range(4)]
    streams = [lane.connect().open(f"u{i}") for i, lane in enumerate(lanes)]
    assert (leases.held, leases.taken) == (1, 1) and len(streams) == 4

    inner.made[0].abort()
    for lane in lanes:
        lane.connect()
    lanes[0].drop()  # a lane alone: the lease stays
    assert (leases.held, leases.taken, leases.peak) == (1, 2, 1)
    for lane in lanes:
        lane.close()
    assert leases.held == 0 and inner.peak == 1 and inner.open_now() == 0


@settings(max_examples=200, deadline=None)
@given(
    shared=st.booleans(),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["connect", "drop", "break", "abort_lane", "begin", "end", "idle", "close", "new"]),
            st.integers(0, 3),
        ),
        max_size=40,
    ),
)
def test_random_operations_never_hold_two_connections_or_release_a_busy_one(
    shared: bool, steps: list[tuple[str, int]]
) -> None:
    clock = _Clock()
    factory = CountingFactory(FakeSharedConnection if shared else FakeConnection)
    slot = _slot(factory, idle_release_s=1, clock=clock)
    lanes: list[Lane] = [slot.lane()] if not shared else [slot.lane() for _ in range(4)]
    open_lanes = set(range(len(lanes)))
    busy: list[Any] = []
    for op, i in steps:
        i %= len(lanes)
        lane = lanes[i]
        if op == "new" and shared:
            lanes.append(slot.lane())
            open_lanes.add(len(lanes) - 1)
        elif i not in open_lanes:
            continue
        elif op == "connect":
            connection = lane.connect()
            assert connection.check()
            current = factory.made[-1]
            assert (connection.shared if shared else connection) is current
        elif op == "drop":
            lane.drop()
        elif op == "break" and factory.made:
            factory.made[-1].abort()
        elif op == "abort_lane" and lane._connection is not None:
            lane._connection.abort()
        elif op == "begin":
            busy.append(lane.serving())
            busy[-1].__enter__()
        elif op == "end" and busy:
            busy.pop().__exit__(None, None, None)
        elif op == "idle":
            was_connected = slot.connected
            clock.now += 2
            released = slot.release_if_idle()
            assert not (released and busy)  # never while a lane is busy
            assert released == (was_connected and not busy)
        elif op == "close":
            lane.close()
            open_lanes.discard(i)
        assert factory.peak <= 1 and factory.open_now() <= 1
    for i in open_lanes:
        lanes[i].close()
    assert factory.open_now() == 0


def test_threads_connecting_and_breaking_at_once_never_open_two_connections() -> None:
    factory = CountingFactory(FakeSharedConnection)
    slot = _slot(factory)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def hammer(n: int) -> None:
        lane = slot.lane()
        start.wait()
        try:
            for k in range(300):
                connection = lane.connect()
                if (k + n) % 7 == 0:
                    connection.shared.abort()  # type: ignore[attr-defined]
                if (k + n) % 5 == 0:
                    lane.drop()
        except BaseException as exc:
            errors.append(exc)
        finally:
            lane.close()

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(factory.made) > 10 and factory.peak == 1 and factory.open_now() == 0
