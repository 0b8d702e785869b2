"""API keys per namespace, TLS on the gateway, and trace context carried gateway → services."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookalike.devservers import Infra, free_port
from lookalike.stack import Stack
from lookalike.v1 import (
    bucket_service_pb2 as bucket_pb,
    collection_service_pb2 as collection_pb,
    collection_service_pb2_grpc,
    namespace_service_pb2 as namespace_pb,
    namespace_service_pb2_grpc,
    retriever_service_pb2 as retriever_pb,
    retriever_service_pb2_grpc,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
ADMIN_KEY = "admin-test-key-0123456789"


@pytest.fixture(scope="module")
def secured(mesh: Stack) -> str:
    """A second gateway replica with authentication on."""
    address = f"127.0.0.1:{free_port()}"
    mesh.start_service(
        "gateway-auth", module="services.gateway", address=address,
        env={"LOOKALIKE_AUTH_ENABLED": "true", "LOOKALIKE_ADMIN_API_KEY": ADMIN_KEY},
    )
    yield address
    mesh.stop_service("gateway-auth")


def call(stub_method, request, key: str | None = None):  # type: ignore[no-untyped-def]
    metadata = [("authorization", f"Bearer {key}")] if key else []
    return stub_method(request, metadata=metadata, timeout=30)


def status_of(stub_method, request, key: str | None = None) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        call(stub_method, request, key)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_api_keys_scope_each_namespace(secured: str, infra: Infra) -> None:
    channel = grpc.insecure_channel(secured)
    namespaces = namespace_service_pb2_grpc.NamespaceServiceStub(channel)
    collections = collection_service_pb2_grpc.CollectionServiceStub(channel)
    list_request = namespace_pb.ListNamespacesRequest()

    assert status_of(namespaces.ListNamespaces, list_request) == grpc.StatusCode.UNAUTHENTICATED
    assert status_of(namespaces.ListNamespaces, list_request, "lk_kdeadbeef_nope") == grpc.StatusCode.UNAUTHENTICATED
    try:
        namespaces.ListNamespaces(list_request, metadata=[("authorization", "Basic abc")], timeout=10)
        raise AssertionError("a non-bearer credential was accepted")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in exc.details()

    keys = {}
    for ns in ("auth-a", "auth-b"):
        call(namespaces.CreateNamespace, namespace_pb.CreateNamespaceRequest(namespace_id=ns), ADMIN_KEY)
        created = call(namespaces.CreateApiKey, namespace_pb.CreateApiKeyRequest(parent=f"namespaces/{ns}", display_name="ci"), ADMIN_KEY)
        assert created.key.startswith("lk_") and created.api_key.key_prefix == created.key[:12]
        keys[ns] = created
    key_a, key_b = keys["auth-a"].key, keys["auth-b"].key

    assert [n.name for n in call(namespaces.ListNamespaces, list_request, key_a).namespaces] == ["namespaces/auth-a"]
    assert status_of(namespaces.GetNamespace, namespace_pb.GetNamespaceRequest(name="namespaces/auth-a"), key_a) == grpc.StatusCode.OK
    denied = [
        (namespaces.GetNamespace, namespace_pb.GetNamespaceRequest(name="namespaces/auth-b")),
        (collections.CreateCollection, collection_pb.CreateCollectionRequest(parent="namespaces/auth-b", collection_id="x")),
        (collections.ListCollections, collection_pb.ListCollectionsRequest(parent="namespaces/auth-b")),
        (namespaces.CreateApiKey, namespace_pb.CreateApiKeyRequest(parent="namespaces/auth-a")),  # admin only
        (namespaces.CreateNamespace, namespace_pb.CreateNamespaceRequest(namespace_id="auth-c")),
    ]
    for method, request in denied:
        assert status_of(method, request, key_a) == grpc.StatusCode.PERMISSION_DENIED, request
    # the streamed upload is checked on its first message
    buckets = bucket_service_stub(channel)
    try:
        buckets.UploadObjects(iter([bucket_pb.UploadObjectsRequest(parent="namespaces/auth-b/buckets/x", content=b"x")]),
                              metadata=[("authorization", f"Bearer {key_a}")], timeout=10)
        raise AssertionError("upload into another namespace was accepted")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.PERMISSION_DENIED

    # stored hashed: the key store holds a SHA-256, never the key
    records = asyncio.run(read_key_records(infra.env()["LOOKALIKE_NATS_URL"]))
    assert records and all(key_a not in r and key_b not in r for r in records)
    assert any(json.loads(r).get("sha256") for r in records)

    listed = call(namespaces.ListApiKeys, namespace_pb.ListApiKeysRequest(parent="namespaces/auth-a"), ADMIN_KEY).api_keys
    assert [k.name for k in listed] == [keys["auth-a"].api_key.name]
    call(namespaces.DeleteApiKey, namespace_pb.DeleteApiKeyRequest(name=keys["auth-a"].api_key.name), ADMIN_KEY)
    assert status_of(namespaces.ListNamespaces, list_request, key_a) == grpc.StatusCode.UNAUTHENTICATED
    assert status_of(namespaces.ListNamespaces, list_request, key_b) == grpc.StatusCode.OK
    # the CLI's client sends its key (LOOKALIKE_API_KEY) on every call
    from lookalike.cli import Gateway

    cli_gateway = Gateway(secured, api_key=key_b)
    assert [n.name for n in cli_gateway.namespaces.ListNamespaces(list_request, timeout=10).namespaces] == ["namespaces/auth-b"]


def bucket_service_stub(channel: grpc.Channel):  # type: ignore[no-untyped-def]
    from lookalike.v1 import bucket_service_pb2_grpc

    return bucket_service_pb2_grpc.BucketServiceStub(channel)


async def read_key_records(nats_url: str) -> list[str]:
    import nats

    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value("lookalike_resources")
        out = []
        for key in await kv.keys():
            if key.startswith("apikeys/") or "/apiKeys/" in key:
                out.append((await kv.get(key)).value.decode())
        return out
    finally:
        await nc.close()


def test_gateway_serves_tls(mesh: Stack, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    address = f"127.0.0.1:{free_port()}"
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())

    def serving() -> None:
        with grpc.secure_channel(address, credentials) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        assert response.status == health_pb2.HealthCheckResponse.SERVING

    mesh.start_service("gateway-tls", module="services.gateway", address=address,
                       env={"LOOKALIKE_TLS_CERT_FILE": str(cert), "LOOKALIKE_TLS_KEY_FILE": str(key)}, health=serving)
    try:
        with grpc.secure_channel(address, credentials) as channel:
            stub = namespace_service_pb2_grpc.NamespaceServiceStub(channel)
            stub.ListNamespaces(namespace_pb.ListNamespacesRequest(), timeout=10)
        from lookalike.cli import Gateway

        Gateway(address, ca_file=str(cert)).namespaces.ListNamespaces(namespace_pb.ListNamespacesRequest(), timeout=10)
        with grpc.insecure_channel(address) as plain:  # plaintext is refused
            with pytest.raises(grpc.RpcError):
                namespace_service_pb2_grpc.NamespaceServiceStub(plain).ListNamespaces(namespace_pb.ListNamespacesRequest(), timeout=3)
    finally:
        mesh.stop_service("gateway-tls")


def test_trace_context_reaches_the_services(mesh: Stack, gateway) -> None:  # type: ignore[no-untyped-def]
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    gw = gateway
    gw.ensure(gw.namespaces.CreateNamespace, namespace_pb.CreateNamespaceRequest(namespace_id="tracing"))
    gw.ensure(gw.collections.CreateCollection, collection_pb.CreateCollectionRequest(parent="namespaces/tracing", collection_id="c"))
    gw.ensure(gw.retrievers.CreateRetriever, retriever_pb.CreateRetrieverRequest(
        parent="namespaces/tracing", retriever_id="r",
        retriever=retriever_pb.Retriever(stages=[retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(
            collection="namespaces/tracing/collections/c"))])))
    from lookalike.filters import parse_filter_text
    from tests.fixtures_mesh import jpeg_bytes
    import numpy as np

    image = jpeg_bytes(np.full((32, 32, 3), 128, dtype=np.uint8))
    # an out-of-range value is refused by the search service itself: both services log the failure
    request = retriever_pb.ExecuteRetrieverRequest(
        name="namespaces/tracing/retrievers/r", query=retriever_pb.Query(image=image), filter=parse_filter_text("a == 1"))
    request.filter.condition.field = "bad field"
    with pytest.raises(grpc.RpcError):
        gw.retrievers.ExecuteRetriever(request, metadata=[("traceparent", traceparent)], timeout=30)
    gateway_log = (mesh.run_dir / "logs" / "gateway.log").read_text()
    search_log = (mesh.run_dir / "logs" / "search.log").read_text()
    assert f'"trace_id": "{trace_id}"' in gateway_log
    assert f'"trace_id": "{trace_id}"' in search_log
