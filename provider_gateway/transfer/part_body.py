"""A part's bytes kept as the pieces the source returned, sent to S3 without being copied.

Joining the pieces, or handing botocore a ``bytearray`` (which it wraps in a
``BytesIO`` when it sends a trailing checksum over HTTPS), would hold a part
twice. :class:`PartBody` reads straight from the pieces instead, so a part costs
its own bytes and no more.
"""

from __future__ import annotations

import bisect
import io
import itertools
from collections.abc import Callable
from typing import Any, Protocol


class Readable(Protocol):
    """What an upload reads: ``read(n)`` returns b"" only at the proven end of the file."""

    def read(self, amount: int) -> bytes: ...


class Part:
    """The bytes of one part, as read."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0

    def fill(self, stream: Readable, size: int, piece_size: int, check: Callable[[], None]) -> bool:
        """Read until the part holds ``size`` bytes; True if the stream ended first.

        ``check`` runs before each read and once the part is full.
        """
        while self.size < size:
            check()
            piece = stream.read(min(piece_size, size - self.size))
            if not piece:
                return True
            self.pieces.append(piece)
            self.size += len(piece)
        check()
        return False

    def body(self) -> PartBody:
        """A new file over the part, at its start (one per attempt: a retry starts over)."""
        return PartBody(self.pieces)


class PartBody(io.RawIOBase):
    """A seekable, read-only file over a list of byte strings."""

    def __init__(self, pieces: list[bytes]) -> None:
        super().__init__()
        self._pieces = pieces
        self._starts = list(itertools.accumulate((len(p) for p in pieces), initial=0))
        self._pos = 0

    def __len__(self) -> int:
        return self._starts[-1]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        index = bisect.bisect_right(self._starts, self._pos) - 1
        if index >= len(self._pieces):
            return 0
        start = self._pos - self._starts[index]
        piece = memoryview(self._pieces[index])[start:]
        target = memoryview(buffer).cast("B")
        count = min(len(target), len(piece))
        target[:count] = piece[:count]
        self._pos += count
        return count
