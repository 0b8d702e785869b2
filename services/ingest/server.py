"""Ingest service: IngestService (protos/lookalike/v1/ingest_service.proto).

Stores each original in the object store under a content-addressed key and publishes an IngestEvent
on JetStream; the workers (services/ingest/worker.py) index it. Bad images are rejected one by one
and never stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from typing import Any, AsyncIterator

from google.protobuf import json_format

from lookalike import names
from lookalike.config import Settings
from lookalike.errors import InvalidArgument, NotFound
from lookalike.imaging import ImageError, probe_image
from lookalike.objectstore import MinioObjectStore
from lookalike.queue import RecordStore, connect, ensure_ingest_streams, ingest_subject
from lookalike.server import ServiceSpec, rpc
from lookalike.v1 import ingest_service_pb2 as pb
from lookalike.v1 import ingest_service_pb2_grpc as grpc_pb
from lookalike.v1 import types_pb2
from services.ingest.jobs import JobTracker
from services.ingest.worker import IngestWorker

log = logging.getLogger(__name__)

MAX_METADATA_BYTES = 16 * 1024


def event_id(collection: str, content_id: str, metadata: Any) -> str:
    """Nats-Msg-Id: the same image with the same metadata for the same collection is stored once in
    the dedup window; changed metadata is a new event (its upsert replaces the old record)."""
    meta_digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:16]
    return f"{collection}:{content_id}:{meta_digest}"


class IngestServicer(grpc_pb.IngestServiceServicer):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = MinioObjectStore(settings)
        self.nc: Any = None
        self.js: Any = None
        self.jobs: JobTracker | None = None

    async def start(self) -> None:
        await self.store.ensure_bucket()
        self.nc = await connect(self.settings, "lookalike-ingest")
        self.js = self.nc.jetstream()
        await ensure_ingest_streams(self.js, self.settings)
        self.jobs = JobTracker(await RecordStore(self.js, self.settings.job_bucket).open())

    async def stop(self) -> None:
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

    async def _store_one(
        self, request: pb.IngestObjectsRequest, target: types_pb2.IngestTarget, bucket: names.Name,
        collection: names.Name, job: str, auto_process: bool,
    ) -> tuple[types_pb2.UploadResult, bool]:
        """Stores and enqueues one image; returns its result and whether a new event was queued."""
        result = types_pb2.UploadResult(filename=request.filename)
        data = request.content
        try:
            if not data:
                raise InvalidArgument("empty file")
            info = await asyncio.to_thread(
                probe_image, data, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels
            )
            metadata = json_format.MessageToDict(request.metadata)
            if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
                raise InvalidArgument(f"metadata larger than {MAX_METADATA_BYTES} bytes")
        except (ImageError, InvalidArgument) as exc:
            result.error = str(exc)
            return result, False
        content_id = hashlib.sha256(data).hexdigest()
        key = names.object_name(bucket, content_id)
        existing = await self.store.stat(key)
        if existing is None or existing.size != len(data):
            await self.store.put(key, data, info.mime_type, {"filename": request.filename[:256].encode("ascii", "replace").decode()})
        result.object = key
        result.content_id = content_id
        if not auto_process:
            return result, False
        event = pb.IngestEvent(
            content_id=content_id, object_key=key, target=target, filename=request.filename,
            metadata=request.metadata, job=job,
        )
        event.enqueue_time.GetCurrentTime()
        ack = await self.js.publish(
            ingest_subject(collection.namespace, collection.id),
            event.SerializeToString(),
            stream=self.settings.ingest_stream,
            headers={"Nats-Msg-Id": event_id(target.collection, content_id, metadata)},
        )
        return result, not ack.duplicate

    @rpc
    async def IngestObjects(self, request_iterator: AsyncIterator[pb.IngestObjectsRequest], context: Any) -> pb.IngestObjectsResponse:
        assert self.jobs is not None
        target: types_pb2.IngestTarget | None = None
        bucket = collection = None
        job = ""
        auto_process = False
        results: list[types_pb2.UploadResult] = []
        queued = 0
        async for request in request_iterator:
            if target is None:
                if not request.HasField("target"):
                    raise InvalidArgument("the first message must carry the target")
                target = request.target
                bucket, collection = self._validate_target(target)
                auto_process = request.auto_process
                job = f"{bucket.parent}/jobs/{uuid.uuid4().hex[:20]}"
                await self.jobs.start(job)
            result, enqueued = await self._store_one(request, target, bucket, collection, job, auto_process)
            results.append(result)
            queued += enqueued
            # publish progress in slices so a watcher sees the count grow during long uploads
            if queued and queued % 64 == 0:
                await self.jobs.enqueued(job, 64, done=False)
        if target is None:
            raise InvalidArgument("empty upload: no images in the stream")
        await self.jobs.enqueued(job, queued % 64, done=True)
        log.info("ingested", extra={"job": job, "images": len(results), "queued": queued})
        return pb.IngestObjectsResponse(job=job, results=results)

    @rpc
    async def GetIngestJob(self, request: pb.GetIngestJobRequest, context: Any) -> pb.GetIngestJobResponse:
        assert self.jobs is not None
        names.parse(request.name, "jobs")
        job = await self.jobs.get(request.name)
        if job is None:
            raise NotFound(f"job {request.name} not found")
        return pb.GetIngestJobResponse(job=job)


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
