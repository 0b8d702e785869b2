"""Search service: SearchService (protos/lookalike/v1/search_service.proto) on Milvus."""

from __future__ import annotations

import json
import logging
from typing import Any

from google.protobuf import json_format, struct_pb2

from lookalike import names
from lookalike.config import Settings
from lookalike.errors import FailedPrecondition, InvalidArgument, NotFound
from lookalike.filters import compile_filter
from lookalike.server import ServiceSpec, rpc
from lookalike.v1 import search_service_pb2 as pb
from lookalike.v1 import search_service_pb2_grpc as grpc_pb
from lookalike.v1 import types_pb2
from lookalike.vectorindex import Hit, IndexParams, MilvusIndex, milvus_collection_name
from services.search.indexing import HNSW_DEFAULTS, IVF_PQ_DEFAULTS, index_params, with_search_overrides

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
MAX_BATCH = 10_000


def _struct(value: Any) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if isinstance(value, str):
        value = json.loads(value or "{}")
    if value:
        out.update(value)
    return out


class SearchServicer(grpc_pb.SearchServiceServicer):
    def __init__(self, index: MilvusIndex) -> None:
        self.index = index
        self._params: dict[str, IndexParams] = {}

    def _target(self, collection: str, extractor: str) -> tuple[names.Name, str]:
        coll = names.parse(collection, "collections")
        if not extractor:
            raise InvalidArgument("extractor is required")
        return coll, milvus_collection_name(coll.namespace, coll.id, extractor)

    async def _index_params(self, name: str) -> IndexParams:
        """Index type and metric of an existing index, read back from Milvus once."""
        if name not in self._params:
            if not await self.index.exists(name):
                raise NotFound(f"no index {name}: create the collection first")
            info = await self.index.describe_index(name)
            kind = info.get("index_type", "FLAT")
            metric = info.get("metric_type", "COSINE")
            build = {k: int(v) for k, v in info.items() if k in ("M", "efConstruction", "nlist", "m", "nbits")}
            search: dict[str, int] = {}
            if kind == "HNSW":
                search = {"ef": HNSW_DEFAULTS["ef"]}
            elif kind == "IVF_PQ":
                search = {"nprobe": IVF_PQ_DEFAULTS["nprobe"]}
            self._params[name] = IndexParams(kind, metric, build, search)
        return self._params[name]

    @rpc
    async def EnsureIndex(self, request: pb.EnsureIndexRequest, context: Any) -> pb.EnsureIndexResponse:
        coll, name = self._target(request.collection, request.extractor.name)
        if request.extractor.dimension <= 0 or request.extractor.dimension > 32768:
            raise InvalidArgument(f"invalid dimension {request.extractor.dimension}")
        params = index_params(request.extractor, request.index)
        binary = request.extractor.vector_type == types_pb2.VECTOR_TYPE_BINARY
        created = await self.index.create(name, request.extractor.dimension, binary, params)
        if not created:
            existing = await self.index.describe_index(name)
            if existing.get("index_type") and existing.get("index_type") != params.index_type:
                raise FailedPrecondition(
                    f"{request.collection} already has a {existing.get('index_type')} index for "
                    f"{request.extractor.name}, not {params.index_type}"
                )
        self._params[name] = params
        log.info("index ready", extra={"index": name, "was_created": created, "index_type": params.index_type})
        return pb.EnsureIndexResponse(created=created)

    @rpc
    async def DropIndex(self, request: pb.DropIndexRequest, context: Any) -> pb.DropIndexResponse:
        for extractor in request.extractors:
            _, name = self._target(request.collection, extractor)
            await self.index.drop(name)
            self._params.pop(name, None)
        return pb.DropIndexResponse()

    @rpc
    async def UpsertVectors(self, request: pb.UpsertVectorsRequest, context: Any) -> pb.UpsertVectorsResponse:
        coll, name = self._target(request.collection, request.extractor)
        if len(request.records) > MAX_BATCH:
            raise InvalidArgument(f"at most {MAX_BATCH} records per call")
        await self._index_params(name)
        rows = []
        for record in request.records:
            if not names.CONTENT_ID.fullmatch(record.id):
                raise InvalidArgument(f"record id {record.id!r} is not a content id (sha256 hex)")
            vector: Any = bytes(record.vector.binary) if record.vector.binary else list(record.vector.values)
            if not vector:
                raise InvalidArgument(f"record {record.id} has no vector")
            rows.append(
                {
                    "id": record.id,
                    "namespace": coll.namespace,
                    "object": record.object[:512],
                    "filename": record.filename[:512],
                    "metadata": json_format.MessageToDict(record.metadata),
                    "vector": vector,
                }
            )
        count = await self.index.upsert(name, rows) if rows else 0
        return pb.UpsertVectorsResponse(upserted_count=count)

    @rpc
    async def DeleteVectors(self, request: pb.DeleteVectorsRequest, context: Any) -> pb.DeleteVectorsResponse:
        for extractor in request.extractors:
            _, name = self._target(request.collection, extractor)
            if await self.index.exists(name):
                await self.index.delete(name, list(request.ids))
        return pb.DeleteVectorsResponse()

    @rpc
    async def GetVectors(self, request: pb.GetVectorsRequest, context: Any) -> pb.GetVectorsResponse:
        coll, name = self._target(request.collection, request.extractor)
        await self._index_params(name)
        rows = await self.index.get(name, list(request.ids))
        records = []
        for row in rows:
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
        await self._index_params(name)
        return pb.CountVectorsResponse(count=await self.index.count(name, coll.namespace))

    @rpc
    async def Search(self, request: pb.SearchRequest, context: Any) -> pb.SearchResponse:
        coll, name = self._target(request.collection, request.extractor)
        limit = request.limit or 10
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_LIMIT}")
        expression = compile_filter(request.filter) if request.HasField("filter") else ""
        params = with_search_overrides(await self._index_params(name), request.search_params, limit)
        if params.metric == "HAMMING":
            if not request.vector.binary:
                raise InvalidArgument(f"{request.extractor} needs a binary query vector")
            vector: Any = bytes(request.vector.binary)
        else:
            if not request.vector.values:
                raise InvalidArgument(f"{request.extractor} needs a float query vector")
            vector = list(request.vector.values)
        hits = await self.index.search(name, vector, limit, coll.namespace, expression, params)
        return pb.SearchResponse(hits=[self._hit(h, params) for h in hits])

    @staticmethod
    def _hit(hit: Hit, params: IndexParams) -> pb.SearchHit:
        if params.metric == "HAMMING":
            score = 1.0 - hit.distance / 64.0
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


def build(settings: Settings) -> ServiceSpec:
    index = MilvusIndex(settings)
    servicer = SearchServicer(index)
    return ServiceSpec(
        name="search",
        address=settings.search_addr,
        servicers=[(grpc_pb.add_SearchServiceServicer_to_server, servicer, pb.DESCRIPTOR.services_by_name["SearchService"].full_name)],
        on_start=[index.ping],
    )
