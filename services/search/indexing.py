"""Index specs from the API → Milvus index and search parameters, with defaults and range checks."""

from __future__ import annotations

from lookalike.errors import InvalidArgument
from lookalike.v1 import types_pb2
from lookalike.vectorindex import IndexParams

HNSW_DEFAULTS = {"M": 16, "efConstruction": 200, "ef": 64}
IVF_PQ_DEFAULTS = {"nlist": 1024, "nbits": 8, "nprobe": 16}

_METRICS = {
    types_pb2.METRIC_COSINE: "COSINE",
    types_pb2.METRIC_INNER_PRODUCT: "IP",
    types_pb2.METRIC_L2: "L2",
    types_pb2.METRIC_HAMMING: "HAMMING",
}


def _check(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be between {low} and {high}, got {value}")
    return value


def default_pq_m(dimension: int) -> int:
    """The largest sub-quantizer count ≤ dimension/8 that divides the dimension (≥ 8-d sub-vectors)."""
    for m in range(max(1, dimension // 8), 0, -1):
        if dimension % m == 0:
            return m
    return 1


def index_params(extractor: types_pb2.ExtractorInfo, spec: types_pb2.IndexSpec, limit: int = 0) -> IndexParams:
    metric = _METRICS.get(extractor.metric)
    if metric is None:
        raise InvalidArgument(f"extractor {extractor.name!r} has no metric")
    if extractor.vector_type == types_pb2.VECTOR_TYPE_BINARY:
        # binary hashes (pHash) are small and compared exactly by Hamming distance
        return IndexParams("BIN_FLAT", "HAMMING", {}, {})
    if metric == "HAMMING":
        raise InvalidArgument("HAMMING needs a binary extractor")
    kind = spec.type or types_pb2.INDEX_TYPE_HNSW
    if kind == types_pb2.INDEX_TYPE_HNSW:
        m = _check("hnsw.m", spec.hnsw.m or HNSW_DEFAULTS["M"], 4, 64)
        ef_c = _check("hnsw.ef_construction", spec.hnsw.ef_construction or HNSW_DEFAULTS["efConstruction"], 8, 512)
        ef = _check("hnsw.ef", spec.hnsw.ef or HNSW_DEFAULTS["ef"], 1, 32768)
        return IndexParams("HNSW", metric, {"M": m, "efConstruction": ef_c}, {"ef": max(ef, limit)})
    if kind == types_pb2.INDEX_TYPE_IVF_PQ:
        nlist = _check("ivf_pq.nlist", spec.ivf_pq.nlist or IVF_PQ_DEFAULTS["nlist"], 1, 65536)
        m = spec.ivf_pq.m or default_pq_m(extractor.dimension)
        if extractor.dimension % m:
            raise InvalidArgument(f"ivf_pq.m={m} must divide the dimension {extractor.dimension}")
        nbits = _check("ivf_pq.nbits", spec.ivf_pq.nbits or IVF_PQ_DEFAULTS["nbits"], 1, 16)
        nprobe = _check("ivf_pq.nprobe", spec.ivf_pq.nprobe or IVF_PQ_DEFAULTS["nprobe"], 1, nlist)
        return IndexParams("IVF_PQ", metric, {"nlist": nlist, "m": m, "nbits": nbits}, {"nprobe": nprobe})
    if kind == types_pb2.INDEX_TYPE_FLAT:
        return IndexParams("FLAT", metric, {}, {})
    raise InvalidArgument(f"unknown index type {kind}")


def with_search_overrides(params: IndexParams, overrides: types_pb2.IndexSpec, limit: int) -> IndexParams:
    search = dict(params.search)
    if params.index_type == "HNSW":
        ef = overrides.hnsw.ef or search.get("ef", HNSW_DEFAULTS["ef"])
        search["ef"] = max(_check("hnsw.ef", ef, 1, 32768), limit)
    elif params.index_type == "IVF_PQ" and overrides.ivf_pq.nprobe:
        search["nprobe"] = _check("ivf_pq.nprobe", overrides.ivf_pq.nprobe, 1, params.build["nlist"])
    return IndexParams(params.index_type, params.metric, params.build, search)
