"""Redis Streams job queue: atomic intake with dedup, consumer-group delivery, retries, dead letters.

Keys (``P`` = stream prefix):

- ``P:events``      the decisions lane: one entry per accepted event from a source system,
                    consumer group ``workers``
- ``P:background``  the background lane (its own group ``workers``): ticks, planners' triage
                    crews and agent judgements. They never sit in front of an order: a worker
                    reads the decisions lane first (``lanes``), and ``serve`` gives each lane its
                    own consumers, so an order is never queued behind housekeeping or a model.
- ``P:job:<id>``    a hash per job: status, event JSON, accepted_at, attempts, error, decisions, lane
- ``P:retry``, ``P:background:retry``
                    a sorted set per lane of job ids due for another attempt (score = due time)
- ``P:dead``        the dead-letter stream: job id, error and attempts after the last failure;
                    ``replay_dead`` puts a dead job back on the stream (an operator's decision)

A job's id is derived from the event's (source, id), so the existence of its hash *is*
the dedup record; intake checks and queues in one Lua script, so an accepted event is
always on the stream and a duplicate never is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

GROUP = "workers"

DECISIONS = "decisions"
BACKGROUND = "background"
LANES = (DECISIONS, BACKGROUND)
# Job types that run on the background lane; every other type is a decision about a source event.
BACKGROUND_TYPES = frozenset({"crossdock.tick", "crossdock.crew.triage", "crossdock.agent.judge"})


def lane_of(type_: str) -> str:
    return BACKGROUND if type_ in BACKGROUND_TYPES else DECISIONS


# KEYS[1], KEYS[2] = the decisions and background streams, KEYS[3..n+2] = job hashes;
# ARGV = 5 values per event (the 5th: 1 or 2, its lane's stream), then the job-key prefix.
_INTAKE = """
local out = {}
for i = 3, #KEYS do
  local a = (i - 3) * 5
  if redis.call('EXISTS', KEYS[i]) == 1 then
    out[#out + 1] = 0
    out[#out + 1] = redis.call('HGET', KEYS[i], 'status') or ''
  else
    local lane = tonumber(ARGV[a + 5])
    redis.call('HSET', KEYS[i], 'status', 'queued', 'event', ARGV[a + 1], 'accepted_at', ARGV[a + 2],
               'attempts', 0, 'event_key', ARGV[a + 3], 'type', ARGV[a + 4],
               'lane', lane == 2 and 'background' or 'decisions')
    redis.call('XADD', KEYS[lane], '*', 'job', string.sub(KEYS[i], string.len(ARGV[#ARGV]) + 1))
    out[#out + 1] = 1
    out[#out + 1] = 'queued'
  end
end
return out
"""

_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, job in ipairs(due) do
  redis.call('ZREM', KEYS[1], job)
  redis.call('XADD', KEYS[2], '*', 'job', job)
end
return #due
"""

# A dead job back on the stream: KEYS[1] = job hash, KEYS[2] = stream, KEYS[3] = dead stream;
# ARGV[1] = job id. Returns 0 when the job is not dead (nothing changes), else 1. Its entries in
# the dead-letter stream go, its last error is kept as ``replayed_error``.
_REPLAY = """
if redis.call('HGET', KEYS[1], 'status') ~= 'dead' then
  return 0
end
local last = redis.call('HGET', KEYS[1], 'error') or ''
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', 0, 'error', '', 'replayed_error', last)
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
for _, entry in ipairs(redis.call('XRANGE', KEYS[3], '-', '+')) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'job' and fields[i + 1] == ARGV[1] then
      redis.call('XDEL', KEYS[3], entry[1])
    end
  end
end
return 1
"""


def job_id_for(event_key: str) -> str:
    """Job ids derive from the business key: the same event always maps to the same job."""
    return "job-" + hashlib.sha256(event_key.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Enqueued:
    job_id: str
    duplicate: bool
    status: str


@dataclass(frozen=True)
class Delivery:
    message_id: str
    job_id: str
    times_delivered: int
    lane: str = DECISIONS


class JobQueue:
    """The queue as seen by the API (enqueue, read jobs) and the workers (consume, settle)."""

    def __init__(
        self, client: redis.Redis, prefix: str = "crossdock", job_ttl_s: int = 0, dead_letter_max: int = 0
    ) -> None:
        # redis-py types every reply as a wide union; the stream replies' shapes are fixed, so Any.
        self.r: Any = client
        self.prefix = prefix
        # Retention (0: keep): a settled job's record expires after job_ttl_s (a duplicate of its
        # event posted later is decided again, and finds its decisions and actions already done);
        # the dead-letter stream keeps about its newest dead_letter_max entries.
        self.job_ttl_s = job_ttl_s
        self.dead_letter_max = dead_letter_max
        self.streams = {DECISIONS: f"{prefix}:events", BACKGROUND: f"{prefix}:background"}
        self.retries = {DECISIONS: f"{prefix}:retry", BACKGROUND: f"{prefix}:background:retry"}
        self.stream = self.streams[DECISIONS]
        self.retry = self.retries[DECISIONS]
        self.dead = f"{prefix}:dead"
        self._intake = client.register_script(_INTAKE)
        self._coalesced: weakref.WeakKeyDictionary[Any, _Coalesced] = weakref.WeakKeyDictionary()
        self._promote = client.register_script(_PROMOTE)
        self._replay = client.register_script(_REPLAY)

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def ensure_group(self) -> None:
        for stream in self.streams.values():
            try:
                self.r.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def register(self, consumer: str, lanes: Iterable[str] = LANES) -> None:
        """Make the consumer visible in its lanes' groups (XINFO CONSUMERS) before it reads anything."""
        for lane in lanes:
            self.r.xgroup_createconsumer(self.streams[lane], GROUP, consumer)

    # --- intake ------------------------------------------------------------------------

    def _intake_args(self, events: list[tuple[str, str, str, str]]) -> tuple[list[str], list[str], list[str]]:
        ids, keys, args = [], [self.streams[DECISIONS], self.streams[BACKGROUND]], []
        for event_key, type_, event_json, accepted_at in events:
            job_id = job_id_for(event_key)
            ids.append(job_id)
            keys.append(self.job_key(job_id))
            args += [event_json, accepted_at, event_key, type_, "2" if lane_of(type_) == BACKGROUND else "1"]
        args.append(self.job_key(""))  # the prefix the script strips to recover each job id
        return ids, keys, args

    @staticmethod
    def _results(ids: list[str], flat: list[Any]) -> list[Enqueued]:
        out = []
        for i, job_id in enumerate(ids):
            created, status = flat[2 * i], flat[2 * i + 1]
            status = status.decode() if isinstance(status, bytes) else status
            out.append(Enqueued(job_id=job_id, duplicate=not created, status=status))
        return out

    def enqueue_many(self, events: Iterable[tuple[str, str, str, str]]) -> list[Enqueued]:
        """Queue (event_key, type, event_json, accepted_at) tuples: one atomic script call."""
        ids, keys, args = self._intake_args(list(events))
        return self._results(ids, self._intake(keys=keys, args=args))

    async def enqueue_many_async(self, client: Any, events: Iterable[tuple[str, str, str, str]]) -> list[Enqueued]:
        """The same through an asyncio client, so intake never leaves the event loop. The calls made
        in one turn of the loop go to Redis together, each whole (``_Coalesced``)."""
        ids, keys, args = self._intake_args(list(events))
        coalesced = self._coalesced.get(client)
        loop = asyncio.get_running_loop()
        if coalesced is None or coalesced.loop is not loop:
            coalesced = self._coalesced[client] = _Coalesced(self, client, loop)
        flat = await coalesced.submit(keys[2:], args[:-1])
        return self._results(ids, flat)

    async def _intake_async(self, client: Any, keys: list[str], args: list[str]) -> list[Any]:
        try:
            flat: list[Any] = await client.evalsha(self._intake.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            flat = await client.eval(_INTAKE, len(keys), *keys, *args)
        return flat

    # --- jobs --------------------------------------------------------------------------

    def job(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.hgetall(self.job_key(job_id))
        if not raw:
            return None
        job = {k.decode(): v.decode() for k, v in raw.items()}
        job["id"] = job_id
        job["attempts"] = int(job.get("attempts", 0))
        job["decisions"] = json.loads(job["decisions"]) if job.get("decisions") else []
        return job

    def set_fields(self, job_id: str, **fields: Any) -> None:
        self.r.hset(self.job_key(job_id), mapping={k: _enc(v) for k, v in fields.items()})

    # --- consuming ---------------------------------------------------------------------

    def read(self, consumer: str, count: int, block_ms: int, lane: str = DECISIONS) -> list[Delivery]:
        stream = self.streams[lane]
        resp = self.r.xreadgroup(GROUP, consumer, {stream: ">"}, count=count, block=block_ms or None)
        out = []
        for _stream, messages in resp or []:
            for msg_id, fields in messages:
                out.append(Delivery(_s(msg_id), _s(fields[b"job"]), 1, lane))
        return out

    def read_lanes(self, consumer: str, lanes: Iterable[str], block_ms: int) -> list[Delivery]:
        """One blocking read over several lanes (one entry at most from each), in ``lanes`` order:
        a worker on both lanes waits for whichever comes first, and an order is never kept waiting
        by a block on the background lane."""
        order = list(lanes)
        streams = {self.streams[lane]: ">" for lane in order}
        resp = self.r.xreadgroup(GROUP, consumer, streams, count=1, block=block_ms or None)
        lane_of_stream = {self.streams[lane]: lane for lane in order}
        out = []
        for stream, messages in resp or []:
            lane = lane_of_stream[_s(stream)]
            for msg_id, fields in messages:
                out.append(Delivery(_s(msg_id), _s(fields[b"job"]), 1, lane))
        return sorted(out, key=lambda d: order.index(d.lane))

    def claim_stale(self, consumer: str, min_idle_ms: int, count: int = 20, lane: str = DECISIONS) -> list[Delivery]:
        """Take over entries whose worker has been silent for ``min_idle_ms`` (it died)."""
        stream = self.streams[lane]
        pending = self.r.xpending_range(stream, GROUP, min="-", max="+", count=count, idle=min_idle_ms)
        if not pending:
            return []
        times = {_s(p["message_id"]): int(p["times_delivered"]) for p in pending}
        claimed = self.r.xclaim(stream, GROUP, consumer, min_idle_ms, list(times))
        out = []
        for msg_id, fields in claimed:
            if fields is None:  # entry was deleted from the stream
                continue
            mid = _s(msg_id)
            out.append(Delivery(mid, _s(fields[b"job"]), times.get(mid, 1) + 1, lane))
        return out

    def promote_due(self, now: float | None = None, lanes: Iterable[str] = LANES) -> int:
        at = now if now is not None else time.time()
        return sum(int(self._promote(keys=[self.retries[lane], self.streams[lane]], args=[at])) for lane in lanes)

    def ack_done(self, delivery: Delivery, **fields: Any) -> None:
        pipe = self.r.pipeline(transaction=True)
        if fields:
            pipe.hset(self.job_key(delivery.job_id), mapping={k: _enc(v) for k, v in fields.items()})
        if self.job_ttl_s:
            pipe.expire(self.job_key(delivery.job_id), self.job_ttl_s)
        pipe.xack(self.streams[delivery.lane], GROUP, delivery.message_id)
        pipe.xdel(self.streams[delivery.lane], delivery.message_id)
        pipe.execute()

    def fail(self, delivery: Delivery, error: str, max_attempts: int, base_s: float, max_s: float) -> str:
        """Record a failed attempt: schedule a retry with backoff, or dead-letter it."""
        attempts = int(self.r.hincrby(self.job_key(delivery.job_id), "attempts", 1))
        pipe = self.r.pipeline(transaction=True)
        if attempts >= max_attempts:
            pipe.hset(self.job_key(delivery.job_id), mapping={"status": "dead", "error": error})
            trim = {"maxlen": self.dead_letter_max, "approximate": True} if self.dead_letter_max else {}
            pipe.xadd(self.dead, {"job": delivery.job_id, "error": error[:4000], "attempts": attempts}, **trim)
            if self.job_ttl_s:
                pipe.expire(self.job_key(delivery.job_id), self.job_ttl_s)
            status = "dead"
        else:
            delay = min(max_s, base_s * 2 ** (attempts - 1)) * random.uniform(0.5, 1.0)
            pipe.hset(self.job_key(delivery.job_id), mapping={"status": "retrying", "error": error})
            pipe.zadd(self.retries[delivery.lane], {delivery.job_id: time.time() + delay})
            status = "retrying"
        pipe.xack(self.streams[delivery.lane], GROUP, delivery.message_id)
        pipe.xdel(self.streams[delivery.lane], delivery.message_id)
        pipe.execute()
        return status

    def dead_letter(self, delivery: Delivery, error: str) -> None:
        self.fail(delivery, error, max_attempts=0, base_s=0, max_s=0)

    # --- observability -----------------------------------------------------------------

    def idle(self, lanes: Iterable[str] = LANES) -> bool:
        """Nothing queued, in flight or waiting for a retry in ``lanes`` (burst workers stop here).

        Settled entries are deleted from the stream, so its length is the backlog plus
        what is in flight.
        """
        pipe = self.r.pipeline(transaction=False)
        for lane in lanes:
            pipe.xlen(self.streams[lane])
            pipe.zcard(self.retries[lane])
        return not any(int(n) for n in pipe.execute())

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        if not self.r.exists(self.dead):
            return []
        return [{k.decode(): v.decode() for k, v in f.items()} for _, f in self.r.xrange(self.dead, count=count)]

    def replay_dead(self, job_id: str) -> bool:
        """Put a dead job back on the stream with its attempts reset; False when it is not dead."""
        lane = _s(self.r.hget(self.job_key(job_id), "lane") or DECISIONS)
        keys = [self.job_key(job_id), self.streams.get(lane, self.stream), self.dead]
        return bool(self._replay(keys=keys, args=[job_id]))

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """Depth (streams + retrying, all lanes), jobs retrying, dead letters, the age in seconds of
        the oldest job still queued, in flight or retrying (None when there is none), from its
        ``accepted_at``, and the same depth and age per lane."""
        now = time.time() if now is None else now
        pipe = self.r.pipeline(transaction=False)
        for lane in LANES:
            pipe.xlen(self.streams[lane])
            pipe.zcard(self.retries[lane])
            pipe.xrange(self.streams[lane], count=1)
            pipe.zrange(self.retries[lane], 0, 9)
        pipe.exists(self.dead)
        replies = pipe.execute()
        has_dead = replies.pop()
        lanes: dict[str, dict[str, Any]] = {}
        for i, lane in enumerate(LANES):
            length, retrying, first, due = replies[4 * i : 4 * i + 4]
            jobs = [_s(fields[b"job"]) for _, fields in first] + [_s(j) for j in due]
            ages = self._ages(jobs, now)
            if not ages and first:  # no accepted_at: the stream entry's own time
                ages.append(now - int(_s(first[0][0]).split("-")[0]) / 1000)
            lanes[lane] = {
                "depth": int(length) + int(retrying),
                "retrying": int(retrying),
                "oldest_age_s": round(max(0.0, max(ages)), 3) if ages else None,
            }
        ages = [x["oldest_age_s"] for x in lanes.values() if x["oldest_age_s"] is not None]
        return {
            "depth": sum(x["depth"] for x in lanes.values()),
            "retrying": sum(x["retrying"] for x in lanes.values()),
            "dead": int(self.r.xlen(self.dead)) if has_dead else 0,
            "oldest_age_s": max(ages) if ages else None,
            "lanes": lanes,
        }

    def _ages(self, jobs: list[str], now: float) -> list[float]:
        if not jobs:
            return []
        pipe = self.r.pipeline(transaction=False)
        for job in jobs:
            pipe.hget(self.job_key(job), "accepted_at")
        ages = []
        for raw in pipe.execute():
            try:
                ages.append(now - float(_s(raw)))
            except (TypeError, ValueError):
                continue
        return ages


class _Coalesced:
    """The intake calls made through one asyncio client in one turn of its event loop, sent as one
    script call (more when they hold over ``MAX_EVENTS`` events). Under load many requests reach
    intake in the same turn: they share the client's per-call cost (pool, retry, timeouts, parsing)
    and Redis's, and wait for no one else (a call alone goes out on the next turn). Each call stays
    whole inside one script run, in the order made (a duplicate of an event made earlier in the
    same run is a duplicate, as it would be one call later), and gets its own results back; when the
    script call fails, every call in it raises that error (the events the script had queued before
    it failed stay queued, as in one batch: posted again, they are duplicates)."""

    MAX_EVENTS = 1000

    def __init__(self, queue: JobQueue, client: Any, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: the queue's map of these is keyed weakly by the client, which this must not keep alive.
        self.client, self.queue, self.loop = weakref.ref(client), queue, loop
        self.waiting: list[tuple[list[str], list[str], asyncio.Future[list[Any]]]] = []
        self.running: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references

    def submit(self, keys: list[str], args: list[str]) -> asyncio.Future[list[Any]]:
        """One call's job keys and its 5 script arguments per event; its 2 replies per event."""
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        if not self.waiting:
            self.loop.call_soon(self._flush)
        self.waiting.append((keys, args, future))
        return future

    def _flush(self) -> None:
        waiting, self.waiting = self.waiting, []
        group: list[tuple[list[str], list[str], asyncio.Future[list[Any]]]] = []
        size = 0
        for call in waiting:
            if group and size + len(call[0]) > self.MAX_EVENTS:
                self._start(group)
                group, size = [], 0
            group.append(call)
            size += len(call[0])
        self._start(group)

    def _start(self, group: list[tuple[list[str], list[str], asyncio.Future[list[Any]]]]) -> None:
        task = self.loop.create_task(self._send(group))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _send(self, group: list[tuple[list[str], list[str], asyncio.Future[list[Any]]]]) -> None:
        queue = self.queue
        keys = [queue.streams[DECISIONS], queue.streams[BACKGROUND]]
        args: list[str] = []
        for call_keys, call_args, _ in group:
            keys += call_keys
            args += call_args
        args.append(queue.job_key(""))
        try:
            client = self.client()
            if client is None:  # no caller is left to hold it
                raise redis.ConnectionError("the Redis client was closed")
            flat = await queue._intake_async(client, keys, args)
        except BaseException as exc:
            for _, _, future in group:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for call_keys, _, future in group:
            if not future.done():  # its request may have gone (cancelled)
                future.set_result(flat[at : at + 2 * len(call_keys)])
            at += 2 * len(call_keys)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _enc(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)
