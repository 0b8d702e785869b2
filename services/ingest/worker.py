"""Ingest workers: consume IngestEvents from the shared durable JetStream consumer, encode each
batch in one encoder call, upsert it in one search call per extractor, then ack.

At-least-once: a message is acked only after its vectors are written, and the write is an upsert
keyed by content id, so redelivery never indexes an image twice. Transient failures (a peer
restarting) are retried in place with backoff while the messages are kept alive with in-progress
acks; images that can never be indexed go to the dead-letter stream with their reason and are
terminated, not retried forever.

Run extra workers as their own processes with `python -m services.ingest.worker`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from typing import Any

import grpc
from nats.errors import TimeoutError as NatsTimeout
from prometheus_client import Counter, Gauge

from lookalike.clients import ServiceClients
from lookalike.config import Settings
from lookalike.errors import NotFound
from lookalike.objectstore import MinioObjectStore
from lookalike.queue import DEAD_LETTER_SUBJECT, RecordStore, connect, ensure_ingest_streams, pull_ingest
from lookalike.v1 import encoder_service_pb2, ingest_service_pb2, search_service_pb2
from services.ingest.jobs import JobTracker

log = logging.getLogger(__name__)

INDEXED = Counter("lookalike_ingest_indexed_total", "Images indexed by ingest workers")
FAILED = Counter("lookalike_ingest_failed_total", "Images sent to the dead-letter stream")
RETRIES = Counter("lookalike_ingest_retries_total", "Batches retried after a transient failure")
BATCH = Gauge("lookalike_ingest_last_batch_size", "Size of the last batch pulled")

TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNKNOWN,
}


class Poison(Exception):
    """An image that no retry can index."""


class IngestWorker:
    def __init__(self, settings: Settings, name: str = "worker") -> None:
        self.settings = settings
        self.name = name
        self.store = MinioObjectStore(settings)
        self.clients = ServiceClients(settings)

    async def run(self) -> None:
        nc = await connect(self.settings, f"lookalike-ingest-{self.name}")
        js = nc.jetstream()
        try:
            await ensure_ingest_streams(js, self.settings)
            self.js = js
            self.jobs = JobTracker(await RecordStore(js, self.settings.job_bucket).open())
            subscription = await pull_ingest(js, self.settings)
            log.info("%s consuming %s", self.name, self.settings.ingest_stream)
            while True:
                try:
                    messages = await subscription.fetch(self.settings.ingest_batch_size, timeout=1.0)
                except NatsTimeout:
                    continue
                except Exception as exc:  # NATS restarting: the client reconnects by itself
                    log.warning("%s: fetch failed: %s", self.name, exc)
                    await asyncio.sleep(1.0)
                    continue
                BATCH.set(len(messages))
                await self._process_with_retry(messages)
        finally:
            await self.clients.close()
            await nc.close()

    async def _process_with_retry(self, messages: list[Any]) -> None:
        delay = 0.5
        while True:
            try:
                await self.process(messages)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
                if code is not None and code not in TRANSIENT:
                    raise
                RETRIES.inc()
                log.warning("%s: batch of %d failed (%s); retrying in %.1fs", self.name, len(messages), code or exc, delay)
                await asyncio.sleep(delay)
                for msg in messages:  # keep the messages ours while we wait
                    try:
                        await msg.in_progress()
                    except Exception:
                        pass
                delay = min(delay * 2, 30.0) * random.uniform(0.8, 1.2)

    async def process(self, messages: list[Any]) -> None:
        """Indexes one pulled batch; raises on transient failure (nothing acked then)."""
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
        originals = await asyncio.gather(*(self._fetch(event) for _, event in items))
        poison: list[tuple[Any, Any, str]] = []
        ready: list[tuple[Any, Any, bytes]] = []
        for (msg, event), data in zip(items, originals):
            if isinstance(data, Poison):
                poison.append((msg, event, str(data)))
            else:
                ready.append((msg, event, data))
        if ready:
            response = await self.clients.encoder.EncodeImages(
                encoder_service_pb2.EncodeImagesRequest(extractors=extractors, images=[d for _, _, d in ready])
            )
            encoded = []
            for (msg, event, _), image in zip(ready, response.images):
                if image.error:
                    poison.append((msg, event, f"cannot encode image: {image.error}"))
                else:
                    encoded.append((msg, event, image))
            if encoded:
                for extractor in extractors:
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
                per_job: dict[str, int] = defaultdict(int)
                for _, event, _ in encoded:
                    per_job[event.job] += 1
                for job, count in per_job.items():
                    if job:
                        await self.jobs.finished(job, count, [])
                for msg, _, _ in encoded:
                    await msg.ack_sync()
                INDEXED.inc(len(encoded))
        for msg, event, reason in poison:
            await self._dead_letter(msg, event, reason)

    async def _dead_letter(self, msg: Any, event: ingest_service_pb2.IngestEvent, reason: str) -> None:
        """Parks a message that can never be indexed, with its reason, and stops its redelivery."""
        log.warning("dead-lettering %s: %s", event.content_id or "?", reason)
        await self.js.publish(
            f"{DEAD_LETTER_SUBJECT}.{msg.subject.split('.', 2)[-1] if msg.subject else 'unknown'}",
            msg.data,
            headers={"Lookalike-Reason": reason[:1024], "Lookalike-Subject": msg.subject or ""},
        )
        if event.job:
            await self.jobs.finished(
                event.job, 0, [{"content_id": event.content_id, "filename": event.filename, "reason": reason}]
            )
        FAILED.inc()
        await msg.term()


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
