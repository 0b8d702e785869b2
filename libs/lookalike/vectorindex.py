"""Vector index adapter over Milvus (pymilvus MilvusClient).

One Milvus collection per (lookalike collection, extractor): Milvus 2.3 holds one vector field per
collection, and separate collections let each extractor have its own dimension, metric and index.
The namespace is part of the Milvus collection name and also stored and always filtered on, so no
query can reach another namespace's vectors.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from lookalike.config import Settings
from lookalike.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

MAX_TEXT = 512


@dataclass(frozen=True)
class IndexParams:
    index_type: str  # HNSW, IVF_PQ, FLAT, BIN_FLAT
    metric: str  # COSINE, IP, L2, HAMMING
    build: dict[str, int]
    search: dict[str, int]


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


class MilvusIndex:
    def __init__(self, settings: Settings) -> None:
        self.uri = settings.milvus_uri
        self.token = settings.milvus_token
        # Strong: an image upserted by an ingest worker is visible to the very next search, whichever
        # search replica serves it (Session would only hold within one client).
        self.consistency = "Strong"
        self._client: MilvusClient | None = None
        self._loaded: set[str] = set()

    @property
    def client(self) -> MilvusClient:
        if self._client is None:
            self._client = MilvusClient(uri=self.uri, token=self.token, timeout=30)
        return self._client

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def ping(self) -> None:
        await self._call(self.client.list_collections)

    async def exists(self, name: str) -> bool:
        return bool(await self._call(self.client.has_collection, name))

    async def describe_index(self, name: str) -> dict[str, Any]:
        indexes = await self._call(self.client.list_indexes, name)
        if not indexes:
            return {}
        return await self._call(self.client.describe_index, name, indexes[0])

    async def create(self, name: str, dimension: int, binary: bool, params: IndexParams) -> bool:
        """Creates the collection with its index and loads it; False if it already existed."""
        if await self.exists(name):
            return False
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("namespace", DataType.VARCHAR, max_length=64)
        schema.add_field("object", DataType.VARCHAR, max_length=MAX_TEXT)
        schema.add_field("filename", DataType.VARCHAR, max_length=MAX_TEXT)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("vector", DataType.BINARY_VECTOR if binary else DataType.FLOAT_VECTOR, dim=dimension)
        index_params = MilvusClient.prepare_index_params()
        index_params.add_index("vector", index_type=params.index_type, metric_type=params.metric, params=params.build)
        try:
            await self._call(
                self.client.create_collection,
                name,
                schema=schema,
                index_params=index_params,
                consistency_level=self.consistency,
            )
        except MilvusException as exc:
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

    async def upsert(self, name: str, rows: list[dict[str, Any]]) -> int:
        await self._ensure_loaded(name)
        result = await self._call(self.client.upsert, name, rows)
        return int(result.get("upsert_count", len(rows)) if isinstance(result, dict) else len(rows))

    async def delete(self, name: str, ids: list[str]) -> None:
        await self._ensure_loaded(name)
        await self._call(self.client.delete, name, ids=ids)

    async def get(self, name: str, ids: list[str], with_vector: bool = True) -> list[dict[str, Any]]:
        await self._ensure_loaded(name)
        fields = ["id", "object", "filename", "metadata"] + (["vector"] if with_vector else [])
        return await self._call(self.client.get, name, ids=ids, output_fields=fields)

    async def count(self, name: str, namespace: str) -> int:
        await self._ensure_loaded(name)
        rows = await self._call(
            self.client.query, name, filter=f"namespace == {_quote(namespace)}", output_fields=["count(*)"]
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
    ) -> list[Hit]:
        await self._ensure_loaded(name)
        scope = f"namespace == {_quote(namespace)}"
        flt = f"({scope}) and ({expression})" if expression else scope
        try:
            result = await self._call(
                self.client.search,
                name,
                data=[vector],
                anns_field="vector",
                limit=limit,
                filter=flt,
                output_fields=["object", "filename", "metadata"],
                search_params={"metric_type": params.metric, "params": params.search},
            )
        except MilvusException as exc:
            message = exc.message or str(exc)
            if "collection not loaded" in message.lower():
                self._loaded.discard(name)
                raise FailedPrecondition(f"index {name} is not loaded; retry") from exc
            raise InvalidArgument(f"search rejected by Milvus: {message}") from exc
        hits = result[0] if result else []
        return [Hit(str(h["id"]), float(h["distance"]), dict(h.get("entity", {}))) for h in hits]


def _quote(text: str) -> str:
    import json

    return json.dumps(text)
