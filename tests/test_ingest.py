"""The ingest queue and the worker's failure handling, on a real NATS server (its own, per module)
with in-process fakes for the encoder, the search service and the object store, so that every
failure can be produced on demand: a crash between counting and acking, an outage, a poison image
the search service refuses, an image that fails only on its own, a message no worker ever acks, an
original deleted while it is being indexed."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import Any

import grpc
import nats
import pytest

from lookalike.config import Settings
from lookalike.devservers import ServerProcess, start_nats
from lookalike.objectstore import ObjectInfo
from lookalike.queue import (
    DEAD_LETTER_STREAM,
    MSG_ID,
    OUTCOME_STREAM,
    REASON_HEADER,
    RecordStore,
    ensure_ingest_consumer,
    ensure_ingest_streams,
    ingest_subject,
    outcome_subject,
    read_messages,
    subject_counts,
)
from lookalike.v1 import encoder_service_pb2, ingest_service_pb2, types_pb2
from services.ingest.jobs import FAILED, INDEXED, JobTracker, Outcome
from services.ingest.server import event_id
from services.ingest.worker import IngestWorker

pytestmark = [pytest.mark.integration]

COLLECTION = "namespaces/ns/collections/c"
BUCKET = "namespaces/ns/buckets/b"


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_nats(tmp_path_factory.mktemp("nats"))
    yield server
    server.stop()


@pytest.fixture()
def settings(nats_server: ServerProcess, request: pytest.FixtureRequest) -> Settings:
    """Settings of one test: a clean server (the module's own), its own stream, consumer and jobs."""
    tag = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]

    async def clean() -> None:
        nc = await nats.connect(f"nats://127.0.0.1:{nats_server.port}")
        js = nc.jetstream()
        for info in await js.streams_info():
            await js.delete_stream(info.config.name)
        await nc.close()

    asyncio.run(clean())
    return Settings(
        nats_url=f"nats://127.0.0.1:{nats_server.port}", ingest_stream=f"INGEST_{tag}", ingest_consumer=f"workers-{tag}",
        job_bucket=f"jobs_{tag}", ingest_ack_wait_s=1.5, ingest_max_deliver=3, ingest_batch_size=8,
    )


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


class FakeStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.vanish_after_get: set[str] = set()

    async def get(self, key: str) -> bytes:
        from lookalike.errors import NotFound

        if key not in self.objects:
            raise NotFound(key)
        data = self.objects[key]
        if key in self.vanish_after_get:  # deleted while the worker works on it
            del self.objects[key]
        return data

    async def stat(self, key: str) -> ObjectInfo | None:
        return ObjectInfo(key, len(self.objects[key]), "", "image/jpeg") if key in self.objects else None


class FakeEncoder:
    def __init__(self) -> None:
        self.calls = 0
        self.outage_calls = 0  # fail this many calls with UNAVAILABLE
        self.bad: set[bytes] = set()  # per-image errors (undecodable)

    async def EncodeImages(self, request: Any, **_: Any) -> Any:  # noqa: N802
        self.calls += 1
        if self.outage_calls:
            self.outage_calls -= 1
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "encoder restarting")
        images = []
        for data in request.images:
            if data in self.bad:
                images.append(encoder_service_pb2.EncodedImage(error="cannot decode: truncated"))
            else:
                image = encoder_service_pb2.EncodedImage()
                for extractor in request.extractors:
                    image.vectors[extractor].CopyFrom(types_pb2.Vector(values=[float(data[0])]))
                images.append(image)
        return encoder_service_pb2.EncodeImagesResponse(images=images)


class FakeSearch:
    def __init__(self) -> None:
        self.vectors: dict[str, set[str]] = {}  # extractor -> ids
        self.upserts = 0
        self.refuse: dict[str, grpc.StatusCode] = {}  # content id -> code whenever it is in a batch

    async def UpsertVectors(self, request: Any, **_: Any) -> Any:  # noqa: N802
        for record in request.records:
            if record.id in self.refuse:
                raise rpc_error(self.refuse[record.id], f"record {record.id[:8]} refused")
        self.upserts += 1
        self.vectors.setdefault(request.extractor, set()).update(r.id for r in request.records)

    async def DeleteVectors(self, request: Any, **_: Any) -> Any:  # noqa: N802
        for extractor in request.extractors:
            self.vectors.get(extractor, set()).difference_update(request.ids)

    async def close(self) -> None:
        pass


class FakeClients:
    def __init__(self) -> None:
        self.encoder = FakeEncoder()
        self.search = FakeSearch()

    async def close(self) -> None:
        pass


class Harness:
    """A job of `count` images published like the ingest service does, and workers to run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = FakeStore()
        self.clients = FakeClients()
        self.job = f"namespaces/ns/jobs/j{hashlib.sha1(settings.ingest_stream.encode()).hexdigest()[:8]}"
        self.images: list[bytes] = []

    async def __aenter__(self) -> Harness:
        self.nc = await nats.connect(self.settings.nats_url)
        self.js = self.nc.jetstream()
        await ensure_ingest_streams(self.js, self.settings)
        self.jobs = JobTracker(self.js, await RecordStore(self.js, self.settings.job_bucket).open())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()

    async def publish(self, count: int, start: int = 0) -> list[str]:
        ids = []
        for i in range(start, start + count):
            data = bytes([i % 251 + 1]) + f"image-{i}".encode()
            cid = hashlib.sha256(data).hexdigest()
            key = f"{BUCKET}/objects/{cid}"
            self.store.objects[key] = data
            self.images.append(data)
            event = ingest_service_pb2.IngestEvent(
                content_id=cid, object_key=key, filename=f"img-{i}.jpg", job=self.job,
                target=types_pb2.IngestTarget(bucket=BUCKET, collection=COLLECTION, feature_extractors=["e1", "e2"]),
            )
            await self.js.publish(
                ingest_subject("ns", "c"), event.SerializeToString(), stream=self.settings.ingest_stream,
                headers={MSG_ID: event_id(COLLECTION, cid, {})},
            )
            ids.append(cid)
        return ids

    def worker(self, name: str = "w") -> IngestWorker:
        return IngestWorker(self.settings, name, clients=self.clients, store=self.store)

    async def run_until(self, done: Any, workers: int = 1, timeout: float = 30) -> None:
        tasks = [asyncio.create_task(self.worker(f"w{i}").run()) for i in range(workers)]
        try:
            async with asyncio.timeout(timeout):
                while not await done():
                    for task in tasks:
                        if task.done():
                            task.result()  # a worker that died: raise its error
                    await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def job_done(self) -> bool:
        job = await self.jobs.get(self.job)
        return job is not None and job.done

    async def dead_letters(self) -> list[Any]:
        return await read_messages(self.js, DEAD_LETTER_STREAM, "lookalike.deadletter.>", 1000)

    async def queue_empty(self) -> bool:
        info = await self.js.stream_info(self.settings.ingest_stream)
        return info.state.messages == 0


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ------------------------------------------------------------------------------------------


def test_streams_and_consumer_are_created_idempotently_and_updated(settings: Settings) -> None:
    async def main() -> None:
        nc = await nats.connect(settings.nats_url)
        js = nc.jetstream()
        try:
            for _ in range(2):  # every process does this at start-up, concurrently
                await asyncio.gather(ensure_ingest_streams(js, settings), ensure_ingest_streams(js, settings))
                await ensure_ingest_consumer(js, settings)
            info = await js.stream_info(settings.ingest_stream)
            assert info.config.retention == "workqueue" and info.config.storage == "file"
            assert info.config.duplicate_window == settings.ingest_dedup_window_s
            consumer = await js.consumer_info(settings.ingest_stream, settings.ingest_consumer)
            assert consumer.config.ack_policy == "explicit" and consumer.config.ack_wait == 1.5
            assert consumer.config.max_deliver == 3 and consumer.config.max_ack_pending == 128
            # a redeployment with other limits updates the durable consumer in place
            changed = settings.model_copy(update={"ingest_ack_wait_s": 4.0, "ingest_max_deliver": 7})
            await ensure_ingest_consumer(js, changed)
            consumer = await js.consumer_info(settings.ingest_stream, settings.ingest_consumer)
            assert (consumer.config.ack_wait, consumer.config.max_deliver) == (4.0, 7)
            # a re-upload inside the dedup window is stored once
            for _ in range(3):
                ack = await js.publish(ingest_subject("ns", "c"), b"x", headers={MSG_ID: "c:abc:meta"})
            assert ack.duplicate
            assert (await js.stream_info(settings.ingest_stream)).state.messages == 1
        finally:
            await nc.close()

    run(main())


def test_outcomes_count_once_however_often_they_are_published(settings: Settings) -> None:
    async def main() -> None:
        async with Harness(settings) as h:
            await h.jobs.start(h.job)
            await h.jobs.enqueued(h.job, 3, done=True)
            outcomes = [
                Outcome(h.job, "e1", INDEXED, "a"), Outcome(h.job, "e2", INDEXED, "b"),
                Outcome(h.job, "e3", FAILED, "c", "c.jpg", "cannot decode"),
            ]
            for _ in range(3):  # redeliveries: the same outcomes again
                await h.jobs.record(outcomes)
            # an image that was counted indexed and later fails (e.g. deleted) stays counted once
            await h.jobs.record([Outcome(h.job, "e1", FAILED, "a", "a.jpg", "late")])
            counts = await subject_counts(h.js, OUTCOME_STREAM, outcome_subject(h.job))
            assert counts == {outcome_subject(h.job, INDEXED): 2, outcome_subject(h.job, FAILED): 1}
            job = await h.jobs.get(h.job)
            assert (job.queued, job.indexed, job.failed, job.done) == (3, 2, 1, True)
            assert job.state == types_pb2.Job.STATE_FAILED
            assert [(f.content_id, f.filename, f.reason) for f in job.failures] == [("c", "c.jpg", "cannot decode")]
            # a finished job is frozen into its record: it outlives the outcome stream's retention
            record = await h.jobs.store.get(h.job)
            assert record.value["final"]["indexed"] == 2
            assert await h.jobs.get("namespaces/ns/jobs/nope") is None

    run(main())


def test_crash_between_counting_and_ack_counts_once(settings: Settings) -> None:
    """A worker that dies after its upsert and its count but before its ack: the batch comes back
    after ack_wait, the second worker redoes it, and every image is still counted exactly once."""

    async def main() -> None:
        async with Harness(settings) as h:
            ids = await h.publish(20)
            await h.jobs.start(h.job)
            await h.jobs.enqueued(h.job, 20, done=True)
            crashing = h.worker("crashing")

            async def lost_ack(msg: Any) -> None:
                msg._ackd = True  # the worker believes it acked; the server never heard of it

            import services.ingest.worker as worker_module

            original = worker_module._ack
            worker_module._ack = lost_ack
            try:
                task = asyncio.create_task(crashing.run())
                async with asyncio.timeout(10):
                    while len(h.clients.search.vectors.get("e1", ())) < 20:
                        await asyncio.sleep(0.02)
                task.cancel()  # "killed": nothing un-acked to hand back, as far as it knows
                await asyncio.gather(task, return_exceptions=True)
            finally:
                worker_module._ack = original
            assert (await h.jobs.get(h.job)).indexed == 20  # counted, never acked
            assert (await h.js.stream_info(settings.ingest_stream)).state.messages == 20
            await h.run_until(h.queue_empty)  # everything redelivered, redone and acked
            job = await h.jobs.get(h.job)
            assert (job.queued, job.indexed, job.failed) == (20, 20, 0)
            assert h.clients.search.vectors["e1"] == h.clients.search.vectors["e2"] == set(ids)
            assert await h.queue_empty()

    run(main())


def test_outage_is_retried_in_place_and_nothing_is_parked(settings: Settings) -> None:
    async def main() -> None:
        async with Harness(settings) as h:
            ids = await h.publish(10)
            await h.jobs.start(h.job)
            await h.jobs.enqueued(h.job, 10, done=True)
            h.clients.encoder.outage_calls = 4  # longer than ack_wait with the backoff: kept alive
            await h.run_until(h.job_done)
            job = await h.jobs.get(h.job)
            assert (job.indexed, job.failed) == (10, 0)
            assert h.clients.search.vectors["e1"] == set(ids)
            assert await h.dead_letters() == []
            consumer = await h.js.consumer_info(settings.ingest_stream, settings.ingest_consumer)
            assert consumer.num_redelivered == 0  # in-progress acks held the batch through the outage

    run(main())


def test_refused_and_undecodable_images_are_parked_the_rest_indexed(settings: Settings) -> None:
    async def main() -> None:
        async with Harness(settings) as h:
            ids = await h.publish(16)
            await h.jobs.start(h.job)
            await h.jobs.enqueued(h.job, 16, done=True)
            h.clients.search.refuse[ids[3]] = grpc.StatusCode.INVALID_ARGUMENT  # fails the whole batch
            h.clients.encoder.bad.add(h.images[7])  # a per-image error
            await h.run_until(h.job_done)
            job = await h.jobs.get(h.job)
            assert (job.indexed, job.failed) == (14, 2)
            assert h.clients.search.vectors["e1"] == set(ids) - {ids[3], ids[7]}
            reasons = {f.content_id: f.reason for f in job.failures}
            assert "INVALID_ARGUMENT" in reasons[ids[3]] and "cannot encode image" in reasons[ids[7]]
            letters = await h.dead_letters()
            parked = {ingest_service_pb2.IngestEvent.FromString(m.data).content_id: m.headers[REASON_HEADER] for m in letters}
            assert parked.keys() == {ids[3], ids[7]}
            assert await h.queue_empty()

    run(main())


def test_image_that_fails_alone_is_handed_back_then_parked(settings: Settings) -> None:
    """INTERNAL for one image only: the batch is split, the others land, and that image is handed
    back (one delivery used each time) until its last delivery, when it is parked with its error."""

    async def main() -> None:
        async with Harness(settings) as h:
            ids = await h.publish(8)
            await h.jobs.start(h.job)
            await h.jobs.enqueued(h.job, 8, done=True)
            h.clients.search.refuse[ids[5]] = grpc.StatusCode.INTERNAL
            await h.run_until(h.job_done, timeout=60)
            job = await h.jobs.get(h.job)
            assert (job.indexed, job.failed) == (7, 1)
            [failure] = job.failures
            assert failure.content_id == ids[5] and "INTERNAL" in failure.reason and "3 deliveries" in failure.reason
            assert await h.queue_empty()

    run(main())


def test_message_no_worker_acks_reaches_the_dead_letter_stream(settings: Settings) -> None:
    """A message that crashes every worker taking it: after max_deliver JetStream gives up, announces
    it, and a worker parks it with the reason and counts it failed."""

    async def main() -> None:
        async with Harness(settings) as h:
            [cid] = await h.publish(1)
            await h.jobs.start(h.job)
            await h.jobs.enqueued(h.job, 1, done=True)
            await ensure_ingest_consumer(h.js, settings)
            sub = await h.js.pull_subscribe_bind(durable=settings.ingest_consumer, stream=settings.ingest_stream)
            for _ in range(settings.ingest_max_deliver):  # taken, never acked: "crashed"
                await sub.fetch(1, timeout=5)
            await h.run_until(h.job_done, timeout=20)  # a healthy worker only sees the advisory
            job = await h.jobs.get(h.job)
            assert (job.indexed, job.failed) == (0, 1)
            assert "not acknowledged after 3 deliveries" in job.failures[0].reason
            [letter] = await h.dead_letters()
            assert ingest_service_pb2.IngestEvent.FromString(letter.data).content_id == cid
            assert await h.queue_empty()

    run(main())


def test_original_deleted_while_indexing_leaves_no_vector(settings: Settings) -> None:
    async def main() -> None:
        async with Harness(settings) as h:
            ids = await h.publish(4)
            await h.jobs.start(h.job)
            await h.jobs.enqueued(h.job, 4, done=True)
            h.store.vanish_after_get.add(f"{BUCKET}/objects/{ids[2]}")
            await h.run_until(h.job_done)
            job = await h.jobs.get(h.job)
            assert (job.indexed, job.failed) == (3, 1)
            assert "deleted while it was being indexed" in job.failures[0].reason
            assert h.clients.search.vectors["e1"] == set(ids) - {ids[2]}

    run(main())


def test_several_workers_share_the_consumer(settings: Settings) -> None:
    async def main() -> None:
        async with Harness(settings) as h:
            ids = await h.publish(200)
            await h.jobs.start(h.job)
            await h.jobs.enqueued(h.job, 200, done=True)
            await h.run_until(h.job_done, workers=3)
            job = await h.jobs.get(h.job)
            assert (job.indexed, job.failed) == (200, 0)
            assert h.clients.search.vectors["e2"] == set(ids)
            # batched: one encoder call and one upsert per extractor for up to batch_size images
            assert h.clients.encoder.calls <= 200 // settings.ingest_batch_size + 10

    run(main())


def test_publish_retried_across_a_lost_reply_is_counted_once(settings: Settings) -> None:
    """The ingest service's publish: a reply lost in a NATS restart is retried with the same message
    id; the duplicate it then gets is its own first attempt (counted as queued) only if the stored
    event names its job, not when another upload had queued the same image."""
    from nats.errors import TimeoutError as NatsTimeout

    from services.ingest.server import IngestServicer

    class LosesFirstReply:
        def __init__(self, js: Any) -> None:
            self.js = js
            self.calls = 0

        async def publish(self, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            ack = await self.js.publish(*args, **kwargs)
            if self.calls == 1:
                raise NatsTimeout  # stored, but the reply never came
            return ack

        def __getattr__(self, name: str) -> Any:
            return getattr(self.js, name)

    def event(job: str, cid: str) -> ingest_service_pb2.IngestEvent:
        return ingest_service_pb2.IngestEvent(content_id=cid, object_key=f"{BUCKET}/objects/{cid}", job=job)

    async def main() -> None:
        async with Harness(settings) as h:
            from lookalike import names

            servicer = IngestServicer(settings)
            collection = names.parse(COLLECTION, "collections")
            servicer.js = LosesFirstReply(h.js)
            assert await servicer._enqueue(collection, event("namespaces/ns/jobs/a", "1" * 64), "id-1") is True
            servicer.js = h.js  # a plain duplicate: another upload queued it first
            assert await servicer._enqueue(collection, event("namespaces/ns/jobs/b", "1" * 64), "id-1") is False
            # retried (the first attempt never arrived), and the stored duplicate is another job's
            await h.js.publish(ingest_subject("ns", "c"), event("namespaces/ns/jobs/a", "2" * 64).SerializeToString(),
                               headers={MSG_ID: "id-2"})

            class FailsFirstAttempt(LosesFirstReply):
                async def publish(self, *args: Any, **kwargs: Any) -> Any:
                    self.calls += 1
                    if self.calls == 1:
                        raise NatsTimeout
                    return await self.js.publish(*args, **kwargs)

            servicer.js = FailsFirstAttempt(h.js)
            assert await servicer._enqueue(collection, event("namespaces/ns/jobs/b", "2" * 64), "id-2") is False
            assert servicer.js.calls == 2
            assert (await h.js.stream_info(settings.ingest_stream)).state.messages == 2

    run(main())
