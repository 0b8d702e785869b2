"""Near-duplicate grouping of 64-bit perceptual hashes.

Multi-index hashing: split the 64 bits into max_distance + 1 chunks; two hashes within the distance
differ in at most max_distance chunks, so they agree exactly on at least one (pigeonhole). Only
hashes sharing a chunk value are compared, which keeps a large collection far from n² work.
"""

from __future__ import annotations

from collections import defaultdict

BITS = 64


def _chunks(max_distance: int) -> list[tuple[int, int]]:
    count = min(BITS, max_distance + 1)
    bounds = [round(i * BITS / count) for i in range(count + 1)]
    return [(bounds[i], bounds[i + 1] - bounds[i]) for i in range(count)]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def near_duplicate_pairs(hashes: dict[str, int], max_distance: int) -> set[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()
    for start, width in _chunks(max_distance):
        mask = (1 << width) - 1
        buckets: dict[int, list[str]] = defaultdict(list)
        for key, value in hashes.items():
            buckets[(value >> start) & mask].append(key)
        for members in buckets.values():
            for i, a in enumerate(members):
                for b in members[i + 1 :]:
                    if (hashes[a] ^ hashes[b]).bit_count() <= max_distance:
                        pairs.add((a, b) if a < b else (b, a))
    return pairs


def group_near_duplicates(hashes: dict[str, int], max_distance: int) -> list[list[str]]:
    """Connected groups (size ≥ 2) of hashes within max_distance of a neighbour; largest first."""
    uf = _UnionFind()
    for a, b in near_duplicate_pairs(hashes, max_distance):
        uf.union(a, b)
    groups: dict[str, list[str]] = defaultdict(list)
    for key in uf.parent:
        groups[uf.find(key)].append(key)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


def max_pairwise_distance(hashes: dict[str, int], group: list[str]) -> int:
    return max(((hashes[a] ^ hashes[b]).bit_count() for i, a in enumerate(group) for b in group[i + 1 :]), default=0)
