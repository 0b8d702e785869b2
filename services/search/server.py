"""Search service: SearchService (protos/lookalike/v1/search_service.proto) on Milvus.

One Milvus collection per (lookalike collection, extractor), named after the namespace, collection
and extractor (lookalike.vectorindex). Every request is checked here — names, ids, vector sizes,
limits, filters (compiled by lookalike.filters, never concatenated from user text) — before anything
reaches Milvus, and every Milvus expression is scoped to the request's namespace.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

from google.protobuf import json_format, struct_pb2

from lookalike import metadata, names
from lookalike.config import Settings
from lookalike.errors import FailedPrecondition, InvalidArgument, NotFound
from lookalike.filters import compile_filter
from lookalike.server import ServiceSpec, rpc
from lookalike.v1 import search_service_pb2 as pb
from lookalike.v1 import search_service_pb2_grpc as grpc_pb
from lookalike.v1 import types_pb2
from lookalike.vectorindex import (
    MAX_TEXT,
    REFINE_FIELD,
    CollectionInfo,
    Hit,
    IndexParams,
    MilvusIndex,
    milvus_collection_name,
    sq8_decode,
)
from services.search.indexing import index_params, with_search_overrides
from services.search.settings import SearchSettings

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
MAX_BATCH = 10_000
MAX_DIMENSION = 32768
# Milvus's JSON field limit is 64 KiB per value.
MAX_METADATA_BYTES = 65_000


def _struct(value: Any) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if isinstance(value, str):
        value = json.loads(value or "{}")
    if value:
        out.update(value)
    return out


def _content_ids(ids: Any, what: str = "id") -> list[str]:
    ids = list(ids)
    if len(ids) > MAX_BATCH:
        raise InvalidArgument(f"at most {MAX_BATCH} ids per call")
    for i in ids:
        if not names.CONTENT_ID.fullmatch(i):
            raise InvalidArgument(f"{what} {i[:80]!r} is not a content id (64 lower-case hex digits)")
    return list(dict.fromkeys(ids))


class SearchServicer(grpc_pb.SearchServiceServicer):
    def __init__(self, index: MilvusIndex, search_settings: SearchSettings | None = None) -> None:
        self.index = index
        self.settings = search_settings or SearchSettings()
        self._info: dict[str, tuple[float, CollectionInfo]] = {}

    def _target(self, collection: str, extractor: str) -> tuple[names.Name, str]:
        coll = names.parse(collection, "collections")
        if not extractor:
            raise InvalidArgument("extractor is required")
        if len(extractor) > 64 or not extractor.isprintable():
            raise InvalidArgument(f"invalid extractor name {extractor[:64]!r}")
        return coll, milvus_collection_name(coll.namespace, coll.id, extractor)

    async def _collection(self, name: str, collection: str = "", extractor: str = "") -> CollectionInfo:
        """What Milvus says about the index, cached for a while (other replicas may drop/recreate)."""
        cached = self._info.get(name)
        if cached and time.monotonic() - cached[0] < self.settings.info_ttl_s:
            return cached[1]
        try:
            info = await self.index.info(name)
        except NotFound:
            self._info.pop(name, None)
            what = f"{collection} has no index for extractor {extractor!r}" if collection else f"no index {name}"
            raise NotFound(f"{what}: create the collection first") from None
        self._info[name] = (time.monotonic(), info)
        return info

    def _forget(self, name: str) -> None:
        self._info.pop(name, None)

    @rpc
    async def EnsureIndex(self, request: pb.EnsureIndexRequest, context: Any) -> pb.EnsureIndexResponse:
        coll, name = self._target(request.collection, request.extractor.name)
        extractor = request.extractor
        binary = extractor.vector_type == types_pb2.VECTOR_TYPE_BINARY
        if not 1 <= extractor.dimension <= MAX_DIMENSION:
            raise InvalidArgument(f"dimension must be between 1 and {MAX_DIMENSION}, got {extractor.dimension}")
        if binary and extractor.dimension % 8:
            raise InvalidArgument(f"a binary extractor's dimension must be a multiple of 8, got {extractor.dimension}")
        params = index_params(extractor, request.index)
        fields = metadata.declared(request.metadata_fields)
        spec = {"namespace": coll.namespace, "collection": coll.id, "extractor": extractor.name}
        created = await self.index.create(name, extractor.dimension, binary, params, spec, fields)
        if not created:
            existing = await self.index.info(name)
            if existing.fields != fields:
                raise FailedPrecondition(
                    f"{request.collection} already declares metadata fields [{metadata.describe(existing.fields)}] "
                    f"for {extractor.name!r}, not [{metadata.describe(fields)}]"
                )
            want = (extractor.dimension, binary, params.index_type, params.metric, params.build)
            have = (existing.dimension, existing.binary, existing.params.index_type, existing.params.metric, existing.params.build)
            if want != have:
                raise FailedPrecondition(
                    f"{request.collection} already has a {existing.params.index_type} {existing.params.metric} "
                    f"index {existing.params.build} of {existing.dimension} dimensions for {extractor.name!r}, "
                    f"not {params.index_type} {params.metric} {params.build} of {extractor.dimension}"
                )
            # Query-time defaults are fixed when the collection is created (Milvus 2.3.5 does not keep
            # altered collection properties across a restart); a search can still pass its own. Only
            # values given explicitly are compared: a default that changed between versions is no conflict.
            given = {k: v for k, v in params.search.items() if (request.index.hnsw.ef if k == "ef" else request.index.ivf_pq.nprobe)}
            if existing.spec and any(existing.params.search.get(k) != v for k, v in given.items()):
                raise FailedPrecondition(
                    f"{request.collection} was created with query parameters {existing.params.search} for "
                    f"{extractor.name!r}, not {params.search}; pass ef / nprobe per search instead"
                )
        self._forget(name)
        log.info("index ready", extra={"index": name, "was_created": created, "index_type": params.index_type})
        return pb.EnsureIndexResponse(created=created)

    @rpc
    async def DropIndex(self, request: pb.DropIndexRequest, context: Any) -> pb.DropIndexResponse:
        for extractor in request.extractors:
            _, name = self._target(request.collection, extractor)
            if await self.index.exists(name):
                await self.index.drop(name)
            self._forget(name)
        return pb.DropIndexResponse()

    def _vector(self, info: CollectionInfo, vector: types_pb2.Vector, what: str) -> list[float] | bytes:
        if info.binary:
            if vector.values or len(vector.binary) * 8 != info.dimension:
                raise InvalidArgument(f"{what} needs a binary vector of {info.dimension // 8} bytes, got {len(vector.binary)}")
            return bytes(vector.binary)
        if vector.binary or len(vector.values) != info.dimension:
            raise InvalidArgument(f"{what} needs {info.dimension} float values, got {len(vector.values)}")
        values = list(vector.values)
        if not all(math.isfinite(v) for v in values):
            raise InvalidArgument(f"{what} has a NaN or infinite value")
        return values

    @rpc
    async def UpsertVectors(self, request: pb.UpsertVectorsRequest, context: Any) -> pb.UpsertVectorsResponse:
        coll, name = self._target(request.collection, request.extractor)
        if len(request.records) > MAX_BATCH:
            raise InvalidArgument(f"at most {MAX_BATCH} records per call")
        info = await self._collection(name, request.collection, request.extractor)
        rows: dict[str, dict[str, Any]] = {}
        for record in request.records:
            _content_ids([record.id], "record id")
            if record.object:
                if len(record.object) > MAX_TEXT:
                    raise InvalidArgument(f"record {record.id}: object name longer than {MAX_TEXT} characters")
                bucket, _ = names.parse_object(record.object)
                if bucket.namespace != coll.namespace:
                    raise InvalidArgument(f"record {record.id}: object {record.object} is not in namespace {coll.namespace}")
            values = json_format.MessageToDict(record.metadata)
            if len(json.dumps(values)) > MAX_METADATA_BYTES:
                raise InvalidArgument(f"record {record.id}: metadata larger than {MAX_METADATA_BYTES} bytes")
            columns = metadata.typed_columns(info.fields, values, f"record {record.id} ({record.filename[:80] or 'no filename'})")
            # the last record of an id in a batch wins, as it would in two calls
            rows[record.id] = {
                "id": record.id,
                "namespace": coll.namespace,
                "object": record.object,
                "filename": record.filename[:MAX_TEXT],
                "metadata": values,
                "vector": self._vector(info, record.vector, f"record {record.id}"),
                **columns,
            }
        count = await self.index.upsert(name, list(rows.values()), refine_copy=info.refine_copy) if rows else 0
        return pb.UpsertVectorsResponse(upserted_count=count)

    @rpc
    async def DeleteVectors(self, request: pb.DeleteVectorsRequest, context: Any) -> pb.DeleteVectorsResponse:
        coll = names.parse(request.collection, "collections")
        ids = _content_ids(request.ids)
        for extractor in request.extractors:
            _, name = self._target(request.collection, extractor)
            if ids and await self.index.exists(name):
                await self.index.delete(name, coll.namespace, ids)
        return pb.DeleteVectorsResponse()

    @rpc
    async def GetVectors(self, request: pb.GetVectorsRequest, context: Any) -> pb.GetVectorsResponse:
        coll, name = self._target(request.collection, request.extractor)
        ids = _content_ids(request.ids)
        info = await self._collection(name, request.collection, request.extractor)
        try:
            rows = await self.index.get(name, coll.namespace, ids)
        except InvalidArgument:
            if not info.refine_copy:
                raise
            # the float field of a compacted IVF_PQ segment may be unreadable (Milvus 2.3.5, local
            # storage): answer from the 8-bit copy instead
            rows = await self.index.get(name, coll.namespace, ids, with_vector=False, with_refine_copy=True)
            for row in rows:
                row["vector"] = sq8_decode(row.pop(REFINE_FIELD)).tolist()
        by_id = {row["id"]: row for row in rows}
        records = []
        for record_id in ids:  # in the order asked; missing ids are left out
            row = by_id.get(record_id)
            if row is None:
                continue
            vector = types_pb2.Vector()
            raw = row.get("vector")
            if isinstance(raw, (bytes, bytearray)):
                vector.binary = bytes(raw)
            elif isinstance(raw, list) and raw and isinstance(raw[0], (bytes, bytearray)):
                vector.binary = bytes(raw[0])
            elif raw is not None:
                vector.values.extend(float(v) for v in raw)
            records.append(
                pb.VectorRecord(
                    id=row["id"], vector=vector, object=row.get("object", ""),
                    filename=row.get("filename", ""), metadata=_struct(row.get("metadata")),
                )
            )
        return pb.GetVectorsResponse(records=records)

    @rpc
    async def CountVectors(self, request: pb.CountVectorsRequest, context: Any) -> pb.CountVectorsResponse:
        coll, name = self._target(request.collection, request.extractor)
        await self._collection(name, request.collection, request.extractor)
        return pb.CountVectorsResponse(count=await self.index.count(name, coll.namespace))

    @rpc
    async def Search(self, request: pb.SearchRequest, context: Any) -> pb.SearchResponse:
        coll, name = self._target(request.collection, request.extractor)
        limit = request.limit or 10
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        info = await self._collection(name, request.collection, request.extractor)
        expression = compile_filter(request.filter, info.fields) if request.HasField("filter") else ""
        params = with_search_overrides(info.params, request.search_params, limit, self.settings.ivf_pq_refine)
        vector = self._vector(info, request.vector, "the query")
        if info.params.metric == "COSINE" and not any(vector):
            raise InvalidArgument("the query vector is all zeros: it has no direction for cosine similarity")
        try:
            hits = await self.index.search(name, vector, limit, coll.namespace, expression, params, info.refine_copy)
        except NotFound:
            self._forget(name)
            raise
        return pb.SearchResponse(hits=[self._hit(h, params, info.dimension) for h in hits])

    @staticmethod
    def _hit(hit: Hit, params: IndexParams, dimension: int) -> pb.SearchHit:
        if params.metric == "HAMMING":
            score = 1.0 - hit.distance / dimension
        elif params.metric == "L2":
            score = -hit.distance
        else:  # COSINE / IP: similarity, higher is better
            score = hit.distance
        return pb.SearchHit(
            id=hit.id,
            score=score,
            distance=hit.distance,
            object=hit.fields.get("object", ""),
            filename=hit.fields.get("filename", ""),
            metadata=_struct(hit.fields.get("metadata")),
        )


def build(settings: Settings, search_settings: SearchSettings | None = None) -> ServiceSpec:
    search_settings = search_settings or SearchSettings()
    index = MilvusIndex(settings, consistency=search_settings.consistency)
    servicer = SearchServicer(index, search_settings)
    return ServiceSpec(
        name="search",
        address=settings.search_addr,
        servicers=[(grpc_pb.add_SearchServiceServicer_to_server, servicer, pb.DESCRIPTOR.services_by_name["SearchService"].full_name)],
        on_start=[index.ping],
    )
