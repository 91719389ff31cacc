"""The file-list and download handlers, called as Lambda calls them, against real servers and the local S3."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provider_gateway.errors import ConfigError
from provider_gateway.lambdas.download import download
from provider_gateway.lambdas.environment import LambdaError
from provider_gateway.lambdas.files import list_files
from provider_gateway.local.http_server import FileHTTPServer
from tests.support import unique, write_config

MiB = 1024 * 1024
ARN = "arn:aws:states:us-east-1:123456789012:activity:prov"


class Context:
    """The Lambda context: how long the invocation has left."""

    def __init__(self, remaining_s: float) -> None:
        self.remaining_ms = int(remaining_s * 1000)

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def provider(tmp_path: Path, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[FileHTTPServer]:
    """An HTTP provider with basic auth, configured as PROV in GATEWAY_CONFIG."""
    with FileHTTPServer(basic_auth=("prov", "secret")) as server:
        conn = {"type": "http", "host": server.host, "username": "prov", "password": "secret"}
        config = write_config(
            tmp_path / f"{unique('c')}.yml",
            [{"id": "PROV", "gateway_config": {"activity_arn": ARN, "conn_config": conn, "num_connections": 2}}],
        )
        for name, value in {**aws_env, "GATEWAY_CONFIG": str(config), "LAMBDA_MAX_BYTES": "5000000"}.items():
            monkeypatch.setenv(name, value)
        yield server


def test_list_files_fetches_the_list_with_the_providers_login_and_routes_each_file(
    provider: FileHTTPServer,
) -> None:
    checksum = {"type": "md5", "value": "0" * 32}
    listing = [
        provider.url("/d/a.h5"),
        {"url": provider.url("/d/b.h5"), "size": 7, "version": "2", "checksum": checksum},
    ]
    provider.files["/d/list.json"] = json.dumps(listing).encode()
    event = {
        "provider": "PROV",
        "callback": {"status": "ready", "files_url": provider.url("/d/list.json")},
        "target": {"bucket": "dest", "key_prefix": "/in/PROV/"},
    }
    out = list_files(event)
    assert out["count"] == 2 and out["lambda_max_bytes"] == 5_000_000
    first, second = out["files"]
    assert (first["key"], first["size"], first["connection_limited"]) == ("in/PROV/a.h5", -1, True)
    assert second["size"] == 7
    assert second["task"] == {
        "payload": {
            "files": [
                {
                    "type": "download",
                    "source": {"url": provider.url("/d/b.h5"), "size": 7, "version": "2", "checksum": checksum},
                    "target": {"bucket": "dest", "key": "in/PROV/b.h5"},
                }
            ]
        },
        "provider": "PROV",
    }
    assert second["batch"]["target"] == "s3://dest/in/PROV/b.h5"
    assert second["batch"]["checksum"] == "md5:" + "0" * 32
    assert all(isinstance(v, str) for v in second["batch"].values()), "AWS Batch parameters are strings"
    unlimited = list_files({**event, "use_gateway": False})
    assert [f["connection_limited"] for f in unlimited["files"]] == [False, False]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["http://elsewhere.test/x.h5"], "not this provider's host"),
        ([{"size": 3}], "file list [0]: must be a URL"),
        ("not a list", "must be a JSON list"),
    ],
)
def test_list_files_refuses_a_bad_list_whole(provider: FileHTTPServer, files: Any, message: str) -> None:
    event = {"provider": "PROV", "callback": {"files": files}, "target": {"bucket": "dest"}}
    with pytest.raises(LambdaError) as raised:
        list_files(event)
    assert type(raised.value).__name__ == "InvalidRequest"
    assert message in str(raised.value)


def test_download_streams_one_file_and_raises_the_contract_code_on_failure(
    provider: FileHTTPServer, s3: Any, bucket: str
) -> None:
    provider.files["/d/a.h5"] = data = b"x" * (3 * MiB)

    def task(path: str) -> dict[str, Any]:
        entry = {"source": {"url": provider.url(path)}, "target": {"bucket": bucket, "key": path[1:]}}
        return {"provider": "PROV", "task": {"payload": {"files": [entry]}}}

    line = download(task("/d/a.h5"), Context(900))
    assert line["success"] is True and line["bytes"] == len(data)
    assert s3.get_object(Bucket=bucket, Key="d/a.h5")["Body"].read() == data
    with pytest.raises(LambdaError) as raised:
        download(task("/d/missing.h5"), Context(900))
    assert type(raised.value).__name__ == "SourceNotFound"


def test_download_near_the_lambda_time_limit_aborts_cleanly_for_batch_to_take_over(
    provider: FileHTTPServer, s3: Any, bucket: str
) -> None:
    provider.files["/d/slow.h5"] = b"s" * (8 * MiB)
    provider.rate = 2 * MiB  # 4 s for the file; the invocation has 1 s before its safety margin
    entry = {"source": {"url": provider.url("/d/slow.h5")}, "target": {"bucket": bucket, "key": "slow.h5"}}
    with pytest.raises(LambdaError) as raised:
        download({"provider": "PROV", "task": {"payload": {"files": [entry]}}}, Context(21))
    assert type(raised.value).__name__ == "GatewayShutdown"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"files: a, b", "is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 100 levels"),
        (b'["\\udfff"]', "lone surrogate"),
    ],
)
def test_list_files_refuses_a_bad_fetched_list_without_echoing_the_password(
    provider: FileHTTPServer, body: bytes, words: str
) -> None:
    provider.files["/d/list.json"] = body
    files_url = provider.url("/d/list.json").replace("://", "://prov:secret@")
    event = {"callback": {"files_url": files_url}, "target": {"bucket": "dest"}}  # no provider: the URL's own login

    with pytest.raises(LambdaError) as raised:
        list_files(event)

    assert type(raised.value).__name__ == "InvalidRequest"
    assert words in str(raised.value)
    assert "secret" not in str(raised.value)
    assert "***@" in str(raised.value)


def test_list_files_names_a_url_without_its_password_when_it_names_no_file(provider: FileHTTPServer) -> None:
    url = provider.url("/d/").replace("://", "://prov:secret@")
    with pytest.raises(LambdaError) as raised:
        list_files({"callback": {"files": [url]}, "target": {"bucket": "dest"}})
    assert "names no file" in str(raised.value)
    assert "secret" not in str(raised.value)


def test_the_handlers_need_only_their_providers_secrets(
    tmp_path: Path, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, s3: Any, bucket: str
) -> None:
    with FileHTTPServer(basic_auth=("prov", "pw-from-env")) as server:
        conn = {"type": "http", "host": server.host, "username": "prov", "password": "${PROV_PASSWORD}"}
        other = {"type": "http", "host": "other.test", "token": "${OTHER_TOKEN_NOT_SET}"}
        document = {
            "providers": [
                {"id": "OTHER", "config": {"gateway_config": {"activity_arn": ARN, "conn_config": other}}},
                {
                    "id": "PROV",
                    "config": {"gateway_config": {"activity_arn": ARN, "conn_config": conn, "num_connections": 1}},
                },
                {"id": "X", "config": {"some_other_component": {"password": "${OTHER_COMPONENT_SECRET}"}}},
            ]
        }
        config = tmp_path / f"{unique('shared')}.yml"
        config.write_text(json.dumps(document))
        for name, value in {**aws_env, "GATEWAY_CONFIG": str(config), "PROV_PASSWORD": "pw-from-env"}.items():
            monkeypatch.setenv(name, value)
        for name in ("OTHER_TOKEN_NOT_SET", "OTHER_COMPONENT_SECRET"):
            monkeypatch.delenv(name, raising=False)
        server.files["/d/a.h5"] = b"abc"
        entry = {"source": {"url": server.url("/d/a.h5")}, "target": {"bucket": bucket, "key": "a.h5"}}

        listed = list_files(
            {"provider": "PROV", "callback": {"files": [server.url("/d/a.h5")]}, "target": {"bucket": bucket}}
        )
        line = download({"provider": "PROV", "task": {"payload": {"files": [entry]}}}, Context(900))
        with pytest.raises(ConfigError, match="OTHER_TOKEN_NOT_SET is not set"):
            list_files({"provider": "OTHER", "callback": {"files": []}, "target": {"bucket": bucket}})

    assert listed["files"][0]["connection_limited"] is True
    assert line["success"] is True
    assert s3.get_object(Bucket=bucket, Key="a.h5")["Body"].read() == b"abc"
