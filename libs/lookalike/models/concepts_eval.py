"""Text-query precision of the ``concepts`` extractor on an image gallery.

    python -m lookalike.models.concepts_eval /path/to/eval/dev [--queries judgements.json] [--grid]

Encodes every gallery image (``gallery`` + ``distractors`` of the set's manifest.json) with
``concepts``, ranks the whole gallery by cosine for each text query (exhaustive, as the vector index
would with FLAT) and prints precision@5, the best precision@5 possible (min(relevant, 5) / 5),
recall@5 and the rank of the first relevant image.

The relevance judgements below are for the project's dev set; they were made by looking at the
images (contact sheets of all 264), *not* from the model's predictions: an image is relevant when the
named thing is clearly visible in it. ``in_vocabulary`` says whether ImageNet-1k has a class for it;
the others are there to show where this extractor cannot help. ``--queries`` takes a JSON list of
``{"text": ..., "relevant": [ids], "in_vocabulary": bool}`` for another gallery.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

DEV_QUERIES: list[dict] = [
    {"text": "a photo of a dog", "relevant": ["dev-0008", "dev-0031", "dev-0036"], "in_vocabulary": True},
    {"text": "a photo of a cat", "relevant": ["dev-0022"], "in_vocabulary": True},
    {"text": "a photo of fruit", "relevant": ["dev-0003", "dev-0010", "dev-0017"], "in_vocabulary": True},
    {"text": "a photo of a cup of coffee", "relevant": ["dev-0023"], "in_vocabulary": True},
    {"text": "a photo of a butterfly", "relevant": ["dev-0007"], "in_vocabulary": True},
    {"text": "a photo of a bird", "relevant": ["dev-0032"], "in_vocabulary": True},
    {"text": "a photo of a monkey", "relevant": ["dev-0004"], "in_vocabulary": True},
    {"text": "a photo of a squirrel", "relevant": ["dev-0019"], "in_vocabulary": True},
    {"text": "a photo of a zebra", "relevant": ["dev-0033"], "in_vocabulary": True},
    {"text": "a photo of a motorcycle", "relevant": ["dev-0025"], "in_vocabulary": True},
    {"text": "a photo of a bicycle", "relevant": ["dev-0031"], "in_vocabulary": True},
    {"text": "a photo of a pizza", "relevant": ["dev-d0057"], "in_vocabulary": True},
    {"text": "a photo of a lighthouse", "relevant": ["dev-d0063"], "in_vocabulary": True},
    {"text": "a photo of a jellyfish", "relevant": ["dev-d0062"], "in_vocabulary": True},
    {"text": "a photo of a flower", "relevant": ["dev-0029", "dev-d0008"], "in_vocabulary": True},
    {"text": "a photo of a horse", "relevant": ["dev-0034", "dev-0036"], "in_vocabulary": False},
    {"text": "a photo of a giraffe", "relevant": ["dev-0033"], "in_vocabulary": False},
    {"text": "a photo of the moon", "relevant": ["dev-d0052", "dev-d0055"], "in_vocabulary": False},
]


def gallery(dev_dir: Path) -> tuple[list[str], list[Path]]:
    manifest = json.loads((dev_dir / "manifest.json").read_text())
    items = manifest["gallery"] + manifest["distractors"]
    return [it["id"] for it in items], [dev_dir / it["file"] for it in items]


def encode_gallery(extractor, files: list[Path], batch: int = 32) -> np.ndarray:
    from lookalike.imaging import decode_image

    parts = []
    for start in range(0, len(files), batch):
        images = [decode_image(f.read_bytes()) for f in files[start : start + batch]]
        parts.append(extractor.encode(images))
    return np.concatenate(parts)


def evaluate(extractor, ids: list[str], vectors: np.ndarray, queries: list[dict], k: int = 5) -> list[dict]:
    texts = [q["text"] for q in queries]
    scores = extractor.encode_text(texts) @ vectors.T
    results = []
    for q, row in zip(queries, scores):
        order = np.argsort(-row, kind="stable")
        ranked = [ids[i] for i in order]
        relevant = set(q["relevant"])
        top = ranked[:k]
        hits = sum(1 for r in top if r in relevant)
        first = next((i + 1 for i, r in enumerate(ranked) if r in relevant), None)
        results.append(
            {
                "text": q["text"],
                "in_vocabulary": q.get("in_vocabulary", True),
                "relevant": len(relevant),
                "p_at_k": hits / k,
                "best_p_at_k": min(len(relevant), k) / k,
                "recall_at_k": hits / len(relevant) if relevant else None,
                "first_relevant_rank": first,
                "top": top,
            }
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lookalike.models.concepts_eval", description=__doc__.split("\n")[0])
    parser.add_argument("dev_dir", type=Path)
    parser.add_argument("--queries", type=Path, help="JSON list of {text, relevant, in_vocabulary}")
    parser.add_argument("--grid", action="store_true", help="also sweep top-k and temperature (query side only)")
    args = parser.parse_args(argv)

    from lookalike.models import ModelSettings, get_extractor

    queries = json.loads(args.queries.read_text()) if args.queries else DEV_QUERIES
    ids, files = gallery(args.dev_dir)
    base = ModelSettings()
    extractor = get_extractor("concepts", base)
    vectors = encode_gallery(extractor, files)
    results = evaluate(extractor, ids, vectors, queries)
    print(f"gallery: {len(ids)} images; top_k={extractor.top_k}, temperature={extractor.temperature}")
    print("| query | ImageNet class? | relevant | P@5 | best P@5 | R@5 | first relevant rank | top 5 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        recall = "-" if r["recall_at_k"] is None else f"{r['recall_at_k']:.2f}"
        print(
            f"| {r['text']} | {'yes' if r['in_vocabulary'] else 'no'} | {r['relevant']} | {r['p_at_k']:.2f} | "
            f"{r['best_p_at_k']:.2f} | {recall} | {r['first_relevant_rank']} | {', '.join(r['top'])} |"
        )
    inv = [r for r in results if r["in_vocabulary"] and r["relevant"]]
    print(
        f"\nin-vocabulary queries: {len(inv)}; mean P@5 {np.mean([r['p_at_k'] for r in inv]):.3f} "
        f"(best possible {np.mean([r['best_p_at_k'] for r in inv]):.3f}); mean R@5 "
        f"{np.mean([r['recall_at_k'] for r in inv]):.3f}; relevant image first: "
        f"{sum(r['first_relevant_rank'] == 1 for r in inv)}/{len(inv)}"
    )
    if args.grid:
        print("\n| top_k | temperature | mean P@5 | mean R@5 | first relevant at rank 1 |")
        print("|---|---|---|---|---|")
        for top_k in (1, 5, 10, 20, 50, 1000):
            for temperature in (0.02, 0.05, 0.1):
                variant = get_extractor(
                    "concepts", base.model_copy(update={"concepts_top_k": top_k, "concepts_temperature": temperature})
                )
                rs = [r for r in evaluate(variant, ids, vectors, queries) if r["in_vocabulary"] and r["relevant"]]
                print(
                    f"| {top_k} | {temperature} | {np.mean([r['p_at_k'] for r in rs]):.3f} | "
                    f"{np.mean([r['recall_at_k'] for r in rs]):.3f} | {sum(r['first_relevant_rank'] == 1 for r in rs)}/{len(rs)} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
