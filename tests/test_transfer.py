"""The stream the upload reads (the part sizes: test_part_schedule.py)."""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

import pytest

from provider_gateway.errors import GatewayShutdown, IntegrityError
from provider_gateway.messages import Checksum, FileRequest
from provider_gateway.transfer.copy import CopyOptions, copy_file
from provider_gateway.transfer.stream import TransferStream


class Dribble:
    """A source that returns at most ``step`` bytes per read, as sockets do."""

    def __init__(self, data: bytes, step: int = 1000) -> None:
        self.data, self.step, self.pos, self.size = data, step, 0, len(data)

    def read(self, amount: int) -> bytes:
        piece = self.data[self.pos : self.pos + min(amount, self.step)]
        self.pos += len(piece)
        return piece

    def close(self) -> None:
        pass


def test_reads_are_filled_so_parts_are_never_short() -> None:
    data = bytes(range(256)) * 40
    stream = TransferStream(Dribble(data), len(data), None, lambda: None)
    assert len(stream.read(4096)) == 4096
    assert len(stream.read(4096)) == 4096
    assert stream.read(4096) == data[8192:]
    assert stream.read(4096) == b""
    assert stream.bytes == len(data)


def test_checksum_is_computed_while_streaming_and_a_mismatch_raises_before_the_end() -> None:
    data = b"x" * 5000
    good = Checksum("sha256", hashlib.sha256(data).hexdigest())
    ok = TransferStream(Dribble(data), None, good, lambda: None)
    assert ok.read(-1) == data
    assert ok.checksum == good

    bad = TransferStream(Dribble(data), None, Checksum("md5", "0" * 32), lambda: None)
    with pytest.raises(IntegrityError, match="md5 is"):
        bad.read(10_000)
    assert isinstance(bad.error, IntegrityError)


@pytest.mark.parametrize(
    ("expected", "message"), [(6000, "received 5000 bytes, expected 6000"), (4000, "more than the expected 4000")]
)
def test_size_mismatch_is_an_integrity_error(expected: int, message: str) -> None:
    stream = TransferStream(Dribble(b"y" * 5000), expected, None, lambda: None)
    with pytest.raises(IntegrityError, match=message):
        stream.read(10_000)


def test_cancellation_is_raised_from_read() -> None:
    reason: list[GatewayShutdown] = []
    stream = TransferStream(Dribble(b"z" * 10_000), None, None, lambda: reason[0] if reason else None)
    assert stream.read(1000)
    reason.append(GatewayShutdown("stopping"))
    with pytest.raises(GatewayShutdown):
        stream.read(1000)


class _Buggy:
    """A connection with a bug: not a contract error, a plain exception."""

    def open(self, url: str, offset: int = 0) -> Any:
        raise KeyError("a bug inside the gateway")

    def check(self) -> bool:
        return True

    def close(self) -> None:
        pass


def test_a_bug_in_one_file_becomes_an_internal_error_result_with_its_traceback_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = FileRequest(index=0, url="http://h/f", bucket="b", key="k")

    with caplog.at_level(logging.ERROR):
        outcome = copy_file(
            _Buggy, request, s3=None, options=CopyOptions(), stop=threading.Event(), cancelled=lambda: None
        )

    assert (outcome.result.success, outcome.result.error_code) == (False, "GatewayInternalError")
    assert "KeyError" in str(outcome.result.error)
    assert any(record.exc_info for record in caplog.records)
