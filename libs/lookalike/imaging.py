"""Safe image decoding shared by every service.

Uploaded and fetched bytes are untrusted. Everything here:

- refuses more than ``max_bytes`` before touching the data;
- reads only the header first and refuses more than ``max_pixels`` (width x height) BEFORE decoding
  any pixel data, so a small file claiming a huge canvas (a decompression bomb) costs nothing;
  Pillow's own bomb guard (``DecompressionBombError``/``Warning``) is turned into the same error;
- opens only the raster formats in :data:`ALLOWED_FORMATS` (Pillow can also open EPS/PDF-like formats
  through external programs; those are never tried);
- raises on truncated files (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left False) instead of returning a
  half-grey picture.

Error messages are written for end users: services pass them back in gRPC statuses
(``INVALID_ARGUMENT`` for :class:`InvalidImageError`, ``RESOURCE_EXHAUSTED``/``INVALID_ARGUMENT`` for
:class:`ImageTooLargeError`).
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "ImageInfo",
    "ImageTooLargeError",
    "InvalidImageError",
    "decode_image",
    "probe_image",
    "to_rgb",
]

DEFAULT_MAX_BYTES = 32 * 1024 * 1024  # 32 MiB
DEFAULT_MAX_PIXELS = 50_000_000  # 50 megapixels, e.g. 8660 x 5773

Image.init()  # register every plugin now: Image.open(formats=...) only looks at registered ones
ALLOWED_FORMATS: tuple[str, ...] = tuple(
    f
    for f in ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
    if f in Image.OPEN and (f != "AVIF" or features.check("avif"))
)

_MIME_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # multi-picture JPEG (phones); the first picture is an ordinary JPEG
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
}

_WHITE = (255, 255, 255)

# warnings.catch_warnings() swaps a process-wide filter list; serialise our use of it so that two
# threads opening images at once cannot restore each other's filters. Only the header parse runs
# under this lock, never the pixel decoding.
_open_lock = threading.Lock()


class ImageError(ValueError):
    """The bytes cannot be used as an image; ``str(error)`` is a message for the user."""


class InvalidImageError(ImageError):
    """Not an image, an unsupported format, or a corrupt/truncated file."""


class ImageTooLargeError(ImageError):
    """Too many bytes, or too many pixels (checked from the header before decoding)."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # Pillow's format name, e.g. "JPEG", "PNG"
    width: int
    height: int
    mime_type: str


def _check_bytes(data: bytes, max_bytes: int) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"image data must be bytes, not {type(data).__name__}")
    if len(data) == 0:
        raise InvalidImageError("empty image: no bytes were received")
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"image is too large: {len(data):,} bytes (the limit is {max_bytes:,} bytes)"
        )


def _supported() -> str:
    return ", ".join(f for f in ALLOWED_FORMATS if f != "MPO")


def _open(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """Parse the header only and enforce both limits; the pixels are not decoded yet."""
    _check_bytes(data, max_bytes)
    try:
        with _open_lock, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(bytes(data)), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image has too many pixels (possible decompression bomb): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(f"not a recognised image (supported formats: {_supported()})") from exc
    except Exception as exc:  # noqa: BLE001 - a broken header can raise anything from a plugin
        raise InvalidImageError(f"corrupt image header: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"image has an invalid size {width}x{height}")
    if width * height > max_pixels:
        image.close()
        raise ImageTooLargeError(
            f"image has too many pixels: {width}x{height} = {width * height:,} "
            f"(the limit is {max_pixels:,})"
        )
    return image


def _info(image: Image.Image) -> ImageInfo:
    fmt = image.format or "UNKNOWN"
    mime = _MIME_TYPES.get(fmt) or Image.MIME.get(fmt) or "application/octet-stream"
    return ImageInfo(format=fmt, width=image.width, height=image.height, mime_type=mime)


def probe_image(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> ImageInfo:
    """Cheap upload-time validation: limits, header, and Pillow's ``verify()`` - no pixel decoding.

    ``verify()`` checks what a format allows without decoding (PNG chunk CRCs, for example); a JPEG
    cut off in its scan data passes here and is caught by :func:`decode_image`.
    """
    image = _open(data, max_bytes, max_pixels)
    info = _info(image)
    try:
        image.verify()
    except Exception as exc:  # noqa: BLE001
        raise InvalidImageError(f"corrupt {info.format} image: {exc}") from exc
    finally:
        image.close()
    return info


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float greyscale to 8-bit 'L', keeping the tonal range."""
    arr = np.nan_to_num(np.asarray(image, dtype=np.float64))
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if image.mode.startswith("I;16"):
        arr = arr / 257.0  # 0..65535 -> 0..255
    elif image.mode == "F" and lo >= 0.0 and hi <= 1.0:
        arr = arr * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        pass  # 8-bit values stored wide
    elif image.mode == "I" and lo >= 0.0 and hi <= 65535.0:
        arr = arr / 257.0
    else:  # anything else (signed, 32-bit range, HDR floats): stretch min..max
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def to_rgb(image: Image.Image, background: tuple[int, int, int] = _WHITE) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited over ``background``."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
    elif mode == "L" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode.startswith("I") or mode == "F":
        image = _high_bit_depth_to_l(image)
    if image.mode == "RGBA":
        canvas = Image.new("RGB", image.size, background)
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK (Pillow undoes Adobe's inverted CMYK), YCbCr, ...
    return image


def decode_image(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Decode untrusted bytes to a fully loaded 8-bit RGB image, EXIF orientation applied.

    Raises :class:`ImageTooLargeError` (bytes or pixels over the limits - checked before decoding) or
    :class:`InvalidImageError` (not an image, unsupported format, corrupt or truncated). Animated
    formats yield their first frame; transparency is composited over white.
    """
    image = _open(data, max_bytes, max_pixels)
    fmt = image.format or "image"
    try:
        image.load()
    except (Image.DecompressionBombError, MemoryError) as exc:
        raise ImageTooLargeError(f"image is too large to decode: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, ...
        message = str(exc)
        if "truncated" in message or isinstance(exc, EOFError):
            raise InvalidImageError(f"truncated {fmt} image: the file is incomplete ({message})") from exc
        raise InvalidImageError(f"corrupt {fmt} image: {message}") from exc
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # noqa: BLE001 - a malformed EXIF block must not reject a good picture
        pass
    try:
        rgb = to_rgb(image)
    except Exception as exc:  # noqa: BLE001
        raise InvalidImageError(f"unsupported {fmt} pixel format {image.mode!r}: {exc}") from exc
    if rgb.width * rgb.height > max_pixels:  # cannot happen for the formats above; belt and braces
        raise ImageTooLargeError(f"image has too many pixels: {rgb.width}x{rgb.height}")
    return rgb
