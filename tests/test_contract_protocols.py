"""The same contract, over every protocol: real servers on loopback, through the activity API.

Each case runs against http, ftp, ftps, sftp (OpenSSH's sshd) and gridftp (globus-gridftp-server).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.providers import PROTOCOLS, Provider, provider_for
from tests.support import create_state_machine, download_message, start, wait_done

MiB = 1024 * 1024


@pytest.fixture(params=PROTOCOLS)
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Provider]:
    with provider_for(request.param, tmp_path) as running:
        yield running


def _run(
    gateway: GatewayFactory, provider: Provider, sfn: Any, activity: str, message: dict[str, Any], **settings: Any
) -> dict[str, Any]:
    gateway(activity, provider.conn_config(True), provider_id=provider.kind.upper() + "_PROV", **settings)
    machine = create_state_machine(sfn, activity)
    return wait_done(sfn, start(sfn, machine, message), timeout_s=90)


def test_download_end_to_end(
    gateway: GatewayFactory, provider: Provider, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    data = os.urandom(700_000)
    provider.put("granule.h5", data)

    done = _run(gateway, provider, sfn, activity, download_message([(provider.url("granule.h5"), bucket, "g.h5")]))

    assert done["status"] == "SUCCEEDED", done
    (entry,) = json.loads(done["output"])["payload"]["files"]
    assert (entry["success"], entry["bytes"]) == (True, len(data))
    assert s3.get_object(Bucket=bucket, Key="g.h5")["Body"].read() == data


def test_missing_file_is_source_not_found(
    gateway: GatewayFactory, provider: Provider, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    done = _run(gateway, provider, sfn, activity, download_message([(provider.url("absent.h5"), bucket, "a.h5")]))

    assert (done["status"], done["error"]) == ("FAILED", "SourceNotFound"), done
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_refused_login_is_source_access_denied(
    gateway: GatewayFactory, provider: Provider, sfn: Any, bucket: str, activity: str
) -> None:
    provider.put("granule.h5", b"data")
    gateway(activity, provider.conn_config(False), provider_id=provider.kind.upper() + "_PROV")
    machine = create_state_machine(sfn, activity)

    done = wait_done(sfn, start(sfn, machine, download_message([(provider.url("granule.h5"), bucket, "g.h5")])))

    assert (done["status"], done["error"]) == ("FAILED", "SourceAccessDenied"), done
    assert "password" not in json.loads(done["cause"])["files"][0]["error"].lower() or provider.kind == "sftp"


def test_file_of_several_parts_arrives_whole(
    gateway: GatewayFactory, provider: Provider, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    data = os.urandom(3 * 5 * MiB + 12345)  # four parts of 5 MiB
    provider.put("large.nc", data)

    done = _run(
        gateway,
        provider,
        sfn,
        activity,
        download_message([(provider.url("large.nc"), bucket, "large.nc")]),
        part_size_mb=5,
    )

    assert done["status"] == "SUCCEEDED", done
    body = s3.get_object(Bucket=bucket, Key="large.nc")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_zero_byte_file(
    gateway: GatewayFactory, provider: Provider, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    provider.put("empty.txt", b"")

    done = _run(gateway, provider, sfn, activity, download_message([(provider.url("empty.txt"), bucket, "empty")]))

    assert done["status"] == "SUCCEEDED", done
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""


def test_name_with_spaces_and_non_ascii(
    gateway: GatewayFactory, provider: Provider, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    name = "données été 2026 (v2).h5" if provider.non_ascii_names else "granule 2026 (v2) #1.h5"
    data = os.urandom(4096)
    provider.put(name, data)
    message = {
        "payload": {"files": [{"source": {"url": provider.url(name)}, "target": "FROM_CONFIG"}]},
        "config": {"output": {"bucket": bucket, "key_prefix": "in"}},
    }

    done = _run(gateway, provider, sfn, activity, message)

    assert done["status"] == "SUCCEEDED", done
    assert s3.get_object(Bucket=bucket, Key=f"in/{name}")["Body"].read() == data


@pytest.mark.parametrize(
    ("source_extra", "words"),
    [
        ({"size": 3 * 5 * MiB}, "received more than the expected"),
        ({"checksum": {"type": "sha256", "value": "0" * 64}}, "sha256 is"),
    ],
    ids=["wrong-size", "wrong-checksum"],
)
def test_wrong_size_or_checksum_is_integrity_error_and_leaves_nothing(
    gateway: GatewayFactory,
    provider: Provider,
    sfn: Any,
    s3: Any,
    bucket: str,
    activity: str,
    source_extra: dict[str, Any],
    words: str,
) -> None:
    provider.put("large.nc", os.urandom(3 * 5 * MiB + 12345))  # the last part is where it shows
    message = download_message([(provider.url("large.nc"), bucket, "large.nc")], **source_extra)

    done = _run(gateway, provider, sfn, activity, message, part_size_mb=5)

    assert (done["status"], done["error"]) == ("FAILED", "IntegrityError"), done
    assert words in json.loads(done["cause"])["files"][0]["error"]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_data_ending_early_without_a_known_size_is_never_a_short_success(
    gateway: GatewayFactory, provider: Provider, sfn: Any, s3: Any, bucket: str, activity: str
) -> None:
    """The data stops partway and the request names no size: resumed to the exact bytes, or failed."""
    if provider.cut is None:
        # In CI every provider is the real server, which can be cut: a stand-in there is an error.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"the {provider.kind} test provider cannot break a transfer: {provider.notes}"
        )
    data = os.urandom(24 * MiB + 321)
    provider.put("cut.nc", data)
    happened = provider.cut("cut.nc", 9 * MiB)

    done = _run(
        gateway, provider, sfn, activity, download_message([(provider.url("cut.nc"), bucket, "cut.nc")]), part_size_mb=5
    )

    assert happened(), "the planned break never happened"
    if done["status"] == "SUCCEEDED":
        (entry,) = json.loads(done["output"])["payload"]["files"]
        assert entry["bytes"] == len(data), entry
        body = s3.get_object(Bucket=bucket, Key="cut.nc")["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest(), f"{len(body)} of {len(data)} bytes"
    else:
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket), done
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
