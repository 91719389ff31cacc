"""A connection thread and its task: TaskTimedOut on a heartbeat -> cancel -> the blocked read aborted."""

from __future__ import annotations

import threading
import time
from typing import Any

from provider_gateway.config.model import HttpConnConfig
from provider_gateway.engine.connection_slot import ConnectionSlot
from provider_gateway.engine.events import Events
from provider_gateway.engine.heartbeat import Heartbeat
from provider_gateway.engine.responder import Responder
from provider_gateway.engine.task_run import FileJob, TaskRun
from provider_gateway.engine.work_queue import WorkQueue
from provider_gateway.engine.worker import ConnectionWorker
from provider_gateway.errors import TaskCancelled
from provider_gateway.ops.metrics import Metrics
from provider_gateway.protocols import ConnectionSettings
from provider_gateway.transfer.copy import CopyOptions
from tests.engine_fakes import (
    CountingFactory,
    FakeConnection,
    FakeS3,
    FakeSfn,
    FakeSharedConnection,
    client_error,
    download_task,
)


class _Provider:
    """One connection thread over fake connections, with its queue."""

    def __init__(self, sfn: FakeSfn) -> None:
        self.connections: list[FakeConnection] = []
        self.queue: WorkQueue[FileJob] = WorkQueue(1)
        self.responder = Responder(sfn, FakeS3(), "prov", None, sleep=lambda _: None)
        self.slot = ConnectionSlot(
            self._factory, HttpConnConfig(type="http", host="provider.test"), ConnectionSettings()
        )
        self.worker = ConnectionWorker(
            self.slot,
            self.queue,
            FakeS3(),
            CopyOptions(retries=2, retry_wait_max_s=0.01),
            name="prov-conn-1",
            events=Events("prov", Metrics()),
        )
        self.worker.start()

    def _factory(self, *_: Any) -> FakeConnection:
        self.connections.append(FakeConnection())
        return self.connections[-1]

    def submit(self, run: TaskRun) -> None:
        assert self.queue.reserve(threading.Event())
        self.queue.fulfil(run.jobs())


def test_task_timed_out_on_a_heartbeat_aborts_the_blocked_read_and_answers_once() -> None:
    sfn = FakeSfn()
    provider = _Provider(sfn)
    task = download_task(1)
    token = "token-0123456789abcdef"
    heartbeat = Heartbeat(
        sfn, token, 0.005, on_lost=lambda code: run.cancel(TaskCancelled(f"Step Functions answered {code}")), name="hb"
    )
    run = TaskRun(token, task, provider.responder, "task", label="t", heartbeat=heartbeat)
    heartbeat.start()
    provider.submit(run)
    assert sfn.wait_for(lambda: bool(provider.connections) and provider.connections[0].reading.is_set())

    started = time.monotonic()
    sfn.always_fail["send_task_heartbeat"] = client_error("TaskTimedOut", operation="SendTaskHeartbeat")
    assert run.finished.wait(5)
    took = time.monotonic() - started

    assert took < 2  # the fake read would block 10 s unless aborted
    assert provider.connections[0].aborts == 1
    [(method, call)] = sfn.answers()
    assert (method, call["error"]) == ("send_task_failure", "TaskCancelled")
    assert "TaskCancelled" in call["cause"] and "TaskTimedOut" in call["cause"]
    assert provider.worker.thread.is_alive()
    deadline = time.monotonic() + 5
    while provider.worker.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not provider.worker.connected and provider.connections[0].closed  # replaced, never reused
    provider.worker.stop()


def test_a_file_whose_answer_cannot_be_rendered_does_not_kill_the_connection_thread() -> None:
    deep: Any = {}
    for _ in range(5000):
        deep = {"a": deep}
    sfn = FakeSfn()
    provider = _Provider(sfn)
    bad = TaskRun(
        "token-bad-0123456789", download_task(1, {"url": "x", "x": deep}), provider.responder, "task", label="b"
    )
    bad.cancel(TaskCancelled("gone"))  # served at once: its result is the cancel, its cause the deep entry
    provider.submit(bad)
    assert bad.finished.wait(5)
    good = TaskRun("token-good-0123456789", download_task(1), provider.responder, "task", label="g")
    good.cancel(TaskCancelled("gone"))
    provider.submit(good)
    assert good.finished.wait(5)

    assert provider.worker.thread.is_alive()
    errors = [c["error"] for _, c in sfn.answers()]
    assert errors == ["GatewayInternalError", "TaskCancelled"]
    provider.worker.stop()


def test_a_failure_while_serving_answers_the_file_and_the_thread_lives(monkeypatch: Any) -> None:
    sfn = FakeSfn()
    provider = _Provider(sfn)

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(provider.worker._events, "file_started", broken)
    run = TaskRun("token-0123456789abcdef", download_task(2), provider.responder, "task", label="t")
    provider.submit(run)
    assert run.finished.wait(5)
    [(method, call)] = sfn.answers()
    assert (method, call["error"]) == ("send_task_failure", "GatewayInternalError")
    assert "RuntimeError: a bug" in call["cause"]
    assert provider.worker.thread.is_alive()
    provider.worker.stop()


def test_files_in_flight_on_one_shared_connection_a_cancel_fails_only_its_own_file() -> None:
    sfn = FakeSfn()
    responder = Responder(sfn, FakeS3(), "prov", None, sleep=lambda _: None)
    shared = FakeSharedConnection(blocking={"http://provider.test/f0"})
    factory = CountingFactory(lambda: shared)
    slot = ConnectionSlot(factory, HttpConnConfig(type="http", host="provider.test"), ConnectionSettings())
    queue: WorkQueue[FileJob] = WorkQueue(3)
    s3 = FakeS3()
    workers = [
        ConnectionWorker(
            slot, queue, s3, CopyOptions(retries=0), name=f"prov-conn-1.{i}", events=Events("p", Metrics())
        )
        for i in range(3)
    ]
    for worker in workers:
        worker.start()
    stuck = TaskRun("token-stuck-0123456789", download_task(1), responder, "task", label="s")
    assert queue.reserve(threading.Event())
    queue.fulfil(stuck.jobs())
    assert sfn.wait_for(lambda: bool(shared.lanes) and shared.lanes[0].reading.is_set())

    others = TaskRun("token-others-0123456789", download_task(4, name="g"), responder, "task", label="o")
    assert queue.reserve(threading.Event())
    queue.fulfil(others.jobs())  # four files over the two other lanes, while the first lane's read hangs
    assert others.finished.wait(5)
    stuck.cancel(TaskCancelled("Step Functions answered TaskTimedOut"))
    assert stuck.finished.wait(5)

    answers = {call["taskToken"]: (method, call.get("error")) for method, call in sfn.answers()}
    assert answers == {
        "token-others-0123456789": ("send_task_success", None),
        "token-stuck-0123456789": ("send_task_failure", "TaskCancelled"),
    }
    assert sorted(key for _, key in s3.objects) == ["g0", "g1", "g2", "g3"]
    assert factory.made == [shared] and factory.peak == 1  # one network connection all along
    aborted = [lane for lane in shared.lanes if lane.aborted.is_set()]
    assert len(aborted) == 1 and aborted[0].closed  # the cancelled file's lane alone, let go
    assert shared.check()
    for worker in workers:
        worker.stop()
    for worker in workers:
        worker.thread.join(5)
    assert shared.closed  # the last lane closed the connection
