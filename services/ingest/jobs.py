"""Progress of upload and sync jobs.

Two halves, each with one writer, so no count is ever read-modified-written by two processes:

* the job record (key-value bucket ``settings.job_bucket``, key = job name), written only by the
  ingest call that runs the job: how many images it queued, whether its enqueuing is over, and the
  images it rejected before queueing them (sync only). Values are absolute, so a retried write after
  a NATS hiccup cannot count twice.
* outcomes (stream ``LOOKALIKE_OUTCOMES``), written by the workers: one message per image on
  ``lookalike.outcomes.{ns}.{job}.indexed`` or ``….failed``, published with ``Nats-Msg-Id`` = job +
  the ingest event's own message id. A worker that crashes after counting but before acking gets the
  event again, publishes the same outcome again, and JetStream drops the duplicate: every image is
  counted exactly once, indexed *or* failed, without a read-modify-write or a per-image lookup. The
  counts are the per-subject message counts of the stream (one STREAM.INFO request per GetJob).

A finished job's counts and failures are snapshotted into its record, so they outlive the outcome
stream's retention.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext

from lookalike.queue import (
    MSG_ID,
    OUTCOME_STREAM,
    RecordStore,
    outcome_subject,
    read_messages,
    retry_transient,
    subject_counts,
)
from lookalike.v1 import types_pb2

log = logging.getLogger(__name__)

MAX_FAILURES_KEPT = 200
INDEXED = "indexed"
FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """What became of one queued image."""

    job: str
    # the ingest event's Nats-Msg-Id: one outcome per event and job, whatever the redeliveries
    event_id: str
    kind: str  # INDEXED or FAILED
    content_id: str
    filename: str = ""
    reason: str = ""


class JobTracker:
    def __init__(self, js: JetStreamContext, store: RecordStore) -> None:
        self.js = js
        self.store = store

    # ---- the job's own record (one writer: the ingest call running the job)

    async def start(self, job: str, kind: str = "upload", **extra: Any) -> None:
        value = {"kind": kind, "queued": 0, "enqueue_done": False, "rejected": 0, "failures": [], **extra}
        await retry_transient(lambda: self.store.put(job, value), "create job")

    async def enqueued(
        self, job: str, queued: int, done: bool, rejected: list[dict[str, str]] | None = None, **extra: Any
    ) -> None:
        """Sets the job's totals so far (absolute values: safe to repeat)."""

        async def write() -> None:
            record = await self.store.get(job)
            value = record.value if record else {"kind": "upload", "failures": []}
            value.update(extra)
            value["queued"] = queued
            value["enqueue_done"] = done
            if rejected is not None:
                value["rejected"] = len(rejected)
                value["failures"] = rejected[:MAX_FAILURES_KEPT]
            await self.store.put(job, value)

        await retry_transient(write, "update job")

    # ---- outcomes (many writers: the workers)

    async def record(self, outcomes: list[Outcome]) -> None:
        """Publishes outcomes; a repeat of an outcome already stored is dropped by JetStream."""

        async def publish(outcome: Outcome) -> None:
            body: dict[str, str] = {"content_id": outcome.content_id}
            if outcome.kind == FAILED:
                body.update(filename=outcome.filename, reason=outcome.reason)
            await retry_transient(
                lambda: self.js.publish(
                    outcome_subject(outcome.job, outcome.kind),
                    json.dumps(body).encode(),
                    stream=OUTCOME_STREAM,
                    headers={MSG_ID: f"{outcome.job}|{outcome.event_id}"},
                ),
                "publish outcome",
            )

        await asyncio.gather(*(publish(o) for o in outcomes if o.job))

    # ---- reading

    async def get(self, job: str) -> types_pb2.Job | None:
        record = await self.store.get(job)
        if record is None:
            return None
        value = record.value
        final = value.get("final")
        if final is None:
            counts = await subject_counts(self.js, OUTCOME_STREAM, outcome_subject(job))
            indexed = counts.get(outcome_subject(job, INDEXED), 0)
            failed = counts.get(outcome_subject(job, FAILED), 0)
            failures = list(value.get("failures", []))
            if failed and len(failures) < MAX_FAILURES_KEPT:
                for msg in await read_messages(self.js, OUTCOME_STREAM, outcome_subject(job, FAILED), MAX_FAILURES_KEPT - len(failures)):
                    body = json.loads(msg.data)
                    failures.append({k: body.get(k, "") for k in ("content_id", "filename", "reason")})
            queued = int(value.get("queued", 0))
            done = bool(value.get("enqueue_done")) and indexed + failed >= queued
            final = {
                "queued": queued,
                "indexed": indexed,
                "failed": failed + int(value.get("rejected", 0)),
                "failures": failures,
                "done": done,
            }
            if done:  # freeze it: later reads need no outcome (which expire)
                try:
                    await self.store.update(job, {**value, "final": final}, record.revision)
                except Exception as exc:  # best effort; the next read tries again
                    log.info("could not snapshot job %s: %s", job, exc)
        done = final["done"]
        state = types_pb2.Job.STATE_RUNNING
        if done:
            state = types_pb2.Job.STATE_FAILED if final["failed"] else types_pb2.Job.STATE_SUCCEEDED
        return types_pb2.Job(
            name=job,
            state=state,
            queued=final["queued"],
            indexed=final["indexed"],
            failed=final["failed"],
            failures=[types_pb2.JobFailure(**f) for f in final["failures"][:MAX_FAILURES_KEPT]],
            done=done,
        )
