"""Several files in flight in one SFTP session, through the CLI: the contract's faults fail only their own file."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.providers import Provider, provider_for
from tests.support import create_state_machine, start, wait_done

MiB = 1024 * 1024


@pytest.fixture
def sftp(tmp_path: Path) -> Iterator[Provider]:
    with provider_for("sftp", tmp_path) as running:
        yield running


def _entry(url: str, bucket: str, key: str, **source: Any) -> dict[str, Any]:
    return {"type": "download", "source": {"url": url, **source}, "target": {"bucket": bucket, "key": key}}


def test_a_cut_a_missing_file_and_a_wrong_checksum_among_files_in_flight_fail_only_their_own_file(
    gateway: GatewayFactory, sftp: Provider, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    if sftp.cut is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"the SFTP test provider cannot cut: {sftp.notes}")
    good = {f"ok-{i}.bin": os.urandom(400_000 + 7919 * i) for i in range(8)}
    cut = os.urandom(24 * MiB + 321)
    for name, data in {**good, "cut.bin": cut, "bad.bin": os.urandom(3 * MiB)}.items():
        sftp.put(name, data)
    happened = sftp.cut("cut.bin", 9 * MiB)
    names = sorted(good)
    files = [_entry(sftp.url("cut.bin"), bucket, "cut.bin")]
    files += [_entry(sftp.url(n), bucket, n) for n in names[:4]]
    files += [_entry(sftp.url("absent.bin"), bucket, "absent.bin")]
    files += [_entry(sftp.url("bad.bin"), bucket, "bad.bin", checksum={"type": "sha256", "value": "0" * 64})]
    files += [_entry(sftp.url(n), bucket, n) for n in names[4:]]
    conn = {**sftp.conn_config(True), "files_in_flight": 4}
    process = gateway(
        activity, conn, provider_id="SFTP_PROV", num_connections=1, part_size_mb=5, failure_mode="per_file"
    )
    machine = create_state_machine(sfn, activity)

    done = wait_done(sfn, start(sfn, machine, {"payload": {"files": files}}), timeout_s=120)

    assert happened(), "the planned break never happened"
    assert done["status"] == "SUCCEEDED", done
    results = {f["target"]["key"]: f for f in json.loads(done["output"])["payload"]["files"]}
    assert {k: r.get("error_code") for k, r in results.items() if not r["success"]} == {
        "absent.bin": "SourceNotFound",
        "bad.bin": "IntegrityError",
    }
    assert results["cut.bin"]["bytes"] == len(cut)  # resumed after the cut
    body = s3.get_object(Bucket=bucket, Key="cut.bin")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(cut).digest(), f"{len(body)} of {len(cut)} bytes"
    for name, data in good.items():
        assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == data
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {*good, "cut.bin"}  # nothing of the failed files
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert sftp.sessions_max() <= 1  # four files in flight, one SSH connection
    assert "1 connection(s), 4 file(s) in flight each" in process.log()
