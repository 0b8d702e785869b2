"""Server-side micro-batching: concurrent EncodeImages calls share model runs.

Each extractor has one :class:`MicroBatcher`. A call puts its decoded images in the extractor's
queue and awaits its rows. A batch is dispatched when it holds ``max_batch_size`` images, or
``max_queue_delay`` after its oldest image was queued, whichever comes first; while
``max_inflight_batches`` batches are already running, the queue keeps growing and the next batch
leaves as soon as a slot frees (under load batches grow by themselves, with no extra delay). A call
with more images than a batch holds is split; calls are never merged out of order.

Per-model Prometheus metrics (label ``model``): images and calls per model run, model-run time,
queue wait, per-call latency, and the queue depth in images.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Gauge, Histogram
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lookalike.errors import ResourceExhausted, Unavailable

log = logging.getLogger(__name__)

__all__ = [
    "BATCH_IMAGES",
    "BATCH_REQUESTS",
    "LATENCY_SECONDS",
    "MODEL_SECONDS",
    "QUEUE_DEPTH",
    "QUEUE_WAIT_SECONDS",
    "BatchingSettings",
    "MicroBatcher",
]

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 30, 60)

BATCH_IMAGES = Histogram(
    "lookalike_encoder_batch_images", "Images per model run (micro-batch size)", ["model"],
    buckets=(1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256),
)
BATCH_REQUESTS = Histogram(
    "lookalike_encoder_batch_requests", "EncodeImages calls coalesced into one model run", ["model"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
)
MODEL_SECONDS = Histogram(
    "lookalike_encoder_model_seconds", "Time of one model run (the whole batch: preprocessing + inference)",
    ["model"], buckets=_SECONDS,
)
QUEUE_WAIT_SECONDS = Histogram(
    "lookalike_encoder_queue_wait_seconds", "Time images waited in the queue before their model run",
    ["model"], buckets=_SECONDS,
)
LATENCY_SECONDS = Histogram(
    "lookalike_encoder_latency_seconds", "Per call and model: from queueing its images to having their vectors",
    ["model"], buckets=_SECONDS,
)
QUEUE_DEPTH = Gauge("lookalike_encoder_queue_depth", "Images waiting for a model run", ["model"])


class BatchingSettings(BaseSettings):
    """``LOOKALIKE_ENCODER_MAX_BATCH_SIZE`` etc."""

    model_config = SettingsConfigDict(env_prefix="LOOKALIKE_ENCODER_", extra="ignore", frozen=True)

    max_batch_size: int = Field(default=32, ge=1, le=1024)  # images per model run
    max_queue_delay_ms: float = Field(default=2.0, ge=0.0, le=1000.0)  # the oldest image waits at most this
    max_queue_images: int = Field(default=2048, ge=1)  # more waiting images than this: RESOURCE_EXHAUSTED
    max_inflight_batches: int = Field(default=1, ge=1, le=64)  # model runs at once, per model


@dataclass
class _Pending:
    images: list[Any]
    future: asyncio.Future[np.ndarray]
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Coalesces concurrent :meth:`submit` calls into runs of ``fn`` (one extractor's ``encode``).

    ``fn`` takes a list of images and returns one row per image; it runs in this batcher's own
    threads, never on the event loop.
    """

    def __init__(self, name: str, fn: Callable[[list[Any]], np.ndarray], settings: BatchingSettings) -> None:
        self.name = name
        self.fn = fn
        self.settings = settings
        self.max_delay_s = settings.max_queue_delay_ms / 1000.0
        self._queue: deque[_Pending] = deque()
        self._queued_images = 0
        self._wakeup: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(max_workers=settings.max_inflight_batches, thread_name_prefix=f"model-{name}")
        self._closed = False
        self.batches = 0  # model runs so far (also in the metrics)
        self._depth = QUEUE_DEPTH.labels(name)
        self._depth.set(0)

    @property
    def queued_images(self) -> int:
        return self._queued_images

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._slots = asyncio.Semaphore(self.settings.max_inflight_batches)
            self._task = asyncio.create_task(self._dispatch_forever(), name=f"batcher-{self.name}")

    async def submit(self, images: Sequence[Any]) -> np.ndarray:
        """The rows for ``images``, computed in a batch with whatever else is queued."""
        images = list(images)
        if self._closed:
            raise Unavailable("the encoder is shutting down")
        if not images:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, images)
        if self._queued_images and self._queued_images + len(images) > self.settings.max_queue_images:
            raise ResourceExhausted(
                f"encoder queue for {self.name} is full ({self._queued_images} images waiting); retry later"
            )
        self._start()
        loop = asyncio.get_running_loop()
        step = self.settings.max_batch_size
        parts = [_Pending(images[i : i + step], loop.create_future()) for i in range(0, len(images), step)]
        self._queue.extend(parts)
        self._queued_images += len(images)
        self._depth.set(self._queued_images)
        assert self._wakeup is not None
        self._wakeup.set()
        started = parts[0].queued_at
        try:
            results = await asyncio.gather(*(p.future for p in parts), return_exceptions=True)
        except BaseException:
            for p in parts:  # a cancelled call leaves the queue; the dispatcher skips done futures
                p.future.cancel()
            raise
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        rows: list[np.ndarray] = results  # type: ignore[assignment]
        LATENCY_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        return rows[0] if len(rows) == 1 else np.concatenate(rows, axis=0)

    async def _dispatch_forever(self) -> None:
        assert self._wakeup is not None and self._slots is not None
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._slots.acquire()  # the queue keeps growing while every slot is busy
            try:
                deadline = self._queue[0].queued_at + self.max_delay_s if self._queue else 0.0
                while self._queue and self._queued_images < self.settings.max_batch_size:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except TimeoutError:
                        break
                batch = self._take()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take(self) -> list[_Pending]:
        """Up to max_batch_size images from the head of the queue (calls are split at submit)."""
        batch: list[_Pending] = []
        count = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # its caller went away (cancelled / deadline)
                self._queue.popleft()
                self._queued_images -= len(head.images)
                continue
            if batch and count + len(head.images) > self.settings.max_batch_size:
                break
            self._queue.popleft()
            self._queued_images -= len(head.images)
            batch.append(head)
            count += len(head.images)
        self._depth.set(self._queued_images)
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        assert self._slots is not None
        images = [image for p in batch for image in p.images]
        started = time.perf_counter()
        for p in batch:
            QUEUE_WAIT_SECONDS.labels(self.name).observe(started - p.queued_at)
        try:
            rows = await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, images)
        except BaseException as exc:  # every call of the batch gets the error
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            start = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(rows[start : start + len(p.images)])
                start += len(p.images)
        finally:
            self.batches += 1
            MODEL_SECONDS.labels(self.name).observe(time.perf_counter() - started)
            BATCH_IMAGES.labels(self.name).observe(len(images))
            BATCH_REQUESTS.labels(self.name).observe(len(batch))
            self._slots.release()

    async def close(self) -> None:
        """Stop dispatching; queued calls fail with UNAVAILABLE, running batches finish."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._queue:
            p = self._queue.popleft()
            if not p.future.done():
                p.future.set_exception(Unavailable("the encoder is shutting down"))
        self._queued_images = 0
        self._depth.set(0)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
