"""The bench's discarding S3 sink answers S3's part rules as S3 does, and takes the upload loop's parts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from bench.s3sink import S3Sink
from provider_gateway.transfer.multipart import Target, send
from provider_gateway.transfer.part_schedule import MiB, PartSchedule

MIN = 5 * MiB


@pytest.fixture
def sink() -> Iterator[S3Sink]:
    server = S3Sink()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def s3(sink: S3Sink) -> Any:
    return boto3.client(
        "s3", endpoint_url=sink.endpoint, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )


class Zeros:
    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, amount: int) -> bytes:
        amount = min(amount, self.left)
        self.left -= amount
        return bytes(amount)


def parts(s3: Any, upload_id: str, sizes: list[int], first: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "PartNumber": number,
            "ETag": s3.upload_part(Bucket="b", Key="k", UploadId=upload_id, PartNumber=number, Body=bytes(size))[
                "ETag"
            ],
        }
        for number, size in enumerate(sizes, first)
    ]


def error_code(call: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    return str(raised.value.response["Error"]["Code"])


def test_the_upload_loop_into_the_sink_counts_every_byte_in_growing_parts(sink: S3Sink, s3: Any) -> None:
    total = 83 * MiB + 1
    sent = send(s3, Zeros(total), Target("b", "grown"), PartSchedule(MIN, growth=1))

    assert sink.completed[-1].key == "grown"
    assert (sink.completed[-1].parts, sink.completed[-1].size) == (sent.parts, total)
    assert sink.completed[-1].largest_part == 40 * MiB  # 5, 5, 10, 20, 40, then the 3 MiB left
    assert sink.received == total and sink.open_uploads == 0 and sink.refused == []


@pytest.mark.parametrize(
    ("sizes", "code"),
    [([MIN, MiB, MIN], "EntityTooSmall"), ([MiB, MIN], "EntityTooSmall"), ([MIN, MIN, MiB], None), ([MiB], None)],
)
def test_a_part_under_5_mib_is_refused_unless_it_is_the_last(s3: Any, sizes: list[int], code: str | None) -> None:
    upload_id = s3.create_multipart_upload(Bucket="b", Key="k")["UploadId"]
    listed = parts(s3, upload_id, sizes)

    def complete() -> None:
        s3.complete_multipart_upload(Bucket="b", Key="k", UploadId=upload_id, MultipartUpload={"Parts": listed})

    if code is None:
        complete()
    else:
        assert error_code(complete) == code


def test_part_numbers_beyond_10000_and_unknown_uploads_are_refused(sink: S3Sink, s3: Any) -> None:
    upload_id = s3.create_multipart_upload(Bucket="b", Key="k")["UploadId"]
    assert parts(s3, upload_id, [1], first=10_000)
    assert error_code(lambda: parts(s3, upload_id, [1], first=10_001)) == "InvalidArgument"
    assert error_code(lambda: parts(s3, upload_id, [1], first=0)) == "InvalidArgument"
    s3.abort_multipart_upload(Bucket="b", Key="k", UploadId=upload_id)
    assert error_code(lambda: parts(s3, upload_id, [1])) == "NoSuchUpload"
    assert sink.open_uploads == 0


def test_parts_listed_out_of_order_or_never_sent_are_refused(s3: Any) -> None:
    upload_id = s3.create_multipart_upload(Bucket="b", Key="k")["UploadId"]
    listed = parts(s3, upload_id, [MIN, MIN])

    def complete(listing: list[dict[str, Any]]) -> Any:
        return lambda: s3.complete_multipart_upload(
            Bucket="b", Key="k", UploadId=upload_id, MultipartUpload={"Parts": listing}
        )

    assert error_code(complete(listed[::-1])) == "InvalidPartOrder"
    assert error_code(complete([*listed, {"PartNumber": 3, "ETag": '"' + os.urandom(16).hex() + '"'}])) == "InvalidPart"
