"""The built-in clock: ``crossdock serve`` queues ``crossdock.tick`` every ``CROSSDOCK_TICK_S`` seconds.

A tick re-sources held orders, plans waves, runs the sweeps and backorder prevention. With
several instances, one ticks: the one holding a Redis lease (``SET NX PX``, renewed by its holder
with a compare-and-expire script, taken over when the holder stops renewing). Each tick's event
id is its time slot, so even two holders in the same slot would queue one job (intake dedups on
the event key).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from datetime import UTC, datetime

import redis
import structlog

from domain.events import CloudEvent
from runtime.queue import JobQueue

log = structlog.get_logger("crossdock.clock")

SOURCE = "crossdock/clock"
# Renew only a lease we hold: compare the token, then extend it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Release only a lease we hold, in one step (a GET then DEL could delete a successor's lease).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def tick_event(now: datetime, interval_s: float) -> CloudEvent:
    """The tick for the slot ``now`` falls in (the same slot always gives the same event id)."""
    slot = int(now.timestamp() // interval_s)
    return CloudEvent.model_validate(
        {
            "specversion": "1.0",
            "id": f"tick-{int(interval_s)}-{slot}",
            "source": SOURCE,
            "type": "crossdock.tick",
            "subject": "tick",
            "time": now.isoformat(),
            "data": {"now": now.isoformat()},
        }
    )


class Lease:
    """One holder at a time across instances: ``SET NX PX`` takes a free lease, its holder renews
    it with a compare-and-expire script, and another instance takes it over when the holder stops
    renewing (after ``lease_ms``) or releases it. The clock holds one; so does the Tryton follower
    inside ``crossdock serve`` (``runtime.tryton_follow``)."""

    def __init__(self, client: redis.Redis, key: str, lease_ms: int) -> None:
        self.r = client
        self.key = key
        self.lease_ms = int(lease_ms)
        self.token = uuid.uuid4().hex
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def hold(self) -> bool:
        """Take the lease if it is free, renew it if it is ours; True while we hold it."""
        if self.r.set(self.key, self.token, nx=True, px=self.lease_ms):
            return True
        return bool(self._renew(keys=[self.key], args=[self.token, self.lease_ms]))

    def release(self) -> None:
        """Give the lease up (if we hold it) so that another instance takes over at once."""
        with contextlib.suppress(redis.RedisError):  # unreachable: it runs out after lease_ms
            self._release(keys=[self.key], args=[self.token])


class Clock:
    """Queue a tick every ``interval_s`` while this instance holds the lease."""

    def __init__(self, client: redis.Redis, queue: JobQueue, prefix: str, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("the clock's interval must be > 0 (CROSSDOCK_TICK_S=0 turns the clock off)")
        self.r = client
        self.queue = queue
        self.interval_s = interval_s
        self.lease = Lease(client, f"{prefix}:clock:lease", int(max(3.0, interval_s * 2) * 1000))
        self.lease_key, self.token, self.lease_ms = self.lease.key, self.lease.token, self.lease.lease_ms
        self.sent = 0

    def holds_lease(self) -> bool:
        """Take the lease if it is free, renew it if it is ours; True while we hold it."""
        return self.lease.hold()

    def beat(self, now: datetime | None = None) -> bool:
        """One beat: queue the current slot's tick if we hold the lease. True if a tick was queued."""
        if not self.holds_lease():
            return False
        event = tick_event(now or datetime.now(UTC), self.interval_s)
        result = self.queue.enqueue_many([(event.key, event.type, event.model_dump_json(), repr(time.time()))])
        if result and not result[0].duplicate:
            self.sent += 1
            log.info("clock.tick", event_id=event.id)
            return True
        return False

    def run(self, stop: threading.Event) -> None:
        """Beat until ``stop`` is set; a Redis error is logged and the next beat tries again."""
        step = min(1.0, self.interval_s / 4)
        while not stop.is_set():
            try:
                self.beat()
            except redis.RedisError as exc:
                log.warning("clock.redis_error", error=str(exc))
            stop.wait(step)
        # Let another instance take over at once rather than after the lease runs out.
        self.lease.release()

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="crossdock-clock", daemon=True)
        thread.start()
        return thread
