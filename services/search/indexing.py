"""Index specs from the API → Milvus index and search parameters, with defaults and range checks.

Every check runs before anything is created, and every error names the parameter, its allowed range
and the value given, so a bad spec is an INVALID_ARGUMENT a user can act on.
"""

from __future__ import annotations

from lookalike.errors import InvalidArgument
from lookalike.v1 import types_pb2
from lookalike.vectorindex import IndexParams

# ef 128: on the bench's 1280-d embeddings recall@10 is 0.93 at 100k and 0.91 at 1M vectors (ef 64:
# 0.87 / 0.84) for ~1-3 ms more per query (README, "Search and indexes")
HNSW_DEFAULTS = {"M": 16, "efConstruction": 200, "ef": 128}
IVF_PQ_DEFAULTS = {"nlist": 1024, "nbits": 8, "nprobe": 16}
# IVF-PQ's product quantization alone caps recall@10 well below 1 (bench/search.py); by default
# limit × 10 candidates are re-scored exactly from the stored vectors.
DEFAULT_REFINE_FACTOR = 10

# Ranges: Milvus 2.3 accepts wider ones (HNSW M up to 2048), but beyond these a graph costs memory
# and build time for no recall, and the error is clearer here than Milvus's.
HNSW_M = (4, 64)
HNSW_EF_CONSTRUCTION = (8, 512)
HNSW_EF = (1, 32768)
IVF_NLIST = (1, 65536)
PQ_NBITS = (1, 16)

_METRICS = {
    types_pb2.METRIC_COSINE: "COSINE",
    types_pb2.METRIC_INNER_PRODUCT: "IP",
    types_pb2.METRIC_L2: "L2",
    types_pb2.METRIC_HAMMING: "HAMMING",
}
_TYPE_NAMES = {types_pb2.INDEX_TYPE_HNSW: "HNSW", types_pb2.INDEX_TYPE_IVF_PQ: "IVF_PQ", types_pb2.INDEX_TYPE_FLAT: "FLAT"}


def _check(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be between {low} and {high}, got {value}")
    return value


def _set_fields(message: object) -> list[str]:
    return [f.name for f, _ in message.ListFields()]  # type: ignore[attr-defined]


def default_pq_m(dimension: int) -> int:
    """The largest sub-quantizer count ≤ dimension/8 that divides the dimension (≥ 8-d sub-vectors)."""
    for m in range(max(1, dimension // 8), 0, -1):
        if dimension % m == 0:
            return m
    return 1


def metric_of(extractor: types_pb2.ExtractorInfo) -> str:
    metric = _METRICS.get(extractor.metric)
    if metric is None:
        raise InvalidArgument(f"extractor {extractor.name!r} has no metric")
    binary = extractor.vector_type == types_pb2.VECTOR_TYPE_BINARY
    if binary and metric != "HAMMING":
        raise InvalidArgument(f"binary extractor {extractor.name!r} needs the HAMMING metric, not {metric}")
    if metric == "HAMMING" and not binary:
        raise InvalidArgument("HAMMING needs a binary extractor")
    return metric


def index_params(extractor: types_pb2.ExtractorInfo, spec: types_pb2.IndexSpec) -> IndexParams:
    """Build and default query-time parameters of one extractor's index, validated."""
    metric = metric_of(extractor)
    kind = spec.type or types_pb2.INDEX_TYPE_HNSW
    if kind not in _TYPE_NAMES:
        raise InvalidArgument(f"unknown index type {kind}")
    # parameters of another index type are a mistake (e.g. --nlist with an HNSW index), not a no-op
    if kind != types_pb2.INDEX_TYPE_HNSW and spec.HasField("hnsw") and _set_fields(spec.hnsw):
        raise InvalidArgument(f"hnsw parameters given for a {_TYPE_NAMES[kind]} index")
    if kind != types_pb2.INDEX_TYPE_IVF_PQ and spec.HasField("ivf_pq") and _set_fields(spec.ivf_pq):
        raise InvalidArgument(f"ivf_pq parameters given for a {_TYPE_NAMES[kind]} index")
    if extractor.vector_type == types_pb2.VECTOR_TYPE_BINARY:
        # binary hashes (pHash, 64 bits) are tiny and compared exactly by Hamming distance; the
        # collection's ANN index applies to its float extractors
        return IndexParams("BIN_FLAT", "HAMMING", {}, {})
    if kind == types_pb2.INDEX_TYPE_HNSW:
        m = _check("hnsw.m", spec.hnsw.m or HNSW_DEFAULTS["M"], *HNSW_M)
        ef_c = _check("hnsw.ef_construction", spec.hnsw.ef_construction or HNSW_DEFAULTS["efConstruction"], *HNSW_EF_CONSTRUCTION)
        ef = _check("hnsw.ef", spec.hnsw.ef or HNSW_DEFAULTS["ef"], *HNSW_EF)
        return IndexParams("HNSW", metric, {"M": m, "efConstruction": ef_c}, {"ef": ef})
    if kind == types_pb2.INDEX_TYPE_IVF_PQ:
        dimension = extractor.dimension
        nlist = _check("ivf_pq.nlist", spec.ivf_pq.nlist or IVF_PQ_DEFAULTS["nlist"], *IVF_NLIST)
        m = spec.ivf_pq.m or default_pq_m(dimension)
        if not 1 <= m <= dimension or dimension % m:
            divisors = [d for d in (8, 16, 32, 64, 80, 128, 160, 256, 320) if dimension % d == 0]
            raise InvalidArgument(
                f"ivf_pq.m={m} must divide the dimension {dimension} of {extractor.name!r} (e.g. {divisors})"
            )
        nbits = _check("ivf_pq.nbits", spec.ivf_pq.nbits or IVF_PQ_DEFAULTS["nbits"], *PQ_NBITS)
        nprobe = _check("ivf_pq.nprobe", spec.ivf_pq.nprobe or min(IVF_PQ_DEFAULTS["nprobe"], nlist), 1, nlist)
        return IndexParams("IVF_PQ", metric, {"nlist": nlist, "m": m, "nbits": nbits}, {"nprobe": nprobe})
    return IndexParams("FLAT", metric, {}, {})


def with_search_overrides(
    params: IndexParams, overrides: types_pb2.IndexSpec, limit: int, refine_factor: int = 1
) -> IndexParams:
    """Query-time parameters for one search: the collection's, the request's ef / nprobe, the limit."""
    hnsw = _set_fields(overrides.hnsw) if overrides.HasField("hnsw") else []
    ivf = _set_fields(overrides.ivf_pq) if overrides.HasField("ivf_pq") else []
    if overrides.type:
        raise InvalidArgument("search_params cannot change the index type")
    if set(hnsw) - {"ef"} or set(ivf) - {"nprobe"}:
        raise InvalidArgument("search_params may only set hnsw.ef and ivf_pq.nprobe (build parameters are fixed)")
    search = dict(params.search)
    if params.index_type == "HNSW":
        if ivf:
            raise InvalidArgument("ivf_pq.nprobe given for an HNSW index")
        ef = overrides.hnsw.ef or search.get("ef", HNSW_DEFAULTS["ef"])
        search["ef"] = max(_check("hnsw.ef", ef, *HNSW_EF), limit)  # Milvus needs ef ≥ limit
    elif params.index_type == "IVF_PQ":
        if hnsw:
            raise InvalidArgument("hnsw.ef given for an IVF_PQ index")
        nlist = params.build.get("nlist", IVF_PQ_DEFAULTS["nlist"])
        nprobe = overrides.ivf_pq.nprobe or search.get("nprobe", min(IVF_PQ_DEFAULTS["nprobe"], nlist))
        search["nprobe"] = _check("ivf_pq.nprobe", nprobe, 1, nlist)
    # FLAT and BIN_FLAT are exact: nothing to tune, and an ef / nprobe for the collection's other
    # (ANN) extractors is simply not used here
    refine = refine_factor if params.index_type == "IVF_PQ" else 1
    return IndexParams(params.index_type, params.metric, params.build, search, refine)
