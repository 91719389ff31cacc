"""The files in examples/ stay valid: users copy them."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provider_gateway.config import HttpConnConfig, load_config
from provider_gateway.errors import codes_where, error_classes
from provider_gateway.messages import parse_download_task
from provider_gateway.protocols import check_url
from provider_gateway.workflow import download_state_machine
from tests.support import ROLE_ARN, unique

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROV_USERNAME", "HTTP_PROV_PASSWORD", "TOKEN_PROV_TOKEN"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("LEASE_TABLE", "my-stack-connection-leases")

    config = load_config(
        str(EXAMPLES / "collections.yml"),
        resolver=lambda name: f"arn:aws:states:us-west-2:123456789012:activity:{name}",
    )

    assert [p.id for p in config.providers] == ["HTTP_PROV", "TOKEN_PROV", "GRID_PROV"]
    assert config.providers[2].gateway.conn.type == "gridftp"
    assert config.providers[0].gateway.sync_activity_arn is not None
    assert config.providers[0].gateway.activity_arn.endswith(":HttpProvDownloadActivity")
    leases = config.providers[0].gateway.connection_leases
    assert leases is not None and leases.table == "my-stack-connection-leases"


def test_example_state_machine_is_the_one_the_code_builds_and_the_engine_accepts(sfn: Any) -> None:
    definition = json.loads((EXAMPLES / "download-state-machine.asl.json").read_text())
    activity = definition["States"]["Download"]["Resource"]

    assert definition == download_state_machine(activity)
    created = sfn.create_state_machine(name=unique("example"), definition=json.dumps(definition), roleArn=ROLE_ARN)
    assert created["stateMachineArn"]


@pytest.mark.parametrize("name", ["download.json", "download-original-format.json"])
def test_example_download_tasks_parse(name: str) -> None:
    conn = HttpConnConfig(type="https", host="data.example.org")
    raw = (EXAMPLES / "tasks" / name).read_text()

    task = parse_download_task(raw, url_check=functools.partial(check_url, conn))

    assert all(f.bucket == "my-science-bucket" for f in task.files)
    assert all(f.key.endswith((".h5", ".nc")) for f in task.files)
    if name == "download.json":
        assert task.files[1].key == "sources/MODIS/granule 002.h5"
    else:
        assert task.files[0].key == "sources/VIIRS/granule_003.nc"


def test_ecs_task_definition_runs_options_the_cli_has_and_stops_within_ecs_timeout() -> None:
    import re

    import click

    from provider_gateway.cli import main as cli
    from provider_gateway.config.model import GatewayConfig
    from provider_gateway.engine.gateway import CANCEL_WAIT_S

    task = json.loads((EXAMPLES / "ecs" / "task-definition.json").read_text())
    (container,) = task["containerDefinitions"]
    assert container["image"].endswith(":${IMAGE_TAG}"), "each environment pins its image tag"
    assert isinstance(cli, click.Group)
    for command in (container["command"], container["healthCheck"]["command"][1:]):
        words = command[1:] if command[0] == "provider-gateway" else command
        sub = cli.commands[words[0]]
        known = {opt for param in sub.params for opt in param.opts}
        assert {w for w in words if w.startswith("--")} <= known
    grace = GatewayConfig.__dataclass_fields__["shutdown_grace_s"].default
    assert isinstance(grace, float)
    assert grace + CANCEL_WAIT_S < container["stopTimeout"]
    dockerfile = (EXAMPLES.parent / "Dockerfile").read_text()
    healthcheck = re.search(r"CMD (\[.*provider-gateway.*status.*\])", dockerfile)
    assert healthcheck is not None and json.loads(healthcheck.group(1)) == container["healthCheck"]["command"][1:]
    policy = json.loads((EXAMPLES / "ecs" / "task-role-policy.json").read_text())
    actions = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert "states:GetActivityTask" in actions and not any(a.endswith("*") for a in actions)


def test_ecs_lease_table_and_policy_fit_the_lease_code(stack: Any) -> None:
    import boto3

    from provider_gateway.leases import LeaseTable
    from provider_gateway.leases.table import LEASE_TABLE_ACTIONS

    template = (EXAMPLES / "ecs" / "lease-table.json").read_text()
    spec = json.loads(template.replace("${STACK_NAME}", unique("stack")))
    env = stack.environment()
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=stack.endpoint,
        region_name=env["AWS_REGION"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    dynamodb.create_table(**spec)
    table = LeaseTable(dynamodb, spec["TableName"])
    assert table.take("P", 0, "me", "id-1", 0, 1_000) and [s.slot for s in table.slots("P")] == [0]
    policy = json.loads((EXAMPLES / "ecs" / "task-role-policy.json").read_text())
    (statement,) = [s for s in policy["Statement"] if "dynamodb" in str(s["Action"])]
    assert set(statement["Action"]) == set(LEASE_TABLE_ACTIONS)
    assert statement["Resource"].endswith(":table/" + json.loads(template)["TableName"])


def _states(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state of an ASL definition, those inside Map and Parallel states included."""
    for name, state in definition["States"].items():
        yield name, state
        for inner in (state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])):
            if inner:
                yield from _states(inner)


def _copies_files(state: dict[str, Any]) -> bool:
    """A Task that runs the gateway's copy: an activity (the gateway's), or the download Lambda."""
    resource = str(state.get("Resource", ""))
    function = str(state.get("Parameters", {}).get("FunctionName", ""))
    return ":activity:" in resource or resource == "${GatewayActivityArn}" or function == "${DownloadFunctionArn}"


SHIPPED_STATE_MACHINES = sorted(EXAMPLES.rglob("*.asl.json"))


def test_every_shipped_state_machine_retries_what_the_error_classes_say() -> None:
    retried = set(codes_where(lambda error: error.workflow_retry))
    gateway_codes = {error.code for error in error_classes()}
    assert {"SourceUnavailable", "IntegrityError", "GatewayShutdown"} <= retried
    assert len(SHIPPED_STATE_MACHINES) >= 2
    copying = 0
    for path in SHIPPED_STATE_MACHINES:
        for name, state in _states(json.loads(path.read_text())):
            where = f"{path.relative_to(EXAMPLES)}: {name}"
            retry = {code for rule in state.get("Retry", []) for code in rule["ErrorEquals"]}
            assert retry & gateway_codes <= retried, f"{where} retries {sorted(retry & gateway_codes - retried)}"
            if _copies_files(state):
                copying += 1
                caught = {code for rule in state.get("Catch", []) for code in rule["ErrorEquals"]}
                assert retried <= retry | caught, f"{where} does not retry {sorted(retried - retry - caught)}"
    assert copying >= 3


def test_state_machines_of_the_templates_are_the_shipped_files_and_batch_retries_the_same_errors() -> None:
    loader = type("CfnLoader", (yaml.SafeLoader,), {})
    loader.add_multi_constructor("!", lambda load, suffix, node: None)
    templates = sorted(EXAMPLES.rglob("template.yaml"))
    assert templates
    for path in templates:
        resources = yaml.load(path.read_text(), Loader=loader)["Resources"].values()
        for resource in resources:
            properties = resource.get("Properties", {})
            if resource["Type"] in ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"):
                uri = properties.get("DefinitionUri")
                assert uri is not None, f"{path}: a state machine defined inline escapes the Retry check"
                assert (path.parent / uri).resolve() in {p.resolve() for p in SHIPPED_STATE_MACHINES}
            if resource["Type"] == "AWS::Batch::JobDefinition":
                rules = properties["RetryStrategy"]["EvaluateOnExit"]
                statuses = {int(r["OnExitCode"]) for r in rules if r["Action"] == "RETRY" and "OnExitCode" in r}
                assert statuses == {error.exit_status for error in error_classes() if error.workflow_retry}


def test_the_download_state_machine_retries_the_classes_workflow_retry_codes() -> None:
    definition = download_state_machine("arn:aws:states:us-east-1:123456789012:activity:a")
    (rule,) = definition["States"]["Download"]["Retry"]
    assert rule["ErrorEquals"] == [*codes_where(lambda error: error.workflow_retry), "States.Timeout"]
    assert "TargetWriteFailed" not in rule["ErrorEquals"]
