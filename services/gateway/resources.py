"""Control-plane records (namespaces, collections, buckets, retrievers) as protobuf messages in a
JetStream key-value bucket, keyed by resource name."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from lookalike.errors import AlreadyExists, NotFound
from lookalike.queue import RecordStore

M = TypeVar("M", bound=Message)


class Resources:
    def __init__(self, store: RecordStore) -> None:
        self.store = store

    async def create(self, message: Message) -> None:
        name = getattr(message, "name")
        if not await self.store.create(name, json_format.MessageToDict(message)):
            raise AlreadyExists(f"{name} already exists")

    async def get(self, name: str, cls: type[M]) -> M:
        record = await self.store.get(name)
        if record is None:
            raise NotFound(f"{name} not found")
        return json_format.ParseDict(record.value, cls(), ignore_unknown_fields=True)

    async def exists(self, name: str) -> bool:
        return await self.store.get(name) is not None

    async def list(self, parent: str, kind: str, cls: type[M]) -> list[M]:
        prefix = f"{parent}/{kind}/" if parent else f"{kind}/"
        values = await self.store.list(prefix)
        out = []
        for value in values:
            name = value.get("name", "")
            # direct children only: namespaces/x/collections/y, not deeper records
            if name.count("/") == prefix.count("/"):
                out.append(json_format.ParseDict(value, cls(), ignore_unknown_fields=True))
        return out

    async def delete(self, name: str) -> None:
        if not await self.exists(name):
            raise NotFound(f"{name} not found")
        await self.store.delete(name)
