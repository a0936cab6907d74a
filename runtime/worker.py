"""The worker loop: read the stream as one consumer of the group, run the handler, settle.

At-least-once: an entry is acknowledged only after its job is settled (done, retry
scheduled or dead-lettered). A worker that dies leaves its entry pending; another worker
claims it after ``claim_idle_ms``. Handlers are idempotent, so redelivery is harmless.
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
from runtime.queue import Delivery, JobQueue
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
    ) -> None:
        self.queue = queue
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
        self.queue.register(self.name)
        log.info("worker.started", worker=self.name, burst=burst)
        while not stop.is_set():
            try:
                batch = self._poll(burst)
                for delivery in batch:
                    self.process(delivery)
                if burst and not batch and self.queue.idle():
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
        self.queue.promote_due()
        batch = self.queue.claim_stale(self.name, self.settings.claim_idle_ms)
        block = 0 if batch else (min(self.settings.block_ms, 200) if burst else self.settings.block_ms)
        return batch + self.queue.read(self.name, count=10, block_ms=block)

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
