"""Redis keeps what it must and no more: settled job records expire, the dead-letter stream is
trimmed, and a duplicate event posted after its record expired is decided once, applied once."""

from __future__ import annotations

import redis

from runtime.queue import Delivery, JobQueue
from tests.integration.conftest import Stack, order_event


def test_a_settled_job_record_expires_after_the_retention(stack: Stack) -> None:
    stack.set_policy(modes={"order_release": "autonomous"})
    resp = stack.publish(order_event("SO-70", [("SKU-100", 1)]))
    stack.drain()
    key = stack.container.queue.job_key(resp.json()["job_id"])
    ttl = stack.container.redis.ttl(key)
    assert 0 < ttl <= stack.container.settings.job_ttl_s


def test_an_event_redelivered_after_its_record_expired_is_applied_once(stack: Stack) -> None:
    stack.set_policy(modes={"order_release": "autonomous"})
    event = order_event("SO-71", [("SKU-100", 1)])
    first = stack.publish(event)
    stack.drain()
    stack.container.redis.delete(stack.container.queue.job_key(first.json()["job_id"]))  # the TTL ran out
    again = stack.post_events(event)
    assert again.status_code == 202 and again.json()["duplicate"] is False
    stack.drain()
    counts = [a["count"] for a in stack.state.applied_actions()]
    assert counts and set(counts) == {1}
    allocated = [al.qty for ln in stack.state.order("SO-71").lines for al in ln.allocations]
    assert allocated == [1]


def test_the_dead_letter_stream_keeps_about_its_newest_entries(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    queue = JobQueue(client, "test-retention-dead", job_ttl_s=60, dead_letter_max=10)
    try:
        for n in range(300):
            client.hset(queue.job_key(f"job-{n}"), mapping={"status": "running"})
            queue.dead_letter(Delivery(message_id="0-1", job_id=f"job-{n}", times_delivered=1), "boom")
        # XADD MAXLEN ~ trims whole radix-tree nodes: about 10, never the 300 that came in.
        assert 10 <= client.xlen(queue.dead) < 150
        assert 0 < client.ttl(queue.job_key("job-299")) <= 60
    finally:
        for key in client.scan_iter(match="test-retention-dead:*"):
            client.delete(key)
        client.close()
