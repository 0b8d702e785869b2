"""NamespaceService (protos/lookalike/v1/namespace_service.proto)."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from lookalike import names
from lookalike.errors import FailedPrecondition
from lookalike.server import rpc
from lookalike.v1 import bucket_service_pb2, collection_service_pb2, retriever_service_pb2
from lookalike.v1 import namespace_service_pb2 as pb
from lookalike.v1 import namespace_service_pb2_grpc as grpc_pb
from services.gateway.auth import principal_var
from services.gateway.context import GatewayServicer


def now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


class NamespaceServicer(GatewayServicer, grpc_pb.NamespaceServiceServicer):

    @rpc
    async def CreateNamespace(self, request: pb.CreateNamespaceRequest, context: Any) -> pb.CreateNamespaceResponse:
        ns_id = names.validate_id("namespace", request.namespace_id)
        namespace = pb.Namespace(name=f"namespaces/{ns_id}", display_name=request.display_name or ns_id, create_time=now())
        await self.ctx.resources.create(namespace)
        return pb.CreateNamespaceResponse(namespace=namespace)

    @rpc
    async def GetNamespace(self, request: pb.GetNamespaceRequest, context: Any) -> pb.GetNamespaceResponse:
        names.parse(request.name)
        return pb.GetNamespaceResponse(namespace=await self.ctx.resources.get(request.name, pb.Namespace))

    @rpc
    async def ListNamespaces(self, request: pb.ListNamespacesRequest, context: Any) -> pb.ListNamespacesResponse:
        namespaces = await self.ctx.resources.list("", "namespaces", pb.Namespace)
        principal = principal_var.get()
        if principal is not None and not principal.admin:  # a namespace key sees its own namespace only
            namespaces = [n for n in namespaces if n.name == f"namespaces/{principal.namespace}"]
        return pb.ListNamespacesResponse(namespaces=namespaces)

    @rpc
    async def DeleteNamespace(self, request: pb.DeleteNamespaceRequest, context: Any) -> pb.DeleteNamespaceResponse:
        names.parse(request.name)
        await self.ctx.resources.get(request.name, pb.Namespace)
        for kind, cls in (
            ("collections", collection_service_pb2.Collection),
            ("buckets", bucket_service_pb2.Bucket),
            ("retrievers", retriever_service_pb2.Retriever),
        ):
            if await self.ctx.resources.list(request.name, kind, cls):
                raise FailedPrecondition(f"{request.name} still has {kind}; delete them first")
        await self.ctx.resources.delete(request.name)
        return pb.DeleteNamespaceResponse()

    @rpc
    async def CreateApiKey(self, request: pb.CreateApiKeyRequest, context: Any) -> pb.CreateApiKeyResponse:
        names.parse(request.parent)
        await self.ctx.resources.get(request.parent, pb.Namespace)
        api_key, key = await self.ctx.auth.create(request.parent.split("/")[1], request.display_name)
        return pb.CreateApiKeyResponse(api_key=api_key, key=key)

    @rpc
    async def ListApiKeys(self, request: pb.ListApiKeysRequest, context: Any) -> pb.ListApiKeysResponse:
        names.parse(request.parent)
        return pb.ListApiKeysResponse(api_keys=await self.ctx.auth.list(request.parent.split("/")[1]))

    @rpc
    async def DeleteApiKey(self, request: pb.DeleteApiKeyRequest, context: Any) -> pb.DeleteApiKeyResponse:
        await self.ctx.auth.delete(request.name)
        return pb.DeleteApiKeyResponse()
