"""RetrieverService (protos/lookalike/v1/retriever_service.proto)."""

from __future__ import annotations

from typing import Any

from lookalike import names
from lookalike.errors import InvalidArgument, ResourceExhausted
from lookalike.server import rpc
from lookalike.v1 import collection_service_pb2, namespace_service_pb2
from lookalike.v1 import retriever_service_pb2 as pb
from lookalike.v1 import retriever_service_pb2_grpc as grpc_pb
from services.gateway.context import GatewayServicer
from services.gateway.namespaces import now
from services.gateway.pipeline import Pipeline, Query, validate_stages

MAX_TEXT = 2048


class RetrieverServicer(GatewayServicer, grpc_pb.RetrieverServiceServicer):

    @rpc
    async def CreateRetriever(self, request: pb.CreateRetrieverRequest, context: Any) -> pb.CreateRetrieverResponse:
        parent = names.parse(request.parent)
        retriever_id = names.validate_id("retriever", request.retriever_id)
        await self.ctx.resources.get(request.parent, namespace_service_pb2.Namespace)
        await validate_stages(self.ctx, parent.namespace, list(request.retriever.stages))
        retriever = pb.Retriever(
            name=f"{parent}/retrievers/{retriever_id}",
            display_name=request.retriever.display_name or retriever_id,
            stages=request.retriever.stages,
            create_time=now(),
        )
        await self.ctx.resources.create(retriever)
        return pb.CreateRetrieverResponse(retriever=retriever)

    @rpc
    async def GetRetriever(self, request: pb.GetRetrieverRequest, context: Any) -> pb.GetRetrieverResponse:
        names.parse(request.name, "retrievers")
        return pb.GetRetrieverResponse(retriever=await self.ctx.resources.get(request.name, pb.Retriever))

    @rpc
    async def ListRetrievers(self, request: pb.ListRetrieversRequest, context: Any) -> pb.ListRetrieversResponse:
        names.parse(request.parent)
        return pb.ListRetrieversResponse(retrievers=await self.ctx.resources.list(request.parent, "retrievers", pb.Retriever))

    @rpc
    async def DeleteRetriever(self, request: pb.DeleteRetrieverRequest, context: Any) -> pb.DeleteRetrieverResponse:
        names.parse(request.name, "retrievers")
        await self.ctx.resources.delete(request.name)
        return pb.DeleteRetrieverResponse()

    @rpc
    async def ExecuteRetriever(self, request: pb.ExecuteRetrieverRequest, context: Any) -> pb.ExecuteRetrieverResponse:
        names.parse(request.name, "retrievers")
        retriever = await self.ctx.resources.get(request.name, pb.Retriever)
        query = Query(image=request.query.image, text=request.query.text.strip())
        if request.query.image and request.query.image_url:
            raise InvalidArgument("give the query image as bytes or as a URL, not both")
        if request.query.image_url:
            query.image = await self.ctx.fetcher.fetch(request.query.image_url)
        if len(query.image) > self.ctx.settings.max_image_bytes:
            raise ResourceExhausted(f"query image larger than {self.ctx.settings.max_image_bytes} bytes")
        if len(query.text) > MAX_TEXT:
            raise InvalidArgument(f"query text longer than {MAX_TEXT} characters")
        if not query.image and not query.text:
            raise InvalidArgument("the query needs an image, an image URL or text")
        collections = {}
        for stage in retriever.stages:
            if stage.WhichOneof("kind") == "feature_search":
                collections[stage.feature_search.collection] = await self.ctx.resources.get(
                    stage.feature_search.collection, collection_service_pb2.Collection
                )
        extra = request.filter if request.HasField("filter") and request.filter.WhichOneof("kind") else None
        if request.limit > 1000:
            raise InvalidArgument("limit must be at most 1000")
        candidates, timings = await Pipeline(self.ctx, retriever, collections).run(query, extra, request.limit)
        documents = []
        for c in candidates:
            doc = pb.Document(
                object=c.object,
                content_id=c.id,
                score=c.score,
                preview_url=self.ctx.store.preview_url(c.object),
                inlier_count=c.inlier_count,
                filename=c.filename,
                metadata=c.metadata,
                stage_scores=c.stage_scores,
                duplicate_of=c.duplicate_of,
                duplicates=c.duplicates,
            )
            if c.box is not None:
                doc.box.CopyFrom(c.box)
            documents.append(doc)
        return pb.ExecuteRetrieverResponse(documents=documents, stage_timings=timings)
