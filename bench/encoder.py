"""Encoder throughput and latency per backend (`python -m bench.encoder`, part of `make bench`).

The effnet-lite0 embedding of real photos (scikit-image / scikit-learn, ~0.1-1 MP JPEGs), measured
for each backend at several batch sizes; per point: images/s, and p50 / p99 of the latency of one
call (a call = one batch). Each backend also reports its batch-1 row and its best row (highest
images/s).

  onnxruntime      in-process EffnetLite0.encode on decoded images: preprocessing + ONNX Runtime
  triton           the same extractor on a TritonSession: preprocessing here, inference on the
                   tritonserver that nvidia-pytriton bundles (python backend running the same ONNX
                   with ONNX Runtime), over gRPC on 127.0.0.1 (needs `make setup-triton`)
  service          the encoder service process over gRPC: JPEG bytes in, decode + preprocessing +
                   inference + protobuf; "batch N" = one EncodeImages call with N images, and
                   "N x 1 concurrent" = N clients sending one image each (server-side micro-batching)
  service-triton   the encoder service with LOOKALIKE_ENCODER_BACKEND=triton

The machine (CPU model, cores) and the load average before and after are printed with the table:
other work on the machine lowers every figure, so run it when the machine is quiet.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path


BACKENDS = ("onnxruntime", "triton", "service", "service-triton")
MODEL = "effnet-lite0"


@dataclass
class Point:
    backend: str
    mode: str  # "batch N" or "N x 1 concurrent"
    batch: int  # images per call
    concurrency: int  # calls in flight
    calls: int
    images_per_s: float
    p50_ms: float
    p99_ms: float


def machine() -> dict[str, object]:
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]}


def photos() -> list[bytes]:
    import skimage.data as data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    arrays = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.hubble_deep_field(),
              data.retina(), data.immunohistochemistry(), data.camera(), data.coins(),
              *load_sample_images().images, data.stereo_motorcycle()[0]]
    out = []
    for pixels in arrays:
        buf = io.BytesIO()
        Image.fromarray(pixels).convert("RGB").save(buf, "JPEG", quality=92)
        out.append(buf.getvalue())
    return out


def measure(backend: str, mode: str, batch: int, concurrency: int, call: Callable[[int], None],
            seconds: float, min_calls: int) -> Point:
    """Runs ``call(i)`` from ``concurrency`` threads for ``seconds`` (and at least ``min_calls``)."""
    for i in range(max(2, concurrency)):  # warm-up
        call(i)
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    counter = iter(range(10**9))

    def worker() -> None:
        while True:
            with lock:
                n = next(counter)
                if time.perf_counter() >= stop_at and n >= min_calls:
                    return
            t0 = time.perf_counter()
            call(n)
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - started
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    return Point(backend, mode, batch, concurrency, len(ms), len(ms) * batch / wall, statistics.median(ms), p99)


def bench_extractor(backend: str, extractor: object, images: list, batches: list[int], seconds: float,
                    min_calls: int) -> list[Point]:
    points = []
    for b in batches:
        def call(i: int, b: int = b) -> None:
            start = (i * b) % len(images)
            extractor.encode([images[(start + k) % len(images)] for k in range(b)])  # type: ignore[attr-defined]

        points.append(measure(backend, f"batch {b}", b, 1, call, seconds, min_calls))
        print(f"  {backend:<15} batch {b:>3}: {points[-1].images_per_s:7.1f} images/s", file=sys.stderr)
    return points


def bench_service(backend: str, address: str, data: list[bytes], batches: list[int], concurrencies: list[int],
                  seconds: float, min_calls: int) -> list[Point]:
    import grpc

    from lookalike.v1 import encoder_service_pb2 as pb
    from lookalike.v1 import encoder_service_pb2_grpc as grpc_pb

    points = []
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = grpc_pb.EncoderServiceStub(channel)

        def send(i: int, b: int) -> None:
            start = (i * b) % len(data)
            images = [data[(start + k) % len(data)] for k in range(b)]
            response = stub.EncodeImages(pb.EncodeImagesRequest(extractors=[MODEL], images=images), timeout=120)
            if any(item.error for item in response.images):
                raise RuntimeError([item.error for item in response.images if item.error])

        for b in batches:
            points.append(measure(backend, f"batch {b}", b, 1, lambda i, b=b: send(i, b), seconds, min_calls))
            print(f"  {backend:<15} batch {b:>3}: {points[-1].images_per_s:7.1f} images/s", file=sys.stderr)
        for c in concurrencies:
            points.append(measure(backend, f"{c} x 1 concurrent", 1, c, lambda i: send(i, 1), seconds, min_calls))
            print(f"  {backend:<15} {c:>3} x 1 concurrent: {points[-1].images_per_s:7.1f} images/s", file=sys.stderr)
    return points


def report(points: list[Point], notes: dict[str, str], info: dict[str, object]) -> str:
    lines = [f"machine: {info['cpu']}, {info['cores']} cores; load average before {info['load_avg']}, "
             f"after {info.get('load_avg_after')}; service batching {info.get('service_batching')}", ""]
    lines += ["| backend | mode | images/s | p50 ms | p99 ms |", "|---|---|---:|---:|---:|"]
    for p in points:
        lines.append(f"| {p.backend} | {p.mode} | {p.images_per_s:.1f} | {p.p50_ms:.1f} | {p.p99_ms:.1f} |")
    lines += ["", "| backend | batch 1: images/s, p50 / p99 ms | best: mode, images/s, p50 / p99 ms |", "|---|---|---|"]
    for backend in dict.fromkeys(p.backend for p in points):
        mine = [p for p in points if p.backend == backend]
        one = next((p for p in mine if p.batch == 1 and p.concurrency == 1), None)
        best = max(mine, key=lambda p: p.images_per_s)
        first = f"{one.images_per_s:.1f}, {one.p50_ms:.1f} / {one.p99_ms:.1f}" if one else "-"
        lines.append(f"| {backend} | {first} | {best.mode}: {best.images_per_s:.1f}, "
                     f"{best.p50_ms:.1f} / {best.p99_ms:.1f} |")
    for backend, why in notes.items():
        lines.append(f"\n{backend}: not measured: {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.encoder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, of {', '.join(BACKENDS)}")
    parser.add_argument("--batches", default="1,4,8,16,32", help="client batch sizes (images per call)")
    parser.add_argument("--concurrency", default="4,8,16", help="concurrent 1-image calls to the service")
    parser.add_argument("--seconds", type=float, default=4.0, help="per point (default 4)")
    parser.add_argument("--min-calls", type=int, default=8, help="per point, however long it takes")
    parser.add_argument("--queue-delay-ms", type=float, default=None,
                        help="the service's LOOKALIKE_ENCODER_MAX_QUEUE_DELAY_MS (default: its default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the points here")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}")
    batches = [int(x) for x in args.batches.split(",") if x]
    concurrencies = [int(x) for x in args.concurrency.split(",") if x]

    from lookalike.devservers import ServerStartError, start_triton
    from lookalike.imaging import decode_image
    from lookalike.models import ModelSettings, get_extractor
    from services.encoder.batching import BatchingSettings
    from services.encoder.launch import start_encoder

    info = machine()
    defaults = BatchingSettings()
    info["service_batching"] = {"max_batch_size": defaults.max_batch_size,
                                "max_queue_delay_ms": args.queue_delay_ms if args.queue_delay_ms is not None
                                else defaults.max_queue_delay_ms}
    print(f"bench.encoder on {info['cpu']} ({info['cores']} cores), load average {info['load_avg']}", file=sys.stderr)
    data = photos()
    images = [decode_image(d) for d in data]
    points: list[Point] = []
    notes: dict[str, str] = {}
    repository = ModelSettings().model_repository
    with tempfile.TemporaryDirectory(prefix="bench-encoder-") as tmp:
        triton = None
        if any(b in ("triton", "service-triton") for b in backends):
            try:
                triton = start_triton(Path(tmp) / "triton", repository, [MODEL])
            except ServerStartError as exc:
                for b in ("triton", "service-triton"):
                    if b in backends:
                        notes[b] = f"tritonserver did not start ({str(exc).splitlines()[0]})"
        try:
            url = f"127.0.0.1:{triton.port}" if triton else ""
            for backend in backends:
                if backend in notes:
                    continue
                if backend in ("onnxruntime", "triton"):
                    settings = ModelSettings(encoder_backend=backend, triton_url=url or "127.0.0.1:8001")
                    extractor = get_extractor(MODEL, settings, shared=False)
                    extractor.load()
                    points += bench_extractor(backend, extractor, images, batches, args.seconds, args.min_calls)
                    extractor.unload()
                else:
                    env = {"LOOKALIKE_ENCODER_BACKEND": "triton" if backend == "service-triton" else "onnxruntime",
                           "LOOKALIKE_TRITON_URL": url, "LOOKALIKE_LOG_LEVEL": "WARNING"}
                    if args.queue_delay_ms is not None:
                        env["LOOKALIKE_ENCODER_MAX_QUEUE_DELAY_MS"] = str(args.queue_delay_ms)
                    service = start_encoder(Path(tmp) / backend, env=env)
                    try:
                        points += bench_service(backend, service.address, data, batches, concurrencies,
                                                args.seconds, args.min_calls)
                    finally:
                        service.stop()
        finally:
            if triton is not None:
                triton.stop()
    info["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(report(points, notes, info))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "points": [asdict(p) for p in points], "notes": notes},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
