"""The moto extension that serves Step Functions activities, over the moto server's HTTP API."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.stepfunctions.parser.asl.eval.callback.callback import CallbackPoolManager
from moto.stepfunctions.parser.backend.activity import ActivityTask

from provider_gateway.local import moto_activities
from tests.support import create_activity, create_state_machine, start, wait_done


def test_get_activity_task_delivers_the_input_and_success_ends_the_execution(sfn: Any, activity: str) -> None:
    machine = create_state_machine(sfn, activity)
    execution = start(sfn, machine, {"x": 1})

    task = sfn.get_activity_task(activityArn=activity, workerName="tester")
    sfn.send_task_heartbeat(taskToken=task["taskToken"])
    sfn.send_task_success(taskToken=task["taskToken"], output=json.dumps({"done": True}))
    done = wait_done(sfn, execution)

    assert json.loads(task["input"]) == {"x": 1}
    assert (done["status"], json.loads(done["output"])) == ("SUCCEEDED", {"done": True})
    assert execution.rsplit(":", 1)[1] not in ("", "None")  # unnamed executions get a name


def test_long_poll_wakes_as_soon_as_a_task_is_scheduled(sfn: Any, activity: str) -> None:
    machine = create_state_machine(sfn, activity)
    got: dict[str, Any] = {}

    def poll() -> None:
        got["started"] = time.monotonic()
        got["task"] = sfn.get_activity_task(activityArn=activity)
        got["ended"] = time.monotonic()

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)
    start(sfn, machine, {"late": True})
    poller.join(15)

    assert json.loads(got["task"]["input"]) == {"late": True}
    assert got["ended"] - got["started"] < 5  # well inside the long poll
    sfn.send_task_success(taskToken=got["task"]["taskToken"], output="{}")


def test_an_empty_poll_returns_no_token_after_the_long_poll(sfn: Any, activity: str) -> None:
    started = time.monotonic()
    response = sfn.get_activity_task(activityArn=activity)
    assert not response.get("taskToken")
    assert time.monotonic() - started >= 5  # the session stack polls for 10 s


def test_failure_keeps_error_and_cause(sfn: Any, activity: str) -> None:
    machine = create_state_machine(sfn, activity)
    execution = start(sfn, machine, {})
    token = sfn.get_activity_task(activityArn=activity)["taskToken"]

    sfn.send_task_failure(taskToken=token, error="SourceNotFound", cause='{"why": "404"}')
    done = wait_done(sfn, execution)

    assert (done["status"], done["error"], done["cause"]) == ("FAILED", "SourceNotFound", '{"why": "404"}')


def test_a_closed_task_answers_task_timed_out(sfn: Any, activity: str) -> None:
    machine = create_state_machine(sfn, activity, heartbeat_s=1)
    execution = start(sfn, machine, {})
    token = sfn.get_activity_task(activityArn=activity)["taskToken"]

    assert wait_done(sfn, execution)["error"] == "States.Timeout"
    for call in (
        lambda: sfn.send_task_heartbeat(taskToken=token),
        lambda: sfn.send_task_success(taskToken=token, output="{}"),
    ):
        with pytest.raises(ClientError) as raised:
            call()
        assert raised.value.response["Error"]["Code"] == "TaskTimedOut"


def test_unknown_token_is_invalid(sfn: Any) -> None:
    with pytest.raises(ClientError) as raised:
        sfn.send_task_heartbeat(taskToken="not-a-token")
    assert raised.value.response["Error"]["Code"] == "InvalidToken"


def test_tasks_of_ended_executions_are_not_delivered(sfn: Any) -> None:
    activity = create_activity(sfn)
    machine = create_state_machine(sfn, activity)
    stopped = start(sfn, machine, {"n": 1})
    sfn.stop_execution(executionArn=stopped)
    live = start(sfn, machine, {"n": 2})

    task = sfn.get_activity_task(activityArn=activity)

    assert json.loads(task["input"]) == {"n": 2}
    sfn.send_task_success(taskToken=task["taskToken"], output="{}")
    assert wait_done(sfn, live)["status"] == "SUCCEEDED"


def test_install_refuses_an_unchecked_moto_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moto_activities, "_installed", False)
    monkeypatch.setattr(moto_activities.moto, "__version__", "9.9.9")
    with pytest.raises(RuntimeError, match=r"supports moto 5\.2\.5, found 9\.9\.9"):
        moto_activities.install()


def test_a_task_is_queued_only_once_its_endpoint_exists() -> None:
    """A GetActivityTask waiting when the task is queued finds its endpoint, so it never drops the task."""
    moto_activities.install()
    endpoint_known: list[bool] = []

    class Watching(moto_activities.LongPollActivity):
        def add_task(self, task: ActivityTask) -> None:
            endpoint_known.append(pool.get(task.task_token) is not None)  # what a woken poll would look up
            super().add_task(task)

    activity = Watching(arn="arn:aws:states:us-east-1:123456789012:activity:watched", name="watched")
    pool = CallbackPoolManager({activity.arn: activity})
    endpoint = pool.add_activity_task("token-1", activity.arn, "{}")

    task = activity.wait_task(0)
    assert endpoint_known == [True]
    assert task is not None and task.task_token == "token-1"
    assert pool.get("token-1") is endpoint
