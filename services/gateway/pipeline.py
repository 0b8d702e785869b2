"""Runs a retriever's stages on a query: feature_search, filter, rerank, fuse (RRF), dedup."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from google.protobuf import json_format, struct_pb2

from lookalike import metadata, names
from lookalike.errors import FailedPrecondition, InvalidArgument
from lookalike.filters import compile_filter, matches
from lookalike.v1 import collection_service_pb2, encoder_service_pb2, rerank_service_pb2, search_service_pb2, types_pb2
from lookalike.v1 import retriever_service_pb2 as pb
from lookalike.server import remaining_timeout
from services.gateway.context import GatewayContext

MAX_LIMIT = 1000
DEFAULT_LIMIT = 10
DEFAULT_RRF_K = 60
DEFAULT_DEDUP_DISTANCE = 6
PHASH = "phash"
DEFAULT_BUDGET_S = 30.0
# relative share of the deadline per stage kind (rerank does image work per candidate)
STAGE_WEIGHTS = {"feature_search": 1.0, "rerank": 4.0, "dedup": 0.5, "filter": 0.1, "fuse": 0.1}


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
    duplicate_of: str = ""
    duplicates: list[str] = field(default_factory=list)


@dataclass
class Query:
    image: bytes = b""
    text: str = ""


def stage_label(index: int, stage: pb.Stage) -> str:
    return f"{stage.WhichOneof('kind')}[{index}]"


def stage_limit(stage: pb.Stage) -> int:
    kind = stage.WhichOneof("kind")
    return getattr(getattr(stage, kind), "limit", 0) if kind else 0


def check_search_params(label: str, collection: collection_service_pb2.Collection, params: types_pb2.IndexSpec) -> None:
    """A stage may tune the query side of its collection's index (ef for HNSW, nprobe for IVF-PQ), not
    its build; ranges are the search service's to check."""
    if params.type or params.hnsw.m or params.hnsw.ef_construction or params.ivf_pq.nlist or params.ivf_pq.m or params.ivf_pq.nbits:
        raise InvalidArgument(f"{label}: search_params may only set hnsw.ef and ivf_pq.nprobe (build parameters are fixed)")
    index = collection.index.type or types_pb2.INDEX_TYPE_HNSW
    if params.hnsw.ef and index != types_pb2.INDEX_TYPE_HNSW:
        raise InvalidArgument(f"{label}: hnsw.ef given, but {collection.name} has a {types_pb2.IndexType.Name(index)} index")
    if params.ivf_pq.nprobe and index != types_pb2.INDEX_TYPE_IVF_PQ:
        raise InvalidArgument(f"{label}: ivf_pq.nprobe given, but {collection.name} has a {types_pb2.IndexType.Name(index)} index")


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
            if fs.HasField("search_params"):
                check_search_params(label, collection, fs.search_params)
            if fs.HasField("filter"):  # type-checked against the collection's declared fields
                compile_filter(fs.filter, metadata.declared(collection.metadata_fields))
            extractor = next(e for e in collection.feature_extractors if e.name == (fs.feature_extractor or available[0]))
            if fs.input == pb.QUERY_INPUT_TEXT and not extractor.supports_text:
                raise InvalidArgument(f"{label}: extractor {extractor.name!r} cannot embed text; use an extractor with a text path (e.g. concepts)")
            searches += 1
            continue
        if searches == 0:
            raise InvalidArgument(f"{label} must come after a feature_search stage")
        if kind == "filter":
            for collection in collections.values():
                compile_filter(stage.filter.filter, metadata.declared(collection.metadata_fields))
        elif kind == "fuse" and searches < 2:
            raise InvalidArgument(f"{label}: fuse needs at least two feature_search stages before it")
        elif kind == "fuse" and stage.fuse.weights and (
            len(stage.fuse.weights) != searches or any(not 0 <= w <= 100 for w in stage.fuse.weights)
        ):
            raise InvalidArgument(f"{label}: give one weight (0..100) per feature_search before it ({searches})")
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

    async def _query_vector(self, extractor: types_pb2.ExtractorInfo, query: Query, source: int, timeout: float) -> types_pb2.Vector:
        """The query's embedding for one extractor, from its image or its text (once per pair)."""
        use_image = source == pb.QUERY_INPUT_IMAGE or (source in (pb.QUERY_INPUT_AUTO, pb.QUERY_INPUT_UNSPECIFIED) and bool(query.image))
        if source == pb.QUERY_INPUT_IMAGE and not query.image:
            raise InvalidArgument(f"this retriever searches {extractor.name!r} with the query image; give one")
        if source == pb.QUERY_INPUT_TEXT and not query.text:
            raise InvalidArgument(f"this retriever searches {extractor.name!r} with the query text; give some")
        key = f"{extractor.name}:{'image' if use_image else 'text'}"
        if key in self._vectors:
            return self._vectors[key]
        clients = self.ctx.clients
        if use_image:
            response = await clients.encoder.EncodeImages(
                encoder_service_pb2.EncodeImagesRequest(extractors=[extractor.name], images=[query.image]), timeout=timeout
            )
            encoded = response.images[0]
            if encoded.error:
                raise InvalidArgument(f"query image: {encoded.error}")
            vector = encoded.vectors[extractor.name]
        elif query.text:
            if not extractor.supports_text:
                raise FailedPrecondition(f"extractor {extractor.name!r} cannot embed text; query with an image")
            response = await clients.encoder.EncodeText(
                encoder_service_pb2.EncodeTextRequest(extractor=extractor.name, texts=[query.text]), timeout=timeout
            )
            vector = response.vectors[0]
        else:
            raise InvalidArgument("the query needs an image, an image URL or text")
        self._vectors[key] = vector
        return vector

    async def _feature_search(
        self, label: str, stage: pb.FeatureSearchStage, query: Query, extra: types_pb2.Filter | None, timeout: float
    ) -> list[Candidate]:
        collection = self.collections[stage.collection]
        extractors = {e.name: e for e in collection.feature_extractors}
        extractor = extractors[stage.feature_extractor] if stage.feature_extractor else collection.feature_extractors[0]
        vector = await self._query_vector(extractor, query, stage.input, timeout)
        filters = [f for f in (stage.filter if stage.HasField("filter") else None, extra) if f is not None and f.WhichOneof("kind")]
        request = search_service_pb2.SearchRequest(
            collection=stage.collection, extractor=extractor.name, vector=vector, limit=stage.limit or DEFAULT_LIMIT,
            search_params=stage.search_params,
        )
        if len(filters) == 1:
            request.filter.CopyFrom(filters[0])
        elif filters:
            request.filter.CopyFrom(types_pb2.Filter(all_of=types_pb2.FilterGroup(filters=filters)))
        response = await self.ctx.clients.search.Search(request, timeout=timeout)
        return [
            Candidate(h.id, h.object, h.filename, h.metadata, h.score, {label: h.score}) for h in response.hits
        ]

    async def _rerank(self, label: str, stage: pb.RerankStage, query: Query, candidates: list[Candidate], timeout: float) -> list[Candidate]:
        if not query.image or not candidates:
            return candidates[: stage.limit or len(candidates)]  # nothing to verify geometry against
        response = await self.ctx.clients.rerank.Rerank(
            rerank_service_pb2.RerankRequest(
                query_image=query.image,
                candidates=[rerank_service_pb2.RerankCandidate(id=c.id, object=c.object, score=c.score) for c in candidates],
                limit=stage.limit or len(candidates),
            ),
            timeout=timeout,
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
        weights = list(stage.weights) or [1.0] * len(searches)
        fused: dict[str, Candidate] = {}
        scores: dict[str, float] = {}
        for weight, results in zip(weights, searches):
            for rank, c in enumerate(results, start=1):
                scores[c.id] = scores.get(c.id, 0.0) + weight / (k + rank)
                if c.id in fused:
                    fused[c.id].stage_scores.update(c.stage_scores)
                else:  # a copy: the search lists stay as their stages left them
                    fused[c.id] = replace(c, stage_scores=dict(c.stage_scores), duplicates=list(c.duplicates))
        ordered = sorted(fused.values(), key=lambda c: scores[c.id], reverse=True)
        for c in ordered:
            c.score = scores[c.id]
            c.stage_scores[label] = c.score
        return ordered[: stage.limit or len(ordered)]

    async def _dedup(self, stage: pb.DedupStage, candidates: list[Candidate], timeout: float) -> list[Candidate]:
        """Best first: each candidate within the distance of a better one is marked as its duplicate
        (or, with collapse, folded into it)."""
        threshold = stage.max_hamming_distance or DEFAULT_DEDUP_DISTANCE
        hashes: dict[str, int] = {}
        if not candidates:
            return candidates
        for collection in self.collections:
            response = await self.ctx.clients.search.GetVectors(
                search_service_pb2.GetVectorsRequest(collection=collection, extractor=PHASH, ids=[c.id for c in candidates]),
                timeout=timeout,
            )
            for record in response.records:
                hashes[record.id] = int.from_bytes(record.vector.binary, "big")
        representatives: list[Candidate] = []
        out: list[Candidate] = []
        for c in candidates:
            h = hashes.get(c.id)
            original = next(
                (r for r in representatives if h is not None and r.id in hashes and (h ^ hashes[r.id]).bit_count() <= threshold), None
            )
            if original is None:
                representatives.append(c)
                out.append(c)
            elif stage.collapse:
                original.duplicates.append(c.object)
            else:
                c.duplicate_of = original.object
                out.append(c)
        return out

    def _budget(self, index: int, total: float) -> float:
        """This stage's share of what is left of the deadline: by weight over the stages left, so a
        slow stage cannot starve the ones after it."""
        remaining = remaining_timeout(total)
        weights = [STAGE_WEIGHTS.get(s.WhichOneof("kind") or "", 1.0) for s in self.retriever.stages[index:]]
        return max(0.05, remaining * weights[0] / sum(weights))

    async def run(
        self, query: Query, extra: types_pb2.Filter | None, limit: int, total_budget: float = DEFAULT_BUDGET_S
    ) -> tuple[list[Candidate], list[pb.StageTiming]]:
        candidates: list[Candidate] = []
        searches: list[list[Candidate]] = []
        timings = []
        for i, stage in enumerate(self.retriever.stages):
            label = stage_label(i, stage)
            started = time.perf_counter()
            kind = stage.WhichOneof("kind")
            budget = self._budget(i, total_budget)
            if kind == "feature_search":
                candidates = await self._feature_search(label, stage.feature_search, query, extra, budget)
                searches.append(candidates)
            elif kind == "filter":
                candidates = [c for c in candidates if matches(stage.filter.filter, json_format.MessageToDict(c.metadata))]
            elif kind == "rerank":
                candidates = await self._rerank(label, stage.rerank, query, candidates, budget)
            elif kind == "fuse":
                candidates = self._fuse(label, stage.fuse, searches)
            elif kind == "dedup":
                candidates = await self._dedup(stage.dedup, candidates, budget)
            timings.append(pb.StageTiming(stage=label, milliseconds=(time.perf_counter() - started) * 1000, output_count=len(candidates)))
        return candidates[: limit or len(candidates)], timings
