"""Extractor registry driven by the model repository, manifests, per-model preprocessing, text refusal.

Needs only the serving dependencies (onnxruntime, numpy): the model-repository entries here reuse the
committed EfficientNet-Lite0 graph under a manifest, so no export tool chain is involved.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from lookalike.errors import FailedPrecondition
from lookalike.imaging import decode_image
from lookalike.models import (
    EXTRACTORS,
    ExtractorRegistry,
    ManifestError,
    ModelSettings,
    OnnxModelExtractor,
    TextNotSupportedError,
    UnknownExtractorError,
    available_extractors,
    get_extractor,
    load_manifest,
    scan,
)
from lookalike.models.effnet import preprocess as effnet_preprocess
from lookalike.models.manifest import default_extractor_name, valid_extractor_name
from lookalike.models.preprocess import ImageRecipe, preprocess_images, resize_image

REPO = Path(__file__).resolve().parents[1]
EFFNET_ONNX = REPO / "models" / "effnet-lite0" / "1" / "model.onnx"
INCEPTION = {"mean": [127 / 255] * 3, "std": [128 / 255] * 3}


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(data, name)()).convert("RGB")


def manifest(**overrides) -> dict:
    """A manifest for the committed EfficientNet-Lite0 graph (its embedding output), as a custom model."""
    doc = {
        "format": "lookalike.extractor/1",
        "description": "EfficientNet-Lite0 embedding, as a drop-in folder",
        "dimension": 1280,
        "metric": "COSINE",
        "image": {
            "version": "1",
            "file": "model.onnx",
            "input": "pixel_values",
            "output": "embedding",
            "preprocess": {"size": 224, "resize": "center_crop", "crop_ratio": 0.875, "resample": "bicubic", **INCEPTION},
        },
    }
    for key, value in overrides.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def drop_model(repository: Path, folder: str, doc: dict | str) -> Path:
    """A model folder: <repository>/<folder>/1/model.onnx (a link to the committed graph) + lookalike.json."""
    model_dir = repository / folder
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    target = model_dir / "1" / "model.onnx"
    if not target.exists():
        target.symlink_to(EFFNET_ONNX)
    (model_dir / "lookalike.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return model_dir


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    repo.mkdir()
    return repo


# --- registry -------------------------------------------------------------------------------------


def test_builtins_and_their_specs():
    specs = dict(EXTRACTORS)
    assert {"effnet-lite0", "phash", "concepts"} <= set(specs)
    e, p, c = specs["effnet-lite0"], specs["phash"], specs["concepts"]
    assert (e.dim, e.metric, e.vector_type, e.supports_text) == (1280, "COSINE", "float", False)
    assert (p.dim, p.metric, p.vector_type, p.supports_text) == (64, "HAMMING", "binary", False)
    assert (c.dim, c.metric, c.vector_type) == (1000, "COSINE", "float")
    for spec in specs.values():  # what the encoder's ListExtractors reads
        assert spec.name and spec.description and isinstance(spec.supports_text, bool)


def test_dropping_a_folder_adds_an_extractor(repository, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_MODEL_REPOSITORY", str(repository))
    assert not any(n.startswith("custom:") for n in EXTRACTORS)
    drop_model(repository, "effnet-copy", manifest())
    assert "custom:effnet-copy" in EXTRACTORS  # no restart, no code: the live view rescans
    spec = EXTRACTORS["custom:effnet-copy"]
    assert (spec.dim, spec.metric, spec.vector_type, spec.supports_text) == (1280, "COSINE", "float", False)
    assert spec.description == "EfficientNet-Lite0 embedding, as a drop-in folder"
    extractor = get_extractor("custom:effnet-copy")
    assert isinstance(extractor, OnnxModelExtractor) and not extractor.loaded
    assert get_extractor("custom:effnet-copy") is extractor  # shared per process

    # same graph + same recipe as the built-in -> the same vectors
    images = [photo("astronaut"), photo("coffee")]
    builtin = get_extractor("effnet-lite0", ModelSettings(model_repository=REPO / "models"))
    np.testing.assert_allclose(extractor.encode(images), builtin.encode(images), atol=1e-5)

    for path in sorted((repository / "effnet-copy").rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() else path.rmdir()
    (repository / "effnet-copy").rmdir()
    assert "custom:effnet-copy" not in EXTRACTORS
    with pytest.raises(UnknownExtractorError):
        get_extractor("custom:effnet-copy")


def test_names_from_manifest_or_folder(repository):
    drop_model(repository, "clip", manifest())  # a family folder keeps its name
    drop_model(repository, "MyModel", manifest())  # anything else is custom:<folder>, lower-cased
    drop_model(repository, "whatever", manifest(extractor="custom:renamed"))
    drop_model(repository, "dino", manifest(extractor="dinov2"))
    names = set(available_extractors(ModelSettings(model_repository=repository)))
    assert {"clip", "custom:mymodel", "custom:renamed", "dinov2"} <= names
    assert default_extractor_name("siglip") == "siglip" and default_extractor_name("x") == "custom:x"
    assert valid_extractor_name("custom:a-b_c.1") and not valid_extractor_name("effnet-lite0")
    assert not valid_extractor_name("custom:") and not valid_extractor_name("Custom:x")


def test_dimension_and_metric_come_from_the_manifest(repository):
    drop_model(repository, "l2", manifest(metric="L2", normalize=False))
    drop_model(repository, "ip", manifest(metric="IP"))
    specs = available_extractors(ModelSettings(model_repository=repository))
    assert specs["custom:l2"].metric == "L2" and specs["custom:ip"].metric == "IP"
    settings = ModelSettings(model_repository=repository)
    raw = get_extractor("custom:l2", settings).encode([photo("rocket")])
    assert abs(float(np.linalg.norm(raw)) - 1.0) < 1e-5  # this graph normalises inside already

    drop_model(repository, "wrong-dim", manifest(dimension=512))
    assert available_extractors(settings)["custom:wrong-dim"].dim == 512
    with pytest.raises(ValueError, match="1280 dimensions, the manifest says 512"):
        get_extractor("custom:wrong-dim", settings).encode([photo("rocket")])


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{not json", "not readable JSON"),
        (manifest(dimension=None), "dimension"),
        (manifest(extractor="effnet-lite0"), "not allowed"),
        (manifest(extractor="clip vit"), "not allowed"),
        (manifest(metric="HAMMING"), "metric"),
        (manifest(metric="COSINE", normalize=False), "needs normalize"),
        (manifest(colour="blue"), "colour"),  # unknown fields are typos, not ignored
        (manifest(format="lookalike.extractor/9"), "format"),
    ],
)
def test_broken_manifest_is_reported_and_hides_nothing(repository, doc, message):
    drop_model(repository, "good", manifest())
    drop_model(repository, "bad", doc)
    result = scan(ModelSettings(model_repository=repository))
    assert "custom:good" in result.entries and "custom:bad" not in result.entries
    assert message in result.problems["bad"] and "lookalike.json" in result.problems["bad"]
    with pytest.raises(ManifestError, match=message):
        load_manifest(repository / "bad" / "lookalike.json")


def test_duplicate_names_keep_the_first_folder(repository):
    drop_model(repository, "a", manifest(extractor="custom:same"))
    drop_model(repository, "b", manifest(extractor="custom:same"))
    result = scan(ModelSettings(model_repository=repository))
    assert result.entries["custom:same"].source == repository / "a"
    assert "already defined" in result.problems["b"]


def test_folders_without_a_manifest_are_not_extractors(repository):
    (repository / "triton-only" / "1").mkdir(parents=True)  # e.g. a text tower, or another Triton model
    (repository / "notes.txt").write_text("x")
    assert set(available_extractors(ModelSettings(model_repository=repository))) == {"effnet-lite0", "phash", "concepts"}
    assert set(available_extractors(ModelSettings(model_repository=repository / "missing"))) == {
        "effnet-lite0",
        "phash",
        "concepts",
    }


def test_unknown_extractor_error():
    with pytest.raises(UnknownExtractorError) as err:
        get_extractor("custom:nope")
    assert isinstance(err.value, KeyError)
    assert str(err.value).startswith("unknown feature extractor 'custom:nope'; available: ")
    with pytest.raises(UnknownExtractorError):
        EXTRACTORS["custom:nope"]
    with pytest.raises(TypeError):
        EXTRACTORS["x"] = EXTRACTORS["phash"]  # read-only


def test_changed_manifest_gives_a_new_instance(repository):
    settings = ModelSettings(model_repository=repository)
    drop_model(repository, "m", manifest())
    first = get_extractor("custom:m", settings)
    assert get_extractor("custom:m", settings) is first
    time.sleep(0.01)
    path = drop_model(repository, "m", manifest(description="changed")) / "lookalike.json"
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    second = get_extractor("custom:m", settings)
    assert second is not first and second.spec.description == "changed"


def test_registry_view_for_other_settings(repository):
    drop_model(repository, "v", manifest())
    view = ExtractorRegistry(ModelSettings(model_repository=repository))
    assert "custom:v" in view and len(view) == 4 and "custom:v" not in EXTRACTORS


def test_graph_that_does_not_match_the_manifest_fails_at_load(repository):
    settings = ModelSettings(model_repository=repository)
    drop_model(repository, "in", manifest(image={**manifest()["image"], "input": "image"}))
    with pytest.raises(ValueError, match="no input 'image'"):
        get_extractor("custom:in", settings).load()
    drop_model(repository, "out", manifest(image={**manifest()["image"], "output": "features"}))
    with pytest.raises(ValueError, match="no output 'features'"):
        get_extractor("custom:out", settings).load()
    pre = {**manifest()["image"]["preprocess"], "size": 256}
    drop_model(repository, "size", manifest(image={**manifest()["image"], "preprocess": pre}))
    with pytest.raises(ValueError, match=r"\[N,3,256,256\]"):
        get_extractor("custom:size", settings).load()
    drop_model(repository, "text", manifest(text={"model": "text-missing"}))
    with pytest.raises(FileNotFoundError, match="text-missing"):
        get_extractor("custom:text", settings).load()


# --- text refusal ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["effnet-lite0", "phash"])
def test_models_without_text_refuse_text_clearly(name):
    extractor = get_extractor(name)
    assert not extractor.spec.supports_text
    with pytest.raises(TextNotSupportedError) as err:
        extractor.encode_text(["a photo of a dog"])
    assert isinstance(err.value, FailedPrecondition)  # a service that lets it through answers FAILED_PRECONDITION
    assert f"extractor {name!r} cannot embed text" in str(err.value) and "image" in str(err.value)


def test_manifest_model_without_text_tower_refuses_text(repository):
    drop_model(repository, "img-only", manifest())
    extractor = get_extractor("custom:img-only", ModelSettings(model_repository=repository))
    with pytest.raises(TextNotSupportedError, match="no text tower"):
        extractor.encode_text(["x"])


# --- preprocessing --------------------------------------------------------------------------------


def test_recipe_reproduces_the_effnet_preprocessing():
    images = [photo("astronaut"), photo("rocket").convert("L")]
    recipe = ImageRecipe(size=224, resize="center_crop", crop_ratio=0.875, **{k: tuple(v) for k, v in INCEPTION.items()})
    np.testing.assert_array_equal(preprocess_images(images, recipe), effnet_preprocess(images))


def test_channel_order_layout_and_statistics():
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2] = 200, 100, 50
    image = Image.fromarray(arr)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    rgb = preprocess_images([image], ImageRecipe(size=(8, 12), resize="squash", mean=mean, std=std))
    assert rgb.shape == (1, 3, 8, 12) and rgb.dtype == np.float32 and rgb.flags.c_contiguous
    expected = [(v / 255 - m) / s for v, m, s in zip((200, 100, 50), mean, std)]
    np.testing.assert_allclose(rgb[0, :, 4, 6], expected, atol=1e-5)
    bgr = preprocess_images([image], ImageRecipe(size=(8, 12), resize="squash", mean=mean, std=std, channel_order="BGR"))
    np.testing.assert_allclose(bgr[0, :, 4, 6], expected[::-1], atol=1e-5)  # channels and their statistics flip
    nhwc = preprocess_images([image], ImageRecipe(size=(8, 12), resize="squash", mean=mean, std=std, layout="NHWC"))
    assert nhwc.shape == (1, 8, 12, 3)
    np.testing.assert_allclose(nhwc[0, 4, 6], expected, atol=1e-5)


def test_center_crop_on_non_square_targets():
    arr = np.zeros((100, 400, 3), np.uint8)
    arr[:, :100] = 255  # white quarter on the left
    image = Image.fromarray(arr)
    wide = np.asarray(resize_image(image, (50, 100), "center_crop", crop_ratio=1.0))
    assert wide.shape == (50, 100, 3) and wide[25, 1].max() == 0  # 2:1 window from the centre of 4:1
    whole = np.asarray(resize_image(image, (25, 100), "center_crop", crop_ratio=1.0))
    assert whole[12, 1].min() > 200  # same aspect: nothing cropped
    with pytest.raises(ValueError, match="crop_ratio"):
        resize_image(image, 32, "center_crop", crop_ratio=1.5)
    with pytest.raises(ValueError, match="resampling"):
        ImageRecipe(resample="sinc")


def test_exif_orientation_is_applied_before_the_recipe(tmp_path, repository):
    """A phone JPEG stored sideways with an EXIF rotation embeds like the upright photo."""
    import io

    upright = photo("chelsea")  # 451 x 300, landscape
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # stored as portrait pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": undoes the ROTATE_90 above
    buf = io.BytesIO()
    sideways.save(buf, "JPEG", quality=95, exif=exif)
    decoded = decode_image(buf.getvalue())
    assert decoded.size == upright.size
    assert np.abs(np.asarray(decoded, np.float32) - np.asarray(upright, np.float32)).mean() < 5
    drop_model(repository, "exif", manifest())
    extractor = get_extractor("custom:exif", ModelSettings(model_repository=repository))
    a, b, raw = extractor.encode([decoded, upright, sideways])
    assert float(a @ b) > 0.95
    assert float(raw @ b) < float(a @ b) - 0.1  # without the EXIF turn it would be another picture
