"""BucketService (protos/lookalike/v1/bucket_service.proto): uploads are forwarded to the ingest
service as one stream, with the bucket's collection and extractors as the target."""

from __future__ import annotations

from typing import Any, AsyncIterator

from lookalike import names
from lookalike.errors import InvalidArgument
from lookalike.server import rpc
from lookalike.v1 import bucket_service_pb2 as pb
from lookalike.v1 import bucket_service_pb2_grpc as grpc_pb
from lookalike.v1 import collection_service_pb2, ingest_service_pb2, namespace_service_pb2, types_pb2
from services.gateway.auth import check_namespace
from services.gateway.context import GatewayServicer
from services.gateway.namespaces import now


class BucketServicer(GatewayServicer, grpc_pb.BucketServiceServicer):

    @rpc
    async def CreateBucket(self, request: pb.CreateBucketRequest, context: Any) -> pb.CreateBucketResponse:
        parent = names.parse(request.parent)
        bucket_id = names.validate_id("bucket", request.bucket_id)
        await self.ctx.resources.get(request.parent, namespace_service_pb2.Namespace)
        collection = names.parse(request.bucket.collection, "collections")
        if collection.namespace != parent.namespace:
            raise InvalidArgument("a bucket can only feed a collection of its own namespace")
        await self.ctx.resources.get(request.bucket.collection, collection_service_pb2.Collection)
        bucket = pb.Bucket(
            name=f"{parent}/buckets/{bucket_id}",
            collection=request.bucket.collection,
            auto_process=request.bucket.auto_process,
            create_time=now(),
        )
        await self.ctx.resources.create(bucket)
        return pb.CreateBucketResponse(bucket=bucket)

    @rpc
    async def GetBucket(self, request: pb.GetBucketRequest, context: Any) -> pb.GetBucketResponse:
        names.parse(request.name, "buckets")
        return pb.GetBucketResponse(bucket=await self.ctx.resources.get(request.name, pb.Bucket))

    @rpc
    async def ListBuckets(self, request: pb.ListBucketsRequest, context: Any) -> pb.ListBucketsResponse:
        names.parse(request.parent)
        return pb.ListBucketsResponse(buckets=await self.ctx.resources.list(request.parent, "buckets", pb.Bucket))

    @rpc
    async def DeleteBucket(self, request: pb.DeleteBucketRequest, context: Any) -> pb.DeleteBucketResponse:
        names.parse(request.name, "buckets")
        await self.ctx.resources.delete(request.name)
        return pb.DeleteBucketResponse()

    async def _target(self, bucket_name: str) -> tuple[types_pb2.IngestTarget, bool]:
        names.parse(bucket_name, "buckets")
        bucket = await self.ctx.resources.get(bucket_name, pb.Bucket)
        collection = await self.ctx.resources.get(bucket.collection, collection_service_pb2.Collection)
        target = types_pb2.IngestTarget(
            bucket=bucket.name,
            collection=collection.name,
            feature_extractors=[e.name for e in collection.feature_extractors],
        )
        return target, bucket.auto_process

    async def _ingest(self, first: Any, rest: AsyncIterator[Any] | None) -> ingest_service_pb2.IngestObjectsResponse:
        target, auto_process = await self._target(first.parent)

        async def requests() -> AsyncIterator[ingest_service_pb2.IngestObjectsRequest]:
            yield ingest_service_pb2.IngestObjectsRequest(
                target=target, auto_process=auto_process, filename=first.filename, content=first.content, metadata=first.metadata
            )
            if rest is not None:
                async for item in rest:
                    yield ingest_service_pb2.IngestObjectsRequest(filename=item.filename, content=item.content, metadata=item.metadata)

        # uploads can be long: no fixed deadline beyond the client's own
        return await self.ctx.clients.ingest.IngestObjects(requests(), timeout=24 * 3600)

    @rpc
    async def UploadObjects(self, request_iterator: AsyncIterator[pb.UploadObjectsRequest], context: Any) -> pb.UploadObjectsResponse:
        iterator = request_iterator.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            raise InvalidArgument("empty upload: no images in the stream") from None
        if not first.parent:
            raise InvalidArgument("the first message must name the bucket (parent)")
        check_namespace(names.parse(first.parent, "buckets").namespace)
        response = await self._ingest(first, iterator)
        accepted = sum(1 for r in response.results if not r.error)
        return pb.UploadObjectsResponse(
            job=response.job, results=response.results, accepted_count=accepted, rejected_count=len(response.results) - accepted
        )

    @rpc
    async def UploadObject(self, request: pb.UploadObjectRequest, context: Any) -> pb.UploadObjectResponse:
        if not request.content:
            raise InvalidArgument("empty upload: content is empty")
        response = await self._ingest(request, None)
        result = response.results[0]
        if result.error:
            raise InvalidArgument(f"{request.filename or 'image'}: {result.error}")
        return pb.UploadObjectResponse(job=response.job, result=result)

    @rpc
    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.GetJobResponse:
        names.parse(request.name, "jobs")
        response = await self.ctx.clients.ingest.GetIngestJob(ingest_service_pb2.GetIngestJobRequest(name=request.name))
        return pb.GetJobResponse(job=response.job)


