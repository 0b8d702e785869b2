"""Retriever stages on the real mesh: dedup (mark and collapse), the duplicate report, RRF fusion
of two extractors, and stage-list validation."""

from __future__ import annotations

import io

import grpc
import pytest
from PIL import Image

from lookalike.cli import Gateway
from lookalike.v1 import collection_service_pb2 as collection_pb
from lookalike.v1 import retriever_service_pb2 as retriever_pb
from tests.fixtures_mesh import content_id, jpeg_bytes
from tests.test_e2e import Catalog

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def variants(photo: bytes) -> dict[str, bytes]:
    """Near-duplicates that are different files: recompressed and resized copies."""
    image = Image.open(io.BytesIO(photo)).convert("RGB")
    return {
        "recompressed": jpeg_bytes(image, quality=60),
        "resized": jpeg_bytes(image.resize((image.width * 3 // 4, image.height * 3 // 4))),
    }


@pytest.fixture(scope="module")
def catalog(gateway: Gateway, photos: dict[str, bytes]) -> Catalog:
    chosen = {k: photos[k] for k in ("chelsea", "coffee", "rocket", "astronaut", "china")}
    for name, data in variants(photos["chelsea"]).items():
        chosen[f"chelsea-{name}"] = data
    import tests.test_e2e as e2e

    for name in chosen:
        e2e.CATEGORIES.setdefault(name, "animal")
    return Catalog(gateway, chosen, "stages")


def create(catalog: Catalog, retriever_id: str, stages: list[retriever_pb.Stage]) -> str:
    catalog.gateway.retrievers.CreateRetriever(
        retriever_pb.CreateRetrieverRequest(parent=catalog.parent, retriever_id=retriever_id, retriever=retriever_pb.Retriever(stages=stages)),
        timeout=10,
    )
    return f"{catalog.parent}/retrievers/{retriever_id}"


def search_stage(catalog: Catalog, extractor: str = "", limit: int = 10) -> retriever_pb.Stage:
    return retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(collection=catalog.collection, feature_extractor=extractor, limit=limit))


def test_duplicate_report_groups_near_duplicates(catalog: Catalog, photos: dict[str, bytes]) -> None:
    report = catalog.gateway.collections.GetDuplicateReport(collection_pb.GetDuplicateReportRequest(name=catalog.collection), timeout=30)
    assert report.image_count == 7
    assert len(report.groups) == 1
    group = report.groups[0]
    assert sorted(group.filenames) == ["chelsea-recompressed.jpg", "chelsea-resized.jpg", "chelsea.jpg"]
    assert group.max_distance <= 6
    strict = catalog.gateway.collections.GetDuplicateReport(
        collection_pb.GetDuplicateReportRequest(name=catalog.collection, max_hamming_distance=1), timeout=30
    )
    assert sum(len(g.objects) for g in strict.groups) <= 3


def test_dedup_marks_then_collapses(catalog: Catalog, photos: dict[str, bytes]) -> None:
    marking = create(catalog, "dedup-mark", [search_stage(catalog), retriever_pb.Stage(dedup=retriever_pb.DedupStage())])
    documents = catalog.search(retriever_pb.Query(image=photos["chelsea"]), retriever=marking).documents
    best = documents[0]
    assert best.content_id == content_id(photos["chelsea"]) and not best.duplicate_of
    marked = [d for d in documents if d.duplicate_of]
    assert sorted(d.filename for d in marked) == ["chelsea-recompressed.jpg", "chelsea-resized.jpg"]
    assert {d.duplicate_of for d in marked} == {best.object}

    collapsing = create(catalog, "dedup-collapse", [search_stage(catalog), retriever_pb.Stage(dedup=retriever_pb.DedupStage(collapse=True))])
    documents = catalog.search(retriever_pb.Query(image=photos["chelsea"]), retriever=collapsing).documents
    assert [d.filename for d in documents].count("chelsea.jpg") == 1
    assert not any(d.filename.startswith("chelsea-") for d in documents)
    assert len(documents[0].duplicates) == 2
    assert len(documents) == 5


def test_rrf_fuses_embedding_and_phash_searches(catalog: Catalog, photos: dict[str, bytes]) -> None:
    fused = create(catalog, "fused", [
        search_stage(catalog, "effnet-lite0"), search_stage(catalog, "phash"),
        retriever_pb.Stage(fuse=retriever_pb.FuseStage(k=60, limit=4)),
    ])
    response = catalog.search(retriever_pb.Query(image=photos["rocket"]), retriever=fused)
    top = response.documents[0]
    assert top.filename == "rocket.jpg"
    # ranked first by both searches: 2 / (60 + 1)
    assert top.score == pytest.approx(2 / 61, rel=1e-4)
    assert {"feature_search[0]", "feature_search[1]", "fuse[2]"} <= set(top.stage_scores)
    assert len(response.documents) == 4
    assert [t.stage for t in response.stage_timings] == ["feature_search[0]", "feature_search[1]", "fuse[2]"]


@pytest.mark.parametrize(
    "stages",
    [
        "fuse-after-one-search",
        "dedup-without-phash",
        "text-input-on-image-model",
    ],
)
def test_invalid_stage_lists(catalog: Catalog, gateway: Gateway, stages: str) -> None:
    if stages == "fuse-after-one-search":
        stage_list = [search_stage(catalog), retriever_pb.Stage(fuse=retriever_pb.FuseStage())]
    elif stages == "dedup-without-phash":
        gateway.collections.CreateCollection(
            collection_pb.CreateCollectionRequest(parent=catalog.parent, collection_id="nophash", feature_extractors=["effnet-lite0"]),
            timeout=60,
        )
        stage_list = [
            retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(collection=f"{catalog.parent}/collections/nophash")),
            retriever_pb.Stage(dedup=retriever_pb.DedupStage()),
        ]
    else:
        stage_list = [retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(
            collection=catalog.collection, feature_extractor="effnet-lite0", input=retriever_pb.QUERY_INPUT_TEXT))]
    with pytest.raises(grpc.RpcError) as err:
        create(catalog, f"bad-{stages}", stage_list)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()


def test_cli_builds_two_stage_retriever_and_reports_duplicates(catalog: Catalog, mesh, photos: dict[str, bytes], tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from lookalike.cli import app

    runner = CliRunner()
    common = ["--gateway", mesh.gateway_addr, "--namespace", catalog.namespace]
    result = runner.invoke(app, ["retrievers", "create", "seed", "-c", "photos", "-s", "effnet-lite0:50", "--rerank", "12", *common])
    assert result.exit_code == 0, result.output
    assert "feature_search → rerank" in result.output
    query = tmp_path / "q.jpg"
    query.write_bytes(photos["china"])
    result = runner.invoke(app, ["search", str(query), "--retriever", "seed", "--json", *common])
    documents = json.loads(result.output)["documents"]
    assert documents[0]["filename"] == "china.jpg" and "box" in documents[0]
    result = runner.invoke(app, ["duplicates", "-c", "photos", *common])
    assert result.exit_code == 0, result.output
    assert "1 groups, 2 near-duplicates among 7 images" in result.output


def test_hybrid_text_and_image_fused(gateway: Gateway, photos: dict[str, bytes]) -> None:
    """A photo and a typed phrase, searched with two extractors and fused: both shape the ranking."""
    chosen = {k: photos[k] for k in ("chelsea", "coffee", "rocket", "astronaut", "china", "flower")}
    import tests.test_e2e as e2e

    catalog = Catalog.__new__(Catalog)
    catalog.gateway, catalog.namespace, catalog.parent = gateway, "hybrid", "namespaces/hybrid"
    catalog.collection = "namespaces/hybrid/collections/photos"
    catalog.bucket = "namespaces/hybrid/buckets/uploads"
    from lookalike.v1 import bucket_service_pb2 as bucket_pb
    from lookalike.v1 import namespace_service_pb2 as namespace_pb

    gateway.namespaces.CreateNamespace(namespace_pb.CreateNamespaceRequest(namespace_id="hybrid"), timeout=10)
    gateway.collections.CreateCollection(collection_pb.CreateCollectionRequest(
        parent=catalog.parent, collection_id="photos", feature_extractors=["effnet-lite0", "concepts"]), timeout=60)
    gateway.buckets.CreateBucket(bucket_pb.CreateBucketRequest(
        parent=catalog.parent, bucket_id="uploads", bucket=bucket_pb.Bucket(collection=catalog.collection, auto_process=True)), timeout=10)
    upload = gateway.buckets.UploadObjects(iter([
        bucket_pb.UploadObjectsRequest(parent=catalog.bucket if i == 0 else "", filename=f"{n}.jpg", content=d)
        for i, (n, d) in enumerate(chosen.items())]), timeout=60)
    assert e2e.wait_job(gateway, upload.job).indexed == len(chosen)

    hybrid = create(catalog, "hybrid", [
        retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(
            collection=catalog.collection, feature_extractor="effnet-lite0", limit=3, input=retriever_pb.QUERY_INPUT_IMAGE)),
        retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(
            collection=catalog.collection, feature_extractor="concepts", limit=3, input=retriever_pb.QUERY_INPUT_TEXT)),
        retriever_pb.Stage(fuse=retriever_pb.FuseStage(limit=3)),
    ])
    text_only = create(catalog, "text", [retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(
        collection=catalog.collection, feature_extractor="concepts", limit=3))])
    by_text = catalog.search(retriever_pb.Query(text="a photo of a cup of coffee"), retriever=text_only).documents
    assert by_text[0].filename == "coffee.jpg"

    fused = catalog.search(retriever_pb.Query(image=photos["chelsea"], text="a photo of a cup of coffee"), retriever=hybrid).documents
    # each half's best answer is in the fused top 3, scored by its own search
    files = [d.filename for d in fused]
    assert {"chelsea.jpg", "coffee.jpg"} <= set(files), files
    by_name = {d.filename: d for d in fused}
    assert "feature_search[0]" in by_name["chelsea.jpg"].stage_scores
    assert "feature_search[1]" in by_name["coffee.jpg"].stage_scores
    # the image-only half still needs its image
    with pytest.raises(grpc.RpcError) as err:
        catalog.search(retriever_pb.Query(text="a cat"), retriever=hybrid)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
