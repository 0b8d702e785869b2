"""Rerank service: RerankService (protos/lookalike/v1/rerank_service.proto).

Candidates are fetched from the object store, decoded at reduced size and verified in parallel
threads; verification that does not finish inside the caller's deadline leaves the candidate with
its earlier score rather than failing the query."""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from lookalike.config import Settings
from lookalike.errors import InvalidArgument
from lookalike.imaging import decode_image
from lookalike.objectstore import MinioObjectStore
from lookalike.server import ServiceSpec, remaining_timeout, rpc
from lookalike.v1 import rerank_service_pb2 as pb
from lookalike.v1 import rerank_service_pb2_grpc as grpc_pb
from lookalike.v1 import types_pb2
from services.rerank.verify import MAX_SIDE, Features, Verification, combined_score, features, reduced_gray, verify

log = logging.getLogger(__name__)

MAX_CANDIDATES = 200


class RerankServicer(grpc_pb.RerankServiceServicer):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = MinioObjectStore(settings)
        self.pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="verify")
        # ~50 KB of keypoints and descriptors per image
        self.cache: OrderedDict[str, Features | None] = OrderedDict()
        self.cache_size = settings.rerank_cache_images

    def _query_views(self, data: bytes) -> list[Features]:
        image = decode_image(data, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels)
        gray = reduced_gray(image)
        return [features(gray), features(np.ascontiguousarray(gray[:, ::-1]))]

    def _candidate_features(self, data: bytes) -> Features | None:
        try:
            image = Image.open(io.BytesIO(data))
            image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced scale, much faster
            return self._features_from(image)
        except Exception as exc:  # a stored original that no longer decodes: just don't boost it
            log.warning("candidate not verifiable: %s", exc)
            return None

    @staticmethod
    def _features_from(image: Image.Image) -> Features:
        from PIL import ImageOps

        return features(reduced_gray(ImageOps.exif_transpose(image)))

    async def _candidate(self, key: str) -> Features | None:
        """Keypoints of a stored image. Objects are content-addressed (immutable), so features are
        cached by key without any invalidation; hot catalog images are decoded once."""
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        data = await self.store.get(key)
        features_ = await asyncio.get_running_loop().run_in_executor(self.pool, self._candidate_features, data)
        self.cache[key] = features_
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return features_

    async def _verify_one(self, views: list[Features], candidate: pb.RerankCandidate) -> Verification:
        cand = await self._candidate(candidate.object)
        if cand is None:
            return Verification(0, None)
        loop = asyncio.get_running_loop()
        results = [await loop.run_in_executor(self.pool, verify, view, cand) for view in views]
        return max(results, key=lambda r: r.inliers)

    @rpc
    async def Rerank(self, request: pb.RerankRequest, context: Any) -> pb.RerankResponse:
        if not request.query_image:
            raise InvalidArgument("rerank needs the query image")
        if len(request.candidates) > MAX_CANDIDATES:
            raise InvalidArgument(f"at most {MAX_CANDIDATES} candidates")
        loop = asyncio.get_running_loop()
        # the query and its mirror image: ORB descriptors are not mirror-invariant, and mirrored
        # copies are a common edit
        views = await loop.run_in_executor(self.pool, self._query_views, request.query_image)
        tasks = [asyncio.create_task(self._verify_one(views, c)) for c in request.candidates]
        # leave a little of the caller's deadline for the answer itself
        budget = max(0.05, remaining_timeout(self.settings.rerank_timeout_s) - 0.2)
        done, pending = await asyncio.wait(tasks, timeout=budget) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        if pending:
            log.warning("rerank: %d of %d candidates not verified in time", len(pending), len(tasks))
        scored = []
        for candidate, task in zip(request.candidates, tasks):
            result = Verification(0, None)
            if task in done and task.exception() is None:
                result = task.result()
            elif task in done:
                log.warning("rerank: candidate %s failed: %s", candidate.id, task.exception())
            out = pb.RerankedCandidate(id=candidate.id, score=combined_score(candidate.score, result.inliers), inlier_count=result.inliers)
            if result.box is not None:
                out.box.CopyFrom(types_pb2.BoundingBox(x_min=result.box[0], y_min=result.box[1], x_max=result.box[2], y_max=result.box[3]))
            scored.append(out)
        scored.sort(key=lambda c: c.score, reverse=True)
        return pb.RerankResponse(candidates=scored[: request.limit or len(scored)])

    async def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def build(settings: Settings) -> ServiceSpec:
    servicer = RerankServicer(settings)
    return ServiceSpec(
        name="rerank",
        address=settings.rerank_addr,
        servicers=[(grpc_pb.add_RerankServiceServicer_to_server, servicer, pb.DESCRIPTOR.services_by_name["RerankService"].full_name)],
        on_stop=[servicer.close],
    )
