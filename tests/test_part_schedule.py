"""The part schedule: any object up to 5 TiB fits S3's rules, and memory follows the bytes read."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from provider_gateway.transfer.part_schedule import (
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    UPLOAD_CONCURRENCY,
    GiB,
    MiB,
    PartSchedule,
)
from provider_gateway.transfer.s3upload import part_size_for

TiB = 1024 * GiB
sizes = st.one_of(
    st.integers(0, MAX_OBJECT_SIZE),
    st.integers(MAX_OBJECT_SIZE - 100 * GiB, MAX_OBJECT_SIZE),  # the hardest end
    st.sampled_from([MAX_OBJECT_SIZE, 10_000 * 5 * MiB, 10_000 * 5 * MiB + 1, 78 * GiB]),
)
minimums = st.one_of(st.sampled_from([5 * MiB, 8 * MiB]), st.integers(5, 6000).map(lambda n: n * MiB))


def parts_of(schedule: PartSchedule, total: int, first: int = MAX_PARTS + 1) -> list[tuple[int, int]]:
    """(bytes before, part size) of each part (the ``first`` ones) the upload loop sends for ``total`` bytes.

    Checks, at every part, that the part obeys S3's size rules and the memory limit.
    """
    parts: list[tuple[int, int]] = []
    done = 0
    while done < total and len(parts) < first:
        size = schedule.part_size(len(parts), done)
        assert MIN_PART_SIZE <= size <= MAX_PART_SIZE
        assert size <= schedule.limit(done), "a part larger than the bytes read allow"
        parts.append((done, min(size, total - done)))
        done += size
        assert len(parts) <= MAX_PARTS, f"{total} bytes need more than {MAX_PARTS} parts"
    return parts


@settings(max_examples=150, deadline=None)
@given(total=sizes, minimum=minimums, known=st.booleans())
def test_every_object_up_to_5_tib_fits_in_10000_parts_within_the_stated_memory(
    total: int, minimum: int, known: bool
) -> None:
    schedule = PartSchedule(minimum, total if known else None)
    parts = parts_of(schedule, total)

    assert sum(size for _, size in parts) == total
    assert all(size >= MIN_PART_SIZE for _, size in parts[:-1])
    largest = max((size for _, size in parts), default=0)
    follows = max(minimum, min(total // schedule.growth + MiB, 2 * GiB))  # the bytes read, not the claim
    assert largest <= follows
    # the loop holds at most slots x the largest part uploading, plus the part being read
    assert (schedule.slots(largest) + 1) * largest <= schedule.memory_bound(total) if largest else True
    assert schedule.memory_bound(total) <= (UPLOAD_CONCURRENCY + 1) * follows
    assert schedule.memory_bound(total) <= 2 * max(minimum, 2 * GiB)


@settings(max_examples=100, deadline=None)
@given(claimed=sizes, share=st.floats(0, 1), minimum=minimums)
def test_a_claimed_size_never_makes_parts_larger_than_without_one(claimed: int, share: float, minimum: int) -> None:
    # The stream fails the transfer once more bytes arrive than claimed: only a shorter file gets here.
    actual = int(claimed * share)
    unknown = PartSchedule(minimum)
    claim = PartSchedule(minimum, claimed)
    for (done, size), (same_done, unknown_size) in zip(
        parts_of(claim, actual, 300), parts_of(unknown, actual, 300), strict=False
    ):
        assert size <= claim.limit(done) == unknown.limit(done)
        if done == same_done:
            assert size <= unknown_size


def test_an_honest_known_size_gets_even_parts_of_about_a_ten_thousandth() -> None:
    total = 100 * GiB
    parts = parts_of(PartSchedule(8 * MiB, total), total)
    assert max(size for _, size in parts) <= 12 * MiB  # without the size: about 100 MiB
    assert max(size for _, size in parts_of(PartSchedule(8 * MiB), total)) >= 100 * MiB


def test_memory_figures_stated_in_the_docs() -> None:
    schedule = PartSchedule(8 * MiB)
    assert schedule.memory_bound(0) == 40 * MiB
    assert schedule.memory_bound(1000 * 8 * MiB) == 40 * MiB  # the first 1,000 parts
    assert schedule.memory_bound(100 * GiB) <= 360 * MiB
    assert schedule.memory_bound(5 * TiB) == 4 * GiB


def test_unknown_size_reaches_5_tib_in_under_10000_parts_from_the_smallest_minimum() -> None:
    parts = parts_of(PartSchedule(MIN_PART_SIZE), MAX_OBJECT_SIZE)
    assert len(parts) < MAX_PARTS
    # the old schedule (every part the minimum) stopped at 10,000 x 8 MiB = 78 GiB
    assert len(parts_of(PartSchedule(8 * MiB), 78 * GiB + 1)) < MAX_PARTS


def test_part_size_for_is_the_first_part_within_s3_limits() -> None:
    assert part_size_for(None, 8 * MiB) == 8 * MiB
    assert part_size_for(5 * TiB, 8 * MiB) == 8 * MiB
    assert part_size_for(None, 1) == MIN_PART_SIZE
    assert part_size_for(None, 10 * GiB) == MAX_PART_SIZE
