"""TaskRun: exactly one answer whatever the interleaving, cancel aborting every attached connection."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import pytest

from provider_gateway.engine.heartbeat import Heartbeat
from provider_gateway.engine.responder import Responder
from provider_gateway.engine.task_run import AnswerCallback, TaskRun
from provider_gateway.errors import GatewayShutdown, TaskCancelled
from provider_gateway.messages import FileResult
from tests.engine_fakes import FakeConnection, FakeS3, FakeSfn, client_error, download_task


def _run(
    sfn: FakeSfn,
    files: int,
    entry: dict[str, Any] | None = None,
    mode: str = "task",
    on_answered: AnswerCallback | None = None,
    heartbeat: Heartbeat | None = None,
) -> TaskRun:
    responder = Responder(sfn, FakeS3(), "prov", None, sleep=lambda _: None)
    task = download_task(files, entry)
    return TaskRun(
        "token-0123456789abcdef", task, responder, mode, label="t", on_answered=on_answered, heartbeat=heartbeat
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(30))
def test_one_answer_whatever_the_order_of_file_results_and_cancels(seed: int) -> None:
    rnd = random.Random(seed)
    sfn = FakeSfn()
    files = rnd.randint(1, 6)
    answered: list[str | None] = []
    run = _run(sfn, files, on_answered=lambda _run, code, _files, _failed: answered.append(code))
    cancels = rnd.randint(0, 3)
    actions: list[Any] = [
        lambda i=i: run.file_done(
            run.task.files[i], FileResult(rnd.random() < 0.8, bytes=1, error_code="SourceNotFound")
        )
        for i in range(files)
        for _ in range(rnd.randint(1, 2))  # a file reported twice counts once
    ]
    actions += [lambda: run.cancel(GatewayShutdown("stop"))] * cancels
    rnd.shuffle(actions)
    barrier = threading.Barrier(len(actions))

    def act(action: Any) -> None:
        barrier.wait()
        action()

    threads = [threading.Thread(target=act, args=(a,)) for a in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)

    assert run.finished.is_set()
    assert len(sfn.answers()) == 1, sfn.answers()
    assert len(answered) == 1
    method, call = sfn.answers()[0]
    if method == "send_task_failure":
        assert call["error"] == answered[0]
    else:
        assert answered == [None]


def test_a_connection_attached_before_or_after_the_cancel_is_aborted() -> None:
    run = _run(FakeSfn(), 2)
    before, after, released = FakeConnection(), FakeConnection(), FakeConnection()
    run.attach(before)
    run.attach(released)
    run.detach(released)
    run.cancel(GatewayShutdown("stop"))
    run.attach(after)
    assert before.aborts == 1 and after.aborts == 1
    assert released.aborts == 0


@pytest.mark.parametrize("seed", range(50))
def test_a_cancel_racing_the_attach_always_aborts(seed: int) -> None:
    run = _run(FakeSfn(), 1)
    connection = FakeConnection()
    barrier = threading.Barrier(2)
    order = [lambda: run.attach(connection), lambda: run.cancel(GatewayShutdown("stop"))]
    random.Random(seed).shuffle(order)
    threads = [threading.Thread(target=lambda f=f: (barrier.wait(), f())) for f in order]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert connection.aborts == 1


def test_an_answer_that_cannot_be_built_is_answered_gateway_internal_error() -> None:
    deep: Any = {}
    for _ in range(5000):  # deepcopy of the entry fails (RecursionError), after the parser took it
        deep = {"a": deep}
    sfn = FakeSfn()
    run = _run(sfn, 1, entry={"url": "http://provider.test/f0", "extra": deep})
    run.file_done(run.task.files[0], FileResult(False, error_code="SourceNotFound", error="gone"))
    assert run.finished.is_set()
    [(method, call)] = sfn.answers()
    assert method == "send_task_failure"
    assert call["error"] == "GatewayInternalError"
    assert "RecursionError" in call["cause"]


def test_the_task_stays_in_flight_until_its_answer_is_sent() -> None:
    sfn = FakeSfn()
    release = threading.Event()

    def pause(_: float) -> None:
        release.wait(5)

    responder = Responder(sfn, FakeS3(), "prov", None, sleep=pause)
    run = TaskRun("token-0123456789abcdef", download_task(1), responder, "task", label="t")
    sfn.fail["send_task_success"] = [client_error("ThrottlingException")]
    done = threading.Thread(target=run.file_done, args=(run.task.files[0], FileResult(True, bytes=1)))
    done.start()
    assert sfn.wait_for(lambda: len(sfn.calls["send_task_success"]) == 1)
    assert not run.finished.is_set()  # throttled: retrying, not answered
    release.set()
    done.join(5)
    assert run.finished.is_set()
    assert [m for m, _ in sfn.answers()] == ["send_task_success", "send_task_success"]


def test_a_task_without_files_is_answered_at_once() -> None:
    sfn = FakeSfn()
    run = _run(sfn, 0)
    run.answer()
    assert run.finished.is_set()
    assert [m for m, _ in sfn.answers()] == ["send_task_success"]


def test_giving_up_answers_the_files_still_running_once() -> None:
    sfn = FakeSfn()
    run = _run(sfn, 3)
    run.file_done(run.task.files[0], FileResult(True, bytes=1))
    run.give_up(GatewayShutdown("stop"))
    run.give_up(GatewayShutdown("stop"))
    run.file_done(run.task.files[1], FileResult(True, bytes=1))  # the stuck transfer ends later: ignored
    assert run.finished.is_set()
    [(method, call)] = sfn.answers()
    assert (method, call["error"]) == ("send_task_failure", "GatewayShutdown")
    assert json.loads(call["cause"])["files"][0]["success"] is True


class _RecordingHeartbeat:
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def stop(self) -> None:
        self.seen.append("heartbeat stopped")


def test_the_answer_stops_the_heartbeat_then_tells_on_answered_once() -> None:
    sfn = FakeSfn()
    seen: list[Any] = []
    run = _run(
        sfn,
        3,
        mode="per_file",
        on_answered=lambda answered, code, files, failed: seen.append((answered, code, files, failed)),
        heartbeat=_RecordingHeartbeat(seen),  # type: ignore[arg-type]
    )
    run.file_done(run.task.files[0], FileResult(True, bytes=1))
    run.file_done(run.task.files[2], FileResult(False, error_code="SourceNotFound", error="gone"))
    assert seen == [] and not run.finished.is_set()
    run.file_done(run.task.files[1], FileResult(True, bytes=1))
    run.answer()  # a second answer is never sent nor told
    assert seen == ["heartbeat stopped", (run, None, 3, 1)]
    assert run.finished.is_set()
    assert [m for m, _ in sfn.answers()] == ["send_task_success"]


def test_a_failing_on_answered_still_stops_the_heartbeat_and_finishes_the_run() -> None:
    sfn = FakeSfn()
    seen: list[str] = []

    def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    run = _run(sfn, 1, on_answered=broken, heartbeat=_RecordingHeartbeat(seen))  # type: ignore[arg-type]
    run.cancel(GatewayShutdown("stop"))
    run.file_done(run.task.files[0], FileResult(False, error_code="GatewayShutdown", error="stop"))
    assert run.finished.is_set() and seen == ["heartbeat stopped"]
    [(method, call)] = sfn.answers()
    assert (method, call["error"]) == ("send_task_failure", "GatewayShutdown")


def test_a_heartbeat_told_the_task_timed_out_cancels_the_run_it_was_built_for() -> None:
    sfn = FakeSfn()
    sfn.always_fail["send_task_heartbeat"] = client_error("TaskTimedOut", operation="SendTaskHeartbeat")
    token = "token-0123456789abcdef"
    heartbeat = Heartbeat(
        sfn, token, 0.001, on_lost=lambda code: run.cancel(TaskCancelled(f"Step Functions answered {code}")), name="hb"
    )
    run = _run(sfn, 1, heartbeat=heartbeat)
    connection = FakeConnection()
    run.attach(connection)
    heartbeat.start()
    assert run.stop.wait(5)
    reason = run.cancelled()
    assert reason is not None and reason.code == "TaskCancelled" and "TaskTimedOut" in reason.message
    assert connection.aborts == 1
