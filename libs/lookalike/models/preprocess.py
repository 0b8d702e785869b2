"""Image preprocessing from a recipe: resize policy, crop, resampling, mean/std, channel order, layout.

Every image model's recipe is data (:class:`ImageRecipe`): the built-in EfficientNet-Lite0 uses one,
and each model-repository entry declares its own in ``lookalike.json`` (``image.preprocess``), so a
SigLIP (squash to 224, mean = std = 0.5), a CLIP (shorter side 224 + centre crop, CLIP statistics) and
a DINOv2 (shorter side 256 + centre 224, ImageNet statistics) each get exactly their training recipe.

Images come in decoded: ``lookalike.imaging.decode_image`` has applied the EXIF orientation, composited
transparency over white and refused decompression bombs / truncated files before any of this runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

from ..imaging import to_rgb

__all__ = [
    "CENTER_CROP_RATIO",
    "RESAMPLING",
    "ImageRecipe",
    "ResizePolicy",
    "preprocess_images",
    "resize_image",
]

ResizePolicy = Literal["squash", "center_crop", "letterbox"]
ChannelOrder = Literal["RGB", "BGR"]
Layout = Literal["NCHW", "NHWC"]

CENTER_CROP_RATIO = 0.875  # 224 / 256: the standard ImageNet evaluation crop

RESAMPLING: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def _as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(v) for v in size)
    return h, w


def resize_image(
    image: Image.Image,
    size: int | Sequence[int] = 224,
    policy: ResizePolicy = "center_crop",
    *,
    fill: tuple[int, int, int] = (0, 0, 0),
    resample: Image.Resampling = Image.Resampling.BICUBIC,
    crop_ratio: float = CENTER_CROP_RATIO,
) -> Image.Image:
    """One RGB image to ``size`` (an int: square; or ``(height, width)``) by ``policy``.

    - ``squash``: the whole image to size (aspect ratio not kept, nothing lost);
    - ``center_crop``: the largest central window of the target's aspect ratio, shrunk by
      ``crop_ratio`` (0.875: "shorter side 256, centre 224"; 1.0: "shorter side 224, centre 224"),
      resampled to size in one antialiased step;
    - ``letterbox``: the whole image scaled to fit, centred on a ``fill`` canvas.
    """
    h, w = _as_hw(size)
    iw, ih = image.size
    if policy == "squash":
        return image.resize((w, h), resample)
    if policy == "center_crop":
        if not 0.0 < crop_ratio <= 1.0:
            raise ValueError(f"crop_ratio must be in (0, 1], got {crop_ratio}")
        if iw * h <= ih * w:  # width-limited: the window spans the image's width (times crop_ratio)
            cw = iw * crop_ratio
            ch = cw * h / w
        else:
            ch = ih * crop_ratio
            cw = ch * w / h
        left, top = (iw - cw) / 2, (ih - ch) / 2
        return image.resize((w, h), resample, box=(left, top, left + cw, top + ch))
    if policy == "letterbox":
        scale = min(w / iw, h / ih)
        nw, nh = max(1, round(iw * scale)), max(1, round(ih * scale))
        canvas = Image.new("RGB", (w, h), fill)
        canvas.paste(image.resize((nw, nh), resample), ((w - nw) // 2, (h - nh) // 2))
        return canvas
    raise ValueError(f"unknown resize policy {policy!r}")


@dataclass(frozen=True)
class ImageRecipe:
    """How one model wants its pixels. ``mean``/``std`` are in 0..1 units (pixel / 255)."""

    size: tuple[int, int] = (224, 224)  # (height, width) of the model input
    resize: ResizePolicy = "center_crop"
    crop_ratio: float = CENTER_CROP_RATIO
    resample: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: ChannelOrder = "RGB"
    layout: Layout = "NCHW"
    _scale: np.ndarray = field(init=False, repr=False, compare=False)
    _shift: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _as_hw(self.size))
        if self.resample not in RESAMPLING:
            raise ValueError(f"unknown resampling {self.resample!r}; one of {', '.join(RESAMPLING)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each, std > 0")
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        if self.channel_order == "BGR":
            mean, std = mean[::-1], std[::-1]  # statistics follow the channels they describe
        object.__setattr__(self, "_scale", (1.0 / (255.0 * std)).astype(np.float32))
        object.__setattr__(self, "_shift", (mean / std).astype(np.float32))

    @property
    def fill(self) -> tuple[int, int, int]:
        """Letterbox padding: the mean colour, which normalises to ~0."""
        return tuple(int(round(m * 255)) for m in self.mean)  # type: ignore[return-value]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One image's tensor shape without the batch axis."""
        h, w = self.size
        return (3, h, w) if self.layout == "NCHW" else (h, w, 3)

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        return preprocess_images(images, self)


def preprocess_images(images: Sequence[Image.Image], recipe: ImageRecipe) -> np.ndarray:
    """Images -> float32 [N,3,H,W] (or [N,H,W,3]), normalised, C-contiguous."""
    h, w = recipe.size
    resample = RESAMPLING[recipe.resample]
    batch = np.empty((len(images), h, w, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        rgb = image if image.mode == "RGB" else to_rgb(image)
        batch[i] = np.asarray(
            resize_image(rgb, (h, w), recipe.resize, fill=recipe.fill, resample=resample, crop_ratio=recipe.crop_ratio)
        )
    if recipe.channel_order == "BGR":
        batch = batch[..., ::-1]
    x = batch.astype(np.float32) * recipe._scale - recipe._shift  # broadcast over the channel axis
    if recipe.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32)
