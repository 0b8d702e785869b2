"""Reciprocal rank fusion (`Pipeline._fuse`) on hand-made candidate lists."""

from __future__ import annotations

import copy

import pytest
from google.protobuf import struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from lookalike.v1 import retriever_service_pb2 as pb
from services.gateway.pipeline import DEFAULT_RRF_K, Candidate, Pipeline

LABEL = "fuse[2]"


def cand(id_: str, score: float = 0.0, stage: str = "feature_search[0]", **extra: object) -> Candidate:
    c = Candidate(id=id_, object=f"namespaces/ns/buckets/b/objects/{id_}", filename=f"{id_}.jpg", metadata=struct_pb2.Struct(), score=score)
    c.stage_scores[stage] = score
    for key, value in extra.items():
        setattr(c, key, value)
    return c


def search(stage: str, *ids: str) -> list[Candidate]:
    """A result list, best first, with descending similarity scores."""
    return [cand(i, score=1.0 - n / 10, stage=stage) for n, i in enumerate(ids)]


def fuse(searches: list[list[Candidate]], k: int = 0, limit: int = 0) -> list[Candidate]:
    return Pipeline._fuse(LABEL, pb.FuseStage(k=k, limit=limit), searches)


def rrf(ranks: list[int], k: int = DEFAULT_RRF_K) -> float:
    return sum(1.0 / (k + r) for r in ranks)


def test_default_k_is_60() -> None:
    assert DEFAULT_RRF_K == 60


def test_rank_order_and_scores() -> None:
    a = search("feature_search[0]", "x", "y", "z")
    b = search("feature_search[1]", "y", "w", "x")
    out = fuse([a, b])
    # y: ranks 2 and 1; x: 1 and 3; w: 2; z: 3
    assert [c.id for c in out] == ["y", "x", "w", "z"]
    expected = {"y": rrf([2, 1]), "x": rrf([1, 3]), "w": rrf([2]), "z": rrf([3])}
    assert {c.id: c.score for c in out} == pytest.approx(expected)
    for c in out:
        assert c.stage_scores[LABEL] == pytest.approx(expected[c.id])


def test_stage_scores_merged_from_every_search() -> None:
    a = search("feature_search[0]", "x", "y")
    b = search("feature_search[1]", "y", "x")
    out = {c.id: c for c in fuse([a, b])}
    assert out["x"].stage_scores == pytest.approx({"feature_search[0]": 1.0, "feature_search[1]": 0.9, LABEL: rrf([1, 2])})
    assert out["y"].stage_scores == pytest.approx({"feature_search[0]": 0.9, "feature_search[1]": 1.0, LABEL: rrf([2, 1])})


def test_only_in_one_search_keeps_its_own_scores() -> None:
    out = {c.id: c for c in fuse([search("feature_search[0]", "x"), search("feature_search[1]", "y")])}
    assert set(out["x"].stage_scores) == {"feature_search[0]", LABEL}
    assert set(out["y"].stage_scores) == {"feature_search[1]", LABEL}


def test_k_parameter() -> None:
    a = search("feature_search[0]", "x", "y")
    b = search("feature_search[1]", "y", "x")
    out = fuse([a, b], k=1)
    assert {c.id: c.score for c in out} == pytest.approx({"x": 1 / 2 + 1 / 3, "y": 1 / 3 + 1 / 2})
    # a small k lets one first place beat two middling ranks; a large k favours agreement
    a = search("feature_search[0]", "solo", "p", "p2", "both")
    b = search("feature_search[1]", "q", "r", "both")
    assert fuse([a, b], k=1)[0].id == "solo"  # 1/2 > 1/5 + 1/4
    assert fuse([a, b], k=60)[0].id == "both"  # 1/64 + 1/63 > 1/61


def test_limit() -> None:
    a = search("feature_search[0]", "a", "b", "c", "d")
    b = search("feature_search[1]", "d", "c", "e")
    full = fuse([a, b])
    assert len(full) == 5
    top2 = fuse([a, b], limit=2)
    assert [c.id for c in top2] == [c.id for c in full[:2]]
    assert len(fuse([a, b], limit=100)) == 5


def test_ties_keep_first_seen_order() -> None:
    out = fuse([search("feature_search[0]", "a", "b"), search("feature_search[1]", "b", "a")])
    assert [c.id for c in out] == ["a", "b"]
    assert out[0].score == out[1].score


def test_empty() -> None:
    assert fuse([]) == []
    assert fuse([[], []]) == []
    assert [c.id for c in fuse([[], search("feature_search[1]", "a")])] == ["a"]


def test_other_fields_come_from_the_first_search() -> None:
    a = [cand("x", 0.9, "feature_search[0]", inlier_count=0)]
    b = [cand("x", 0.5, "feature_search[1]", inlier_count=7)]
    b[0].filename = "other.jpg"
    (out,) = fuse([a, b])
    assert out.filename == "x.jpg" and out.object.endswith("/x")


def test_inputs_not_mutated() -> None:
    """The search lists stay as their stages left them (a later fuse reads them again)."""
    a = search("feature_search[0]", "x", "y")
    b = search("feature_search[1]", "y", "x")
    before = copy.deepcopy([a, b])
    fuse([a, b])
    assert [[(c.id, c.score, c.stage_scores) for c in s] for s in [a, b]] == [
        [(c.id, c.score, c.stage_scores) for c in s] for s in before
    ]


def test_fusing_twice_gives_the_same_result() -> None:
    searches = [search("feature_search[0]", "x", "y", "z"), search("feature_search[1]", "z", "x")]
    first = [(c.id, c.score, dict(c.stage_scores)) for c in fuse(searches)]
    second = [(c.id, c.score, dict(c.stage_scores)) for c in fuse(searches)]
    assert first == second


@given(st.lists(st.lists(st.sampled_from("abcdefghij"), unique=True, max_size=10), max_size=4), st.integers(0, 100), st.integers(0, 12))
def test_rrf_property(lists: list[list[str]], k: int, limit: int) -> None:
    searches = [search(f"feature_search[{n}]", *ids) for n, ids in enumerate(lists)]
    out = fuse(searches, k=k, limit=limit)
    kk = k or DEFAULT_RRF_K
    expected = {}
    for ids in lists:
        for rank, i in enumerate(ids, start=1):
            expected[i] = expected.get(i, 0.0) + 1.0 / (kk + rank)
    everyone = len(expected)
    assert len(out) == (min(limit, everyone) if limit else everyone)
    assert len({c.id for c in out}) == len(out)
    assert [c.score for c in out] == sorted((c.score for c in out), reverse=True)
    for c in out:
        assert c.score == pytest.approx(expected[c.id])
        assert {label for label in c.stage_scores if label != LABEL} == {
            f"feature_search[{n}]" for n, ids in enumerate(lists) if c.id in ids
        }
    # whatever was cut scored no better than the last kept
    if out and limit:
        kept = {c.id for c in out}
        assert all(score <= out[-1].score + 1e-12 for i, score in expected.items() if i not in kept)


def test_weights_scale_each_search() -> None:
    from lookalike.v1 import retriever_service_pb2 as rpb
    from services.gateway.pipeline import Candidate, Pipeline
    from google.protobuf import struct_pb2

    def cand(i: str) -> Candidate:
        return Candidate(i, f"o/{i}", f"{i}.jpg", struct_pb2.Struct(), 0.0)

    first, second = [cand("a"), cand("b")], [cand("b"), cand("a")]
    equal = Pipeline._fuse("fuse", rpb.FuseStage(k=10), [first, second])
    assert equal[0].score == equal[1].score
    weighted = Pipeline._fuse("fuse", rpb.FuseStage(k=10, weights=[1.0, 0.25]), [first, second])
    assert [c.id for c in weighted] == ["a", "b"]
    assert weighted[0].score == 1 / 11 + 0.25 / 12
