"""Retrieval quality of the real pipeline on a copy-detection set (`make eval DEV=path/to/dev`).

Starts the whole mesh on this machine, indexes the set's gallery (originals + distractors) with
effnet-lite0 and phash, then runs every query through four retrievers and prints recall@1,
recall@10 and mAP (one relevant image per query, so mAP@10 = mean reciprocal rank), overall and per
transform:

  search              feature_search effnet-lite0 (limit 10)
  search+rerank       feature_search (limit 30) → rerank (limit 10)
  search+phash        feature_search effnet-lite0 (30) + feature_search phash (30) → fuse (RRF 1:1)
  search+phash(¼)     the same, pHash weighted 0.25 in the fusion

The set's layout: manifest.json with `gallery`, `distractors` (id, file) and `queries` (file,
gallery_id, transform), paths relative to the set's folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lookalike import cli, stack
from lookalike.v1 import retriever_service_pb2 as rpb

NAMESPACE = "eval"
COLLECTION = "dev"


def stages(collection: str) -> dict[str, list[rpb.Stage]]:
    def search(extractor: str, limit: int) -> rpb.Stage:
        return rpb.Stage(feature_search=rpb.FeatureSearchStage(collection=collection, feature_extractor=extractor, limit=limit))

    rerank = rpb.Stage(rerank=rpb.RerankStage(limit=10))
    return {
        "search": [search("effnet-lite0", 10)],
        "search+rerank": [search("effnet-lite0", 30), rerank],
        "search+phash": [search("effnet-lite0", 30), search("phash", 30), rpb.Stage(fuse=rpb.FuseStage(k=60, limit=10))],
        "search+phash(¼)": [
            search("effnet-lite0", 30), search("phash", 30), rpb.Stage(fuse=rpb.FuseStage(k=60, limit=10, weights=[1.0, 0.25]))
        ],
    }


def evaluate(gateway: str, dev: Path, limit_queries: int | None, workers: int) -> dict[str, dict[str, list[int | None]]]:
    manifest = json.loads((dev / "manifest.json").read_text())
    gw = cli.Gateway(gateway, timeout=120)
    cli.ensure_collection(gw, NAMESPACE, COLLECTION, ["effnet-lite0", "phash"], "hnsw")
    gallery = Path(dev / "gallery")
    job = cli.index_folder(gw, gallery, NAMESPACE, COLLECTION)
    print(f"indexed {job.indexed} gallery images", file=sys.stderr)
    collection = f"namespaces/{NAMESPACE}/collections/{COLLECTION}"
    retrievers = {}
    for name, stage_list in stages(collection).items():
        rid = name.replace("+", "-").replace("(¼)", "-quarter")
        gw.ensure(gw.retrievers.CreateRetriever, rpb.CreateRetrieverRequest(
            parent=f"namespaces/{NAMESPACE}", retriever_id=rid, retriever=rpb.Retriever(stages=stage_list)))
        retrievers[name] = f"namespaces/{NAMESPACE}/retrievers/{rid}"
    gallery_file = {g["id"]: Path(g["file"]).name for g in manifest["gallery"]}
    queries = manifest["queries"][:limit_queries] if limit_queries else manifest["queries"]
    ranks: dict[str, dict[str, list[int | None]]] = {name: defaultdict(list) for name in retrievers}

    def run(args: tuple[str, dict]) -> tuple[str, str, int | None]:
        name, query = args
        response = gw.retrievers.ExecuteRetriever(
            rpb.ExecuteRetrieverRequest(name=retrievers[name], query=rpb.Query(image=(dev / query["file"]).read_bytes()), limit=10),
            timeout=120,
        )
        files = [d.filename for d in response.documents]
        expected = gallery_file[query["gallery_id"]]
        return name, query["transform"], files.index(expected) + 1 if expected in files else None

    jobs = [(name, q) for name in retrievers for q in queries]
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for name, transform, rank in pool.map(run, jobs):
            ranks[name][transform].append(rank)
            ranks[name]["all"].append(rank)
    print(f"{len(jobs)} queries in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return ranks


def metrics(values: list[int | None]) -> tuple[float, float, float]:
    n = len(values) or 1
    r1 = sum(1 for r in values if r == 1) / n
    r10 = sum(1 for r in values if r is not None and r <= 10) / n
    mrr = sum(1 / r for r in values if r is not None) / n
    return r1, r10, mrr


def report(ranks: dict[str, dict[str, list[int | None]]], console: Console) -> None:
    table = Table(title="all queries")
    table.add_column("retriever")
    for col in ("recall@1", "recall@10", "mAP@10"):
        table.add_column(col, justify="right")
    for name, by_transform in ranks.items():
        table.add_row(name, *(f"{100 * v:.1f}" for v in metrics(by_transform["all"])))
    console.print(table)
    transforms = sorted(t for t in next(iter(ranks.values())) if t != "all")
    per = Table(title="precision@1 (= recall@1) by transform")
    per.add_column("transform")
    per.add_column("n", justify="right")
    for name in ranks:
        per.add_column(name, justify="right")
    for t in transforms:
        per.add_row(t, str(len(next(iter(ranks.values()))[t])), *(f"{100 * metrics(ranks[n][t])[0]:.1f}" for n in ranks))
    console.print(per)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dev", type=Path, help="the set's folder (manifest.json, gallery/, queries/)")
    parser.add_argument("--dir", type=Path, default=Path(".run-eval"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N queries")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the ranks here")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 150)
    own = stack.start_stack(args.dir.resolve(), gateway_port=None)
    try:
        ranks = evaluate(own.gateway_addr, args.dev.resolve(), args.limit, args.workers)
    finally:
        own.stop()
    report(ranks, console)
    if args.json:
        args.json.write_text(json.dumps({n: dict(v) for n, v in ranks.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
