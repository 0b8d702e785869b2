"""The encoder service's micro-batching: the batcher on its own (no server), then the real service
process: concurrent EncodeImages calls share model runs (seen in its Prometheus metrics) and get the
same vectors as unbatched, in-process encoding."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from lookalike.errors import ResourceExhausted, Unavailable
from lookalike.imaging import decode_image
from lookalike.models import ModelSettings, get_extractor
from lookalike.v1 import encoder_service_pb2 as pb
from lookalike.v1 import encoder_service_pb2_grpc as grpc_pb
from services.encoder.batching import BatchingSettings, MicroBatcher
from services.encoder.launch import EncoderProcess, start_encoder

# --- the batcher ---------------------------------------------------------------------------------


class Recorder:
    """A fake model: one row [value, batch number] per image; remembers each batch."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.batches: list[list[float]] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, images: list[float]) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model exploded")
        with self.lock:
            self.batches.append(list(images))
            number = len(self.batches)
        return np.array([[x, number] for x in images], dtype=np.float32)


def batcher(fn: Recorder, **settings: float) -> MicroBatcher:
    return MicroBatcher("fake", fn, BatchingSettings(**settings))


def test_concurrent_calls_share_one_run_and_get_their_own_rows():
    fn = Recorder()

    async def main() -> list[np.ndarray]:
        b = batcher(fn, max_queue_delay_ms=50, max_batch_size=32)
        try:
            return await asyncio.gather(*(b.submit([float(i), i + 0.5]) for i in range(10)))
        finally:
            await b.close()

    results = asyncio.run(main())
    assert len(fn.batches) == 1 and len(fn.batches[0]) == 20
    for i, rows in enumerate(results):
        assert rows[:, 0].tolist() == [float(i), i + 0.5]
    assert all(name.startswith("model-fake") for name in fn.threads)  # never on the event loop


def test_batches_never_exceed_max_batch_size_and_keep_order():
    fn = Recorder(delay_s=0.01)

    async def main() -> list[np.ndarray]:
        b = batcher(fn, max_queue_delay_ms=20, max_batch_size=4)
        try:
            big = b.submit([float(x) for x in range(10)])  # split into 4 + 4 + 2
            small = [b.submit([100.0 + i]) for i in range(5)]
            return await asyncio.gather(big, *small)
        finally:
            await b.close()

    results = asyncio.run(main())
    assert all(len(batch) <= 4 for batch in fn.batches)
    assert sum(len(batch) for batch in fn.batches) == 15
    assert results[0][:, 0].tolist() == list(range(10))
    assert [r[0, 0] for r in results[1:]] == [100.0 + i for i in range(5)]
    flat = [x for batch in fn.batches for x in batch]
    assert flat == sorted(flat)  # first come, first served


def test_queue_delay_is_bounded():
    fn = Recorder()

    async def main() -> float:
        b = batcher(fn, max_queue_delay_ms=30, max_batch_size=64)
        try:
            started = time.perf_counter()
            await b.submit([1.0])  # alone: waits for company at most max_queue_delay
            return time.perf_counter() - started
        finally:
            await b.close()

    elapsed = asyncio.run(main())
    assert 0.025 <= elapsed < 0.5


def test_a_full_batch_leaves_without_waiting():
    fn = Recorder()

    async def main() -> float:
        b = batcher(fn, max_queue_delay_ms=1000, max_batch_size=4)
        try:
            started = time.perf_counter()
            await asyncio.gather(*(b.submit([float(i)]) for i in range(4)))
            return time.perf_counter() - started
        finally:
            await b.close()

    assert asyncio.run(main()) < 0.5


def test_calls_queue_up_while_a_batch_runs():
    """With one batch in flight, everything that arrives meanwhile forms the next batch."""
    fn = Recorder(delay_s=0.2)

    async def main() -> None:
        b = batcher(fn, max_queue_delay_ms=0, max_batch_size=64, max_inflight_batches=1)
        try:
            first = asyncio.create_task(b.submit([0.0]))
            await asyncio.sleep(0.05)  # the first batch is running now
            await asyncio.gather(first, *(b.submit([float(i)]) for i in range(1, 9)))
        finally:
            await b.close()

    asyncio.run(main())
    assert [len(batch) for batch in fn.batches] == [1, 8]


def test_a_failed_run_fails_every_call_of_its_batch_only():
    fn = Recorder(fail=True)

    async def main() -> list[object]:
        b = batcher(fn, max_queue_delay_ms=20)
        try:
            return await asyncio.gather(*(b.submit([float(i)]) for i in range(3)), return_exceptions=True)
        finally:
            await b.close()

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)


def test_cancelled_calls_are_skipped():
    fn = Recorder(delay_s=0.1)

    async def main() -> None:
        b = batcher(fn, max_queue_delay_ms=0, max_batch_size=64)
        try:
            first = asyncio.create_task(b.submit([0.0]))
            await asyncio.sleep(0.03)
            gone = asyncio.create_task(b.submit([1.0]))
            kept = asyncio.create_task(b.submit([2.0]))
            await asyncio.sleep(0.01)
            gone.cancel()
            await asyncio.gather(first, kept)
            assert gone.cancelled()
        finally:
            await b.close()

    asyncio.run(main())
    assert fn.batches == [[0.0], [2.0]]


def test_full_queue_is_resource_exhausted_and_close_is_unavailable():
    fn = Recorder(delay_s=0.2)

    async def main() -> None:
        b = batcher(fn, max_queue_delay_ms=0, max_batch_size=2, max_queue_images=4)
        running = asyncio.create_task(b.submit([0.0]))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(b.submit([1.0, 2.0, 3.0]))
        await asyncio.sleep(0.01)
        with pytest.raises(ResourceExhausted, match="queue for fake is full"):
            await b.submit([4.0, 5.0])
        await b.close()
        with pytest.raises(Unavailable):
            await waiting
        await running  # a batch already running finishes
        with pytest.raises(Unavailable):
            await b.submit([6.0])

    asyncio.run(main())


# --- the service ---------------------------------------------------------------------------------

MODEL = "effnet-lite0"


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EncoderProcess]:
    # a generous queue delay, so that concurrent calls meet even on a loaded 2-core machine
    process = start_encoder(
        tmp_path_factory.mktemp("encoder"),
        env={"LOOKALIKE_ENCODER_MAX_QUEUE_DELAY_MS": "100", "LOOKALIKE_ENCODER_MAX_BATCH_SIZE": "8",
             "LOOKALIKE_ENCODER_BACKEND": "onnxruntime"},
    )
    yield process
    process.stop()
    assert not process.process.leftovers()


@pytest.fixture(scope="module")
def stub(encoder: EncoderProcess) -> Iterator[grpc_pb.EncoderServiceStub]:
    with grpc.insecure_channel(encoder.address) as channel:
        yield grpc_pb.EncoderServiceStub(channel)


def metric(samples: dict, name: str, model: str = MODEL, **labels: str) -> float:
    key = (name, tuple(sorted({"model": model, **labels}.items())))
    return samples.get(key, 0.0)


def encode(stub: grpc_pb.EncoderServiceStub, images: list[bytes], extractors=(MODEL, "phash")) -> pb.EncodeImagesResponse:
    return stub.EncodeImages(pb.EncodeImagesRequest(extractors=list(extractors), images=images), timeout=120)


def concurrently(stub: grpc_pb.EncoderServiceStub, calls: list[list[bytes]]) -> list[pb.EncodeImagesResponse]:
    start = threading.Barrier(len(calls))

    def one(images: list[bytes]) -> pb.EncodeImagesResponse:
        start.wait()
        return encode(stub, images)

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


def test_concurrent_calls_are_batched_and_match_unbatched_encoding(encoder, stub, photos):
    names = list(photos)[:8]
    before = encoder.metrics()
    responses = concurrently(stub, [[photos[n]] for n in names])
    after = encoder.metrics()

    runs = metric(after, "lookalike_encoder_batch_images_count") - metric(before, "lookalike_encoder_batch_images_count")
    images = metric(after, "lookalike_encoder_batch_images_sum") - metric(before, "lookalike_encoder_batch_images_sum")
    calls = metric(after, "lookalike_encoder_batch_requests_sum") - metric(before, "lookalike_encoder_batch_requests_sum")
    assert images == 8 and calls == 8
    assert runs < 8, f"8 concurrent calls took {runs:.0f} model runs: not batched"
    single = (metric(after, "lookalike_encoder_batch_images_bucket", le="1.0")
              - metric(before, "lookalike_encoder_batch_images_bucket", le="1.0"))
    assert single < runs or runs == 1  # at least one run held several images
    assert metric(after, "lookalike_encoder_queue_depth") == 0
    assert metric(after, "lookalike_encoder_latency_seconds_count") >= 8
    assert metric(after, "lookalike_encoder_model_seconds_count") >= runs

    # unbatched, in-process: one image at a time through the same extractors
    effnet = get_extractor(MODEL, ModelSettings(), shared=False)
    phash = get_extractor("phash", ModelSettings(), shared=False)
    for name, response in zip(names, responses):
        (item,) = response.images
        assert not item.error
        image = decode_image(photos[name])
        assert (item.width, item.height) == image.size
        want = effnet.encode([image])[0]
        got = np.array(item.vectors[MODEL].values, dtype=np.float32)
        assert float(got @ want) >= 0.9999, name
        assert item.vectors["phash"].binary == phash.encode([image])[0].tobytes()


def test_batched_and_sequential_calls_give_the_same_vectors(stub, photos):
    names = list(photos)[:6]
    sequential = [encode(stub, [photos[n]]).images[0] for n in names]
    together = encode(stub, [photos[n] for n in names]).images  # one call, 6 images
    parallel = [r.images[0] for r in concurrently(stub, [[photos[n]] for n in names])]
    for a, b, c in zip(sequential, together, parallel):
        va, vb, vc = (np.array(x.vectors[MODEL].values, dtype=np.float32) for x in (a, b, c))
        assert float(va @ vb) >= 0.9999 and float(va @ vc) >= 0.9999
        assert a.vectors["phash"].binary == b.vectors["phash"].binary == c.vectors["phash"].binary


def test_a_bad_image_fails_only_its_entry_while_batched(stub, photos):
    good = list(photos.values())[:4]
    responses = concurrently(stub, [[good[0], b"not an image"], [good[1]], [good[2], good[3]]])
    first = responses[0].images
    assert first[1].error and not first[1].vectors and not first[0].error and MODEL in first[0].vectors
    for response in responses[1:]:
        assert all(not item.error and len(item.vectors[MODEL].values) == 1280 for item in response.images)


def test_a_call_larger_than_a_batch_is_split(encoder, stub, photos):
    originals = list(photos.values())[:12]
    images = (originals * 2)[:20]  # 12 photos, then the first 8 again
    before = encoder.metrics()
    response = encode(stub, images, extractors=(MODEL,))
    after = encoder.metrics()
    runs = metric(after, "lookalike_encoder_batch_images_count") - metric(before, "lookalike_encoder_batch_images_count")
    within_8 = (metric(after, "lookalike_encoder_batch_images_bucket", le="8.0")
                - metric(before, "lookalike_encoder_batch_images_bucket", le="8.0"))
    assert runs >= 3 and within_8 == runs  # max batch size 8: 8 + 8 + 4
    vectors = np.array([list(item.vectors[MODEL].values) for item in response.images], dtype=np.float32)
    assert vectors.shape == (20, 1280)
    np.testing.assert_allclose(vectors[12:20], vectors[:8], atol=1e-5)  # the same image, another batch


def test_unknown_extractor_is_invalid_argument(stub, photos):
    with pytest.raises(grpc.RpcError) as info:
        encode(stub, [next(iter(photos.values()))], extractors=("no-such-model",))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no-such-model" in info.value.details()


def test_metrics_are_exposed_per_model(encoder, stub, photos):
    encode(stub, [next(iter(photos.values()))])
    text = encoder.metrics_text()
    for name in ("lookalike_encoder_batch_images_bucket", "lookalike_encoder_batch_requests_bucket",
                 "lookalike_encoder_model_seconds_bucket", "lookalike_encoder_latency_seconds_bucket",
                 "lookalike_encoder_queue_wait_seconds_bucket", "lookalike_encoder_queue_depth"):
        for model in (MODEL, "phash"):
            assert any(line.startswith(name) and f'model="{model}"' in line for line in text.splitlines()), (name, model)
    log = Path(encoder.process.log_path).read_text()
    assert "encoder backend onnxruntime" in log
