"""Index specs → Milvus index/search parameters (services/search/indexing.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lookalike.errors import InvalidArgument
from lookalike.v1 import types_pb2 as t
from lookalike.vectorindex import IndexParams
from services.search.indexing import HNSW_DEFAULTS, IVF_PQ_DEFAULTS, default_pq_m, index_params, with_search_overrides


def extractor(dimension: int = 1280, metric: int = t.METRIC_COSINE, vector_type: int = t.VECTOR_TYPE_FLOAT, name: str = "effnet") -> t.ExtractorInfo:
    return t.ExtractorInfo(name=name, dimension=dimension, metric=metric, vector_type=vector_type)


def hnsw(m: int = 0, ef_construction: int = 0, ef: int = 0) -> t.IndexSpec:
    return t.IndexSpec(type=t.INDEX_TYPE_HNSW, hnsw=t.HnswParams(m=m, ef_construction=ef_construction, ef=ef))


def ivf_pq(nlist: int = 0, m: int = 0, nbits: int = 0, nprobe: int = 0) -> t.IndexSpec:
    return t.IndexSpec(type=t.INDEX_TYPE_IVF_PQ, ivf_pq=t.IvfPqParams(nlist=nlist, m=m, nbits=nbits, nprobe=nprobe))


PHASH = extractor(64, t.METRIC_HAMMING, t.VECTOR_TYPE_BINARY, "phash")


# ---- defaults -------------------------------------------------------------------------------------

def test_defaults_are_hnsw() -> None:
    expected = IndexParams("HNSW", "COSINE", {"M": 16, "efConstruction": 200}, {"ef": 128})
    assert index_params(extractor(), t.IndexSpec()) == expected
    assert index_params(extractor(), hnsw()) == expected
    assert HNSW_DEFAULTS == {"M": 16, "efConstruction": 200, "ef": 128}


@pytest.mark.parametrize(
    "metric,name", [(t.METRIC_COSINE, "COSINE"), (t.METRIC_INNER_PRODUCT, "IP"), (t.METRIC_L2, "L2")]
)
def test_metrics(metric: int, name: str) -> None:
    assert index_params(extractor(metric=metric), t.IndexSpec()).metric == name
    assert index_params(extractor(metric=metric), ivf_pq()).metric == name
    assert index_params(extractor(metric=metric), t.IndexSpec(type=t.INDEX_TYPE_FLAT)).metric == name


def test_missing_metric_refused() -> None:
    with pytest.raises(InvalidArgument):
        index_params(extractor(metric=t.METRIC_UNSPECIFIED), t.IndexSpec())
    with pytest.raises(InvalidArgument):
        index_params(extractor(metric=99), t.IndexSpec())


def test_hamming_needs_a_binary_extractor() -> None:
    with pytest.raises(InvalidArgument):
        index_params(extractor(metric=t.METRIC_HAMMING), t.IndexSpec())


@pytest.mark.parametrize("metric", [t.METRIC_COSINE, t.METRIC_L2, t.METRIC_INNER_PRODUCT])
def test_binary_extractor_needs_hamming(metric: int) -> None:
    with pytest.raises(InvalidArgument):
        index_params(extractor(64, metric, t.VECTOR_TYPE_BINARY, "phash"), t.IndexSpec())


@pytest.mark.parametrize("spec", [t.IndexSpec(), hnsw(m=32), ivf_pq(nlist=7), t.IndexSpec(type=t.INDEX_TYPE_FLAT)])
def test_binary_extractor_is_bin_flat_hamming(spec: t.IndexSpec) -> None:
    """pHash is compared exactly by Hamming distance, whatever index the collection asks for."""
    assert index_params(PHASH, spec) == IndexParams("BIN_FLAT", "HAMMING", {}, {})


def test_flat() -> None:
    assert index_params(extractor(metric=t.METRIC_L2), t.IndexSpec(type=t.INDEX_TYPE_FLAT)) == IndexParams("FLAT", "L2", {}, {})


def test_unknown_index_type_refused() -> None:
    with pytest.raises(InvalidArgument):
        index_params(extractor(), t.IndexSpec(type=42))


# ---- HNSW -----------------------------------------------------------------------------------------

def test_hnsw_explicit() -> None:
    params = index_params(extractor(), hnsw(m=32, ef_construction=400, ef=128))
    assert params == IndexParams("HNSW", "COSINE", {"M": 32, "efConstruction": 400}, {"ef": 128})


@pytest.mark.parametrize("m", [4, 64])
def test_hnsw_m_bounds(m: int) -> None:
    assert index_params(extractor(), hnsw(m=m)).build["M"] == m


@pytest.mark.parametrize("m", [1, 3, 65, 2048])
def test_hnsw_m_out_of_range(m: int) -> None:
    with pytest.raises(InvalidArgument, match="hnsw.m"):
        index_params(extractor(), hnsw(m=m))


@pytest.mark.parametrize("ef_construction", [8, 512])
def test_hnsw_ef_construction_bounds(ef_construction: int) -> None:
    assert index_params(extractor(), hnsw(ef_construction=ef_construction)).build["efConstruction"] == ef_construction


@pytest.mark.parametrize("ef_construction", [1, 7, 513, 100000])
def test_hnsw_ef_construction_out_of_range(ef_construction: int) -> None:
    with pytest.raises(InvalidArgument, match="hnsw.ef_construction"):
        index_params(extractor(), hnsw(ef_construction=ef_construction))


@pytest.mark.parametrize("ef", [1, 32768])
def test_hnsw_ef_bounds(ef: int) -> None:
    assert index_params(extractor(), hnsw(ef=ef)).search["ef"] == ef


def test_hnsw_ef_out_of_range() -> None:
    with pytest.raises(InvalidArgument, match="hnsw.ef"):
        index_params(extractor(), hnsw(ef=32769))


def test_hnsw_ef_raised_to_the_limit() -> None:
    """Milvus needs ef ≥ limit: the search-time parameters raise it."""
    params = index_params(extractor(), hnsw(ef=10))
    assert with_search_overrides(params, t.IndexSpec(), limit=100).search["ef"] == 100
    assert with_search_overrides(index_params(extractor(), hnsw(ef=500)), t.IndexSpec(), limit=100).search["ef"] == 500
    assert with_search_overrides(index_params(extractor(), t.IndexSpec()), t.IndexSpec(), limit=1000).search["ef"] == 1000


@pytest.mark.parametrize(
    "spec",
    [
        t.IndexSpec(type=t.INDEX_TYPE_FLAT, hnsw=t.HnswParams(m=8)),
        t.IndexSpec(type=t.INDEX_TYPE_IVF_PQ, hnsw=t.HnswParams(ef=8)),
        t.IndexSpec(type=t.INDEX_TYPE_HNSW, ivf_pq=t.IvfPqParams(nlist=8)),
        t.IndexSpec(ivf_pq=t.IvfPqParams(nprobe=8)),  # type defaults to HNSW
    ],
)
def test_parameters_of_another_index_type_refused(spec: t.IndexSpec) -> None:
    with pytest.raises(InvalidArgument):
        index_params(extractor(), spec)


# ---- IVF-PQ ---------------------------------------------------------------------------------------

def test_ivf_pq_defaults() -> None:
    params = index_params(extractor(1280), ivf_pq())
    assert params == IndexParams("IVF_PQ", "COSINE", {"nlist": 1024, "m": 160, "nbits": 8}, {"nprobe": 16})
    assert IVF_PQ_DEFAULTS == {"nlist": 1024, "nbits": 8, "nprobe": 16}


def test_ivf_pq_explicit() -> None:
    params = index_params(extractor(512, t.METRIC_L2), ivf_pq(nlist=256, m=32, nbits=4, nprobe=8))
    assert params == IndexParams("IVF_PQ", "L2", {"nlist": 256, "m": 32, "nbits": 4}, {"nprobe": 8})


@pytest.mark.parametrize("dimension,m", [(1280, 160), (512, 64), (768, 96), (100, 10), (64, 8), (8, 1), (7, 1), (1, 1), (17, 1), (96, 12)])
def test_default_pq_m(dimension: int, m: int) -> None:
    assert default_pq_m(dimension) == m


@given(st.integers(min_value=1, max_value=32768))
def test_default_pq_m_property(dimension: int) -> None:
    m = default_pq_m(dimension)
    assert dimension % m == 0
    assert 1 <= m <= max(1, dimension // 8)
    # the largest such divisor
    assert not any(dimension % bigger == 0 for bigger in range(m + 1, dimension // 8 + 1))
    # and the default spec always yields a valid index
    assert index_params(extractor(dimension), ivf_pq()).build["m"] == m


@pytest.mark.parametrize("dimension,m", [(1280, 3), (1280, 7), (512, 48), (512, 1024), (100, 8), (1280, 2560)])
def test_ivf_pq_m_must_divide_dimension(dimension: int, m: int) -> None:
    with pytest.raises(InvalidArgument, match="divide"):
        index_params(extractor(dimension), ivf_pq(m=m))


@pytest.mark.parametrize("dimension,m", [(1280, 1), (1280, 1280), (1280, 5), (512, 2)])
def test_ivf_pq_m_divisors_accepted(dimension: int, m: int) -> None:
    assert index_params(extractor(dimension), ivf_pq(m=m)).build["m"] == m


@pytest.mark.parametrize("nlist", [1, 65536])
def test_ivf_pq_nlist_bounds(nlist: int) -> None:
    params = index_params(extractor(), ivf_pq(nlist=nlist))
    assert params.build["nlist"] == nlist
    assert params.search["nprobe"] == min(16, nlist)


def test_ivf_pq_nlist_out_of_range() -> None:
    with pytest.raises(InvalidArgument, match="nlist"):
        index_params(extractor(), ivf_pq(nlist=65537))


@pytest.mark.parametrize("nbits", [1, 16])
def test_ivf_pq_nbits_bounds(nbits: int) -> None:
    assert index_params(extractor(), ivf_pq(nbits=nbits)).build["nbits"] == nbits


@pytest.mark.parametrize("nbits", [17, 64])
def test_ivf_pq_nbits_out_of_range(nbits: int) -> None:
    with pytest.raises(InvalidArgument, match="nbits"):
        index_params(extractor(), ivf_pq(nbits=nbits))


def test_ivf_pq_nprobe_at_most_nlist() -> None:
    assert index_params(extractor(), ivf_pq(nlist=64, nprobe=64)).search["nprobe"] == 64
    with pytest.raises(InvalidArgument, match="nprobe"):
        index_params(extractor(), ivf_pq(nlist=64, nprobe=65))
    # the default nprobe (16) is capped at a smaller nlist instead of making the spec invalid
    assert index_params(extractor(), ivf_pq(nlist=8)).search["nprobe"] == 8
    assert index_params(extractor(), ivf_pq(nlist=1)).search["nprobe"] == 1
    assert index_params(extractor(), ivf_pq(nlist=8, nprobe=4)).search["nprobe"] == 4
    with pytest.raises(InvalidArgument, match="nprobe"):
        index_params(extractor(), ivf_pq(nlist=8, nprobe=9))


# ---- search-time overrides ------------------------------------------------------------------------

def ef(value: int) -> t.IndexSpec:
    return t.IndexSpec(hnsw=t.HnswParams(ef=value))


def nprobe(value: int) -> t.IndexSpec:
    return t.IndexSpec(ivf_pq=t.IvfPqParams(nprobe=value))


def test_overrides_hnsw_ef() -> None:
    base = index_params(extractor(), hnsw(ef=64))
    assert with_search_overrides(base, t.IndexSpec(), limit=10).search == {"ef": 64}
    assert with_search_overrides(base, ef(200), limit=10).search == {"ef": 200}
    assert with_search_overrides(base, ef(20), limit=100).search == {"ef": 100}
    assert with_search_overrides(base, t.IndexSpec(), limit=500).search == {"ef": 500}
    with pytest.raises(InvalidArgument):
        with_search_overrides(base, ef(40000), limit=10)
    # the original is untouched
    assert base.search == {"ef": 64}
    assert with_search_overrides(base, ef(200), limit=10).build == base.build


@pytest.mark.parametrize(
    "overrides",
    [
        hnsw(ef=100),  # names the index type
        t.IndexSpec(hnsw=t.HnswParams(m=64)),  # a build parameter
        t.IndexSpec(hnsw=t.HnswParams(ef_construction=64)),
        t.IndexSpec(ivf_pq=t.IvfPqParams(nlist=64)),
        nprobe(8),  # the other index type's knob
    ],
)
def test_overrides_refused_for_hnsw(overrides: t.IndexSpec) -> None:
    with pytest.raises(InvalidArgument):
        with_search_overrides(index_params(extractor(), t.IndexSpec()), overrides, limit=10)


def test_overrides_hnsw_without_stored_ef() -> None:
    base = IndexParams("HNSW", "L2", {"M": 16, "efConstruction": 200}, {})
    assert with_search_overrides(base, t.IndexSpec(), limit=5).search == {"ef": HNSW_DEFAULTS["ef"]}


def test_overrides_ivf_pq_nprobe() -> None:
    base = index_params(extractor(), ivf_pq(nlist=128, nprobe=16))
    assert with_search_overrides(base, t.IndexSpec(), limit=10).search == {"nprobe": 16}
    assert with_search_overrides(base, nprobe(128), limit=10).search == {"nprobe": 128}
    with pytest.raises(InvalidArgument, match="nprobe"):
        with_search_overrides(base, nprobe(129), limit=10)
    with pytest.raises(InvalidArgument):
        with_search_overrides(base, ef(100), limit=10)
    # IVF-PQ results are re-scored exactly when asked; the exact indexes never are
    assert with_search_overrides(base, t.IndexSpec(), limit=10, refine_factor=10).refine == 10
    assert with_search_overrides(index_params(extractor(), t.IndexSpec()), t.IndexSpec(), 10, refine_factor=10).refine == 1


@pytest.mark.parametrize("base", [IndexParams("FLAT", "COSINE", {}, {}), IndexParams("BIN_FLAT", "HAMMING", {}, {})])
def test_overrides_ignored_for_exact_indexes(base: IndexParams) -> None:
    assert with_search_overrides(base, ef(999), limit=10) == base
    assert with_search_overrides(base, nprobe(999), limit=10) == base
    assert with_search_overrides(base, t.IndexSpec(), limit=10, refine_factor=10) == base
