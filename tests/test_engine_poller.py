"""The activity poller: error backoff, and every claimed task answered whatever starting it raises."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from provider_gateway.engine.poller import ActivityPoller
from provider_gateway.engine.work_queue import WorkQueue
from provider_gateway.errors import GatewayError, InvalidRequest
from tests.engine_fakes import FakeSfn, client_error


class _Poller:
    def __init__(self, sfn: FakeSfn, start_task: Any = None, backoff: tuple[float, ...] = (1, 2, 5)) -> None:
        self.waits: list[float] = []
        self.failing_since: list[float | None] = []
        self.refused: list[tuple[str, GatewayError]] = []
        self.errors = 0
        self.poller = ActivityPoller(
            sfn,
            "arn:activity",
            WorkQueue[Any](1),
            start_task or (lambda token, raw: []),
            lambda token, error: self.refused.append((token, error)),
            worker_name="w",
            name="poll",
            on_error=self._error,
            backoff_s=backoff,
            wait=self._wait,
        )

    def _wait(self, delay: float) -> None:
        self.waits.append(delay)
        self.failing_since.append(self.poller.failing_since)

    def _error(self) -> None:
        self.errors += 1


def _wait(predicate: Any, timeout_s: float = 5) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_failed_polls_back_off_up_to_the_last_step_and_recover() -> None:
    sfn = FakeSfn()
    failures = [client_error("ThrottlingException", operation="GetActivityTask")] * 4
    sfn.fail["get_activity_task"] = [*failures, EndpointConnectionError(endpoint_url="http://127.0.0.1:1")]
    setup = _Poller(sfn)
    setup.poller.start()
    assert _wait(lambda: len(sfn.calls["get_activity_task"]) >= 7)
    setup.poller.stop()
    setup.poller.join(5)

    assert setup.waits == [1, 2, 5, 5, 5]
    assert setup.errors == 5
    first = setup.failing_since[0]
    assert first is not None and setup.failing_since == [first] * 5  # since the first failure, not the last
    assert setup.poller.failing_since is None  # a poll went through since


def test_a_task_that_cannot_start_is_answered_and_polling_goes_on() -> None:
    sfn = FakeSfn()
    sfn.tasks = [
        {"taskToken": "t-invalid", "input": "{}"},
        {"taskToken": "t-bug", "input": "{}"},
        {"taskToken": "t-deep", "input": "{}"},
        {"taskToken": "t-ok", "input": "{}"},
    ]
    started: list[str] = []

    def start_task(token: str, raw: str | None) -> list[Any]:
        if token == "t-invalid":
            raise InvalidRequest("payload.files: must be a non-empty list of files")
        if token == "t-bug":
            raise AttributeError("'str' object has no attribute 'get'")
        if token == "t-deep":
            raise RecursionError("maximum recursion depth exceeded")
        started.append(token)
        return []

    setup = _Poller(sfn, start_task)
    setup.poller.start()
    assert _wait(lambda: started == ["t-ok"])
    setup.poller.stop()
    setup.poller.join(5)

    refused = {token: (error.code, error.message) for token, error in setup.refused}
    assert refused["t-invalid"] == ("InvalidRequest", "payload.files: must be a non-empty list of files")
    assert refused["t-bug"][0] == "GatewayInternalError" and "AttributeError" in refused["t-bug"][1]
    assert refused["t-deep"][0] == "GatewayInternalError" and "RecursionError" in refused["t-deep"][1]
    assert len(setup.refused) == 3
    assert setup.waits == []  # a refused task is not a poll error


def test_a_task_arriving_while_stopping_is_answered_gateway_shutdown() -> None:
    sfn = FakeSfn()
    setup = _Poller(sfn, start_task=lambda token, raw: [])
    arrived = threading.Event()

    def get_activity_task(**kwargs: Any) -> dict[str, Any]:
        setup.poller.stop()  # the stop comes during the long poll
        arrived.set()
        return {"taskToken": "t-late", "input": "{}"}

    sfn.get_activity_task = get_activity_task  # type: ignore[method-assign]
    setup.poller.start()
    assert arrived.wait(5)
    setup.poller.join(5)
    assert [(t, e.code) for t, e in setup.refused] == [("t-late", "GatewayShutdown")]


def _concurrent(sfn: FakeSfn, queue: WorkQueue[Any], start_task: Any, concurrency: int = 8) -> _Poller:
    setup = _Poller(sfn, start_task)
    setup.poller = ActivityPoller(
        sfn,
        "arn:activity",
        queue,
        start_task,
        lambda token, error: setup.refused.append((token, error)),
        worker_name="w",
        name="poll",
        on_error=setup._error,
        wait=setup._wait,
        concurrency=concurrency,
    )
    return setup


def test_free_lanes_bound_the_polls_in_flight_at_once() -> None:
    sfn = FakeSfn()
    sfn.poll_gate = threading.Semaphore(0)
    queue: WorkQueue[str] = WorkQueue(lanes=5)
    assert queue.reserve(threading.Event())
    queue.fulfil(["busy"])
    assert queue.get(0) == "busy"  # one lane busy: four free
    setup = _concurrent(sfn, queue, lambda token, raw: [])
    setup.poller.start()

    assert sfn.wait_for(lambda: sfn.polls_in_flight == 4)
    assert queue.reserved() == 4
    queue.done()  # the busy lane is free: a fifth poll starts
    assert sfn.wait_for(lambda: sfn.polls_in_flight == 5)
    setup.poller.stop()
    for _ in range(5):
        sfn.poll_gate.release()
    setup.poller.join(5)
    assert not any(t.is_alive() for t in setup.poller.threads)
    assert sfn.polls_peak == 5 and queue.reserved() == 0


def test_tasks_are_never_claimed_beyond_the_free_lanes() -> None:
    lanes, total = 3, 40
    sfn = FakeSfn()
    sfn.tasks = [{"taskToken": f"t{i}", "input": "{}"} for i in range(total)]
    queue: WorkQueue[str] = WorkQueue(lanes=lanes)
    lock = threading.Lock()
    outstanding = [0]
    peak = [0]

    def start_task(token: str, raw: str | None) -> list[str]:
        with lock:
            outstanding[0] += 1
            peak[0] = max(peak[0], outstanding[0])
        return [token]

    setup = _concurrent(sfn, queue, start_task)
    setup.poller.start()
    served: list[str] = []
    while len(served) < total:  # the connection threads: each job ends before its lane is free again
        job = queue.get(5)
        assert job is not None, f"served {len(served)} of {total}"
        served.append(job)
        with lock:
            outstanding[0] -= 1
        queue.done()
    setup.poller.stop()
    setup.poller.join(5)

    assert sorted(served) == sorted(f"t{i}" for i in range(total))
    assert peak[0] <= lanes
    assert setup.poller.claimed == total


def test_a_stop_during_concurrent_polls_answers_every_late_task_gateway_shutdown() -> None:
    sfn = FakeSfn()
    sfn.poll_gate = threading.Semaphore(0)
    sfn.tasks = [{"taskToken": f"late-{i}", "input": "{}"} for i in range(3)]
    queue: WorkQueue[str] = WorkQueue(lanes=3)
    started: list[str] = []
    setup = _concurrent(sfn, queue, lambda token, raw: started.append(token) or [token])
    setup.poller.start()
    assert sfn.wait_for(lambda: sfn.polls_in_flight == 3)

    setup.poller.stop()
    for _ in range(3):
        sfn.poll_gate.release()
    setup.poller.join(5)

    assert sorted((t, e.code) for t, e in setup.refused) == [(f"late-{i}", "GatewayShutdown") for i in range(3)]
    assert started == [] and queue.drain() == [] and queue.reserved() == 0
    assert setup.poller.dead_threads() == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_failing_since_is_the_activitys_and_a_dead_polling_thread_is_restarted() -> None:
    sfn = FakeSfn()
    sfn.always_fail["get_activity_task"] = client_error("ThrottlingException", operation="GetActivityTask")
    setup = _concurrent(sfn, WorkQueue[Any](4), lambda token, raw: [], concurrency=4)
    setup.poller.start()
    assert _wait(lambda: len(setup.failing_since) >= 8)
    first = setup.failing_since[0]
    assert first is not None and set(setup.failing_since) == {first}  # one since, however many threads fail
    del sfn.always_fail["get_activity_task"]
    assert _wait(lambda: setup.poller.failing_since is None)

    class Killed(BaseException):
        pass

    sfn.fail["get_activity_task"] = [Killed()]
    assert _wait(lambda: len(setup.poller.dead_threads()) == 1)
    [dead] = setup.poller.dead_threads()
    assert dead in setup.poller.thread_names == ["poll-1", "poll-2", "poll-3", "poll-4"]
    setup.poller.restart(dead)
    assert setup.poller.dead_threads() == []
    setup.poller.stop()
    setup.poller.join(5)
