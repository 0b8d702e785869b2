"""Namespace isolation through the gateway (the real mesh): two namespaces with a collection of the
same id and overlapping images; a search in one never returns the other's items, whatever filter it
carries. Below the API, each namespace's vectors live in their own Milvus collection and every row
carries its namespace, AND-ed into every expression (lookalike.vectorindex)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import struct_pb2
from pymilvus import MilvusClient

from lookalike.cli import Gateway
from lookalike.filters import parse_filter_text
from lookalike.v1 import bucket_service_pb2 as bucket_pb
from lookalike.v1 import collection_service_pb2 as collection_pb
from lookalike.v1 import namespace_service_pb2 as namespace_pb
from lookalike.v1 import retriever_service_pb2 as retriever_pb
from lookalike.v1 import types_pb2
from lookalike.vectorindex import milvus_collection_name
from tests.fixtures_mesh import content_id
from tests.test_e2e import wait_job

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

A, B = "iso-a", "iso-b"
Op = types_pb2.FieldCondition.Operator


def struct(values: dict) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


class Tenant:
    """A namespace with collection `shared` (effnet-lite0 + phash) fed by bucket `uploads`."""

    def __init__(self, gateway: Gateway, namespace: str, photos: dict[str, bytes]) -> None:
        self.gateway, self.namespace = gateway, namespace
        self.parent = f"namespaces/{namespace}"
        self.collection = f"{self.parent}/collections/shared"
        self.bucket = f"{self.parent}/buckets/uploads"
        self.ids = {content_id(data) for data in photos.values()}
        gateway.namespaces.CreateNamespace(namespace_pb.CreateNamespaceRequest(namespace_id=namespace), timeout=10)
        gateway.collections.CreateCollection(
            collection_pb.CreateCollectionRequest(parent=self.parent, collection_id="shared", feature_extractors=["effnet-lite0", "phash"]),
            timeout=60,
        )
        gateway.buckets.CreateBucket(
            bucket_pb.CreateBucketRequest(parent=self.parent, bucket_id="uploads",
                                          bucket=bucket_pb.Bucket(collection=self.collection, auto_process=True)),
            timeout=10,
        )

        def uploads() -> Iterator[bucket_pb.UploadObjectsRequest]:
            for i, (name, data) in enumerate(photos.items()):
                # metadata that names the *other* tenant's namespace, to tempt crafted filters
                meta = {"owner": namespace, "name": name, "namespace": namespace, "tags": [namespace, "photo"]}
                yield bucket_pb.UploadObjectsRequest(parent=self.bucket if i == 0 else "", filename=f"{name}.jpg",
                                                     content=data, metadata=struct(meta))

        job = wait_job(gateway, gateway.buckets.UploadObjects(uploads(), timeout=120).job)
        assert job.indexed == len(photos) and job.failed == 0
        for rid, extractor in (("visual", ""), ("hash", "phash")):
            gateway.retrievers.CreateRetriever(
                retriever_pb.CreateRetrieverRequest(
                    parent=self.parent, retriever_id=rid,
                    retriever=retriever_pb.Retriever(stages=[retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(
                        collection=self.collection, feature_extractor=extractor, limit=50))]),
                ),
                timeout=10,
            )

    def search(self, image: bytes, flt: types_pb2.Filter | None = None, retriever: str = "visual") -> list[retriever_pb.Document]:
        request = retriever_pb.ExecuteRetrieverRequest(name=f"{self.parent}/retrievers/{retriever}", query=retriever_pb.Query(image=image))
        if flt is not None:
            request.filter.CopyFrom(flt)
        return list(self.gateway.retrievers.ExecuteRetriever(request, timeout=60).documents)

    def assert_own(self, documents: list[retriever_pb.Document], context: object = "") -> None:
        for doc in documents:
            assert doc.content_id in self.ids, (context, doc.filename)
            assert doc.object.startswith(f"{self.bucket}/objects/"), (context, doc.object)
            assert f"/{self.parent}/buckets/" in doc.preview_url, (context, doc.preview_url)
            assert doc.metadata["owner"] == self.namespace, (context, dict(doc.metadata))


@pytest.fixture(scope="module")
def tenants(gateway: Gateway, photos: dict[str, bytes]) -> tuple[Tenant, Tenant]:
    names = sorted(photos)
    # 8 photos each, the middle 4 in both namespaces (same bytes, same content ids)
    a = Tenant(gateway, A, {n: photos[n] for n in names[:8]})
    b = Tenant(gateway, B, {n: photos[n] for n in names[4:]})
    assert len(a.ids & b.ids) == 4
    return a, b


def test_each_namespace_finds_only_its_own_images(tenants: tuple[Tenant, Tenant], photos: dict[str, bytes]) -> None:
    a, b = tenants
    for name, image in photos.items():
        for tenant in (a, b):
            for retriever in ("visual", "hash"):
                documents = tenant.search(image, retriever=retriever)
                assert documents, (tenant.namespace, name, retriever)
                tenant.assert_own(documents, (name, retriever))
                if content_id(image) in tenant.ids and retriever == "visual":
                    # its own copy of a shared image: its own object, preview and metadata
                    assert documents[0].content_id == content_id(image)
                    assert documents[0].metadata["namespace"] == tenant.namespace
                if retriever == "visual":
                    assert len(documents) == 8  # limit 50: all of its own, nothing more
    # the same photo uploaded to both: two objects, one per namespace
    shared = sorted(a.ids & b.ids)[0]
    top_a = next(d for d in a.search(photos[next(n for n in photos if content_id(photos[n]) == shared)]) if d.content_id == shared)
    top_b = next(d for d in b.search(photos[next(n for n in photos if content_id(photos[n]) == shared)]) if d.content_id == shared)
    assert top_a.object != top_b.object and top_a.preview_url != top_b.preview_url


def condition(field: str, op: int, value: object = None, values: list[object] | None = None) -> types_pb2.Filter:
    def scalar(v: object) -> types_pb2.ScalarValue:
        if isinstance(v, bool):
            return types_pb2.ScalarValue(bool_value=v)
        if isinstance(v, int):
            return types_pb2.ScalarValue(int_value=v)
        return types_pb2.ScalarValue(string_value=str(v))

    cond = types_pb2.FieldCondition(field=field, operator=op)  # type: ignore[arg-type]
    if value is not None:
        cond.value.CopyFrom(scalar(value))
    for v in values or []:
        cond.values.append(scalar(v))
    return types_pb2.Filter(condition=cond)


CRAFTED_EMPTY = {
    # conditions on a field called `namespace` are about the metadata key, never the stored column
    "metadata namespace is B": condition("namespace", Op.OPERATOR_EQ, B),
    "metadata namespace is not A": condition("namespace", Op.OPERATOR_NE, A),
    "metadata namespace in [B]": condition("namespace", Op.OPERATOR_IN, values=[B, "default"]),
    "owner is B": parse_filter_text(f"owner == {B}"),
    "tags contain B": parse_filter_text(f"tags contains {B}"),
    # quotes, brackets, parentheses and operators inside values stay inside the literal
    "quote breaks out": condition("owner", Op.OPERATOR_EQ, f'{A}" or namespace == "{B}'),
    "single quotes": condition("owner", Op.OPERATOR_EQ, f"{A}' or namespace == '{B}"),
    "paren breaks out": condition("owner", Op.OPERATOR_EQ, f'x") or (namespace == "{B}") or ("'),
    "in-list breaks out": condition("owner", Op.OPERATOR_IN, values=["x", f'"] or namespace == "{B}" or owner in ["']),
    "backslash escape": condition("owner", Op.OPERATOR_EQ, f'\\" or namespace == \\"{B}'),
    "or true": condition("owner", Op.OPERATOR_EQ, "x or true"),
    "sql comment": condition("owner", Op.OPERATOR_EQ, "x' OR 1=1 --"),
    "json_contains smuggle": condition("tags", Op.OPERATOR_CONTAINS, f'{B}") or json_contains(metadata["tags"], "{A}'),
    "not own": parse_filter_text(f"not owner == {A}"),
}


@pytest.mark.parametrize("label", list(CRAFTED_EMPTY))
def test_crafted_filters_match_nothing_of_the_other_namespace(tenants: tuple[Tenant, Tenant], photos: dict[str, bytes], label: str) -> None:
    a, b = tenants
    b_only = next(n for n in sorted(photos) if content_id(photos[n]) in b.ids - a.ids)
    documents = a.search(photos[b_only], CRAFTED_EMPTY[label])
    assert documents == [], (label, [(d.filename, dict(d.metadata)) for d in documents])


@pytest.mark.parametrize(
    "flt",
    [
        f"owner == {A} or namespace == {B}",
        f"owner == {B} or name != nothing",
        f"(namespace == {B} or owner == {B}) or tags contains photo",
        f"owner in [{A}, {B}] and not namespace == {A}x",
    ],
)
def test_widening_filters_still_stay_in_the_namespace(tenants: tuple[Tenant, Tenant], photos: dict[str, bytes], flt: str) -> None:
    a, b = tenants
    for name in sorted(photos):
        if content_id(photos[name]) in b.ids - a.ids:
            documents = a.search(photos[name], parse_filter_text(flt))
            assert documents, flt
            a.assert_own(documents, flt)


@pytest.mark.parametrize(
    "field",
    ['namespace"] == "x" or namespace == "iso-b" or metadata["a', "namespace == 'iso-b'", "$meta", "metadata.namespace", "a b", ""],
)
def test_injected_field_names_are_invalid_argument(tenants: tuple[Tenant, Tenant], photos: dict[str, bytes], field: str) -> None:
    a, _ = tenants
    with pytest.raises(grpc.RpcError) as exc:
        a.search(photos[sorted(photos)[0]], condition(field, Op.OPERATOR_EQ, B))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_resources_cannot_point_into_another_namespace(tenants: tuple[Tenant, Tenant], gateway: Gateway) -> None:
    a, b = tenants
    with pytest.raises(grpc.RpcError) as exc:
        gateway.retrievers.CreateRetriever(
            retriever_pb.CreateRetrieverRequest(parent=a.parent, retriever_id="peek", retriever=retriever_pb.Retriever(
                stages=[retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(collection=b.collection, limit=5))])),
            timeout=10,
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as exc:
        gateway.buckets.CreateBucket(
            bucket_pb.CreateBucketRequest(parent=a.parent, bucket_id="sneak", bucket=bucket_pb.Bucket(collection=b.collection, auto_process=True)),
            timeout=10,
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_milvus_holds_each_namespace_apart(tenants: tuple[Tenant, Tenant], milvus_uri: str) -> None:
    """Below the API: one Milvus collection per namespace × collection × extractor, and every row
    stores the namespace it belongs to."""
    client = MilvusClient(uri=milvus_uri)
    for tenant in tenants:
        for extractor in ("effnet-lite0", "phash"):
            name = milvus_collection_name(tenant.namespace, "shared", extractor)
            rows = client.query(name, filter='id != ""', output_fields=["namespace", "object"], consistency_level="Strong")
            assert len(rows) == 8
            assert {r["namespace"] for r in rows} == {tenant.namespace}
            assert all(r["object"].startswith(f"{tenant.bucket}/objects/") for r in rows)
    assert milvus_collection_name(A, "shared", "phash") != milvus_collection_name(B, "shared", "phash")


def test_deleting_one_namespaces_collection_leaves_the_other_intact(tenants: tuple[Tenant, Tenant], gateway: Gateway, photos: dict[str, bytes]) -> None:
    a, b = tenants
    gateway.buckets.DeleteBucket(bucket_pb.DeleteBucketRequest(name=b.bucket), timeout=30)
    gateway.collections.DeleteCollection(collection_pb.DeleteCollectionRequest(name=b.collection), timeout=30)
    assert gateway.collections.GetCollection(collection_pb.GetCollectionRequest(name=a.collection), timeout=10).collection.image_count == 8
    shared = next(n for n in sorted(photos) if content_id(photos[n]) in a.ids & b.ids)
    documents = a.search(photos[shared])
    assert documents[0].content_id == content_id(photos[shared])
    a.assert_own(documents)
