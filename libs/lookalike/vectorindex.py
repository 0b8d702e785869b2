"""Vector index adapter over Milvus (pymilvus MilvusClient).

One Milvus collection per (lookalike collection, extractor): Milvus 2.3 holds one vector field per
collection, and separate collections let each extractor have its own dimension, metric and index.
The namespace is part of the Milvus collection name and is also stored in every row and AND-ed into
every expression this module sends (search, query, get, delete, count), so no query can reach
another namespace's vectors even if two namespaces' rows ever shared a collection.

Consistency: reads use the Session level and writes are *fenced* — an upsert or delete returns only
after a Strong read of the collection, i.e. once the query node serves the write. Every later
search, from any process, then sees the write (Milvus reads at the query node's safe timestamp, which
only moves forward). Strong reads would give the same guarantee but wait for the next time tick on
every search (~200 ms here); the fence pays that once per written batch instead. See the README's
"Search and indexes" section for the measurements.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from lookalike.config import Settings
from lookalike.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from lookalike.metadata import COLUMN_PREFIX, column
from lookalike.metadata import MAX_STRING as MAX_METADATA_STRING
from lookalike.metadata import Type as MetadataType

log = logging.getLogger(__name__)

MAX_TEXT = 512
MAX_NAMESPACE = 64
# Milvus's limit on a search's top k (and so on limit × refine factor).
MAX_TOPK = 16384
# Collection property holding the lookalike spec (identity, index and query-time parameters) as JSON.
SPEC_PROPERTY = "lookalike.spec"
CONSISTENCY_LEVELS = ("Strong", "Session", "Bounded", "Eventually")
OUTPUT_FIELDS = ["object", "filename", "metadata"]
# IVF_PQ collections also keep an 8-bit copy of each vector (SQ8, base64 in a VARCHAR) to re-score
# candidates from: IVF_PQ holds no raw vectors, so fetching the float field makes Milvus read binlogs
# from storage (~15 ms for 100 candidates of 1280-d here), and Milvus 2.3.5 with local storage loses
# that binlog when it compacts such a segment. The copy is in memory: 1.7 KB of base64 per 1280-d
# vector beside PQ's 160 B code, about a third of what HNSW holds (5 KB of floats plus its graph).
REFINE_FIELD = "refine"
# declared metadata fields (lookalike.metadata) as typed columns, with a scalar index each
_COLUMN_TYPES = {
    MetadataType.TYPE_STRING: DataType.VARCHAR,
    MetadataType.TYPE_INT64: DataType.INT64,
    MetadataType.TYPE_DOUBLE: DataType.DOUBLE,
    MetadataType.TYPE_BOOL: DataType.BOOL,
}
_METADATA_TYPES = {data_type: kind for kind, data_type in _COLUMN_TYPES.items()}
_SCALAR_INDEX = {DataType.VARCHAR: "Trie", DataType.INT64: "STL_SORT", DataType.DOUBLE: "STL_SORT"}


@dataclass(frozen=True)
class IndexParams:
    index_type: str  # HNSW, IVF_PQ, FLAT, BIN_FLAT
    metric: str  # COSINE, IP, L2, HAMMING
    build: dict[str, int]
    search: dict[str, int]
    # IVF_PQ: fetch limit × refine candidates by PQ, re-score them exactly from the stored vectors
    # and keep the best `limit`; 1 = off.
    refine: int = 1


@dataclass(frozen=True)
class CollectionInfo:
    """What the service needs to know about one Milvus collection, read back from Milvus."""

    name: str
    dimension: int
    binary: bool
    params: IndexParams
    spec: dict[str, Any] = field(default_factory=dict)
    # whether rows carry an SQ8 copy of their vector (REFINE_FIELD) for re-scoring
    refine_copy: bool = False
    # declared metadata fields, name → lookalike.v1.MetadataField.Type (read from the typed columns)
    fields: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    id: str
    distance: float
    fields: dict[str, Any]


def milvus_collection_name(namespace: str, collection: str, extractor: str) -> str:
    """Readable and collision-free: ids may contain dashes, which Milvus names may not."""
    digest = hashlib.sha1(f"{namespace}/{collection}/{extractor}".encode()).hexdigest()[:10]
    clean = lambda s: re.sub(r"[^0-9A-Za-z]", "_", s)[:60]  # noqa: E731
    return f"lk_{clean(namespace)}_{clean(collection)}_{clean(extractor)}_{digest}"


def quote(text: str) -> str:
    """A Milvus string literal (JSON quoting: quotes, backslashes and control characters escaped)."""
    return json.dumps(text, ensure_ascii=False)


def namespace_scope(namespace: str) -> str:
    if not namespace or len(namespace) > MAX_NAMESPACE:
        raise InvalidArgument("a namespace is required")
    return f"namespace == {quote(namespace)}"


def ids_expression(ids: Sequence[str]) -> str:
    return f"id in [{', '.join(quote(i) for i in ids)}]"


def scoped(namespace: str, expression: str = "") -> str:
    """The namespace condition AND the caller's expression: nothing outside the namespace matches."""
    scope = namespace_scope(namespace)
    return f"({scope}) and ({expression})" if expression else scope


def exact_distances(metric: str, query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Distances exactly as Milvus reports them: COSINE and IP similarity, L2 squared distance."""
    if metric == "L2":
        diff = vectors - query[None, :]
        return np.einsum("ij,ij->i", diff, diff)
    dots = vectors @ query
    if metric == "COSINE":
        norms = np.linalg.norm(vectors, axis=1) * float(np.linalg.norm(query))
        return dots / np.maximum(norms, 1e-30)
    return dots


def sq8_encode(vector: Sequence[float] | np.ndarray) -> str:
    """8-bit scalar quantization of one vector: its min and max (float32) and one byte per value."""
    v = np.asarray(vector, dtype=np.float32)
    lo, hi = float(v.min()), float(v.max())
    step = (hi - lo) / 255 or 1.0
    codes = np.rint((v - lo) / step).astype(np.uint8)
    return base64.b64encode(np.array([lo, hi], dtype=np.float32).tobytes() + codes.tobytes()).decode()


def sq8_decode(text: str) -> np.ndarray:
    raw = base64.b64decode(text)
    lo, hi = np.frombuffer(raw[:8], dtype=np.float32)
    step = (hi - lo) / 255 or 1.0
    return lo + np.frombuffer(raw[8:], dtype=np.uint8).astype(np.float32) * step


def sq8_length(dimension: int) -> int:
    return 4 * ((dimension + 8 + 2) // 3)


def best_first(metric: str) -> int:
    """+1 when a larger distance is better (similarities), -1 when smaller is (L2, Hamming)."""
    return -1 if metric in ("L2", "HAMMING") else 1


class MilvusIndex:
    def __init__(self, settings: Settings, consistency: str = "Session") -> None:
        if consistency not in CONSISTENCY_LEVELS:
            raise ValueError(f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}")
        self.uri = settings.milvus_uri
        self.token = settings.milvus_token
        self.consistency = consistency
        # With Strong reads every search waits for the writes anyway; otherwise writes are fenced.
        self.fence_writes = consistency != "Strong"
        self._client: MilvusClient | None = None
        self._loaded: set[str] = set()

    @property
    def client(self) -> MilvusClient:
        if self._client is None:
            self._client = MilvusClient(uri=self.uri, token=self.token, timeout=30)
        return self._client

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except MilvusException as exc:
            message = exc.message or str(exc)
            lowered = message.lower()
            name = args[0] if args and isinstance(args[0], str) else ""
            if ("not found" in lowered and "collection" in lowered) or "can't find collection" in lowered:
                self._loaded.discard(name)
                raise NotFound(f"index {name} does not exist") from exc
            if "not loaded" in lowered:
                self._loaded.discard(name)
                raise FailedPrecondition(f"index {name} is not loaded; retry") from exc
            if "connect" in lowered or "unavailable" in lowered or "deadline" in lowered:
                raise Unavailable(f"Milvus unavailable: {message}") from exc
            raise InvalidArgument(f"rejected by Milvus: {message}") from exc

    async def ping(self) -> None:
        await self._call(self.client.list_collections)

    async def exists(self, name: str) -> bool:
        return bool(await self._call(self.client.has_collection, name))

    async def list_names(self, prefix: str = "lk_") -> list[str]:
        return [n for n in await self._call(self.client.list_collections) if n.startswith(prefix)]

    async def describe_index(self, name: str) -> dict[str, Any]:
        indexes = await self._call(self.client.list_indexes, name, field_name="vector")
        if not indexes:
            return {}
        return await self._call(self.client.describe_index, name, indexes[0])

    async def info(self, name: str) -> CollectionInfo:
        """Dimension, vector type and index parameters of an existing collection (NotFound if none).

        Query-time parameters (ef, nprobe) come from the spec stored with the collection when it was
        created, so every search replica, restarted or not, uses the same ones."""
        if not await self.exists(name):
            raise NotFound(f"index {name} does not exist")
        described = await self._call(self.client.describe_collection, name)
        vector_field = next(f for f in described["fields"] if f["name"] == "vector")
        refine_copy = any(f["name"] == REFINE_FIELD for f in described["fields"])
        binary = vector_field["type"] == DataType.BINARY_VECTOR
        dimension = int(vector_field.get("params", {}).get("dim", 0))
        properties = described.get("properties") or {}
        try:
            spec = json.loads(properties.get(SPEC_PROPERTY, "{}"))
        except ValueError:
            spec = {}
        index = await self.describe_index(name)
        kind = index.get("index_type", "FLAT")
        metric = index.get("metric_type", "HAMMING" if binary else "COSINE")
        build = {k: int(v) for k, v in index.items() if k in ("M", "efConstruction", "nlist", "m", "nbits")}
        search = {k: int(v) for k, v in (spec.get("search") or {}).items()}
        # the schema itself, not a property, says which fields are declared: Milvus keeps it for sure
        fields = {f["name"][len(COLUMN_PREFIX):]: _METADATA_TYPES[f["type"]]
                  for f in described["fields"] if f["name"].startswith(COLUMN_PREFIX) and f["type"] in _METADATA_TYPES}
        return CollectionInfo(name, dimension, binary, IndexParams(kind, metric, build, search), spec, refine_copy, fields)

    async def create(
        self, name: str, dimension: int, binary: bool, params: IndexParams, spec: dict[str, Any] | None = None,
        fields: dict[str, int] | None = None,
    ) -> bool:
        """Creates the collection with its index and loads it; False if it already existed."""
        if await self.exists(name):
            return False
        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description="lookalike vectors of one collection × extractor"
        )
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("namespace", DataType.VARCHAR, max_length=MAX_NAMESPACE)
        schema.add_field("object", DataType.VARCHAR, max_length=MAX_TEXT)
        schema.add_field("filename", DataType.VARCHAR, max_length=MAX_TEXT)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("vector", DataType.BINARY_VECTOR if binary else DataType.FLOAT_VECTOR, dim=dimension)
        if params.index_type == "IVF_PQ" and not binary:
            schema.add_field(REFINE_FIELD, DataType.VARCHAR, max_length=sq8_length(dimension))
        index_params = MilvusClient.prepare_index_params()
        index_params.add_index("vector", index_type=params.index_type, metric_type=params.metric, params=params.build)
        for field_name, kind in (fields or {}).items():
            data_type = _COLUMN_TYPES[kind]
            extra = {"max_length": MAX_METADATA_STRING} if data_type == DataType.VARCHAR else {}
            schema.add_field(column(field_name), data_type, **extra)
            if data_type != DataType.BOOL:  # Milvus 2.3 indexes VARCHAR (trie) and numbers (sorted), not BOOL
                index_params.add_index(column(field_name), index_type=_SCALAR_INDEX[data_type])
        stored = {**(spec or {}), "search": params.search}
        try:
            await self._call(
                self.client.create_collection,
                name,
                schema=schema,
                index_params=index_params,
                consistency_level=self.consistency,
                properties={SPEC_PROPERTY: json.dumps(stored, sort_keys=True)},
            )
        except InvalidArgument as exc:
            if await self.exists(name):  # a concurrent create won the race
                return False
            raise InvalidArgument(f"index rejected by Milvus: {exc.message}") from exc
        self._loaded.add(name)
        return True

    async def drop(self, name: str) -> None:
        await self._call(self.client.drop_collection, name)
        self._loaded.discard(name)

    async def _ensure_loaded(self, name: str) -> None:
        if name in self._loaded:
            return
        if not await self.exists(name):
            raise NotFound(f"index {name} does not exist")
        await self._call(self.client.load_collection, name)
        self._loaded.add(name)

    async def _fence(self, name: str, namespace: str, some_id: str) -> None:
        """Returns once the write just made to `name` is served by the query node.

        A Strong read waits until the query node's safe timestamp passes "now", which is after the
        write. (A Session read is not enough: pymilvus records no timestamp for deletes.)"""
        if self.fence_writes:
            await self._call(
                self.client.query, name, filter=scoped(namespace, f"id == {quote(some_id)}"),
                output_fields=["id"], limit=1, consistency_level="Strong",
            )

    async def upsert(self, name: str, rows: list[dict[str, Any]], refine_copy: bool = False) -> int:
        """Inserts or replaces rows by id; every row must carry its `namespace` (and, with
        refine_copy, gets the SQ8 copy of its vector). Visible to every search once this returns."""
        if not rows:
            return 0
        if refine_copy:
            for row in rows:
                row[REFINE_FIELD] = sq8_encode(row["vector"])
        await self._ensure_loaded(name)
        result = await self._call(self.client.upsert, name, rows)
        await self._fence(name, rows[0]["namespace"], rows[0]["id"])
        return int(result.get("upsert_count", len(rows)) if isinstance(result, dict) else len(rows))

    async def delete(self, name: str, namespace: str, ids: Sequence[str]) -> None:
        """Deletes these ids of the namespace (never another namespace's rows); visible once this returns."""
        if not ids:
            return
        await self._ensure_loaded(name)
        await self._call(self.client.delete, name, filter=scoped(namespace, ids_expression(ids)))
        await self._fence(name, namespace, ids[0])

    async def get(
        self, name: str, namespace: str, ids: Sequence[str], with_vector: bool = True, with_refine_copy: bool = False
    ) -> list[dict[str, Any]]:
        """Rows of these ids in the namespace, in no particular order (missing ids are left out)."""
        if not ids:
            return []
        await self._ensure_loaded(name)
        fields = ["id", "namespace", *OUTPUT_FIELDS] + (["vector"] if with_vector else [])
        fields += [REFINE_FIELD] if with_refine_copy else []
        rows = await self._call(
            self.client.query, name, filter=scoped(namespace, ids_expression(ids)), output_fields=fields,
            consistency_level=self.consistency,
        )
        return [r for r in rows if r.get("namespace") == namespace]

    async def count(self, name: str, namespace: str) -> int:
        await self._ensure_loaded(name)
        rows = await self._call(
            self.client.query, name, filter=scoped(namespace), output_fields=["count(*)"],
            consistency_level=self.consistency,
        )
        return int(rows[0]["count(*)"]) if rows else 0

    async def search(
        self,
        name: str,
        vector: list[float] | bytes,
        limit: int,
        namespace: str,
        expression: str,
        params: IndexParams,
        refine_copy: bool = False,
    ) -> list[Hit]:
        """Best first. With params.refine > 1 (IVF_PQ), limit × refine candidates come from the index
        and are re-scored from their SQ8 copies (refine_copy) or else their stored float vectors."""
        await self._ensure_loaded(name)
        refine = params.refine > 1 and params.metric in ("COSINE", "IP", "L2") and not isinstance(vector, bytes)
        fetch = min(limit * params.refine, MAX_TOPK) if refine else limit
        search = dict(params.search)
        if params.index_type == "HNSW":
            search["ef"] = max(search.get("ef", 0), fetch)
        result = await self._call(
            self.client.search,
            name,
            data=[vector],
            anns_field="vector",
            limit=fetch,
            filter=scoped(namespace, expression),
            output_fields=["namespace"] if refine else ["namespace", *OUTPUT_FIELDS],
            search_params={"metric_type": params.metric, "params": search},
            consistency_level=self.consistency,
        )
        # The expression already scopes the search; checking each hit's stored namespace as well
        # costs nothing and holds even if an expression were ever built wrongly.
        hits = [h for h in (result[0] if result else []) if h.get("entity", {}).get("namespace") == namespace]
        if not refine:
            return [Hit(str(h["id"]), float(h["distance"]), _fields(h.get("entity", {}))) for h in hits]
        if not hits:
            return []
        try:
            rows = await self.get(name, namespace, [str(h["id"]) for h in hits], with_vector=not refine_copy,
                                  with_refine_copy=refine_copy)
        except (InvalidArgument, Unavailable) as exc:
            # IVF_PQ keeps no raw vectors, so Milvus reads them from the segment's binlogs; if that
            # fails, the index's own ranking is still an answer (at PQ recall) rather than none
            log.warning("refine skipped: fetching candidate vectors failed", extra={"index": name, "error": exc.message})
            best = hits[:limit]
            by_id = {r["id"]: r for r in await self.get(name, namespace, [str(h["id"]) for h in best], with_vector=False)}
            return [Hit(str(h["id"]), float(h["distance"]), _fields(by_id.get(str(h["id"]), {}))) for h in best]
        return refine_rows(params.metric, np.asarray(vector, dtype=np.float32), rows, limit)


def _fields(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: entity[k] for k in OUTPUT_FIELDS if k in entity}


def refine_rows(metric: str, query: np.ndarray, rows: list[dict[str, Any]], limit: int) -> list[Hit]:
    """Re-scoring of candidate rows (each with its stored `vector` or SQ8 copy): the best `limit`, best first."""
    if not rows:
        return []
    vectors = np.asarray([sq8_decode(r[REFINE_FIELD]) if REFINE_FIELD in r else r["vector"] for r in rows], dtype=np.float32)
    distances = exact_distances(metric, query, vectors)
    order = np.argsort(-best_first(metric) * distances, kind="stable")[:limit]
    out = []
    for i in order:
        row = rows[int(i)]
        distance = float(distances[int(i)])
        if not math.isfinite(distance):
            continue
        out.append(Hit(str(row["id"]), distance, _fields(row)))
    return out
