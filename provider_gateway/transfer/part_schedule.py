"""How large each part of a multipart upload is, and how much of it may be in memory.

S3 takes parts of different sizes: each at most 5 GiB, all but the last at least
5 MiB, at most 10,000 of them, an object at most 5 TiB. The part size therefore
grows with the bytes already read, so that an object of unknown size can reach
5 TiB while a small one never holds more than a few minimum parts:

- a part is the larger of the minimum part size and 1/``GROWTH`` of the bytes
  before it (rounded up to a whole MiB), but never above ``PART_CEILING`` (unless
  the minimum itself is larger) nor S3's 5 GiB;
- with a known size, a part is no larger than what spreads the rest evenly over
  the parts left, so an honest size gets even parts of about size / 10,000.

The known size can only make parts smaller, never larger: a request claiming
5 TiB for a small file costs no more memory than an honest one. Every part is at
most :meth:`PartSchedule.limit` of the bytes read before it, which is what the
memory bound of :mod:`provider_gateway.transfer.multipart` rests on.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
GiB = 1024 * MiB
MAX_PARTS = 10_000
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_OBJECT_SIZE = 5 * 1024 * GiB
GROWTH = 1000
PART_CEILING = 2 * GiB
# Parts uploading at once: UPLOAD_CONCURRENCY while they are small, fewer once
# UPLOAD_BUFFER would be exceeded, and always at least one.
UPLOAD_CONCURRENCY = 4
UPLOAD_BUFFER = 256 * MiB


def _whole_mib(n: int) -> int:
    return -(-n // MiB) * MiB


def clamp_part(size: int) -> int:
    """``size`` within S3's part limits (5 MiB to 5 GiB)."""
    return min(max(size, MIN_PART_SIZE), MAX_PART_SIZE)


@dataclass(frozen=True)
class PartSchedule:
    """The part sizes of one upload: ``minimum`` first (within S3's limits), growing with the bytes read.

    ``size`` is the size the request or the source announced (None if unknown);
    ``growth`` and ``ceiling`` are :data:`GROWTH` and :data:`PART_CEILING` (tests
    pass others to see the growth on small objects).
    """

    minimum: int
    size: int | None = None
    growth: int = GROWTH
    ceiling: int = PART_CEILING

    def limit(self, bytes_read: int) -> int:
        """The largest part that may follow ``bytes_read`` bytes, whatever the size claims."""
        grown = min(_whole_mib(bytes_read // self.growth), self.ceiling)
        return clamp_part(max(self.minimum, grown))

    def part_size(self, parts_done: int, bytes_done: int) -> int:
        """The size of the part after ``parts_done`` parts holding ``bytes_done`` bytes."""
        limit = self.limit(bytes_done)
        if self.size is None or parts_done >= MAX_PARTS or bytes_done >= self.size:
            return limit
        even = _whole_mib(-(-(self.size - bytes_done) // (MAX_PARTS - parts_done)))
        return clamp_part(max(self.minimum, min(limit, even)))

    def slots(self, largest_part: int) -> int:
        """How many parts may upload at once while the largest part so far is ``largest_part``."""
        return max(1, min(UPLOAD_CONCURRENCY, UPLOAD_BUFFER // largest_part))

    def memory_bound(self, bytes_read: int) -> int:
        """The most part bytes one upload holds once ``bytes_read`` bytes have been read.

        With ``L`` the largest part so far (at most :meth:`limit`), the parts uploading
        hold at most ``slots(L) x L`` <= ``min(UPLOAD_CONCURRENCY x L, max(UPLOAD_BUFFER, L))``,
        and the part being read at most ``L`` more.
        """
        largest = self.limit(bytes_read)
        return min(UPLOAD_CONCURRENCY * largest, max(UPLOAD_BUFFER, largest)) + largest
