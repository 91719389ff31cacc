"""Sync tasks, version skips, the original service's message shapes, sidecar checksums."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from provider_gateway.local.http_server import FileHTTPServer
from tests.conftest import GatewayFactory
from tests.support import create_activity, create_state_machine, start, wait_done


@pytest.fixture
def provider() -> Iterator[FileHTTPServer]:
    files = {f"/MODIS/g{i}.h5": os.urandom(20_000 + i) for i in range(5)}
    with FileHTTPServer(files) as server:
        yield server


def _sync_message(provider: FileHTTPServer, bucket: str, version: str = "v1") -> dict[str, Any]:
    return {
        "payload": [{"url": provider.url(f"/MODIS/g{i}.h5"), "version": version} for i in range(5)],
        "workflow_config_template": {
            "SyncHttpUrls": {"output": {"bucket": bucket, "key_prefix": "sources/{meta.key}"}}
        },
        "meta": {"key": "MODIS"},
        "cumulus_meta": {"kept": True},
    }


def test_sync_downloads_what_is_new_and_asks_the_provider_nothing_about_the_rest(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    sync_activity = create_activity(sfn, "sync")
    gateway(activity, {"type": "http", "host": provider.host}, sync_activity_arn=sync_activity)
    machine = create_state_machine(sfn, sync_activity)
    for i in (1, 3):  # already in S3 with the same version
        s3.put_object(Bucket=bucket, Key=f"sources/MODIS/g{i}.h5", Body=b"old bytes", Metadata={"version": "v1"})

    first = wait_done(sfn, start(sfn, machine, _sync_message(provider, bucket)))
    requests_after_first = list(provider.requests)
    second = wait_done(sfn, start(sfn, machine, _sync_message(provider, bucket)))

    assert first["status"] == "SUCCEEDED", first
    output = json.loads(first["output"])
    assert output["payload"] == [{"Bucket": bucket, "Key": f"sources/MODIS/g{i}.h5"} for i in range(5)]
    assert "exception" not in output
    assert output["cumulus_meta"] == {"kept": True}
    assert sorted(requests_after_first) == ["/MODIS/g0.h5", "/MODIS/g2.h5", "/MODIS/g4.h5"]
    assert s3.get_object(Bucket=bucket, Key="sources/MODIS/g1.h5")["Body"].read() == b"old bytes"
    assert s3.get_object(Bucket=bucket, Key="sources/MODIS/g2.h5")["Body"].read() == provider.files["/MODIS/g2.h5"]

    assert second["status"] == "SUCCEEDED", second
    assert json.loads(second["output"])["exception"] == "NotNeededWorkflowError"
    assert provider.requests == requests_after_first  # the provider saw no request at all


def test_a_failed_sync_file_is_remote_resource_error_in_per_file_mode(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, bucket: str, activity: str
) -> None:
    sync_activity = create_activity(sfn, "sync")
    gateway(activity, {"type": "http", "host": provider.host}, sync_activity_arn=sync_activity, failure_mode="per_file")
    machine = create_state_machine(sfn, sync_activity)
    message = _sync_message(provider, bucket)
    message["payload"].append({"url": provider.url("/MODIS/gone.h5"), "version": "v1"})

    done = wait_done(sfn, start(sfn, machine, message))

    assert done["status"] == "SUCCEEDED", done
    output = json.loads(done["output"])
    assert output["exception"] == "RemoteResourceError"
    assert len(output["payload"]) == 5


def test_a_newer_version_replaces_the_object_and_the_same_version_is_skipped(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    gateway(activity, {"type": "http", "host": provider.host})
    machine = create_state_machine(sfn, activity)
    s3.put_object(Bucket=bucket, Key="g0.h5", Body=b"version one", Metadata={"version": "v1"})

    def download(version: str) -> dict[str, Any]:
        message = {
            "payload": {
                "files": [
                    {
                        "source": {"url": provider.url("/MODIS/g0.h5"), "version": version},
                        "target": {"bucket": bucket, "key": "g0.h5"},
                    }
                ]
            }
        }
        done = wait_done(sfn, start(sfn, machine, message))
        assert done["status"] == "SUCCEEDED", done
        return dict(json.loads(done["output"])["payload"]["files"][0])

    same = download("v1")
    newer = download("v2")

    assert (same.get("version_skip"), same["bytes"]) == (True, 0)
    assert "version_skip" not in newer and newer["bytes"] == len(provider.files["/MODIS/g0.h5"])
    obj = s3.get_object(Bucket=bucket, Key="g0.h5")
    assert obj["Metadata"]["version"] == "v2"
    assert obj["Body"].read() == provider.files["/MODIS/g0.h5"]


def test_the_original_message_shape_with_an_s3_pointer_payload(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    gateway(activity, {"type": "http", "host": provider.host}, allowed_buckets=[bucket])
    machine = create_state_machine(sfn, activity)
    payload = {
        "files": [
            {
                "source": {"url": provider.url("/MODIS/g4.h5"), "version": "2026-11-20"},
                "target": "FROM_CONFIG",
                "granule_id": "G4",
            }
        ],
        "collection": {"name": "MODIS", "version": "006"},
    }
    s3.put_object(Bucket=bucket, Key="payloads/in.json", Body=json.dumps(payload).encode())
    message = {
        "payload": {"Bucket": bucket, "Key": "payloads/in.json"},
        "workflow_config_template": {
            "DownloadActivity": {"output": {"bucket": bucket, "key_prefix": "{meta.collection.name}/{meta.day}"}}
        },
        "meta": {"collection": {"name": "MODIS"}, "day": "2026-325"},
        "exception": "None",
    }

    done = wait_done(sfn, start(sfn, machine, message))

    assert done["status"] == "SUCCEEDED", done
    output = json.loads(done["output"])
    assert output["meta"] == message["meta"] and output["exception"] == "None"
    assert output["workflow_config_template"] == message["workflow_config_template"]
    assert output["payload"]["collection"] == payload["collection"]
    (entry,) = output["payload"]["files"]
    assert entry["granule_id"] == "G4"
    assert entry["target"] == {"bucket": bucket, "key": "MODIS/2026-325/g4.h5"}
    obj = s3.get_object(Bucket=bucket, Key="MODIS/2026-325/g4.h5")
    assert obj["Metadata"] == {"version": "2026-11-20"}


def test_sidecar_checksum_files_are_read_and_enforced(
    gateway: GatewayFactory, provider: FileHTTPServer, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    data = provider.files["/MODIS/g2.h5"]
    digest = hashlib.sha256(data).hexdigest()
    provider.files["/MODIS/g2.h5.sha256"] = f"{digest}  g2.h5\n".encode()
    provider.files["/MODIS/g3.h5.sha256"] = f"{digest}  g3.h5\n".encode()  # the wrong file's digest
    gateway(activity, {"type": "http", "host": provider.host}, failure_mode="per_file")
    machine = create_state_machine(sfn, activity)
    message = {
        "payload": {
            "files": [
                {
                    "source": {
                        "url": provider.url(f"/MODIS/{n}.h5"),
                        "checksum": {"type": "sha256", "url": provider.url(f"/MODIS/{n}.h5.sha256")},
                    },
                    "target": {"bucket": bucket, "key": f"{n}.h5"},
                }
                for n in ("g2", "g3")
            ]
        }
    }

    done = wait_done(sfn, start(sfn, machine, message))

    good, bad = json.loads(done["output"])["payload"]["files"]
    assert good["success"] and good["checksum"] == {"type": "sha256", "value": digest}
    assert s3.head_object(Bucket=bucket, Key="g2.h5")["Metadata"] == {"checksum-sha256": digest}
    assert (bad["success"], bad["error_code"]) == (False, "IntegrityError")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="g3.h5")
