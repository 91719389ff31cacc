"""Writing a file into S3: one PutObject when it fits one part, else a multipart upload whose parts grow.

Any object up to S3's 5 TiB fits in its 10,000 parts, whether its size is known
or not (see :mod:`provider_gateway.transfer.part_schedule`). Memory per upload
follows the bytes read, not the size the request claims: at most
``min(4 x L, max(256 MiB, L)) + L`` bytes of parts, where ``L`` is the minimum
part size for the first 1,000 parts, then 1/1000 of the bytes read (at most
2 GiB); see :mod:`provider_gateway.transfer.multipart`. A gateway uses that per
connection.
"""

from __future__ import annotations

from typing import Any

from provider_gateway.transfer.multipart import CancelCheck, Target, put_object, send
from provider_gateway.transfer.part_body import Readable
from provider_gateway.transfer.part_schedule import MAX_PART_SIZE, MAX_PARTS, MiB, PartSchedule, clamp_part

__all__ = ["MAX_PARTS", "MAX_PART_SIZE", "MiB", "part_size_for", "put_small", "upload"]


def part_size_for(size: int | None, minimum: int) -> int:
    """The first part's size: ``minimum`` within S3's limits, whatever ``size`` is.

    A file of at most this size is sent with one PutObject. Later parts grow
    with the bytes read, so any size up to 5 TiB fits in 10,000 parts.
    """
    return clamp_part(minimum)


def upload(
    s3: Any,
    stream: Readable,
    bucket: str,
    key: str,
    part_size: int,
    metadata: dict[str, str] | None = None,
    *,
    size: int | None = None,
    cancelled: CancelCheck | None = None,
) -> None:
    """Stream ``stream`` to ``s3://bucket/key``; a failure leaves no object and no multipart upload behind.

    ``part_size`` is the first part's size (:func:`part_size_for`); ``size`` the
    announced size, if any (it can only make parts smaller); ``cancelled`` is asked
    while waiting for S3, so a cancel is not held up by a slow part. A failure
    raised from ``stream.read()`` (the source's, or a cancel) is re-raised as it was;
    a failure of S3 itself becomes TargetWriteFailed with S3's error code.
    """
    target = Target(bucket, key, metadata or {})
    send(s3, stream, target, PartSchedule(clamp_part(part_size), size), cancelled)


def put_small(s3: Any, body: bytes, bucket: str, key: str, metadata: dict[str, str] | None = None) -> None:
    """One PutObject for a file that fits in one part: no multipart calls."""
    put_object(s3, Target(bucket, key, metadata or {}), body)
