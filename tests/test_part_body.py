"""A part is sent from the pieces the source returned: the file over them behaves as its joined bytes would."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from provider_gateway.transfer.part_body import Part, PartBody

pieces = st.lists(st.binary(min_size=1, max_size=300), max_size=8)
moves = st.lists(
    st.tuples(st.sampled_from(["read", "seek0", "seek1", "seek2", "readall"]), st.integers(-50, 400)), max_size=20
)


@given(parts=pieces, steps=moves)
def test_the_body_reads_and_seeks_as_the_joined_bytes(parts: list[bytes], steps: list[tuple[str, int]]) -> None:
    body, joined = PartBody(parts), io.BytesIO(b"".join(parts))
    assert len(body) == len(joined.getvalue())
    for step, n in steps:
        if step == "read":
            want = joined.read(max(n, 0))
            got = b""
            while len(got) < len(want):  # a raw read may be short at a piece's edge
                got += body.read(len(want) - len(got))
            assert got == want
        elif step == "readall":
            assert body.read() == joined.read()
        else:
            whence = int(step[-1])
            offset = max(n, 0) if whence == io.SEEK_SET else n
            assert body.seek(offset, whence) == joined.seek(offset, whence)
        assert body.tell() == joined.tell()


class Pieces:
    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.pos = data, step, 0

    def read(self, amount: int) -> bytes:
        piece = self.data[self.pos : self.pos + min(amount, self.step)]
        self.pos += len(piece)
        return piece


@given(data=st.binary(max_size=2000), size=st.integers(1, 700), step=st.integers(1, 300))
def test_a_part_holds_the_pieces_themselves_and_no_more_than_its_size(data: bytes, size: int, step: int) -> None:
    source, part, checks = Pieces(data, step), Part(), []

    ended = part.fill(source, size, 128, lambda: checks.append(part.size))

    assert b"".join(part.pieces) == data[:size] == part.body().read()
    assert part.size == min(size, len(data))
    assert ended == (len(data) < size)
    assert ended or checks[-1] == part.size  # checked once full
