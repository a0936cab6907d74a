"""Crossdock's own small memory in Redis: what a sweep already raised, and what to look at again.

* ``first_time(key)``: true once per key (SET NX with a TTL), so a sweep that runs every tick
  raises a finding (an overdue ASN, say) once, not on every tick.
* ``schedule(queue, member, due)`` / ``due(queue, now)`` / ``done(queue, members)``: a sorted
  set of things to re-check when their time comes (a stock gap explained by a posting in
  flight is re-checked when the grace window ends). ``due`` does not remove: the caller calls
  ``done`` after deciding, so a crash before that re-checks again rather than forgetting.
* ``value(key)`` / ``put(key, value)``: a small string a sweep keeps between ticks (the
  reconciliation sweep's watermarks and cursor).
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

FIRST_TIME_TTL_S = 30 * 24 * 3600


class RedisMemo:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.r = client
        self.prefix = prefix

    def first_time(self, key: str) -> bool:
        return bool(self.r.set(f"{self.prefix}:seen:{key}", 1, nx=True, ex=FIRST_TIME_TTL_S))

    def schedule(self, queue: str, member: str, due: float) -> None:
        self.r.zadd(f"{self.prefix}:recheck:{queue}", {member: due})

    def due(self, queue: str, now: float) -> list[str]:
        raw = self.r.zrangebyscore(f"{self.prefix}:recheck:{queue}", "-inf", now)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in raw]

    def value(self, key: str) -> str | None:
        raw = self.r.get(f"{self.prefix}:value:{key}")
        return raw.decode() if isinstance(raw, bytes) else None if raw is None else str(raw)

    def put(self, key: str, value: str) -> None:
        self.r.set(f"{self.prefix}:value:{key}", value)

    def done(self, queue: str, members: Iterable[str]) -> None:
        members = list(members)
        if members:
            self.r.zrem(f"{self.prefix}:recheck:{queue}", *members)
