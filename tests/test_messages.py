"""Message parsing and output rules that need no server."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest

from provider_gateway import json_input
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


def target_only(url: str, **extra: Any) -> str:
    return download([{"source": {"url": url}, "target": "FROM_CONFIG"}], **OUTPUT, **extra)


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/d/..", "names no file"),
        ("/d/%2e%2e", "names no file"),
        ("/d/.", "names no file"),
        ("/d/%2E", "names no file"),
        ("/d/a%00b.h5", r"control character '\\x00'"),
        ("/d/a%0Ab.h5", r"control character '\\n'"),
        ("/d/a%1Bb.h5", r"control character '\\x1b'"),
        ("/d/a%C2%85b.h5", r"control character '\\x85'"),
        ("/d/" + "n" * 1023, "at most 1024 bytes"),  # 1023 + "p/" is over
        ("/d/" + "%C3%A9" * 512, "at most 1024 bytes"),  # 512 characters, 1024 bytes, + "p/"
    ],
)
def test_from_config_keys_must_be_plain_file_names_within_s3s_limit(path: str, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words) as caught:
        parse_download_task(target_only("https://data.example.org" + path), CHECK)
    assert caught.value.message.startswith("payload.files[0].target")


def test_a_from_config_key_of_exactly_1024_bytes_is_taken() -> None:
    task = parse_download_task(target_only("https://data.example.org/d/" + "n" * 1022), CHECK)
    assert len(task.files[0].key.encode()) == 1024


@pytest.mark.parametrize("size", [5 * 1024**4 + 1, 10**30])
def test_a_size_over_5_tib_is_invalid(size: int) -> None:
    with pytest.raises(InvalidRequest, match="over S3's largest object, 5 TiB"):
        parse_download_task(
            download([{"source": {"url": URL, "size": size}, "target": "FROM_CONFIG"}], **OUTPUT), CHECK
        )


def test_a_size_of_exactly_5_tib_is_taken() -> None:
    message = download([{"source": {"url": URL, "size": 5 * 1024**4}, "target": "FROM_CONFIG"}], **OUTPUT)
    assert parse_download_task(message, CHECK).files[0].size == 5 * 1024**4


@pytest.mark.parametrize(
    "url",
    [
        "https://alice:pa55-w0rd@elsewhere.org/a.h5",  # not this provider's host
        "ftp://alice:pa55-w0rd@data.example.org/a.h5",  # not this provider's scheme
        "https://alice:pa55-w0rd@data.example.org/",  # names no file (FROM_CONFIG)
        "https://alice:pa55-w0rd@data.example.org/%00",  # a control character in the key
        "https://alice:pa55-w0rd@[data.example.org/a.h5",  # not even a URL
    ],
)
def test_a_password_in_a_task_url_is_never_in_the_message(url: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_download_task(target_only(url), CHECK)
    assert "pa55-w0rd" not in caught.value.message
    assert caught.value.message.startswith("payload.files[0]")


def test_a_password_in_a_sidecar_url_is_never_in_the_message() -> None:
    checksum = {"type": "md5", "url": "https://alice:pa55-w0rd@elsewhere.org/a.md5"}
    with pytest.raises(InvalidRequest, match=r"checksum\.url") as caught:
        parse_download_task(
            download([{"source": {"url": URL, "checksum": checksum}, "target": "FROM_CONFIG"}], **OUTPUT), CHECK
        )
    assert "pa55-w0rd" not in caught.value.message


class Pointers:
    """A pointer reader over a dict of objects, recording what was asked."""

    def __init__(self, objects: dict[tuple[str, str], bytes]) -> None:
        self.objects = objects
        self.asked: list[tuple[str, str, int]] = []

    def __call__(self, bucket: str, key: str, limit: int) -> bytes:
        self.asked.append((bucket, key, limit))
        return self.objects[(bucket, key)][:limit]


POINTED = json.dumps({"files": [{"source": {"url": URL}, "target": "FROM_CONFIG"}]}).encode()


@pytest.mark.parametrize(
    ("allowed", "payload_bucket", "followed"),
    [
        ((), None, False),
        ((), "pay-bucket", False),
        (("my-bucket",), None, False),
        (("my-bucket", "other-bucket"), None, True),
        (("my-bucket",), "other-bucket", True),
    ],
)
def test_pointers_are_followed_only_into_allowed_buckets_and_the_payload_bucket(
    allowed: tuple[str, ...], payload_bucket: str | None, followed: bool
) -> None:
    reader = Pointers({("other-bucket", "in/p.json"): POINTED})
    message = json.dumps({"payload": {"Bucket": "other-bucket", "Key": "in/p.json"}, **OUTPUT})

    def parse() -> Any:
        return parse_download_task(message, CHECK, allowed, read_pointer=reader, payload_bucket=payload_bucket)

    if followed:
        assert parse().files[0].key == "p/a.h5"
        assert reader.asked == [("other-bucket", "in/p.json", json_input.MAX_BYTES + 1)]
    else:
        with pytest.raises(InvalidRequest, match="S3 pointers are read only from allowed buckets"):
            parse()
        assert reader.asked == []


def test_a_pointer_over_the_cap_is_refused_after_reading_one_byte_more_than_it() -> None:
    huge = b'{"files": [' + b" " * (json_input.MAX_BYTES * 2) + b"]}"
    reader = Pointers({("pay-bucket", "big.json"): huge})
    message = json.dumps({"payload": {"Bucket": "pay-bucket", "Key": "big.json"}})

    with pytest.raises(InvalidRequest, match=f"'s3://pay-bucket/big.json' is over {json_input.MAX_BYTES} bytes"):
        parse_download_task(message, CHECK, read_pointer=reader, payload_bucket="pay-bucket")
    assert reader.asked[0][2] == json_input.MAX_BYTES + 1


def test_a_pointer_with_a_malformed_bucket_or_key_is_refused_unread() -> None:
    reader = Pointers({})
    for pointer, words in [
        ({"Bucket": {"x": 1}, "Key": "k"}, "payload.Bucket"),
        ({"Bucket": "pay-bucket", "Key": 5}, "payload.Key"),
    ]:
        with pytest.raises(InvalidRequest, match=words):
            parse_download_task(
                json.dumps({"payload": pointer}), CHECK, read_pointer=reader, payload_bucket="pay-bucket"
            )
    assert reader.asked == []
