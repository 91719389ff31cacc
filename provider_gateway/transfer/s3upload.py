"""Streaming into S3 with ``upload_fileobj``, part size chosen from the file's size.

Memory: s3transfer holds at most ``max_in_memory_upload_chunks`` parts of a
non-seekable stream plus the one being read, so one transfer uses about
``(UPLOAD_CHUNKS_IN_MEMORY + 1) x part_size`` bytes; a gateway uses that per
connection, whatever the file size.
"""

from __future__ import annotations

import math
from typing import Any

from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from provider_gateway.errors import GatewayError, TargetWriteFailed
from provider_gateway.transfer.stream import TransferStream

MiB = 1024 * 1024
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * 1024 * MiB
UPLOAD_CONCURRENCY = 4
UPLOAD_CHUNKS_IN_MEMORY = 4


def part_size_for(size: int | None, minimum: int) -> int:
    """The smallest whole-MiB part size >= ``minimum`` that fits ``size`` in 10,000 parts.

    With an unknown size the object is capped at 10,000 x ``minimum``.
    """
    if size is None:
        return minimum
    needed = math.ceil(size / MAX_PARTS / MiB) * MiB
    return min(max(minimum, needed), MAX_PART_SIZE)


def transfer_config(part_size: int) -> TransferConfig:
    """The explicit TransferConfig every upload uses."""
    config = TransferConfig(
        multipart_threshold=part_size,
        multipart_chunksize=part_size,
        max_concurrency=UPLOAD_CONCURRENCY,
        use_threads=True,
    )
    # boto3's TransferConfig does not take this s3transfer setting as an argument.
    config.max_in_memory_upload_chunks = UPLOAD_CHUNKS_IN_MEMORY
    return config


def upload(
    s3: Any,
    stream: TransferStream,
    bucket: str,
    key: str,
    part_size: int,
    metadata: dict[str, str] | None = None,
) -> None:
    """Stream ``stream`` to ``s3://bucket/key``; a failure leaves no object behind.

    A source failure raised from ``stream.read()`` is re-raised as it was; a
    failure of S3 itself becomes TargetWriteFailed.
    """
    extra: dict[str, Any] = {"Metadata": metadata} if metadata else {}
    try:
        s3.upload_fileobj(stream, bucket, key, ExtraArgs=extra, Config=transfer_config(part_size))
    except GatewayError:
        raise
    except (ClientError, S3UploadFailedError, BotoCoreError) as exc:
        if stream.error is not None:
            raise stream.error from exc
        raise TargetWriteFailed(f"writing s3://{bucket}/{key} failed: {exc}") from exc
    if stream.error is not None:  # s3transfer swallowed it: never report success then
        raise stream.error


def put_small(s3: Any, body: bytes, bucket: str, key: str, metadata: dict[str, str] | None = None) -> None:
    """One PutObject for a file that fits in one part: no transfer manager, no multipart calls."""
    extra: dict[str, Any] = {"Metadata": metadata} if metadata else {}
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)
    except (ClientError, BotoCoreError) as exc:
        raise TargetWriteFailed(f"writing s3://{bucket}/{key} failed: {exc}") from exc
