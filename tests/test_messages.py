"""Message parsing and output rules that need no server."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest

from provider_gateway.config.model import HttpConnConfig
from provider_gateway.errors import InvalidRequest
from provider_gateway.messages import (
    FileResult,
    parse_download_task,
    parse_sidecar,
    parse_sync_task,
    sync_output,
)
from provider_gateway.protocols import check_url

CHECK = functools.partial(check_url, HttpConnConfig(type="https", host="data.example.org"))
URL = "https://data.example.org/d/a.h5"
OUTPUT = {"config": {"output": {"bucket": "my-bucket", "key_prefix": "p"}}}


def download(files: list[dict[str, Any]], **extra: Any) -> str:
    return json.dumps({"payload": {"files": files}, **extra})


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ({"url": URL, "checksum": {"type": "sha256", "value": "abc"}}, "64-digit hex sha256"),
        ({"url": URL, "checksum": {"type": "crc32", "value": "abc"}}, "must be one of md5"),
        ({"url": URL, "checksum": {"type": "md5", "url": "https://elsewhere.org/a.md5"}}, "elsewhere.org"),
        ({"url": URL, "size": -1}, "non-negative integer"),
        ({"url": URL, "size": "12"}, "non-negative integer"),
    ],
)
def test_bad_sources_are_invalid_requests(source: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        parse_download_task(download([{"source": source, "target": {"bucket": "my-bucket", "key": "k"}}]), CHECK)


def test_placeholders_must_exist_in_the_message() -> None:
    message = download(
        [{"source": {"url": URL}, "target": "FROM_CONFIG"}],
        config={"output": {"bucket": "my-bucket", "key_prefix": "{meta.nope}"}},
        meta={},
    )
    with pytest.raises(InvalidRequest, match=r"placeholder \{meta.nope\}"):
        parse_download_task(message, CHECK)


def test_from_config_decodes_the_file_name() -> None:
    task = parse_download_task(
        download([{"source": {"url": "https://data.example.org/d/a%20b%C3%A9.h5"}, "target": "FROM_CONFIG"}], **OUTPUT),
        CHECK,
    )
    assert task.files[0].key == "p/a bé.h5"


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ({"payload": {"files": []}, **OUTPUT}, "non-empty list"),
        ({"payload": [{"url": URL, "version": "1"}]}, "SyncHttpUrls"),
        ({"payload": ["not an object"], **OUTPUT}, r"payload\[0\]"),
        ({"payload": [{"version": "1"}], **OUTPUT}, r"payload\[0\].source.url"),
    ],
)
def test_bad_sync_requests_are_invalid(message: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        parse_sync_task(json.dumps(message), CHECK)


def test_sync_output_lists_what_is_in_s3_and_says_when_nothing_was_new() -> None:
    task = parse_sync_task(json.dumps({"payload": [{"url": URL, "version": "1"}] * 2, **OUTPUT, "keep": 1}), CHECK)
    skipped = FileResult(success=True, version_skip=True)
    copied = FileResult(success=True, bytes=5)
    failed = FileResult(success=False, error_code="SourceNotFound", error="404")

    nothing_new = sync_output(task, [skipped, skipped])
    some_new = sync_output(task, [skipped, copied])
    one_failed = sync_output(task, [copied, failed])

    assert nothing_new["exception"] == "NotNeededWorkflowError"
    assert nothing_new["payload"] == [{"Bucket": "my-bucket", "Key": "p/a.h5"}] * 2
    assert "exception" not in some_new and some_new["keep"] == 1
    assert one_failed["exception"] == "RemoteResourceError"
    assert one_failed["payload"] == [{"Bucket": "my-bucket", "Key": "p/a.h5"}]


@pytest.mark.parametrize(
    "text",
    [
        b"d41d8cd98f00b204e9800998ecf8427e  a.h5\n",
        b"MD5 (a.h5) = D41D8CD98F00B204E9800998ECF8427E\n",
        b"d41d8cd98f00b204e9800998ecf8427e",
    ],
)
def test_sidecar_formats(text: bytes) -> None:
    assert parse_sidecar(text, "md5", "sidecar") == "d41d8cd98f00b204e9800998ecf8427e"


def test_sidecar_without_a_digest_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="no sha256 digest"):
        parse_sidecar(b"d41d8cd98f00b204e9800998ecf8427e  a.h5", "sha256", "sidecar")
