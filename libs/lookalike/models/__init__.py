"""Feature extractors: one class per model task, loaded lazily, looked up by name.

    from lookalike.models import EXTRACTORS, get_extractor
    extractor = get_extractor("effnet-lite0")          # nothing loaded yet
    vectors = extractor.encode([pil_image, ...])        # loads the ONNX model on first use

``EXTRACTORS`` maps each name to its :class:`ExtractorSpec` (dim, metric, vector type), which is all a
collection needs to create its vector fields. Serving needs onnxruntime only; PyTorch is used by
``lookalike.models.export`` alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .base import (
    DEFAULT_MODEL_REPOSITORY,
    Extractor,
    ExtractorSpec,
    ModelSettings,
    UnknownExtractorError,
)
from .effnet import EffnetLite0
from .phash import PHash

__all__ = [
    "DEFAULT_MODEL_REPOSITORY",
    "EXTRACTORS",
    "EffnetLite0",
    "Extractor",
    "ExtractorSpec",
    "ModelSettings",
    "PHash",
    "UnknownExtractorError",
    "get_extractor",
]

_CLASSES: dict[str, type[Extractor]] = {cls.spec.name: cls for cls in (EffnetLite0, PHash)}

EXTRACTORS: Mapping[str, ExtractorSpec] = MappingProxyType({n: c.spec for n, c in _CLASSES.items()})


def get_extractor(name: str, settings: ModelSettings | None = None) -> Extractor:
    """A new (not yet loaded) extractor by name; keep it and reuse it - loading happens once per
    instance, on first use. Raises :class:`UnknownExtractorError` for an unknown name."""
    try:
        cls = _CLASSES[name]
    except KeyError:
        raise UnknownExtractorError(name, sorted(_CLASSES)) from None
    return cls(settings)
