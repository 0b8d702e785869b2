"""Bad input never crashes a service or loses data: each case is a clear gRPC status, and the
catalog is unchanged and searchable afterwards."""

from __future__ import annotations

import io
import struct
import zlib

import grpc
import pytest
from PIL import Image

from lookalike.cli import Gateway
from lookalike.v1 import (
    bucket_service_pb2 as bucket_pb,
    collection_service_pb2 as collection_pb,
    namespace_service_pb2 as namespace_pb,
    retriever_service_pb2 as retriever_pb,
    types_pb2,
)
from tests.test_e2e import Catalog

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.fixture(scope="module")
def catalog(gateway: Gateway, photos: dict[str, bytes]) -> Catalog:
    return Catalog(gateway, {k: photos[k] for k in ("chelsea", "coffee", "rocket", "china")}, "badinput")


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims 10 gigapixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b"")


def truncated_jpeg(photo: bytes) -> bytes:
    return photo[: len(photo) // 2]


def expect(code: grpc.StatusCode, call, *args, contains: str = "") -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call(*args, timeout=30)
    assert err.value.code() == code, (err.value.code(), err.value.details())
    assert contains.lower() in (err.value.details() or "").lower(), err.value.details()
    return err.value.details()


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (b"this is not an image at all", grpc.StatusCode.INVALID_ARGUMENT, "not a recognised image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, grpc.StatusCode.INVALID_ARGUMENT, ""),
        (b"", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        (png_bomb(), grpc.StatusCode.INVALID_ARGUMENT, "pixels"),
    ],
    ids=["text", "corrupt-jpeg", "empty", "decompression-bomb"],
)
def test_bad_upload_is_refused(catalog: Catalog, content: bytes, code: grpc.StatusCode, message: str) -> None:
    before = catalog.count()
    request = bucket_pb.UploadObjectRequest(parent=catalog.bucket, filename="bad.jpg", content=content)
    details = expect(code, catalog.gateway.buckets.UploadObject, request, contains=message)
    assert "bad.jpg" in details or not content
    assert catalog.count() == before


def test_bad_images_in_a_stream_are_rejected_one_by_one(catalog: Catalog, photos: dict[str, bytes]) -> None:
    items = [
        bucket_pb.UploadObjectsRequest(parent=catalog.bucket, filename="broken.jpg", content=b"garbage"),
        bucket_pb.UploadObjectsRequest(filename="bomb.png", content=png_bomb()),
        bucket_pb.UploadObjectsRequest(filename="astronaut.jpg", content=photos["astronaut"]),
    ]
    response = catalog.gateway.buckets.UploadObjects(iter(items), timeout=60)
    assert [bool(r.error) for r in response.results] == [True, True, False]
    assert response.accepted_count == 1 and response.rejected_count == 2
    from tests.test_e2e import wait_job

    job = wait_job(catalog.gateway, response.job)
    assert job.indexed == 1 and job.failed == 0
    top = catalog.search(retriever_pb.Query(image=photos["astronaut"])).documents[0]
    assert top.filename == "astronaut.jpg"


def test_truncated_jpeg_ends_as_a_job_failure_not_a_retry_loop(catalog: Catalog, photos: dict[str, bytes]) -> None:
    """A JPEG cut off in its scan data passes the cheap upload check; the worker's full decode fails,
    and the image lands in the dead-letter stream with its reason instead of being retried forever."""
    before = catalog.count()
    response = catalog.gateway.buckets.UploadObject(
        bucket_pb.UploadObjectRequest(parent=catalog.bucket, filename="cut.jpg", content=truncated_jpeg(photos["rocket"])), timeout=30
    )
    from tests.test_e2e import wait_job

    job = wait_job(catalog.gateway, response.job)
    assert job.failed == 1 and job.indexed == 0 and job.state == types_pb2.Job.STATE_FAILED
    assert "truncated" in job.failures[0].reason and job.failures[0].filename == "cut.jpg"
    assert catalog.count() == before


def test_empty_stream_is_refused(catalog: Catalog) -> None:
    expect(grpc.StatusCode.INVALID_ARGUMENT, catalog.gateway.buckets.UploadObjects, iter([]), contains="empty")


def test_unknown_resources_are_not_found(catalog: Catalog, photos: dict[str, bytes]) -> None:
    gw = catalog.gateway
    expect(grpc.StatusCode.NOT_FOUND, gw.collections.GetCollection, collection_pb.GetCollectionRequest(name=f"{catalog.parent}/collections/nope"))
    expect(grpc.StatusCode.NOT_FOUND, gw.namespaces.GetNamespace, namespace_pb.GetNamespaceRequest(name="namespaces/nobody"))
    expect(
        grpc.StatusCode.NOT_FOUND, gw.buckets.UploadObject,
        bucket_pb.UploadObjectRequest(parent=f"{catalog.parent}/buckets/nope", filename="x.jpg", content=photos["coffee"]),
    )
    expect(
        grpc.StatusCode.NOT_FOUND, gw.buckets.CreateBucket,
        bucket_pb.CreateBucketRequest(parent=catalog.parent, bucket_id="orphan", bucket=bucket_pb.Bucket(collection=f"{catalog.parent}/collections/nope")),
    )
    expect(
        grpc.StatusCode.NOT_FOUND, gw.retrievers.ExecuteRetriever,
        retriever_pb.ExecuteRetrieverRequest(name=f"{catalog.parent}/retrievers/nope", query=retriever_pb.Query(image=photos["coffee"])),
    )
    expect(grpc.StatusCode.NOT_FOUND, gw.buckets.GetJob, bucket_pb.GetJobRequest(name=f"{catalog.parent}/jobs/0123abcd"))


def test_malformed_names_and_ids_are_invalid(catalog: Catalog) -> None:
    gw = catalog.gateway
    expect(grpc.StatusCode.INVALID_ARGUMENT, gw.collections.GetCollection, collection_pb.GetCollectionRequest(name="collections/x"))
    expect(grpc.StatusCode.INVALID_ARGUMENT, gw.namespaces.CreateNamespace, namespace_pb.CreateNamespaceRequest(namespace_id="Bad Name!"))
    expect(
        grpc.StatusCode.INVALID_ARGUMENT, gw.collections.CreateCollection,
        collection_pb.CreateCollectionRequest(parent=catalog.parent, collection_id="x", feature_extractors=["no-such-model"]),
        contains="unknown feature extractor",
    )
    expect(grpc.StatusCode.ALREADY_EXISTS, gw.namespaces.CreateNamespace, namespace_pb.CreateNamespaceRequest(namespace_id=catalog.namespace))


@pytest.mark.parametrize(
    "flt",
    [
        types_pb2.Filter(condition=types_pb2.FieldCondition(field='category"] == "x" or metadata["a', operator=types_pb2.FieldCondition.OPERATOR_EQ, value=types_pb2.ScalarValue(string_value="food"))),
        types_pb2.Filter(condition=types_pb2.FieldCondition(field="category")),
        types_pb2.Filter(condition=types_pb2.FieldCondition(field="n", operator=types_pb2.FieldCondition.OPERATOR_GT, value=types_pb2.ScalarValue(double_value=float("nan")))),
        types_pb2.Filter(all_of=types_pb2.FilterGroup()),
    ],
    ids=["injected-field", "no-operator", "nan", "empty-group"],
)
def test_malformed_filter_is_invalid(catalog: Catalog, photos: dict[str, bytes], flt: types_pb2.Filter) -> None:
    request = retriever_pb.ExecuteRetrieverRequest(name=catalog.retriever, query=retriever_pb.Query(image=photos["coffee"]), filter=flt)
    expect(grpc.StatusCode.INVALID_ARGUMENT, catalog.gateway.retrievers.ExecuteRetriever, request)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        (retriever_pb.Query(image=b"garbage bytes"), grpc.StatusCode.INVALID_ARGUMENT),
        (retriever_pb.Query(image=png_bomb()), grpc.StatusCode.INVALID_ARGUMENT),
        (retriever_pb.Query(), grpc.StatusCode.INVALID_ARGUMENT),
        (retriever_pb.Query(text="a cat"), grpc.StatusCode.FAILED_PRECONDITION),
    ],
    ids=["garbage", "bomb", "empty", "text-without-text-model"],
)
def test_bad_queries(catalog: Catalog, query: retriever_pb.Query, code: grpc.StatusCode) -> None:
    expect(code, catalog.gateway.retrievers.ExecuteRetriever, retriever_pb.ExecuteRetrieverRequest(name=catalog.retriever, query=query))


def test_invalid_retriever_is_refused_at_create(catalog: Catalog) -> None:
    gw = catalog.gateway
    cases = [
        [],
        [retriever_pb.Stage(rerank=retriever_pb.RerankStage(limit=5))],
        [retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(collection=catalog.collection, limit=5000))],
        [retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(collection=catalog.collection, feature_extractor="clip"))],
        [retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(collection="namespaces/e2e/collections/photos"))],
    ]
    for stages in cases:
        expect(
            grpc.StatusCode.INVALID_ARGUMENT, gw.retrievers.CreateRetriever,
            retriever_pb.CreateRetrieverRequest(parent=catalog.parent, retriever_id="broken", retriever=retriever_pb.Retriever(stages=stages)),
        )


def test_services_still_serve_after_all_that(catalog: Catalog, photos: dict[str, bytes]) -> None:
    assert catalog.search(retriever_pb.Query(image=photos["china"])).documents[0].filename == "china.jpg"
    assert catalog.count() >= 4


def test_image_is_fine_after_a_bad_one(catalog: Catalog) -> None:
    """A valid PNG right after garbage is accepted (nothing sticky in the upload path)."""
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(out, "PNG")
    response = catalog.gateway.buckets.UploadObject(
        bucket_pb.UploadObjectRequest(parent=catalog.bucket, filename="green.png", content=out.getvalue()), timeout=30
    )
    assert response.result.content_id and not response.result.error
