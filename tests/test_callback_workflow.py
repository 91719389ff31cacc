"""The callback downloader's state machine, as shipped, run by the local Step Functions engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provider_gateway.lambdas import callbacks
from provider_gateway.local.http_server import FileHTTPServer
from provider_gateway.workflow import substitute
from tests.callbacks import create_function, create_table, local_clients, signed, waiting_callback
from tests.conftest import GatewayFactory
from tests.support import ROLE_ARN, create_activity, unique, wait_done, write_config

DEFINITION = Path(__file__).parent.parent / "examples" / "callback-downloader" / "statemachine.asl.json"
HANDLERS = {
    "RegisterCallbackFunctionArn": "provider_gateway.lambdas.callbacks.register",
    "ListFilesFunctionArn": "provider_gateway.lambdas.files.list_files",
    "DownloadFunctionArn": "provider_gateway.lambdas.download.download",
    "SummarizeFunctionArn": "provider_gateway.lambdas.summary.summarize",
}
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def aws(aws_env: dict[str, str]) -> dict[str, Any]:
    return local_clients(aws_env)


def deploy(aws: dict[str, Any], env: dict[str, str], activity: str) -> str:
    """The example state machine with its functions created on the local stack."""
    values = {name: create_function(aws, handler, env) for name, handler in HANDLERS.items()}
    values["GatewayActivityArn"] = activity
    values["JobQueueArn"] = "arn:aws:batch:us-east-1:123456789012:job-queue/provider-gateway"
    values["JobDefinitionArn"] = "arn:aws:batch:us-east-1:123456789012:job-definition/provider-gateway-download:1"
    definition = substitute(DEFINITION.read_text(), values)
    created = aws["stepfunctions"].create_state_machine(
        name=unique("downloader"), definition=definition, roleArn=ROLE_ARN
    )
    return str(created["stateMachineArn"])


def run_with_callback(
    aws: dict[str, Any], env: dict[str, str], machine: str, provider: str, bucket: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Start an execution, answer its callback as the provider would, and wait for the end."""
    execution = aws["stepfunctions"].start_execution(
        stateMachineArn=machine,
        input=json.dumps({"provider": provider, "target": {"bucket": bucket, "key_prefix": "incoming"}}),
    )["executionArn"]
    item = waiting_callback(aws["dynamodb"], env["CALLBACK_TABLE"], execution)
    answer = callbacks.receive(signed(item["callback_id"], item["secret"], body))
    assert answer["statusCode"] == 200, answer
    return wait_done(aws["stepfunctions"], execution, timeout_s=120)


@pytest.fixture
def workflow_env(
    aws_env: dict[str, str], aws: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    env = {
        **aws_env,
        "CALLBACK_TABLE": create_table(aws["dynamodb"]),
        "CALLBACK_BASE_URL": "https://abc123.execute-api.us-east-1.amazonaws.com/callbacks",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_gateway_path_copies_every_file_retries_the_unavailable_and_lists_the_missing(
    aws: dict[str, Any], workflow_env: dict[str, str], gateway: GatewayFactory, tmp_path: Path, s3: Any, bucket: str
) -> None:
    a, b = b"a" * (2 * MiB + 3), b"b" * MiB
    with FileHTTPServer(basic_auth=("prov", "secret")) as server:
        server.files.update({"/data/a.h5": a, "/data/b.h5": b})
        server.resets["/data/b.h5"] = [0.5]  # once: the gateway (retries 0) fails it, the state machine retries
        conn = {"type": "http", "host": server.host, "username": "prov", "password": "secret"}
        activity = create_activity(aws["stepfunctions"])
        gateway(activity, conn, provider_id="PROV", retries=0)
        config = {"activity_arn": activity, "conn_config": conn, "num_connections": 2}
        env = {
            **workflow_env,
            "GATEWAY_CONFIG": str(write_config(tmp_path / "lambda.yml", [{"id": "PROV", "gateway_config": config}])),
        }
        machine = deploy(aws, env, activity)
        files = [
            {"url": server.url("/data/a.h5"), "size": len(a)},
            server.url("/data/b.h5"),
            server.url("/data/gone.h5"),
        ]
        done = run_with_callback(aws, env, machine, "PROV", bucket, {"status": "ready", "files": files})
        b_requests = server.requests.count("/data/b.h5")

    assert done["status"] == "FAILED", done
    assert done["error"] == "FilesFailed", done.get("cause")
    failed = json.loads(done["cause"])
    assert [(f["url"], f["key"], f["error"]) for f in failed] == [
        (server.url("/data/gone.h5"), "incoming/gone.h5", "SourceNotFound")
    ]
    assert "gone.h5" in failed[0]["cause"]
    assert s3.get_object(Bucket=bucket, Key="incoming/a.h5")["Body"].read() == a
    assert s3.get_object(Bucket=bucket, Key="incoming/b.h5")["Body"].read() == b
    assert b_requests == 2, "the reset file is fetched again by the state machine's Retry"
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_small_files_of_an_unlimited_provider_go_through_lambda_and_the_execution_succeeds(
    aws: dict[str, Any], workflow_env: dict[str, str], s3: Any, bucket: str
) -> None:
    data = {f"/pub/f{i}.nc": bytes([i]) * (100_000 + i) for i in range(3)}
    with FileHTTPServer(data) as server:
        machine = deploy(aws, workflow_env, create_activity(aws["stepfunctions"]))
        listing = [{"url": server.url(path), "size": len(body)} for path, body in data.items()]
        server.files["/pub/list.json"] = json.dumps({"files": listing}).encode()
        body = {"status": "ready", "files_url": server.url("/pub/list.json")}
        done = run_with_callback(aws, workflow_env, machine, "OPEN", bucket, body)

    assert done["status"] == "SUCCEEDED", done
    summary = json.loads(done["output"])
    assert summary["files"] == summary["succeeded"] == 3
    assert summary["failed"] == []
    assert summary["bytes"] == sum(len(v) for v in data.values())
    for path, body_bytes in data.items():
        key = "incoming/" + path.rsplit("/", 1)[1]
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body_bytes
