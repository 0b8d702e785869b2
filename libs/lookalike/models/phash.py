"""Perceptual hash (imagehash.phash, 64 bits) as a binary vector.

Each image gives 8 bytes: the 8x8 hash bits in imagehash's row-major order, packed big-endian
(most significant bit first) - the same bytes as ``bytes.fromhex(str(imagehash.phash(image)))``.
Milvus ``BINARY_VECTOR`` dim=64 with the ``HAMMING`` metric then equals imagehash's ``h1 - h2``.
"""

from __future__ import annotations

from typing import ClassVar

import imagehash
import numpy as np
from PIL import Image

from ..imaging import to_rgb
from .base import Extractor, ExtractorSpec

__all__ = ["PHash", "hamming", "pack_hash"]

HASH_SIZE = 8


def pack_hash(h: imagehash.ImageHash) -> np.ndarray:
    """An ImageHash as packed uint8 bytes, big-endian bit order."""
    return np.packbits(np.asarray(h.hash, dtype=bool).reshape(-1), bitorder="big")


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between packed rows (broadcasting): popcount(a XOR b) over the last axis."""
    return np.unpackbits(np.bitwise_xor(a, b), axis=-1).sum(axis=-1)


class PHash(Extractor):
    """64-bit DCT perceptual hash: robust to re-encoding, resizing and mild colour edits; not to
    crops, flips or rotations. Cheap (no model), so it has nothing to load."""

    spec: ClassVar[ExtractorSpec] = ExtractorSpec(
        name="phash",
        dim=HASH_SIZE * HASH_SIZE,
        metric="HAMMING",
        vector_type="binary",
        description="imagehash.phash 64-bit perceptual hash, packed big-endian (8 bytes)",
    )

    def _encode(self, images: list[Image.Image]) -> np.ndarray:
        out = np.empty((len(images), self.spec.width), dtype=np.uint8)
        for i, image in enumerate(images):
            rgb = image if image.mode == "RGB" else to_rgb(image)
            out[i] = pack_hash(imagehash.phash(rgb, hash_size=HASH_SIZE))
        return out
