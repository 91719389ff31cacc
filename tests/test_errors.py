"""What each error means to its callers lives on its class: exit status, workflow retry, reconnect, task gone."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from provider_gateway import errors
from provider_gateway.engine import heartbeat
from provider_gateway.engine.heartbeat import Heartbeat
from provider_gateway.errors import (
    TASK_GONE,
    GatewayError,
    ResumeUnsupported,
    SourceUnavailable,
    codes_where,
    error_class,
    error_classes,
    exit_status,
)
from provider_gateway.lambdas import callbacks
from provider_gateway.messages import FileResult
from provider_gateway.workflow import RETRYABLE_ERRORS
from tests.engine_fakes import FakeSfn, client_error
from tests.support import CONTRACT_CODES

README = (Path(__file__).parent.parent / "README.md").read_text()
ATTRIBUTES = ("code", "retryable", "workflow_retry", "drops_connection", "exit_status")


def _readme_table(heading: str) -> list[list[str]]:
    """The rows of the first table after ``heading`` in the README, cells stripped of backquotes."""
    section = README.split(heading, 1)[1]
    rows = re.findall(r"^\|(.+)\|$", section.split("\n\n|", 1)[1].split("\n\n", 1)[0], re.MULTILINE)
    return [[cell.strip().strip("`") for cell in row.split("|")] for row in rows[1:] if not row.startswith("---")]


def test_every_contract_code_has_one_class() -> None:
    codes = [error.code for error in error_classes()]
    assert len(codes) == len(set(codes))
    assert set(CONTRACT_CODES) <= set(codes)
    assert error_classes()[0] is GatewayError


def test_a_subclass_sharing_its_parents_code_behaves_as_the_parent() -> None:
    for attribute in ATTRIBUTES:
        assert getattr(ResumeUnsupported, attribute) == getattr(SourceUnavailable, attribute)
    assert error_class("SourceUnavailable") is SourceUnavailable


def test_exit_statuses_are_distinct_and_are_the_ones_the_readme_lists() -> None:
    own = [error.exit_status for error in error_classes() if error.exit_status != errors.EXIT_OTHER]
    assert len(own) == len(set(own)) and 0 not in own
    documented = {row[0]: row[1] for row in _readme_table("Exit statuses name the error")}
    assert documented.pop("0").startswith("copied")
    assert documented.pop(str(errors.EXIT_OTHER)) == "anything else"
    assert documented.pop("2").endswith("`InvalidRequest` (bad URL, URL of no provider, bucket not allowed)")
    assert documented == {str(exit_status(code)): code for code in CONTRACT_CODES if exit_status(code) not in (1, 2)}


def test_exit_status_of_success_and_of_an_unknown_code() -> None:
    assert exit_status(None) == 0
    assert exit_status("NoSuchCode") == errors.EXIT_OTHER
    assert exit_status("TaskCancelled") == errors.EXIT_OTHER


def test_workflow_retries_exactly_the_codes_the_contract_says_a_retry_helps() -> None:
    table = {row[0]: row[2] for row in _readme_table("## Error codes")}
    assert set(table) == set(CONTRACT_CODES)
    assert set(codes_where(lambda error: error.workflow_retry)) == {c for c, retry in table.items() if retry == "yes"}
    assert table["TargetWriteFailed"] == "depends" and not error_class("TargetWriteFailed").workflow_retry
    assert [*codes_where(lambda error: error.workflow_retry), "States.Timeout"] == RETRYABLE_ERRORS


def test_a_workflow_retry_is_also_a_transient_error_for_the_gateway() -> None:
    for error in error_classes():
        if error.workflow_retry:
            assert error.retryable, error.code


def test_failures_that_may_break_the_connection_drop_it() -> None:
    dropped = set(codes_where(lambda error: error.drops_connection))
    assert dropped == {"SourceUnavailable", "GatewayInternalError", "TaskCancelled", "GatewayShutdown"}


@pytest.mark.parametrize("error", error_classes(), ids=lambda error: error.code)
def test_file_result_failed_carries_the_code_and_message(error: type[GatewayError]) -> None:
    result = FileResult.failed(error("what went wrong"))
    assert result == FileResult(False, error_code=error.code, error="what went wrong")
    assert not result.success and result.bytes == 0


def test_the_task_gone_codes_are_one_set_for_the_gateway_and_the_callback_lambda() -> None:
    assert heartbeat.TASK_GONE is TASK_GONE and callbacks.TASK_GONE is TASK_GONE
    assert {"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"} == TASK_GONE


@pytest.mark.parametrize("code", [*sorted(TASK_GONE), "ThrottlingException"])
def test_a_heartbeat_refused_with_a_gone_code_cancels_and_any_other_is_retried(code: str) -> None:
    sfn = FakeSfn()
    sfn.fail["send_task_heartbeat"] = [client_error(code, operation="SendTaskHeartbeat")]
    lost: list[str] = []
    lost_event = threading.Event()

    def on_lost(reason: str) -> None:
        lost.append(reason)
        lost_event.set()

    beat = Heartbeat(sfn, "token", 0.01, on_lost, name="test-heartbeat").start()
    try:
        if code in TASK_GONE:
            assert lost_event.wait(5.0)
            assert lost == [code]
        else:
            assert sfn.wait_for(lambda: len(sfn.calls["send_task_heartbeat"]) >= 3)
            assert lost == []
    finally:
        beat.stop()
