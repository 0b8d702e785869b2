"""Progress of upload/sync jobs, kept in a JetStream key-value bucket so every ingest process and
worker can update it (compare-and-set) and the gateway can read it."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from lookalike.queue import RecordStore
from lookalike.v1 import types_pb2

MAX_FAILURES_KEPT = 200


def empty_job() -> dict[str, Any]:
    return {"queued": 0, "indexed": 0, "failed": 0, "failures": [], "enqueue_done": False}


class JobTracker:
    def __init__(self, store: RecordStore) -> None:
        self.store = store

    async def _mutate(self, job: str, change: Any) -> dict[str, Any]:
        for attempt in range(50):
            record = await self.store.get(job)
            value = record.value if record else empty_job()
            change(value)
            if record is None:
                if await self.store.create(job, value):
                    return value
            elif await self.store.update(job, value, record.revision):
                return value
            await asyncio.sleep(random.uniform(0, 0.01 * (attempt + 1)))
        raise RuntimeError(f"job {job}: too much contention")

    async def start(self, job: str) -> None:
        await self._mutate(job, lambda v: None)

    async def enqueued(self, job: str, count: int, done: bool) -> None:
        def change(v: dict[str, Any]) -> None:
            v["queued"] += count
            v["enqueue_done"] = v["enqueue_done"] or done

        await self._mutate(job, change)

    async def finished(self, job: str, indexed: int, failures: list[dict[str, str]]) -> None:
        def change(v: dict[str, Any]) -> None:
            v["indexed"] += indexed
            v["failed"] += len(failures)
            v["failures"] = (v["failures"] + failures)[:MAX_FAILURES_KEPT]

        await self._mutate(job, change)

    async def get(self, job: str) -> types_pb2.Job | None:
        record = await self.store.get(job)
        if record is None:
            return None
        v = record.value
        # a redelivered message (worker crash between index and ack) may be counted twice; the
        # vector itself is an idempotent upsert, so clamp the count rather than report > queued
        indexed = min(v["indexed"], max(0, v["queued"] - v["failed"])) if v["enqueue_done"] else v["indexed"]
        done = v["enqueue_done"] and indexed + v["failed"] >= v["queued"]
        state = types_pb2.Job.STATE_RUNNING
        if done:
            state = types_pb2.Job.STATE_FAILED if v["failed"] else types_pb2.Job.STATE_SUCCEEDED
        return types_pb2.Job(
            name=job,
            state=state,
            queued=v["queued"],
            indexed=indexed,
            failed=v["failed"],
            failures=[types_pb2.JobFailure(**f) for f in v["failures"]],
            done=done,
        )
