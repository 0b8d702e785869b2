"""NATS JetStream adapter: the ingest event stream and its durable work-queue consumer, the
dead-letter stream, the job-outcome stream, and key-value buckets for control-plane records
(namespaces, collections, buckets, retrievers), job records and bucket-sync state.

Streams (all file storage, created or updated idempotently by every process at start-up):

* ``LOOKALIKE_INGEST`` (``settings.ingest_stream``): subjects ``lookalike.ingest.{namespace}.{collection}``,
  work-queue retention (a message is gone once acked), de-duplication by ``Nats-Msg-Id`` over
  ``settings.ingest_dedup_window_s``. One durable pull consumer (``settings.ingest_consumer``) with
  explicit ack, a bounded ``max_ack_pending``, ``ack_wait`` and ``max_deliver``: every worker process
  binds to it and JetStream spreads the messages.
* ``LOOKALIKE_DEADLETTER``: ``lookalike.deadletter.{namespace}.{collection}``, the original event
  with its reason in the ``Lookalike-Reason`` header.
* ``LOOKALIKE_OUTCOMES``: ``lookalike.outcomes.{namespace}.{job}.{indexed|failed}``, one message per
  image and job, published with ``Nats-Msg-Id`` = job + the event's own id, so a redelivered event
  is counted once. A job's counts are the per-subject message counts (one STREAM.INFO request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import nats.errors
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
from nats.js.errors import (
    APIError,
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
    NoStreamResponseError,
    NotFoundError,
    ServerError,
    ServiceUnavailableError,
)

from lookalike.config import Settings

log = logging.getLogger(__name__)

INGEST_SUBJECT = "lookalike.ingest"
DEAD_LETTER_SUBJECT = "lookalike.deadletter"
DEAD_LETTER_STREAM = "LOOKALIKE_DEADLETTER"
OUTCOME_SUBJECT = "lookalike.outcomes"
OUTCOME_STREAM = "LOOKALIKE_OUTCOMES"
# Outcomes are kept this long; a finished job's counts are also snapshotted into its record.
OUTCOME_MAX_AGE_S = 7 * 24 * 3600.0
# Key-value buckets of the ingest path.
SYNC_STATE_BUCKET = "lookalike_sync"
SECRETS_BUCKET = "lookalike_secrets"

MSG_ID = "Nats-Msg-Id"
REASON_HEADER = "Lookalike-Reason"
SUBJECT_HEADER = "Lookalike-Subject"

T = TypeVar("T")


def ingest_subject(namespace: str, collection: str) -> str:
    return f"{INGEST_SUBJECT}.{namespace}.{collection}"


def dead_letter_subject(ingest_subject_: str) -> str:
    """lookalike.ingest.{ns}.{collection} → lookalike.deadletter.{ns}.{collection}"""
    rest = ingest_subject_.removeprefix(f"{INGEST_SUBJECT}.") if ingest_subject_ else ""
    return f"{DEAD_LETTER_SUBJECT}.{rest or 'unknown'}"


def outcome_subject(job: str, kind: str = "*") -> str:
    """namespaces/{ns}/jobs/{id} → lookalike.outcomes.{ns}.{id}.{kind} (kind: indexed, failed, * )."""
    parts = job.split("/")
    if len(parts) != 4 or parts[0] != "namespaces" or parts[2] != "jobs":
        raise ValueError(f"not a job name: {job!r}")
    return f"{OUTCOME_SUBJECT}.{parts[1]}.{parts[3]}.{kind}"


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


# --------------------------------------------------------------------------------------------
# riding out a NATS restart


def is_transient(exc: BaseException) -> bool:
    """Errors a NATS restart or a JetStream leader change produce; the same call succeeds later."""
    if isinstance(exc, (ServiceUnavailableError, ServerError, NoStreamResponseError)):
        return True
    if isinstance(exc, APIError):  # 4xx: a real answer
        return False
    return isinstance(
        exc,
        (
            nats.errors.TimeoutError,
            asyncio.TimeoutError,
            nats.errors.ConnectionClosedError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.StaleConnectionError,
            nats.errors.OutboundBufferLimitError,
            nats.errors.NoRespondersError,
            nats.errors.FlushTimeoutError,
            ConnectionError,
        ),
    )


async def retry_transient(
    call: Callable[[], Awaitable[T]], what: str, budget_s: float = 120.0, on_retry: Callable[[], None] | None = None
) -> T:
    """Runs `call`, retrying NATS errors that a restart produces (with backoff) for up to
    `budget_s` seconds; other errors, and the last transient one, are raised."""
    started = time.monotonic()
    delay = 0.2
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() - started > budget_s:
                raise
            log.warning("nats: %s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0) * random.uniform(0.8, 1.2)


# --------------------------------------------------------------------------------------------
# streams and the consumer


def ingest_stream_configs(settings: Settings) -> list[StreamConfig]:
    outcome_window = max(3600.0, settings.ingest_ack_wait_s * (settings.ingest_max_deliver + 1))
    return [
        StreamConfig(
            name=settings.ingest_stream,
            subjects=[f"{INGEST_SUBJECT}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=settings.ingest_dedup_window_s,
        ),
        StreamConfig(
            name=DEAD_LETTER_STREAM,
            subjects=[f"{DEAD_LETTER_SUBJECT}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            # a redelivered poison message is parked once
            duplicate_window=outcome_window,
        ),
        StreamConfig(
            name=OUTCOME_STREAM,
            subjects=[f"{OUTCOME_SUBJECT}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=OUTCOME_MAX_AGE_S,
            # must outlast the longest time between a worker counting an image and its ack being
            # lost and the event redelivered: ack_wait per delivery
            duplicate_window=outcome_window,
        ),
    ]


async def ensure_ingest_streams(js: JetStreamContext, settings: Settings) -> None:
    """Creates (or updates) the ingest, dead-letter and outcome streams; safe to call from every
    process at start-up, concurrently."""
    for config in ingest_stream_configs(settings):
        await _ensure_stream(js, config)


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)  # idempotent when the config is the same
        return
    except BadRequestError as exc:
        if exc.err_code != 10058:  # stream name already in use with a different configuration
            raise
    try:
        await js.update_stream(config)
    except (BadRequestError, ServerError) as exc:  # a setting that cannot be changed in place
        log.warning("stream %s exists with a configuration that cannot be updated (%s); using it as it is", config.name, exc)


def ingest_consumer_config(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        name=settings.ingest_consumer,
        durable_name=settings.ingest_consumer,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        # longer than a worst-case batch (fetch + encode deadline + upsert); workers also send
        # in-progress acks while a batch is being worked on, so this only bounds crash detection
        ack_wait=settings.ingest_ack_wait_s,
        max_deliver=settings.ingest_max_deliver,
        # bounds what all workers together hold un-acked (and what a crash hands back)
        max_ack_pending=max(64, settings.ingest_batch_size * 16),
        filter_subject=f"{INGEST_SUBJECT}.>",
    )


async def ensure_ingest_consumer(js: JetStreamContext, settings: Settings) -> None:
    """Creates the durable consumer, or updates its editable settings (ack_wait, max_deliver,
    max_ack_pending) to the current configuration."""
    try:
        await js.add_consumer(settings.ingest_stream, ingest_consumer_config(settings))
    except (BadRequestError, ServerError) as exc:
        log.warning("consumer %s exists with settings that cannot be updated (%s); using it as it is", settings.ingest_consumer, exc)


async def pull_ingest(js: JetStreamContext, settings: Settings) -> JetStreamContext.PullSubscription:
    """The shared durable pull consumer: every worker binds to it and JetStream spreads the work."""
    await ensure_ingest_consumer(js, settings)
    return await js.pull_subscribe_bind(durable=settings.ingest_consumer, stream=settings.ingest_stream)


def max_deliveries_subject(settings: Settings) -> str:
    """Where JetStream announces a message that reached max_deliver without an ack."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{settings.ingest_stream}.{settings.ingest_consumer}"


async def subject_counts(js: JetStreamContext, stream: str, subjects_filter: str) -> dict[str, int]:
    """Messages per subject matching the filter (one request)."""
    info = await js.stream_info(stream, subjects_filter=subjects_filter)
    return dict(info.state.subjects or {})


async def read_messages(
    js: JetStreamContext, stream: str, subject: str, limit: int, last_per_subject: bool = False, timeout: float = 2.0
) -> list[Any]:
    """Up to `limit` stored messages on `subject` (wildcards allowed), oldest first, through a
    short-lived ephemeral consumer (nothing acked, nothing removed)."""
    if limit <= 0:
        return []
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else DeliverPolicy.ALL,
        filter_subject=subject,
        inactive_threshold=30.0,
        mem_storage=True,
        num_replicas=1,
    )
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    out: list[Any] = []
    try:
        info = await sub.consumer_info()
        wanted = min(limit, info.num_pending)
        while len(out) < wanted:
            try:
                batch = await sub.fetch(min(wanted - len(out), 1000), timeout=timeout)
            except nats.errors.TimeoutError:
                break
            out.extend(batch)
    finally:
        try:
            await sub.unsubscribe()
            await js.delete_consumer(stream, sub._consumer)
        except Exception:  # it expires by itself (inactive_threshold)
            pass
    return out[:limit]


# --------------------------------------------------------------------------------------------
# key-value records


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
            try:
                self._kv = await self.js.create_key_value(
                    KeyValueConfig(bucket=self.bucket, history=self.history, storage=StorageType.FILE)
                )
            except BadRequestError:  # created concurrently by another process
                self._kv = await self.js.key_value(self.bucket)
        return self

    @property
    def stream(self) -> str:
        return f"KV_{self.bucket}"

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

    async def scan(self, pattern: str) -> dict[str, dict[str, Any]]:
        """Every live record whose key matches a subject pattern (`a.b.*`, `a.>`): key → value, read
        in bulk through one ephemeral consumer (for keys made of dot-separated tokens)."""
        prefix = f"$KV.{self.bucket}."
        out: dict[str, dict[str, Any]] = {}
        for msg in await read_messages(self.js, self.stream, prefix + pattern, 1 << 40, last_per_subject=True):
            operation = (msg.headers or {}).get("KV-Operation")
            if operation in ("DEL", "PURGE") or not msg.data:
                continue
            out[msg.subject[len(prefix):]] = json.loads(msg.data)
        return out
