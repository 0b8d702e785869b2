"""Ingest workers: consume IngestEvents from the shared durable JetStream consumer, encode each
batch in one encoder call, upsert it in one search call per extractor, count it, then ack.

At-least-once delivery, exactly-once effects:

* a message is acked only after its vectors are written and its outcome is counted; the upsert is
  keyed by content id and the outcome by job + event id (JetStream de-duplication), so a redelivered
  event (worker killed, ack lost in a NATS restart) changes nothing a second time;
* while a batch is being worked on, the worker sends in-progress acks every ack_wait/3, so a slow
  batch or a dependency outage is never mistaken for a dead worker; a killed worker's messages come
  back after ack_wait;
* outages (encoder, search or Milvus down or restarting, S3 or NATS unreachable: every image fails
  alike) are retried in place with exponential backoff for as long as they last; nothing is
  dead-lettered because a dependency is down;
* poison is isolated and parked: an image that cannot be fetched or decoded, or that a dependency
  refuses (INVALID_ARGUMENT and the like), goes to the dead-letter stream with its reason and counts
  as failed. A batch that fails otherwise than by an outage is split into single images, so one bad
  image cannot hold up the others; an image that fails alone while the others succeed is handed
  back with a delay (using up one of its deliveries) and parked if it still fails on its last one.
  A message JetStream stops delivering (max_deliver reached: it crashed or stalled every worker
  that took it) is announced by an advisory, and one worker moves it to the dead-letter stream;
* an image whose original is deleted while it is being indexed has its vectors removed again right
  after the upsert (DeleteObjects removes the original first, then the vectors).

Each worker loop keeps two batches in flight, so the encoder works on one while the other is written.
Run extra workers as their own processes with `python -m services.ingest.worker`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import defaultdict
from typing import Any

import grpc
import urllib3
from minio.error import S3Error
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError as NatsNotFound
from prometheus_client import Counter, Gauge, Histogram

from lookalike.clients import ServiceClients
from lookalike.config import Settings
from lookalike.errors import NotFound
from lookalike.objectstore import MinioObjectStore
from lookalike.queue import (
    MSG_ID,
    REASON_HEADER,
    SUBJECT_HEADER,
    RecordStore,
    connect,
    dead_letter_subject,
    ensure_ingest_streams,
    is_transient,
    max_deliveries_subject,
    pull_ingest,
    retry_transient,
)
from lookalike.v1 import encoder_service_pb2, ingest_service_pb2, search_service_pb2
from services.ingest.jobs import FAILED, INDEXED, JobTracker, Outcome

log = logging.getLogger(__name__)

INDEXED_TOTAL = Counter("lookalike_ingest_indexed_total", "Images indexed by ingest workers")
FAILED_TOTAL = Counter("lookalike_ingest_failed_total", "Images sent to the dead-letter stream")
RETRIES = Counter("lookalike_ingest_retries_total", "Batches retried after a transient failure")
REDELIVERED = Counter("lookalike_ingest_redelivered_total", "Messages received more than once")
BATCH = Gauge("lookalike_ingest_last_batch_size", "Size of the last batch pulled")
# consumer lag: what an autoscaler (or an alert) watches
PENDING = Gauge("lookalike_ingest_pending_messages", "Ingest events still waiting in the durable consumer")
LAG_SECONDS = Gauge("lookalike_ingest_lag_seconds", "Age of the newest event pulled when it was pulled")


def _record_lag(messages: list[Any]) -> None:
    try:
        meta = messages[-1].metadata
        PENDING.set(meta.num_pending)
        LAG_SECONDS.set(max(0.0, time.time() - meta.timestamp.timestamp()))  # a datetime (when it was stored)
    except Exception:  # metrics must never break ingest
        pass
STAGE_SECONDS = Histogram(
    "lookalike_ingest_stage_seconds", "Time per batch in each stage of a worker", ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# a dependency that refuses the request itself: retrying the same image cannot help
PERMANENT = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DATA_LOSS,
}
# a dependency that is down, restarting, overloaded or not ready: every image fails alike
OUTAGE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
# (INTERNAL, UNKNOWN and unexpected exceptions are ambiguous: an outage or this image)
PERMANENT_KIND, OUTAGE_KIND, AMBIGUOUS_KIND = "permanent", "outage", "ambiguous"
# an ambiguous failure of a batch is split into single images after this many attempts
SPLIT_AFTER = 3
MAX_BACKOFF_S = 30.0
# batches one worker loop works on at once (each holds up to ingest_batch_size un-acked messages)
PIPELINE_DEPTH = 2
ADVISORY_QUEUE = "lookalike-ingest-max-deliveries"


class Poison(Exception):
    """An image that no retry can index."""


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, Poison):
        return PERMANENT_KIND
    if isinstance(exc, grpc.aio.AioRpcError):
        if exc.code() in PERMANENT:
            return PERMANENT_KIND
        return OUTAGE_KIND if exc.code() in OUTAGE else AMBIGUOUS_KIND
    if is_transient(exc) or isinstance(exc, (OSError, urllib3.exceptions.HTTPError)):
        return OUTAGE_KIND  # NATS restarting, S3 unreachable
    if isinstance(exc, S3Error) and exc.code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
        return OUTAGE_KIND
    return AMBIGUOUS_KIND


def is_permanent(exc: BaseException) -> bool:
    return failure_kind(exc) == PERMANENT_KIND


def describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def event_msg_id(msg: Any, event: ingest_service_pb2.IngestEvent) -> str:
    """The id the event was published with (one outcome per event and job)."""
    headers = getattr(msg, "headers", None) or {}
    return headers.get(MSG_ID) or f"{event.target.collection}:{event.content_id}"


class IngestWorker:
    def __init__(
        self, settings: Settings, name: str = "worker", clients: Any = None, store: Any = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.store = store or MinioObjectStore(settings)
        self.clients = clients or ServiceClients(settings)
        self.keepalive_s = max(0.5, settings.ingest_ack_wait_s / 3)
        self.js: Any = None
        self.jobs: JobTracker | None = None

    async def run(self) -> None:
        nc = await connect(self.settings, f"lookalike-ingest-{self.name}")
        js = nc.jetstream()
        try:
            await retry_transient(lambda: ensure_ingest_streams(js, self.settings), "create streams")
            self.js = js
            self.jobs = JobTracker(js, await RecordStore(js, self.settings.job_bucket).open())
            subscription = await retry_transient(lambda: pull_ingest(js, self.settings), "bind consumer")
            await nc.subscribe(max_deliveries_subject(self.settings), queue=ADVISORY_QUEUE, cb=self._on_max_deliveries)
            log.info("%s consuming %s", self.name, self.settings.ingest_stream)
            await self._consume(subscription)
        finally:
            await self.clients.close()
            await nc.close()

    async def _consume(self, subscription: Any) -> None:
        """Pulls batches and works on up to PIPELINE_DEPTH of them at once, so that one batch's
        encoding overlaps the previous one's writes."""
        slots = asyncio.Semaphore(PIPELINE_DEPTH)
        in_flight: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            slots.release()
            if not task.cancelled() and task.exception() is not None:
                failures.append(task.exception())  # type: ignore[arg-type]

        try:
            while True:
                await slots.acquire()
                if failures:  # a batch failed in a way nothing handles: die, and be redelivered
                    raise failures[0]
                try:
                    messages = await subscription.fetch(self.settings.ingest_batch_size, timeout=1.0)
                except NatsTimeout:
                    slots.release()
                    continue
                except Exception as exc:  # NATS restarting: the client reconnects by itself
                    slots.release()
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():  # the client turns a cancel into an error
                        raise asyncio.CancelledError from exc
                    log.warning("%s: fetch failed: %s", self.name, exc)
                    await asyncio.sleep(1.0)
                    continue
                batch = asyncio.create_task(self.handle(messages))
                in_flight.add(batch)
                batch.add_done_callback(finished)
        finally:
            for batch in list(in_flight):
                batch.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def handle(self, messages: list[Any]) -> None:
        """Indexes one pulled batch, keeping it alive with in-progress acks meanwhile."""
        BATCH.set(len(messages))
        _record_lag(messages)
        redelivered = sum(1 for m in messages if _delivered(m) > 1)
        if redelivered:
            REDELIVERED.inc(redelivered)
            log.info("%s: %d of %d messages are redeliveries", self.name, redelivered, len(messages))
        keepalive = asyncio.create_task(self._keep_alive(messages))
        try:
            await self._process_with_retry(messages)
        except asyncio.CancelledError:
            # shutting down: hand the rest back now rather than after ack_wait
            for msg in messages:
                if not msg._ackd:
                    try:
                        await asyncio.wait_for(msg.nak(), 1.0)
                    except Exception:
                        pass
            raise
        finally:
            keepalive.cancel()

    async def _keep_alive(self, messages: list[Any]) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            for msg in messages:
                if not msg._ackd:
                    try:
                        await msg.in_progress()
                    except Exception:
                        pass

    async def _process_with_retry(self, messages: list[Any]) -> None:
        """Outages (a dependency down or restarting: every image fails alike) are retried in place
        with backoff for as long as they last, the messages kept alive meanwhile. A permanent failure
        (or an ambiguous one, INTERNAL/UNKNOWN, that persists) splits the batch to find the image
        responsible."""
        delay = 0.5
        attempt = 0
        pending = list(messages)
        while True:
            pending = [m for m in pending if not m._ackd]
            if not pending:
                return
            try:
                await self.process(pending)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                kind = failure_kind(exc)
                if len(pending) == 1:
                    msg = pending[0]
                    if kind == PERMANENT_KIND:
                        await self._dead_letter(msg, _parse(msg), describe(exc))
                        return
                    # alone and failing ambiguously again after it was handed back (or its worker
                    # died): hand it back once more, or park it on its last delivery
                    if kind == AMBIGUOUS_KIND and attempt >= SPLIT_AFTER and _delivered(msg) > 1:
                        await self._hand_back(msg, exc)
                        return
                elif kind == PERMANENT_KIND or (kind == AMBIGUOUS_KIND and attempt % SPLIT_AFTER == 0):
                    before = len(pending)
                    pending = await self._split(pending)
                    if len(pending) < before:
                        continue  # some went through: retry the rest at once
                RETRIES.inc()
                log.warning("%s: batch of %d failed (%s); retrying in %.1fs", self.name, len(pending), describe(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S) * random.uniform(0.8, 1.2)

    async def _split(self, messages: list[Any]) -> list[Any]:
        """Tries each image on its own once. Permanent failures are parked. Images that fail
        ambiguously while others succeed are suspects: they go back to the queue with a delay (using
        up a delivery) so they hold up nobody, and are parked if they fail so on their last delivery.
        The rest (outages, or everything failing) is returned, to be retried in place."""
        ambiguous: list[tuple[Any, BaseException]] = []
        remaining: list[Any] = []
        succeeded = 0
        for msg in messages:
            if msg._ackd:
                continue
            try:
                await self.process([msg])
                succeeded += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                kind = failure_kind(exc)
                if kind == PERMANENT_KIND:
                    await self._dead_letter(msg, _parse(msg), describe(exc))
                elif kind == AMBIGUOUS_KIND:
                    ambiguous.append((msg, exc))
                else:
                    remaining.append(msg)
        if not succeeded:
            return remaining + [msg for msg, _ in ambiguous]
        for msg, exc in ambiguous:
            await self._hand_back(msg, exc)
        return remaining

    async def _hand_back(self, msg: Any, exc: BaseException) -> None:
        """A suspect image: back to the queue with a delay (one delivery used), parked on its last."""
        delivered = _delivered(msg)
        if delivered >= self.settings.ingest_max_deliver:
            await self._dead_letter(msg, _parse(msg), f"failed on each of {delivered} deliveries: {describe(exc)}")
            return
        log.warning("%s: %s fails on its own (%s); handing it back for later", self.name, _parse(msg).filename, describe(exc))
        try:
            await msg.nak(delay=min(2.0**delivered, MAX_BACKOFF_S))
        except Exception:
            pass

    async def process(self, messages: list[Any]) -> None:
        """Indexes a batch; raises on failure (what was finished before is acked)."""
        events: list[tuple[Any, ingest_service_pb2.IngestEvent]] = []
        for msg in messages:
            event = ingest_service_pb2.IngestEvent()
            try:
                event.ParseFromString(msg.data)
                if not event.content_id or not event.object_key:
                    raise ValueError("event without content id or object key")
            except Exception as exc:
                await self._dead_letter(msg, event, f"malformed event: {exc}")
                continue
            events.append((msg, event))
        groups: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ingest_service_pb2.IngestEvent]]] = defaultdict(list)
        for msg, event in events:
            groups[(event.target.collection, tuple(event.target.feature_extractors))].append((msg, event))
        for (collection, extractors), items in groups.items():
            await self._index_group(collection, list(extractors), items)

    async def _fetch(self, event: ingest_service_pb2.IngestEvent) -> bytes | Poison:
        try:
            return await self.store.get(event.object_key)
        except NotFound:
            return Poison(f"original {event.object_key} is missing from the object store")

    async def _index_group(self, collection: str, extractors: list[str], items: list[tuple[Any, Any]]) -> None:
        assert self.jobs is not None
        started = time.perf_counter()
        originals = await asyncio.gather(*(self._fetch(event) for _, event in items))
        STAGE_SECONDS.labels("fetch").observe(time.perf_counter() - started)
        poison: list[tuple[Any, Any, str]] = []
        ready: list[tuple[Any, Any, bytes]] = []
        for (msg, event), data in zip(items, originals):
            if isinstance(data, Poison):
                poison.append((msg, event, str(data)))
            else:
                ready.append((msg, event, data))
        if ready:
            started = time.perf_counter()
            response = await self.clients.encoder.EncodeImages(
                encoder_service_pb2.EncodeImagesRequest(extractors=extractors, images=[d for _, _, d in ready])
            )
            STAGE_SECONDS.labels("encode").observe(time.perf_counter() - started)
            encoded = []
            for (msg, event, _), image in zip(ready, response.images):
                if image.error:
                    poison.append((msg, event, f"cannot encode image: {image.error}"))
                else:
                    encoded.append((msg, event, image))
            if encoded:
                started = time.perf_counter()

                async def upsert(extractor: str) -> None:
                    records = [
                        search_service_pb2.VectorRecord(
                            id=event.content_id, vector=image.vectors[extractor], object=event.object_key,
                            filename=event.filename, metadata=event.metadata,
                        )
                        for _, event, image in encoded
                    ]
                    await self.clients.search.UpsertVectors(
                        search_service_pb2.UpsertVectorsRequest(collection=collection, extractor=extractor, records=records)
                    )

                # one call per extractor, side by side (each returns once its write is searchable)
                await asyncio.gather(*(upsert(extractor) for extractor in extractors))
                STAGE_SECONDS.labels("upsert").observe(time.perf_counter() - started)
                # deleted while we worked on it? then no vector may outlive it
                still_there = await asyncio.gather(*(self.store.stat(event.object_key) for _, event, _ in encoded))
                gone = [(msg, event) for (msg, event, _), info in zip(encoded, still_there) if info is None]
                if gone:
                    await self.clients.search.DeleteVectors(
                        search_service_pb2.DeleteVectorsRequest(
                            collection=collection, extractors=extractors, ids=[e.content_id for _, e in gone]
                        )
                    )
                    poison.extend((msg, event, "the object was deleted while it was being indexed") for msg, event in gone)
                indexed = [(msg, event) for (msg, event, _), info in zip(encoded, still_there) if info is not None]
                started = time.perf_counter()
                await self.jobs.record([
                    Outcome(event.job, event_msg_id(msg, event), INDEXED, event.content_id) for msg, event in indexed
                ])
                await asyncio.gather(*(_ack(msg) for msg, _ in indexed))
                STAGE_SECONDS.labels("count_and_ack").observe(time.perf_counter() - started)
                INDEXED_TOTAL.inc(len(indexed))
        for msg, event, reason in poison:
            await self._dead_letter(msg, event, reason)

    async def _park(self, subject: str, data: bytes, event: ingest_service_pb2.IngestEvent, event_id: str, reason: str) -> None:
        """Dead-letter message + failed outcome (both de-duplicated: safe to repeat)."""
        assert self.jobs is not None
        log.warning("dead-lettering %s (%s): %s", event.content_id or "?", event.filename, reason)
        await retry_transient(
            lambda: self.js.publish(
                dead_letter_subject(subject), data,
                headers={REASON_HEADER: reason[:1024], SUBJECT_HEADER: subject, MSG_ID: f"dlq|{event.job}|{event_id}"},
            ),
            "publish dead letter",
        )
        if event.job:
            await self.jobs.record([
                Outcome(event.job, event_id, FAILED, event.content_id, event.filename, reason[:1024])
            ])
        FAILED_TOTAL.inc()

    async def _dead_letter(self, msg: Any, event: ingest_service_pb2.IngestEvent, reason: str) -> None:
        """Parks a message that can never be indexed, with its reason, and stops its redelivery."""
        await self._park(msg.subject or "", msg.data, event, event_msg_id(msg, event), reason)
        try:
            await msg.term()
        except Exception as exc:  # lost: it comes back and is parked again (de-duplicated)
            log.warning("%s: term failed: %s", self.name, exc)

    async def _on_max_deliveries(self, advisory: Any) -> None:
        """JetStream gave up on a message (max_deliver): park it and remove it from the work queue."""
        try:
            info = json.loads(advisory.data)
            seq = int(info["stream_seq"])
            try:
                stored = await self.js.get_msg(self.settings.ingest_stream, seq)
            except NatsNotFound:
                return  # another worker handled it
            event = ingest_service_pb2.IngestEvent()
            try:
                event.ParseFromString(stored.data or b"")
            except Exception:
                pass
            event_id = (stored.headers or {}).get(MSG_ID) or f"{event.target.collection}:{event.content_id}"
            reason = f"not acknowledged after {info.get('deliveries', '?')} deliveries (a worker crashed or stalled on it)"
            await self._park(stored.subject, stored.data or b"", event, event_id, reason)
            await self.js.delete_msg(self.settings.ingest_stream, seq)
        except Exception:
            log.exception("%s: handling a max-deliveries advisory failed", self.name)


async def _ack(msg: Any) -> None:
    """Acks and waits for the server's confirmation; if that does not come (NATS restarting), acks
    once more without waiting. Should both be lost, the message comes back after ack_wait and its
    second pass changes nothing (idempotent upsert, de-duplicated outcome)."""
    try:
        await msg.ack_sync(timeout=2.0)
    except Exception:
        try:
            await msg.ack()
        except Exception:
            msg._ackd = True


def _delivered(msg: Any) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:
        return 1


def _parse(msg: Any) -> ingest_service_pb2.IngestEvent:
    event = ingest_service_pb2.IngestEvent()
    try:
        event.ParseFromString(msg.data)
    except Exception:
        pass
    return event


def main() -> None:
    """A worker-only process: health checking and metrics, no IngestService."""
    from lookalike.config import get_settings
    from lookalike.logs import configure_logging
    from lookalike.server import ServiceSpec, serve

    settings = get_settings()
    configure_logging("ingest-worker", settings.log_level, settings.log_format)
    workers = [IngestWorker(settings, f"worker-{i}") for i in range(max(1, settings.ingest_workers))]
    spec = ServiceSpec(
        name="ingest-worker",
        address=settings.listen_addr or "127.0.0.1:0",
        servicers=[],
        background=[w.run for w in workers],
    )
    asyncio.run(serve(spec, settings))


if __name__ == "__main__":
    main()
