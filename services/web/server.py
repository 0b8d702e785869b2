"""The ASGI app: the static page (services/web/static/) and a small JSON API over the gateway.

    GET  /api/namespaces                                   namespaces
    GET  /api/namespaces/{ns}/collections                  collections with image counts
    GET  /api/namespaces/{ns}/retrievers                   retrievers with their stages
    GET  /api/namespaces/{ns}/buckets                      buckets
    POST /api/namespaces/{ns}/buckets                      JSON {bucket_id, collection}: an auto_process bucket
    POST /api/namespaces/{ns}/search                       multipart: retriever | collection, image, image_url,
                                                           text, filter, limit → ranked documents
    GET  /api/namespaces/{ns}/collections/{c}/duplicates   ?max_hamming_distance= → near-duplicate groups
    POST /api/namespaces/{ns}/buckets/{b}/objects          multipart: files (+ <image>.json sidecars),
                                                           metadata (JSON object) → job and per-file results
    GET  /api/namespaces/{ns}/jobs/{job}                   job progress
    GET  /healthz  (the process serves)    GET /readyz  (and the gateway is SERVING)

Every error is JSON {"error": {"code", "status", "message"}}: gRPC statuses map to HTTP statuses
(services.web.gateway.HTTP_STATUS) and the message is the gateway's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import uvicorn
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Counter, Histogram, start_http_server
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.config import Settings
from lookalike.errors import InvalidArgument, LookalikeError
from lookalike.filters import parse_filter_text
from lookalike.logs import configure_logging, continue_trace, request_id_var, trace_var
from lookalike.v1 import (
    bucket_service_pb2 as bucket_pb,
    collection_service_pb2 as collection_pb,
    namespace_service_pb2 as namespace_pb,
    retriever_service_pb2 as retriever_pb,
)
from services.web.gateway import (
    GatewayClient,
    bucket_json,
    collection_json,
    document_json,
    http_status,
    job_json,
    retriever_json,
    upload_result_json,
)

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
# headers passed on to the gateway as gRPC metadata (for an authenticating gateway or proxy in front of it)
FORWARDED_HEADERS = ("authorization", "x-api-key")
MAX_UPLOAD_FILES = 1000
SEARCH_TIMEOUT_S = 60.0
UPLOAD_TIMEOUT_S = 600.0
DEFAULT_RERANK_LIMIT = 10
HTTP_TOTAL = Counter("lookalike_http_requests_total", "HTTP requests served by the web app", ["method", "endpoint", "code"])
HTTP_SECONDS = Histogram(
    "lookalike_http_request_seconds", "HTTP request latency of the web app", ["method", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


class WebSettings(Settings):
    """The mesh's settings plus the web app's own (LOOKALIKE_WEB_*)."""

    # where the page is served (host:port); LOOKALIKE_LISTEN_ADDR overrides the bind address
    web_addr: str = "127.0.0.1:8080"
    # larger request bodies are refused with 413 before they are read
    web_max_body_bytes: int = 256 * 1024 * 1024


# ---- errors -----------------------------------------------------------------------------------------

def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "status": status, "message": message}}, status_code=status)


async def rpc_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, grpc.RpcError)
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    message = exc.details() or code.name  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"the gateway ({request.app.state.gateway.address}) is unavailable: {message}"
    log.info("%s %s → %s: %s", request.method, request.url.path, code.name, message)
    return error_response(http_status(code), code.name, message)


async def domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LookalikeError)
    return error_response(http_status(exc.code), exc.code.name, exc.message)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "RESOURCE_EXHAUSTED"}.get(exc.status_code, "INVALID_ARGUMENT")
    return error_response(exc.status_code, code, str(exc.detail))


REQUEST_ID_JUNK = re.compile(r"[^A-Za-z0-9._-]")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    # presigned preview URLs must not leak through Referer
    (b"referrer-policy", b"no-referrer"),
    # preview URLs are presigned http(s) URLs of the object store, on any host
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data: http: https:; script-src 'self'; "
     b"style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
]


class RequestContext:
    """Pure ASGI middleware: a request id and W3C trace context (logs; x-request-id and traceparent
    to the gateway), a body-size cap, security headers on every response, and metrics."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = REQUEST_ID_JUNK.sub("", headers.get(b"x-request-id", b"").decode("latin-1"))[:64] or uuid.uuid4().hex[:16]
        token = request_id_var.set(rid)
        trace_token = trace_var.set(continue_trace(headers.get(b"traceparent", b"").decode("latin-1")))
        length = headers.get(b"content-length")
        started = time.perf_counter()
        status = 500
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413, f"request body is over the limit of {self.max_body_bytes} bytes")
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode()), *SECURITY_HEADERS]}
            await send(message)

        try:
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                response = error_response(413, "RESOURCE_EXHAUSTED", f"request body of {int(length)} bytes is over the limit of {self.max_body_bytes}")
                await response(scope, receive, send_with_headers)
                return
            await self.app(scope, capped_receive, send_with_headers)
        finally:
            # routing stored the endpoint in the scope: a bounded label, unlike the path
            endpoint = scope.get("endpoint")
            label = getattr(endpoint, "__name__", type(endpoint).__name__) if endpoint is not None else "none"
            HTTP_TOTAL.labels(scope["method"], label, str(status)).inc()
            HTTP_SECONDS.labels(scope["method"], label).observe(time.perf_counter() - started)
            trace_var.reset(trace_token)
            request_id_var.reset(token)


# ---- helpers ----------------------------------------------------------------------------------------

def gateway(request: Request) -> GatewayClient:
    return request.app.state.gateway


def call_metadata(request: Request) -> tuple[tuple[str, str], ...]:
    return tuple((h, request.headers[h]) for h in FORWARDED_HEADERS if h in request.headers)


def ns_name(request: Request) -> str:
    return f"namespaces/{request.path_params['ns']}"


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def form_text(form: Any, key: str, limit: int = 4096) -> str:
    value = form.get(key)
    if value is None or isinstance(value, UploadFile):
        return ""
    value = value.strip()
    if len(value) > limit:
        raise InvalidArgument(f"{key} is longer than {limit} characters")
    return value


def json_object(text: str, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return value


# ---- handlers ---------------------------------------------------------------------------------------

async def index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "serving"})


async def readyz(request: Request) -> Response:
    stub = health_pb2_grpc.HealthStub(gateway(request).channel)
    try:
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    except grpc.RpcError as exc:
        return error_response(503, "UNAVAILABLE", f"gateway {gateway(request).address}: {exc.code().name}")
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    return JSONResponse({"gateway": health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}, status_code=200 if serving else 503)


async def list_namespaces(request: Request) -> Response:
    response = await gateway(request).namespaces.ListNamespaces(namespace_pb.ListNamespacesRequest(), metadata=call_metadata(request))
    return JSONResponse({"namespaces": [
        {"id": n.name.rsplit("/", 1)[-1], "name": n.name, "display_name": n.display_name} for n in response.namespaces
    ]})


async def list_collections(request: Request) -> Response:
    gw, md = gateway(request), call_metadata(request)
    listed = await gw.collections.ListCollections(collection_pb.ListCollectionsRequest(parent=ns_name(request)), metadata=md)
    # image_count is filled by Get only
    full = await asyncio.gather(*(gw.collections.GetCollection(collection_pb.GetCollectionRequest(name=c.name), metadata=md) for c in listed.collections))
    return JSONResponse({"collections": [collection_json(r.collection) for r in full]})


async def list_retrievers(request: Request) -> Response:
    response = await gateway(request).retrievers.ListRetrievers(retriever_pb.ListRetrieversRequest(parent=ns_name(request)), metadata=call_metadata(request))
    return JSONResponse({"retrievers": [retriever_json(r) for r in response.retrievers]})


async def list_buckets(request: Request) -> Response:
    response = await gateway(request).buckets.ListBuckets(bucket_pb.ListBucketsRequest(parent=ns_name(request)), metadata=call_metadata(request))
    return JSONResponse({"buckets": [bucket_json(b) for b in response.buckets]})


async def create_bucket(request: Request) -> Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument("the body must be a JSON object {bucket_id, collection}") from exc
    if not isinstance(body, dict) or not body.get("bucket_id") or not body.get("collection"):
        raise InvalidArgument("give bucket_id and collection")
    parent = ns_name(request)
    response = await gateway(request).buckets.CreateBucket(
        bucket_pb.CreateBucketRequest(
            parent=parent, bucket_id=str(body["bucket_id"]),
            bucket=bucket_pb.Bucket(collection=f"{parent}/collections/{body['collection']}", auto_process=True),
        ),
        metadata=call_metadata(request),
    )
    return JSONResponse(bucket_json(response.bucket), status_code=201)


async def default_retriever(request: Request, collection_id: str) -> str:
    """The CLI's default retriever for a collection (feature_search 50 → rerank 10), created if missing."""
    parent = ns_name(request)
    retriever_id = f"{collection_id}-search-rerank"
    stages = [
        retriever_pb.Stage(feature_search=retriever_pb.FeatureSearchStage(collection=f"{parent}/collections/{collection_id}", limit=50)),
        retriever_pb.Stage(rerank=retriever_pb.RerankStage(limit=DEFAULT_RERANK_LIMIT)),
    ]
    try:
        await gateway(request).retrievers.CreateRetriever(
            retriever_pb.CreateRetrieverRequest(parent=parent, retriever_id=retriever_id, retriever=retriever_pb.Retriever(stages=stages)),
            metadata=call_metadata(request),
        )
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
            raise
    return f"{parent}/retrievers/{retriever_id}"


async def search(request: Request) -> Response:
    async with request.form(max_files=1, max_fields=20) as form:
        retriever_id, collection_id = form_text(form, "retriever", 100), form_text(form, "collection", 100)
        query = retriever_pb.Query(image_url=form_text(form, "image_url"), text=form_text(form, "text"))
        image = form.get("image")
        if isinstance(image, UploadFile):
            query.image = await image.read()
            if not query.image:
                raise InvalidArgument(f"{image.filename or 'the image'} is empty")
        filter_text, limit_text = form_text(form, "filter"), form_text(form, "limit", 10)
    if not (query.image or query.image_url or query.text):
        raise InvalidArgument("give an image, an image URL or text to search for")
    if not limit_text.isdigit() and limit_text:
        raise InvalidArgument("limit must be a whole number")
    request_pb = retriever_pb.ExecuteRetrieverRequest(query=query, limit=int(limit_text or 0))
    if filter_text:
        request_pb.filter.CopyFrom(parse_filter_text(filter_text))
    if retriever_id:
        request_pb.name = f"{ns_name(request)}/retrievers/{retriever_id}"
    elif collection_id:
        request_pb.name = await default_retriever(request, collection_id)
    else:
        raise InvalidArgument("choose a retriever or a collection")
    started = time.perf_counter()
    response = await gateway(request).retrievers.ExecuteRetriever(request_pb, timeout=SEARCH_TIMEOUT_S, metadata=call_metadata(request))
    return JSONResponse({
        "retriever": request_pb.name,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        "documents": [document_json(d) for d in response.documents],
        "stage_timings": [{"stage": t.stage, "milliseconds": round(t.milliseconds, 1), "output_count": t.output_count} for t in response.stage_timings],
    })


async def duplicates(request: Request) -> Response:
    distance = request.query_params.get("max_hamming_distance", "")
    if distance and not distance.isdigit():
        raise InvalidArgument("max_hamming_distance must be a whole number")
    name = f"{ns_name(request)}/collections/{request.path_params['collection']}"
    response = await gateway(request).collections.GetDuplicateReport(
        collection_pb.GetDuplicateReportRequest(name=name, max_hamming_distance=int(distance or 0)),
        timeout=SEARCH_TIMEOUT_S, metadata=call_metadata(request),
    )
    return JSONResponse({
        "image_count": response.image_count,
        "groups": [
            {"objects": list(g.objects), "filenames": list(g.filenames), "max_distance": g.max_distance} for g in response.groups
        ],
    })


def folder_of(filename: str) -> str:
    parent = PurePosixPath(filename).parent.as_posix()
    return "" if parent in (".", "/") else parent.lstrip("/")


async def upload(request: Request) -> Response:
    """One UploadObjects stream for the files of this request. A folder's `<image>.json` sidecars and
    its sub-folders become metadata, as in `lookalike index`."""
    bucket = f"{ns_name(request)}/buckets/{request.path_params['bucket']}"
    async with request.form(max_files=MAX_UPLOAD_FILES, max_fields=20) as form:
        common = json_object(form_text(form, "metadata", 16384), "metadata")
        files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        sidecars: dict[str, dict[str, Any]] = {}
        images: list[UploadFile] = []
        for f in files:
            name = f.filename or ""
            if name.lower().endswith(".json"):
                sidecars[name[: -len(".json")]] = json_object((await f.read()).decode("utf-8", "replace"), name)
            else:
                images.append(f)
        if not images:
            raise InvalidArgument("the upload holds no images")

        async def messages() -> AsyncIterator[bucket_pb.UploadObjectsRequest]:
            for i, f in enumerate(images):
                filename = f.filename or f"upload-{i}"
                meta: dict[str, Any] = {}
                if folder := folder_of(filename):
                    meta["folder"] = folder
                meta.update(sidecars.get(filename, {}))
                meta.update(common)
                yield bucket_pb.UploadObjectsRequest(
                    parent=bucket if i == 0 else "", filename=filename, content=await f.read(), metadata=struct(meta)
                )

        response = await gateway(request).buckets.UploadObjects(messages(), timeout=UPLOAD_TIMEOUT_S, metadata=call_metadata(request))
    return JSONResponse({
        "job": response.job, "job_id": response.job.rsplit("/", 1)[-1],
        "accepted_count": response.accepted_count, "rejected_count": response.rejected_count,
        "results": [upload_result_json(r) for r in response.results],
    })


async def get_job(request: Request) -> Response:
    name = f"{ns_name(request)}/jobs/{request.path_params['job']}"
    response = await gateway(request).buckets.GetJob(bucket_pb.GetJobRequest(name=name), metadata=call_metadata(request))
    return JSONResponse(job_json(response.job))


async def api_not_found(request: Request) -> Response:
    return error_response(404, "NOT_FOUND", f"no such API: {request.method} {request.url.path}")


def create_app(settings: WebSettings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.gateway = GatewayClient(settings)
        log.info("web: calling the gateway at %s", settings.gateway_addr)
        try:
            yield
        finally:
            await app.state.gateway.close()

    api = [
        Route("/namespaces", list_namespaces),
        Route("/namespaces/{ns}/collections", list_collections),
        Route("/namespaces/{ns}/retrievers", list_retrievers),
        Route("/namespaces/{ns}/buckets", list_buckets),
        Route("/namespaces/{ns}/buckets", create_bucket, methods=["POST"]),
        Route("/namespaces/{ns}/search", search, methods=["POST"]),
        Route("/namespaces/{ns}/collections/{collection}/duplicates", duplicates),
        Route("/namespaces/{ns}/buckets/{bucket}/objects", upload, methods=["POST"]),
        Route("/namespaces/{ns}/jobs/{job}", get_job),
        Route("/{rest:path}", api_not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Mount("/api", routes=api),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={grpc.RpcError: rpc_error, LookalikeError: domain_error, HTTPException: http_error},
    )
    app.add_middleware(RequestContext, max_body_bytes=settings.web_max_body_bytes)
    return app


def main() -> None:
    settings = WebSettings()
    configure_logging("web", settings.log_level, settings.log_format)
    bind = settings.listen_address(settings.web_addr)
    host, _, port = bind.rpartition(":")
    config = uvicorn.Config(
        create_app(settings), host=host.strip("[]") or "0.0.0.0", port=int(port), log_config=None,
        access_log=settings.log_level.upper() == "DEBUG", server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=host.strip("[]") or "0.0.0.0")
    log.info("web serving on http://%s", bind)
    uvicorn.Server(config).run()
