"""CollectionService (protos/lookalike/v1/collection_service.proto)."""

from __future__ import annotations

import asyncio
from typing import Any

from lookalike import metadata, names
from lookalike.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from lookalike.server import rpc
from lookalike.v1 import bucket_service_pb2, encoder_service_pb2, namespace_service_pb2, search_service_pb2, types_pb2
from lookalike.v1 import collection_service_pb2 as pb
from lookalike.v1 import collection_service_pb2_grpc as grpc_pb
from services.gateway.context import GatewayServicer
from services.gateway.duplicates import group_near_duplicates, max_pairwise_distance
from services.gateway.namespaces import now

DEFAULT_EXTRACTORS = ["effnet-lite0", "phash"]
PHASH = "phash"
DEFAULT_DUPLICATE_DISTANCE = 6


class CollectionServicer(GatewayServicer, grpc_pb.CollectionServiceServicer):

    async def _extractors(self) -> dict[str, types_pb2.ExtractorInfo]:
        response = await self.ctx.clients.encoder.ListExtractors(encoder_service_pb2.ListExtractorsRequest())
        return {e.name: e for e in response.extractors}

    @rpc
    async def CreateCollection(self, request: pb.CreateCollectionRequest, context: Any) -> pb.CreateCollectionResponse:
        parent = names.parse(request.parent)
        coll_id = names.validate_id("collection", request.collection_id)
        await self.ctx.resources.get(request.parent, namespace_service_pb2.Namespace)
        name = f"{parent}/collections/{coll_id}"
        if await self.ctx.resources.exists(name):
            raise AlreadyExists(f"{name} already exists")
        available = await self._extractors()
        wanted = list(dict.fromkeys(request.feature_extractors or DEFAULT_EXTRACTORS))
        unknown = [e for e in wanted if e not in available]
        if unknown:
            raise InvalidArgument(f"unknown feature extractor(s) {', '.join(unknown)}; available: {', '.join(sorted(available))}")
        index = request.index if request.HasField("index") else types_pb2.IndexSpec()
        if not index.type:
            index.type = types_pb2.INDEX_TYPE_HNSW
        metadata.declared(request.metadata_fields)  # checked before any index exists
        for extractor in wanted:
            await self.ctx.clients.search.EnsureIndex(
                search_service_pb2.EnsureIndexRequest(
                    collection=name, extractor=available[extractor], index=index, metadata_fields=request.metadata_fields
                )
            )
        collection = pb.Collection(
            name=name,
            display_name=request.display_name or coll_id,
            feature_extractors=[available[e] for e in wanted],
            index=index,
            create_time=now(),
            metadata_fields=request.metadata_fields,
        )
        await self.ctx.resources.create(collection)
        return pb.CreateCollectionResponse(collection=collection)

    async def _with_count(self, collection: pb.Collection) -> pb.Collection:
        first = collection.feature_extractors[0].name
        response = await self.ctx.clients.search.CountVectors(
            search_service_pb2.CountVectorsRequest(collection=collection.name, extractor=first)
        )
        collection.image_count = response.count
        return collection

    @rpc
    async def GetCollection(self, request: pb.GetCollectionRequest, context: Any) -> pb.GetCollectionResponse:
        names.parse(request.name, "collections")
        collection = await self.ctx.resources.get(request.name, pb.Collection)
        return pb.GetCollectionResponse(collection=await self._with_count(collection))

    @rpc
    async def ListCollections(self, request: pb.ListCollectionsRequest, context: Any) -> pb.ListCollectionsResponse:
        names.parse(request.parent)
        return pb.ListCollectionsResponse(collections=await self.ctx.resources.list(request.parent, "collections", pb.Collection))

    @rpc
    async def DeleteCollection(self, request: pb.DeleteCollectionRequest, context: Any) -> pb.DeleteCollectionResponse:
        name = names.parse(request.name, "collections")
        collection = await self.ctx.resources.get(request.name, pb.Collection)
        buckets = await self.ctx.resources.list(name.parent, "buckets", bucket_service_pb2.Bucket)
        if users := [b.name for b in buckets if b.collection == request.name]:
            raise FailedPrecondition(f"{request.name} is fed by {', '.join(users)}; delete those buckets first")
        await self.ctx.clients.search.DropIndex(
            search_service_pb2.DropIndexRequest(collection=request.name, extractors=[e.name for e in collection.feature_extractors])
        )
        await self.ctx.resources.delete(request.name)
        return pb.DeleteCollectionResponse()

    @rpc
    async def GetDuplicateReport(self, request: pb.GetDuplicateReportRequest, context: Any) -> pb.GetDuplicateReportResponse:
        name = names.parse(request.name, "collections")
        collection = await self.ctx.resources.get(request.name, pb.Collection)
        if PHASH not in [e.name for e in collection.feature_extractors]:
            raise FailedPrecondition(f"{request.name} has no {PHASH!r} extractor; create it with one to find duplicates")
        max_distance = request.max_hamming_distance or DEFAULT_DUPLICATE_DISTANCE
        if max_distance > 32:
            raise InvalidArgument("max_hamming_distance must be at most 32 (of 64 bits)")
        buckets = await self.ctx.resources.list(name.parent, "buckets", bucket_service_pb2.Bucket)
        ids: set[str] = set()
        for bucket in buckets:
            if bucket.collection == request.name:
                ids.update(await asyncio.to_thread(self._content_ids, f"{bucket.name}/objects/"))
        hashes: dict[str, int] = {}
        info: dict[str, tuple[str, str]] = {}
        ordered = sorted(ids)
        for start in range(0, len(ordered), 1000):
            response = await self.ctx.clients.search.GetVectors(
                search_service_pb2.GetVectorsRequest(collection=request.name, extractor=PHASH, ids=ordered[start : start + 1000])
            )
            for record in response.records:
                hashes[record.id] = int.from_bytes(record.vector.binary, "big")
                info[record.id] = (record.object, record.filename)
        groups = []
        for group in group_near_duplicates(hashes, max_distance):
            groups.append(
                pb.DuplicateGroup(
                    objects=[info[i][0] for i in group],
                    filenames=[info[i][1] for i in group],
                    max_distance=max_pairwise_distance(hashes, group),
                )
            )
        return pb.GetDuplicateReportResponse(groups=groups, image_count=len(hashes))

    def _content_ids(self, prefix: str) -> list[str]:
        store = self.ctx.store
        return [obj.object_name.rsplit("/", 1)[-1] for obj in store.client.list_objects(store.bucket, prefix=prefix, recursive=True)]

    @rpc
    async def ListFeatureExtractors(self, request: pb.ListFeatureExtractorsRequest, context: Any) -> pb.ListFeatureExtractorsResponse:
        return pb.ListFeatureExtractorsResponse(feature_extractors=list((await self._extractors()).values()))
