"""NATS JetStream adapter: the ingest event stream, its durable work-queue consumer, and key-value
buckets for control-plane records (namespaces, collections, buckets, retrievers) and job progress."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError, NotFoundError

from lookalike.config import Settings

log = logging.getLogger(__name__)

INGEST_SUBJECT = "lookalike.ingest"
DEAD_LETTER_SUBJECT = "lookalike.deadletter"
DEAD_LETTER_STREAM = "LOOKALIKE_DEADLETTER"


def ingest_subject(namespace: str, collection: str) -> str:
    return f"{INGEST_SUBJECT}.{namespace}.{collection}"


async def connect(settings: Settings, name: str) -> NATS:
    async def on_error(exc: Exception) -> None:
        log.warning("nats: %s", exc)

    async def on_disconnect() -> None:
        log.warning("nats: disconnected, reconnecting")

    async def on_reconnect() -> None:
        log.info("nats: reconnected")

    return await nats.connect(
        settings.nats_url,
        name=name,
        max_reconnect_attempts=-1,  # ride out a NATS restart instead of dying
        reconnect_time_wait=0.5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )


async def ensure_ingest_streams(js: JetStreamContext, settings: Settings) -> None:
    """Creates (or updates) the ingest stream and the dead-letter stream; safe to call from every
    process at start-up."""
    await _ensure_stream(
        js,
        StreamConfig(
            name=settings.ingest_stream,
            subjects=[f"{INGEST_SUBJECT}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=settings.ingest_dedup_window_s,
        ),
    )
    await _ensure_stream(
        js,
        StreamConfig(
            name=DEAD_LETTER_STREAM,
            subjects=[f"{DEAD_LETTER_SUBJECT}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
        ),
    )


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.stream_info(config.name)
        await js.update_stream(config)
    except NotFoundError:
        await js.add_stream(config)


def ingest_consumer_config(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=settings.ingest_consumer,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ingest_ack_wait_s,
        max_deliver=settings.ingest_max_deliver,
        max_ack_pending=max(64, settings.ingest_batch_size * 16),
        filter_subject=f"{INGEST_SUBJECT}.>",
    )


async def pull_ingest(js: JetStreamContext, settings: Settings) -> JetStreamContext.PullSubscription:
    """The shared durable pull consumer: every worker binds to it and JetStream spreads the work."""
    return await js.pull_subscribe(
        f"{INGEST_SUBJECT}.>",
        durable=settings.ingest_consumer,
        stream=settings.ingest_stream,
        config=ingest_consumer_config(settings),
    )


@dataclass
class Record:
    value: dict[str, Any]
    revision: int


class RecordStore:
    """JSON records in a JetStream key-value bucket, with optimistic concurrency by revision."""

    def __init__(self, js: JetStreamContext, bucket: str, history: int = 1) -> None:
        self.js = js
        self.bucket = bucket
        self.history = history
        self._kv: Any = None

    async def open(self) -> RecordStore:
        try:
            self._kv = await self.js.key_value(self.bucket)
        except (NotFoundError, BadRequestError):
            self._kv = await self.js.create_key_value(
                KeyValueConfig(bucket=self.bucket, history=self.history, storage=StorageType.FILE)
            )
        return self

    @staticmethod
    def key(name: str) -> str:
        # resource names use "/", which NATS KV keys allow; keep them readable
        return name

    async def get(self, name: str) -> Record | None:
        try:
            entry = await self._kv.get(self.key(name))
        except KeyNotFoundError:
            return None
        if entry is None or entry.value is None or entry.operation in ("DEL", "PURGE"):
            return None
        return Record(json.loads(entry.value), entry.revision)

    async def create(self, name: str, value: dict[str, Any]) -> bool:
        """False when the key already exists."""
        try:
            await self._kv.create(self.key(name), json.dumps(value).encode())
            return True
        except KeyWrongLastSequenceError:
            return False

    async def put(self, name: str, value: dict[str, Any]) -> int:
        return await self._kv.put(self.key(name), json.dumps(value).encode())

    async def update(self, name: str, value: dict[str, Any], revision: int) -> bool:
        """Compare-and-set; False when someone else wrote since `revision`."""
        try:
            await self._kv.update(self.key(name), json.dumps(value).encode(), last=revision)
            return True
        except KeyWrongLastSequenceError:
            return False

    async def delete(self, name: str) -> None:
        await self._kv.purge(self.key(name))

    async def list(self, prefix: str) -> list[dict[str, Any]]:
        try:
            keys = await self._kv.keys()
        except (NotFoundError, NoKeysError):  # an empty bucket raises instead of returning []
            return []
        out = []
        for key in sorted(keys):
            if key.startswith(prefix):
                record = await self.get(key)
                if record is not None:
                    out.append(record.value)
        return out
