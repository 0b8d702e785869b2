"""The search service on a real Milvus: index specs and their validation, upsert / get / delete /
count / drop, read-after-write across replicas, IVF-PQ refine, and the unit-level pieces (parameter
checks, exact re-scoring, scoped expressions) that need no server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2
from pymilvus import DataType, MilvusClient

from lookalike.config import REPO_ROOT, Settings
from lookalike.devservers import free_port
from lookalike.errors import InvalidArgument
from lookalike.filters import parse_filter_text
from lookalike.server import serve
from lookalike.stack import health_check
from lookalike.v1 import search_service_pb2 as pb
from lookalike.v1 import search_service_pb2_grpc as grpc_pb
from lookalike.v1 import types_pb2
from lookalike.vectorindex import (
    IndexParams,
    exact_distances,
    milvus_collection_name,
    refine_rows,
    scoped,
    sq8_decode,
    sq8_encode,
    sq8_length,
)
from services.search.indexing import index_params, with_search_overrides
from services.search.server import build
from services.search.settings import SearchSettings

DIM = 64
FLOAT = types_pb2.VECTOR_TYPE_FLOAT


def extractor(name: str = "emb", dim: int = DIM, metric: int = types_pb2.METRIC_COSINE) -> types_pb2.ExtractorInfo:
    binary = metric == types_pb2.METRIC_HAMMING
    return types_pb2.ExtractorInfo(
        name=name, dimension=dim, metric=metric, vector_type=types_pb2.VECTOR_TYPE_BINARY if binary else FLOAT
    )


def cid(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def struct(values: dict) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim))
    x = centers[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def code_of(exc: pytest.ExceptionInfo) -> grpc.StatusCode:
    return exc.value.code()  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# unit: parameters, exact re-scoring, scoped expressions


class TestIndexParams:
    def test_defaults(self) -> None:
        hnsw = index_params(extractor(dim=1280), types_pb2.IndexSpec())
        assert (hnsw.index_type, hnsw.metric, hnsw.build, hnsw.search) == ("HNSW", "COSINE", {"M": 16, "efConstruction": 200}, {"ef": 128})
        pq = index_params(extractor(dim=1280), types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_IVF_PQ))
        assert pq.build == {"nlist": 1024, "m": 160, "nbits": 8} and pq.search == {"nprobe": 16}
        flat = index_params(extractor(dim=1280), types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_FLAT))
        assert flat.index_type == "FLAT"
        phash = index_params(extractor("phash", 64, types_pb2.METRIC_HAMMING), types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_IVF_PQ))
        assert (phash.index_type, phash.metric) == ("BIN_FLAT", "HAMMING")

    def test_given_parameters_are_used(self) -> None:
        spec = types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_IVF_PQ, ivf_pq=types_pb2.IvfPqParams(nlist=256, m=64, nbits=6, nprobe=32))
        params = index_params(extractor(dim=1280), spec)
        assert params.build == {"nlist": 256, "m": 64, "nbits": 6} and params.search == {"nprobe": 32}
        spec = types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_HNSW, hnsw=types_pb2.HnswParams(m=32, ef_construction=100, ef=128))
        params = index_params(extractor(dim=1280), spec)
        assert params.build == {"M": 32, "efConstruction": 100} and params.search == {"ef": 128}

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            (types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(m=100)), "hnsw.m must be between 4 and 64, got 100"),
            (types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(m=2)), "hnsw.m must be between 4 and 64, got 2"),
            (types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(ef_construction=4096)), "hnsw.ef_construction must be between 8 and 512"),
            (types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(ef=40000)), "hnsw.ef must be between 1 and 32768"),
            (types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_IVF_PQ, ivf_pq=types_pb2.IvfPqParams(m=7)), "ivf_pq.m=7 must divide the dimension 1280"),
            (types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_IVF_PQ, ivf_pq=types_pb2.IvfPqParams(m=2560)), "ivf_pq.m=2560 must divide"),
            (types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_IVF_PQ, ivf_pq=types_pb2.IvfPqParams(nbits=17)), "ivf_pq.nbits must be between 1 and 16"),
            (types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_IVF_PQ, ivf_pq=types_pb2.IvfPqParams(nlist=70000)), "ivf_pq.nlist must be between 1 and 65536"),
            (types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_IVF_PQ, ivf_pq=types_pb2.IvfPqParams(nlist=64, nprobe=65)), "ivf_pq.nprobe must be between 1 and 64"),
            (types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_HNSW, ivf_pq=types_pb2.IvfPqParams(nlist=64)), "ivf_pq parameters given for a HNSW index"),
            (types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_FLAT, hnsw=types_pb2.HnswParams(m=8)), "hnsw parameters given for a FLAT index"),
            (types_pb2.IndexSpec(type=99), "unknown index type 99"),  # type: ignore[arg-type]
        ],
    )
    def test_bad_parameters_are_clear_errors(self, spec: types_pb2.IndexSpec, message: str) -> None:
        with pytest.raises(InvalidArgument, match=message.replace(".", r"\.").replace("(", r"\(")):
            index_params(extractor(dim=1280), spec)

    def test_metric_must_fit_the_vector_type(self) -> None:
        with pytest.raises(InvalidArgument, match="HAMMING needs a binary extractor"):
            index_params(types_pb2.ExtractorInfo(name="x", dimension=64, metric=types_pb2.METRIC_HAMMING, vector_type=FLOAT), types_pb2.IndexSpec())
        with pytest.raises(InvalidArgument, match="needs the HAMMING metric"):
            index_params(types_pb2.ExtractorInfo(name="x", dimension=64, metric=types_pb2.METRIC_COSINE,
                                                 vector_type=types_pb2.VECTOR_TYPE_BINARY), types_pb2.IndexSpec())
        with pytest.raises(InvalidArgument, match="has no metric"):
            index_params(types_pb2.ExtractorInfo(name="x", dimension=8, vector_type=FLOAT), types_pb2.IndexSpec())

    def test_search_overrides(self) -> None:
        hnsw = IndexParams("HNSW", "COSINE", {"M": 16, "efConstruction": 200}, {"ef": 128})
        assert with_search_overrides(hnsw, types_pb2.IndexSpec(), 10).search == {"ef": 128}
        assert with_search_overrides(hnsw, types_pb2.IndexSpec(), 500).search == {"ef": 500}  # ef ≥ limit
        assert with_search_overrides(hnsw, types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(ef=200)), 10).search == {"ef": 200}
        pq = IndexParams("IVF_PQ", "COSINE", {"nlist": 128, "m": 8, "nbits": 8}, {"nprobe": 16})
        over = with_search_overrides(pq, types_pb2.IndexSpec(ivf_pq=types_pb2.IvfPqParams(nprobe=64)), 10, refine_factor=10)
        assert over.search == {"nprobe": 64} and over.refine == 10
        assert with_search_overrides(hnsw, types_pb2.IndexSpec(), 10, refine_factor=10).refine == 1
        for bad, message in [
            (types_pb2.IndexSpec(ivf_pq=types_pb2.IvfPqParams(nprobe=129)), "nprobe must be between 1 and 128"),
            (types_pb2.IndexSpec(ivf_pq=types_pb2.IvfPqParams(nlist=8)), "may only set hnsw.ef and ivf_pq.nprobe"),
            (types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(ef=80)), "hnsw.ef given for an IVF_PQ index"),
            (types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_FLAT), "cannot change the index type"),
        ]:
            with pytest.raises(InvalidArgument, match=message):
                with_search_overrides(pq, bad, 10)
        flat = IndexParams("BIN_FLAT", "HAMMING", {}, {})
        assert with_search_overrides(flat, types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(ef=80)), 10).search == {}


def test_exact_distances_match_milvus_conventions() -> None:
    q = np.array([1.0, 0.0], dtype=np.float32)
    v = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(exact_distances("COSINE", q, v), [1.0, 0.0, 2**-0.5], rtol=1e-6)
    np.testing.assert_allclose(exact_distances("IP", q, v), [2.0, 0.0, 1.0])
    np.testing.assert_allclose(exact_distances("L2", q, v), [1.0, 2.0, 1.0])  # squared, as Milvus


def test_refine_keeps_the_exact_best() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((50, 16)).astype(np.float32)
    q = rng.standard_normal(16).astype(np.float32)
    rows = [{"id": str(i), "vector": v.tolist(), "object": f"o{i}", "metadata": {"i": i}} for i, v in enumerate(vectors)]
    for metric, sign in (("COSINE", -1), ("IP", -1), ("L2", 1)):
        hits = refine_rows(metric, q, rows, 5)
        want = np.argsort(sign * exact_distances(metric, q, vectors))[:5]
        assert [h.id for h in hits] == [str(i) for i in want]
        assert hits[0].fields == {"object": f"o{want[0]}", "metadata": {"i": int(want[0])}}


def test_refine_falls_back_to_the_index_ranking_when_vectors_cannot_be_read() -> None:
    from pymilvus.exceptions import MilvusException

    from lookalike.vectorindex import MilvusIndex

    class FakeClient:
        def search(self, name: str, **kwargs: object) -> list:
            assert kwargs["limit"] == 4 * 2 and 'namespace == "ns"' in str(kwargs["filter"])
            return [[{"id": f"id{i}", "distance": 0.9 - i / 100, "entity": {"namespace": "other" if i == 1 else "ns"}} for i in range(8)]]

        def query(self, name: str, filter: str, output_fields: list[str], **kwargs: object) -> list:
            if "vector" in output_fields:
                raise MilvusException(65535, "invalid local path: insert_log/...")
            return [{"id": i, "namespace": "ns", "object": f"o-{i}"} for i in ("id0", "id2")]

    index = MilvusIndex(Settings())
    index._client = FakeClient()  # type: ignore[assignment]
    index._loaded.add("c")
    params = IndexParams("IVF_PQ", "COSINE", {"nlist": 8, "m": 2, "nbits": 8}, {"nprobe": 8}, refine=4)
    hits = asyncio.run(index.search("c", [1.0, 0.0], 2, "ns", "", params))
    # the other namespace's hit (id1) is dropped even though the fake index returned it
    assert [(h.id, h.fields.get("object")) for h in hits] == [("id0", "o-id0"), ("id2", "o-id2")]


def test_refine_reads_the_sq8_copy_not_the_float_field() -> None:
    from lookalike.vectorindex import MilvusIndex

    queried: list[list[str]] = []

    class FakeClient:
        def search(self, name: str, **kwargs: object) -> list:
            return [[{"id": f"id{i}", "distance": 0.5, "entity": {"namespace": "ns"}} for i in range(3)]]

        def query(self, name: str, filter: str, output_fields: list[str], **kwargs: object) -> list:
            queried.append(output_fields)
            vectors = {"id0": [0.0, 1.0], "id1": [1.0, 0.1], "id2": [1.0, 0.0]}
            return [{"id": i, "namespace": "ns", "refine": sq8_encode(v)} for i, v in vectors.items()]

    index = MilvusIndex(Settings())
    index._client = FakeClient()  # type: ignore[assignment]
    index._loaded.add("c")
    params = IndexParams("IVF_PQ", "COSINE", {"nlist": 8, "m": 2, "nbits": 8}, {"nprobe": 8}, refine=4)
    hits = asyncio.run(index.search("c", [1.0, 0.0], 2, "ns", "", params, refine_copy=True))
    assert [h.id for h in hits] == ["id2", "id1"] and hits[0].distance == pytest.approx(1.0, abs=1e-3)
    assert queried and all("vector" not in fields and "refine" in fields for fields in queried)


def test_sq8_copy_ranks_like_the_float_vectors() -> None:
    rng = np.random.default_rng(4)
    vectors = clustered(200, 1280, seed=4, clusters=5)
    q = vectors[0] + 0.05 * rng.standard_normal(1280).astype(np.float32)
    codes = [sq8_encode(v) for v in vectors]
    assert all(len(c) <= sq8_length(1280) for c in codes)
    assert max(float(np.abs(sq8_decode(c) - v).max()) for c, v in zip(codes, vectors)) < 2e-3
    exact = refine_rows("COSINE", q, [{"id": str(i), "vector": v.tolist()} for i, v in enumerate(vectors)], 10)
    approx = refine_rows("COSINE", q, [{"id": str(i), "refine": c} for i, c in enumerate(codes)], 10)
    assert [h.id for h in approx] == [h.id for h in exact]
    assert all(abs(a.distance - e.distance) < 1e-3 for a, e in zip(approx, exact))


def test_every_expression_is_scoped_to_the_namespace() -> None:
    assert scoped("a") == 'namespace == "a"'
    assert scoped("a", 'metadata["x"] == 1 or true') == '(namespace == "a") and (metadata["x"] == 1 or true)'
    assert scoped('a" or namespace != "', "") == 'namespace == "a\\" or namespace != \\""'
    with pytest.raises(InvalidArgument):
        scoped("")


def test_collection_names_are_distinct_and_valid() -> None:
    a = milvus_collection_name("a-b", "c", "effnet-lite0")
    b = milvus_collection_name("a", "b-c", "effnet-lite0")
    assert a != b and a.startswith("lk_a_b_c_effnet_lite0_") and len(a) <= 255
    assert all(ch.isalnum() or ch == "_" for ch in a)


# ---------------------------------------------------------------------------------------------
# integration: the service on a real Milvus


class InProcessService:
    """The search service's real gRPC server in a thread of this process."""

    def __init__(self, milvus_uri: str, **search_settings: object) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.settings = Settings(milvus_uri=milvus_uri, search_addr=self.address, log_format="text")
        self.spec = build(self.settings, SearchSettings(**search_settings))  # type: ignore[arg-type]
        self.servicer = self.spec.servicers[0][1]
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not health_check(self.address):
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("in-process search service did not start")
            time.sleep(0.05)
        self.channel = grpc.insecure_channel(self.address)
        self.stub = grpc_pb.SearchServiceStub(self.channel)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            await serve(self.spec, self.settings, self._stop)

        self._loop.run_until_complete(main())

    def close(self) -> None:
        self.channel.close()
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def service(milvus_uri: str) -> Iterator[InProcessService]:
    svc = InProcessService(milvus_uri)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def replica(milvus_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second search service replica: its own process, so its own Milvus client and session."""
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "LOOKALIKE_MILVUS_URI": milvus_uri, "LOOKALIKE_SEARCH_ADDR": address, "LOOKALIKE_LOG_FORMAT": "text"}
    log = (tmp_path_factory.mktemp("replica") / "search.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "services.search"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not health_check(address):
            assert proc.poll() is None and time.monotonic() < deadline, "replica did not start"
            time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def ensure(stub: grpc_pb.SearchServiceStub, collection: str, spec: types_pb2.IndexSpec | None = None,
           ext: types_pb2.ExtractorInfo | None = None) -> bool:
    return stub.EnsureIndex(
        pb.EnsureIndexRequest(collection=collection, extractor=ext or extractor(), index=spec or types_pb2.IndexSpec()),
        timeout=60,
    ).created


def records(namespace: str, vectors: np.ndarray, prefix: str, meta: list[dict] | None = None) -> list[pb.VectorRecord]:
    out = []
    for i, v in enumerate(vectors):
        content = cid(f"{prefix}-{i}")
        out.append(pb.VectorRecord(
            id=content, vector=types_pb2.Vector(values=v.tolist()),
            object=f"namespaces/{namespace}/buckets/b/objects/{content}", filename=f"{prefix}-{i}.jpg",
            metadata=struct(meta[i] if meta else {"i": i}),
        ))
    return out


def search(stub: grpc_pb.SearchServiceStub, collection: str, vector: np.ndarray, limit: int = 10, **kwargs: object) -> list[pb.SearchHit]:
    request = pb.SearchRequest(collection=collection, extractor="emb", vector=types_pb2.Vector(values=vector.tolist()), limit=limit, **kwargs)
    return list(stub.Search(request, timeout=30).hits)


@pytest.mark.integration
def test_operations_upsert_get_count_delete_drop(service: InProcessService) -> None:
    stub, coll = service.stub, "namespaces/ops/collections/items"
    assert ensure(stub, coll) is True
    assert ensure(stub, coll) is False  # idempotent
    vectors = clustered(40, DIM, seed=1)
    recs = records("ops", vectors, "ops", [{"i": i, "tags": ["even" if i % 2 == 0 else "odd"]} for i in range(40)])
    assert stub.UpsertVectors(pb.UpsertVectorsRequest(collection=coll, extractor="emb", records=recs), timeout=30).upserted_count == 40
    count = lambda: stub.CountVectors(pb.CountVectorsRequest(collection=coll, extractor="emb"), timeout=30).count  # noqa: E731
    assert count() == 40

    # get by id: in the order asked, missing ids left out, vectors and metadata as stored
    ids = [recs[3].id, cid("missing"), recs[1].id]
    got = stub.GetVectors(pb.GetVectorsRequest(collection=coll, extractor="emb", ids=ids), timeout=30).records
    assert [r.id for r in got] == [recs[3].id, recs[1].id]
    np.testing.assert_allclose(list(got[0].vector.values), vectors[3], rtol=1e-6)
    assert got[0].object == recs[3].object and dict(got[0].metadata)["i"] == 3

    # search: the vector itself first, with its score; filters narrow
    hits = search(stub, coll, vectors[5])
    assert hits[0].id == recs[5].id and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].filename == "ops-5.jpg" and hits[0].metadata["i"] == 5
    odd = search(stub, coll, vectors[5], limit=40, filter=parse_filter_text("tags contains odd and i < 20"))
    assert odd and all(h.metadata["i"] % 2 == 1 and h.metadata["i"] < 20 for h in odd) and len(odd) == 10

    # re-upsert of an id replaces it (idempotent re-ingest): same count, new metadata and vector
    again = records("ops", vectors[:1] * -1, "ops", [{"i": 0, "version": 2}])
    stub.UpsertVectors(pb.UpsertVectorsRequest(collection=coll, extractor="emb", records=again * 2), timeout=30)
    assert count() == 40
    hit = search(stub, coll, -vectors[0], limit=1)[0]
    assert hit.id == recs[0].id and hit.metadata["version"] == 2 and hit.score == pytest.approx(1.0, abs=1e-4)

    # delete: gone from count, get and search at once
    stub.DeleteVectors(pb.DeleteVectorsRequest(collection=coll, extractors=["emb"], ids=[recs[5].id, recs[6].id]), timeout=30)
    assert count() == 38
    assert not stub.GetVectors(pb.GetVectorsRequest(collection=coll, extractor="emb", ids=[recs[5].id]), timeout=30).records
    assert recs[5].id not in [h.id for h in search(stub, coll, vectors[5], limit=40)]

    # drop: the index is gone, and the collection can be created again from scratch
    stub.DropIndex(pb.DropIndexRequest(collection=coll, extractors=["emb"]), timeout=30)
    with pytest.raises(grpc.RpcError) as exc:
        search(stub, coll, vectors[0])
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND and "create the collection first" in exc.value.details()  # type: ignore[union-attr]
    stub.DropIndex(pb.DropIndexRequest(collection=coll, extractors=["emb"]), timeout=30)  # idempotent
    assert ensure(stub, coll) is True and count() == 0


@pytest.mark.integration
def test_index_types_and_specs(service: InProcessService, milvus_uri: str) -> None:
    stub = service.stub
    specs = {
        "hnsw": types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_HNSW, hnsw=types_pb2.HnswParams(m=8, ef_construction=64, ef=40)),
        "pq": types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_IVF_PQ, ivf_pq=types_pb2.IvfPqParams(nlist=16, m=16, nbits=8, nprobe=4)),
        "flat": types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_FLAT),
    }
    client = MilvusClient(uri=milvus_uri)
    for key, spec in specs.items():
        coll = f"namespaces/specs/collections/{key}"
        assert ensure(stub, coll, spec)
        index = client.describe_index(milvus_collection_name("specs", key, "emb"), "vector")
        assert index["index_type"] == {"hnsw": "HNSW", "pq": "IVF_PQ", "flat": "FLAT"}[key]
        assert index["metric_type"] == "COSINE"
        recs = records("specs", clustered(20, DIM, seed=2), key)
        stub.UpsertVectors(pb.UpsertVectorsRequest(collection=coll, extractor="emb", records=recs), timeout=30)
        assert search(stub, coll, np.asarray(recs[7].vector.values))[0].id == recs[7].id
    hnsw = client.describe_index(milvus_collection_name("specs", "hnsw", "emb"), "vector")
    assert (hnsw["M"], hnsw["efConstruction"]) == ("8", "64")
    pq = client.describe_index(milvus_collection_name("specs", "pq", "emb"), "vector")
    assert (pq["nlist"], pq["m"], pq["nbits"]) == ("16", "16", "8")

    # a different spec for an existing index is refused, query-time defaults included
    with pytest.raises(grpc.RpcError) as exc:
        ensure(stub, "namespaces/specs/collections/hnsw", specs["pq"])
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION and "already has a HNSW" in exc.value.details()  # type: ignore[union-attr]
    with pytest.raises(grpc.RpcError) as exc:
        ensure(stub, "namespaces/specs/collections/hnsw", ext=extractor(dim=128))
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
    new_ef = types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_HNSW, hnsw=types_pb2.HnswParams(m=8, ef_construction=64, ef=90))
    with pytest.raises(grpc.RpcError) as exc:
        ensure(stub, "namespaces/specs/collections/hnsw", new_ef)
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION and "pass ef / nprobe per search" in exc.value.details()  # type: ignore[union-attr]
    assert ensure(stub, "namespaces/specs/collections/hnsw", specs["hnsw"]) is False  # the same spec: idempotent

    # query-time parameters live with the collection: a fresh replica reads them back
    fresh = InProcessService(milvus_uri)
    try:
        info = asyncio.run(fresh.servicer._collection(milvus_collection_name("specs", "hnsw", "emb")))
        assert info.params.search == {"ef": 40} and info.dimension == DIM
        info = asyncio.run(fresh.servicer._collection(milvus_collection_name("specs", "pq", "emb")))
        assert info.params.search == {"nprobe": 4} and info.params.build == {"nlist": 16, "m": 16, "nbits": 8}
    finally:
        fresh.close()

    # invalid specs never create anything
    for bad in (types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_IVF_PQ, ivf_pq=types_pb2.IvfPqParams(m=7)),
                types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(m=1000))):
        with pytest.raises(grpc.RpcError) as exc:
            ensure(stub, "namespaces/specs/collections/bad", bad)
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert not client.has_collection(milvus_collection_name("specs", "bad", "emb"))


@pytest.mark.integration
def test_binary_phash_index(service: InProcessService) -> None:
    stub, coll = service.stub, "namespaces/ops/collections/hashes"
    ensure(stub, coll, ext=extractor("phash", 64, types_pb2.METRIC_HAMMING))
    hashes = [bytes([i] * 8) for i in range(10)]
    recs = [pb.VectorRecord(id=cid(f"h{i}"), vector=types_pb2.Vector(binary=h)) for i, h in enumerate(hashes)]
    stub.UpsertVectors(pb.UpsertVectorsRequest(collection=coll, extractor="phash", records=recs), timeout=30)
    hits = stub.Search(pb.SearchRequest(collection=coll, extractor="phash", vector=types_pb2.Vector(binary=bytes([3] * 8)), limit=3), timeout=30).hits
    assert hits[0].id == cid("h3") and hits[0].distance == 0 and hits[0].score == 1.0
    assert hits[1].distance == 8 and hits[1].score == pytest.approx(1 - 8 / 64)  # 2 and 7 differ from 3 by one bit per byte
    got = stub.GetVectors(pb.GetVectorsRequest(collection=coll, extractor="phash", ids=[cid("h4")]), timeout=30).records
    assert got[0].vector.binary == bytes([4] * 8)


@pytest.mark.integration
def test_bad_requests_are_invalid_argument(service: InProcessService) -> None:
    stub, coll = service.stub, "namespaces/ops/collections/strict"
    ensure(stub, coll)
    good = records("ops", clustered(1, DIM), "strict")[0]

    def upsert(**changes: object) -> None:
        record = pb.VectorRecord()
        record.CopyFrom(good)
        for key, value in changes.items():
            if key == "vector":
                record.vector.CopyFrom(value)  # type: ignore[arg-type]
            else:
                setattr(record, key, value)
        stub.UpsertVectors(pb.UpsertVectorsRequest(collection=coll, extractor="emb", records=[record]), timeout=30)

    cases = {
        "wrong dimension": lambda: upsert(vector=types_pb2.Vector(values=[0.1] * (DIM - 1))),
        "NaN": lambda: upsert(vector=types_pb2.Vector(values=[float("nan")] * DIM)),
        "binary for float": lambda: upsert(vector=types_pb2.Vector(binary=b"12345678")),
        "not a content id": lambda: upsert(id="x' or id != '"),
        "object of another namespace": lambda: upsert(object=f"namespaces/other/buckets/b/objects/{good.id}"),
        "malformed object": lambda: upsert(object="s3://elsewhere/x.jpg"),
        "get with injected id": lambda: stub.GetVectors(pb.GetVectorsRequest(collection=coll, extractor="emb", ids=["a'] or id != ['"]), timeout=30),
        "delete with injected id": lambda: stub.DeleteVectors(pb.DeleteVectorsRequest(collection=coll, extractors=["emb"], ids=['" or true or "']), timeout=30),
        "query of wrong size": lambda: search(stub, coll, np.ones(DIM + 1)),
        "zero query": lambda: search(stub, coll, np.zeros(DIM)),
        "limit too large": lambda: search(stub, coll, np.ones(DIM), limit=1001),
        "bad filter field": lambda: search(stub, coll, np.ones(DIM), filter=types_pb2.Filter(condition=types_pb2.FieldCondition(
            field='x"] or true or metadata["y', operator=types_pb2.FieldCondition.OPERATOR_EQ, value=types_pb2.ScalarValue(int_value=1)))),
        "bad collection name": lambda: stub.CountVectors(pb.CountVectorsRequest(collection="namespaces/A/collections/x", extractor="emb"), timeout=30),
        "dimension 0": lambda: ensure(stub, "namespaces/ops/collections/zero", ext=extractor(dim=0)),
        "binary not bytes": lambda: ensure(stub, "namespaces/ops/collections/odd", ext=extractor("phash", 60, types_pb2.METRIC_HAMMING)),
    }
    for label, call in cases.items():
        with pytest.raises(grpc.RpcError) as exc:
            call()
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT, label
    with pytest.raises(grpc.RpcError) as exc:
        search(stub, "namespaces/ops/collections/never-created", np.ones(DIM))
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND
    upsert()  # the good record still goes in, nothing else did
    assert stub.CountVectors(pb.CountVectorsRequest(collection=coll, extractor="emb"), timeout=30).count == 1


@pytest.mark.integration
def test_upsert_on_one_replica_is_seen_at_once_by_another(service: InProcessService, replica: str) -> None:
    """Read-after-write across processes: the writer's upsert returns only once the query node
    serves it, so a search on another replica (its own Milvus session) right after finds it."""
    coll = "namespaces/ops/collections/fresh"
    ensure(service.stub, coll)
    reader = grpc_pb.SearchServiceStub(grpc.insecure_channel(replica))
    rng = np.random.default_rng(7)
    for round_ in range(10):
        v = rng.standard_normal(DIM).astype(np.float32)
        rec = records("ops", v[None, :], f"fresh-{round_}")
        service.stub.UpsertVectors(pb.UpsertVectorsRequest(collection=coll, extractor="emb", records=rec), timeout=30)
        hits = search(reader, coll, v, limit=1)
        assert hits and hits[0].id == rec[0].id, f"round {round_}: the new vector is not visible on the other replica"
        reader.DeleteVectors(pb.DeleteVectorsRequest(collection=coll, extractors=["emb"], ids=[rec[0].id]), timeout=30)
        assert rec[0].id not in [h.id for h in search(service.stub, coll, v, limit=1)], f"round {round_}: delete not visible"


@pytest.mark.integration
def test_ivf_pq_refine_recovers_recall(milvus_uri: str) -> None:
    """PQ codes alone mis-rank close neighbours; re-scoring limit × refine candidates from the stored
    float vectors restores exact order among them."""
    coll = "namespaces/ops/collections/pq-refine"
    n, dim, k = 3000, DIM, 10
    with_refine = InProcessService(milvus_uri, ivf_pq_refine=10)
    without = InProcessService(milvus_uri, ivf_pq_refine=1)
    try:
        spec = types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_IVF_PQ, ivf_pq=types_pb2.IvfPqParams(nlist=16, m=8, nbits=8, nprobe=16))
        ensure(with_refine.stub, coll, spec)
        data = clustered(n, dim, seed=11, clusters=8)
        recs = records("ops", data, "pq")
        for start in range(0, n, 1000):
            with_refine.stub.UpsertVectors(pb.UpsertVectorsRequest(collection=coll, extractor="emb", records=recs[start:start + 1000]), timeout=60)
        # seal the segment and wait for its IVF_PQ index, then reload so searches use it
        name = milvus_collection_name("ops", "pq-refine", "emb")
        client = MilvusClient(uri=milvus_uri)
        client.flush(name)
        deadline = time.monotonic() + 300
        while client.describe_index(name, "vector")["indexed_rows"] < n:
            assert time.monotonic() < deadline, "IVF_PQ index not built in 300 s"
            time.sleep(1)
        client.release_collection(name)
        client.load_collection(name)
        queries = clustered(30, dim, seed=12, clusters=8)
        truth = np.argsort(-(queries @ data.T), axis=1)[:, :k]
        recall = {}
        for label, svc in (("refine", with_refine), ("pq", without)):
            found = 0
            for q, want in zip(queries, truth):
                hits = search(svc.stub, coll, q, limit=k)
                found += len({h.id for h in hits} & {recs[i].id for i in want})
            recall[label] = found / (k * len(queries))
        assert recall["refine"] >= 0.95, recall
        assert recall["refine"] > recall["pq"], recall
        # refined scores are cosine similarities re-computed from the stored 8-bit copies
        hits = search(with_refine.stub, coll, queries[0], limit=3)
        exact = {recs[i].id: float(queries[0] @ data[i]) for i in truth[0][:3]}
        assert [h.id for h in hits] == list(exact) and all(h.score == pytest.approx(exact[h.id], abs=2e-3) for h in hits)
        # the copy lives in the collection's schema, beside the float vector
        assert "refine" in [f["name"] for f in client.describe_collection(name)["fields"]]

        # Milvus 2.3.5 with local storage drops an IVF_PQ segment's float binlog when it compacts
        # it (reproduced: re-scoring from the float field then fails); the SQ8 copy survives it
        # (the binlog goes while the compaction executes; on a busy machine it may not have
        # completed within the wait, and the check below holds either way)
        job = client.compact(name)
        deadline = time.monotonic() + 180
        while str(client.get_compaction_state(job)).split(".")[-1].lower() != "completed" and time.monotonic() < deadline:
            time.sleep(1)
        while client.describe_index(name, "vector")["pending_index_rows"] and time.monotonic() < deadline:
            time.sleep(1)
        client.release_collection(name)
        client.load_collection(name)
        found = 0
        for q, want in zip(queries, truth):
            found += len({h.id for h in search(with_refine.stub, coll, q, limit=k)} & {recs[i].id for i in want})
        assert found / (k * len(queries)) >= 0.95
    finally:
        with_refine.close()
        without.close()


@pytest.mark.integration
@pytest.mark.e2e
def test_cli_creates_hnsw_and_ivf_pq_collections_with_parameters(mesh, milvus_uri: str) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from lookalike.cli import app

    runner = CliRunner()
    common = ["--gateway", mesh.gateway_addr, "--namespace", "cli-index"]
    assert runner.invoke(app, ["namespaces", "create", "cli-index", "--gateway", mesh.gateway_addr]).exit_code == 0
    result = runner.invoke(app, ["collections", "create", "graph", "--index", "hnsw", "--m", "24", "--ef-construction", "128", "--ef", "96", *common])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["collections", "create", "compact", "-e", "effnet-lite0", "--index", "ivf-pq",
                                 "--nlist", "256", "--pq-m", "80", "--nbits", "8", "--nprobe", "32", *common])
    assert result.exit_code == 0, result.output
    client = MilvusClient(uri=milvus_uri)
    graph = client.describe_index(milvus_collection_name("cli-index", "graph", "effnet-lite0"), "vector")
    assert (graph["index_type"], graph["M"], graph["efConstruction"]) == ("HNSW", "24", "128")
    phash = client.describe_index(milvus_collection_name("cli-index", "graph", "phash"), "vector")
    assert (phash["index_type"], phash["metric_type"]) == ("BIN_FLAT", "HAMMING")
    compact = client.describe_index(milvus_collection_name("cli-index", "compact", "effnet-lite0"), "vector")
    assert (compact["index_type"], compact["nlist"], compact["m"], compact["nbits"]) == ("IVF_PQ", "256", "80", "8")
    result = runner.invoke(app, ["collections", "list", *common])
    assert "INDEX_TYPE_IVF_PQ" in result.output and "INDEX_TYPE_HNSW" in result.output
    # bad parameters: a clear error naming the parameter, and nothing created
    result = runner.invoke(app, ["collections", "create", "bad", "--index", "ivf-pq", "--pq-m", "7", *common])
    assert result.exit_code == 2 and "INVALID_ARGUMENT" in result.output and "ivf_pq.m=7 must divide the dimension 1280" in result.output
    result = runner.invoke(app, ["collections", "create", "bad", "--index", "hnsw", "--nlist", "64", *common])
    assert result.exit_code == 2 and "ivf_pq parameters given for a HNSW index" in result.output
    result = runner.invoke(app, ["collections", "create", "bad", "--m", "1000", *common])
    assert result.exit_code == 2 and "hnsw.m must be between 4 and 64, got 1000" in result.output
    assert not client.has_collection(milvus_collection_name("cli-index", "bad", "effnet-lite0"))
    # query-time parameters per retriever: checked against the collection's index type at create time
    result = runner.invoke(app, ["retrievers", "create", "wide", "-c", "compact", "-s", "effnet-lite0:20", "--nprobe", "128", *common])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["retrievers", "create", "bad", "-c", "compact", "--ef", "128", *common])
    assert result.exit_code == 2 and "hnsw.ef given, but namespaces/cli-index/collections/compact has a INDEX_TYPE_IVF_PQ index" in " ".join(result.output.split())
    result = runner.invoke(app, ["retrievers", "create", "deep", "-c", "graph", "--ef", "300", *common])
    assert result.exit_code == 0, result.output


def test_get_vectors_answers_from_the_sq8_copy_when_the_float_field_is_unreadable() -> None:
    from lookalike.vectorindex import CollectionInfo
    from services.search.server import SearchServicer

    ids = [cid("a"), cid("b")]
    stored = {ids[0]: np.array([0.6, 0.8], dtype=np.float32), ids[1]: np.array([1.0, 0.0], dtype=np.float32)}

    class FakeIndex:
        async def info(self, name: str) -> CollectionInfo:
            return CollectionInfo(name, 2, False, IndexParams("IVF_PQ", "COSINE", {}, {}), {"namespace": "ns"}, refine_copy=True)

        async def get(self, name: str, namespace: str, wanted: list[str], with_vector: bool = True, with_refine_copy: bool = False) -> list:
            assert namespace == "ns"
            if with_vector:
                raise InvalidArgument("rejected by Milvus: invalid local path")
            assert with_refine_copy
            return [{"id": i, "namespace": "ns", "object": "", "filename": f"{i[:4]}.jpg", "metadata": {}, "refine": sq8_encode(stored[i])} for i in wanted]

    class Context:
        def invocation_metadata(self) -> tuple:
            return ()

        def time_remaining(self) -> None:
            return None

    servicer = SearchServicer(FakeIndex())  # type: ignore[arg-type]
    response = asyncio.run(servicer.GetVectors(pb.GetVectorsRequest(collection="namespaces/ns/collections/c", extractor="emb", ids=ids[::-1]), Context()))
    assert [r.id for r in response.records] == ids[::-1]
    for record in response.records:
        np.testing.assert_allclose(list(record.vector.values), stored[record.id], atol=3e-3)


MF = types_pb2.MetadataField


def shop_fields() -> list[types_pb2.MetadataField]:
    return [MF(name="price", type=MF.TYPE_DOUBLE), MF(name="stock", type=MF.TYPE_INT64),
            MF(name="brand", type=MF.TYPE_STRING), MF(name="sale", type=MF.TYPE_BOOL)]


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["hnsw", "ivf-pq"])
def test_declared_metadata_fields_are_typed_filterable_columns(service: InProcessService, milvus_uri: str, kind: str) -> None:
    stub, coll = service.stub, f"namespaces/typed/collections/shop-{kind}"
    spec = (types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_IVF_PQ, ivf_pq=types_pb2.IvfPqParams(nlist=16, m=16))
            if kind == "ivf-pq" else types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_HNSW))
    ensure_typed = lambda fields: stub.EnsureIndex(  # noqa: E731
        pb.EnsureIndexRequest(collection=coll, extractor=extractor(), index=spec, metadata_fields=fields), timeout=60).created
    assert ensure_typed(shop_fields()) is True
    assert ensure_typed(shop_fields()) is False  # idempotent
    with pytest.raises(grpc.RpcError) as exc:
        ensure_typed(shop_fields()[:2])
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION and "price:double, stock:int64, brand:string, sale:bool" in exc.value.details()  # type: ignore[union-attr]

    n = 60
    vectors = clustered(n, DIM, seed=7)
    brands = ["acme", "zeta", "omni"]
    # half the values come as strings, the way S3 object metadata and --meta key=value give them
    meta = [{"price": f"{i * 1.5}" if i % 2 else i * 1.5, "stock": str(i) if i % 3 == 0 else i, "brand": brands[i % 3],
             "sale": "true" if i % 4 == 0 else False, "note": "free-form" if i < 30 else "other"} for i in range(n)]
    recs = records("typed", vectors, kind, meta)
    stub.UpsertVectors(pb.UpsertVectorsRequest(collection=coll, extractor="emb", records=recs), timeout=30)

    # Milvus holds typed columns (with their scalar indexes), and results carry the converted values
    name = milvus_collection_name("typed", f"shop-{kind}", "emb")
    client = MilvusClient(uri=milvus_uri)
    described = {f["name"]: f["type"] for f in client.describe_collection(name)["fields"]}
    assert {k: described[k] for k in ("m_price", "m_stock", "m_brand", "m_sale")} == {
        "m_price": DataType.DOUBLE, "m_stock": DataType.INT64, "m_brand": DataType.VARCHAR, "m_sale": DataType.BOOL}
    assert {client.describe_index(name, i)["field_name"] for i in client.list_indexes(name)} == {"vector", "m_price", "m_stock", "m_brand"}
    row = client.query(name, filter=f'id == "{recs[9].id}"', output_fields=["m_price", "m_stock", "m_brand", "m_sale"], consistency_level="Strong")[0]
    assert (row["m_price"], row["m_stock"], row["m_brand"], row["m_sale"]) == (13.5, 9, "acme", False)
    got = stub.GetVectors(pb.GetVectorsRequest(collection=coll, extractor="emb", ids=[recs[8].id]), timeout=30).records[0]
    assert dict(got.metadata) == {"price": 12.0, "stock": 8.0, "brand": "omni", "sale": True, "note": "free-form"}

    # nested and/or/in/not over typed columns and the free-form JSON select exactly the right rows
    def expected(i: int, m: dict) -> bool:
        return (i * 1.5 < 30 and m["brand"] in ("acme", "omni")) or (i % 4 == 0 and not i >= 40)

    for text, want in [
        ("(price < 30 and brand in [acme, omni]) or (sale == true and not stock >= 40)", expected),
        ('note == "free-form" and stock > 10 and brand != zeta', lambda i, m: i < 30 and i > 10 and m["brand"] != "zeta"),
        ("stock in [3, 6, 9.0] or price >= 88", lambda i, m: i in (3, 6, 9) or i * 1.5 >= 88),
    ]:
        hits = search(stub, coll, vectors[0], limit=n, filter=parse_filter_text(text))
        assert {h.id for h in hits} == {recs[i].id for i in range(n) if want(i, meta[i])}, text

    # filters that do not fit a declared type are refused, naming the field and its type
    for text, message in [("price == cheap", "'price': the field is declared double"),
                          ("stock < 2.5", "'stock': the field is declared int64: compare it with a whole number"),
                          ("sale < true", "cannot order booleans"), ("sale == 1", "'sale': the field is declared bool"),
                          ("brand contains x", "contains needs a list"), ("brand == 5", "'brand': the field is declared string")]:
        with pytest.raises(grpc.RpcError) as exc:
            search(stub, coll, vectors[0], filter=parse_filter_text(text))
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT and message in exc.value.details(), (text, exc.value.details())  # type: ignore[union-attr]

    # a record without a declared field, or with a value that is not of its type, is refused whole
    for bad, message in [({"price": 1.0, "stock": 1, "brand": "acme"}, "'sale' (bool) is declared by the collection and required"),
                         ({"price": "cheap", "stock": 1, "brand": "acme", "sale": True}, "'price' is declared double, got 'cheap'"),
                         ({"price": 1.0, "stock": 1.5, "brand": "acme", "sale": True}, "'stock' is declared int64 (a whole number)")]:
        new = records("typed", vectors[:1], f"{kind}-bad", [bad])
        with pytest.raises(grpc.RpcError) as exc:
            stub.UpsertVectors(pb.UpsertVectorsRequest(collection=coll, extractor="emb", records=new + records("typed", vectors[1:2], f"{kind}-ok", [meta[1]])), timeout=30)
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT and message in exc.value.details(), exc.value.details()  # type: ignore[union-attr]
    assert stub.CountVectors(pb.CountVectorsRequest(collection=coll, extractor="emb"), timeout=30).count == n


@pytest.mark.integration
@pytest.mark.e2e
def test_cli_indexes_a_folder_with_declared_fields_and_filters_on_them(mesh, photos: dict[str, bytes], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Through the whole mesh: --field on `lookalike index`, sidecar and --meta values (strings) converted,
    typed filters narrowing results, a mistyped filter refused, an image lacking a field failed with its reason."""
    import json

    from typer.testing import CliRunner

    from lookalike.cli import app

    runner = CliRunner()
    names_ = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins"]
    for i, name in enumerate(names_):
        (tmp_path / f"{name}.jpg").write_bytes(photos[name])
        if name != "coins":  # coins has no price: it must fail, named, and nothing else with it
            (tmp_path / f"{name}.jpg.json").write_text(json.dumps({"price": str(10 * (i + 1)), "kind": "photo" if i % 2 else "scan"}))
    common = ["--gateway", mesh.gateway_addr, "--namespace", "cli-typed"]
    result = runner.invoke(app, ["index", str(tmp_path), "-c", "shop", "--index", "ivf-pq", "--field", "price:double",
                                 "--field", "instock:bool", "--meta", "instock=true", *common])
    flat = lambda text: " ".join(text.split())  # noqa: E731 - rich wraps long lines
    assert "indexed 5, failed 1" in result.output and "coins.jpg" in result.output, result.output
    assert "'price' (double) is declared by the collection and required" in flat(result.output), result.output
    result = runner.invoke(app, ["collections", "list", *common])
    assert "price:double" in result.output and "instock:bool" in result.output, result.output

    def found(flt: str) -> set[str]:
        result = runner.invoke(app, ["search", str(tmp_path / "chelsea.jpg"), "-c", "shop", "-k", "10", "--json", "--filter", flt, *common])
        assert result.exit_code == 0, result.output
        return {d["filename"] for d in json.loads(result.output).get("documents", [])}

    assert found("price <= 30 and instock == true") == {"astronaut.jpg", "chelsea.jpg", "coffee.jpg"}
    assert found("(price in [20, 50] or kind == scan) and not price > 40") == {"chelsea.jpg", "astronaut.jpg", "coffee.jpg"}
    result = runner.invoke(app, ["search", str(tmp_path / "chelsea.jpg"), "-c", "shop", "--filter", "price == cheap", *common])
    assert result.exit_code == 2 and "INVALID_ARGUMENT" in result.output and "'price': the field is declared double" in flat(result.output)
    # an injection attempt in a field name never reaches Milvus
    result = runner.invoke(app, ["search", str(tmp_path / "chelsea.jpg"), "-c", "shop", "--filter", 'price"] or 1 == 1', *common])
    assert result.exit_code == 2 and "cannot parse filter near" in flat(result.output), result.output
