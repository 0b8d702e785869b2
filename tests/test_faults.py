"""Ingest under faults, on real servers (loopback only): a worker killed with SIGKILL mid-stream, a
NATS restart mid-ingest, a Milvus outage, and poison images among good ones. Every test checks the
outcome where it lives: the objects in the S3 store, the vectors in Milvus (both extractors, by id:
every image exactly once), the job's counts, and the dead-letter stream.

The module runs its own NATS, S3 server and Milvus (the tests restart them; the session's servers
are never touched) and its own services, with short ack_wait so that a killed worker's messages come
back in seconds. Images are small JPEGs cut from real photos (scikit-image), all distinct.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from lookalike.cli import Gateway
from lookalike.devservers import Infra, ServerProcess, free_port, start_infra, start_milvus, start_nats
from lookalike.queue import DEAD_LETTER_STREAM, REASON_HEADER, read_messages
from lookalike.stack import Stack
from lookalike.v1 import (
    bucket_service_pb2 as bucket_pb,
    collection_service_pb2 as collection_pb,
    namespace_service_pb2 as namespace_pb,
    types_pb2,
)
from tests.fixtures_mesh import content_id

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

EXTRACTORS = ["effnet-lite0", "phash"]
SERVICES = ("encoder", "search", "ingest", "gateway")
ACK_WAIT_S = 6
STACK_ENV = {
    # workers run as their own processes, started (and killed) by the tests
    "LOOKALIKE_INGEST_WORKERS": "0",
    "LOOKALIKE_INGEST_ACK_WAIT_S": str(ACK_WAIT_S),
    "LOOKALIKE_INGEST_BATCH_SIZE": "16",
    "LOOKALIKE_LOG_LEVEL": "INFO",
}


# ------------------------------------------------------------------------------------------
# images


def _photos() -> list[np.ndarray]:
    import skimage.data as data

    return [
        data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.hubble_deep_field(), data.retina(),
        data.immunohistochemistry(), data.camera(), data.coins(), data.stereo_motorcycle()[0], data.cat(),
        data.page(), data.text(), data.moon(), data.grass(), data.gravel(), data.brick(), data.colorwheel(),
    ]


_PHOTOS: list[np.ndarray] = []


def make_images(count: int, seed: int) -> list[bytes]:
    """`count` distinct small JPEGs (64-128 px): random crops of real photos, flipped at random."""
    if not _PHOTOS:
        _PHOTOS.extend(_photos())
    rng = random.Random(seed)
    out: list[bytes] = []
    seen: set[str] = set()
    while len(out) < count:
        photo = Image.fromarray(rng.choice(_PHOTOS)).convert("RGB")
        w, h = photo.size
        side = int(min(w, h) * rng.uniform(0.3, 1.0))
        x, y = rng.randint(0, w - side), rng.randint(0, h - side)
        crop = photo.crop((x, y, x + side, y + side))
        size = rng.randint(64, 128)
        crop = crop.resize((size, int(size * rng.uniform(0.75, 1.0))))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=rng.randint(80, 95))
        data = buf.getvalue()
        if content_id(data) not in seen:
            seen.add(content_id(data))
            out.append(data)
    return out


def make_poison(count: int, seed: int) -> list[bytes]:
    """JPEGs cut off in their scan data: they pass the upload check (header) and fail the decode."""
    return [jpeg[: len(jpeg) * 3 // 5] for jpeg in make_images(count, seed)]


# ------------------------------------------------------------------------------------------
# the stack


@dataclass
class FaultStack:
    infra: Infra
    stack: Stack
    base: Path
    workers: dict[str, ServerProcess] = field(default_factory=dict)
    # workers started since the last stop_workers() (the current test's), killed ones included
    names: list[str] = field(default_factory=list)
    counter: int = 0

    @property
    def gateway(self) -> Gateway:
        return Gateway(self.stack.gateway_addr, timeout=30)

    def start_worker(self) -> str:
        self.counter += 1
        name = f"ingest-worker-{self.counter}"
        self.names.append(name)
        address = f"127.0.0.1:{free_port()}"
        self.workers[name] = self.stack.start_service(name, module="services.ingest.worker", address=address)
        return name

    def kill_worker(self, name: str) -> None:
        process = self.workers.pop(name)
        os.killpg(process.pgid, signal.SIGKILL)
        process.stop(timeout=5)
        self.stack.services.pop(name, None)

    def stop_workers(self) -> None:
        for name in list(self.workers):
            self.workers.pop(name)
            self.stack.stop_service(name)
        self.names.clear()

    def held_by_workers(self) -> int:
        """Messages delivered to workers and not acked yet (after a kill: what the dead one held)."""

        async def read() -> int:
            import nats

            nc = await nats.connect(self.infra.nats_url)
            try:
                info = await nc.jetstream().consumer_info("LOOKALIKE_INGEST", "ingest-workers")
                return info.num_ack_pending
            finally:
                await nc.close()

        return asyncio.run(read())

    def kill_mid_batch(self, catalog: Catalog, job: str, after: int) -> int:
        """Waits until `after` images are indexed by the one running worker, SIGKILLs it and returns
        how many messages it held un-acked (they come back after ack_wait)."""
        [victim] = list(self.workers)
        catalog.wait(job, until=lambda j: j.indexed >= after)
        self.kill_worker(victim)
        held = self.held_by_workers()
        print(f"killed {victim} holding {held} un-acked messages")  # shown with -s / on failure
        return held

    def worker_logs(self) -> str:
        """The logs of the current test's workers."""
        logs = self.stack.run_dir / "logs"
        return "".join((logs / f"{name}.log").read_text(errors="replace") for name in self.names if (logs / f"{name}.log").exists())


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    base = tmp_path_factory.mktemp("faults")
    infra = start_infra(base / "servers")
    stack = Stack(
        infra, base / "run", {name: f"127.0.0.1:{free_port()}" for name in SERVICES}, dict(STACK_ENV), own_infra=False
    )
    fs = FaultStack(infra, stack, base)
    try:
        for name in SERVICES:
            stack.start_service(name)
        yield fs
    finally:
        fs.stop_workers()
        stack.stop()
        infra.stop(timeout=5)


@dataclass
class Catalog:
    """A namespace, a collection (both extractors, FLAT index) and a bucket feeding it."""

    fs: FaultStack
    namespace: str

    def __post_init__(self) -> None:
        gw = self.fs.gateway
        self.parent = f"namespaces/{self.namespace}"
        self.collection = f"{self.parent}/collections/images"
        self.bucket = f"{self.parent}/buckets/uploads"
        gw.namespaces.CreateNamespace(namespace_pb.CreateNamespaceRequest(namespace_id=self.namespace), timeout=30)
        gw.collections.CreateCollection(
            collection_pb.CreateCollectionRequest(
                parent=self.parent, collection_id="images", feature_extractors=EXTRACTORS,
                index=types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_FLAT),
            ),
            timeout=120,
        )
        gw.buckets.CreateBucket(
            bucket_pb.CreateBucketRequest(
                parent=self.parent, bucket_id="uploads", bucket=bucket_pb.Bucket(collection=self.collection, auto_process=True)
            ),
            timeout=30,
        )

    def upload(self, images: list[bytes], pause_s: float = 0.0) -> bucket_pb.UploadObjectsResponse:
        def requests() -> Iterator[bucket_pb.UploadObjectsRequest]:
            for i, data in enumerate(images):
                if pause_s:
                    time.sleep(pause_s)
                yield bucket_pb.UploadObjectsRequest(parent=self.bucket if i == 0 else "", filename=f"img-{i:04d}.jpg", content=data)

        return self.fs.gateway.buckets.UploadObjects(requests(), timeout=600)

    def job(self, name: str) -> types_pb2.Job | None:
        """The job, or None while the gateway cannot answer (a server restarting)."""
        try:
            return self.fs.gateway.buckets.GetJob(bucket_pb.GetJobRequest(name=name), timeout=10).job
        except grpc.RpcError:
            return None

    def wait(self, name: str, until: Any = lambda job: job.done, timeout: float = 180) -> types_pb2.Job:
        deadline = time.monotonic() + timeout
        job = None
        while time.monotonic() < deadline:
            job = self.job(name) or job
            if job is not None and until(job):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {name} did not get there in {timeout:.0f}s: {job}")

    # ---- where the data is

    def objects_in_s3(self) -> set[str]:
        client = self.fs.infra.s3.client()
        from lookalike.config import Settings

        prefix = f"{self.bucket}/objects/"
        return {o.object_name.removeprefix(prefix) for o in client.list_objects(Settings().s3_bucket, prefix=prefix, recursive=True)}

    def ids_in_milvus(self, extractor: str) -> list[str]:
        from pymilvus import MilvusClient

        from lookalike.vectorindex import milvus_collection_name

        client = MilvusClient(uri=self.fs.infra.milvus_uri, timeout=60)
        try:
            rows = client.query(
                milvus_collection_name(self.namespace, "images", extractor), filter=f'namespace == "{self.namespace}"',
                output_fields=["id"], limit=16384, consistency_level="Strong",
            )
        finally:
            client.close()
        return [row["id"] for row in rows]

    def assert_indexed_exactly(self, expected: set[str]) -> None:
        for extractor in EXTRACTORS:
            ids = self.ids_in_milvus(extractor)
            assert len(ids) == len(set(ids)) == len(expected), (extractor, len(ids), len(set(ids)), len(expected))
            assert set(ids) == expected, extractor

    def dead_letters(self) -> list[Any]:
        async def read() -> list[Any]:
            import nats

            nc = await nats.connect(self.fs.infra.nats_url)
            try:
                return await read_messages(nc.jetstream(), DEAD_LETTER_STREAM, f"lookalike.deadletter.{self.namespace}.images", 10_000)
            finally:
                await nc.close()

        return asyncio.run(read())


def _assert_clean_job(job: types_pb2.Job, count: int) -> None:
    assert job.done and job.state == types_pb2.Job.STATE_SUCCEEDED, job
    assert (job.queued, job.indexed, job.failed) == (count, count, 0), job


# ------------------------------------------------------------------------------------------
# the faults


def test_worker_killed_mid_stream_every_image_indexed_once(faults: FaultStack) -> None:
    """(a) SIGKILL the worker while 500 images stream through; new workers take its place and the
    killed worker's un-acked batch is redelivered: every image indexed exactly once."""
    catalog = Catalog(faults, "fault-kill")
    images = make_images(500, seed=1)
    faults.start_worker()
    try:
        response = catalog.upload(images)
        assert response.accepted_count == 500
        held = faults.kill_mid_batch(catalog, response.job, after=80)
        in_flight = catalog.job(response.job)
        assert in_flight is not None and in_flight.indexed < 500, "the kill came too late to be mid-stream"
        faults.start_worker()
        faults.start_worker()
        job = catalog.wait(response.job, timeout=180)
        _assert_clean_job(job, 500)
        expected = {content_id(d) for d in images}
        assert catalog.objects_in_s3() == expected
        catalog.assert_indexed_exactly(expected)
        assert catalog.dead_letters() == []
        # the killed worker's batch was handed to another one (unless it died between two batches)
        if held:
            assert "are redeliveries" in faults.worker_logs()
    finally:
        faults.stop_workers()


def test_nats_restart_mid_ingest_loses_nothing(faults: FaultStack) -> None:
    """(b) Kill NATS (file storage) while images are being uploaded, published and indexed, and start
    it again on the same data: every upload is stored, queued, indexed and counted once."""
    catalog = Catalog(faults, "fault-nats")
    images = make_images(300, seed=2)
    faults.start_worker()
    faults.start_worker()
    result: dict[str, Any] = {}
    uploader = threading.Thread(target=lambda: result.update(response=catalog.upload(images, pause_s=0.015)))
    try:
        uploader.start()
        time.sleep(1.5)  # ~100 images in: uploads and indexing both under way
        nats = faults.infra.nats
        os.killpg(nats.pgid, signal.SIGKILL)
        nats.stop(timeout=5)
        time.sleep(2.0)
        faults.infra.nats = start_nats(nats.data_dir, port=nats.port, monitor_port=nats.ports["monitor"])
        uploader.join(timeout=300)
        response = result["response"]
        assert response.accepted_count == 300 and response.rejected_count == 0
        job = catalog.wait(response.job, timeout=180)
        _assert_clean_job(job, 300)
        expected = {content_id(d) for d in images}
        assert catalog.objects_in_s3() == expected
        catalog.assert_indexed_exactly(expected)
        assert catalog.dead_letters() == []
    finally:
        uploader.join(timeout=60)
        faults.stop_workers()


def test_milvus_outage_workers_back_off_and_finish(faults: FaultStack) -> None:
    """(c) Stop Milvus while a job is being indexed: the workers retry with backoff (keeping their
    messages alive), nothing is dead-lettered, and the job completes once Milvus is back."""
    catalog = Catalog(faults, "fault-milvus")
    images = make_images(200, seed=3)
    faults.start_worker()
    faults.start_worker()
    try:
        response = catalog.upload(images)
        catalog.wait(response.job, until=lambda job: job.indexed >= 40)
        milvus = faults.infra.milvus
        milvus.stop(timeout=5)
        time.sleep(10)  # several retries, longer than ack_wait: in-progress acks must keep the batch
        stalled = catalog.job(response.job)
        assert stalled is not None and not stalled.done and stalled.failed == 0, stalled
        faults.infra.milvus = start_milvus(milvus.data_dir, port=milvus.port)
        job = catalog.wait(response.job, timeout=240)
        _assert_clean_job(job, 200)
        expected = {content_id(d) for d in images}
        assert catalog.objects_in_s3() == expected
        catalog.assert_indexed_exactly(expected)
        assert catalog.dead_letters() == []
        assert "retrying in" in faults.worker_logs()
    finally:
        faults.stop_workers()


def test_poison_images_are_dead_lettered_with_reasons(faults: FaultStack) -> None:
    """(d) 100 images that pass the upload check but cannot be decoded, among 150 good ones: the good
    ones are all indexed, the poison ones are in the dead-letter stream and the job's failures, each
    with its reason, and none is retried in a loop."""
    catalog = Catalog(faults, "fault-poison")
    good = make_images(150, seed=4)
    poison = make_poison(100, seed=5)
    mixed = [*good, *poison]
    random.Random(6).shuffle(mixed)
    faults.start_worker()
    faults.start_worker()
    try:
        response = catalog.upload(mixed)
        assert response.accepted_count == 250  # the cheap upload check cannot see the damage
        job = catalog.wait(response.job, timeout=180)
        assert job.done and job.state == types_pb2.Job.STATE_FAILED
        assert (job.queued, job.indexed, job.failed) == (250, 150, 100), job
        poison_ids = {content_id(d) for d in poison}
        assert {f.content_id for f in job.failures} == poison_ids
        assert all("cannot encode image" in f.reason for f in job.failures), job.failures[0]
        # originals are kept (the dead letters point at them); only the good ones have vectors
        assert catalog.objects_in_s3() == {content_id(d) for d in mixed}
        catalog.assert_indexed_exactly({content_id(d) for d in good})
        letters = catalog.dead_letters()
        assert len(letters) == 100
        from lookalike.v1 import ingest_service_pb2

        parked = {ingest_service_pb2.IngestEvent.FromString(m.data).content_id: m.headers[REASON_HEADER] for m in letters}
        assert set(parked) == poison_ids
        assert all("cannot encode image" in reason for reason in parked.values())
        # each parked once, at once: no retry loop, no redelivery
        logs = faults.worker_logs()
        assert all(logs.count(f"dead-lettering {cid}") == 1 for cid in poison_ids)
        assert "retrying in" not in logs and "are redeliveries" not in logs
    finally:
        faults.stop_workers()


def test_bucket_sync_with_a_worker_killed_halfway(faults: FaultStack) -> None:
    """The reviewer's check: sync an S3 bucket of photos, kill a worker halfway through indexing,
    and find every image indexed exactly once (and a re-sync enqueueing nothing)."""
    catalog = Catalog(faults, "fault-sync")
    images = make_images(300, seed=7)
    s3 = faults.infra.s3.client()
    s3.make_bucket("dev-photos")
    for i, data in enumerate(images):
        s3.put_object("dev-photos", f"gallery/{i:04d}.jpg", io.BytesIO(data), len(data))
    source = bucket_pb.S3Source(
        endpoint=faults.infra.s3.endpoint, bucket="dev-photos", prefix="gallery/", access_key=faults.infra.s3.access_key,
        secret_key=faults.infra.s3.secret_key, secure=False,
    )
    gw = faults.gateway
    gw.buckets.CreateBucket(
        bucket_pb.CreateBucketRequest(
            parent=catalog.parent, bucket_id="mirror",
            bucket=bucket_pb.Bucket(collection=catalog.collection, auto_process=True, source=source),
        ),
        timeout=30,
    )
    mirror = f"{catalog.parent}/buckets/mirror"
    try:
        response = gw.buckets.SyncBucket(bucket_pb.SyncBucketRequest(name=mirror), timeout=300)
        assert (response.listed_count, response.enqueued_count) == (300, 300)
        faults.start_worker()
        held = faults.kill_mid_batch(catalog, response.job, after=100)
        faults.start_worker()
        faults.start_worker()
        job = catalog.wait(response.job, timeout=180)
        _assert_clean_job(job, 300)
        expected = {content_id(d) for d in images}
        catalog.bucket = mirror  # where the synced originals are stored
        assert catalog.objects_in_s3() == expected
        catalog.assert_indexed_exactly(expected)
        if held:
            assert "are redeliveries" in faults.worker_logs()
        again = gw.buckets.SyncBucket(bucket_pb.SyncBucketRequest(name=mirror), timeout=300)
        assert (again.listed_count, again.enqueued_count) == (300, 0)
    finally:
        faults.stop_workers()
