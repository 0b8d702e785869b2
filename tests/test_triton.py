"""The Triton backend on a real tritonserver (the one nvidia-pytriton bundles: python backend running
the committed ONNX model with ONNX Runtime), started by ``lookalike.devservers.start_triton``.

If tritonserver cannot start here the tests fail with the reason (e.g. ``make setup-triton`` not run,
libpython3.11 missing); they never skip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from lookalike.devservers import ServerProcess, ServerStartError, free_port, start_triton
from lookalike.imaging import decode_image
from lookalike.models import EffnetLite0, ModelSettings, get_extractor
from lookalike.sessions import open_session, open_session_for
from lookalike.sessions.onnxrt import OrtSession
from lookalike.sessions.triton import (
    PYTHON_BACKEND_MODEL,
    TritonSession,
    TritonUnavailableError,
    model_from_path,
    python_backend_config,
)
from lookalike.v1 import encoder_service_pb2 as pb
from lookalike.v1 import encoder_service_pb2_grpc as grpc_pb
from services.encoder.launch import start_encoder

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
MODEL_DIR = MODELS / "effnet-lite0"
ONNX_PATH = MODEL_DIR / "1" / "model.onnx"


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("triton")
    try:
        server = start_triton(data_dir, MODELS, ["effnet-lite0"])
    except ServerStartError as exc:
        pytest.fail(f"tritonserver (nvidia-pytriton, python backend) could not start:\n{exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
    assert not server.leftovers(), f"tritonserver processes left running: {server.leftovers()}"


@pytest.fixture(scope="module")
def url(triton: ServerProcess) -> str:
    return f"127.0.0.1:{triton.port}"


@pytest.fixture(scope="module")
def images(photos: dict[str, bytes]) -> list:
    return [decode_image(data) for data in photos.values()]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


# --- the model repository serves both kinds of Triton ----------------------------------------------


def test_python_backend_config_is_made_from_config_pbtxt():
    """configs/python.pbtxt (this Triton) is config.pbtxt (NVIDIA's image, onnxruntime) with only the
    backend, the instance kind and the ONNX file parameter changed."""
    committed = (MODEL_DIR / "configs" / "python.pbtxt").read_text()
    assert committed == python_backend_config((MODEL_DIR / "config.pbtxt").read_text())
    onnx = text_format.Parse((MODEL_DIR / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    python = text_format.Parse(committed, model_config_pb2.ModelConfig())
    assert onnx.platform == "onnxruntime_onnx" and python.backend == "python" and not python.platform
    assert python.name == onnx.name == "effnet-lite0"  # the same model name for both
    assert python.max_batch_size == onnx.max_batch_size == 32
    assert python.input == onnx.input and python.output == onnx.output
    assert python.dynamic_batching == onnx.dynamic_batching
    assert python.parameters["onnx_file"].string_value == "model.onnx"
    assert (MODEL_DIR / "1" / "model.py").resolve() == PYTHON_BACKEND_MODEL


def test_model_name_and_version_from_the_repository_layout():
    assert model_from_path(ONNX_PATH) == ("effnet-lite0", "1")
    with pytest.raises(ValueError, match="repository layout"):
        model_from_path(Path("/tmp/model.onnx"))


# --- the session ---------------------------------------------------------------------------------


def test_tensors_come_from_the_server_metadata(url):
    local = OrtSession(ONNX_PATH, ["CPUExecutionProvider"])
    with TritonSession(url, "effnet-lite0") as remote:
        assert remote.max_batch_size == 32 and remote.platform == "python"
        assert remote.providers == [f"Triton:KIND_CPU@{url}"] and not remote.uses_gpu
        assert [(t.name, t.dtype) for t in remote.inputs] == [(t.name, t.dtype) for t in local.inputs]
        assert [(t.name, t.dtype) for t in remote.outputs] == [(t.name, t.dtype) for t in local.outputs]
        # fixed axes as the graph declares them; the batch axis (-1 in Triton's metadata) is free
        assert [t.shape for t in remote.inputs] == [("batch", 3, 224, 224)]
        assert [t.shape for t in remote.outputs] == [("batch", 1280), ("batch", 1000)]
        assert [t.fixed_shape for t in remote.outputs] == [t.fixed_shape for t in local.outputs]


def test_same_outputs_as_onnxruntime_including_batches_over_max_batch_size(url):
    pixels = np.random.default_rng(7).standard_normal((37, 3, 224, 224)).astype(np.float32)  # 32 + 5
    local = OrtSession(ONNX_PATH, ["CPUExecutionProvider"]).run({"pixel_values": pixels})
    with TritonSession(url, "effnet-lite0") as remote:
        out = remote.run({"pixel_values": pixels})
        only = remote.run({"pixel_values": pixels[:2]}, ["embedding"])
        with pytest.raises(ValueError, match="unknown outputs"):
            remote.run({"pixel_values": pixels[:1]}, ["nope"])
        with pytest.raises(TypeError, match="float32"):
            remote.run({"pixel_values": pixels[:1].astype(np.float64)})
        with pytest.raises(ValueError, match="shape"):
            remote.run({"pixel_values": pixels[:1, :, :100]})
    assert set(out) == {"embedding", "logits"} and list(only) == ["embedding"]
    for name in out:
        assert out[name].shape == local[name].shape
        np.testing.assert_allclose(out[name], local[name], atol=1e-5)
    np.testing.assert_allclose(only["embedding"], local["embedding"][:2], atol=1e-5)


def test_same_image_same_embedding_through_triton_and_onnxruntime(url, images):
    """The effnet-lite0 extractor, switched to the triton backend by settings alone."""
    local = get_extractor("effnet-lite0", ModelSettings(encoder_backend="onnxruntime"), shared=False)
    remote = get_extractor("effnet-lite0", ModelSettings(encoder_backend="triton", triton_url=url), shared=False)
    assert isinstance(remote, EffnetLite0)
    a, b = local.encode(images), remote.encode(images)
    assert isinstance(remote.session, TritonSession) and isinstance(local.session, OrtSession)
    assert a.shape == b.shape == (len(images), 1280)
    cos = cosines(a, b)
    assert cos.min() >= 0.999, cos
    logits_a, logits_b = local.predict(images[:3])["logits"], remote.predict(images[:3])["logits"]
    assert (logits_a.argmax(1) == logits_b.argmax(1)).all()


def test_open_session_picks_the_backend(url):
    session = open_session(ONNX_PATH, backend="triton", triton_url=url)
    assert isinstance(session, TritonSession)
    assert (session.model_name, session.model_version) == ("effnet-lite0", "1")
    session.close()
    settings = ModelSettings(encoder_backend="triton", triton_url=url)
    # with Triton the model file need not exist where the client runs: the path only names the model
    remote_only = open_session_for(Path("/nowhere/effnet-lite0/1/model.onnx"), settings)
    assert isinstance(remote_only, TritonSession)
    remote_only.close()
    assert isinstance(open_session_for(ONNX_PATH, ModelSettings()), OrtSession)
    with pytest.raises(ValueError, match="unknown model backend"):
        open_session(ONNX_PATH, backend="tensorflow")
    with pytest.raises(ValueError, match="triton_url"):
        open_session(ONNX_PATH, backend="triton")


def test_concurrent_requests_are_batched_by_triton_and_answered_correctly(url):
    """The python model runs everything the dynamic batcher hands it in one ONNX Runtime call and
    splits the outputs back: each caller gets the rows of its own input."""
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((1 + i % 3, 3, 224, 224)).astype(np.float32) for i in range(8)]
    local = OrtSession(ONNX_PATH, ["CPUExecutionProvider"])
    expected = [local.run({"pixel_values": x}, ["embedding"])["embedding"] for x in inputs]
    client = grpcclient.InferenceServerClient(url)
    batched = False
    with TritonSession(url, "effnet-lite0") as remote:
        for _ in range(5):  # scheduling decides whether requests meet in the queue; try a few rounds
            before = client.get_inference_statistics("effnet-lite0").model_stats[0]
            results: list[np.ndarray | None] = [None] * len(inputs)
            start = threading.Barrier(len(inputs))

            def call(i: int) -> None:
                start.wait()
                results[i] = remote.run({"pixel_values": inputs[i]}, ["embedding"])["embedding"]

            threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for got, want in zip(results, expected):
                assert got is not None and got.shape == want.shape
                np.testing.assert_allclose(got, want, atol=1e-5)
            # Triton updates its statistics once each request is released, which may come a little
            # after the caller has its response (on a loaded machine): wait for the counts to settle
            deadline = time.monotonic() + 30
            while True:
                after = client.get_inference_statistics("effnet-lite0").model_stats[0]
                requests = after.inference_count - before.inference_count
                executions = after.execution_count - before.execution_count
                if requests >= sum(len(x) for x in inputs) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert requests == sum(len(x) for x in inputs)
            if executions < len(inputs):
                batched = True
                break
    client.close()
    assert batched, "Triton never put two concurrent requests into one execution"


# --- clear errors --------------------------------------------------------------------------------


def test_missing_model_is_a_clear_error(url):
    with pytest.raises(TritonUnavailableError, match=r"'no-such-model': no such model .*effnet-lite0"):
        TritonSession(url, "no-such-model", ready_timeout_s=0.5)


def test_no_server_is_a_clear_error():
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(TritonUnavailableError, match=f"cannot reach Triton at {address}"):
        TritonSession(address, "effnet-lite0", ready_timeout_s=0.5)


def test_model_not_ready_is_a_clear_error_and_reloading_recovers(url):
    client = grpcclient.InferenceServerClient(url)
    session = TritonSession(url, "effnet-lite0")
    try:
        client.unload_model("effnet-lite0")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # unloading finishes in the background
            states = {m.get("state") for m in client.get_model_repository_index(as_json=True).get("models", [])}
            if states == {"UNAVAILABLE"}:
                break
            time.sleep(0.1)
        with pytest.raises(TritonUnavailableError, match=r"Triton at .*: model 'effnet-lite0' is not ready: version 1: UNAVAILABLE \(unloaded\)"):
            TritonSession(url, "effnet-lite0", ready_timeout_s=0.5)
        with pytest.raises(TritonUnavailableError, match="not ready"):
            session.check_ready()
    finally:
        client.load_model("effnet-lite0")
        client.close()
    session.check_ready()
    assert session.run({"pixel_values": np.zeros((1, 3, 224, 224), np.float32)})["embedding"].shape == (1, 1280)
    session.close()


# --- the encoder service on the triton backend ---------------------------------------------------


def test_encoder_service_on_triton_matches_onnxruntime(url, photos, images, tmp_path):
    encoder = start_encoder(tmp_path, env={"LOOKALIKE_ENCODER_BACKEND": "triton", "LOOKALIKE_TRITON_URL": url})
    try:
        with grpc.insecure_channel(encoder.address) as channel:
            stub = grpc_pb.EncoderServiceStub(channel)
            response = stub.EncodeImages(
                pb.EncodeImagesRequest(extractors=["effnet-lite0", "phash"], images=list(photos.values())), timeout=120
            )
    finally:
        encoder.stop()
    remote = np.array([list(item.vectors["effnet-lite0"].values) for item in response.images], dtype=np.float32)
    local = get_extractor("effnet-lite0", ModelSettings(encoder_backend="onnxruntime"), shared=False).encode(images)
    assert cosines(remote, local).min() >= 0.999
    log = (tmp_path / "encoder.log").read_text()
    assert "encoder backend triton" in log
