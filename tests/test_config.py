"""Configuration through ``provider-gateway validate``, and the loader's rules."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from provider_gateway.config import GatewayConfig, HttpConnConfig, load_config, masked, parse_config
from provider_gateway.config.loader import cloudformation_resolver
from provider_gateway.config.model import LeaseConfig, field_default
from provider_gateway.errors import ConfigError
from provider_gateway.local.http_server import FileHTTPServer
from provider_gateway.protocols import CONN_TYPES, REGISTRY, ConnectionSettings
from provider_gateway.transfer.s3upload import MiB
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


def test_a_resource_cloudformation_does_not_know_is_missing_and_an_unreachable_stack_is_not(
    cloudformation: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACK_NAME", unique("nostack").replace("-", ""))
    unreachable = boto3.client(
        "cloudformation",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=2),
    )

    with pytest.raises(ConfigError, match="no resource Nope or nostack"):
        cloudformation_resolver(lambda: cloudformation)("Nope")
    with pytest.raises(ConfigError, match="cannot query stack nostack"):
        cloudformation_resolver(lambda: unreachable)("Nope")


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


def write_gateway(tmp_path: Path, gateway: dict[str, Any], name: str = "collections.yml") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"providers": [{"id": "P", "config": {"gateway_config": gateway}}]}))
    return path


def base_gateway(**conn: Any) -> dict[str, Any]:
    return {"activity_arn": ARN, "conn_config": {"type": "http", **conn}, "num_connections": 2}


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("num_connections", 1_000_000_000, "num_connections: must be from 1 to 256, got 1000000000"),
        ("heartbeat_interval_s", ".inf", "heartbeat_interval_s: must be a finite number, got inf"),
        ("heartbeat_interval_s", 86_400, "heartbeat_interval_s: must be from 1 to 3600"),
        ("read_timeout_s", ".inf", "read_timeout_s: must be a finite number"),
        ("read_timeout_s", ".nan", "read_timeout_s: must be a finite number, got nan"),
        ("shutdown_grace_s", -1, "shutdown_grace_s: must be at least 0"),
        ("shutdown_grace_s", 1e9, "shutdown_grace_s: must be from 0 to 3600"),
        ("part_size_mb", 6000, "part_size_mb: must be from 5 to 5120"),
        ("retries", 10**6, "retries: must be from 0 to 100"),
        ("conn_config.timeout_s", "-.inf", "conn_config.timeout_s: must be a finite number"),
        ("conn_config.timeout_s", 86_400, "conn_config.timeout_s: must be from 1 to 600"),
    ],
)
def test_numbers_are_bounded_and_finite_and_the_message_names_the_key(
    tmp_path: Path, key: str, value: Any, words: str
) -> None:
    # YAML, so that .inf and .nan are the floats YAML means by them.
    lines = [f"activity_arn: {ARN}", "conn_config: {type: http, host: h.example.org}", "num_connections: 2"]
    if key.startswith("conn_config."):
        lines[1] = f"conn_config: {{type: http, host: h.example.org, {key.split('.')[1]}: {value}}}"
    else:
        lines = [line for line in lines if not line.startswith(key)] + [f"{key}: {value}"]
    path = tmp_path / "collections.yml"
    path.write_text(
        "providers:\n  - id: P\n    config:\n      gateway_config:\n" + "".join(f"        {x}\n" for x in lines)
    )

    done = validate(path)

    assert done.returncode == 2, done.stdout
    assert words in done.stderr


# Keys a conn_config needs beyond the required fields, for its type's own rules to pass.
RULES_NEED: dict[str, dict[str, Any]] = {"sftp": {"password": "pw", "insecure_skip_host_key_check": True}}


def sample(hint: Any) -> Any:
    """A valid value of a required field's type, for a config that gives only what it must."""
    return {str: "h.example.org", int: 2, float: 2.0}[hint]


def required_keys(config_class: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    hints = typing.get_type_hints(config_class)
    return {
        f.name: sample(hints[f.name])
        for f in dataclasses.fields(config_class)
        if f.name not in skip and field_default(config_class, f.name) is dataclasses.MISSING
    }


def assert_left_out_keys_get_field_defaults(config: Any, written: dict[str, Any]) -> None:
    for f in dataclasses.fields(config):
        if f.name not in written:
            assert getattr(config, f.name) == field_default(type(config), f.name), (type(config), f.name)


@pytest.mark.parametrize("kind", CONN_TYPES)
def test_every_default_the_loader_applies_is_the_dataclass_fields(kind: str) -> None:
    spec = REGISTRY[kind]
    conn = {"type": kind, **required_keys(spec.config_class, skip=("type",)), **RULES_NEED.get(kind, {})}
    leases = required_keys(LeaseConfig) | {"table": "gateway-leases"}
    gateway = required_keys(GatewayConfig, skip=("conn", "activity_arn")) | {
        "activity_arn": ARN,
        "conn_config": conn,
        "connection_leases": leases,
    }

    config = parse_config({"providers": [{"id": "P", "config": {"gateway_config": gateway}}]}, resolver=str)

    loaded = config.providers[0].gateway
    assert isinstance(loaded.conn, spec.config_class)
    assert_left_out_keys_get_field_defaults(loaded, gateway | {"conn": conn})
    assert_left_out_keys_get_field_defaults(loaded.conn, conn)
    assert loaded.connection_leases is not None
    assert_left_out_keys_get_field_defaults(loaded.connection_leases, leases)


def test_the_options_a_provider_builds_carry_its_config_and_default_to_it() -> None:
    def gateway(**settings: Any) -> GatewayConfig:
        document = {"providers": [{"id": "P", "config": {"gateway_config": base_gateway() | settings}}]}
        return parse_config(document, resolver=str).providers[0].gateway

    defaults, given = gateway(), gateway(read_timeout_s=7, part_size_mb=16, retries=1)

    assert defaults.connection_settings == ConnectionSettings()
    assert defaults.copy_options.min_part_size == field_default(GatewayConfig, "part_size_mb") * MiB
    assert defaults.copy_options.retries == field_default(GatewayConfig, "retries")
    assert given.connection_settings.read_timeout_s == 7
    assert (given.copy_options.min_part_size, given.copy_options.retries) == (16 * MiB, 1)


def test_ports_are_bounded(tmp_path: Path) -> None:
    gateway = base_gateway()
    gateway["conn_config"] = {"type": "ftp", "host": "ftp.example.org", "port": 70000}
    done = validate(write_gateway(tmp_path, gateway))
    assert done.returncode == 2 and "conn_config.port: must be from 1 to 65535" in done.stderr


SECRET = "Zq9-secret-Vx7"


@pytest.mark.parametrize(
    ("conn", "words"),
    [
        ({"host": "h.example.org", "headers": {"X-Api-Key": SECRET + "\n"}}, "headers.X-Api-Key: holds a line break"),
        ({"host": "h.example.org", "headers": {"X-Api-Key": SECRET + "\r\nX-Evil: 1"}}, "a line break (CR or LF)"),
        ({"host": "h.example.org", "headers": {"X-Api-Key": SECRET + "\x00"}}, "a NUL character"),
        ({"host": "h.example.org", "headers": {"X-Api-Key": SECRET + "\x1b"}}, "a control character (U+001B)"),
        ({"host": "h.example.org", "headers": {"X-Api-Key": " " + SECRET}}, "leading or trailing whitespace"),
        ({"host": "h.example.org", "headers": {"X-Api-Key": SECRET + "\u20ac"}}, "a character outside Latin-1"),
        ({"host": "h.example.org", "headers": {"Bad Name": SECRET}}, "'Bad Name' is not a valid HTTP header name"),
        ({"host": "h.example.org", "token": SECRET + "\n"}, "conn_config.token: holds a line break"),
        ({"host": "h.example.org", "token": SECRET + "\t"}, "conn_config.token: holds leading or trailing whitespace"),
        ({"host": "h.example.org", "username": "u", "password": SECRET + "\r"}, "conn_config.password: holds a line"),
        ({"host": "h.example.org", "username": "a:b", "password": SECRET}, "holds a colon"),
        (
            {"host": "h.example.org", "password": 98765431},
            "conn_config.password: must be a string, got a value of type int",
        ),
        (
            {"host": "h.example.org", "token": ["x", SECRET]},
            "conn_config.token: must be a string, got a value of type list",
        ),
        (
            {"host": "h.example.org", "headers": [SECRET]},
            "conn_config.headers: must be a mapping, got a value of type list",
        ),
        ({"type": "ftp", "host": "f.example.org", "password": SECRET + "\r\nDELE x"}, "which FTP cannot carry"),
        ({"type": "ftp", "host": "f.example.org", "username": "u\x00", "password": SECRET}, "username: holds a NUL"),
        ({"host": f"u:{SECRET}@h.example.org"}, "conn_config.host: must be a host name; credentials go in username"),
    ],
)
def test_credentials_that_cannot_be_carried_are_refused_without_showing_them(
    tmp_path: Path, conn: dict[str, Any], words: str
) -> None:
    gateway = base_gateway(**conn)

    done = validate(write_gateway(tmp_path, gateway))

    assert done.returncode == 2, done.stdout
    assert words in done.stderr
    for shown in (SECRET, "98765431"):
        assert shown not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "credentials",
    [{"username": "u", "password": "p"}, {"token": "t"}, {"headers": {"X-Api-Key": "k"}}],
)
def test_http_credentials_need_a_host(tmp_path: Path, credentials: dict[str, Any]) -> None:
    done = validate(write_gateway(tmp_path, base_gateway(**credentials)))
    assert done.returncode == 2
    assert "conn_config.host: required when username, password, token or headers are set" in done.stderr


def test_a_yaml_syntax_error_names_the_place_not_the_line(tmp_path: Path) -> None:
    path = tmp_path / "collections.yml"
    path.write_text(f"providers:\n  - id: P\n    password: \"{SECRET}\n  - id: Q\n    x: 'unclosed\n")

    done = validate(path)

    assert done.returncode == 2
    assert "not valid YAML at line" in done.stderr
    assert SECRET not in done.stderr


def test_an_alias_bomb_is_refused_quickly_with_little_memory(tmp_path: Path) -> None:
    names = "abcdefghij"
    lines = ["lol0: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"lol{i}: &{names[i]} [{', '.join(['*' + names[i - 1]] * 10)}]" for i in range(1, 10)]
    path = tmp_path / "collections.yml"
    path.write_text("\n".join(lines) + "\nproviders: []\n")
    assert len(path.read_bytes()) < 600

    # A fresh interpreter whose only child is validate, so that its children's peak RSS is validate's.
    measure = (
        "import resource, subprocess, sys; "
        "done = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", measure, cli_path(), "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2, done.stderr
    assert "expands to more than 1000000 values through its aliases" in done.stderr
    assert time.monotonic() - started < 10
    assert int(done.stdout.split()[-1]) < 200 * 1024  # KiB: the bomb expanded would take gigabytes


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "collections.yml"
    path.write_text("loop: &a [1, *a]\nproviders: []\n")
    done = validate(path)
    assert done.returncode == 2 and "refers to the node that holds it" in done.stderr


SHARED = f"""
providers:
  - id: OTHER_COMPONENT_ONLY
    config:
      some_other_component: {{password: "${{OTHER_COMPONENT_SECRET}}"}}
  - id: SERVED
    config:
      some_other_component: {{password: "${{OTHER_COMPONENT_SECRET}}"}}
      gateway_config:
        activity_arn: {ARN}
        conn_config: {{type: https, host: a.example.org, password: "${{SERVED_PASSWORD}}", username: u}}
        num_connections: 1
  - id: NOT_SERVED
    config:
      gateway_config:
        activity_arn: {ARN}
        conn_config: {{type: https, host: b.example.org, token: "${{NOT_SERVED_TOKEN}}"}}
        num_connections: "not even checked"
"""


def test_only_the_served_providers_gateway_config_is_expanded_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "collections.yml"
    path.write_text(SHARED)
    monkeypatch.setenv("SERVED_PASSWORD", "pw")
    for name in ("OTHER_COMPONENT_SECRET", "NOT_SERVED_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    config = load_config(str(path), resolver=str, providers=["SERVED"])

    assert [p.id for p in config.providers] == ["SERVED"]
    assert config.providers[0].gateway.conn.password == "pw"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="NOT_SERVED_TOKEN is not set"):
        load_config(str(path), resolver=str)  # every provider served: NOT_SERVED's secret is needed
    with pytest.raises(ConfigError, match=r"no provider NOPE with a config\.gateway_config"):
        load_config(str(path), resolver=str, providers=["SERVED", "NOPE"])


def test_validate_ignores_an_unset_variable_in_another_components_section(tmp_path: Path) -> None:
    path = tmp_path / "collections.yml"
    path.write_text(SHARED.split("  - id: NOT_SERVED")[0])
    env = {k: v for k, v in os.environ.items() if k != "OTHER_COMPONENT_SECRET"}

    done = subprocess.run(
        [cli_path(), "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        env={**env, "SERVED_PASSWORD": "pw"},
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert "valid: 1 provider(s)" in done.stdout


def test_a_config_file_over_the_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "collections.yml"
    path.write_bytes(b"# " + b"x" * (5 * 1024 * 1024) + b"\nproviders: []\n")
    done = validate(path)
    assert done.returncode == 2 and "over 4194304 bytes" in done.stderr


def test_download_with_provider_needs_only_that_providers_secrets(
    tmp_path: Path, aws_env: dict[str, str], s3: Any, bucket: str
) -> None:
    with FileHTTPServer({"/d/a.h5": b"abc"}, basic_auth=("u", "pw")) as server:
        path = tmp_path / "collections.yml"
        shared = SHARED.replace("{type: https, host: a.example.org", "{type: http, host: " + server.host).replace(
            'password: "${SERVED_PASSWORD}"', "password: pw"
        )
        path.write_text(shared)
        env = {k: v for k, v in os.environ.items() if k not in ("OTHER_COMPONENT_SECRET", "NOT_SERVED_TOKEN")}
        command = [cli_path(), "download", server.url("/d/a.h5"), f"s3://{bucket}/a.h5", "--config", str(path)]

        served = subprocess.run(
            [*command, "--provider", "SERVED"], capture_output=True, text=True, env={**env, **aws_env}, timeout=120
        )
        every = subprocess.run(command, capture_output=True, text=True, env={**env, **aws_env}, timeout=120)

    assert served.returncode == 0, served.stderr
    assert s3.get_object(Bucket=bucket, Key="a.h5")["Body"].read() == b"abc"
    assert every.returncode == 2 and "NOT_SERVED_TOKEN is not set" in every.stderr
