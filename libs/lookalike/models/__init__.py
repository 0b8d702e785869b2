"""Feature extractors: built-ins plus one per model-repository folder, loaded lazily, looked up by name.

    from lookalike.models import EXTRACTORS, get_extractor
    extractor = get_extractor("effnet-lite0")          # nothing loaded yet
    vectors = extractor.encode([pil_image, ...])        # loads the ONNX model on first use
    get_extractor("concepts").encode_text(["a photo of a dog"])   # same space as its images

Built-ins: ``effnet-lite0`` (1280-d, cosine), ``phash`` (64-bit binary, Hamming) and ``concepts``
(ImageNet-1k class distribution, 1000-d, cosine; text queries through a shipped sentence embedder).
Every folder of the model repository (``LOOKALIKE_MODEL_REPOSITORY``) with a ``lookalike.json`` adds one
more - ``siglip``, ``clip``, ``dinov2`` or ``custom:<name>`` (see :mod:`lookalike.models.manifest`);
``python -m lookalike.models.export clip|siglip|dinov2`` writes such folders from local weights.

``EXTRACTORS`` maps each name to its :class:`ExtractorSpec` (dim, metric, vector type, text support),
which is all a collection needs to create its vector fields; it reflects the repository as it is now.
Serving needs onnxruntime, numpy and ``tokenizers`` only; PyTorch is used by the export code alone.
"""

from __future__ import annotations

import threading

from .base import (
    DEFAULT_MODEL_REPOSITORY,
    Extractor,
    ExtractorSpec,
    ModelSettings,
    TextNotSupportedError,
    UnknownExtractorError,
)
from .concepts import Concepts
from .effnet import EffnetLite0
from .manifest import MANIFEST_FILE, ManifestError, ModelManifest, load_manifest
from .onnxmodel import OnnxModelExtractor
from .phash import PHash
from .registry import ExtractorRegistry, scan

__all__ = [
    "DEFAULT_MODEL_REPOSITORY",
    "EXTRACTORS",
    "MANIFEST_FILE",
    "Concepts",
    "EffnetLite0",
    "Extractor",
    "ExtractorRegistry",
    "ExtractorSpec",
    "ManifestError",
    "ModelManifest",
    "ModelSettings",
    "OnnxModelExtractor",
    "PHash",
    "TextNotSupportedError",
    "UnknownExtractorError",
    "available_extractors",
    "get_extractor",
    "load_manifest",
    "scan",
]

# name -> ExtractorSpec for the environment's settings (LOOKALIKE_MODEL_REPOSITORY), read-only and live.
EXTRACTORS: ExtractorRegistry = ExtractorRegistry()

_shared: dict[tuple, Extractor] = {}
_shared_lock = threading.Lock()


def available_extractors(settings: object | None = None) -> dict[str, ExtractorSpec]:
    """``name -> spec`` for ``settings`` (None: the environment), as the repository is now."""
    return {name: entry.spec for name, entry in scan(settings).entries.items()}


def get_extractor(name: str, settings: object | None = None, *, shared: bool = True) -> Extractor:
    """The extractor called ``name`` - not loaded until first used (or ``.load()``).

    ``settings``: a :class:`ModelSettings`, any settings object with fields of the same names (e.g.
    ``lookalike.config.Settings``), or None (environment). With ``shared`` (the default) every call
    with equal settings returns the same instance while the extractor's definition is unchanged, so a
    model is loaded once per process however often it is looked up; ``shared=False`` gives a new
    instance. Raises :class:`UnknownExtractorError`.
    """
    model_settings = ModelSettings.coerce(settings)
    entries = scan(model_settings).entries
    entry = entries.get(name)
    if entry is None:
        raise UnknownExtractorError(name, sorted(entries))
    if not shared:
        return entry.factory(model_settings)
    key = (name, model_settings, entry.version)
    with _shared_lock:
        extractor = _shared.get(key)
        if extractor is None:
            extractor = _shared[key] = entry.factory(model_settings)
        return extractor
