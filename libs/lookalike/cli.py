"""`lookalike` — the command-line client of the gateway (gRPC)."""

from __future__ import annotations

import json
import sys
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import grpc
import typer
from google.protobuf import struct_pb2
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from lookalike import metadata as metadata_fields
from lookalike.errors import InvalidArgument
from lookalike.filters import parse_filter_text
from lookalike.v1 import (
    bucket_service_pb2,
    bucket_service_pb2_grpc,
    collection_service_pb2,
    collection_service_pb2_grpc,
    namespace_service_pb2,
    namespace_service_pb2_grpc,
    retriever_service_pb2,
    retriever_service_pb2_grpc,
    types_pb2,
)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

app = typer.Typer(help="lookalike: self-hosted reverse image search", no_args_is_help=True, pretty_exceptions_enable=False)
namespaces_app = typer.Typer(help="Namespaces (tenants)", no_args_is_help=True)
collections_app = typer.Typer(help="Collections (extractors + index)", no_args_is_help=True)
retrievers_app = typer.Typer(help="Retrievers (stage pipelines)", no_args_is_help=True)
app.add_typer(namespaces_app, name="namespaces")
app.add_typer(collections_app, name="collections")
app.add_typer(retrievers_app, name="retrievers")
console = Console(width=None if sys.stdout.isatty() else 150)


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    def __init__(self, key: str) -> None:
        self.metadata = ("authorization", f"Bearer {key}")

    def _with_key(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or []), self.metadata])

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._with_key(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._with_key(client_call_details), request_iterator)


class Gateway:
    """Stubs of the public services on one channel."""

    def __init__(self, address: str, timeout: float = 60.0, api_key: str | None = None, ca_file: str | None = None) -> None:
        options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        # TLS when the gateway serves it (LOOKALIKE_GATEWAY_CA_FILE: the CA that signed its certificate)
        ca_file = ca_file if ca_file is not None else os.environ.get("LOOKALIKE_GATEWAY_CA_FILE")
        if ca_file:
            credentials = grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes())
            self.channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        # API key (LOOKALIKE_API_KEY) sent with every call when the gateway requires one
        api_key = api_key if api_key is not None else os.environ.get("LOOKALIKE_API_KEY")
        if api_key:
            self.channel = grpc.intercept_channel(self.channel, _BearerToken(api_key))
        self.timeout = timeout
        self.namespaces = namespace_service_pb2_grpc.NamespaceServiceStub(self.channel)
        self.collections = collection_service_pb2_grpc.CollectionServiceStub(self.channel)
        self.buckets = bucket_service_pb2_grpc.BucketServiceStub(self.channel)
        self.retrievers = retriever_service_pb2_grpc.RetrieverServiceStub(self.channel)

    def ensure(self, create: Any, request: Any) -> None:
        """Create, tolerating ALREADY_EXISTS (for idempotent scripts)."""
        try:
            create(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise


GatewayOpt = Annotated[str, typer.Option("--gateway", envvar="LOOKALIKE_GATEWAY_ADDR", help="gateway host:port")]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", envvar="LOOKALIKE_NAMESPACE")]


def _fail(exc: grpc.RpcError) -> None:
    console.print(f"[red]error[/red] {exc.code().name}: {exc.details()}")
    raise typer.Exit(2)


def metadata_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def parse_key_values(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise typer.BadParameter(f"expected key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def find_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def image_metadata(path: Path, root: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """folder (relative sub-folder), the fields of a `<image>.json` sidecar, then --meta values."""
    meta: dict[str, Any] = {}
    rel_parent = path.parent.relative_to(root).as_posix()
    if rel_parent != ".":
        meta["folder"] = rel_parent
    sidecar = path.with_name(path.name + ".json")
    if sidecar.exists():
        meta.update(json.loads(sidecar.read_text()))
    meta.update(extra)
    return meta


def ensure_collection(gw: Gateway, namespace: str, collection: str, extractors: list[str], index: str,
                      fields: list[types_pb2.MetadataField] | None = None) -> None:
    gw.ensure(gw.namespaces.CreateNamespace, namespace_service_pb2.CreateNamespaceRequest(namespace_id=namespace))
    gw.ensure(
        gw.collections.CreateCollection,
        collection_service_pb2.CreateCollectionRequest(
            parent=f"namespaces/{namespace}", collection_id=collection, feature_extractors=extractors,
            index=types_pb2.IndexSpec(type=INDEX_TYPES[index]), metadata_fields=fields or [],
        ),
    )


FieldOpt = Annotated[list[str], typer.Option(
    "--field", help="a declared metadata field NAME:TYPE (string, int64, double, bool), required on every image and "
                    "filtered on a typed column; repeatable")]


def parse_filter_option(text: str) -> types_pb2.Filter:
    try:
        return parse_filter_text(text)
    except InvalidArgument as exc:
        raise typer.BadParameter(exc.message, param_hint="--filter") from None


def parse_fields(declarations: list[str]) -> list[types_pb2.MetadataField]:
    try:
        return [metadata_fields.parse_declaration(d) for d in declarations]
    except InvalidArgument as exc:
        raise typer.BadParameter(exc.message, param_hint="--field") from None


INDEX_TYPES = {"hnsw": types_pb2.INDEX_TYPE_HNSW, "ivf-pq": types_pb2.INDEX_TYPE_IVF_PQ, "flat": types_pb2.INDEX_TYPE_FLAT}


def index_folder(
    gw: Gateway, folder: Path, namespace: str, collection: str, bucket: str | None = None,
    extra: dict[str, Any] | None = None, wait: bool = True, show: Console | None = console,
) -> types_pb2.Job | bucket_service_pb2.UploadObjectsResponse:
    """Uploads every image under folder into a bucket feeding the collection; with wait, follows the
    job until every image is indexed or failed. Returns the final job."""
    bucket = bucket or collection
    gw.ensure(
        gw.buckets.CreateBucket,
        bucket_service_pb2.CreateBucketRequest(
            parent=f"namespaces/{namespace}", bucket_id=bucket,
            bucket=bucket_service_pb2.Bucket(collection=f"namespaces/{namespace}/collections/{collection}", auto_process=True),
        ),
    )
    files = find_images(folder)
    if not files:
        raise typer.BadParameter(f"no images under {folder}")
    progress = job_progress(show)
    with progress:
        upload_task = progress.add_task("uploading", total=len(files), counts="", rate="")

        def requests() -> Iterator[bucket_service_pb2.UploadObjectsRequest]:
            for i, path in enumerate(files):
                yield bucket_service_pb2.UploadObjectsRequest(
                    parent=f"namespaces/{namespace}/buckets/{bucket}" if i == 0 else "",
                    filename=path.relative_to(folder).as_posix(),
                    content=path.read_bytes(),
                    metadata=metadata_struct(image_metadata(path, folder, extra or {})),
                )
                progress.advance(upload_task)

        response = gw.buckets.UploadObjects(requests(), timeout=3600)
        for result in response.results:
            if result.error and show is not None:
                show.print(f"[yellow]rejected[/yellow] {result.filename}: {result.error}")
        if not wait:
            return response
        job = follow_job(gw, response.job, progress, expected=response.accepted_count)
    if show is not None:
        for failure in job.failures:
            show.print(f"[red]failed[/red] {failure.filename}: {failure.reason}")
        show.print(f"indexed {job.indexed}, failed {job.failed}, rejected {response.rejected_count} (job {job.name})")
    return job


def job_progress(show: Console | None = console) -> Progress:
    """Bars for upload and indexing: done/total, rate, elapsed and remaining time, and the counts."""
    return Progress(
        TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
        TextColumn("[dim]{task.fields[rate]}[/dim]"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=show, disable=show is None,
    )


def follow_job(
    gw: Gateway, job_name: str, progress: Progress, expected: int = 0, interval: float = 0.3, timeout: float | None = None,
) -> types_pb2.Job:
    """Polls GetJob until the job is done, advancing an "indexing" bar: indexed + failed of queued.
    A gateway that is briefly unreachable (a restart) only pauses the bar."""
    task = progress.add_task("indexing", total=expected or None, counts="", rate="")
    started = time.monotonic()
    job: types_pb2.Job | None = None
    while True:
        try:
            job = gw.buckets.GetJob(bucket_service_pb2.GetJobRequest(name=job_name), timeout=gw.timeout).job
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL):
                raise
        if job is not None:
            finished = job.indexed + job.failed
            elapsed = max(time.monotonic() - started, 1e-6)
            progress.update(
                task, total=max(job.queued, finished) or expected or None, completed=finished,
                counts=f"[green]{job.indexed} indexed[/green]" + (f" [red]{job.failed} failed[/red]" if job.failed else ""),
                rate=f"{job.indexed / elapsed:.1f} img/s",
            )
            if job.done:
                return job
        if timeout is not None and time.monotonic() - started > timeout:
            raise TimeoutError(f"job {job_name} not done after {timeout:.0f}s")
        time.sleep(interval)


@app.command("index")
def index_cmd(
    folder: Path,
    collection: Annotated[str, typer.Option("--collection", "-c")] = "images",
    namespace: NamespaceOpt = "default",
    bucket: Annotated[Optional[str], typer.Option(help="defaults to the collection's name")] = None,
    meta: Annotated[list[str], typer.Option("--meta", help="key=value added to every image")] = [],
    extractor: Annotated[list[str], typer.Option("--extractor", "-e")] = [],
    index: Annotated[str, typer.Option(help="hnsw | ivf-pq | flat (new collections)")] = "hnsw",
    field: FieldOpt = [],
    gateway: GatewayOpt = "127.0.0.1:50051",
) -> None:
    """Index a folder of images (created: namespace, collection, bucket with auto_process)."""
    gw = Gateway(gateway)
    fields = parse_fields(field)
    try:
        ensure_collection(gw, namespace, collection, extractor or ["effnet-lite0", "phash"], index, fields)
        index_folder(gw, folder, namespace, collection, bucket, parse_key_values(meta))
    except grpc.RpcError as exc:
        _fail(exc)


def default_retriever(gw: Gateway, namespace: str, collection: str, limit: int, rerank: bool) -> str:
    retriever_id = f"{collection}-search" + ("-rerank" if rerank else "")
    stages = [retriever_service_pb2.Stage(feature_search=retriever_service_pb2.FeatureSearchStage(
        collection=f"namespaces/{namespace}/collections/{collection}", limit=max(limit, 50 if rerank else limit)))]
    if rerank:
        stages.append(retriever_service_pb2.Stage(rerank=retriever_service_pb2.RerankStage(limit=limit)))
    gw.ensure(
        gw.retrievers.CreateRetriever,
        retriever_service_pb2.CreateRetrieverRequest(
            parent=f"namespaces/{namespace}", retriever_id=retriever_id, retriever=retriever_service_pb2.Retriever(stages=stages)
        ),
    )
    return f"namespaces/{namespace}/retrievers/{retriever_id}"


def results_table(response: retriever_service_pb2.ExecuteRetrieverResponse, title: str = "") -> Table:
    table = Table(title=title)
    for column in ("#", "score", "filename", "box", "metadata", "preview"):
        table.add_column(column, overflow="fold" if column == "preview" else None)
    for rank, doc in enumerate(response.documents, start=1):
        box = f"{doc.box.x_min:.2f},{doc.box.y_min:.2f}-{doc.box.x_max:.2f},{doc.box.y_max:.2f}" if doc.HasField("box") else ""
        meta = json.dumps(dict(doc.metadata.items()), default=str) if doc.metadata.fields else ""
        table.add_row(str(rank), f"{doc.score:.3f}", doc.filename, box, meta, doc.preview_url[:60] + "…")
    return table


@app.command("search")
def search_cmd(
    query: Annotated[Optional[str], typer.Argument(help="image file or http(s) URL")] = None,
    text: Annotated[Optional[str], typer.Option(help="text query")] = None,
    collection: Annotated[str, typer.Option("--collection", "-c")] = "images",
    retriever: Annotated[Optional[str], typer.Option(help="retriever id (default: feature_search on the collection)")] = None,
    limit: Annotated[int, typer.Option("--limit", "-k")] = 10,
    rerank: Annotated[bool, typer.Option(help="verify geometry and box the matching region")] = False,
    filter_text: Annotated[Optional[str], typer.Option("--filter", "-f", help='e.g. "category == shoes"')] = None,
    namespace: NamespaceOpt = "default",
    gateway: GatewayOpt = "127.0.0.1:50051",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Search with an image (file or URL) and/or text; prints the ranked matches."""
    gw = Gateway(gateway)
    request = retriever_service_pb2.ExecuteRetrieverRequest(limit=limit)
    if query and query.startswith(("http://", "https://")):
        request.query.image_url = query
    elif query:
        request.query.image = Path(query).read_bytes()
    if text:
        request.query.text = text
    if filter_text:
        request.filter.CopyFrom(parse_filter_option(filter_text))
    try:
        request.name = (
            f"namespaces/{namespace}/retrievers/{retriever}" if retriever else default_retriever(gw, namespace, collection, limit, rerank)
        )
        response = gw.retrievers.ExecuteRetriever(request, timeout=gw.timeout)
    except grpc.RpcError as exc:
        _fail(exc)
    if as_json:
        from google.protobuf import json_format

        console.print_json(json_format.MessageToJson(response))
        return
    console.print(results_table(response, title=f"matches for {query or text}"))
    timings = ", ".join(f"{t.stage} {t.milliseconds:.0f} ms" for t in response.stage_timings)
    console.print(f"[dim]{timings}[/dim]")


@namespaces_app.command("create")
def namespaces_create(namespace_id: str, gateway: GatewayOpt = "127.0.0.1:50051") -> None:
    try:
        ns = Gateway(gateway).namespaces.CreateNamespace(namespace_service_pb2.CreateNamespaceRequest(namespace_id=namespace_id), timeout=30)
        console.print(f"created {ns.namespace.name}")
    except grpc.RpcError as exc:
        _fail(exc)


@namespaces_app.command("list")
def namespaces_list(gateway: GatewayOpt = "127.0.0.1:50051") -> None:
    try:
        for ns in Gateway(gateway).namespaces.ListNamespaces(namespace_service_pb2.ListNamespacesRequest(), timeout=30).namespaces:
            console.print(ns.name)
    except grpc.RpcError as exc:
        _fail(exc)


@collections_app.command("create")
def collections_create(
    collection_id: str,
    namespace: NamespaceOpt = "default",
    extractor: Annotated[list[str], typer.Option("--extractor", "-e")] = [],
    index: Annotated[str, typer.Option(help="hnsw | ivf-pq | flat")] = "hnsw",
    m: Annotated[Optional[int], typer.Option("--m", help="HNSW graph degree (4-64, default 16)")] = None,
    ef_construction: Annotated[Optional[int], typer.Option("--ef-construction", help="HNSW build candidate list (8-512, default 200)")] = None,
    ef: Annotated[Optional[int], typer.Option("--ef", help="HNSW query candidate list (default 128; raised to the limit)")] = None,
    nlist: Annotated[Optional[int], typer.Option("--nlist", help="IVF-PQ inverted lists (default 1024)")] = None,
    pq_m: Annotated[Optional[int], typer.Option("--pq-m", help="IVF-PQ sub-quantizers, must divide the dimension (default dimension/8)")] = None,
    nbits: Annotated[Optional[int], typer.Option("--nbits", help="IVF-PQ bits per sub-quantizer code (1-16, default 8)")] = None,
    nprobe: Annotated[Optional[int], typer.Option("--nprobe", help="IVF-PQ lists probed per query (default 16)")] = None,
    field: FieldOpt = [],
    gateway: GatewayOpt = "127.0.0.1:50051",
) -> None:
    """Create a collection: its extractors, its vector index (type and parameters) and declared metadata fields."""
    fields = parse_fields(field)
    if index not in INDEX_TYPES:
        raise typer.BadParameter(f"index must be one of {', '.join(INDEX_TYPES)}")
    spec = types_pb2.IndexSpec(type=INDEX_TYPES[index])
    options = [("--m", spec.hnsw, "m", m), ("--ef-construction", spec.hnsw, "ef_construction", ef_construction),
               ("--ef", spec.hnsw, "ef", ef), ("--nlist", spec.ivf_pq, "nlist", nlist), ("--pq-m", spec.ivf_pq, "m", pq_m),
               ("--nbits", spec.ivf_pq, "nbits", nbits), ("--nprobe", spec.ivf_pq, "nprobe", nprobe)]
    for option, params, field, value in options:
        if value is not None:
            if value <= 0:
                raise typer.BadParameter(f"{option} must be positive")
            setattr(params, field, value)  # the search service checks ranges and that they fit the index type
    try:
        response = Gateway(gateway).collections.CreateCollection(
            collection_service_pb2.CreateCollectionRequest(
                parent=f"namespaces/{namespace}", collection_id=collection_id, feature_extractors=extractor,
                index=spec, metadata_fields=fields,
            ),
            timeout=60,
        )
        extractors = ", ".join(f"{e.name} ({e.dimension}-d)" for e in response.collection.feature_extractors)
        declared = metadata_fields.describe(metadata_fields.declared(response.collection.metadata_fields))
        console.print(f"created {response.collection.name}: {extractors}" + (f"; fields {declared}" if declared else ""))
    except grpc.RpcError as exc:
        _fail(exc)


@collections_app.command("list")
def collections_list(namespace: NamespaceOpt = "default", gateway: GatewayOpt = "127.0.0.1:50051") -> None:
    gw = Gateway(gateway)
    try:
        table = Table("collection", "extractors", "index", "fields", "images")
        for c in gw.collections.ListCollections(collection_service_pb2.ListCollectionsRequest(parent=f"namespaces/{namespace}"), timeout=30).collections:
            count = gw.collections.GetCollection(collection_service_pb2.GetCollectionRequest(name=c.name), timeout=30).collection.image_count
            table.add_row(c.name, ", ".join(e.name for e in c.feature_extractors), types_pb2.IndexType.Name(c.index.type),
                          metadata_fields.describe(metadata_fields.declared(c.metadata_fields)), str(count))
        console.print(table)
    except grpc.RpcError as exc:
        _fail(exc)


@retrievers_app.command("create")
def retrievers_create(
    retriever_id: str,
    collection: Annotated[str, typer.Option("--collection", "-c")] = "images",
    search: Annotated[list[str], typer.Option(
        "--search", "-s", help="a feature_search stage: EXTRACTOR[:LIMIT[:image|text]], repeatable (default effnet-lite0:50)")] = [],
    fuse: Annotated[int, typer.Option(help="fuse the searches with reciprocal rank fusion, this k (default 60 when several)")] = 0,
    weight: Annotated[list[float], typer.Option("--weight", "-w", help="fusion weight of each search, in order (default 1 each)")] = [],
    filter_text: Annotated[Optional[str], typer.Option("--filter", "-f", help="a filter stage")] = None,
    dedup: Annotated[int, typer.Option(help="a dedup stage with this pHash distance (0: none)")] = 0,
    collapse: Annotated[bool, typer.Option(help="dedup collapses near-duplicates instead of marking them")] = False,
    rerank: Annotated[int, typer.Option(help="a rerank stage with this limit (0: none)")] = 0,
    ef: Annotated[int, typer.Option("--ef", help="HNSW query candidate list of the searches (0: the collection's)")] = 0,
    nprobe: Annotated[int, typer.Option("--nprobe", help="IVF-PQ lists probed by the searches (0: the collection's)")] = 0,
    namespace: NamespaceOpt = "default",
    gateway: GatewayOpt = "127.0.0.1:50051",
) -> None:
    """Create a retriever: searches → [fuse] → [filter] → [dedup] → [rerank].

    e.g. the two-stage visual search:  -s effnet-lite0:50 --rerank 12
    and a hybrid text + image search:  -s effnet-lite0:50:image -s concepts:50:text --rerank 12
    """
    inputs = {"image": retriever_service_pb2.QUERY_INPUT_IMAGE, "text": retriever_service_pb2.QUERY_INPUT_TEXT, "auto": retriever_service_pb2.QUERY_INPUT_AUTO}
    stages = []
    for spec in search or ["effnet-lite0:50"]:
        extractor, limit, source = (spec.split(":") + ["", ""])[:3]
        if source and source not in inputs:
            raise typer.BadParameter(f"--search {spec!r}: input must be image, text or auto")
        stages.append(retriever_service_pb2.Stage(feature_search=retriever_service_pb2.FeatureSearchStage(
            collection=f"namespaces/{namespace}/collections/{collection}", feature_extractor=extractor,
            limit=int(limit or 50), input=inputs[source or "auto"],
            search_params=types_pb2.IndexSpec(hnsw=types_pb2.HnswParams(ef=ef), ivf_pq=types_pb2.IvfPqParams(nprobe=nprobe)))))
    if fuse or len(stages) > 1:
        stages.append(retriever_service_pb2.Stage(fuse=retriever_service_pb2.FuseStage(k=fuse or 60, weights=weight)))
    if filter_text:
        stages.append(retriever_service_pb2.Stage(filter=retriever_service_pb2.FilterStage(filter=parse_filter_option(filter_text))))
    if dedup:
        stages.append(retriever_service_pb2.Stage(dedup=retriever_service_pb2.DedupStage(max_hamming_distance=dedup, collapse=collapse)))
    if rerank:
        stages.append(retriever_service_pb2.Stage(rerank=retriever_service_pb2.RerankStage(limit=rerank)))
    try:
        response = Gateway(gateway).retrievers.CreateRetriever(
            retriever_service_pb2.CreateRetrieverRequest(
                parent=f"namespaces/{namespace}", retriever_id=retriever_id, retriever=retriever_service_pb2.Retriever(stages=stages)
            ),
            timeout=30,
        )
        kinds = " → ".join(st.WhichOneof("kind") for st in response.retriever.stages)
        console.print(f"created {response.retriever.name}: {kinds}")
    except grpc.RpcError as exc:
        _fail(exc)


@app.command("duplicates")
def duplicates_cmd(
    collection: Annotated[str, typer.Option("--collection", "-c")] = "images",
    distance: Annotated[int, typer.Option(help="max pHash Hamming distance (of 64 bits)")] = 6,
    namespace: NamespaceOpt = "default",
    gateway: GatewayOpt = "127.0.0.1:50051",
) -> None:
    """Groups of near-duplicate images in a collection (copy detection)."""
    try:
        report = Gateway(gateway).collections.GetDuplicateReport(
            collection_service_pb2.GetDuplicateReportRequest(
                name=f"namespaces/{namespace}/collections/{collection}", max_hamming_distance=distance
            ),
            timeout=300,
        )
    except grpc.RpcError as exc:
        _fail(exc)
    table = Table("group", "images", "max distance", "files")
    for i, group in enumerate(report.groups, start=1):
        table.add_row(str(i), str(len(group.objects)), str(group.max_distance), "\n".join(group.filenames))
    console.print(table)
    duplicates = sum(len(g.objects) - 1 for g in report.groups)
    console.print(f"{len(report.groups)} groups, {duplicates} near-duplicates among {report.image_count} images")


# ---- buckets and jobs (ingest)

buckets_app = typer.Typer(help="Buckets: uploads, S3 sources and their sync, objects", no_args_is_help=True)
app.add_typer(buckets_app, name="buckets")


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix → (bucket, "some/prefix")"""
    if not url.startswith("s3://") or len(url) <= 5:
        raise typer.BadParameter(f"expected s3://BUCKET[/PREFIX], got {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix


def print_job(job: types_pb2.Job, show: Console = console) -> None:
    state = types_pb2.Job.State.Name(job.state).removeprefix("STATE_").lower()
    show.print(f"{job.name}: {state}; queued {job.queued}, indexed {job.indexed}, failed {job.failed}")
    for failure in job.failures:
        show.print(f"  [red]failed[/red] {failure.filename or failure.content_id}: {failure.reason}")


@buckets_app.command("create")
def buckets_create(
    bucket_id: str,
    collection: Annotated[str, typer.Option("--collection", "-c", help="the collection it feeds")] = "images",
    source: Annotated[Optional[str], typer.Option(help="an S3 bucket to sync from: s3://BUCKET[/PREFIX]")] = None,
    endpoint: Annotated[Optional[str], typer.Option(help="the source's host:port")] = None,
    access_key: Annotated[Optional[str], typer.Option(envvar="LOOKALIKE_SOURCE_ACCESS_KEY")] = None,
    secret_key: Annotated[Optional[str], typer.Option(
        envvar="LOOKALIKE_SOURCE_SECRET_KEY", help="prompted for when an access key is given (stored write-only)")] = None,
    secure: Annotated[bool, typer.Option("--secure/--insecure", help="HTTPS to the source")] = True,
    region: Annotated[str, typer.Option()] = "",
    auto_process: Annotated[bool, typer.Option("--auto-process/--no-auto-process", help="index what is stored")] = True,
    namespace: NamespaceOpt = "default",
    gateway: GatewayOpt = "127.0.0.1:50051",
) -> None:
    """Create a bucket feeding a collection; with --source, one that `buckets sync` fills from S3."""
    bucket = bucket_service_pb2.Bucket(collection=f"namespaces/{namespace}/collections/{collection}", auto_process=auto_process)
    if source:
        if not endpoint:
            raise typer.BadParameter("--source needs --endpoint host:port")
        if access_key and secret_key is None:
            secret_key = typer.prompt("secret key", hide_input=True)
        src_bucket, prefix = parse_s3_url(source)
        bucket.source.CopyFrom(bucket_service_pb2.S3Source(
            endpoint=endpoint, bucket=src_bucket, prefix=prefix, access_key=access_key or "", secret_key=secret_key or "",
            secure=secure, region=region,
        ))
    elif endpoint or access_key:
        raise typer.BadParameter("--endpoint and --access-key go with --source")
    try:
        created = Gateway(gateway).buckets.CreateBucket(
            bucket_service_pb2.CreateBucketRequest(parent=f"namespaces/{namespace}", bucket_id=bucket_id, bucket=bucket), timeout=30
        ).bucket
    except grpc.RpcError as exc:
        _fail(exc)
    where = f" from s3://{created.source.bucket}/{created.source.prefix} at {created.source.endpoint}" if created.HasField("source") else ""
    console.print(f"created {created.name} → {created.collection}{where}")


@buckets_app.command("list")
def buckets_list(namespace: NamespaceOpt = "default", gateway: GatewayOpt = "127.0.0.1:50051") -> None:
    try:
        buckets = Gateway(gateway).buckets.ListBuckets(bucket_service_pb2.ListBucketsRequest(parent=f"namespaces/{namespace}"), timeout=30).buckets
    except grpc.RpcError as exc:
        _fail(exc)
    table = Table("bucket", "collection", "auto_process", "source")
    for b in buckets:
        source = f"{b.source.endpoint}/{b.source.bucket}/{b.source.prefix}" if b.HasField("source") else ""
        table.add_row(b.name, b.collection, str(b.auto_process).lower(), source)
    console.print(table)


@buckets_app.command("sync")
def buckets_sync(
    bucket_id: str,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow indexing with a progress bar")] = True,
    namespace: NamespaceOpt = "default",
    gateway: GatewayOpt = "127.0.0.1:50051",
) -> None:
    """Sync a bucket from its S3 source: new and changed objects are indexed, deleted ones removed."""
    gw = Gateway(gateway)
    try:
        with console.status(f"listing and copying the source of {bucket_id} …"):
            response = gw.buckets.SyncBucket(
                bucket_service_pb2.SyncBucketRequest(name=f"namespaces/{namespace}/buckets/{bucket_id}"), timeout=24 * 3600
            )
        console.print(f"listed {response.listed_count}, enqueued {response.enqueued_count} new or changed (job {response.job})")
        if not wait:
            return
        with job_progress() as progress:
            job = follow_job(gw, response.job, progress, expected=response.enqueued_count)
    except grpc.RpcError as exc:
        _fail(exc)
    print_job(job)
    if job.failed:
        raise typer.Exit(1)


@buckets_app.command("delete-object")
def buckets_delete_object(
    bucket_id: str,
    content_id: Annotated[str, typer.Argument(help="the object's SHA-256 (its id in search results)")],
    namespace: NamespaceOpt = "default",
    gateway: GatewayOpt = "127.0.0.1:50051",
) -> None:
    """Delete an object and its vectors."""
    name = f"namespaces/{namespace}/buckets/{bucket_id}/objects/{content_id}"
    try:
        Gateway(gateway).buckets.DeleteObject(bucket_service_pb2.DeleteObjectRequest(name=name), timeout=60)
    except grpc.RpcError as exc:
        _fail(exc)
    console.print(f"deleted {name}")


@buckets_app.command("delete")
def buckets_delete(bucket_id: str, namespace: NamespaceOpt = "default", gateway: GatewayOpt = "127.0.0.1:50051") -> None:
    """Delete a bucket record (its source secret and sync state with it)."""
    try:
        Gateway(gateway).buckets.DeleteBucket(bucket_service_pb2.DeleteBucketRequest(name=f"namespaces/{namespace}/buckets/{bucket_id}"), timeout=30)
    except grpc.RpcError as exc:
        _fail(exc)
    console.print(f"deleted namespaces/{namespace}/buckets/{bucket_id}")


@app.command("jobs")
def jobs_cmd(
    job: Annotated[str, typer.Argument(help="job id or full name (namespaces/NS/jobs/ID)")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="live progress until it is done")] = False,
    namespace: NamespaceOpt = "default",
    gateway: GatewayOpt = "127.0.0.1:50051",
) -> None:
    """Progress of an upload or sync job: queued, indexed, failed (with reasons)."""
    gw = Gateway(gateway)
    name = job if job.startswith("namespaces/") else f"namespaces/{namespace}/jobs/{job}"
    try:
        if follow:
            with job_progress() as progress:
                current = follow_job(gw, name, progress)
        else:
            current = gw.buckets.GetJob(bucket_service_pb2.GetJobRequest(name=name), timeout=30).job
    except grpc.RpcError as exc:
        _fail(exc)
    print_job(current)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
