"""The callback handlers against the local DynamoDB and Step Functions, with API Gateway events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from provider_gateway.lambdas import callbacks
from tests.callbacks import api_event, create_function, create_table, local_clients, signed, waiting_callback
from tests.support import ROLE_ARN, unique, wait_done

REGISTER = "provider_gateway.lambdas.callbacks.register"


@pytest.fixture(scope="module")
def aws(aws_env: dict[str, str]) -> dict[str, Any]:
    return local_clients(aws_env)


@pytest.fixture
def callback_env(
    aws_env: dict[str, str], aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The functions' environment, also applied to this process for handlers called directly."""
    topic = aws["sns"].create_topic(Name=unique("callbacks"))["TopicArn"]
    env = {
        **aws_env,
        "CALLBACK_TABLE": create_table(aws["dynamodb"]),
        "CALLBACK_BASE_URL": "https://abc123.execute-api.us-east-1.amazonaws.com/callbacks/",
        "CALLBACK_TOPIC_ARN": topic,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env


def waiting_execution(aws: dict[str, Any], env: dict[str, str], timeout_s: int = 120) -> tuple[str, dict[str, Any]]:
    """An execution of a real waitForTaskToken state whose register function stored its token."""
    function = create_function(aws, REGISTER, env)
    definition = {
        "StartAt": "WaitForCallback",
        "States": {
            "WaitForCallback": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                "Parameters": {
                    "FunctionName": function,
                    "Payload": {
                        "task_token.$": "$$.Task.Token",
                        "execution.$": "$$.Execution.Id",
                        "provider.$": "$.provider",
                    },
                },
                "TimeoutSeconds": timeout_s,
                "End": True,
            }
        },
    }
    machine = aws["stepfunctions"].create_state_machine(
        name=unique("wait"), definition=json.dumps(definition), roleArn=ROLE_ARN
    )["stateMachineArn"]
    execution = aws["stepfunctions"].start_execution(stateMachineArn=machine, input='{"provider": "PROV"}')[
        "executionArn"
    ]
    return execution, waiting_callback(aws["dynamodb"], env["CALLBACK_TABLE"], execution)


def table_ids(aws: dict[str, Any], env: dict[str, str]) -> list[str]:
    return [i["callback_id"]["S"] for i in aws["dynamodb"].scan(TableName=env["CALLBACK_TABLE"])["Items"]]


def test_a_signed_callback_completes_the_waiting_task_once(aws: dict[str, Any], callback_env: dict[str, str]) -> None:
    execution, item = waiting_execution(aws, callback_env)
    assert item["provider"] == "PROV"
    assert len(item["callback_id"]) >= 40 and item["secret"] != item["callback_id"]
    assert int(item["expires_at"]) > time.time() + 3600
    body = {"status": "ready", "files": ["https://provider.test/a.h5"]}
    event = signed(item["callback_id"], item["secret"], body)

    answer = callbacks.receive(event)
    assert answer["statusCode"] == 200, answer
    done = wait_done(aws["stepfunctions"], execution)
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"]) == body
    assert item["callback_id"] not in table_ids(aws, callback_env)

    replay = callbacks.receive(event)
    assert replay["statusCode"] == 404


def test_a_wrong_signature_is_403_and_leaves_the_callback_usable(
    aws: dict[str, Any], callback_env: dict[str, str]
) -> None:
    execution, item = waiting_execution(aws, callback_env)
    body = json.dumps({"status": "ready"}).encode()
    forged = callbacks.receive(api_event(item["callback_id"], body, callbacks.sign("guessed", body)))
    unsigned = callbacks.receive(api_event(item["callback_id"], body, None))
    tampered = callbacks.receive(api_event(item["callback_id"], body + b" ", callbacks.sign(item["secret"], body)))
    assert [forged["statusCode"], unsigned["statusCode"], tampered["statusCode"]] == [403, 403, 403]
    assert aws["stepfunctions"].describe_execution(executionArn=execution)["status"] == "RUNNING"

    good = callbacks.receive(api_event(item["callback_id"], body, callbacks.sign(item["secret"], body), True))
    assert good["statusCode"] == 200
    assert wait_done(aws["stepfunctions"], execution)["status"] == "SUCCEEDED"


def test_unknown_and_expired_ids_are_404(aws: dict[str, Any], callback_env: dict[str, str]) -> None:
    assert callbacks.receive(signed("no-such-id", "x", {}))["statusCode"] == 404
    assert callbacks.receive(signed("", "x", {}))["statusCode"] == 404
    registered_at = 1_900_000_000.0
    registered = callbacks.register(
        {"task_token": "token-of-a-task", "execution": "e", "ttl_s": 60}, clock=lambda: registered_at
    )
    callback_id = registered["callback_url"].rsplit("/", 1)[1]
    assert registered["callback_url"] == callback_env["CALLBACK_BASE_URL"] + callback_id
    assert registered["expires_at"] == registered_at + 60
    before = callbacks.receive(signed(callback_id, "wrong", {"status": "ready"}), clock=lambda: registered_at + 59)
    assert before["statusCode"] == 403  # not expired yet: the signature is what is refused
    assert callback_id in table_ids(aws, callback_env)
    expired = callbacks.receive(
        signed(callback_id, registered["secret"], {"status": "ready"}), clock=lambda: registered_at + 60
    )
    assert expired["statusCode"] == 404
    assert callback_id not in table_ids(aws, callback_env)


def test_provider_failure_fails_the_task_and_heartbeats_keep_it_waiting(
    aws: dict[str, Any], callback_env: dict[str, str]
) -> None:
    execution, item = waiting_execution(aws, callback_env)
    alive = callbacks.receive(signed(item["callback_id"], item["secret"], {"status": "in_progress"}))
    assert alive["statusCode"] == 202
    assert item["callback_id"] in table_ids(aws, callback_env)

    failed = callbacks.receive(
        signed(item["callback_id"], item["secret"], {"status": "failed", "error": "disk full", "cause": "quota"})
    )
    assert failed["statusCode"] == 200
    done = wait_done(aws["stepfunctions"], execution)
    assert done["status"] == "FAILED"
    assert done["error"] == "ProviderFailed"
    assert json.loads(done["cause"]) == {"error": "disk full", "cause": "quota"}


def test_a_body_that_is_not_json_is_400_and_the_callback_stays(
    aws: dict[str, Any], callback_env: dict[str, str]
) -> None:
    registered = callbacks.register({"task_token": "t", "execution": "e"})
    callback_id = registered["callback_url"].rsplit("/", 1)[1]
    body = b"files: a, b"
    answer = callbacks.receive(api_event(callback_id, body, callbacks.sign(registered["secret"], body)))
    assert answer["statusCode"] == 400
    assert callback_id in table_ids(aws, callback_env)


def test_a_callback_for_a_task_that_ended_is_404_not_5xx(aws: dict[str, Any], callback_env: dict[str, str]) -> None:
    execution, item = waiting_execution(aws, callback_env, timeout_s=2)
    assert wait_done(aws["stepfunctions"], execution)["error"] == "States.Timeout"
    answer = callbacks.receive(signed(item["callback_id"], item["secret"], {"status": "ready"}))
    assert answer["statusCode"] == 404
    assert item["callback_id"] not in table_ids(aws, callback_env)


@pytest.mark.parametrize(
    ("body", "signature_of", "words"),
    [
        (b'{"status": "ready"}', lambda s, b: "sha256=\u00e9\u00e9", "bad or missing X-Signature-256"),
        (b'{"status": "ready"}', lambda s, b: "sha256=\ud800", "bad or missing X-Signature-256"),
        (b"[" * 100_000 + b"]" * 100_000, callbacks.sign, "nested deeper than 100 levels"),
        (b'{"a": ' * 150 + b"1" + b"}" * 150, callbacks.sign, "nested deeper than 100 levels"),
        (b'{"status": "done"}', callbacks.sign, "status must be one of ready, failed"),
        (b'{"status": "READY!"}', callbacks.sign, "status must be one of"),
        (b'{"status": {"x": 1}}', callbacks.sign, "status must be one of"),
        (b'{"status": "ready", "\\ud800": 1}', callbacks.sign, "lone surrogate"),
        (b'{"status": "ready", "n": NaN}', callbacks.sign, "NaN is not a JSON number"),
        (b"\xff\xfe", callbacks.sign, "not UTF-8"),
    ],
)
def test_a_hostile_callback_is_answered_4xx_and_the_callback_stays(
    aws: dict[str, Any], callback_env: dict[str, str], body: bytes, signature_of: Any, words: str
) -> None:
    registered = callbacks.register({"task_token": "t", "execution": "e"})
    callback_id = registered["callback_url"].rsplit("/", 1)[1]

    base64_body = not body.isascii()  # as API Gateway passes a body that is not UTF-8 text
    answer = callbacks.receive(api_event(callback_id, body, signature_of(registered["secret"], body), base64_body))

    expected = 403 if "Signature" in words else 400
    assert answer["statusCode"] == expected, answer
    assert words in json.loads(answer["body"])["message"]
    assert callback_id in table_ids(aws, callback_env)


def test_an_unknown_status_never_completes_the_task(aws: dict[str, Any], callback_env: dict[str, str]) -> None:
    execution, item = waiting_execution(aws, callback_env)

    unknown = callbacks.receive(signed(item["callback_id"], item["secret"], {"status": "succeeded-ish"}))

    assert unknown["statusCode"] == 400
    assert aws["stepfunctions"].describe_execution(executionArn=execution)["status"] == "RUNNING"
    ready = callbacks.receive(signed(item["callback_id"], item["secret"], {"status": "Ready"}))
    assert ready["statusCode"] == 200
    assert wait_done(aws["stepfunctions"], execution)["status"] == "SUCCEEDED"
