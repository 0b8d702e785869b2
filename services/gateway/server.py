"""Gateway: the only public API (lookalike.v1 NamespaceService, CollectionService, BucketService,
RetrieverService). It orchestrates the internal services; it holds no model and no index."""

from __future__ import annotations

from lookalike.clients import ServiceClients
from lookalike.config import Settings
from lookalike.objectstore import MinioObjectStore
from lookalike.queue import RecordStore, connect
from lookalike.server import ServiceSpec
from lookalike.v1 import (
    bucket_service_pb2,
    bucket_service_pb2_grpc,
    collection_service_pb2,
    collection_service_pb2_grpc,
    namespace_service_pb2,
    namespace_service_pb2_grpc,
    retriever_service_pb2,
    retriever_service_pb2_grpc,
)
from services.gateway.auth import ApiKeys
from services.gateway.buckets import BucketServicer
from services.gateway.collections import CollectionServicer
from services.gateway.context import GatewayContext
from services.gateway.namespaces import NamespaceServicer
from services.gateway.resources import Resources
from services.gateway.retrievers import RetrieverServicer
from services.gateway.urlfetch import UrlFetcher


def build(settings: Settings) -> ServiceSpec:
    store = RecordStore(None, settings.resource_bucket)  # type: ignore[arg-type]  # bound at start
    ctx = GatewayContext(
        settings=settings,
        resources=Resources(store),
        clients=ServiceClients(settings),
        store=MinioObjectStore(settings),
        fetcher=UrlFetcher(settings.max_image_bytes, settings.url_fetch_timeout_s, settings.url_fetch_allow_private),
        auth=ApiKeys(settings, store),
    )
    nats_conn = {}

    async def start() -> None:
        nats_conn["nc"] = await connect(settings, "lookalike-gateway")
        store.js = nats_conn["nc"].jetstream()
        await store.open()

    async def stop() -> None:
        await ctx.clients.close()
        if "nc" in nats_conn:
            await nats_conn["nc"].drain()

    def service(module: object, name: str) -> str:
        return module.DESCRIPTOR.services_by_name[name].full_name  # type: ignore[attr-defined]

    return ServiceSpec(
        name="gateway",
        address=settings.gateway_addr,
        servicers=[
            (namespace_service_pb2_grpc.add_NamespaceServiceServicer_to_server, NamespaceServicer(ctx), service(namespace_service_pb2, "NamespaceService")),
            (collection_service_pb2_grpc.add_CollectionServiceServicer_to_server, CollectionServicer(ctx), service(collection_service_pb2, "CollectionService")),
            (bucket_service_pb2_grpc.add_BucketServiceServicer_to_server, BucketServicer(ctx), service(bucket_service_pb2, "BucketService")),
            (retriever_service_pb2_grpc.add_RetrieverServiceServicer_to_server, RetrieverServicer(ctx), service(retriever_service_pb2, "RetrieverService")),
        ],
        on_start=[start],
        on_stop=[stop],
    )
