"""Multi-index-hashing grouping equals the brute-force answer."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.duplicates import group_near_duplicates, max_pairwise_distance, near_duplicate_pairs


def brute_pairs(hashes: dict[str, int], d: int) -> set[tuple[str, str]]:
    keys = sorted(hashes)
    return {(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :] if (hashes[a] ^ hashes[b]).bit_count() <= d}


@settings(max_examples=200, deadline=None)
@given(
    base=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=8),
    flips=st.lists(st.lists(st.integers(0, 63), max_size=10), max_size=30),
    distance=st.integers(0, 12),
)
def test_pairs_match_brute_force(base: list[int], flips: list[list[int]], distance: int) -> None:
    hashes = {f"b{i}": h for i, h in enumerate(base)}
    for j, bits in enumerate(flips):  # near neighbours of the base hashes
        h = base[j % len(base)]
        for bit in bits:
            h ^= 1 << bit
        hashes[f"n{j}"] = h
    assert near_duplicate_pairs(hashes, distance) == brute_pairs(hashes, distance)


def test_groups_are_connected_components() -> None:
    full = 2**64 - 1
    hashes = {"a": 0, "b": 0b111, "c": 0b111111, "d": full, "e": full ^ 1}
    assert group_near_duplicates(hashes, 3) == [["a", "b", "c"], ["d", "e"]]
    assert max_pairwise_distance(hashes, ["a", "b", "c"]) == 6
    assert group_near_duplicates(hashes, 0) == []
