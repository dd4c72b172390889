"""The key ranges verify's shares read: together they cover every key, whatever bounds were found."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from task_components.verification.shares import ranges, split

BIG = 2**63


@given(st.integers(-BIG, BIG - 1), st.integers(0, 2**40), st.integers(1, 16))
def test_ranges_are_contiguous_and_open_at_both_ends(lo: int, width: int, parts: int) -> None:
    hi = min(lo + width, BIG - 1)
    got = ranges(lo, hi, parts, -BIG - 1, BIG - 1)
    assert got[0][0] == -BIG - 1 and got[-1][1] == BIG - 1, "the outer shares must be open-ended"
    assert all(a < b for a, b in got) and all(b == c for (_, b), (c, _) in itertools.pairwise(got)), got
    assert len(got) <= parts


def test_a_key_outside_the_bounds_found_is_still_in_a_share() -> None:
    """A shadow row moved far past the largest _row seen, or a Milvus key newer than the bounds, is read."""
    got = ranges(0, 999, 4, -BIG - 1, BIG - 1)
    for key in (-(2**63), -5, 0, 500, 999, 2**62 + 10, BIG - 1):
        assert sum(a < key <= b for a, b in got) == 1, key


def test_split_keeps_every_file_once_in_order() -> None:
    files = list(range(7))
    groups = split(files, 3)
    assert [f for g in groups for f in g] == files and len(groups) == 3
    assert split([], 4) == []
