"""Buckets fed from an external S3 bucket (SyncBucket), object deletion (DeleteObject), and the
write-only source secret, through the gateway of the session's mesh. The "external" bucket is a
bucket of the session's S3 server, reached with its own endpoint and credentials like any other."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import grpc
import nats
import pytest

from lookalike.cli import Gateway
from lookalike.devservers import Infra
from lookalike.queue import SECRETS_BUCKET
from lookalike.stack import Stack
from lookalike.v1 import (
    bucket_service_pb2 as bucket_pb,
    collection_service_pb2 as collection_pb,
    namespace_service_pb2 as namespace_pb,
    types_pb2,
)
from tests.fixtures_mesh import content_id
from tests.test_faults import make_images

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


class Source:
    """A bucket on an S3 server that lookalike syncs from."""

    def __init__(self, infra: Infra, name: str) -> None:
        self.infra = infra
        self.client = infra.s3.client()
        self.bucket = name
        self.client.make_bucket(name)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(self.bucket, key, io.BytesIO(data), len(data))

    def remove(self, key: str) -> None:
        self.client.remove_object(self.bucket, key)

    def s3_source(self, prefix: str = "photos/", secret: str | None = None) -> bucket_pb.S3Source:
        return bucket_pb.S3Source(
            endpoint=self.infra.s3.endpoint, bucket=self.bucket, prefix=prefix, access_key=self.infra.s3.access_key,
            secret_key=self.infra.s3.secret_key if secret is None else secret, secure=False,
        )


def wait_job(gw: Gateway, job: str, timeout: float = 120) -> types_pb2.Job:
    from tests.test_e2e import wait_job as wait

    return wait(gw, job, timeout)


class SyncedCatalog:
    def __init__(self, gw: Gateway, infra: Infra, namespace: str, source: bucket_pb.S3Source | None) -> None:
        self.gw = gw
        self.infra = infra
        self.namespace = namespace
        self.parent = f"namespaces/{namespace}"
        self.collection = f"{self.parent}/collections/images"
        self.bucket = f"{self.parent}/buckets/mirror"
        gw.namespaces.CreateNamespace(namespace_pb.CreateNamespaceRequest(namespace_id=namespace), timeout=30)
        gw.collections.CreateCollection(
            collection_pb.CreateCollectionRequest(
                parent=self.parent, collection_id="images", feature_extractors=["effnet-lite0", "phash"],
                index=types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_FLAT),
            ),
            timeout=120,
        )
        self.created = self.create_bucket(source)

    def create_bucket(self, source: bucket_pb.S3Source | None) -> bucket_pb.Bucket:
        bucket = bucket_pb.Bucket(collection=self.collection, auto_process=True)
        if source is not None:
            bucket.source.CopyFrom(source)
        return self.gw.buckets.CreateBucket(
            bucket_pb.CreateBucketRequest(parent=self.parent, bucket_id="mirror", bucket=bucket), timeout=30
        ).bucket

    def sync(self) -> tuple[bucket_pb.SyncBucketResponse, types_pb2.Job]:
        response = self.gw.buckets.SyncBucket(bucket_pb.SyncBucketRequest(name=self.bucket), timeout=300)
        return response, wait_job(self.gw, response.job)

    def stored(self) -> set[str]:
        from lookalike.config import Settings

        prefix = f"{self.bucket}/objects/"
        objects = self.infra.s3.client().list_objects(Settings().s3_bucket, prefix=prefix, recursive=True)
        return {o.object_name.removeprefix(prefix) for o in objects}

    def indexed(self) -> dict[str, set[str]]:
        """Vector ids per extractor, straight from Milvus."""
        from pymilvus import MilvusClient

        from lookalike.vectorindex import milvus_collection_name

        client = MilvusClient(uri=self.infra.milvus_uri, timeout=60)
        try:
            out = {}
            for extractor in ("effnet-lite0", "phash"):
                rows = client.query(
                    milvus_collection_name(self.namespace, "images", extractor), filter=f'namespace == "{self.namespace}"',
                    output_fields=["id"], limit=16384, consistency_level="Strong",
                )
                ids = [r["id"] for r in rows]
                assert len(ids) == len(set(ids))
                out[extractor] = set(ids)
            return out
        finally:
            client.close()

    def assert_holds(self, images: list[bytes]) -> None:
        expected = {content_id(d) for d in images}
        assert self.stored() == expected
        assert self.indexed() == {"effnet-lite0": expected, "phash": expected}


@pytest.fixture()
def namespace() -> str:
    return f"sync-{uuid.uuid4().hex[:8]}"


def test_sync_mirrors_the_source_new_changed_and_deleted(gateway: Gateway, infra: Infra, namespace: str) -> None:
    source = Source(infra, f"src-{namespace}")
    a, b, c, a2, d = make_images(5, seed=11)
    source.put("photos/a.jpg", a)
    source.put("photos/b.jpg", b)
    source.put("photos/trip/c", c)  # no suffix: tried, and it is an image
    source.put("photos/notes.txt", b"not an image")  # skipped unfetched
    source.put("photos/broken.jpg", b"\xff\xd8\xff\xe0 not really")  # an image that is not: reported
    source.put("elsewhere/x.jpg", d)  # outside the prefix
    catalog = SyncedCatalog(gateway, infra, namespace, source.s3_source())

    response, job = catalog.sync()
    assert (response.listed_count, response.enqueued_count) == (5, 3)
    assert (job.queued, job.indexed, job.failed) == (3, 3, 1)
    assert [(f.filename, "not a recognised image" in f.reason or "corrupt" in f.reason) for f in job.failures] == [("photos/broken.jpg", True)]
    catalog.assert_holds([a, b, c])
    [hit] = [h for h in _documents(gateway, catalog, c) if h.content_id == content_id(c)]
    assert hit.filename == "photos/trip/c" and dict(hit.metadata.items()) == {"folder": "trip"}

    # re-run: nothing new, nothing re-fetched
    response, job = catalog.sync()
    assert (response.listed_count, response.enqueued_count, job.queued, job.indexed) == (5, 0, 0, 0)
    assert job.done and job.failed == 0

    # a new object, a changed one, a deleted one
    source.put("photos/d.jpg", d)
    source.put("photos/a.jpg", a2)
    source.remove("photos/b.jpg")
    response, job = catalog.sync()
    assert (response.listed_count, response.enqueued_count, job.indexed, job.failed) == (5, 2, 2, 0)
    catalog.assert_holds([a2, c, d])

    # DeleteObject removes the original and its vectors
    name = f"{catalog.bucket}/objects/{content_id(d)}"
    gateway.buckets.DeleteObject(bucket_pb.DeleteObjectRequest(name=name), timeout=30)
    catalog.assert_holds([a2, c])
    with pytest.raises(grpc.RpcError) as err:
        gateway.buckets.DeleteObject(bucket_pb.DeleteObjectRequest(name=name), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # the source is unchanged: the deleted version is not brought back by the next sync
    response, _ = catalog.sync()
    assert response.enqueued_count == 0
    catalog.assert_holds([a2, c])


def _documents(gateway: Gateway, catalog: SyncedCatalog, image: bytes) -> list:
    from lookalike.v1 import retriever_service_pb2 as retriever_pb

    gateway.retrievers.CreateRetriever(
        retriever_pb.CreateRetrieverRequest(
            parent=catalog.parent, retriever_id="look",
            retriever=retriever_pb.Retriever(stages=[retriever_pb.Stage(
                feature_search=retriever_pb.FeatureSearchStage(collection=catalog.collection, limit=5))]),
        ),
        timeout=30,
    )
    request = retriever_pb.ExecuteRetrieverRequest(name=f"{catalog.parent}/retrievers/look", query=retriever_pb.Query(image=image))
    return list(gateway.retrievers.ExecuteRetriever(request, timeout=60).documents)


def test_source_secret_is_write_only(gateway: Gateway, infra: Infra, mesh: Stack, namespace: str) -> None:
    source = Source(infra, f"src-{namespace}")
    catalog = SyncedCatalog(gateway, infra, namespace, source.s3_source())
    secret = infra.s3.secret_key
    assert catalog.created.source.access_key == infra.s3.access_key
    assert catalog.created.source.secret_key == ""
    got = gateway.buckets.GetBucket(bucket_pb.GetBucketRequest(name=catalog.bucket), timeout=30).bucket
    assert got.source.endpoint == infra.s3.endpoint and got.source.prefix == "photos/" and got.source.secret_key == ""
    listed = gateway.buckets.ListBuckets(bucket_pb.ListBucketsRequest(parent=catalog.parent), timeout=30).buckets
    assert [b.source.secret_key for b in listed] == [""]

    async def stored_records() -> tuple[str, str]:
        nc = await nats.connect(infra.nats_url)
        try:
            js = nc.jetstream()
            record = await (await js.key_value("lookalike_resources")).get(catalog.bucket)
            kept = await (await js.key_value(SECRETS_BUCKET)).get(catalog.bucket)
            return record.value.decode(), kept.value.decode()
        finally:
            await nc.close()

    record, kept = asyncio.run(stored_records())
    assert secret not in record  # the bucket record never holds it
    assert json.loads(kept)["scheme"] in ("plain", "aes-256-gcm")
    # it is used: a sync works with it
    response, _ = catalog.sync()
    assert response.listed_count == 0
    # and deleting the bucket forgets it
    gateway.buckets.DeleteBucket(bucket_pb.DeleteBucketRequest(name=catalog.bucket), timeout=30)

    async def secret_gone() -> bool:
        nc = await nats.connect(infra.nats_url)
        try:
            from nats.js.errors import KeyNotFoundError

            try:
                entry = await (await nc.jetstream().key_value(SECRETS_BUCKET)).get(catalog.bucket)
            except KeyNotFoundError:
                return True
            return entry.value is None or entry.operation in ("DEL", "PURGE")
        finally:
            await nc.close()

    assert asyncio.run(secret_gone())


def test_secrets_are_encrypted_and_bound_to_their_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    from lookalike.errors import FailedPrecondition
    from services.gateway.buckets import SECRETS_KEY_ENV, SourceSecrets

    monkeypatch.setenv(SECRETS_KEY_ENV, "a long random operator key")
    secrets = SourceSecrets(ctx=None)
    sealed = secrets._seal("namespaces/n/buckets/a", "s3cr3t-value")
    assert sealed["scheme"] == "aes-256-gcm" and "s3cr3t" not in json.dumps(sealed)
    assert secrets._open("namespaces/n/buckets/a", sealed) == "s3cr3t-value"
    with pytest.raises(FailedPrecondition):  # copied onto another bucket: does not decrypt
        secrets._open("namespaces/n/buckets/b", sealed)
    monkeypatch.setenv(SECRETS_KEY_ENV, "another key")
    with pytest.raises(FailedPrecondition):
        SourceSecrets(ctx=None)._open("namespaces/n/buckets/a", sealed)
    monkeypatch.delenv(SECRETS_KEY_ENV)
    assert SourceSecrets(ctx=None)._seal("namespaces/n/buckets/a", "x") == {"scheme": "plain", "secret": "x"}


def test_sync_errors_are_clear(gateway: Gateway, infra: Infra, namespace: str) -> None:
    source = Source(infra, f"src-{namespace}")
    catalog = SyncedCatalog(gateway, infra, namespace, source.s3_source(secret="wrong-secret"))
    with pytest.raises(grpc.RpcError) as err:
        catalog.sync()
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "cannot list" in err.value.details()
    assert "wrong-secret" not in err.value.details()
    gateway.buckets.DeleteBucket(bucket_pb.DeleteBucketRequest(name=catalog.bucket), timeout=30)
    catalog.create_bucket(None)
    with pytest.raises(grpc.RpcError) as err:
        catalog.sync()
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "no source" in err.value.details()
    for bad in (bucket_pb.S3Source(bucket="x"), bucket_pb.S3Source(endpoint="127.0.0.1:1"),
                bucket_pb.S3Source(endpoint="http://host:1/path", bucket="x")):
        with pytest.raises(grpc.RpcError) as err:
            gateway.buckets.CreateBucket(
                bucket_pb.CreateBucketRequest(parent=catalog.parent, bucket_id="bad",
                                              bucket=bucket_pb.Bucket(collection=catalog.collection, source=bad)),
                timeout=30,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    with pytest.raises(grpc.RpcError) as err:
        gateway.buckets.DeleteObject(bucket_pb.DeleteObjectRequest(name=f"{catalog.bucket}/objects/nope"), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_deleted_bucket_takes_its_sync_state_along(gateway: Gateway, infra: Infra, namespace: str) -> None:
    source = Source(infra, f"src-{namespace}")
    images = make_images(3, seed=12)
    for i, data in enumerate(images):
        source.put(f"photos/{i}.jpg", data)
    catalog = SyncedCatalog(gateway, infra, namespace, source.s3_source())

    def state_keys() -> int:
        async def count() -> int:
            from lookalike.queue import SYNC_STATE_BUCKET, RecordStore

            nc = await nats.connect(infra.nats_url)
            try:
                return len(await (await RecordStore(nc.jetstream(), SYNC_STATE_BUCKET).open()).scan(f"{namespace}.mirror.*"))
            finally:
                await nc.close()

        return asyncio.run(count())

    assert catalog.sync()[0].enqueued_count == 3 and state_keys() == 3
    gateway.buckets.DeleteBucket(bucket_pb.DeleteBucketRequest(name=catalog.bucket), timeout=30)
    assert state_keys() == 0
    catalog.create_bucket(source.s3_source())
    response, job = catalog.sync()  # everything listed and fetched again (the events are de-duplicated)
    assert response.listed_count == 3 and job.done and state_keys() == 3
    catalog.assert_holds(images)


def test_cli_buckets_create_and_sync_with_progress(gateway: Gateway, infra: Infra, mesh: Stack, namespace: str) -> None:
    from typer.testing import CliRunner

    from lookalike.cli import app

    source = Source(infra, f"src-{namespace}")
    images = make_images(6, seed=13)
    for i, data in enumerate(images):
        source.put(f"cli/{i}.jpg", data)
    runner = CliRunner()
    common = ["--gateway", mesh.gateway_addr, "--namespace", namespace]
    gateway.namespaces.CreateNamespace(namespace_pb.CreateNamespaceRequest(namespace_id=namespace), timeout=30)
    result = runner.invoke(app, ["collections", "create", "pics", "--index", "flat", *common])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        ["buckets", "create", "mirror", "-c", "pics", "--source", f"s3://{source.bucket}/cli/", "--endpoint", infra.s3.endpoint,
         "--access-key", infra.s3.access_key, "--insecure", *common],
        input=f"{infra.s3.secret_key}\n",  # prompted, not echoed
    )
    assert result.exit_code == 0, result.output
    assert infra.s3.secret_key not in result.output
    result = runner.invoke(app, ["buckets", "list", *common])
    assert "mirror" in result.output and infra.s3.secret_key not in result.output
    result = runner.invoke(app, ["buckets", "sync", "mirror", *common])
    assert result.exit_code == 0, result.output
    assert "listed 6, enqueued 6" in result.output and "queued 6, indexed 6, failed 0" in result.output
    job = result.output.split("(job ")[1].split(")")[0]
    result = runner.invoke(app, ["jobs", job.rsplit("/", 1)[-1], *common])
    assert result.exit_code == 0 and "succeeded; queued 6, indexed 6, failed 0" in result.output
    result = runner.invoke(app, ["buckets", "delete-object", "mirror", content_id(images[0]), *common])
    assert result.exit_code == 0, result.output
    count = gateway.collections.GetCollection(
        collection_pb.GetCollectionRequest(name=f"namespaces/{namespace}/collections/pics"), timeout=30
    ).collection.image_count
    assert count == 5
