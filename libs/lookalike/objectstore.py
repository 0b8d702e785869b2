"""Object store adapter: originals live in an S3-compatible store (MinIO in production) reached
through the MinIO SDK. Nothing here depends on which S3 server it is."""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass
from datetime import timedelta
from collections.abc import Iterator
from typing import Protocol

from minio import Minio
from minio.error import S3Error

from lookalike.config import Settings
from lookalike.errors import NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    content_type: str


class ObjectStore(Protocol):
    async def ensure_bucket(self) -> None: ...
    async def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None) -> ObjectInfo: ...
    async def get(self, key: str) -> bytes: ...
    async def stat(self, key: str) -> ObjectInfo | None: ...
    async def delete(self, key: str) -> None: ...
    def preview_url(self, key: str) -> str: ...


class MinioObjectStore:
    """One bucket of an S3-compatible server. Blocking SDK calls run in threads."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self.expiry = timedelta(seconds=settings.presign_expiry_s)
        # region given up front: the SDK would otherwise make a network call to look it up, even
        # for presigning
        self.client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
        # SigV4 signs the host, so URLs for another address must be signed for that address
        self.presigner = self.client
        if settings.s3_public_endpoint:
            self.presigner = Minio(
                settings.s3_public_endpoint,
                access_key=settings.s3_access_key,
                secret_key=settings.s3_secret_key,
                secure=settings.s3_secure,
                region=settings.s3_region,
            )

    async def ensure_bucket(self) -> None:
        def ensure() -> None:
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:  # created concurrently by another service
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

        await asyncio.to_thread(ensure)

    async def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None) -> ObjectInfo:
        result = await asyncio.to_thread(
            self.client.put_object,
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata=metadata or None,
        )
        return ObjectInfo(key, len(data), (result.etag or "").strip('"'), content_type)

    async def get(self, key: str) -> bytes:
        def read() -> bytes:
            try:
                response = self.client.get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject"):
                    raise NotFound(f"object {key!r} not found") from exc
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return await asyncio.to_thread(read)

    async def stat(self, key: str) -> ObjectInfo | None:
        def stat() -> ObjectInfo | None:
            try:
                st = self.client.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                    return None
                raise
            return ObjectInfo(key, st.size or 0, (st.etag or "").strip('"'), st.content_type or "")

        return await asyncio.to_thread(stat)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.remove_object, self.bucket, key)

    async def count(self, prefix: str) -> int:
        def count() -> int:
            return sum(1 for _ in self.client.list_objects(self.bucket, prefix=prefix, recursive=True))

        return await asyncio.to_thread(count)

    def preview_url(self, key: str) -> str:
        """A presigned GET, computed locally (no call to the server)."""
        return self.presigner.presigned_get_object(self.bucket, key, expires=self.expiry)

    async def list_keys(self, prefix: str) -> list[str]:
        def keys() -> list[str]:
            return [o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)]

        return await asyncio.to_thread(keys)


@dataclass(frozen=True)
class SourceObject:
    key: str
    etag: str
    size: int


class SourceBucket:
    """An external S3-compatible bucket (any endpoint and credentials) that bucket sync reads.

    Listing is paged by the SDK (1000 keys per request) and handed out in chunks, so a source of
    millions of keys is never held in memory at once."""

    def __init__(
        self, endpoint: str, bucket: str, *, access_key: str = "", secret_key: str = "", secure: bool = True,
        region: str = "", prefix: str = "",
    ) -> None:
        from lookalike.errors import InvalidArgument

        if not bucket:
            raise InvalidArgument("the source has no bucket")
        try:
            self.client = Minio(
                endpoint, access_key=access_key or None, secret_key=secret_key or None, secure=secure,
                region=region or None,
            )
        except ValueError as exc:
            raise InvalidArgument(f"invalid source endpoint {endpoint!r}: {exc}") from exc
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix
        self._listing: Iterator[object] | None = None

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key or self.prefix}"

    async def next_chunk(self, size: int = 1000) -> list[SourceObject]:
        """The next objects of the listing (empty at the end); raises S3Error and network errors."""

        def take() -> list[SourceObject]:
            if self._listing is None:
                self._listing = iter(self.client.list_objects(self.bucket, prefix=self.prefix or None, recursive=True))
            out: list[SourceObject] = []
            for obj in self._listing:
                if obj.is_dir or not obj.object_name or obj.object_name.endswith("/"):
                    continue
                out.append(SourceObject(obj.object_name, (obj.etag or "").strip('"'), int(obj.size or 0)))
                if len(out) >= size:
                    break
            return out

        return await asyncio.to_thread(take)

    async def get(self, key: str) -> bytes:
        def read() -> bytes:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return await asyncio.to_thread(read)
