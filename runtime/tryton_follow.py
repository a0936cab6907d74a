"""The Tryton follower as a role inside ``crossdock serve`` (``CROSSDOCK_TRYTON_FOLLOW``, issue 21).

``crossdock connect tryton`` runs ``connectors.tryton.follower.TrytonFollower`` as its own process
and posts over HTTP. With ``CROSSDOCK_TRYTON_FOLLOW=true`` (and ``CROSSDOCK_ERP=tryton``) each
``serve`` process starts a ``FollowerRole`` thread instead; the same follower, the same state in
Redis (watermarks and accepted ids under ``<prefix>:tryton-follow:tryton/<database>``, so the two
take over from each other), the same event ids. What differs:

- **One follows.** The thread polls only while its process holds a Redis lease
  (``runtime.clock.Lease``, the clock's mechanism; ``<prefix>:tryton-follow:lease``). The others
  wait and take over when the holder stops (it releases the lease on shutdown) or dies (the
  lease runs out after ``max(15 s, 4 × CROSSDOCK_TRYTON_FOLLOW_S)``). Two holders at once (a
  poll longer than the lease) would still queue nothing twice: the accepted-id set and the
  queue's dedup on (source, id) both hold.
- **No HTTP.** Events go to the queue as ``POST /v1/events`` would put them there
  (``QueueIntake``: parsed by ``domain.events.parse_event``, queued by ``JobQueue.enqueue_many``
  with its dedup), with no API key to configure. The intake's signature and source-binding checks
  are for outside callers and do not apply to the process's own thread.
- **Regions** come from the Tryton adapters' overlay, so a ``PUT /v1/network`` is in force for the
  follower at once.
- **Never gives up.** Tryton or Redis away, or a refused login: logged, shown in ``/readyz``, retried
  with a pause growing to 30 s (``connect tryton`` stops on a refused login instead).

Status for ``/readyz`` (``status``): the holder writes a Redis hash after each poll
(``<prefix>:tryton-follow:status``), so every instance reports the same follower.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis
import structlog

from runtime.clock import Lease

log = structlog.get_logger("crossdock.tryton.follow")

MAX_PAUSE_S = 30.0


def lease_key(prefix: str) -> str:
    return f"{prefix}:tryton-follow:lease"


def status_key(prefix: str) -> str:
    return f"{prefix}:tryton-follow:status"


def instance_name() -> str:
    """This process, as the status names the holder: ``host-pid``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def lease_ms(interval_s: float) -> int:
    """How long the lease outlives its holder's last renewal: four polls, at least 15 s."""
    return int(max(15.0, 4 * interval_s) * 1000)


class FollowLease:
    """The follower's lease and the status ``/readyz`` shows of its holder: one follower runs at a
    time, whichever way it was started. ``serve``'s follower (``FollowerRole``) renews it from its
    polling loop; ``crossdock connect tryton`` takes it before its first poll and renews it from a
    thread (``keep``), and both give it up at exit."""

    def __init__(self, client: redis.Redis, prefix: str, interval_s: float, name: str | None = None) -> None:
        self.r = client
        self.lease = Lease(client, lease_key(prefix), lease_ms(interval_s))
        self.status_key = status_key(prefix)
        self.interval_s = interval_s
        self.name = name or f"connect:{instance_name()}"
        self.lost = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self) -> str | None:
        """Take the lease: None when taken, else who holds it (as its status names it)."""
        if not self.lease.hold():
            holder = self.r.hget(self.status_key, "holder")
            return _s(holder) if holder else "another follower"
        self.fresh_status()
        return None

    def fresh_status(self) -> None:
        """A new holder's status: the last holder's numbers are not ours."""
        self.r.delete(self.status_key)
        self.beat(leader_since=time.time())

    def beat(self, **fields: float | str) -> None:
        """The status ``/readyz`` shows: this holder, its heartbeat, and ``fields`` (last poll, accepted)."""
        mapping: dict[Any, Any] = {"holder": self.name, "interval_s": self.interval_s, "heartbeat": time.time()}
        mapping.update({k: v if isinstance(v, str | int) else float(v) for k, v in fields.items()})
        pipe = self.r.pipeline()
        pipe.hset(self.status_key, mapping=mapping)
        pipe.pexpire(self.status_key, self.lease.lease_ms * 4)
        pipe.execute()

    def keep(self, stop: threading.Event) -> None:
        """Renew the lease every quarter of it until ``stop``; losing it (or Redis) sets ``lost`` and ``stop``."""

        def renew() -> None:
            while not stop.wait(self.lease.lease_ms / 4000):
                try:
                    held = self.lease.hold()
                    if held:
                        self.beat()
                except redis.RedisError:
                    held = False
                if not held:
                    self.lost.set()
                    stop.set()

        self._thread = threading.Thread(target=renew, name="crossdock-tryton-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Give the lease up so that ``serve``'s follower (or another) takes over at once."""
        if self._thread is not None:
            self._thread.join(self.lease.lease_ms / 4000 + 1)
        self.lease.release()


class QueueIntake:
    """The intake inside ``serve``: each event checked as ``POST /v1/events`` checks it and queued
    with the queue's dedup on (source, id); the answer per event as the HTTP intake gives it."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.accepted = 0  # queued by this process (not duplicates)

    def post(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from connectors.tryton.follower import IntakeError, IntakeUnavailable
        from domain.events import EventError, parse_event
        from runtime.metrics import EVENTS

        parsed = []
        for i, raw in enumerate(events):
            try:
                parsed.append(parse_event(raw, (i,)))
            except EventError as exc:
                raise IntakeError(f"event {raw.get('id')!r} refused: {exc}") from None
        accepted_at = repr(time.time())
        try:
            results = self.queue.enqueue_many([(e.key, e.type, e.model_dump_json(), accepted_at) for e in parsed])
        except redis.RedisError as exc:
            raise IntakeUnavailable(f"queue unavailable: {type(exc).__name__}: {exc}") from exc
        dups = sum(1 for r in results if r.duplicate)
        EVENTS.labels(result="accepted").inc(len(results) - dups)
        EVENTS.labels(result="duplicate").inc(dups)
        self.accepted += len(results) - dups
        return [
            {"job_id": r.job_id, "event_id": e.id, "source": e.source, "duplicate": r.duplicate, "status": r.status}
            for e, r in zip(parsed, results, strict=True)
        ]

    def close(self) -> None:
        pass


class _LiveRegions:
    """An order's region from the Tryton adapters' overlay in force (``PUT /v1/network`` swaps it)."""

    def __init__(self, systems: Any) -> None:
        self.systems = systems

    def region_of(self, customer: str, country: str | None) -> str:
        overlay = getattr(getattr(self.systems.oms, "b", None), "overlay", None)
        return str(overlay.region_of(customer or "", country)) if overlay is not None else ""


class FollowerRole:
    """Follow Tryton from inside ``serve`` while this process holds the lease."""

    def __init__(
        self,
        container: Any,
        config: Any,
        interval_s: float,
        *,
        since: str = "now",
        overlap_s: float = 1.0,
    ) -> None:
        self.container = container
        self.config = config  # connectors.tryton.rpc.TrytonConfig
        self.interval_s = interval_s
        self.since = since
        self.overlap_s = overlap_s
        prefix = container.settings.stream_prefix
        self.r: redis.Redis = container.redis
        self.name = instance_name()
        self.held = FollowLease(self.r, prefix, interval_s, name=self.name)
        self.lease = self.held.lease
        self.step = min(1.0, self.lease.lease_ms / 4000)  # renewals while waiting
        self.intake = QueueIntake(container.queue)
        self.follower: Any = None
        self.holding = False
        self.base = 0  # events this process had queued when it took the lease
        self.polls = 0

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        pause = self.interval_s
        try:
            while not stop.is_set():
                if not self._lead():
                    stop.wait(self.step)
                    continue
                if self._poll():
                    pause = self.interval_s
                    self._wait(stop, self.interval_s)
                else:
                    self._wait(stop, pause)
                    pause = min(MAX_PAUSE_S, pause * 2)
        finally:
            self._close()
            self.holding = False
            self.lease.release()  # another instance takes over at once

    def _lead(self) -> bool:
        """Take or renew the lease; True while this instance follows. Taking it starts a fresh
        status; losing it (or Redis) closes the Tryton session."""
        try:
            holding = self.lease.hold()
        except redis.RedisError as exc:
            log.warning("tryton.follow.redis_error", error=str(exc))
            holding = False
        if holding and not self.holding:
            self.base = self.intake.accepted
            log.info("tryton.follow.leading", instance=self.name, tryton=self.config.url)
            try:
                self.held.fresh_status()
            except redis.RedisError as exc:
                log.warning("tryton.follow.redis_error", error=str(exc))
        elif self.holding and not holding:
            log.warning("tryton.follow.lease_lost", instance=self.name)
            self._close()
        self.holding = holding
        return holding

    def _wait(self, stop: threading.Event, seconds: float) -> None:
        """Wait ``seconds`` (a retry's pause may be longer than the lease), renewing the lease and
        the heartbeat every ``step``; returns early on ``stop`` or when the lease is lost."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or stop.wait(min(left, self.step)):
                return
            if time.monotonic() < deadline:
                if not self._lead():
                    return
                self._status()

    def _poll(self) -> bool:
        """One poll (logging in first when needed); False when it failed and should be retried later."""
        from connectors.tryton.follower import FollowState, TrytonFollower, logged_in, source_of

        started = time.time()
        try:
            if self.follower is None:
                source = source_of(self.config)
                self.follower = TrytonFollower(
                    logged_in(self.config),
                    self.intake,
                    FollowState(self.r, self.container.settings.stream_prefix, source),
                    source=source,
                    network=_LiveRegions(self.container.systems),
                    since=self.since,
                    overlap_s=self.overlap_s,
                )
            result = self.follower.poll_once()
        except Exception as exc:  # noqa: BLE001 - the thread must outlive Tryton, Redis or a bad record
            message = f"{type(exc).__name__}: {exc}"[:300]
            from domain.errors import PermanentConnectorError

            if isinstance(exc, PermanentConnectorError):  # a refused login: a fresh session next time
                self._close()
            log.warning("tryton.follow.retry", error=message)
            self._status(last_error=message, error_at=time.time())
            return False
        self.polls += 1
        if result.posted or result.invalid:
            log.info("tryton.follow.poll", summary=result.line())
        for bad in result.invalid:
            log.warning("tryton.follow.not_posted", record=bad)
        self._status(
            last_poll=started,
            last_poll_ms=round(result.seconds * 1000, 1),
            last_posted=result.posted,
            accepted=self.intake.accepted - self.base,
            last_error="",
        )
        return True

    def _status(self, **fields: Any) -> None:
        try:
            self.held.beat(**fields)
        except redis.RedisError as exc:
            log.warning("tryton.follow.redis_error", error=str(exc))

    def _close(self) -> None:
        """Close the Tryton session (the lease is lost, the login refused, or serve stops)."""
        if self.follower is not None:
            follower, self.follower = self.follower, None
            try:
                follower.client.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.warning("tryton.follow.close_failed", error=str(exc))

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="crossdock-tryton-follow", daemon=True)
        thread.start()
        return thread


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def status(client: redis.Redis, prefix: str, *, now: float | None = None) -> dict[str, Any]:
    """``/readyz``'s ``follower`` entry, the same from every instance: ``running`` (an instance holds
    the lease and its thread beat within the lease), ``holder`` and whether it is ``this_instance``,
    ``last_poll`` (when the last successful poll started), ``lag_s`` (seconds since then: every
    change Tryton committed before it is queued; past a few intervals the follower is stuck or
    failing), ``last_poll_ms``, ``accepted`` (events the holder queued since it took the lease
    over) and ``last_error``."""
    now = time.time() if now is None else now
    raw = client.hgetall(status_key(prefix))
    leased = client.pttl(lease_key(prefix))
    fields = {_s(k): _s(v) for k, v in raw.items()}
    holder = fields.get("holder")
    beat = float(fields.get("heartbeat") or 0)
    interval = float(fields.get("interval_s") or 0)
    last = float(fields.get("last_poll") or 0)
    lease_s = lease_ms(interval) / 1000
    out: dict[str, Any] = {
        "enabled": True,
        "running": bool(holder) and leased > 0 and now - beat < lease_s,
        "holder": holder,
        "this_instance": holder == instance_name(),
        "holder_since": _iso(float(fields["leader_since"])) if fields.get("leader_since") else None,
        "interval_s": interval or None,
        "last_poll": _iso(last) if last else None,
        "lag_s": round(now - last, 2) if last else None,
        "last_poll_ms": float(fields["last_poll_ms"]) if fields.get("last_poll_ms") else None,
        "accepted": int(float(fields.get("accepted") or 0)),
        "last_error": fields.get("last_error") or None,
    }
    return out


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
