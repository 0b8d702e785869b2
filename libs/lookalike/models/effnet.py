"""EfficientNet-Lite0 (ImageNet-1k) image embeddings from the exported ONNX graph.

Preprocessing recipe (chosen by measurement on a copy-detection set, see models/effnet-lite0/MODEL.md):
RGB -> resize so the shorter side is 256 and take the central 224x224 (standard ImageNet evaluation
crop, done as one bicubic antialiased resample) -> (x - 127) / 128 per channel (the inception-style
normalisation the TensorFlow EfficientNet-Lite checkpoints were trained with) -> channel-first
float32 [N,3,224,224]. The graph returns the L2-normalised 1280-d embedding and the 1000 ImageNet
class logits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from PIL import Image

from ..sessions import ModelSession, TensorInfo, open_session
from .base import Extractor, ExtractorSpec, ModelSettings
from .preprocess import (
    CENTER_CROP_RATIO,
    RESAMPLING,
    ImageRecipe,
    ResizePolicy,
    preprocess_images,
    resize_image,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_NORMALIZATION",
    "DEFAULT_RESIZE",
    "NORMALIZATIONS",
    "EffnetLite0",
    "ResizePolicy",
    "preprocess",
    "recipe",
    "resize_image",
]

Normalization = Literal["imagenet", "inception"]

NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # torchvision/ImageNet statistics - what the PyTorch port's README shows.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # (x - 127) / 128: what the TensorFlow EfficientNet-Lite ("edge") checkpoints, which the shipped
    # weights were converted from, were trained with.
    "inception": ((127.0 / 255,) * 3, (128.0 / 255,) * 3),
}

# Chosen by measurement (bench/eval_preprocess.py; numbers in models/effnet-lite0/MODEL.md).
DEFAULT_RESIZE: ResizePolicy = "center_crop"
DEFAULT_NORMALIZATION: Normalization = "inception"
DEFAULT_RESAMPLE = Image.Resampling.BICUBIC
_RESAMPLE_NAMES = {v: k for k, v in RESAMPLING.items()}


def recipe(
    size: int = 224,
    resize: ResizePolicy = DEFAULT_RESIZE,
    normalization: Normalization = DEFAULT_NORMALIZATION,
    resample: Image.Resampling = DEFAULT_RESAMPLE,
) -> ImageRecipe:
    """EfficientNet-Lite0's preprocessing as an :class:`ImageRecipe`."""
    mean, std = NORMALIZATIONS[normalization]
    return ImageRecipe(
        size=(size, size),
        resize=resize,
        crop_ratio=CENTER_CROP_RATIO,
        resample=_RESAMPLE_NAMES[resample],
        mean=mean,
        std=std,
    )


def preprocess(
    images: Sequence[Image.Image],
    *,
    size: int = 224,
    resize: ResizePolicy = DEFAULT_RESIZE,
    normalization: Normalization = DEFAULT_NORMALIZATION,
    resample: Image.Resampling = DEFAULT_RESAMPLE,
) -> np.ndarray:
    """Images -> float32 [N,3,size,size], normalised (the model's ``pixel_values``)."""
    return preprocess_images(images, recipe(size, resize, normalization, resample))


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


class EffnetLite0(Extractor):
    """EfficientNet-Lite0 global-average-pooled features, 1280-d, L2-normalised (cosine = IP)."""

    spec: ClassVar[ExtractorSpec] = ExtractorSpec(
        name="effnet-lite0",
        dim=1280,
        metric="COSINE",
        vector_type="float",
        description="EfficientNet-Lite0 ImageNet-1k, global-average-pooled features (1280-d)",
    )
    model_name: ClassVar[str] = "effnet-lite0"
    model_version: ClassVar[str] = "1"
    input_name: ClassVar[str] = "pixel_values"
    embedding_output: ClassVar[str] = "embedding"
    logits_output: ClassVar[str] = "logits"

    def __init__(
        self,
        settings: ModelSettings | object | None = None,
        *,
        session: ModelSession | None = None,
        resize: ResizePolicy = DEFAULT_RESIZE,
        normalization: Normalization = DEFAULT_NORMALIZATION,
    ) -> None:
        super().__init__(settings)
        self.resize = resize
        self.normalization = normalization
        self._session: ModelSession | None = None
        self._image_size = 224
        if session is not None:  # an injected session (tests, or a remote runtime)
            self._bind(session)
            self._loaded = True

    @property
    def model_dir(self) -> Path:
        return Path(self.settings.model_repository) / self.model_name

    @property
    def model_path(self) -> Path:
        return self.model_dir / self.model_version / "model.onnx"

    @property
    def session(self) -> ModelSession:
        self.load()
        assert self._session is not None
        return self._session

    @property
    def image_size(self) -> int:
        return self._image_size

    def _load(self) -> None:
        if self.settings.encoder_backend == "onnxruntime" and not self.model_path.is_file():
            raise FileNotFoundError(
                f"{self.model_name}: no model at {self.model_path} (set LOOKALIKE_MODEL_REPOSITORY to "
                "the model repository, or run `make models` to export it)"
            )
        self._bind(
            open_session(
                self.model_path,
                providers=self.settings.providers or None,
                intra_op_threads=self.settings.intra_op_threads,
                inter_op_threads=self.settings.inter_op_threads,
                backend=self.settings.encoder_backend,
                triton_url=self.settings.triton_url,
            )
        )

    def _unload(self) -> None:
        self._session = None

    def _bind(self, session: ModelSession) -> None:
        """Check the graph's declared inputs/outputs and read the input size from them."""
        inputs = {t.name: t for t in session.inputs}
        outputs = {t.name: t for t in session.outputs}
        pixel = inputs.get(self.input_name)
        if pixel is None or len(pixel.shape) != 4 or pixel.dtype != np.float32:
            raise ValueError(
                f"{self.model_name}: expected input {self.input_name} float32 [N,3,H,W], got {pixel}"
            )
        _, channels, height, width = pixel.shape
        if channels != 3 or not isinstance(height, int) or height != width:
            raise ValueError(f"{self.model_name}: expected a fixed square RGB input, got {pixel.shape}")
        emb: TensorInfo | None = outputs.get(self.embedding_output)
        if emb is None or emb.shape[-1] != self.spec.dim:
            raise ValueError(
                f"{self.model_name}: expected output {self.embedding_output} [N,{self.spec.dim}], got {emb}"
            )
        self._image_size = int(height)
        self._session = session

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        return preprocess_images(images, recipe(self._image_size, self.resize, self.normalization))

    def predict(
        self, images: Sequence[Image.Image], outputs: Sequence[str] = ("embedding", "logits")
    ) -> dict[str, np.ndarray]:
        """Run the graph on ``images`` in batches of ``settings.batch_size``; outputs by name."""
        session = self.session
        names = list(outputs)
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        step = self.settings.batch_size
        for start in range(0, len(images), step):
            pixels = self.preprocess(images[start : start + step])
            result = session.run({self.input_name: pixels}, names)
            for n in names:
                parts[n].append(result[n])
        out = {n: np.concatenate(p, axis=0) if p else np.empty((0,)) for n, p in parts.items()}
        if self.embedding_output in out:
            # The graph normalises already; re-normalising keeps the contract for any runtime (fp16 ...).
            out[self.embedding_output] = l2_normalize(out[self.embedding_output].astype(np.float32))
        return out

    def _encode(self, images: list[Image.Image]) -> np.ndarray:
        return self.predict(images, outputs=(self.embedding_output,))[self.embedding_output]

    def labels(self) -> list[str] | None:
        """ImageNet-1k class names in logit order (models/effnet-lite0/labels.txt), if present."""
        path = self.model_dir / "labels.txt"
        if not path.is_file():
            return None
        return path.read_text().splitlines()
