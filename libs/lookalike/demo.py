"""The main job, end to end on this machine: start the mesh (real NATS, S3 store, Milvus and the five
services), index real photos that ship with scikit-image and scikit-learn, query with edited copies
of them (crops, rotations, recolours, JPEG, flips, …), and print the matches.

    python -m lookalike.demo [--dir .run] [--stop]

The stack stays up afterwards (the CLI and the web page work against it); `make down` stops it.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import io
import json
import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from rich.console import Console
from rich.table import Table

from lookalike import cli, stack
from lookalike.filters import parse_filter_text
from lookalike.v1 import retriever_service_pb2

# wide enough for the result tables when the output is not a terminal (CI logs, pipes)
console = Console(width=None if sys.stdout.isatty() else 150)

NAMESPACE = "demo"
COLLECTION = "photos"
RETRIEVER = "visual-search"


def catalog_images() -> dict[str, tuple[str, np.ndarray]]:
    """name → (category, pixels): real photos every machine can get from the package registries."""
    import skimage.data as data
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    left, right, _ = data.stereo_motorcycle()
    return {
        "astronaut": ("people", data.astronaut()),
        "camera": ("people", data.camera()),
        "chelsea": ("animal", data.chelsea()),
        "coffee": ("food", data.coffee()),
        "rocket": ("space", data.rocket()),
        "hubble": ("space", data.hubble_deep_field()),
        "moon": ("space", data.moon()),
        "retina": ("science", data.retina()),
        "cells": ("science", data.immunohistochemistry()),
        "coins": ("object", data.coins()),
        "clock": ("object", data.clock()),
        "motorcycle": ("object", left),
        "page": ("document", data.page()),
        "brick": ("texture", data.brick()),
        "grass": ("texture", data.grass()),
        "gravel": ("texture", data.gravel()),
        "china": ("place", china),
        "flower": ("plant", flower),
        "_motorcycle_right": ("object", right),  # query only: the other stereo view
    }


def _crop(img: Image.Image, rng: random.Random) -> Image.Image:
    w, h = img.size
    cw, ch = int(w * 0.7), int(h * 0.7)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return img.crop((x, y, x + cw, y + ch))


def _watermark(img: Image.Image, rng: random.Random) -> Image.Image:
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for y in range(0, img.height, 40):
        draw.text((10 + (y % 80), y), "lookalike demo " * 8, fill=(255, 255, 255, 110))
    return Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")


EDITS: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "crop 49%": _crop,
    "rotate 12°": lambda img, rng: img.rotate(rng.choice([-12, 12])),
    "grayscale": lambda img, rng: ImageOps.grayscale(img).convert("RGB"),
    "JPEG q15": lambda img, rng: Image.open(io.BytesIO(_jpeg(img, 15))),
    "mirror": lambda img, rng: ImageOps.mirror(img),
    "recolor": lambda img, rng: ImageEnhance.Color(ImageEnhance.Brightness(img).enhance(1.25)).enhance(0.5),
    "downscale 25%": lambda img, rng: img.resize((max(1, img.width // 4), max(1, img.height // 4))),
    "watermark": _watermark,
}


def _jpeg(img: Image.Image, quality: int = 92) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def prepare(work: Path) -> tuple[Path, list[tuple[str, str, Path]]]:
    """Writes the catalog (with a metadata sidecar per image) and the edited queries."""
    catalog, queries_dir = work / "catalog", work / "queries"
    catalog.mkdir(parents=True, exist_ok=True)
    queries_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20261125)
    queries: list[tuple[str, str, Path]] = []
    edit_names = list(EDITS)
    photos = catalog_images()
    for i, (name, (category, pixels)) in enumerate(photos.items()):
        img = Image.fromarray(pixels).convert("RGB")
        if name.startswith("_"):
            path = queries_dir / f"{name.lstrip('_')}.jpg"
            path.write_bytes(_jpeg(img))
            queries.append(("other stereo view", "motorcycle", path))
            continue
        (catalog / f"{name}.jpg").write_bytes(_jpeg(img))
        (catalog / f"{name}.jpg.json").write_text(json.dumps({"category": category, "source": "scikit-image/scikit-learn"}))
        edit = edit_names[i % len(edit_names)]
        path = queries_dir / f"{name}-{edit.split()[0].lower()}.jpg"
        path.write_bytes(_jpeg(EDITS[edit](img, rng), 90))
        queries.append((edit, name, path))
    return catalog, queries


def serve_folder(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def run_demo(gateway_addr: str, work: Path, url_queries: bool) -> int:
    gw = cli.Gateway(gateway_addr)
    catalog, queries = prepare(work)
    console.rule("[bold]1-3. namespace, collection (effnet-lite0 + phash, HNSW), bucket upload with auto_process")
    cli.ensure_collection(gw, NAMESPACE, COLLECTION, ["effnet-lite0", "phash"], "hnsw")
    job = cli.index_folder(gw, catalog, NAMESPACE, COLLECTION)
    console.rule("[bold]4. retriever: feature_search (limit 20) → rerank (limit 5)")
    gw.ensure(
        gw.retrievers.CreateRetriever,
        retriever_service_pb2.CreateRetrieverRequest(
            parent=f"namespaces/{NAMESPACE}",
            retriever_id=RETRIEVER,
            retriever=retriever_service_pb2.Retriever(
                stages=[
                    retriever_service_pb2.Stage(feature_search=retriever_service_pb2.FeatureSearchStage(
                        collection=f"namespaces/{NAMESPACE}/collections/{COLLECTION}", limit=20)),
                    retriever_service_pb2.Stage(rerank=retriever_service_pb2.RerankStage(limit=5)),
                ]
            ),
        ),
    )
    retriever = f"namespaces/{NAMESPACE}/retrievers/{RETRIEVER}"
    console.rule("[bold]5. queries with edited copies")
    table = Table("query", "edit", "expected", "top match", "score", "rank of original", "box", "ms")
    firsts = 0
    for edit, expected, path in queries:
        started = time.perf_counter()
        response = gw.retrievers.ExecuteRetriever(
            retriever_service_pb2.ExecuteRetrieverRequest(name=retriever, query=retriever_service_pb2.Query(image=path.read_bytes())),
            timeout=60,
        )
        elapsed = (time.perf_counter() - started) * 1000
        names = [Path(d.filename).stem for d in response.documents]
        rank = names.index(expected) + 1 if expected in names else None
        firsts += rank == 1
        top = response.documents[0] if response.documents else None
        box = f"{top.box.x_min:.2f},{top.box.y_min:.2f}→{top.box.x_max:.2f},{top.box.y_max:.2f}" if top and top.HasField("box") else ""
        table.add_row(
            path.name, edit, expected, names[0] if names else "-", f"{top.score:.3f}" if top else "-",
            "[green]1[/green]" if rank == 1 else f"[red]{rank or 'missing'}[/red]", box, f"{elapsed:.0f}",
        )
    console.print(table)

    console.rule("[bold]metadata filter: category == food")
    response = gw.retrievers.ExecuteRetriever(
        retriever_service_pb2.ExecuteRetrieverRequest(
            name=retriever, query=retriever_service_pb2.Query(image=queries[0][2].read_bytes()), filter=parse_filter_text("category == food")
        ),
        timeout=60,
    )
    console.print(cli.results_table(response, title=f"{queries[0][2].name} with filter category == food"))
    filter_ok = all(d.metadata["category"] == "food" for d in response.documents)

    if url_queries:
        console.rule("[bold]query by URL")
        server, base = serve_folder(work / "queries")
        try:
            url = f"{base}/{queries[1][2].name}"
            response = gw.retrievers.ExecuteRetriever(
                retriever_service_pb2.ExecuteRetrieverRequest(name=retriever, query=retriever_service_pb2.Query(image_url=url)), timeout=60
            )
            console.print(cli.results_table(response, title=url))
        finally:
            server.shutdown()
    console.rule()
    console.print(
        f"indexed {job.indexed} photos; [bold]{firsts}/{len(queries)}[/bold] edited queries found their original first; "
        f"filter {'kept only food' if filter_ok else 'LEAKED other categories'}"
    )
    return 0 if firsts == len(queries) and filter_ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lookalike.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(".run"))
    parser.add_argument("--stop", action="store_true", help="stop the stack at the end (default: leave it up for the CLI and the web page)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    run_dir = args.dir.resolve()
    running = stack.read_gateway_address(run_dir)
    own = None
    if running:
        console.print(f"using the running stack at {running}")
        gateway = running
    else:
        console.rule("[bold]starting NATS JetStream, the S3 object store, Milvus and the five services")
        started = time.monotonic()
        own = stack.start_stack(run_dir, extra_env={"LOOKALIKE_URL_FETCH_ALLOW_PRIVATE": "true"})
        gateway = own.gateway_addr
        console.print(f"up in {time.monotonic() - started:.0f}s (logs in {run_dir / 'logs'})")
    try:
        return run_demo(gateway, run_dir / "demo", url_queries=own is not None)
    except grpc.RpcError as exc:
        console.print(f"[red]{exc.code().name}: {exc.details()}[/red]")
        return 1
    finally:
        if own is not None and args.stop:
            own.stop()
            console.print("stack stopped")
        elif own is not None:
            web = own.addresses.get("web")
            console.print(
                f"the stack is still up: gateway {own.gateway_addr}"
                + (f", web page [bold]http://{web}/[/bold] (namespace {NAMESPACE}, collection {COLLECTION})" if web else "")
                + "; `make down` stops it"
            )


if __name__ == "__main__":
    sys.exit(main())
