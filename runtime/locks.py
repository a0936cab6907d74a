"""Stock locks: serialise read-decide-allocate per SKU across every worker process.

redis-py's ``Lock`` is a token lock released by a Lua compare-and-delete, so a worker can
only release what it holds; the TTL frees the lock of a worker that died holding it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import redis
import structlog
from redis.exceptions import LockError

log = structlog.get_logger("crossdock.locks")


class LockTimeout(RuntimeError):
    """A stock lock could not be taken in time; the job is retried by the queue."""


class StockLocks:
    def __init__(self, client: redis.Redis, prefix: str, ttl_s: float = 30.0) -> None:
        self.r = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    @contextmanager
    def hold(self, keys: Iterable[str]) -> Iterator[None]:
        """Take every lock in sorted order (no deadlock between workers), release in reverse."""
        held = []
        try:
            for key in sorted(set(keys)):
                lock = self.r.lock(f"{self.prefix}:lock:{key}", timeout=self.ttl_s, blocking_timeout=self.ttl_s * 2)
                if not lock.acquire():
                    raise LockTimeout(f"could not lock {key} within {self.ttl_s * 2:g}s")
                held.append(lock)
            yield
        finally:
            for lock in reversed(held):
                try:
                    lock.release()
                except LockError:
                    log.warning("lock.expired_before_release", lock=str(lock.name))
