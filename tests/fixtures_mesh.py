"""The five services as real processes on top of the session's real servers (fixtures_servers)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from lookalike.cli import Gateway
from lookalike.devservers import Infra
from lookalike.stack import Stack, start_stack


@pytest.fixture(scope="session")
def mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path_factory.mktemp("mesh"),
        gateway_port=None,
        infra=infra,
        # the tests serve query images from 127.0.0.1
        extra_env={"LOOKALIKE_URL_FETCH_ALLOW_PRIVATE": "true", "LOOKALIKE_LOG_LEVEL": "INFO"},
    )
    yield stack
    stack.stop()
    leftovers = {name: p.leftovers() for name, p in stack.services.items()}
    assert not any(leftovers.values()), leftovers


@pytest.fixture(scope="session")
def gateway(mesh: Stack) -> Gateway:
    return Gateway(mesh.gateway_addr, timeout=60)


def jpeg_bytes(pixels: np.ndarray | Image.Image, quality: int = 92) -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """Real photos from scikit-image / scikit-learn, as JPEG."""
    import skimage.data as data
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    arrays = {
        "astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee(), "rocket": data.rocket(),
        "hubble": data.hubble_deep_field(), "retina": data.retina(), "cells": data.immunohistochemistry(),
        "camera": data.camera(), "coins": data.coins(), "china": china, "flower": flower,
        "motorcycle": data.stereo_motorcycle()[0],
    }
    return {name: jpeg_bytes(pixels) for name, pixels in arrays.items()}


def content_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def unique_id(request: pytest.FixtureRequest) -> str:
    """A resource id unique to the test (the mesh is shared by the session)."""
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
    return f"t{digest}"


