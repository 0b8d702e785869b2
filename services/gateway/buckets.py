"""BucketService (protos/lookalike/v1/bucket_service.proto): uploads are forwarded to the ingest
service as one stream, with the bucket's collection and extractors as the target; SyncBucket and
DeleteObject are forwarded to IngestService.SyncSource / DeleteObjects.

A bucket's S3 source keeps its secret key out of the bucket record: it is stored on its own in the
``lookalike_secrets`` key-value bucket, encrypted (AES-256-GCM, bound to the bucket's name) when
``LOOKALIKE_SOURCE_SECRETS_KEY`` is set, and never returned by Create/Get/ListBuckets.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from typing import Any, AsyncIterator

from lookalike import names
from lookalike.errors import FailedPrecondition, InvalidArgument, NotFound
from lookalike.objectstore import SourceBucket
from lookalike.queue import SECRETS_BUCKET, SYNC_STATE_BUCKET, RecordStore
from lookalike.server import rpc
from lookalike.v1 import bucket_service_pb2 as pb
from lookalike.v1 import bucket_service_pb2_grpc as grpc_pb
from lookalike.v1 import collection_service_pb2, ingest_service_pb2, namespace_service_pb2, types_pb2
from services.gateway.auth import check_namespace
from services.gateway.context import GatewayServicer
from services.gateway.namespaces import now

log = logging.getLogger(__name__)

SECRETS_KEY_ENV = "LOOKALIKE_SOURCE_SECRETS_KEY"
# a sync lists and copies the whole source in one call
SYNC_TIMEOUT_S = 24 * 3600.0


class SourceSecrets:
    """Secret keys of bucket sources, one record per bucket, apart from the bucket records.

    With ``LOOKALIKE_SOURCE_SECRETS_KEY`` set (any long random string; give it through a Secret), a
    secret is stored AES-256-GCM-encrypted with the bucket's name as associated data, so a record
    copied onto another bucket does not decrypt. Without it the secret is stored as it is, still
    apart from the bucket record and never sent back by the API; a warning says so once."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self._store: RecordStore | None = None
        passphrase = os.environ.get(SECRETS_KEY_ENV, "")
        self._key = hashlib.sha256(passphrase.encode()).digest() if passphrase else None
        self._warned = False

    async def store(self) -> RecordStore:
        if self._store is None:
            self._store = await RecordStore(self.ctx.resources.store.js, SECRETS_BUCKET).open()
        return self._store

    def _seal(self, bucket: str, secret: str) -> dict[str, str]:
        if self._key is None:
            if not self._warned:
                log.warning("%s is not set: bucket source secrets are stored unencrypted in NATS", SECRETS_KEY_ENV)
                self._warned = True
            return {"scheme": "plain", "secret": secret}
        from Crypto.Cipher import AES  # pycryptodome, a dependency of the minio SDK

        nonce = secrets.token_bytes(12)
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce)
        cipher.update(bucket.encode())
        ciphertext, tag = cipher.encrypt_and_digest(secret.encode())
        return {"scheme": "aes-256-gcm", "nonce": base64.b64encode(nonce).decode(), "ciphertext": base64.b64encode(ciphertext + tag).decode()}

    def _open(self, bucket: str, sealed: dict[str, str]) -> str:
        if sealed.get("scheme") == "plain":
            return sealed["secret"]
        if self._key is None:
            raise FailedPrecondition(f"the source secret of {bucket} is encrypted and {SECRETS_KEY_ENV} is not set")
        from Crypto.Cipher import AES

        blob = base64.b64decode(sealed["ciphertext"])
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=base64.b64decode(sealed["nonce"]))
        cipher.update(bucket.encode())
        try:
            return cipher.decrypt_and_verify(blob[:-16], blob[-16:]).decode()
        except ValueError as exc:
            raise FailedPrecondition(f"the source secret of {bucket} does not decrypt with the configured {SECRETS_KEY_ENV}") from exc

    async def put(self, bucket: str, secret: str) -> None:
        await (await self.store()).put(bucket, self._seal(bucket, secret))

    async def get(self, bucket: str) -> str:
        record = await (await self.store()).get(bucket)
        return self._open(bucket, record.value) if record else ""

    async def delete(self, bucket: str) -> None:
        await (await self.store()).delete(bucket)


def public(bucket: pb.Bucket) -> pb.Bucket:
    """The bucket as the API returns it: the source's secret key is write-only."""
    if bucket.HasField("source"):
        bucket.source.secret_key = ""
    return bucket


class BucketServicer(GatewayServicer, grpc_pb.BucketServiceServicer):
    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.secrets = SourceSecrets(ctx)

    @rpc
    async def CreateBucket(self, request: pb.CreateBucketRequest, context: Any) -> pb.CreateBucketResponse:
        parent = names.parse(request.parent)
        bucket_id = names.validate_id("bucket", request.bucket_id)
        await self.ctx.resources.get(request.parent, namespace_service_pb2.Namespace)
        collection = names.parse(request.bucket.collection, "collections")
        if collection.namespace != parent.namespace:
            raise InvalidArgument("a bucket can only feed a collection of its own namespace")
        await self.ctx.resources.get(request.bucket.collection, collection_service_pb2.Collection)
        bucket = pb.Bucket(
            name=f"{parent}/buckets/{bucket_id}",
            collection=request.bucket.collection,
            auto_process=request.bucket.auto_process,
            create_time=now(),
        )
        secret = ""
        if request.bucket.HasField("source"):
            source = request.bucket.source
            if not source.endpoint or not source.bucket:
                raise InvalidArgument("a bucket source needs an endpoint (host:port) and a bucket")
            if source.secret_key and not source.access_key:
                raise InvalidArgument("a bucket source with a secret key needs its access key")
            SourceBucket(source.endpoint, source.bucket, secure=source.secure)  # validates the endpoint
            bucket.source.CopyFrom(source)
            secret = source.secret_key
            bucket.source.secret_key = ""
        await self.ctx.resources.create(bucket)
        await self._clear_sync_state(names.parse(bucket.name, "buckets"))  # a bucket of the same name before
        if secret:
            try:
                await self.secrets.put(bucket.name, secret)
            except BaseException:
                await self.ctx.resources.delete(bucket.name)
                raise
        return pb.CreateBucketResponse(bucket=public(bucket))

    @rpc
    async def GetBucket(self, request: pb.GetBucketRequest, context: Any) -> pb.GetBucketResponse:
        names.parse(request.name, "buckets")
        return pb.GetBucketResponse(bucket=public(await self.ctx.resources.get(request.name, pb.Bucket)))

    @rpc
    async def ListBuckets(self, request: pb.ListBucketsRequest, context: Any) -> pb.ListBucketsResponse:
        names.parse(request.parent)
        buckets = await self.ctx.resources.list(request.parent, "buckets", pb.Bucket)
        return pb.ListBucketsResponse(buckets=[public(b) for b in buckets])

    @rpc
    async def DeleteBucket(self, request: pb.DeleteBucketRequest, context: Any) -> pb.DeleteBucketResponse:
        name = names.parse(request.name, "buckets")
        await self.ctx.resources.delete(request.name)
        await self.secrets.delete(request.name)
        await self._clear_sync_state(name)
        return pb.DeleteBucketResponse()

    async def _clear_sync_state(self, bucket: names.Name) -> None:
        """Forgets which source objects were synced (a new bucket of the same name starts afresh)."""
        js = self.ctx.resources.store.js
        await RecordStore(js, SYNC_STATE_BUCKET).open()
        await js.purge_stream(f"KV_{SYNC_STATE_BUCKET}", subject=f"$KV.{SYNC_STATE_BUCKET}.{bucket.namespace}.{bucket.id}.>")

    async def _target(self, bucket_name: str) -> tuple[types_pb2.IngestTarget, bool]:
        names.parse(bucket_name, "buckets")
        bucket = await self.ctx.resources.get(bucket_name, pb.Bucket)
        collection = await self.ctx.resources.get(bucket.collection, collection_service_pb2.Collection)
        target = types_pb2.IngestTarget(
            bucket=bucket.name,
            collection=collection.name,
            feature_extractors=[e.name for e in collection.feature_extractors],
        )
        return target, bucket.auto_process

    async def _ingest(self, first: Any, rest: AsyncIterator[Any] | None) -> ingest_service_pb2.IngestObjectsResponse:
        target, auto_process = await self._target(first.parent)

        async def requests() -> AsyncIterator[ingest_service_pb2.IngestObjectsRequest]:
            yield ingest_service_pb2.IngestObjectsRequest(
                target=target, auto_process=auto_process, filename=first.filename, content=first.content, metadata=first.metadata
            )
            if rest is not None:
                async for item in rest:
                    yield ingest_service_pb2.IngestObjectsRequest(filename=item.filename, content=item.content, metadata=item.metadata)

        # uploads can be long: no fixed deadline beyond the client's own
        return await self.ctx.clients.ingest.IngestObjects(requests(), timeout=24 * 3600)

    @rpc
    async def UploadObjects(self, request_iterator: AsyncIterator[pb.UploadObjectsRequest], context: Any) -> pb.UploadObjectsResponse:
        iterator = request_iterator.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            raise InvalidArgument("empty upload: no images in the stream") from None
        if not first.parent:
            raise InvalidArgument("the first message must name the bucket (parent)")
        check_namespace(names.parse(first.parent, "buckets").namespace)
        response = await self._ingest(first, iterator)
        accepted = sum(1 for r in response.results if not r.error)
        return pb.UploadObjectsResponse(
            job=response.job, results=response.results, accepted_count=accepted, rejected_count=len(response.results) - accepted
        )

    @rpc
    async def UploadObject(self, request: pb.UploadObjectRequest, context: Any) -> pb.UploadObjectResponse:
        if not request.content:
            raise InvalidArgument("empty upload: content is empty")
        response = await self._ingest(request, None)
        result = response.results[0]
        if result.error:
            raise InvalidArgument(f"{request.filename or 'image'}: {result.error}")
        return pb.UploadObjectResponse(job=response.job, result=result)

    @rpc
    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.GetJobResponse:
        names.parse(request.name, "jobs")
        response = await self.ctx.clients.ingest.GetIngestJob(ingest_service_pb2.GetIngestJobRequest(name=request.name))
        return pb.GetJobResponse(job=response.job)

    @rpc
    async def SyncBucket(self, request: pb.SyncBucketRequest, context: Any) -> pb.SyncBucketResponse:
        names.parse(request.name, "buckets")
        bucket = await self.ctx.resources.get(request.name, pb.Bucket)
        if not bucket.HasField("source") or not bucket.source.endpoint:
            raise FailedPrecondition(f"{request.name} has no source to sync from; create it with one")
        target, auto_process = await self._target(request.name)
        source = pb.S3Source()
        source.CopyFrom(bucket.source)
        source.secret_key = await self.secrets.get(request.name)
        response = await self.ctx.clients.ingest.SyncSource(
            ingest_service_pb2.SyncSourceRequest(target=target, source=source, auto_process=auto_process),
            timeout=SYNC_TIMEOUT_S,
        )
        return pb.SyncBucketResponse(job=response.job, listed_count=response.listed_count, enqueued_count=response.enqueued_count)

    @rpc
    async def DeleteObject(self, request: pb.DeleteObjectRequest, context: Any) -> pb.DeleteObjectResponse:
        bucket, _ = names.parse_object(request.name)
        target, _ = await self._target(str(bucket))
        response = await self.ctx.clients.ingest.DeleteObjects(
            ingest_service_pb2.DeleteObjectsRequest(target=target, objects=[request.name])
        )
        if not response.deleted_count:
            raise NotFound(f"{request.name} not found")
        return pb.DeleteObjectResponse()


