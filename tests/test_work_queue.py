"""The queue that decides when a poller may claim a task."""

from __future__ import annotations

import threading

from provider_gateway.engine.work_queue import WorkQueue


def test_a_task_is_claimed_only_while_a_connection_is_free() -> None:
    queue: WorkQueue[str] = WorkQueue(lanes=2)
    stop = threading.Event()

    assert queue.reserve(stop)
    queue.fulfil(["a1", "a2", "a3"])  # one task of three files: more than the two connections
    claimed = threading.Event()
    waiter = threading.Thread(target=lambda: queue.reserve(stop) and claimed.set())
    waiter.start()

    assert queue.get(0.1) == "a1"
    assert queue.get(0.1) == "a2"
    assert not claimed.wait(0.3)  # a3 still waits for a connection
    queue.done()  # a1 finished: its connection takes a3 ...
    assert queue.get(0.1) == "a3"
    assert not claimed.wait(0.3)  # ... so still no free connection
    queue.done()  # a2 finished: one connection is idle now
    assert claimed.wait(2)
    waiter.join()


def test_two_pollers_cannot_reserve_the_same_connection() -> None:
    queue: WorkQueue[str] = WorkQueue(lanes=1)
    stop = threading.Event()
    assert queue.reserve(stop)
    second = threading.Thread(target=queue.reserve, args=(stop,))
    second.start()
    second.join(1.2)
    assert second.is_alive()
    stop.set()
    second.join(2)
    assert not second.is_alive()


def test_an_empty_claim_releases_the_reservation_and_drain_empties() -> None:
    queue: WorkQueue[str] = WorkQueue(lanes=1)
    stop = threading.Event()
    assert queue.reserve(stop)
    queue.fulfil([])
    assert queue.reserve(stop)
    queue.fulfil(["x", "y"])
    assert queue.drain() == ["x", "y"]
    assert queue.get(0.05) is None
