"""Stock locks outlive their TTL while held (a long tick keeps them), and still expire when the
holder is gone."""

from __future__ import annotations

import secrets
import time

import pytest
import redis

from runtime.locks import LockTimeout, StockLocks


def test_a_hold_longer_than_the_ttl_keeps_its_lock_and_releases_it_cleanly(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    prefix = f"test-locks-{secrets.token_hex(4)}"
    locks = StockLocks(client, prefix, ttl_s=0.6)
    rival = StockLocks(client, prefix, ttl_s=0.3)
    try:
        with locks.hold(["sku:A", "sku:B"]):
            time.sleep(1.5)  # 2.5 TTLs: without renewal both locks would have expired
            assert client.exists(f"{prefix}:lock:sku:A") and client.exists(f"{prefix}:lock:sku:B")
            with pytest.raises(LockTimeout), rival.hold(["sku:B"]):  # still ours: a rival waits, then gives up
                pass
        assert not client.exists(f"{prefix}:lock:sku:A") and not client.exists(f"{prefix}:lock:sku:B")
        # With no hold open, the renewer stops: a lock left behind by a dead holder expires.
        deadline = time.monotonic() + 5
        while locks._renewer is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert locks._renewer is None
        client.set(f"{prefix}:lock:sku:C", "dead-holder", px=300)
        with rival.hold(["sku:C"]):  # taken once the dead holder's TTL ran out
            pass
    finally:
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
        client.close()
