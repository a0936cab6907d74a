"""Stock locks: serialise read-decide-allocate per SKU across every worker process.

redis-py's ``Lock`` is a token lock released by a Lua compare-and-delete, so a worker can
only release what it holds; the TTL frees the lock of a worker that died holding it.

A hold that outlives the TTL (a tick re-sourcing a large backlog) must not lose its locks
half-way, or an order could allocate the same units meanwhile: while any hold is open, one
renewer thread per ``StockLocks`` extends the held locks every third of the TTL. A process that
dies stops renewing, so its locks still expire after at most one TTL.

Every hold reports how long it waited for its locks and how long it held them to ``observe``
(a hook for tests and benchmarks), and a wait longer than ``SLOW_WAIT_S`` is logged
(``lock.waited``): an order that queues behind a long holder shows up in the logs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
import structlog
from redis.exceptions import LockError, RedisError

log = structlog.get_logger("crossdock.locks")
SLOW_WAIT_S = 0.25

# (the keys of a hold, seconds waited to take them all, seconds they were held)
Observer = Callable[[list[str], float, float], None]


class LockTimeout(RuntimeError):
    """A stock lock could not be taken in time; the job is retried by the queue."""


class StockLocks:
    def __init__(self, client: redis.Redis, prefix: str, ttl_s: float = 30.0) -> None:
        self.r = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._held: dict[int, list[Any]] = {}  # id of a hold -> its locks
        self._guard = threading.Lock()
        self._wake = threading.Event()
        self._renewer: threading.Thread | None = None
        self.observe: Observer | None = None

    @contextmanager
    def hold(self, keys: Iterable[str]) -> Iterator[None]:
        """Take every lock in sorted order (no deadlock between workers), release in reverse."""
        held: list[Any] = []
        token = id(held)
        names = sorted(set(keys))
        started = time.monotonic()
        taken = started
        try:
            for key in names:
                # thread_local=False: the renewer thread extends it with this hold's token.
                lock = self.r.lock(
                    f"{self.prefix}:lock:{key}", timeout=self.ttl_s, blocking_timeout=self.ttl_s * 2, thread_local=False
                )
                if not lock.acquire():
                    raise LockTimeout(f"could not lock {key} within {self.ttl_s * 2:g}s")
                held.append(lock)
                if len(held) == 1:
                    self._register(token, held)
            taken = time.monotonic()
            if taken - started > SLOW_WAIT_S:
                log.info("lock.waited", locks=len(names), first=names[0], waited_ms=round((taken - started) * 1000, 1))
            yield
        finally:
            with self._guard:
                self._held.pop(token, None)
            for lock in reversed(held):
                try:
                    lock.release()
                except LockError:
                    log.warning("lock.expired_before_release", lock=str(lock.name))
            if self.observe is not None and names and len(held) == len(names):
                self.observe(names, taken - started, time.monotonic() - taken)

    def _register(self, token: int, locks: list[Any]) -> None:
        with self._guard:
            self._held[token] = locks
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(target=self._renew, name="crossdock-lock-renewer", daemon=True)
                self._renewer.start()

    def _renew(self) -> None:
        """Extend every open hold's locks to a full TTL, every third of the TTL; exit when none is open."""
        while True:
            self._wake.wait(self.ttl_s / 3)
            with self._guard:
                holds = [list(locks) for locks in self._held.values()]
                if not holds:
                    self._renewer = None
                    return
            for locks in holds:
                for lock in locks:
                    try:
                        lock.reacquire()
                    except LockError:
                        log.warning("lock.lost", lock=str(lock.name))
                    except RedisError as exc:  # Redis blinked: the next beat tries again
                        log.warning("lock.renew_failed", lock=str(lock.name), error=str(exc))
