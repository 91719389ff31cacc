"""The SAM template of the callback downloader: valid, and naming only what the package has."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from provider_gateway.cli import main as cli
from provider_gateway.lambdas.files import list_files
from provider_gateway.leases.table import LEASE_TABLE_ACTIONS
from provider_gateway.workflow import CALLBACK_PLACEHOLDERS

EXAMPLE = Path(__file__).parent.parent / "examples" / "callback-downloader"


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub...) read as {tag: value}."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {suffix: value}


_CfnLoader.add_multi_constructor("!", _tagged)


def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load((EXAMPLE / "template.yaml").read_text(), Loader=_CfnLoader)
    return loaded


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in template()["Resources"].items() if r["Type"] == kind}


def test_cfn_lint_passes() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "template.yaml"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_function_handler_exists_in_the_package() -> None:
    functions = resources("AWS::Serverless::Function")
    assert len(functions) == 5
    for name, props in functions.items():
        module_name, _, attribute = props["Handler"].rpartition(".")
        handler = getattr(importlib.import_module(module_name), attribute, None)
        assert callable(handler), f"{name}: {props['Handler']} is not a function of the package"
        assert props["CodeUri"] == "../../"


def test_the_containers_run_commands_the_cli_has_with_options_it_takes() -> None:
    job = resources("AWS::Batch::JobDefinition")["BatchJobDefinition"]
    task = resources("AWS::ECS::TaskDefinition")["GatewayTaskDefinition"]
    assert isinstance(cli, click.Group)
    for command in (job["ContainerProperties"]["Command"], task["ContainerDefinitions"][0]["Command"]):
        sub = cli.commands.get(command[0])
        assert sub is not None, f"provider-gateway has no command {command[0]!r}"
        known = {opt for param in sub.params for opt in param.opts}
        used = {word for word in command[1:] if isinstance(word, str) and word.startswith("--")}
        assert used <= known, f"{command[0]}: unknown options {used - known}"


def test_batch_parameters_match_what_the_file_list_gives_each_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    job = resources("AWS::Batch::JobDefinition")["BatchJobDefinition"]
    refs = {word[len("Ref::") :] for word in job["ContainerProperties"]["Command"] if str(word).startswith("Ref::")}
    assert refs == set(job["Parameters"]), "every Ref:: has a default, and every default is used"
    listed = list_files({"callback": {"files": ["https://provider.test/a.h5"]}, "target": {"bucket": "data-bucket"}})
    assert set(listed["files"][0]["batch"]) == refs


def test_state_machine_substitutions_fill_every_placeholder() -> None:
    machine = resources("AWS::Serverless::StateMachine")["DownloaderStateMachine"]
    definition = (EXAMPLE / machine["DefinitionUri"]).read_text()
    json.loads(definition)
    placeholders = set(re.findall(r"\$\{(\w+)\}", definition))
    assert placeholders == set(machine["DefinitionSubstitutions"]) == set(CALLBACK_PLACEHOLDERS)


def test_the_gateway_tasks_may_overlap_only_because_they_share_a_lease_table() -> None:
    service = resources("AWS::ECS::Service")["GatewayService"]
    task = resources("AWS::ECS::TaskDefinition")["GatewayTaskDefinition"]
    table = resources("AWS::DynamoDB::Table")["ConnectionLeaseTable"]
    role = resources("AWS::IAM::Role")["GatewayTaskRole"]
    environment = {e["Name"]: e["Value"] for e in task["ContainerDefinitions"][0]["Environment"]}
    statements = role["Policies"][0]["PolicyDocument"]["Statement"]
    on_table = [s for s in statements if s["Resource"] == {"GetAtt": "ConnectionLeaseTable.Arn"}]

    assert service["DeploymentConfiguration"]["MaximumPercent"] == 200
    assert environment["LEASE_TABLE"] == {"Ref": "ConnectionLeaseTable"}
    assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {"provider": "HASH", "slot": "RANGE"}
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    # Exactly the calls the lease code makes (a new call must be granted here too).
    assert on_table and set(on_table[0]["Action"]) == set(LEASE_TABLE_ACTIONS)
