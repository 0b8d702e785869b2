"""lookalike.imaging: safe decoding of untrusted bytes."""

from __future__ import annotations

import io
import struct
import threading
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image
from skimage import data

from lookalike.imaging import (
    ImageError,
    ImageInfo,
    ImageTooLargeError,
    InvalidImageError,
    decode_image,
    probe_image,
)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_png(width: int, height: int, *, bit_depth: int = 8, color_type: int = 2, idat: bytes | None = None) -> bytes:
    """A PNG built by hand, so the header can claim any size."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def photo_jpeg(photo) -> bytes:
    return encode(photo, "JPEG", quality=90)


# --- happy path ---------------------------------------------------------------------------------


def test_decode_jpeg_returns_loaded_rgb(photo_jpeg, photo):
    image = decode_image(photo_jpeg)
    assert image.mode == "RGB" and image.size == photo.size
    diff = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(photo, dtype=np.int16)).mean()
    assert diff < 4  # a q90 JPEG of the same picture


def test_probe_reports_format_size_and_mime(photo_jpeg, photo):
    assert probe_image(photo_jpeg) == ImageInfo("JPEG", 512, 512, "image/jpeg")
    png = encode(photo.resize((64, 32)), "PNG")
    assert probe_image(png) == ImageInfo("PNG", 64, 32, "image/png")
    webp = encode(photo.resize((16, 16)), "WEBP")
    assert probe_image(webp).mime_type == "image/webp"


def test_errors_are_value_errors():
    assert issubclass(InvalidImageError, ImageError) and issubclass(ImageTooLargeError, ImageError)
    assert issubclass(ImageError, ValueError)


# --- not images, corrupt, truncated -------------------------------------------------------------


@pytest.mark.parametrize("fn", [decode_image, probe_image])
def test_empty_bytes(fn):
    with pytest.raises(InvalidImageError, match="empty"):
        fn(b"")


@pytest.mark.parametrize("fn", [decode_image, probe_image])
def test_text_is_not_an_image(fn):
    with pytest.raises(InvalidImageError, match="not a recognised image") as err:
        fn(b"hello, this is a plain text file\n" * 10)
    assert "JPEG" in str(err.value)  # tells the user what is supported


@pytest.mark.parametrize("fn", [decode_image, probe_image])
def test_random_bytes(fn):
    with pytest.raises(InvalidImageError):
        fn(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def test_corrupt_jpeg_body(photo_jpeg):
    broken = bytearray(photo_jpeg)
    broken[600:4000] = b"\x00" * 3400  # wipe the tables / start of scan
    with pytest.raises(InvalidImageError):
        decode_image(bytes(broken))


def test_truncated_jpeg_raises_instead_of_grey_fill(photo_jpeg):
    truncated = photo_jpeg[: len(photo_jpeg) * 6 // 10]
    probe_image(truncated)  # the header is intact: the cheap probe cannot tell ...
    with pytest.raises(InvalidImageError, match="truncated"):
        decode_image(truncated)  # ... but decoding must not silently return a half image


def test_truncated_png(photo):
    png = encode(photo, "PNG")
    with pytest.raises(InvalidImageError):
        decode_image(png[: len(png) // 2])


def test_png_with_bad_crc_fails_probe(photo):
    png = bytearray(encode(photo.resize((32, 32)), "PNG"))
    idat = png.index(b"IDAT")
    png[idat + 10] ^= 0xFF  # flip bits inside the compressed data: CRC mismatch
    with pytest.raises(InvalidImageError):
        probe_image(bytes(png))


def test_format_outside_the_allow_list_is_refused():
    ppm = b"P6\n2 2\n255\n" + bytes(range(12))  # Pillow reads PPM, but it is not an upload format here
    assert Image.open(io.BytesIO(ppm)).size == (2, 2)
    with pytest.raises(InvalidImageError, match="not a recognised image"):
        decode_image(ppm)


# --- size limits and decompression bombs ---------------------------------------------------------


@pytest.mark.parametrize("fn", [decode_image, probe_image])
def test_too_many_bytes(fn, photo_jpeg):
    with pytest.raises(ImageTooLargeError, match="bytes"):
        fn(photo_jpeg, max_bytes=1000)
    fn(photo_jpeg, max_bytes=len(photo_jpeg))  # exactly at the limit is fine


@pytest.mark.parametrize("fn", [decode_image, probe_image])
def test_decompression_bomb_header_is_refused_before_decoding(fn):
    bomb = raw_png(100_000, 100_000)  # claims 10 gigapixels (30 GB of RGB) in < 100 bytes
    assert len(bomb) < 100
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="too many pixels"):
        fn(bomb, max_pixels=50_000_000)
    assert time.perf_counter() - start < 1.0


def test_pixel_cap_is_checked_explicitly():
    # 8000 x 8000 = 64 MP is below Pillow's own bomb threshold (~89 MP): only our cap refuses it
    header_only = raw_png(8000, 8000)
    with pytest.raises(ImageTooLargeError, match="8000x8000"):
        decode_image(header_only, max_pixels=1_000_000)
    with pytest.raises(ImageTooLargeError):
        probe_image(header_only, max_pixels=1_000_000)


def test_pillow_bomb_error_and_warning_become_too_large():
    # Above 2x Image.MAX_IMAGE_PIXELS Pillow raises DecompressionBombError itself ...
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        decode_image(raw_png(100_000, 100_000), max_pixels=10**12)
    # ... between 1x and 2x it only warns; that warning must not slip through as a decode.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any leaked warning would fail the test
        with pytest.raises(ImageTooLargeError):
            decode_image(raw_png(10_000, 10_000), max_pixels=10**12)


def test_concurrent_decoding_restores_warning_filters(photo_jpeg):
    before = list(warnings.filters)
    bomb = raw_png(10_000, 10_000)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            if i % 2:
                decode_image(photo_jpeg)
            else:
                with pytest.raises(ImageTooLargeError):
                    decode_image(bomb, max_pixels=10**12)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert list(warnings.filters) == before


# --- orientation and pixel formats ----------------------------------------------------------------


def test_exif_orientation_is_applied():
    # 40 x 20, left half red, right half blue; EXIF 6 = "rotate 90 deg clockwise to display"
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())
    assert probe_image(jpeg).width == 40  # the probe reports the stored size
    image = decode_image(jpeg)
    assert image.size == (20, 40)  # portrait after rotation
    top, bottom = np.asarray(image)[5, 10], np.asarray(image)[35, 10]
    assert top[0] > 200 and top[2] < 60  # the left (red) edge is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_cmyk_jpeg_to_rgb(photo):
    cmyk = encode(photo.convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(cmyk)).mode == "CMYK"
    image = decode_image(cmyk)
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image, dtype=np.int16) - np.asarray(photo, dtype=np.int16)).mean() < 12


def test_palette_png_to_rgb(photo):
    pal = encode(photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG")
    assert Image.open(io.BytesIO(pal)).mode == "P"
    image = decode_image(pal)
    assert image.mode == "RGB" and image.size == photo.size


def test_palette_with_transparency_is_composited_on_white():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 1)
    out = decode_image(encode(img, "PNG", transparency=0))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((3, 3)) == (255, 255, 255)


def test_rgba_is_composited_on_white():
    arr = np.zeros((8, 8, 4), dtype=np.uint8)
    arr[..., 0] = 255  # red
    arr[:4, :, 3] = 255  # top half opaque, bottom half fully transparent
    out = decode_image(encode(Image.fromarray(arr), "PNG"))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((0, 7)) == (255, 255, 255)


def test_grayscale_and_la_and_bilevel_to_rgb(photo):
    gray = photo.convert("L")
    out = decode_image(encode(gray, "PNG"))
    assert out.mode == "RGB"
    r, g, b = (np.asarray(out)[..., i] for i in range(3))
    assert (r == g).all() and (g == b).all() and (r == np.asarray(gray)).all()
    assert decode_image(encode(gray.convert("LA"), "PNG")).mode == "RGB"
    assert decode_image(encode(gray.convert("1"), "PNG")).mode == "RGB"


def test_16bit_grayscale_keeps_its_tonal_range():
    arr = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    png = encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(png)).mode.startswith("I;16")
    out = np.asarray(decode_image(png))
    assert out.dtype == np.uint8 and out.shape == (8, 64, 3)
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255  # not clipped to white
    assert abs(int(out[0, 32, 0]) - round(arr[0, 32] / 257)) <= 1


def test_16bit_rgb_png():
    rows = b"".join(b"\x00" + np.full((4, 3), 40000, dtype=">u2").tobytes() for _ in range(4))
    out = decode_image(raw_png(4, 4, bit_depth=16, color_type=2, idat=zlib.compress(rows)))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (156, 156, 156)  # 40000 / 257


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue())
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 0, 0)
