"""Configuration through ``provider-gateway validate``, and the loader's rules."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from provider_gateway.config import HttpConnConfig, load_config, masked, parse_config
from provider_gateway.errors import ConfigError
from tests.support import cli_path, unique

ARN = "arn:aws:states:us-east-1:123456789012:activity:HttpProvDownloadActivity"

VALID = f"""
stack_settings: {{ignored: true}}
providers:
  - id: NOT_A_GATEWAY_PROVIDER
    config: {{other_component: 1}}
  - id: HTTP_PROV
    config:
      gateway_config:
        activity_arn: {ARN}
        conn_config:
          type: https
          host: data.example.org
          username: alice
          password: ${{HTTP_PROV_PASSWORD}}
          headers: {{X-Api-Key: "k-123"}}
          login_hosts: [urs.earthdata.nasa.gov]
        num_connections: 3
        failure_mode: per_file
        allowed_buckets: [my-bucket]
"""


def validate(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cli_path(), "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_validate_prints_providers_with_secrets_masked(tmp_path: Path) -> None:
    path = tmp_path / "collections.yml"
    path.write_text(VALID)

    done = validate(path, {"HTTP_PROV_PASSWORD": "s3cr3t-value"})

    assert done.returncode == 0, done.stderr
    assert "HTTP_PROV" in done.stdout and "NOT_A_GATEWAY_PROVIDER" not in done.stdout
    assert "s3cr3t-value" not in done.stdout + done.stderr
    assert "k-123" not in done.stdout
    assert "password: '****'" in done.stdout
    assert "valid: 1 provider(s)" in done.stdout


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda g: g.pop("activity_arn"), "activity_arn: required"),
        (lambda g: g.pop("num_connections"), "num_connections: required"),
        (lambda g: g.update(num_connections=0), "num_connections: must be at least 1"),
        (lambda g: g.update(num_connections="two"), "num_connections: must be an integer"),
        (lambda g: g.update(num_conections=2), "unknown key(s): num_conections"),
        (lambda g: g.update(activity_arn="not-an-arn"), "activity_arn: must be an activity ARN"),
        (lambda g: g.update(failure_mode="sometimes"), "failure_mode: must be one of task, per_file"),
        (lambda g: g["conn_config"].update(type="gopher"), "conn_config.type: must be one of"),
        (lambda g: g["conn_config"].update(verify_tls="yes"), "verify_tls: must be true or false"),
        (lambda g: g["conn_config"].update(pasword="x"), "conn_config: unknown key(s): pasword"),
        (lambda g: g.update(conn_config={"type": "ftp"}), "conn_config.host: required"),
        (
            lambda g: g.update(conn_config={"type": "sftp", "host": "h", "username": "u", "password": "p"}),
            "known_hosts_file",
        ),
        (
            lambda g: g.update(conn_config={"type": "gridftp", "host": "h", "password": "p"}),
            "conn_config.password: a password needs a username",
        ),
        (
            lambda g: g.update(
                conn_config={"type": "gridftp", "host": "h", "x509_user_proxy": "/p", "x509_user_cert": "/c"}
            ),
            "give a proxy or a certificate and key, not both",
        ),
        (
            lambda g: g.update(conn_config={"type": "gridftp", "host": "h", "x509_user_key": "/k"}),
            "x509_user_key: a key needs x509_user_cert",
        ),
        (lambda g: g.update(conn_config={"type": "gridftp", "host": "h:2811"}), "without a port"),
    ],
)
def test_each_config_error_exits_2_and_names_the_key(tmp_path: Path, change: Any, named: str) -> None:
    gateway: dict[str, Any] = {"activity_arn": ARN, "conn_config": {"type": "http"}, "num_connections": 2}
    change(gateway)
    path = tmp_path / "collections.yml"
    path.write_text(json.dumps({"providers": [{"id": "P", "config": {"gateway_config": gateway}}]}))

    done = validate(path)

    assert done.returncode == 2, (done.stdout, done.stderr)
    assert named in done.stderr
    assert "Traceback" not in done.stderr


def test_gridftp_provider_validates_with_its_password_masked(tmp_path: Path) -> None:
    conn = {"type": "gridftp", "host": "gridftp.example.org", "username": "alice", "password": "pw-${GRID_PW}"}
    gateway = {"activity_arn": ARN, "conn_config": conn, "num_connections": 2}
    path = tmp_path / "collections.yml"
    path.write_text(json.dumps({"providers": [{"id": "GRID", "config": {"gateway_config": gateway}}]}))

    done = validate(path, {"GRID_PW": "hunter2"})

    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    assert "type: gridftp" in done.stdout and "port: 2811" in done.stdout
    assert "password: '****'" in done.stdout


def test_unset_environment_variable_is_named(tmp_path: Path) -> None:
    path = tmp_path / "collections.yml"
    path.write_text(VALID)
    env = {k: v for k, v in os.environ.items() if k != "HTTP_PROV_PASSWORD"}

    done = subprocess.run([cli_path(), "validate", "--config", str(path)], capture_output=True, text=True, env=env)

    assert done.returncode == 2
    assert "environment variable HTTP_PROV_PASSWORD is not set" in done.stderr


def test_missing_file_and_bad_yaml_exit_2(tmp_path: Path) -> None:
    missing = validate(tmp_path / "nope.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("providers: [unclosed")
    broken = validate(bad)

    assert (missing.returncode, broken.returncode) == (2, 2)
    assert "cannot read" in missing.stderr
    assert "not valid YAML" in broken.stderr


def test_config_is_frozen_typed_and_keeps_secrets_out_of_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROV_PASSWORD", "s3cr3t-value")
    path = tmp_path / "collections.yml"
    path.write_text(VALID)

    config = load_config(str(path), resolver=lambda name: pytest.fail("no resource to resolve"))

    (provider,) = config.providers
    conn = provider.gateway.conn
    assert isinstance(conn, HttpConnConfig)
    assert (conn.password, conn.verify_tls, provider.gateway.num_connections) == ("s3cr3t-value", True, 3)
    assert provider.gateway.allowed_buckets == ("my-bucket",)
    assert "s3cr3t-value" not in repr(config)
    assert masked(conn)["password"] == "****"
    with pytest.raises(AttributeError):
        provider.gateway.num_connections = 5  # type: ignore[misc]


def test_both_resource_spellings_resolve_through_the_resolver() -> None:
    seen: list[str] = []

    def resolver(name: str) -> str:
        seen.append(name)
        return f"arn:aws:states:us-east-1:123456789012:activity:{name}-physical"

    from provider_gateway.config.yaml_source import parse_yaml

    document = parse_yaml(
        """
providers:
  - id: A
    config:
      gateway_config:
        activity_arn: !GitcResource FtpProvDownloadActivity
        sync_activity_arn: GitcResource! FtpProvSyncActivity
        conn_config: {type: ftp, host: 123.123.123.123}
        num_connections: 2
""",
        "inline",
    )
    config = parse_config(document, resolver)

    assert seen == ["FtpProvDownloadActivity", "FtpProvSyncActivity"]
    assert config.providers[0].gateway.sync_activity_arn.endswith(":activity:FtpProvSyncActivity-physical")  # type: ignore[union-attr]


def test_gitc_resources_resolve_on_the_stack_named_by_stack_name(
    tmp_path: Path, cloudformation: Any, aws_env: dict[str, str]
) -> None:
    stack_name = unique("gitc").replace("-", "")
    template = {
        "Resources": {
            "HttpProvDownloadActivity": {"Type": "AWS::StepFunctions::Activity", "Properties": {"Name": unique("dl")}},
            f"{stack_name}HttpProvSyncActivity": {
                "Type": "AWS::StepFunctions::Activity",
                "Properties": {"Name": unique("sync")},
            },
        }
    }
    cloudformation.create_stack(StackName=stack_name, TemplateBody=json.dumps(template))
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cloudformation.describe_stack_resources(StackName=stack_name)["StackResources"]
    }
    path = tmp_path / "collections.yml"
    path.write_text(
        """
providers:
  - id: HTTP_PROV
    config:
      gateway_config:
        activity_arn: !GitcResource HttpProvDownloadActivity
        sync_activity_arn: GitcResource! HttpProvSyncActivity
        conn_config: {type: http}
        num_connections: 2
"""
    )

    ok = validate(path, {**aws_env, "STACK_NAME": stack_name})
    unknown = tmp_path / "unknown.yml"
    unknown.write_text(path.read_text().replace("!GitcResource HttpProvDownloadActivity", "!GitcResource Nope"))
    failed = validate(unknown, {**aws_env, "STACK_NAME": stack_name})

    assert ok.returncode == 0, ok.stderr
    assert physical["HttpProvDownloadActivity"] in ok.stdout
    assert physical[f"{stack_name}HttpProvSyncActivity"] in ok.stdout
    assert failed.returncode == 2
    assert "Nope" in failed.stderr and stack_name in failed.stderr


def test_config_from_s3(tmp_path: Path, s3: Any, bucket: str, aws_env: dict[str, str]) -> None:
    s3.put_object(Bucket=bucket, Key="ingest/collections.yml", Body=VALID.encode())

    done = subprocess.run(
        [cli_path(), "validate", "--config", f"s3://{bucket}/ingest/collections.yml"],
        capture_output=True,
        text=True,
        env={**os.environ, **aws_env, "HTTP_PROV_PASSWORD": "x"},
    )

    assert done.returncode == 0, done.stderr
    assert "HTTP_PROV" in done.stdout


def test_duplicate_provider_ids_are_refused() -> None:
    provider = {
        "id": "P",
        "config": {"gateway_config": {"activity_arn": ARN, "conn_config": {"type": "http"}, "num_connections": 1}},
    }
    with pytest.raises(ConfigError, match="duplicate provider id 'P'"):
        parse_config({"providers": [provider, provider]}, resolver=str)
