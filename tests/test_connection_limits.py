"""Persistent connections within num_connections, through server-side drops; SFTP host keys."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.providers import Provider, provider_for
from tests.servers import SSHD
from tests.support import create_state_machine, download_message, start, wait_done


@pytest.fixture(params=["ftp", "ftps", "sftp"])
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Provider]:
    with provider_for(request.param, tmp_path) as running:
        yield running


def _batch(sfn: Any, machine: str, provider: Provider, bucket: str, names: list[str]) -> list[str]:
    half = len(names) // 2
    return [
        start(sfn, machine, download_message([(provider.url(n), bucket, n) for n in group]))
        for group in (names[:half], names[half:])
    ]


def test_twenty_files_over_two_connections_survive_a_dropped_session(
    gateway: GatewayFactory, provider: Provider, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    files = {f"file-{i:02d}.dat": os.urandom(50_000 + i) for i in range(20)}
    for name, data in files.items():
        provider.put(name, data)
    gateway(activity, provider.conn_config(True), provider_id="P", num_connections=2)
    machine = create_state_machine(sfn, activity)
    names = sorted(files)

    first = [wait_done(sfn, arn, timeout_s=90) for arn in _batch(sfn, machine, provider, bucket, names[:10])]
    sessions_before_drop, logins_before_drop = provider.sessions_total(), provider.logins()
    dropped = provider.drop_sessions()
    second = [wait_done(sfn, arn, timeout_s=90) for arn in _batch(sfn, machine, provider, bucket, names[10:])]

    assert [r["status"] for r in first + second] == ["SUCCEEDED"] * 4, [r.get("cause") for r in first + second]
    for name, data in files.items():
        assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == data
    assert (sessions_before_drop, logins_before_drop) == (2, 2)
    assert dropped >= 1
    assert provider.sessions_max() <= 2
    assert provider.logins() <= 2 + dropped


@pytest.fixture
def sftp(tmp_path: Path) -> Iterator[Provider]:
    with provider_for("sftp", tmp_path) as running:
        yield running


def _sftp_result(
    gateway: GatewayFactory, sftp: Provider, sfn: Any, bucket: str, activity: str, **conn: Any
) -> dict[str, Any]:
    sftp.put("f.bin", b"payload")
    gateway(activity, {**sftp.conn_config(True), **conn}, provider_id="SFTP_PROV")
    machine = create_state_machine(sfn, activity)
    return wait_done(sfn, start(sfn, machine, download_message([(sftp.url("f.bin"), bucket, "f.bin")])))


def test_a_host_key_other_than_the_configured_one_is_refused(
    gateway: GatewayFactory, sftp: Provider, sfn: Any, s3: Any, bucket: str, activity: str, tmp_path: Path
) -> None:
    impostor = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

    done = _sftp_result(gateway, sftp, sfn, bucket, activity, host_key=impostor)

    assert (done["status"], done["error"]) == ("FAILED", "SourceAccessDenied")
    message = json.loads(done["cause"])["files"][0]["error"]
    assert "host key mismatch" in message and "not the configured key" in message
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_known_hosts_file_is_honoured(
    gateway: GatewayFactory, sftp: Provider, sfn: Any, s3: Any, bucket: str, activity: str, tmp_path: Path
) -> None:
    conn = sftp.conn_config(True)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{conn['port']} {conn['host_key']}\n")

    done = _sftp_result(gateway, sftp, sfn, bucket, activity, host_key=None, known_hosts_file=str(known_hosts))

    assert done["status"] == "SUCCEEDED", done
    assert s3.get_object(Bucket=bucket, Key="f.bin")["Body"].read() == b"payload"


@pytest.mark.skipif(SSHD is None and not os.environ.get("CI"), reason="needs OpenSSH sshd")
def test_sshd_is_the_sftp_server_in_ci(sftp: Provider) -> None:
    assert not sftp.notes, sftp.notes
