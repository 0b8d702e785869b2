"""The web app's only way to the mesh: the gateway's public gRPC API (lookalike.v1), with gRPC
statuses turned into HTTP statuses that carry the gateway's own message."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format

from lookalike.clients import open_channel
from lookalike.config import Settings
from lookalike.v1 import (
    bucket_service_pb2_grpc,
    collection_service_pb2_grpc,
    namespace_service_pb2_grpc,
    retriever_service_pb2 as retriever_pb,
    retriever_service_pb2_grpc,
    types_pb2,
)

# gRPC status → HTTP status (Google's API mapping, except RESOURCE_EXHAUSTED: in lookalike it means
# an image over the byte or pixel limit, so 413 says it better than 429).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


class GatewayClient:
    """Async stubs of the four public services on one channel (deadlines and request ids from
    lookalike.clients, retries only on UNAVAILABLE)."""

    def __init__(self, settings: Settings) -> None:
        self.address = settings.gateway_addr
        self.channel = open_channel(settings.gateway_addr, settings, settings.rpc_timeout_s)
        self.namespaces = namespace_service_pb2_grpc.NamespaceServiceStub(self.channel)
        self.collections = collection_service_pb2_grpc.CollectionServiceStub(self.channel)
        self.buckets = bucket_service_pb2_grpc.BucketServiceStub(self.channel)
        self.retrievers = retriever_service_pb2_grpc.RetrieverServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()


# ---- proto → JSON for the page ---------------------------------------------------------------------

def last_segment(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def struct_dict(value: Any) -> dict[str, Any]:
    return json_format.MessageToDict(value) if value.fields else {}


def extractor_json(e: types_pb2.ExtractorInfo) -> dict[str, Any]:
    return {
        "name": e.name, "dimension": e.dimension, "supports_text": e.supports_text,
        "metric": types_pb2.Metric.Name(e.metric).removeprefix("METRIC_").lower(),
    }


def collection_json(c: Any) -> dict[str, Any]:
    return {
        "id": last_segment(c.name), "name": c.name, "display_name": c.display_name,
        "extractors": [extractor_json(e) for e in c.feature_extractors],
        "index": types_pb2.IndexType.Name(c.index.type).removeprefix("INDEX_TYPE_").lower(),
        "image_count": c.image_count,
    }


def stage_json(stage: retriever_pb.Stage) -> dict[str, Any]:
    kind = stage.WhichOneof("kind") or ""
    out: dict[str, Any] = {"kind": kind}
    if kind == "feature_search":
        fs = stage.feature_search
        out.update(collection=last_segment(fs.collection), feature_extractor=fs.feature_extractor, limit=fs.limit,
                   input=retriever_pb.QueryInput.Name(fs.input).removeprefix("QUERY_INPUT_").lower())
    elif kind in ("rerank", "fuse"):
        out["limit"] = getattr(stage, kind).limit
    return out


def retriever_json(r: retriever_pb.Retriever) -> dict[str, Any]:
    stages = [stage_json(s) for s in r.stages]
    collections = list(dict.fromkeys(s["collection"] for s in stages if s["kind"] == "feature_search"))
    return {"id": last_segment(r.name), "name": r.name, "display_name": r.display_name, "stages": stages, "collections": collections}


def bucket_json(b: Any) -> dict[str, Any]:
    return {"id": last_segment(b.name), "name": b.name, "collection": last_segment(b.collection), "auto_process": b.auto_process}


def document_json(d: retriever_pb.Document) -> dict[str, Any]:
    box = None
    if d.HasField("box"):
        box = {"x_min": d.box.x_min, "y_min": d.box.y_min, "x_max": d.box.x_max, "y_max": d.box.y_max}
    return {
        "object": d.object, "content_id": d.content_id, "filename": d.filename, "score": d.score,
        "preview_url": d.preview_url, "box": box, "inlier_count": d.inlier_count,
        "metadata": struct_dict(d.metadata), "stage_scores": dict(d.stage_scores),
        "duplicate_of": d.duplicate_of, "duplicates": list(d.duplicates),
    }


def job_json(job: types_pb2.Job) -> dict[str, Any]:
    return {
        "name": job.name, "id": last_segment(job.name),
        "state": types_pb2.Job.State.Name(job.state).removeprefix("STATE_").lower(),
        "queued": job.queued, "indexed": job.indexed, "failed": job.failed, "done": job.done,
        "failures": [{"filename": f.filename, "content_id": f.content_id, "reason": f.reason} for f in job.failures],
    }


def upload_result_json(r: types_pb2.UploadResult) -> dict[str, Any]:
    return {"filename": r.filename, "object": r.object, "content_id": r.content_id, "error": r.error}
