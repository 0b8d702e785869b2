"""The whole slice through every service and every real server: namespace → collection → bucket
upload (auto_process) → MinIO + JetStream → worker → encoder → Milvus → retriever → ranked results."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import signal
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image, ImageOps

from lookalike.cli import Gateway
from lookalike.filters import parse_filter_text
from lookalike.stack import Stack
from lookalike.v1 import (
    bucket_service_pb2 as bucket_pb,
    collection_service_pb2 as collection_pb,
    namespace_service_pb2 as namespace_pb,
    retriever_service_pb2 as retriever_pb,
    types_pb2,
)
from tests.fixtures_mesh import content_id, jpeg_bytes

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CATEGORIES = {
    "astronaut": "people", "camera": "people", "chelsea": "animal", "coffee": "food", "rocket": "space",
    "hubble": "space", "retina": "science", "cells": "science", "coins": "object", "china": "place",
    "flower": "plant", "motorcycle": "object",
}


def struct(values: dict) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def wait_job(gateway: Gateway, job: str, timeout: float = 120) -> types_pb2.Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = gateway.buckets.GetJob(bucket_pb.GetJobRequest(name=job), timeout=10).job
        if current.done:
            return current
        time.sleep(0.2)
    raise AssertionError(f"job {job} not done: {current}")


class Catalog:
    """One namespace with an indexed collection of the real photos, shared by the tests below."""

    def __init__(self, gateway: Gateway, photos: dict[str, bytes], namespace: str) -> None:
        self.gateway = gateway
        self.namespace = namespace
        self.parent = f"namespaces/{namespace}"
        self.collection = f"{self.parent}/collections/photos"
        self.bucket = f"{self.parent}/buckets/uploads"
        self.retriever = f"{self.parent}/retrievers/visual"
        gateway.namespaces.CreateNamespace(namespace_pb.CreateNamespaceRequest(namespace_id=namespace), timeout=10)
        created = gateway.collections.CreateCollection(
            collection_pb.CreateCollectionRequest(
                parent=self.parent, collection_id="photos", feature_extractors=["effnet-lite0", "phash"],
                index=types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_HNSW),
            ),
            timeout=60,
        ).collection
        assert [e.name for e in created.feature_extractors] == ["effnet-lite0", "phash"]
        gateway.buckets.CreateBucket(
            bucket_pb.CreateBucketRequest(
                parent=self.parent, bucket_id="uploads", bucket=bucket_pb.Bucket(collection=self.collection, auto_process=True)
            ),
            timeout=10,
        )

        def requests() -> Iterator[bucket_pb.UploadObjectsRequest]:
            for i, (name, data) in enumerate(photos.items()):
                yield bucket_pb.UploadObjectsRequest(
                    parent=self.bucket if i == 0 else "", filename=f"{name}.jpg", content=data,
                    metadata=struct({"category": CATEGORIES[name], "name": name}),
                )

        self.upload = gateway.buckets.UploadObjects(requests(), timeout=120)
        self.job = wait_job(gateway, self.upload.job)
        gateway.retrievers.CreateRetriever(
            retriever_pb.CreateRetrieverRequest(
                parent=self.parent, retriever_id="visual",
                retriever=retriever_pb.Retriever(stages=[retriever_pb.Stage(
                    feature_search=retriever_pb.FeatureSearchStage(collection=self.collection, limit=5))]),
            ),
            timeout=10,
        )

    def search(self, query: retriever_pb.Query, flt: str | None = None, retriever: str | None = None) -> retriever_pb.ExecuteRetrieverResponse:
        request = retriever_pb.ExecuteRetrieverRequest(name=retriever or self.retriever, query=query)
        if flt:
            request.filter.CopyFrom(parse_filter_text(flt))
        return self.gateway.retrievers.ExecuteRetriever(request, timeout=60)

    def count(self) -> int:
        return self.gateway.collections.GetCollection(collection_pb.GetCollectionRequest(name=self.collection), timeout=10).collection.image_count


@pytest.fixture(scope="module")
def catalog(gateway: Gateway, photos: dict[str, bytes]) -> Catalog:
    return Catalog(gateway, photos, "e2e")


def edits(photo: bytes) -> dict[str, bytes]:
    image = Image.open(io.BytesIO(photo)).convert("RGB")
    w, h = image.size
    return {
        "crop": jpeg_bytes(image.crop((int(w * 0.15), int(h * 0.1), int(w * 0.85), int(h * 0.8)))),
        "rotate": jpeg_bytes(image.rotate(12)),
        "grayscale": jpeg_bytes(ImageOps.grayscale(image)),
        "jpeg": jpeg_bytes(image, quality=15),
        "mirror": jpeg_bytes(ImageOps.mirror(image)),
        "small": jpeg_bytes(image.resize((w // 4, h // 4))),
    }


def test_upload_indexes_every_image_once(catalog: Catalog, photos: dict[str, bytes]) -> None:
    assert catalog.upload.accepted_count == len(photos) and catalog.upload.rejected_count == 0
    assert catalog.job.indexed == len(photos) and catalog.job.failed == 0
    assert catalog.job.state == types_pb2.Job.STATE_SUCCEEDED
    assert catalog.count() == len(photos)
    # content-addressed: the object name ends in the SHA-256 of the bytes
    for result in catalog.upload.results:
        assert result.object == f"{catalog.bucket}/objects/{result.content_id}"
        assert result.content_id == content_id(photos[result.filename.removesuffix(".jpg")])


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket", "china", "motorcycle"])
def test_edited_copies_find_their_original_first(catalog: Catalog, photos: dict[str, bytes], name: str) -> None:
    for edit, query in edits(photos[name]).items():
        documents = catalog.search(retriever_pb.Query(image=query)).documents
        assert documents, edit
        assert documents[0].filename == f"{name}.jpg", (edit, [d.filename for d in documents])
        scores = [d.score for d in documents]
        assert scores == sorted(scores, reverse=True)


def test_result_carries_preview_url_and_metadata(catalog: Catalog, photos: dict[str, bytes]) -> None:
    top = catalog.search(retriever_pb.Query(image=photos["coffee"])).documents[0]
    assert top.filename == "coffee.jpg"
    assert top.score == pytest.approx(1.0, abs=1e-3)  # the catalog image itself: cosine 1
    assert dict(top.metadata.items()) == {"category": "food", "name": "coffee"}
    response = httpx.get(top.preview_url, timeout=10)  # a presigned GET on the object store
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == top.content_id == content_id(photos["coffee"])
    assert catalog.search(retriever_pb.Query(image=photos["coffee"])).stage_timings[0].stage == "feature_search[0]"


def test_metadata_filter_narrows_results(catalog: Catalog, photos: dict[str, bytes]) -> None:
    unfiltered = catalog.search(retriever_pb.Query(image=photos["chelsea"]))
    assert {d.metadata["category"] for d in unfiltered.documents} != {"space"}
    filtered = catalog.search(retriever_pb.Query(image=photos["chelsea"]), flt="category == space")
    assert filtered.documents and {d.metadata["category"] for d in filtered.documents} == {"space"}
    nested = catalog.search(retriever_pb.Query(image=photos["chelsea"]), flt="category in [food, animal] and not name == coffee")
    assert [d.filename for d in nested.documents] == ["chelsea.jpg"]
    # a value that looks like an expression is only ever a literal: it matches nothing
    injected = catalog.search(retriever_pb.Query(image=photos["chelsea"]), flt='category == "x\\" or 1 == 1 or \\""')
    assert list(injected.documents) == []


@pytest.fixture(scope="module")
def image_server(photos: dict[str, bytes]) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            name = self.path.strip("/").removesuffix(".jpg")
            if name in photos:
                body, ctype = edits(photos[name])["crop"], "image/jpeg"
            else:
                body, ctype = b"<html>nope</html>", "text/html"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_query_by_url(catalog: Catalog, image_server: str) -> None:
    documents = catalog.search(retriever_pb.Query(image_url=f"{image_server}/rocket.jpg")).documents
    assert documents[0].filename == "rocket.jpg"
    with pytest.raises(grpc.RpcError) as err:
        catalog.search(retriever_pb.Query(image_url=f"{image_server}/page.html"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not an image" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        catalog.search(retriever_pb.Query(image_url="file:///etc/passwd"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_rerank_boxes_the_cropped_region(catalog: Catalog, photos: dict[str, bytes], gateway: Gateway) -> None:
    gateway.retrievers.CreateRetriever(
        retriever_pb.CreateRetrieverRequest(
            parent=catalog.parent, retriever_id="visual-rerank",
            retriever=retriever_pb.Retriever(stages=[
                retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(collection=catalog.collection, limit=10)),
                retriever_pb.Stage(rerank=retriever_pb.RerankStage(limit=3)),
            ]),
        ),
        timeout=10,
    )
    image = Image.open(io.BytesIO(photos["china"]))
    w, h = image.size
    crop = (int(w * 0.30), int(h * 0.20), int(w * 0.90), int(h * 0.85))
    response = catalog.search(retriever_pb.Query(image=jpeg_bytes(image.crop(crop))), retriever=f"{catalog.parent}/retrievers/visual-rerank")
    top = response.documents[0]
    assert top.filename == "china.jpg" and top.inlier_count >= 20 and top.HasField("box")
    truth = (crop[0] / w, crop[1] / h, crop[2] / w, crop[3] / h)
    got = (top.box.x_min, top.box.y_min, top.box.x_max, top.box.y_max)
    inter = max(0, min(truth[2], got[2]) - max(truth[0], got[0])) * max(0, min(truth[3], got[3]) - max(truth[1], got[1]))
    union = (truth[2] - truth[0]) * (truth[3] - truth[1]) + (got[2] - got[0]) * (got[3] - got[1]) - inter
    assert inter / union >= 0.7, (truth, got)
    assert len(response.documents) <= 3
    assert [t.stage for t in response.stage_timings] == ["feature_search[0]", "rerank[1]"]


def test_reupload_is_idempotent(catalog: Catalog, photos: dict[str, bytes]) -> None:
    before = catalog.count()
    response = catalog.gateway.buckets.UploadObject(
        bucket_pb.UploadObjectRequest(parent=catalog.bucket, filename="again.jpg", content=photos["coffee"],
                                      metadata=struct({"category": "food", "name": "coffee"})),
        timeout=30,
    )
    wait_job(catalog.gateway, response.job)
    assert response.result.content_id == content_id(photos["coffee"])
    assert catalog.count() == before


def test_reflection_lists_the_public_services(mesh: Stack) -> None:
    with grpc.insecure_channel(mesh.gateway_addr) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        services = {s.name for r in responses for s in r.list_services_response.service}
    assert {
        "lookalike.v1.NamespaceService", "lookalike.v1.CollectionService", "lookalike.v1.BucketService",
        "lookalike.v1.RetrieverService", "grpc.health.v1.Health",
    } <= services


def test_killed_services_come_back_with_the_catalog_intact(catalog: Catalog, photos: dict[str, bytes], mesh: Stack) -> None:
    before = [d.content_id for d in catalog.search(retriever_pb.Query(image=photos["flower"])).documents]
    count = catalog.count()
    for name in ("search", "gateway", "encoder"):
        process = mesh.services[name]


        os.killpg(process.pgid, signal.SIGKILL)
        process.stop(timeout=5)
        mesh.start_service(name)
    after = [d.content_id for d in catalog.search(retriever_pb.Query(image=photos["flower"])).documents]
    assert after == before and after[0] == content_id(photos["flower"])
    assert catalog.count() == count


def test_sigterm_drains_and_exits_cleanly(mesh: Stack) -> None:
    process = mesh.services["rerank"]
    import os

    os.killpg(process.pgid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while process.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process._popen is not None and process._popen.wait(timeout=15) == 0
    assert not process.alive()
    assert "rerank stopped" in process.log_path.read_text()
    mesh.start_service("rerank")


def test_cli_indexes_a_folder_and_searches(mesh: Stack, photos: dict[str, bytes], tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from lookalike.cli import app

    folder = tmp_path / "pictures"
    (folder / "space").mkdir(parents=True)
    (folder / "space" / "rocket.jpg").write_bytes(photos["rocket"])
    (folder / "cat.jpg").write_bytes(photos["chelsea"])
    (folder / "cat.jpg.json").write_text('{"category": "animal"}')
    (folder / "notes.txt").write_text("not an image: ignored")
    runner = CliRunner()
    common = ["--gateway", mesh.gateway_addr, "--namespace", "cli"]
    result = runner.invoke(app, ["index", str(folder), "--collection", "pics", "--meta", "owner=me", *common])
    assert result.exit_code == 0, result.output
    assert "indexed 2, failed 0, rejected 0" in result.output
    query = tmp_path / "q.jpg"
    query.write_bytes(edits(photos["chelsea"])["crop"])
    result = runner.invoke(app, ["search", str(query), "--collection", "pics", "--json", *common])
    assert result.exit_code == 0, result.output
    import json

    documents = json.loads(result.output)["documents"]
    assert documents[0]["filename"] == "cat.jpg"
    assert documents[0]["metadata"] == {"category": "animal", "owner": "me"}
    assert {d["filename"] for d in documents} == {"cat.jpg", "space/rocket.jpg"}
    result = runner.invoke(app, ["search", str(query), "-c", "pics", "--json", "--filter", "folder == space", *common])
    assert [d["filename"] for d in json.loads(result.output)["documents"]] == ["space/rocket.jpg"]
    result = runner.invoke(app, ["search", str(query), "-c", "nope", *common])
    assert result.exit_code == 2 and "NOT_FOUND" in result.output


def test_every_service_exposes_prometheus_metrics(catalog: Catalog, mesh: Stack, photos: dict[str, bytes]) -> None:
    catalog.search(retriever_pb.Query(image=photos["coffee"]))
    scraped = {name: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text for name, port in mesh.metrics_ports.items()
               if name in ("gateway", "encoder", "search", "ingest", "rerank")}
    assert set(scraped) == {"gateway", "encoder", "search", "ingest", "rerank"}
    assert 'lookalike_rpc_total{code="OK",method="ExecuteRetriever",service="Retriever"}' in scraped["gateway"]
    assert 'method="Search",service="Search"' in scraped["search"]
    assert "lookalike_rpc_seconds_bucket" in scraped["encoder"]
