"""The responder: output limits, payload offloading, retries of what may pass, and a lost answer counted."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st

from provider_gateway.engine.responder import (
    ANSWER_ATTEMPTS,
    MAX_OUTPUT_BYTES,
    Responder,
    bounded_cause,
)
from tests.engine_fakes import FakeS3, FakeSfn, client_error

TOKEN = "token-" + "0123456789" * 3


class _Setup:
    def __init__(self, payload_bucket: str | None = "payloads", s3_fail: BaseException | None = None) -> None:
        self.sfn = FakeSfn()
        self.s3 = FakeS3(s3_fail)
        self.sleeps: list[float] = []
        self.lost = 0
        self.responder = Responder(
            self.sfn, self.s3, "prov", payload_bucket, on_lost=self._lose, sleep=self.sleeps.append
        )

    def _lose(self) -> None:
        self.lost += 1


def _large_output() -> dict[str, Any]:
    return {"config": {}, "payload": {"files": [{"url": "x" * 1000, "success": True}] * (MAX_OUTPUT_BYTES // 900)}}


def test_a_large_output_goes_to_the_payload_bucket() -> None:
    setup = _Setup()
    output = _large_output()
    assert setup.responder.success(TOKEN, output)
    [(method, call)] = setup.sfn.answers()
    assert method == "send_task_success"
    sent = json.loads(call["output"])
    pointer = sent["payload"]
    assert pointer["Bucket"] == "payloads"
    assert json.loads(setup.s3.objects[("payloads", pointer["Key"])]) == output["payload"]


def test_a_payload_that_cannot_be_written_is_answered_target_write_failed() -> None:
    setup = _Setup(s3_fail=client_error("AccessDenied", 403, "PutObject"))
    assert setup.responder.success(TOKEN, _large_output())
    [(method, call)] = setup.sfn.answers()
    assert (method, call["error"]) == ("send_task_failure", "TargetWriteFailed")
    assert "AccessDenied" in call["cause"] and "s3://payloads/" in call["cause"]


def test_a_large_output_without_a_payload_bucket_is_output_too_large() -> None:
    setup = _Setup(payload_bucket=None)
    assert setup.responder.success(TOKEN, _large_output())
    [(method, call)] = setup.sfn.answers()
    assert (method, call["error"]) == ("send_task_failure", "OutputTooLarge")


@pytest.mark.parametrize(
    "passing",
    [
        client_error("ThrottlingException"),
        client_error("InternalServerError", 500),
        client_error("Whatever", 503),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ],
    ids=["throttled", "500", "503", "connection"],
)
@pytest.mark.parametrize("method", ["success", "failure"])
def test_failures_that_may_pass_are_retried_with_growing_waits(passing: Exception, method: str) -> None:
    setup = _Setup()
    name = f"send_task_{method}"
    setup.sfn.fail[name] = [passing, passing, passing]
    sent = setup.responder.success(TOKEN, {"a": 1}) if method == "success" else setup.responder.failure(TOKEN, "E", "c")
    assert sent
    assert len(setup.sfn.calls[name]) == 4
    assert setup.sleeps == sorted(setup.sleeps) and setup.sleeps[0] < setup.sleeps[-1]
    assert setup.lost == 0


def test_an_answer_that_never_passes_is_logged_with_the_token_suffix_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    setup = _Setup()
    setup.sfn.always_fail["send_task_failure"] = client_error("ThrottlingException")
    with caplog.at_level(logging.ERROR):
        assert not setup.responder.failure(TOKEN, "SourceNotFound", "{}")
    assert len(setup.sfn.calls["send_task_failure"]) == ANSWER_ATTEMPTS
    assert setup.lost == 1
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert TOKEN[-12:] in record.getMessage() and TOKEN not in record.getMessage()


@pytest.mark.parametrize("gone", ["TaskTimedOut", "TaskDoesNotExist", "InvalidToken"])
def test_a_task_gone_is_not_retried(gone: str) -> None:
    setup = _Setup()
    setup.sfn.fail["send_task_success"] = [client_error(gone)]
    assert not setup.responder.success(TOKEN, {"a": 1})
    assert len(setup.sfn.calls["send_task_success"]) == 1
    assert setup.sfn.calls["send_task_failure"] == []
    assert setup.lost == 1


def test_an_output_refused_for_good_is_answered_with_a_failure() -> None:
    setup = _Setup()
    setup.sfn.fail["send_task_success"] = [client_error("InvalidOutput")]
    assert setup.responder.success(TOKEN, {"a": 1})
    [(_, call)] = [a for a in setup.sfn.answers() if a[0] == "send_task_failure"]
    assert call["error"] == "GatewayInternalError" and "InvalidOutput" in call["cause"]


def test_an_output_that_cannot_be_rendered_is_answered_with_a_failure() -> None:
    setup = _Setup()
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    assert setup.responder.success(TOKEN, {"payload": deep})
    [(method, call)] = setup.sfn.answers()
    assert (method, call["error"]) == ("send_task_failure", "GatewayInternalError")


entries = st.lists(
    st.fixed_dictionaries({"url": st.text(max_size=3000), "success": st.booleans(), "error": st.text(max_size=3000)}),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(entries)
def test_a_cause_is_valid_json_within_the_limit(files: list[dict[str, Any]]) -> None:
    limit = 8192
    text = bounded_cause(files, limit)
    assert len(text) <= limit
    decoded = json.loads(text)
    assert len(decoded["files"]) + decoded.get("omitted", 0) == len(files)


def test_a_cancelled_task_that_step_functions_gave_up_is_not_counted_lost() -> None:
    setup = _Setup()
    setup.sfn.fail["send_task_failure"] = [client_error("TaskTimedOut")]
    assert not setup.responder.failure(TOKEN, "TaskCancelled", "{}")
    assert setup.lost == 0
    setup.sfn.fail["send_task_failure"] = [client_error("TaskTimedOut")]
    assert not setup.responder.failure(TOKEN, "SourceNotFound", "{}")
    assert setup.lost == 1
