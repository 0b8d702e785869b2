"""A feature extractor defined by a model-repository folder: ``lookalike.json`` + ONNX towers.

One class serves every exported model (SigLIP, CLIP, DINOv2, ``custom:<name>``): the manifest gives the
dimension, metric, input/output tensor names, the image preprocessing recipe and, when there is one,
the text tower and its tokenizer. Graph inputs are checked against the manifest when the model loads,
so a mismatched export fails at load with a message, not with wrong vectors.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..sessions import ModelSession, open_session_for
from .base import Extractor, ExtractorSpec, ModelSettings
from .manifest import ModelManifest
from .preprocess import ImageRecipe

log = logging.getLogger(__name__)

__all__ = ["OnnxModelExtractor", "spec_from_manifest"]


def spec_from_manifest(name: str, manifest: ModelManifest) -> ExtractorSpec:
    return ExtractorSpec(
        name=name,
        dim=manifest.dimension,
        metric=manifest.metric,
        vector_type="float",
        description=manifest.description or f"{manifest.family} model from the model repository",
        supports_text=manifest.text is not None,
    )


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32, copy=False)


class OnnxModelExtractor(Extractor):
    """Image (and optionally text) towers exported to ONNX, described by a :class:`ModelManifest`."""

    def __init__(
        self,
        settings: ModelSettings | object | None = None,
        *,
        name: str,
        model_dir: Path,
        manifest: ModelManifest,
    ) -> None:
        super().__init__(settings)
        self.spec = spec_from_manifest(name, manifest)
        self.manifest = manifest
        self.model_dir = Path(model_dir)
        self.recipe: ImageRecipe = manifest.image.preprocess.recipe()
        self._image: ModelSession | None = None
        self._text: ModelSession | None = None
        self._tokenizer: object | None = None
        self._tokenizer_lock = threading.Lock()

    # --- paths ---------------------------------------------------------------------------------------

    @property
    def image_model_path(self) -> Path:
        tower = self.manifest.image
        return self.model_dir / tower.version / tower.file

    @property
    def text_model_dir(self) -> Path | None:
        text = self.manifest.text
        return None if text is None else self.model_dir.parent / text.model

    @property
    def text_model_path(self) -> Path | None:
        text, folder = self.manifest.text, self.text_model_dir
        return None if text is None or folder is None else folder / text.version / text.file

    # --- loading -------------------------------------------------------------------------------------

    def _open(self, path: Path) -> ModelSession:
        """The tower's session on the configured backend (in-process ONNX Runtime, or the Triton model
        ``<folder>`` / ``<folder>-text`` of the same repository on a Triton server)."""
        backend = getattr(self.settings, "encoder_backend", "onnxruntime")
        if backend == "onnxruntime" and not path.is_file():
            raise FileNotFoundError(f"{self.spec.name}: no model at {path} (the folder's lookalike.json names it)")
        return open_session_for(path, self.settings)

    def _load(self) -> None:
        image = self._open(self.image_model_path)
        self._check_image_graph(image)
        text = tokenizer = None
        if self.manifest.text is not None:
            assert self.text_model_path is not None and self.text_model_dir is not None
            text = self._open(self.text_model_path)
            self._check_text_graph(text)
            tokenizer = self._load_tokenizer(self.text_model_dir / self.manifest.text.tokenizer)
        self._image, self._text, self._tokenizer = image, text, tokenizer

    def _unload(self) -> None:
        self._image = self._text = self._tokenizer = None

    def _check_image_graph(self, session: ModelSession) -> None:
        tower = self.manifest.image
        inputs = {t.name: t for t in session.inputs}
        outputs = {t.name: t for t in session.outputs}
        pixel = inputs.get(tower.input)
        where = f"{self.spec.name} ({self.image_model_path})"
        if pixel is None:
            raise ValueError(f"{where}: no input {tower.input!r}; the graph has {sorted(inputs)}")
        if pixel.dtype != np.float32 or len(pixel.shape) != 4:
            raise ValueError(f"{where}: input {tower.input!r} must be float32 [N,...] of rank 4, got {pixel}")
        expected = self.recipe.input_shape
        for got, want in zip(pixel.shape[1:], expected):
            if isinstance(got, int) and got != want:
                raise ValueError(f"{where}: input {tower.input!r} is {list(pixel.shape)}, the manifest's "
                                 f"preprocessing makes [N,{','.join(map(str, expected))}]")
        out = outputs.get(tower.output)
        if out is None:
            raise ValueError(f"{where}: no output {tower.output!r}; the graph has {sorted(outputs)}")
        if isinstance(out.shape[-1], int) and out.shape[-1] != self.spec.dim:
            raise ValueError(f"{where}: output {tower.output!r} has {out.shape[-1]} dimensions, "
                             f"the manifest says {self.spec.dim}")

    def _check_text_graph(self, session: ModelSession) -> None:
        text = self.manifest.text
        assert text is not None
        inputs = {t.name: t for t in session.inputs}
        outputs = {t.name: t for t in session.outputs}
        where = f"{self.spec.name} text tower ({self.text_model_path})"
        wanted = [text.input_ids] + ([text.attention_mask] if text.attention_mask else [])
        missing = [n for n in wanted if n not in inputs]
        if missing:
            raise ValueError(f"{where}: no input {missing}; the graph has {sorted(inputs)}")
        extra = sorted(set(inputs) - set(wanted))
        if extra:
            raise ValueError(f"{where}: the graph also needs {extra}, which the manifest does not feed")
        out = outputs.get(text.output)
        if out is None:
            raise ValueError(f"{where}: no output {text.output!r}; the graph has {sorted(outputs)}")
        if isinstance(out.shape[-1], int) and out.shape[-1] != self.spec.dim:
            raise ValueError(f"{where}: output {text.output!r} has {out.shape[-1]} dimensions, "
                             f"the image tower has {self.spec.dim}")
        self._text_dtypes = {n: inputs[n].dtype for n in wanted}

    def _load_tokenizer(self, path: Path) -> object:
        text = self.manifest.text
        assert text is not None
        if not path.is_file():
            raise FileNotFoundError(f"{self.spec.name}: no tokenizer at {path}")
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - a main dependency
            raise RuntimeError(f"{self.spec.name}: the text tower needs the 'tokenizers' library") from exc
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_padding()  # padded by us, below, as the manifest says
        tokenizer.enable_truncation(max_length=text.max_length)
        return tokenizer

    # --- encoding ------------------------------------------------------------------------------------

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.recipe(images)

    def _encode(self, images: list[Image.Image]) -> np.ndarray:
        session = self._image
        assert session is not None
        tower = self.manifest.image
        parts = []
        step = self.settings.batch_size
        for start in range(0, len(images), step):
            pixels = self.preprocess(images[start : start + step])
            parts.append(np.asarray(session.run({tower.input: pixels}, [tower.output])[tower.output]))
        out = np.concatenate(parts, axis=0).astype(np.float32, copy=False)
        return self._finish(out, len(images))

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The text tower's feeds for ``texts``: token ids (and attention mask), padded as the manifest says."""
        self.load()
        text = self.manifest.text
        if text is None or self._tokenizer is None:
            raise RuntimeError(f"{self.spec.name} has no text tower")
        items = [t.lower() for t in texts] if text.lowercase else list(texts)
        with self._tokenizer_lock:
            encodings = self._tokenizer.encode_batch(items)  # type: ignore[attr-defined]
        length = text.max_length if text.padding == "max_length" else max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), length), text.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        for i, e in enumerate(encodings):
            n = min(len(e.ids), length)
            ids[i, :n] = e.ids[:n]
            mask[i, :n] = 1
        feeds = {text.input_ids: ids.astype(self._text_dtypes[text.input_ids], copy=False)}
        if text.attention_mask:
            feeds[text.attention_mask] = mask.astype(self._text_dtypes[text.attention_mask], copy=False)
        return feeds

    def _encode_text(self, texts: list[str]) -> np.ndarray:
        session, text = self._text, self.manifest.text
        assert session is not None and text is not None
        parts = []
        step = self.settings.batch_size
        for start in range(0, len(texts), step):
            feeds = self.tokenize(texts[start : start + step])
            parts.append(np.asarray(session.run(feeds, [text.output])[text.output]))
        out = np.concatenate(parts, axis=0).astype(np.float32, copy=False)
        return self._finish(out, len(texts))

    def _finish(self, out: np.ndarray, n: int) -> np.ndarray:
        if out.ndim != 2 or out.shape != (n, self.spec.dim):
            raise RuntimeError(f"{self.spec.name}: the model returned {list(out.shape)}, expected [{n}, {self.spec.dim}]")
        return _l2_normalize(out) if self.manifest.normalize else out
