"""Search benchmark: recall@10 and latency of HNSW and IVF-PQ (with and without refine) against exact
(FLAT) ground truth, through the search service (gRPC) and through pymilvus directly.

    python -m bench.search                              # 10k and 100k vectors (README's table)
    python -m bench.search --sizes 1000000 --indexes hnsw   # 1M (see below)
    python -m bench.search --sizes 2000 --queries 40 --dim 64      # a smoke run in ~1 min

Vectors are 1280-d like EfficientNet-Lite0's. The catalog holds the real embeddings of the dev
set's gallery (``--dev-dir``, default ../shared/eval/dev, encoded once with effnet-lite0 and cached)
plus synthetic clustered vectors drawn from a model of those embeddings (their mean and top-200
principal directions, spread widened to match their pairwise and nearest-neighbour similarities, then
ReLU'd and L2-normalised like the real ones). The queries are half the dev set's edited copies (each
has its original in the catalog) and half fresh samples of the catalog's clusters. Without the dev
set (a user's machine) both come from a parametric generator with the same statistics: no file
outside the repository is needed.

Ground truth is exact cosine top-10 in numpy (what a FLAT index returns; a FLAT collection is timed
too). Every collection is created and filled through the search service (EnsureIndex +
UpsertVectors), so both paths search the same Milvus collections. Milvus is started by the bench
under ``--data-dir`` (default ~/.cache/lookalike/bench-search) unless ``--milvus-uri`` is given;
built collections are kept there and reused by the next run with the same data and parameters, so
only the first run pays the index builds (100k HNSW of 1280-d on 2 cores: several minutes).

1M vectors: 5 GB of float32 per collection. On 2 cores the HNSW collection alone took 23 min of
upserts and 32 min of index builds (``--sizes 1000000 --indexes hnsw``); all three want a machine
with ≥16 cores and ≥32 GB RAM. ``--build-only`` builds without measuring, so a later run measures on
a quiet machine. Generation and ground truth are streamed in chunks, so the bench itself stays
within a few GB.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import grpc
import numpy as np

from lookalike.vectorindex import REFINE_FIELD, milvus_collection_name, refine_rows

log = logging.getLogger("bench.search")

DIM = 1280
NAMESPACE = "bench"
EXTRACTOR = "effnet-lite0"
K = 10
CHUNK = 20_000
BENCH_VERSION = 1
DEFAULT_DEV_DIR = Path(__file__).resolve().parents[2] / "shared" / "eval" / "dev"
DEFAULT_DATA_DIR = Path.home() / ".cache" / "lookalike" / "bench-search"
CATEGORIES = 20  # metadata.category: c00..c19, so one category selects 5 %


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class VectorModel:
    """A generator of realistic embedding vectors: mean + low-rank Gaussian in principal directions,
    ReLU, L2 norm. Clusters share a latent draw (correlation rho)."""

    mean: np.ndarray  # [dim]
    basis: np.ndarray  # [rank, dim], orthonormal rows
    scales: np.ndarray  # [rank] standard deviation along each direction
    source: str

    @classmethod
    def fit(cls, real: np.ndarray) -> VectorModel:
        mean = real.mean(axis=0)
        _, s, vt = np.linalg.svd(real - mean, full_matrices=False)
        rank = min(200, len(s))
        # A Gaussian in the principal directions is more concentrated than the real (heavy-tailed,
        # sparse) embeddings: widening it 2× and lowering the mean by 0.01 matches their pairwise
        # similarity (~0.35 vs 0.31 real), nearest-neighbour similarity (0.74 vs 0.73) and zeros (53 %).
        return cls(mean - 0.01, vt[:rank], 2.0 * s[:rank] / np.sqrt(len(real)), "dev-set embeddings")

    @classmethod
    def parametric(cls, dim: int, seed: int) -> VectorModel:
        """No real data: a gamma-distributed mean, random orthonormal directions and the power-law
        spectrum measured on the dev set's embeddings (std ≈ 0.38·k^-0.51), same widening."""
        rng = np.random.default_rng(seed + 7919)
        rank = min(200, dim)
        mean = rng.gamma(1.0, 0.0107, dim) - 0.01
        basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T
        scales = 2.0 * 0.38 * np.arange(1, rank + 1) ** -0.51
        return cls(mean, basis, scales, "parametric generator")

    def sample(self, latent: np.ndarray) -> np.ndarray:
        v = np.maximum(self.mean + (latent * self.scales) @ self.basis, 0.0)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        return (v / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass
class Dataset:
    size: int
    dim: int
    seed: int
    model: VectorModel
    real: np.ndarray  # [r, dim] real gallery embeddings placed first in the catalog (may be empty)
    rho: float = 0.5
    cluster_size: int = 20
    centers: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, self.size, 1])
        clusters = max(1, self.size // self.cluster_size)
        self.centers = rng.standard_normal((clusters, len(self.model.scales)))
        # uneven cluster sizes (a few big product lines, many small ones)
        weights = rng.lognormal(0.0, 1.0, clusters)
        self.cluster_p = weights / weights.sum()

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for part in (self.size, self.dim, self.seed, self.rho, self.cluster_size, BENCH_VERSION, self.model.source):
            h.update(str(part).encode())
        h.update(np.ascontiguousarray(self.real).tobytes())
        h.update(np.ascontiguousarray(self.model.mean[:64]).tobytes())
        return h.hexdigest()[:16]

    def _draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.choice(len(self.centers), size=n, p=self.cluster_p)
        latent = np.sqrt(self.rho) * self.centers[labels] + np.sqrt(1 - self.rho) * rng.standard_normal((n, self.centers.shape[1]))
        return self.model.sample(latent), labels

    def chunks(self) -> Any:
        """(start, vectors, categories) in order; deterministic, so a rerun rebuilds the same catalog."""
        start = 0
        real = self.real[: self.size]
        if len(real):
            yield 0, real, np.arange(len(real)) % CATEGORIES
            start = len(real)
        index = 0
        while start < self.size:
            n = min(CHUNK, self.size - start)
            vectors, labels = self._draw(np.random.default_rng([self.seed, self.size, 2, index]), n)
            yield start, vectors, labels % CATEGORIES
            start += n
            index += 1

    def synthetic_queries(self, n: int) -> np.ndarray:
        return self._draw(np.random.default_rng([self.seed, self.size, 3]), n)[0]

    def ids(self) -> list[str]:
        fingerprint = self.fingerprint  # hashes the real gallery: once, not once per id
        return [hashlib.sha256(f"bench:{fingerprint}:{i}".encode()).hexdigest() for i in range(self.size)]


def dev_embeddings(dev_dir: Path, cache_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(gallery, queries) effnet-lite0 embeddings of the dev set, or None without it."""
    manifest_path = dev_dir / "manifest.json"
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    gallery = list(manifest["gallery"]) + list(manifest.get("distractors", []))
    queries = list(manifest["queries"])
    key = hashlib.sha256(manifest_path.read_bytes()).hexdigest()[:16]
    cache = cache_dir / f"dev-effnet-{key}.npz"
    if cache.is_file():
        data = np.load(cache)
        return data["gallery"], data["queries"]
    from lookalike.imaging import decode_image
    from lookalike.models import get_extractor

    extractor = get_extractor("effnet-lite0")
    log.info("encoding %d dev images with effnet-lite0 (once; cached in %s)", len(gallery) + len(queries), cache)

    def encode(files: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(files), 32):
            images = [decode_image((dev_dir / f).read_bytes(), max_bytes=64 << 20, max_pixels=100_000_000) for f in files[start:start + 32]]
            out.append(extractor.encode(images))
        return np.concatenate(out)

    g, q = encode([e["file"] for e in gallery]), encode([e["file"] for e in queries])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, gallery=g, queries=q)
    return g, q


def exact_topk(dataset: Dataset, queries: np.ndarray, mask_category: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Exact cosine top-K catalog indices per query (vectors are normalised: cosine = dot)."""
    best_s = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), K), -1, dtype=np.int64)
    for start, vectors, categories in dataset.chunks():
        scores = queries @ vectors.T
        if mask_category is not None:
            scores[:, ~mask_category(categories)] = -np.inf
        s = np.concatenate([best_s, scores], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + len(vectors)), scores.shape)], axis=1)
        top = np.argpartition(-s, K - 1, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1)


def categories_of(dataset: Dataset) -> np.ndarray:
    return np.concatenate([c for _, _, c in dataset.chunks()])


# ---------------------------------------------------------------------------------------------
# servers


class Servers:
    """Milvus (ours or given) and search service processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        from lookalike import devservers

        self.devservers = devservers
        self.processes: list[Any] = []
        self.run_dir = Path(args.data_dir) / "run"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if args.milvus_uri:
            self.milvus_uri = args.milvus_uri
            self.milvus_pid: int | None = None
        else:
            log.info("starting Milvus under %s", Path(args.data_dir) / "milvus")
            milvus = devservers.start_milvus(Path(args.data_dir) / "milvus")
            self.processes.append(milvus)
            self.milvus_uri = f"http://127.0.0.1:{milvus.port}"
            self.milvus_pid = milvus.pid

    def start_search(self, name: str, refine: int) -> str:
        from lookalike.config import REPO_ROOT
        from lookalike.stack import health_check

        address = f"127.0.0.1:{self.devservers.free_port()}"
        env = {**os.environ, "LOOKALIKE_MILVUS_URI": self.milvus_uri, "LOOKALIKE_SEARCH_ADDR": address,
               "LOOKALIKE_SEARCH_IVF_PQ_REFINE": str(refine), "LOOKALIKE_LOG_LEVEL": "WARNING"}

        def healthy() -> None:
            if not health_check(address):
                raise RuntimeError("not serving yet")

        process = self.devservers.launch_process(
            name, [sys.executable, "-m", "services.search"], data_dir=self.run_dir, log_path=self.run_dir / f"{name}.log",
            ports={"client": int(address.rsplit(":", 1)[1])}, health=healthy, timeout=120, env=env, cwd=REPO_ROOT,
        )
        self.processes.append(process)
        return address

    def stop(self) -> None:
        for process in reversed(self.processes):
            try:
                # Milvus may be compacting or building: give it time (a SIGKILL mid-compaction has
                # left Milvus 2.3.5 with a segment whose vector binlog was gone)
                process.stop(timeout=180 if process.name == "milvus" else 20)
            except Exception:  # noqa: BLE001 - best effort at exit
                log.exception("stopping %s failed", process.name)


# ---------------------------------------------------------------------------------------------
# collections


@dataclass
class IndexConfig:
    key: str  # hnsw | ivf-pq | flat
    build: dict[str, int]
    # `category` declared as a typed string field (a column with a scalar index) instead of JSON only
    typed: bool = False

    @property
    def name(self) -> str:
        return self.key + ("-typed" if self.typed else "")

    def spec(self) -> Any:
        from lookalike.v1 import types_pb2

        if self.key == "hnsw":
            return types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_HNSW, hnsw=types_pb2.HnswParams(m=self.build["M"], ef_construction=self.build["efConstruction"]))
        if self.key == "ivf-pq":
            return types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_IVF_PQ, ivf_pq=types_pb2.IvfPqParams(
                nlist=self.build["nlist"], m=self.build["m"], nbits=self.build["nbits"]))
        return types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_FLAT)


def auto_nlist(size: int) -> int:
    """≈ 4·√N rounded to a power of two (10k → 512, 100k → 1024, 1M → 4096)."""
    target = 4 * np.sqrt(size)
    return int(2 ** round(np.log2(max(target, 16))))


class Collections:
    def __init__(self, milvus_uri: str, stubs: dict[int, Any], builds_file: Path) -> None:
        from pymilvus import MilvusClient

        # which data and parameters each collection was built from (not a collection property:
        # Milvus 2.3.5 forgets altered properties when it restarts)
        self.builds_file = builds_file
        self.builds: dict[str, str] = json.loads(builds_file.read_text()) if builds_file.is_file() else {}
        self.uri = milvus_uri
        self.client = MilvusClient(uri=milvus_uri, timeout=600)
        self.stub = stubs[1]

    def ensure(self, config: IndexConfig, dataset: Dataset, fresh: bool) -> dict[str, Any]:
        """The collection for (config, dataset): reused when a previous run built exactly it."""
        from lookalike.v1 import search_service_pb2 as pb
        from lookalike.v1 import types_pb2

        coll_id = f"{config.name}-{dataset.size}"
        collection = f"namespaces/{NAMESPACE}/collections/{coll_id}"
        name = milvus_collection_name(NAMESPACE, coll_id, EXTRACTOR)
        built_from = {"data": dataset.fingerprint, "build": config.build}
        if config.key == "ivf-pq":
            built_from["schema"] = "sq8-refine-copy"  # collections from before the copy are rebuilt
        if config.typed:
            built_from["typed"] = ["category:string"]
        fingerprint = json.dumps(built_from, sort_keys=True)
        if self.client.has_collection(name) and not fresh:
            if self.builds.get(name) == fingerprint:  # written only once a build completed
                self.client.load_collection(name)
                self._wait_indexed(name, dataset.size, timeout=300)
                rows = self.client.query(name, filter=f'namespace == "{NAMESPACE}"', output_fields=["count(*)"], consistency_level="Strong")
                if rows and rows[0]["count(*)"] == dataset.size:
                    log.info("%s: reusing the %d-vector collection built by an earlier run", coll_id, dataset.size)
                    return {"collection": collection, "name": name, "cached": True, **self._segments(name)}
                log.info("%s: holds %s rows, not %d: rebuilding", coll_id, rows, dataset.size)
            else:
                log.info("%s: built from other data or parameters: rebuilding", coll_id)
        if self.client.has_collection(name):
            self.client.drop_collection(name)
        extractor = types_pb2.ExtractorInfo(name=EXTRACTOR, dimension=dataset.dim, vector_type=types_pb2.VECTOR_TYPE_FLOAT,
                                            metric=types_pb2.METRIC_COSINE)
        fields = [types_pb2.MetadataField(name="category", type=types_pb2.MetadataField.TYPE_STRING)] if config.typed else []
        self.stub.EnsureIndex(pb.EnsureIndexRequest(collection=collection, extractor=extractor, index=config.spec(),
                                                    metadata_fields=fields), timeout=120)
        ids = dataset.ids()
        began = time.perf_counter()
        for start, vectors, categories in dataset.chunks():
            for s in range(0, len(vectors), 1000):
                records = [
                    pb.VectorRecord(
                        id=ids[start + s + j], vector=types_pb2.Vector(values=v),
                        object=f"namespaces/{NAMESPACE}/buckets/bench/objects/{ids[start + s + j]}",
                        filename=f"{start + s + j}.jpg", metadata=_struct({"category": f"c{int(c):02d}"}),
                    )
                    for j, (v, c) in enumerate(zip(vectors[s:s + 1000].tolist(), categories[s:s + 1000]))
                ]
                self.stub.UpsertVectors(pb.UpsertVectorsRequest(collection=collection, extractor=EXTRACTOR, records=records), timeout=600)
            log.info("%s: %d/%d vectors upserted", coll_id, min(start + len(vectors), dataset.size), dataset.size)
        upserted = time.perf_counter()
        self.client.flush(name)
        self._wait_indexed(name, dataset.size)
        built = time.perf_counter()
        log.info("%s: index built in %.0f s", coll_id, built - upserted)
        # reload so the query node serves the indexed segments (not the interim growing-data index)
        self.client.release_collection(name)
        self.client.load_collection(name)
        self.builds[name] = fingerprint
        self.builds_file.write_text(json.dumps(self.builds, indent=1, sort_keys=True))
        return {"collection": collection, "name": name, "cached": False, "upsert_s": round(upserted - began, 1),
                "build_s": round(built - upserted, 1), **self._segments(name)}

    def _wait_indexed(self, name: str, size: int, timeout: float = 6 * 3600) -> None:
        """Until every sealed segment has its index (built per segment, after the data is in)."""
        deadline = time.monotonic() + timeout
        while True:
            index = self.client.describe_index(name, "vector")
            if index.get("indexed_rows", 0) >= size and not index.get("pending_index_rows"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: index not complete after {timeout:.0f} s: {index}")
            time.sleep(2)

    def _segments(self, name: str) -> dict[str, Any]:
        """How many sealed segments the query node serves (each is searched separately)."""
        from pymilvus import connections, utility

        try:
            connections.connect(alias="bench", uri=self.uri)
            return {"segments": len(utility.get_query_segment_info(name, using="bench"))}
        except Exception:  # noqa: BLE001 - informative only
            return {}


def _struct(values: dict[str, Any]) -> Any:
    from google.protobuf import struct_pb2

    out = struct_pb2.Struct()
    out.update(values)
    return out


# ---------------------------------------------------------------------------------------------
# measurement


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


@dataclass
class Row:
    size: int
    index: str
    params: str
    recall: float
    recall_direct: float
    direct_p50: float
    direct_p99: float
    service_p50: float
    service_p99: float
    overhead: float
    qps: float
    qps_concurrent: float
    copy_top1: float | None = None


class Runner:
    def __init__(self, client: Any, stubs: dict[str, Any], queries: np.ndarray, ids: list[str], concurrency: int) -> None:
        self.client = client
        self.stubs = stubs  # refine setting -> stub
        self.queries = queries
        self.ids = ids
        self.concurrency = concurrency

    def direct(self, name: str, q: np.ndarray, index: str, params: dict[str, int], refine: int, flt: str = "",
               consistency: str = "Session") -> list[str]:
        """What the service does, in pymilvus calls (refine from the SQ8 copy, as the service does)."""
        scope = f'namespace == "{NAMESPACE}"'
        expression = f"({scope}) and ({flt})" if flt else scope
        metric_params = {"metric_type": "COSINE", "params": params}
        vector = q.tolist()
        if refine > 1:
            hits = self.client.search(name, data=[vector], limit=K * refine, filter=expression, output_fields=["namespace"],
                                      search_params=metric_params, consistency_level=consistency)[0]
            ids = ", ".join(json.dumps(h["id"]) for h in hits)
            rows = self.client.query(name, filter=f"({scope}) and (id in [{ids}])",
                                     output_fields=["id", "namespace", "object", "filename", "metadata", REFINE_FIELD],
                                     consistency_level=consistency)
            return [h.id for h in refine_rows("COSINE", q, rows, K)]
        hits = self.client.search(name, data=[vector], limit=K, filter=expression,
                                  output_fields=["namespace", "object", "filename", "metadata"],
                                  search_params=metric_params, consistency_level=consistency)[0]
        return [h["id"] for h in hits]

    def service(self, stub: Any, collection: str, q: np.ndarray, overrides: Any, flt: Any = None) -> list[str]:
        from lookalike.v1 import search_service_pb2 as pb
        from lookalike.v1 import types_pb2

        request = pb.SearchRequest(collection=collection, extractor=EXTRACTOR, vector=types_pb2.Vector(values=q.tolist()),
                                   limit=K, search_params=overrides)
        if flt is not None:
            request.filter.CopyFrom(flt)
        return [h.id for h in stub.Search(request, timeout=60).hits]

    @staticmethod
    def timed(fn: Callable[[np.ndarray], list[str]], queries: np.ndarray, warmup: int = 10) -> tuple[list[list[str]], list[float]]:
        for q in queries[:warmup]:
            fn(q)
        results, times = [], []
        for q in queries:
            t = time.perf_counter()
            results.append(fn(q))
            times.append((time.perf_counter() - t) * 1000)
        return results, times

    def concurrent_qps(self, fn: Callable[[np.ndarray], list[str]], queries: np.ndarray) -> float:
        with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
            t = time.perf_counter()
            list(pool.map(fn, queries))
            return len(queries) / (time.perf_counter() - t)

    def recall(self, results: list[list[str]], truth: np.ndarray) -> float:
        found = sum(len(set(r) & {self.ids[i] for i in t if i >= 0}) for r, t in zip(results, truth))
        return found / sum(int((t >= 0).sum()) for t in truth)

    @staticmethod
    def timed_pair(first: Callable[[np.ndarray], list[str]], second: Callable[[np.ndarray], list[str]], queries: np.ndarray,
                   warmup: int = 10) -> tuple[tuple[list[list[str]], list[float]], tuple[list[list[str]], list[float]]]:
        """Both paths query by query, in turns: a burst of background work on a shared machine then
        slows both alike instead of skewing their ratio."""
        for q in queries[:warmup]:
            first(q)
            second(q)
        out: tuple[tuple[list[list[str]], list[float]], ...] = (([], []), ([], []))
        for i, q in enumerate(queries):
            for fn, (results, times) in (zip((first, second), out) if i % 2 == 0 else zip((second, first), out[::-1])):
                t = time.perf_counter()
                results.append(fn(q))
                times.append((time.perf_counter() - t) * 1000)
        return out[0], out[1]

    def measure(self, size: int, index: str, label: str, name: str, collection: str, params: dict[str, int], refine: int,
                overrides: Any, truth: np.ndarray, copy_truth: list[int] | None) -> Row:
        stub = self.stubs[refine]
        (direct_results, direct_times), (service_results, service_times) = self.timed_pair(
            lambda q: self.direct(name, q, index, params, refine), lambda q: self.service(stub, collection, q, overrides), self.queries)
        qps = len(self.queries) / (sum(service_times) / 1000)
        qps_concurrent = self.concurrent_qps(lambda q: self.service(stub, collection, q, overrides), self.queries)
        copy_top1 = None
        if copy_truth:
            hits = sum(1 for r, want in zip(service_results, copy_truth) if r and r[0] == self.ids[want])
            copy_top1 = hits / len(copy_truth)
        row = Row(size, index, label, self.recall(service_results, truth), self.recall(direct_results, truth),
                  percentile(direct_times, 50), percentile(direct_times, 99), percentile(service_times, 50),
                  percentile(service_times, 99), percentile(service_times, 50) / percentile(direct_times, 50), qps,
                  qps_concurrent, copy_top1)
        log.info("%s", row)
        return row


def wait_for_quiet(pid: int | None, busy_cores: float = 0.3, window_s: float = 5.0, timeout_s: float = 900.0) -> None:
    """Until Milvus (our process) stops loading, compacting or indexing in the background, so that
    the latencies measured next are the searches' own."""
    if pid is None:
        return
    stat = Path(f"/proc/{pid}/stat")
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds() -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = cpu_seconds()
        time.sleep(window_s)
        used = (cpu_seconds() - before) / window_s
        if used < busy_cores:
            return
        log.info("Milvus busy in the background (%.1f cores): waiting before measuring", used)
    log.warning("Milvus still busy after %.0f s: measuring anyway", timeout_s)


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
        memory = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        pass
    import importlib.metadata

    return {"cpu": cpu, "cores": os.cpu_count(), "memory": memory, "os": platform.platform(),
            "python": platform.python_version(), "milvus": importlib.metadata.version("milvus"),
            "pymilvus": importlib.metadata.version("pymilvus"), "date": time.strftime("%Y-%m-%d"),
            "loadavg_start": os.getloadavg()[0]}


def consistency_costs(runner: Runner, collections: Collections, name: str, queries: np.ndarray, stub: Any, dim: int,
                      model: VectorModel) -> list[dict[str, Any]]:
    """Read latency per consistency level (pymilvus, HNSW) and write cost with and without the fence."""
    from lookalike.v1 import search_service_pb2 as pb
    from lookalike.v1 import types_pb2

    out = []
    for level in ("Strong", "Session", "Bounded", "Eventually"):
        _, times = runner.timed(lambda q: runner.direct(name, q, "hnsw", {"ef": 64}, 1, consistency=level), queries[:60], warmup=5)
        out.append({"what": f"search, {level}", "p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99)})
    coll = f"namespaces/{NAMESPACE}/collections/writes"
    extractor = types_pb2.ExtractorInfo(name=EXTRACTOR, dimension=dim, vector_type=types_pb2.VECTOR_TYPE_FLOAT, metric=types_pb2.METRIC_COSINE)
    collections.stub.EnsureIndex(pb.EnsureIndexRequest(collection=coll, extractor=extractor), timeout=60)
    vectors = model.sample(np.random.default_rng(5).standard_normal((40, len(model.scales))))
    fenced, unfenced = [], []
    for i, v in enumerate(vectors):
        content = hashlib.sha256(f"write-{i}".encode()).hexdigest()
        record = pb.VectorRecord(id=content, vector=types_pb2.Vector(values=v.tolist()))
        t = time.perf_counter()
        stub.UpsertVectors(pb.UpsertVectorsRequest(collection=coll, extractor=EXTRACTOR, records=[record]), timeout=30)
        fenced.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        collections.client.upsert(milvus_collection_name(NAMESPACE, "writes", EXTRACTOR),
                                  [{"id": content, "namespace": NAMESPACE, "object": "", "filename": "", "metadata": {}, "vector": v.tolist()}])
        unfenced.append((time.perf_counter() - t) * 1000)
    out.append({"what": "upsert of 1 vector, service (fenced)", "p50_ms": percentile(fenced, 50), "p99_ms": percentile(fenced, 99)})
    out.append({"what": "upsert of 1 vector, pymilvus (not fenced)", "p50_ms": percentile(unfenced, 50), "p99_ms": percentile(unfenced, 99)})
    return out


def filtered_costs(runner: Runner, dataset: Dataset, name: str, collection: str, stub: Any, field: str = "JSON") -> list[dict[str, Any]]:
    """HNSW with a metadata filter (on the JSON field, or on a declared typed column): 5 % and 50 % of the catalog."""
    from lookalike.filters import parse_filter_text
    from lookalike.v1 import types_pb2

    categories = categories_of(dataset)
    out = []
    for label, text, wanted in (
        ("none", "", None),
        ("category == c07 (5 %)", "category == c07", {7}),
        ("category in c00..c09 (50 %)", "category in [" + ", ".join(f"c{i:02d}" for i in range(10)) + "]", set(range(10))),
    ):
        flt = parse_filter_text(text) if text else None
        mask = (lambda c, w=wanted: np.isin(c, list(w))) if wanted else None
        truth = exact_topk(dataset, runner.queries, mask)
        results, times = runner.timed(lambda q: runner.service(stub, collection, q, types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(ef=64)), flt), runner.queries)
        out.append({"size": dataset.size, "field": field, "filter": label, "recall": runner.recall(results, truth),
                    "p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99),
                    "selectivity": float(np.isin(categories, list(wanted)).mean()) if wanted else 1.0})
        log.info("filtered %s", out[-1])
    return out


def markdown(rows: list[Row], consistency: list[dict[str, Any]], filtered: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory']}; Milvus {info['milvus']} standalone on the same "
        f"machine; {info['date']}; load average at start {info['loadavg_start']:.1f}",
        f"data: {info['data']}; {info['queries']} queries; recall@{K} against exact top-{K}",
        "",
        "| vectors | index | query params | recall@10 | pymilvus p50 / p99 ms | service p50 / p99 ms | overhead | QPS (1 client) | "
        f"QPS ({info['concurrency']} clients) | copy found first |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        copy = f"{r.copy_top1:.1%}" if r.copy_top1 is not None else "–"
        lines.append(
            f"| {r.size:,} | {r.index} | {r.params} | {r.recall:.3f} | {r.direct_p50:.1f} / {r.direct_p99:.1f} | "
            f"{r.service_p50:.1f} / {r.service_p99:.1f} | ×{r.overhead:.2f} | {r.qps:.0f} | {r.qps_concurrent:.0f} | {copy} |"
        )
    if filtered:
        lines += ["", "| vectors | HNSW ef=64 + filter | on | matching | recall@10 | service p50 / p99 ms |", "|---|---|---|---|---|---|"]
        for f in filtered:
            lines.append(f"| {f['size']:,} | {f['filter']} | {f.get('field', 'JSON')} | {f['selectivity']:.0%} | {f['recall']:.3f} | "
                         f"{f['p50_ms']:.1f} / {f['p99_ms']:.1f} |")
    if consistency:
        lines += ["", "| operation | p50 ms | p99 ms |", "|---|---|---|"]
        for c in consistency:
            lines.append(f"| {c['what']} | {c['p50_ms']:.1f} | {c['p99_ms']:.1f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--sizes", default="10000,100000", help="catalog sizes, comma-separated (default 10000,100000; 1000000 on a big machine)")
    parser.add_argument("--queries", type=int, default=200, help="queries per configuration (default 200: half real edited copies, half synthetic)")
    parser.add_argument("--dim", type=int, default=DIM, help="vector dimension (default 1280; other values use synthetic data only)")
    parser.add_argument("--dev-dir", type=Path, default=DEFAULT_DEV_DIR, help="dev set with manifest.json (default ../shared/eval/dev; optional)")
    parser.add_argument("--no-dev", action="store_true", help="ignore the dev set: synthetic vectors only, as on a user's machine")
    parser.add_argument("--milvus-uri", help="use this Milvus instead of starting one")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=f"Milvus data, caches and logs (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--fresh", action="store_true", help="rebuild every collection even if an earlier run left it")
    parser.add_argument("--indexes", default="flat,hnsw,ivf-pq",
                        help="index types to build and time (default flat,hnsw,ivf-pq; ground truth is exact numpy either way, "
                             "so 1M can leave out flat: 5 GB and a brute-force scan)")
    parser.add_argument("--refine", default="4,10", help="IVF-PQ refine factors to compare with none (default 4,10; one service process each)")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--hnsw-ef-construction", type=int, default=200)
    parser.add_argument("--ef", default="32,64,128", help="HNSW query ef values (default 32,64,128)")
    parser.add_argument("--nprobe", default="16,64", help="IVF-PQ nprobe values (default 16,64)")
    parser.add_argument("--pq-m", type=int, default=0, help="IVF-PQ sub-quantizers (default dim/8)")
    parser.add_argument("--nlist", type=int, default=0, help="IVF-PQ lists (default ≈4·√N as a power of two)")
    parser.add_argument("--concurrency", type=int, default=4, help="clients for the concurrent QPS column (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--build-only", action="store_true",
                        help="build (or check) the collections and stop: a later run measures them on a quiet machine")
    parser.add_argument("--typed-filters", action="store_true",
                        help="also build an HNSW collection declaring `category` as a typed field, and time the same filters on it")
    parser.add_argument("--skip-extras", action="store_true", help="no filtered-search and consistency tables")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymilvus").setLevel(logging.ERROR)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    indexes = {i.strip() for i in args.indexes.split(",") if i.strip()}
    if not indexes or indexes - {"flat", "hnsw", "ivf-pq"}:
        raise SystemExit(f"--indexes: choose from flat, hnsw, ivf-pq (got {args.indexes!r})")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    if args.fresh and not args.milvus_uri:
        shutil.rmtree(args.data_dir / "milvus", ignore_errors=True)

    dev = None if args.no_dev or args.dim != DIM else dev_embeddings(args.dev_dir, args.data_dir / "cache")
    model = VectorModel.fit(dev[0]) if dev is not None else VectorModel.parametric(args.dim, args.seed)
    real_gallery = dev[0] if dev is not None else np.empty((0, args.dim), dtype=np.float32)
    info = machine()
    info["data"] = (f"{len(real_gallery)} real effnet-lite0 embeddings of the dev gallery + synthetic clustered 1280-d vectors fitted to them"
                    if dev is not None else f"synthetic clustered {args.dim}-d vectors ({model.source})")
    info["queries"] = args.queries
    info["concurrency"] = args.concurrency
    log.info("data: %s", info["data"])

    servers = Servers(args)
    rows: list[Row] = []
    consistency: list[dict[str, Any]] = []
    filtered: list[dict[str, Any]] = []
    builds: list[dict[str, Any]] = []
    try:
        from lookalike.v1 import search_service_pb2_grpc, types_pb2

        refines = sorted({1, *(int(r) for r in args.refine.split(",") if r)})
        stubs = {r: search_service_pb2_grpc.SearchServiceStub(grpc.insecure_channel(servers.start_search(f"search-refine{r}", r)))
                 for r in refines}
        builds_file = args.data_dir / ("builds.json" if servers.milvus_pid else f"builds-{hashlib.sha256(servers.milvus_uri.encode()).hexdigest()[:8]}.json")
        collections = Collections(servers.milvus_uri, stubs, builds_file)
        for size in sizes:
            dataset = Dataset(size, args.dim, args.seed, model, real_gallery)
            # queries: real edited copies (their original is in the catalog) + fresh cluster samples
            n_real = min(args.queries // 2, len(dev[1])) if dev is not None and size >= len(real_gallery) else 0
            rng = np.random.default_rng([args.seed, 9])
            real_pick = np.sort(rng.choice(len(dev[1]), n_real, replace=False)) if n_real else np.empty(0, dtype=int)
            queries = np.concatenate([dev[1][real_pick] if n_real else np.empty((0, args.dim), np.float32),
                                      dataset.synthetic_queries(args.queries - n_real)]).astype(np.float32)
            copy_truth = None
            if n_real:
                manifest = json.loads((args.dev_dir / "manifest.json").read_text())
                gallery_ids = [e["id"] for e in list(manifest["gallery"]) + list(manifest.get("distractors", []))]
                copy_truth = [gallery_ids.index(manifest["queries"][i]["gallery_id"]) for i in real_pick]
            truth = exact_topk(dataset, queries)
            ids = dataset.ids()
            runner = Runner(collections.client, stubs, queries, ids, args.concurrency)
            configs = [
                IndexConfig("flat", {}),
                IndexConfig("hnsw", {"M": args.hnsw_m, "efConstruction": args.hnsw_ef_construction}),
                IndexConfig("ivf-pq", {"nlist": args.nlist or auto_nlist(size), "m": args.pq_m or max(1, args.dim // 8), "nbits": 8}),
            ]
            configs = [c for c in configs if c.key in indexes]
            if args.typed_filters and "hnsw" in indexes and not args.skip_extras:
                configs.append(IndexConfig("hnsw", next(dict(c.build) for c in configs if c.key == "hnsw"), typed=True))
            built = {c.name: collections.ensure(c, dataset, args.fresh) for c in configs}
            for key, b in built.items():
                builds.append({"size": size, "index": key, **{k: v for k, v in b.items() if k not in ("collection", "name")}})
            if args.build_only:
                continue
            wait_for_quiet(servers.milvus_pid)
            n_copy = len(copy_truth) if copy_truth else 0

            def run(key: str, label: str, params: dict[str, int], refine: int, overrides: Any) -> None:
                b = built[key]
                row = runner.measure(size, {"flat": "FLAT", "hnsw": "HNSW", "ivf-pq": "IVF-PQ"}[key], label, b["name"], b["collection"],
                                     params, refine, overrides, truth, copy_truth if n_copy else None)
                rows.append(row)

            if "flat" in built:
                run("flat", "–", {}, 1, types_pb2.IndexSpec())
            hnsw = {"M": args.hnsw_m, "efConstruction": args.hnsw_ef_construction}
            for ef in [int(e) for e in args.ef.split(",") if e and "hnsw" in built]:
                run("hnsw", f"M={hnsw['M']} efC={hnsw['efConstruction']} ef={ef}", {"ef": max(ef, K)}, 1,
                    types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(ef=ef)))
            pq = next((c.build for c in configs if c.key == "ivf-pq"), {"nlist": 0})
            for nprobe in [int(p) for p in args.nprobe.split(",") if p and "ivf-pq" in built]:
                nprobe = min(nprobe, pq["nlist"])
                for refine in refines:
                    label = f"nlist={pq['nlist']} m={pq['m']} nprobe={nprobe}" + (f" refine×{refine}" if refine > 1 else " no refine")
                    run("ivf-pq", label, {"nprobe": nprobe}, refine, types_pb2.IndexSpec(ivf_pq=types_pb2.IvfPqParams(nprobe=nprobe)))
            if not args.skip_extras and "hnsw" in built:
                filtered += filtered_costs(runner, dataset, built["hnsw"]["name"], built["hnsw"]["collection"], stubs[1])
                if "hnsw-typed" in built:
                    filtered += filtered_costs(runner, dataset, built["hnsw-typed"]["name"], built["hnsw-typed"]["collection"], stubs[1], "typed")
                if size == sizes[0]:
                    consistency = consistency_costs(runner, collections, built["hnsw"]["name"], queries, collections.stub, args.dim, model)
    finally:
        servers.stop()
    info["loadavg_end"] = os.getloadavg()[0]
    table = markdown(rows, consistency, filtered, info)
    builds_text = "\n".join(
        f"- {b['size']:,} {b['index']}: " + ("reused from an earlier run" if b.get("cached") else f"upsert {b.get('upsert_s')} s, index build {b.get('build_s')} s")
        + (f", {b['segments']} segment(s)" if "segments" in b else "")
        for b in builds
    )
    print("\n" + table + "\n\nbuilds:\n" + builds_text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "rows": [asdict(r) for r in rows], "filtered": filtered,
                                         "consistency": consistency, "builds": builds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
