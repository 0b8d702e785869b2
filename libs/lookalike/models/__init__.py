"""Feature extractors: one class per model task, loaded lazily, looked up by name.

    from lookalike.models import EXTRACTORS, get_extractor
    extractor = get_extractor("effnet-lite0")          # nothing loaded yet
    vectors = extractor.encode([pil_image, ...])        # loads the ONNX model on first use

``EXTRACTORS`` maps each name to its :class:`ExtractorSpec` (dim, metric, vector type), which is all a
collection needs to create its vector fields. Serving needs onnxruntime only; PyTorch is used by
``lookalike.models.export`` alone.
"""

from __future__ import annotations

import threading
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

_shared: dict[tuple[str, ModelSettings], Extractor] = {}
_shared_lock = threading.Lock()


def get_extractor(name: str, settings: object | None = None, *, shared: bool = True) -> Extractor:
    """The extractor called ``name`` - not loaded until first used (or ``.load()``).

    ``settings``: a :class:`ModelSettings`, any settings object with fields of the same names (e.g.
    ``lookalike.config.Settings``), or None (environment). With ``shared`` (the default) every call
    with equal settings returns the same instance, so a model is loaded once per process however often
    it is looked up; ``shared=False`` gives a new instance. Raises :class:`UnknownExtractorError`.
    """
    try:
        cls = _CLASSES[name]
    except KeyError:
        raise UnknownExtractorError(name, sorted(_CLASSES)) from None
    model_settings = ModelSettings.coerce(settings)
    if not shared:
        return cls(model_settings)
    key = (name, model_settings)
    with _shared_lock:
        extractor = _shared.get(key)
        if extractor is None:
            extractor = _shared[key] = cls(model_settings)
        return extractor
