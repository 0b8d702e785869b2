"""Runs a retriever's stages on a query: feature_search, filter, rerank, fuse (RRF), dedup."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format, struct_pb2

from lookalike import names
from lookalike.errors import FailedPrecondition, InvalidArgument
from lookalike.filters import compile_filter, matches
from lookalike.v1 import collection_service_pb2, encoder_service_pb2, rerank_service_pb2, search_service_pb2, types_pb2
from lookalike.v1 import retriever_service_pb2 as pb
from services.gateway.context import GatewayContext

MAX_LIMIT = 1000
DEFAULT_LIMIT = 10
DEFAULT_RRF_K = 60
DEFAULT_DEDUP_DISTANCE = 6
PHASH = "phash"


@dataclass
class Candidate:
    id: str
    object: str
    filename: str
    metadata: struct_pb2.Struct
    score: float
    stage_scores: dict[str, float] = field(default_factory=dict)
    box: types_pb2.BoundingBox | None = None
    inlier_count: int = 0


@dataclass
class Query:
    image: bytes = b""
    text: str = ""


def stage_label(index: int, stage: pb.Stage) -> str:
    return f"{stage.WhichOneof('kind')}[{index}]"


def stage_limit(stage: pb.Stage) -> int:
    kind = stage.WhichOneof("kind")
    return getattr(getattr(stage, kind), "limit", 0) if kind else 0


async def validate_stages(ctx: GatewayContext, namespace: str, stages: list[pb.Stage]) -> dict[str, collection_service_pb2.Collection]:
    """Checks a stage list at create time; returns the collections it searches."""
    if not stages:
        raise InvalidArgument("a retriever needs at least one stage")
    collections: dict[str, collection_service_pb2.Collection] = {}
    searches = 0
    for i, stage in enumerate(stages):
        kind = stage.WhichOneof("kind")
        label = f"stage {i} ({kind})"
        if kind is None:
            raise InvalidArgument(f"stage {i} has no kind")
        limit = stage_limit(stage)
        if limit and not 1 <= limit <= MAX_LIMIT:
            raise InvalidArgument(f"{label}: limit must be between 1 and {MAX_LIMIT}")
        if kind == "feature_search":
            fs = stage.feature_search


            coll = names.parse(fs.collection, "collections")
            if coll.namespace != namespace:
                raise InvalidArgument(f"{label}: collection {fs.collection} is not in namespaces/{namespace}")
            collection = await ctx.resources.get(fs.collection, collection_service_pb2.Collection)
            collections[fs.collection] = collection
            available = [e.name for e in collection.feature_extractors]
            if fs.feature_extractor and fs.feature_extractor not in available:
                raise InvalidArgument(f"{label}: {fs.collection} has no extractor {fs.feature_extractor!r} (it has {', '.join(available)})")
            if fs.HasField("filter"):
                compile_filter(fs.filter)
            searches += 1
            continue
        if searches == 0:
            raise InvalidArgument(f"{label} must come after a feature_search stage")
        if kind == "filter":
            compile_filter(stage.filter.filter)
        elif kind == "fuse" and searches < 2:
            raise InvalidArgument(f"{label}: fuse needs at least two feature_search stages before it")
        elif kind == "dedup":
            if not all(PHASH in [e.name for e in c.feature_extractors] for c in collections.values()):
                raise InvalidArgument(f"{label}: dedup needs the {PHASH!r} extractor in every searched collection")
    return collections


class Pipeline:
    def __init__(self, ctx: GatewayContext, retriever: pb.Retriever, collections: dict[str, collection_service_pb2.Collection]) -> None:
        self.ctx = ctx
        self.retriever = retriever
        self.collections = collections
        self._vectors: dict[str, types_pb2.Vector] = {}

    async def _query_vector(self, extractor: types_pb2.ExtractorInfo, query: Query) -> types_pb2.Vector:
        if extractor.name in self._vectors:
            return self._vectors[extractor.name]
        clients = self.ctx.clients
        if query.image:
            response = await clients.encoder.EncodeImages(
                encoder_service_pb2.EncodeImagesRequest(extractors=[extractor.name], images=[query.image])
            )
            encoded = response.images[0]
            if encoded.error:
                raise InvalidArgument(f"query image: {encoded.error}")
            vector = encoded.vectors[extractor.name]
        elif query.text:
            if not extractor.supports_text:
                raise FailedPrecondition(f"extractor {extractor.name!r} cannot embed text; query with an image")
            response = await clients.encoder.EncodeText(encoder_service_pb2.EncodeTextRequest(extractor=extractor.name, texts=[query.text]))
            vector = response.vectors[0]
        else:
            raise InvalidArgument("the query needs an image, an image URL or text")
        self._vectors[extractor.name] = vector
        return vector

    async def _feature_search(self, label: str, stage: pb.FeatureSearchStage, query: Query, extra: types_pb2.Filter | None) -> list[Candidate]:
        collection = self.collections[stage.collection]
        extractors = {e.name: e for e in collection.feature_extractors}
        extractor = extractors[stage.feature_extractor] if stage.feature_extractor else collection.feature_extractors[0]
        vector = await self._query_vector(extractor, query)
        filters = [f for f in (stage.filter if stage.HasField("filter") else None, extra) if f is not None and f.WhichOneof("kind")]
        request = search_service_pb2.SearchRequest(
            collection=stage.collection, extractor=extractor.name, vector=vector, limit=stage.limit or DEFAULT_LIMIT
        )
        if len(filters) == 1:
            request.filter.CopyFrom(filters[0])
        elif filters:
            request.filter.CopyFrom(types_pb2.Filter(all_of=types_pb2.FilterGroup(filters=filters)))
        response = await self.ctx.clients.search.Search(request)
        return [
            Candidate(h.id, h.object, h.filename, h.metadata, h.score, {label: h.score}) for h in response.hits
        ]

    async def _rerank(self, label: str, stage: pb.RerankStage, query: Query, candidates: list[Candidate]) -> list[Candidate]:
        if not query.image:
            return candidates[: stage.limit or len(candidates)]  # nothing to verify geometry against
        response = await self.ctx.clients.rerank.Rerank(
            rerank_service_pb2.RerankRequest(
                query_image=query.image,
                candidates=[rerank_service_pb2.RerankCandidate(id=c.id, object=c.object, score=c.score) for c in candidates],
                limit=stage.limit or len(candidates),
            )
        )
        by_id = {c.id: c for c in candidates}
        out = []
        for r in response.candidates:
            c = by_id[r.id]
            c.score = r.score
            c.stage_scores[label] = r.score
            c.inlier_count = r.inlier_count
            c.box = r.box if r.HasField("box") else None
            out.append(c)
        return out

    @staticmethod
    def _fuse(label: str, stage: pb.FuseStage, searches: list[list[Candidate]]) -> list[Candidate]:
        k = stage.k or DEFAULT_RRF_K
        fused: dict[str, Candidate] = {}
        scores: dict[str, float] = {}
        for results in searches:
            for rank, c in enumerate(results, start=1):
                scores[c.id] = scores.get(c.id, 0.0) + 1.0 / (k + rank)
                if c.id in fused:
                    fused[c.id].stage_scores.update(c.stage_scores)
                else:
                    fused[c.id] = c
        ordered = sorted(fused.values(), key=lambda c: scores[c.id], reverse=True)
        for c in ordered:
            c.score = scores[c.id]
            c.stage_scores[label] = c.score
        return ordered[: stage.limit or len(ordered)]

    async def _dedup(self, stage: pb.DedupStage, candidates: list[Candidate]) -> list[Candidate]:
        threshold = stage.max_hamming_distance or DEFAULT_DEDUP_DISTANCE
        hashes: dict[str, int] = {}
        for collection in self.collections:
            response = await self.ctx.clients.search.GetVectors(
                search_service_pb2.GetVectorsRequest(collection=collection, extractor=PHASH, ids=[c.id for c in candidates])
            )
            for record in response.records:
                hashes[record.id] = int.from_bytes(record.vector.binary, "big")
        kept: list[Candidate] = []
        for c in candidates:  # best first: keep the best of each near-duplicate group
            h = hashes.get(c.id)
            if h is not None and any((h ^ hashes[k.id]).bit_count() <= threshold for k in kept if k.id in hashes):
                continue
            kept.append(c)
        return kept

    async def run(self, query: Query, extra: types_pb2.Filter | None, limit: int) -> tuple[list[Candidate], list[pb.StageTiming]]:
        candidates: list[Candidate] = []
        searches: list[list[Candidate]] = []
        timings = []
        for i, stage in enumerate(self.retriever.stages):
            label = stage_label(i, stage)
            started = time.perf_counter()
            kind = stage.WhichOneof("kind")
            if kind == "feature_search":
                candidates = await self._feature_search(label, stage.feature_search, query, extra)
                searches.append(candidates)
            elif kind == "filter":
                candidates = [c for c in candidates if matches(stage.filter.filter, json_format.MessageToDict(c.metadata))]
            elif kind == "rerank":
                candidates = await self._rerank(label, stage.rerank, query, candidates)
            elif kind == "fuse":
                candidates = self._fuse(label, stage.fuse, searches)
            elif kind == "dedup":
                candidates = await self._dedup(stage.dedup, candidates)
            timings.append(pb.StageTiming(stage=label, milliseconds=(time.perf_counter() - started) * 1000, output_count=len(candidates)))
        return candidates[: limit or len(candidates)], timings
