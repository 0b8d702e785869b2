"""``lookalike.json``: what turns a model-repository folder into a feature extractor.

A model repository is in Triton's layout (``<repo>/<model>/config.pbtxt``, ``<repo>/<model>/1/model.onnx``).
Any model folder that also holds a ``lookalike.json`` becomes an extractor - adding a model is dropping
a folder, no code. The manifest lives in the folder of the model's image tower; a text tower (CLIP,
SigLIP) is a second Triton model in the same repository that the manifest names::

    models/clip/lookalike.json         this file
    models/clip/config.pbtxt           Triton: the image tower
    models/clip/1/model.onnx           pixel_values [N,3,224,224] -> image_embeds [N,512]
    models/clip-text/config.pbtxt      Triton: the text tower
    models/clip-text/1/model.onnx      input_ids, attention_mask [N,L] -> text_embeds [N,512]
    models/clip-text/tokenizer.json    the tokenizer (Hugging Face `tokenizers` format)

Example (``python -m lookalike.models.export clip ...`` writes one)::

    {
      "format": "lookalike.extractor/1",
      "extractor": "clip",
      "family": "clip",
      "description": "CLIP ViT-B/32 (weights: ...)",
      "dimension": 512,
      "metric": "COSINE",
      "image": {
        "version": "1", "file": "model.onnx", "input": "pixel_values", "output": "image_embeds",
        "preprocess": {"size": [224, 224], "resize": "center_crop", "crop_ratio": 1.0,
                       "resample": "bicubic", "mean": [0.4815, 0.4578, 0.4082],
                       "std": [0.2686, 0.2613, 0.2758], "channel_order": "RGB", "layout": "NCHW"}
      },
      "text": {
        "model": "clip-text", "version": "1", "file": "model.onnx",
        "input_ids": "input_ids", "attention_mask": "attention_mask", "output": "text_embeds",
        "tokenizer": "tokenizer.json", "max_length": 77, "padding": "longest", "pad_id": 49407
      }
    }

Extractor names: ``siglip``, ``clip``, ``dinov2`` or ``custom:<name>``. Without an ``extractor`` field the
folder name decides: a family name as is, anything else ``custom:<folder>``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .preprocess import RESAMPLING, ImageRecipe

__all__ = [
    "FAMILIES",
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "ImageTower",
    "ManifestError",
    "ModelManifest",
    "Preprocessing",
    "TextTower",
    "default_extractor_name",
    "load_manifest",
    "valid_extractor_name",
]

MANIFEST_FILE = "lookalike.json"
MANIFEST_FORMAT = "lookalike.extractor/1"
FAMILIES = ("siglip", "clip", "dinov2")
_SLUG = r"[a-z0-9][a-z0-9._-]{0,62}"
_CUSTOM_RE = re.compile(rf"^custom:{_SLUG}$")
_FOLDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a Triton model name we accept


class ManifestError(ValueError):
    """A ``lookalike.json`` that cannot be used; the message names the file and the problem."""


def valid_extractor_name(name: str) -> bool:
    return name in FAMILIES or bool(_CUSTOM_RE.match(name))


def default_extractor_name(folder: str) -> str:
    """The name a folder without an ``extractor`` field gets: a family name as is, else custom:<folder>."""
    return folder if folder in FAMILIES else f"custom:{folder.lower()}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class Preprocessing(_Strict):
    """The image tower's recipe (see :class:`lookalike.models.preprocess.ImageRecipe`)."""

    size: tuple[int, int] = Field(description="model input (height, width)")
    resize: Literal["squash", "center_crop", "letterbox"] = "center_crop"
    crop_ratio: float = Field(default=0.875, gt=0.0, le=1.0)
    resample: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"

    @field_validator("size", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) else value

    @field_validator("size")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1 or max(value) > 4096:
            raise ValueError(f"size must be within 1..4096, got {list(value)}")
        return value

    @field_validator("resample")
    @classmethod
    def _resample(cls, value: str) -> str:
        if value not in RESAMPLING:
            raise ValueError(f"unknown resampling {value!r}; one of {', '.join(RESAMPLING)}")
        return value

    @field_validator("std")
    @classmethod
    def _std(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError("std values must be > 0")
        return value

    def recipe(self) -> ImageRecipe:
        return ImageRecipe(
            size=self.size,
            resize=self.resize,
            crop_ratio=self.crop_ratio,
            resample=self.resample,
            mean=self.mean,
            std=self.std,
            channel_order=self.channel_order,
            layout=self.layout,
        )


class ImageTower(_Strict):
    """The image tower: this folder's ``<version>/<file>`` (the Triton model of the same name)."""

    version: str = "1"
    file: str = "model.onnx"
    input: str = "pixel_values"
    output: str = "image_embeds"
    preprocess: Preprocessing


class TextTower(_Strict):
    """A text tower in the same space as the images: a sibling Triton model and its tokenizer."""

    model: str = Field(description="folder of the text tower in the same repository (a Triton model name)")
    version: str = "1"
    file: str = "model.onnx"
    input_ids: str = "input_ids"
    attention_mask: str | None = "attention_mask"  # None: the graph takes token ids only
    output: str = "text_embeds"
    tokenizer: str = Field(default="tokenizer.json", description="relative to the text tower's folder")
    max_length: int = Field(default=77, ge=1, le=4096)
    padding: Literal["longest", "max_length"] = "longest"  # SigLIP was trained with max_length
    pad_id: int = Field(default=0, ge=0)
    lowercase: bool = False  # lower-case before tokenising (when the tokenizer does not itself)

    @field_validator("model")
    @classmethod
    def _folder(cls, value: str) -> str:
        if not _FOLDER_RE.match(value):
            raise ValueError(f"text model {value!r} is not a plain folder name")
        return value


class ModelManifest(_Strict):
    format: Literal["lookalike.extractor/1"] = MANIFEST_FORMAT
    extractor: str | None = None
    family: Literal["siglip", "clip", "dinov2", "custom"] = "custom"
    description: str = ""
    dimension: int = Field(ge=1, le=32768)
    metric: Literal["COSINE", "IP", "L2"] = "COSINE"
    normalize: bool = True  # L2-normalise the outputs (required for COSINE / IP)
    image: ImageTower
    text: TextTower | None = None
    source: dict[str, Any] = Field(default_factory=dict)  # provenance, free-form (never read)

    @field_validator("extractor")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not valid_extractor_name(value):
            raise ValueError(
                f"extractor name {value!r} is not allowed: use one of {', '.join(FAMILIES)} or custom:<name> "
                "(lower-case letters, digits, '.', '_', '-')"
            )
        return value

    @model_validator(mode="after")
    def _normalised(self) -> ModelManifest:
        if self.metric in ("COSINE", "IP") and not self.normalize:
            raise ValueError(f"metric {self.metric} needs normalize: true")
        return self

    def name_for(self, folder: str) -> str:
        return self.extractor or default_extractor_name(folder)

    def dump(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=False), indent=2) + "\n"


def load_manifest(path: str | Path) -> ModelManifest:
    """Parse and validate one ``lookalike.json``; :class:`ManifestError` names the file and the field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not readable JSON: {exc}") from exc
    try:
        return ModelManifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ManifestError(f"{path}: {problems}") from exc
