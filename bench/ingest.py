"""Ingest throughput end to end against the bare encoder (`python -m bench.ingest`, part of
`make bench`).

Starts its own NATS, S3 server and Milvus and the services (encoder, search, ingest, gateway) on
this machine, makes N distinct photos (crops of the scikit-image photos, 256-512 px JPEGs), then
measures, on the same images:

  bare encoder     in-process: decode (thread pool over the cores) + effnet-lite0 and phash side
                   by side, in batches of the ingest batch size: the ceiling of what ingest can
                   reach here
  encoder service  EncodeImages calls of one batch each over gRPC (JPEG bytes in), one at a time
  end to end       one UploadObjects stream through the gateway (validate, store in S3, publish on
                   JetStream) and W worker processes (fetch from S3, EncodeImages, UpsertVectors per
                   extractor into Milvus, count, ack) until GetJob says done; W = 1, 2, 4

and prints images/s for each, with the pipeline overhead ratio (end to end ÷ bare encoder). Every
service and server shares the machine's cores with the encoder, so on a small machine the ratio
is the cost of the whole pipeline, not only of its own code.

  python -m bench.ingest --images 800 --workers 1,2,4 --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

EXTRACTORS = ["effnet-lite0", "phash"]
SERVICES = ("encoder", "search", "ingest", "gateway")


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), model)
    except OSError:
        pass
    memory = ""
    try:
        memory = f"{int(Path('/proc/meminfo').read_text().split()[1]) / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "memory": memory, "load_avg": [round(x, 2) for x in os.getloadavg()]}


def make_images(count: int, seed: int = 0, min_side: int = 256, max_side: int = 512) -> list[bytes]:
    """`count` distinct JPEGs: random crops of real photos, `min_side`-`max_side` px on the long side."""
    import skimage.data as data
    from PIL import Image

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.hubble_deep_field(), data.retina(),
              data.immunohistochemistry(), data.camera(), data.coins(), data.stereo_motorcycle()[0], data.cat()]
    rng = random.Random(seed)
    out: list[bytes] = []
    seen: set[int] = set()
    while len(out) < count:
        photo = Image.fromarray(rng.choice(photos)).convert("RGB")
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        crop = photo.crop((x, y, x + cw, y + ch))
        scale = rng.randint(min_side, max_side) / max(crop.size)
        crop = crop.resize((max(1, int(crop.width * scale)), max(1, int(crop.height * scale))))
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=rng.randint(80, 92))
        if hash(buf.getvalue()) not in seen:
            seen.add(hash(buf.getvalue()))
            out.append(buf.getvalue())
    return out


def bare_encoder(images: list[bytes], batch: int) -> float:
    """images/s of decode + every extractor, in-process, in batches (after one warm-up batch)."""
    from lookalike.imaging import decode_image
    from lookalike.models import get_extractor

    extractors = [get_extractor(name) for name in EXTRACTORS]
    for extractor in extractors:
        extractor.load()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        def run(chunk: list[bytes]) -> None:
            decoded = list(pool.map(decode_image, chunk))
            # the extractors side by side, as the encoder service runs them
            for future in [pool.submit(extractor.encode, decoded) for extractor in extractors]:
                future.result()

        run(images[:batch])
        started = time.perf_counter()
        for i in range(0, len(images), batch):
            run(images[i : i + batch])
        return len(images) / (time.perf_counter() - started)


def encoder_service(address: str, images: list[bytes], batch: int) -> float:
    import grpc

    from lookalike.v1 import encoder_service_pb2 as pb
    from lookalike.v1 import encoder_service_pb2_grpc as grpc_pb

    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = grpc_pb.EncoderServiceStub(channel)
        stub.EncodeImages(pb.EncodeImagesRequest(extractors=EXTRACTORS, images=images[:batch]), timeout=120)
        started = time.perf_counter()
        for i in range(0, len(images), batch):
            stub.EncodeImages(pb.EncodeImagesRequest(extractors=EXTRACTORS, images=images[i : i + batch]), timeout=120)
        return len(images) / (time.perf_counter() - started)


def end_to_end(stack: Any, images: list[bytes], workers: int, namespace: str) -> dict[str, float]:
    from lookalike.cli import Gateway
    from lookalike.devservers import free_port
    from lookalike.v1 import bucket_service_pb2 as bpb
    from lookalike.v1 import collection_service_pb2 as cpb
    from lookalike.v1 import namespace_service_pb2 as npb
    from lookalike.v1 import types_pb2

    gw = Gateway(stack.gateway_addr, timeout=60)
    parent = f"namespaces/{namespace}"
    gw.namespaces.CreateNamespace(npb.CreateNamespaceRequest(namespace_id=namespace), timeout=30)
    gw.collections.CreateCollection(
        cpb.CreateCollectionRequest(parent=parent, collection_id="images", feature_extractors=EXTRACTORS,
                                    index=types_pb2.IndexSpec(type=types_pb2.INDEX_TYPE_HNSW)),
        timeout=120,
    )
    gw.buckets.CreateBucket(
        bpb.CreateBucketRequest(parent=parent, bucket_id="bench",
                                bucket=bpb.Bucket(collection=f"{parent}/collections/images", auto_process=True)),
        timeout=30,
    )
    names = []
    for i in range(workers):
        name = f"bench-worker-{namespace}-{i}"
        stack.start_service(name, module="services.ingest.worker", address=f"127.0.0.1:{free_port()}")
        names.append(name)
    try:
        def requests() -> Any:
            for i, data in enumerate(images):
                yield bpb.UploadObjectsRequest(parent=f"{parent}/buckets/bench" if i == 0 else "", filename=f"{i}.jpg", content=data)

        started = time.perf_counter()
        response = gw.buckets.UploadObjects(requests(), timeout=3600)
        uploaded = time.perf_counter()
        while True:
            job = gw.buckets.GetJob(bpb.GetJobRequest(name=response.job), timeout=30).job
            if job.done:
                break
            time.sleep(0.05)
        finished = time.perf_counter()
        if (job.indexed, job.failed) != (len(images), 0):
            raise RuntimeError(f"job ended with {job.indexed} indexed, {job.failed} failed of {len(images)}")
    finally:
        for name in names:
            stack.stop_service(name)
    return {
        "images_per_s": len(images) / (finished - started),
        "upload_s": uploaded - started,
        "total_s": finished - started,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=800, help="images per run (default 800)")
    parser.add_argument("--workers", default="1,2,4", help="worker processes to compare (default 1,2,4)")
    parser.add_argument("--batch", type=int, default=16, help="ingest batch size (LOOKALIKE_INGEST_BATCH_SIZE)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lookalike.devservers import free_port, start_infra
    from lookalike.stack import Stack

    worker_counts = [int(w) for w in args.workers.split(",") if w]
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory']}; load {info['load_avg']}", file=sys.stderr)
    images = make_images(args.images)
    megapixels = sum(_pixels(d) for d in images) / len(images) / 1e6
    print(f"{len(images)} distinct JPEGs, {sum(map(len, images)) / len(images) / 1024:.0f} KiB and {megapixels:.2f} MP on average",
          file=sys.stderr)
    results: dict[str, Any] = {"machine": info, "images": len(images), "batch": args.batch, "mean_megapixels": round(megapixels, 3)}
    results["bare_encoder"] = bare_encoder(images, args.batch)
    print(f"bare encoder: {results['bare_encoder']:.1f} images/s", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        base = Path(tmp)
        infra = start_infra(base / "servers")
        env = {"LOOKALIKE_INGEST_WORKERS": "0", "LOOKALIKE_INGEST_BATCH_SIZE": str(args.batch), "LOOKALIKE_LOG_LEVEL": "WARNING"}
        stack = Stack(infra, base / "run", {name: f"127.0.0.1:{free_port()}" for name in SERVICES}, env, own_infra=False)
        try:
            for name in SERVICES:
                stack.start_service(name)
            results["encoder_service"] = encoder_service(stack.addresses["encoder"], images, args.batch)
            print(f"encoder service: {results['encoder_service']:.1f} images/s", file=sys.stderr)
            results["end_to_end"] = {}
            for workers in worker_counts:
                run = end_to_end(stack, images, workers, f"bench-w{workers}")
                results["end_to_end"][workers] = run
                print(f"end to end, {workers} worker(s): {run['images_per_s']:.1f} images/s "
                      f"(upload {run['upload_s']:.1f} s, done after {run['total_s']:.1f} s)", file=sys.stderr)
        finally:
            stack.stop()
            infra.stop(timeout=5)
    results["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _pixels(data: bytes) -> int:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.width * image.height


def print_table(results: dict[str, Any]) -> None:
    bare = results["bare_encoder"]
    rows = [("bare encoder (in-process)", "-", bare), ("encoder service (gRPC)", "-", results["encoder_service"])]
    rows += [("end to end", str(w), r["images_per_s"]) for w, r in results["end_to_end"].items()]
    print(f"{'path':<28} {'workers':>7} {'images/s':>9} {'÷ bare':>7}")
    for path, workers, rate in rows:
        print(f"{path:<28} {workers:>7} {rate:>9.1f} {rate / bare:>7.2f}")


if __name__ == "__main__":
    sys.exit(main())
