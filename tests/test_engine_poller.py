"""The activity poller: error backoff, and every claimed task answered whatever starting it raises."""

from __future__ import annotations

import threading
import time
from typing import Any

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
