"""The worker loop: read the lanes' streams as one consumer of their groups, run the handler, settle.

At-least-once: an entry is acknowledged only after its job is settled (done, retry
scheduled or dead-lettered). A worker that dies leaves its entry pending; another worker
claims it after ``claim_idle_ms``. Handlers are idempotent, so redelivery is harmless.

Lanes (``runtime.queue``): a worker consumes the lanes it is given in priority order. One on both
lanes takes an order before any background job and takes background jobs one at a time, so at most
one tick, crew or agent judgement stands between an order and that worker; ``serve`` runs
decisions-only workers and a background worker beside them, so orders never wait behind one.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

import redis
import structlog

from runtime.metrics import JOBS
from runtime.queue import DECISIONS, LANES, Delivery, JobQueue
from runtime.settings import Settings

log = structlog.get_logger("crossdock.worker")

Handler = Callable[[str, dict[str, str]], list[str]]
"""(job_id, job fields) -> ids of the decisions recorded for it."""


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        handler: Handler,
        settings: Settings,
        name: str | None = None,
        maintenance: Callable[[], object] | None = None,
        lanes: tuple[str, ...] = LANES,
    ) -> None:
        if not lanes or any(lane not in LANES for lane in lanes):
            raise ValueError(f"lanes must be some of {', '.join(LANES)}, got {lanes!r}")
        self.queue = queue
        self.lanes = lanes
        self.handler = handler
        self.settings = settings
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident() % 100000}"
        self.processed = 0
        # Periodic duty between jobs (the pipeline's resume of decisions left executing).
        self.maintenance = maintenance
        self._maintained = time.monotonic()

    def run(self, stop: threading.Event | None = None, burst: bool = False) -> int:
        """Consume until ``stop`` is set (or, in burst mode, until the queue is idle)."""
        stop = stop or threading.Event()
        self.queue.ensure_group()
        self.queue.register(self.name, self.lanes)
        log.info("worker.started", worker=self.name, burst=burst, lanes=list(self.lanes))
        while not stop.is_set():
            try:
                batch = self._poll(burst)
                for delivery in batch:
                    self.process(delivery)
                if burst and not batch and self.queue.idle(self.lanes):
                    break
            except redis.RedisError as exc:
                # Redis blinked: whatever was in flight stays pending and is re-claimed later.
                log.warning("worker.redis_error", worker=self.name, error=str(exc))
                stop.wait(1.0)
                continue
            self._maintain()
            if burst and not batch:
                time.sleep(0.05)
        log.info("worker.stopped", worker=self.name, processed=self.processed)
        return self.processed

    def _maintain(self) -> None:
        every = min(self.settings.resume_after_s, 30.0)
        if self.maintenance is None or time.monotonic() - self._maintained < every:
            return
        self._maintained = time.monotonic()
        try:
            self.maintenance()
        except Exception as exc:  # noqa: BLE001 - a failed sweep is retried on the next beat
            log.warning("worker.maintenance_failed", worker=self.name, error=f"{type(exc).__name__}: {exc}")

    def _poll(self, burst: bool) -> list[Delivery]:
        """Stale entries first (their worker died), then the lanes in priority order: a batch of
        decisions, else a blocking read over all its lanes that takes one entry from each."""
        self.queue.promote_due(lanes=self.lanes)
        batch = [
            d for lane in self.lanes for d in self.queue.claim_stale(self.name, self.settings.claim_idle_ms, lane=lane)
        ]
        if batch:
            return batch
        block = min(self.settings.block_ms, 200) if burst else self.settings.block_ms
        first = self.lanes[0]
        if len(self.lanes) == 1:
            return self.queue.read(self.name, count=10 if first == DECISIONS else 1, block_ms=block, lane=first)
        # A batch of what is waiting in the first lane; else one blocking read over every lane, so
        # an order that arrives while the worker waits is taken at once.
        got = self.queue.read(self.name, count=10 if first == DECISIONS else 1, block_ms=0, lane=first)
        return got or self.queue.read_lanes(self.name, self.lanes, block)

    def process(self, delivery: Delivery) -> None:
        job = self.queue.job(delivery.job_id)
        if job is None or job.get("status") in ("done", "dead"):
            # Already settled by an earlier delivery: just drop the entry.
            self.queue.ack_done(delivery) if job else self.queue.dead_letter(delivery, "job record missing")
            return
        if delivery.times_delivered > self.settings.max_attempts:
            msg = f"worker died {delivery.times_delivered - 1} times processing this job"
            self.queue.dead_letter(delivery, msg)
            JOBS.labels(status="dead").inc()
            log.error("job.dead", job_id=delivery.job_id, error=msg)
            return
        self.queue.set_fields(delivery.job_id, status="running", worker=self.name, started_at=_now())
        try:
            # Every line logged while this job runs, in any module, carries its id.
            with structlog.contextvars.bound_contextvars(job_id=delivery.job_id, worker=self.name):
                decisions = self.handler(delivery.job_id, {k: str(v) for k, v in job.items()})
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, retried or dead-lettered
            error = f"{type(exc).__name__}: {exc}"
            status = self.queue.fail(
                delivery, error, self.settings.max_attempts, self.settings.retry_base_s, self.settings.retry_max_s
            )
            JOBS.labels(status=status).inc()
            log.warning(
                "job.failed",
                job_id=delivery.job_id,
                status=status,
                error=error,
                trace=traceback.format_exc(limit=3) if status == "dead" else None,
            )
            return
        self.queue.ack_done(delivery, status="done", decisions=decisions, finished_at=_now(), error="")
        self.processed += 1
        JOBS.labels(status="done").inc()
        log.info("job.done", job_id=delivery.job_id, decisions=decisions, worker=self.name)


def _now() -> str:
    return datetime.now(UTC).isoformat()
