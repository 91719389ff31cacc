"""Shared fixtures: the local AWS stack (moto server over HTTP), clients, gateways."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from provider_gateway.local.stack import LocalStack
from tests.support import GatewayProcess, create_activity, unique, write_config

# Tests never reach a real AWS endpoint, whatever the developer's environment holds; and the
# gateway must find its region in AWS_REGION alone, as the contract says.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SFN", "AWS_DEFAULT_REGION"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    with LocalStack(long_poll_s=10) as local:
        yield local


@pytest.fixture(scope="session")
def aws_env(stack: LocalStack) -> dict[str, str]:
    return stack.environment()


def _client(stack: LocalStack, service: str) -> Any:
    env = stack.environment()
    return boto3.client(
        service,
        endpoint_url=stack.endpoint,
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture(scope="session")
def sfn(stack: LocalStack) -> Any:
    return _client(stack, "stepfunctions")


@pytest.fixture(scope="session")
def s3(stack: LocalStack) -> Any:
    return _client(stack, "s3")


@pytest.fixture(scope="session")
def cloudformation(stack: LocalStack) -> Any:
    return _client(stack, "cloudformation")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique("bkt")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def activity(sfn: Any) -> str:
    return create_activity(sfn)


GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture
def gateway(tmp_path: Path, aws_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[GatewayFactory]:
    """Starts ``provider-gateway run`` for one provider; stopped (SIGTERM) after the test."""
    started: list[GatewayProcess] = []

    def start(
        activity_arn: str,
        conn_config: dict[str, Any],
        provider_id: str = "HTTP_PROV",
        extra_env: dict[str, str] | None = None,
        run_args: tuple[str, ...] = (),
        launcher: tuple[str, ...] | None = None,
        **settings: Any,
    ) -> GatewayProcess:
        gateway_config = {"activity_arn": activity_arn, "conn_config": conn_config, "num_connections": 2}
        gateway_config.update(settings)
        config = write_config(
            tmp_path / f"collections-{len(started)}.yml", [{"id": provider_id, "gateway_config": gateway_config}]
        )
        process = GatewayProcess(
            config,
            {**aws_env, **(extra_env or {})},
            tmp_path / f"gateway-{len(started)}.log",
            run_args=run_args,
            launcher=launcher,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        code = process.terminate()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(process.log()[-5000:])
        assert code == 0 or process.killed, f"gateway exited {code}:\n{process.log()[-3000:]}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
