"""Ingest service: IngestService (protos/lookalike/v1/ingest_service.proto).

Stores each original in the object store under a content-addressed key and publishes an IngestEvent
on JetStream; the workers (services/ingest/worker.py) index it. Bad images are rejected one by one
and never stored. SyncSource does the same for the new or changed objects of an external S3 bucket
(remembering each key's ETag) and removes what disappeared from it; DeleteObjects removes originals
and their vectors.

A NATS restart in the middle of a call is ridden out: publishes and job updates are retried (same
Nats-Msg-Id, so a publish whose reply was lost is not stored twice) for up to two minutes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import posixpath
import time
import uuid
from typing import Any, AsyncIterator

from google.protobuf import json_format, struct_pb2
from minio.error import S3Error
from nats.js.errors import NotFoundError as NatsNotFound

from lookalike import names
from lookalike.clients import ServiceClients
from lookalike.config import Settings
from lookalike.errors import FailedPrecondition, InvalidArgument, NotFound
from lookalike.imaging import ImageError, probe_image
from lookalike.objectstore import MinioObjectStore, SourceBucket, SourceObject
from lookalike.queue import (
    MSG_ID,
    SYNC_STATE_BUCKET,
    RecordStore,
    connect,
    ensure_ingest_streams,
    ingest_subject,
    retry_transient,
)
from lookalike.server import ServiceSpec, rpc
from lookalike.v1 import ingest_service_pb2 as pb
from lookalike.v1 import ingest_service_pb2_grpc as grpc_pb
from lookalike.v1 import search_service_pb2, types_pb2
from services.ingest.jobs import JobTracker
from services.ingest.worker import IngestWorker

log = logging.getLogger(__name__)

MAX_METADATA_BYTES = 16 * 1024
# job progress is written after this many queued images or this many seconds, whichever first
PROGRESS_EVERY = 64
PROGRESS_SECONDS = 1.0
# source objects fetched, checked and stored at once during a sync
SYNC_CONCURRENCY = 8
DELETE_CHUNK = 1000
# source keys with one of these suffixes are images to sync; keys without a suffix are tried too;
# anything else (sidecars, notes, ...) is skipped without being fetched
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def looks_like_image(key: str) -> bool:
    suffix = posixpath.splitext(posixpath.basename(key))[1].lower()
    return not suffix or suffix in IMAGE_SUFFIXES


def event_id(collection: str, content_id: str, metadata: Any) -> str:
    """Nats-Msg-Id: the same image with the same metadata for the same collection is stored once in
    the dedup window; changed metadata is a new event (its upsert replaces the old record)."""
    meta_digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:16]
    return f"{collection}:{content_id}:{meta_digest}"


def new_job(bucket: names.Name) -> str:
    return f"{bucket.parent}/jobs/{uuid.uuid4().hex[:20]}"


def sync_state_key(bucket: names.Name, source_key: str) -> str:
    """The sync-state record of one source key (KV keys are dot-separated tokens; S3 keys are not)."""
    return f"{bucket.namespace}.{bucket.id}.{hashlib.sha256(source_key.encode()).hexdigest()[:40]}"


class Progress:
    """Queued count of one running job, written to its record now and then (absolute values)."""

    def __init__(self, jobs: JobTracker, job: str) -> None:
        self.jobs = jobs
        self.job = job
        self.queued = 0
        self.rejected: list[dict[str, str]] = []
        self._written = (0, 0)
        self._last = time.monotonic()
        self._lock = asyncio.Lock()  # sync adds from several tasks; writes must not overtake

    async def add(self, queued: bool) -> None:
        self.queued += queued
        if self.queued - self._written[0] >= PROGRESS_EVERY or time.monotonic() - self._last >= PROGRESS_SECONDS:
            await self.flush(done=False)

    async def flush(self, done: bool, **extra: Any) -> None:
        async with self._lock:
            current = (self.queued, len(self.rejected))
            if not done and not extra and current == self._written:
                return
            await self.jobs.enqueued(self.job, current[0], done=done, rejected=list(self.rejected), **extra)
            self._written = current
            self._last = time.monotonic()


class IngestServicer(grpc_pb.IngestServiceServicer):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = MinioObjectStore(settings)
        self.clients = ServiceClients(settings)
        self.nc: Any = None
        self.js: Any = None
        self.jobs: JobTracker | None = None
        self.sync_state: RecordStore | None = None

    async def start(self) -> None:
        await self.store.ensure_bucket()
        self.nc = await connect(self.settings, "lookalike-ingest")
        self.js = self.nc.jetstream()
        await ensure_ingest_streams(self.js, self.settings)
        self.jobs = JobTracker(self.js, await RecordStore(self.js, self.settings.job_bucket).open())
        self.sync_state = await RecordStore(self.js, SYNC_STATE_BUCKET).open()

    async def stop(self) -> None:
        await self.clients.close()
        if self.nc is not None:
            await self.nc.drain()

    def _validate_target(self, target: types_pb2.IngestTarget) -> tuple[names.Name, names.Name]:
        bucket = names.parse(target.bucket, "buckets")
        collection = names.parse(target.collection, "collections")
        if bucket.namespace != collection.namespace:
            raise InvalidArgument("bucket and collection must be in the same namespace")
        if not target.feature_extractors:
            raise InvalidArgument("target has no feature extractors")
        return bucket, collection

    # ---- storing and enqueueing one image

    async def _enqueue(self, collection: names.Name, event: pb.IngestEvent, msg_id: str) -> bool:
        """Publishes the event; True when this call queued it, False when JetStream already holds the
        same event (same image, metadata and collection) from an earlier upload."""
        retried = False

        def on_retry() -> None:
            nonlocal retried
            retried = True

        data = event.SerializeToString()
        ack = await retry_transient(
            lambda: self.js.publish(
                ingest_subject(collection.namespace, collection.id), data,
                stream=self.settings.ingest_stream, headers={MSG_ID: msg_id},
            ),
            "publish ingest event",
            on_retry=on_retry,
        )
        if not ack.duplicate:
            return True
        if not retried:
            return False
        # An earlier attempt of ours may have been stored before its reply was lost (NATS restarted):
        # the duplicate's sequence is the stored message; it is ours if it names our job.
        try:
            stored = await retry_transient(lambda: self.js.get_msg(self.settings.ingest_stream, ack.seq), "read event")
        except NatsNotFound:
            return True  # already consumed: stored moments ago, i.e. by our own first attempt
        return pb.IngestEvent.FromString(stored.data or b"").job == event.job

    async def _store_and_enqueue(
        self, data: bytes, filename: str, metadata: struct_pb2.Struct, target: types_pb2.IngestTarget,
        bucket: names.Name, collection: names.Name, job: str, auto_process: bool,
    ) -> tuple[types_pb2.UploadResult, bool]:
        """Validates, stores and (with auto_process) enqueues one image; returns its result and whether
        a new event was queued."""
        result = types_pb2.UploadResult(filename=filename)
        try:
            if not data:
                raise InvalidArgument("empty file")
            info = await asyncio.to_thread(
                probe_image, data, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels
            )
            meta = json_format.MessageToDict(metadata)
            if len(json.dumps(meta)) > MAX_METADATA_BYTES:
                raise InvalidArgument(f"metadata larger than {MAX_METADATA_BYTES} bytes")
        except (ImageError, InvalidArgument) as exc:
            result.error = str(exc)
            return result, False
        content_id = hashlib.sha256(data).hexdigest()
        key = names.object_name(bucket, content_id)
        existing = await self.store.stat(key)
        if existing is None or existing.size != len(data):
            await self.store.put(key, data, info.mime_type, {"filename": filename[:256].encode("ascii", "replace").decode()})
        result.object = key
        result.content_id = content_id
        if not auto_process:
            return result, False
        event = pb.IngestEvent(
            content_id=content_id, object_key=key, target=target, filename=filename, metadata=metadata, job=job,
        )
        event.enqueue_time.GetCurrentTime()
        queued = await self._enqueue(collection, event, event_id(target.collection, content_id, meta))
        return result, queued

    # ---- uploads

    @rpc
    async def IngestObjects(self, request_iterator: AsyncIterator[pb.IngestObjectsRequest], context: Any) -> pb.IngestObjectsResponse:
        assert self.jobs is not None
        target: types_pb2.IngestTarget | None = None
        bucket = collection = None
        job = ""
        auto_process = False
        results: list[types_pb2.UploadResult] = []
        progress: Progress | None = None
        async for request in request_iterator:
            if target is None:
                if not request.HasField("target"):
                    raise InvalidArgument("the first message must carry the target")
                target = request.target
                bucket, collection = self._validate_target(target)
                auto_process = request.auto_process
                job = new_job(bucket)
                await self.jobs.start(job, kind="upload", bucket=target.bucket)
                progress = Progress(self.jobs, job)
            result, queued = await self._store_and_enqueue(
                request.content, request.filename, request.metadata, target, bucket, collection, job, auto_process
            )
            results.append(result)
            await progress.add(queued)  # type: ignore[union-attr]
        if target is None or progress is None:
            raise InvalidArgument("empty upload: no images in the stream")
        await progress.flush(done=True)
        log.info("ingested", extra={"job": job, "images": len(results), "queued": progress.queued})
        return pb.IngestObjectsResponse(job=job, results=results)

    @rpc
    async def GetIngestJob(self, request: pb.GetIngestJobRequest, context: Any) -> pb.GetIngestJobResponse:
        assert self.jobs is not None
        names.parse(request.name, "jobs")
        job = await self.jobs.get(request.name)
        if job is None:
            raise NotFound(f"job {request.name} not found")
        return pb.GetIngestJobResponse(job=job)

    # ---- bucket sync

    @rpc
    async def SyncSource(self, request: pb.SyncSourceRequest, context: Any) -> pb.SyncSourceResponse:
        """Lists the source; fetches, stores and enqueues every object whose ETag is new; removes the
        originals and vectors of keys that disappeared (or changed) since the last sync. The state is
        one record per source key, written after its event is queued, so an interrupted sync resumes
        where it stopped when re-run."""
        assert self.jobs is not None and self.sync_state is not None
        target = request.target
        bucket, collection = self._validate_target(target)
        src = request.source
        if not src.endpoint:
            raise InvalidArgument("the source has no endpoint")
        source = SourceBucket(
            src.endpoint, src.bucket, access_key=src.access_key, secret_key=src.secret_key, secure=src.secure,
            region=src.region, prefix=src.prefix,
        )
        state = await retry_transient(lambda: self.sync_state.scan(f"{bucket.namespace}.{bucket.id}.*"), "read sync state")  # type: ignore[union-attr]
        job = new_job(bucket)
        await self.jobs.start(job, kind="sync", bucket=target.bucket, source=source.url())
        progress = Progress(self.jobs, job)
        seen: set[str] = set()
        # content each seen key holds after this sync (unchanged keys keep theirs)
        holds: dict[str, str] = {}
        replaced: set[str] = set()
        listed = 0
        started = time.monotonic()
        semaphore = asyncio.Semaphore(SYNC_CONCURRENCY)

        async def sync_one(obj: SourceObject, state_key: str) -> None:
            async with semaphore:
                outcome = await self._sync_object(source, obj, target, bucket, collection, job, request.auto_process, progress)
            previous = state.get(state_key, {}).get("content_id", "")
            if outcome is None:  # transient failure: not remembered, the next sync tries again
                if previous:
                    holds[state_key] = previous  # and what the key held so far stays
                return
            content_id, remembered = outcome
            if previous and previous != content_id:
                replaced.add(previous)
            if content_id:
                holds[state_key] = content_id
            await retry_transient(lambda: self.sync_state.put(state_key, remembered), "write sync state")  # type: ignore[union-attr]

        while True:
            try:
                chunk = await source.next_chunk()
            except (S3Error, OSError, ValueError) as exc:
                raise FailedPrecondition(f"cannot list {source.url()} at {source.endpoint}: {_describe_s3(exc)}") from exc
            if not chunk:
                break
            tasks = []
            for obj in chunk:
                listed += 1
                if not looks_like_image(obj.key):
                    continue
                state_key = sync_state_key(bucket, obj.key)
                seen.add(state_key)
                known = state.get(state_key)
                if known and known.get("etag") == obj.etag and known.get("key") == obj.key:
                    if known.get("content_id"):
                        holds[state_key] = known["content_id"]
                    continue
                tasks.append(sync_one(obj, state_key))
            await asyncio.gather(*tasks)
            await progress.flush(done=False, listed=listed)

        # keys gone from the source, and contents replaced under a key: remove what no key still holds
        gone = set(state) - seen
        stale = ({state[k].get("content_id", "") for k in gone} | replaced) - set(holds.values()) - {""}
        removed = await self._delete_contents(bucket, target, sorted(stale)) if stale else 0
        for state_key in gone:
            await retry_transient(lambda: self.sync_state.delete(state_key), "delete sync state")  # type: ignore[union-attr]
        await progress.flush(done=True, listed=listed, removed=removed)
        log.info(
            "synced",
            extra={"job": job, "source": source.url(), "listed": listed, "queued": progress.queued,
                   "rejected": len(progress.rejected), "removed": removed, "seconds": round(time.monotonic() - started, 1)},
        )
        return pb.SyncSourceResponse(job=job, listed_count=listed, enqueued_count=progress.queued)

    async def _sync_object(
        self, source: SourceBucket, obj: SourceObject, target: types_pb2.IngestTarget, bucket: names.Name,
        collection: names.Name, job: str, auto_process: bool, progress: Progress,
    ) -> tuple[str, dict[str, str]] | None:
        """Fetches, checks, stores and enqueues one source object. Returns (content id or "" when the
        object is not an indexable image, the state to remember), or None after a transient failure."""
        remembered = {"key": obj.key, "etag": obj.etag}

        def reject(reason: str) -> None:
            progress.rejected.append({"content_id": "", "filename": obj.key, "reason": reason})

        if obj.size > self.settings.max_image_bytes:
            reject(f"larger than {self.settings.max_image_bytes} bytes")
            return "", {**remembered, "rejected": "too large"}
        try:
            data = await source.get(obj.key)
        except (S3Error, OSError) as exc:
            reject(f"cannot fetch from the source: {_describe_s3(exc)}")
            return None
        relative = obj.key[len(source.prefix):].lstrip("/") if obj.key.startswith(source.prefix) else obj.key
        folder = posixpath.dirname(relative)
        metadata = struct_pb2.Struct()
        if folder:
            metadata.update({"folder": folder})
        result, queued = await self._store_and_enqueue(data, obj.key, metadata, target, bucket, collection, job, auto_process)
        if result.error:
            reject(result.error)
            return "", {**remembered, "rejected": result.error[:200]}
        await progress.add(queued)
        return result.content_id, {**remembered, "content_id": result.content_id}

    # ---- deletion

    async def _delete_contents(self, bucket: names.Name, target: types_pb2.IngestTarget, content_ids: list[str]) -> int:
        """Removes originals, then their vectors (in that order: a worker indexing one of them checks
        after its upsert that the original still exists, so no vector outlives its original).
        Returns how many originals existed."""
        keys = [names.object_name(bucket, cid) for cid in content_ids]
        infos = await asyncio.gather(*(self.store.stat(k) for k in keys))
        for key, info in zip(keys, infos):
            if info is not None:
                await self.store.delete(key)
        for start in range(0, len(content_ids), DELETE_CHUNK):
            await self.clients.search.DeleteVectors(
                search_service_pb2.DeleteVectorsRequest(
                    collection=target.collection, extractors=list(target.feature_extractors),
                    ids=content_ids[start : start + DELETE_CHUNK],
                )
            )
        return sum(info is not None for info in infos)

    @rpc
    async def DeleteObjects(self, request: pb.DeleteObjectsRequest, context: Any) -> pb.DeleteObjectsResponse:
        bucket, _ = self._validate_target(request.target)
        content_ids = []
        for name in request.objects:
            owner, content_id = names.parse_object(name)
            if owner != bucket:
                raise InvalidArgument(f"{name} is not in {bucket}")
            content_ids.append(content_id)
        deleted = await self._delete_contents(bucket, request.target, sorted(set(content_ids)))
        log.info("deleted objects", extra={"bucket": str(bucket), "requested": len(content_ids), "deleted": deleted})
        return pb.DeleteObjectsResponse(deleted_count=deleted)


def _describe_s3(exc: BaseException) -> str:
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def build(settings: Settings) -> ServiceSpec:
    servicer = IngestServicer(settings)
    workers = [IngestWorker(settings, f"worker-{i}") for i in range(settings.ingest_workers)]
    return ServiceSpec(
        name="ingest",
        address=settings.ingest_addr,
        servicers=[(grpc_pb.add_IngestServiceServicer_to_server, servicer, pb.DESCRIPTOR.services_by_name["IngestService"].full_name)],
        on_start=[servicer.start],
        on_stop=[servicer.stop],
        background=[w.run for w in workers],
    )
