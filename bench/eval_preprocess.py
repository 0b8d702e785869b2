"""Measure EfficientNet-Lite0 preprocessing choices on a copy-detection set.

    python bench/eval_preprocess.py DEV_DIR [--variants squash/imagenet,center_crop/imagenet,...]

DEV_DIR holds ``manifest.json``, ``gallery/`` and ``queries/`` (the layout of the project's
evaluation sets: every query has exactly one correct gallery image; the search gallery is
``gallery`` + ``distractors``). For every variant it embeds gallery and queries with the exported ONNX
model, ranks the whole gallery for each query by brute-force cosine, and prints recall@1/5/10 overall
and recall@1 per transform. Ties count against the query (pessimistic). Nothing else in the project
depends on this script or on the evaluation set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.imaging import decode_image
from lookalike.models import EffnetLite0, ModelSettings
from lookalike.models.effnet import l2_normalize, preprocess

RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
DEFAULT_VARIANTS = (
    "squash/imagenet/bicubic",
    "center_crop/imagenet/bicubic",
    "letterbox/imagenet/bicubic",
    "squash/inception/bicubic",
    "center_crop/inception/bicubic",
    "letterbox/inception/bicubic",
    "squash/imagenet/bilinear",
)
KS = (1, 5, 10)


def load_set(root: Path) -> tuple[list[str], list[Image.Image], list[dict], list[Image.Image]]:
    manifest = json.loads((root / "manifest.json").read_text())
    entries = list(manifest["gallery"]) + list(manifest.get("distractors", []))
    limits = {"max_bytes": 64 << 20, "max_pixels": 100_000_000}
    gallery_ids = [e["id"] for e in entries]
    gallery = [decode_image((root / e["file"]).read_bytes(), **limits) for e in entries]
    queries = list(manifest["queries"])
    query_images = [decode_image((root / q["file"]).read_bytes(), **limits) for q in queries]
    return gallery_ids, gallery, queries, query_images


def embed(extractor: EffnetLite0, images: list[Image.Image], variant: str, batch: int) -> np.ndarray:
    resize, norm, resample = variant.split("/")
    session = extractor.session
    out = []
    for start in range(0, len(images), batch):
        x = preprocess(
            images[start : start + batch],
            size=extractor.image_size,
            resize=resize,  # type: ignore[arg-type]
            normalization=norm,  # type: ignore[arg-type]
            resample=RESAMPLE[resample],
        )
        out.append(session.run({"pixel_values": x}, ["embedding"])["embedding"])
    return l2_normalize(np.concatenate(out))


def ranks(query_vecs: np.ndarray, gallery_vecs: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1-based rank of the true gallery item per query; ties count against it."""
    sims = query_vecs @ gallery_vecs.T
    true_sim = sims[np.arange(len(truth)), truth]
    return (sims >= true_sim[:, None]).sum(axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dev_dir", type=Path, help="evaluation set folder (manifest.json, gallery/, queries/)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="resize/normalization/resample,...")
    parser.add_argument("--repository", type=Path, default=None, help="model repository (default: settings)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    settings = ModelSettings(model_repository=args.repository) if args.repository else ModelSettings()
    extractor = EffnetLite0(settings)
    t0 = time.perf_counter()
    gallery_ids, gallery, queries, query_images = load_set(args.dev_dir)
    index = {gid: i for i, gid in enumerate(gallery_ids)}
    truth = np.array([index[q["gallery_id"]] for q in queries])
    transforms = sorted({q["transform"] for q in queries})
    print(f"{len(gallery)} gallery images, {len(queries)} queries, decoded in {time.perf_counter() - t0:.1f}s")

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    results: dict[str, dict] = {}
    for variant in variants:
        t0 = time.perf_counter()
        g = embed(extractor, gallery, variant, args.batch_size)
        q = embed(extractor, query_images, variant, args.batch_size)
        r = ranks(q, g, truth)
        sims = q @ g.T
        true_sim = sims[np.arange(len(truth)), truth]
        wrong = sims.copy()
        wrong[np.arange(len(truth)), truth] = -np.inf
        per: dict[str, list[int]] = defaultdict(list)
        for qi, meta in enumerate(queries):
            per[meta["transform"]].append(int(r[qi]))
        results[variant] = {
            "overall": {f"R@{k}": float((r <= k).mean()) for k in KS},
            "per_transform": {
                t: {f"R@{k}": float((np.array(per[t]) <= k).mean()) for k in KS} | {"n": len(per[t])}
                for t in transforms
            },
            "true_cos_mean": float(true_sim.mean()),
            "best_wrong_cos_mean": float(wrong.max(axis=1).mean()),
            "seconds": time.perf_counter() - t0,
        }
        o = results[variant]["overall"]
        print(
            f"{variant:32s} R@1 {o['R@1']:.3f}  R@5 {o['R@5']:.3f}  R@10 {o['R@10']:.3f}  "
            f"({results[variant]['seconds']:.0f}s)",
            flush=True,
        )

    # Markdown tables: overall, then recall@1 per transform.
    print("\n| variant | R@1 | R@5 | R@10 | true cos (mean) | best wrong cos (mean) |\n|---|---|---|---|---|---|")
    for v, res in results.items():
        o = res["overall"]
        print(
            f"| {v} | {100 * o['R@1']:.1f} | {100 * o['R@5']:.1f} | {100 * o['R@10']:.1f} "
            f"| {res['true_cos_mean']:.3f} | {res['best_wrong_cos_mean']:.3f} |"
        )
    print("\nrecall@1 (%) per transform\n")
    print("| transform | n | " + " | ".join(variants) + " |")
    print("|---|---|" + "---|" * len(variants))
    for t in transforms:
        n = results[variants[0]]["per_transform"][t]["n"]
        cells = " | ".join(f"{100 * results[v]['per_transform'][t]['R@1']:.1f}" for v in variants)
        print(f"| {t} | {n} | {cells} |")
    cells = " | ".join(f"**{100 * results[v]['overall']['R@1']:.1f}**" for v in variants)
    print(f"| **ALL** | {len(queries)} | {cells} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
