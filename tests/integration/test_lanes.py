"""Orders never wait behind housekeeping: ticks, triage crews and agent judgements run on the
background lane, and an agent's judgement is a job of its own after the engine's decision."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from domain.decisions import Proposal
from runtime.clock import tick_event
from runtime.queue import BACKGROUND, DECISIONS, Delivery, JobQueue, lane_of
from runtime.settings import Settings
from runtime.worker import Worker
from tests.integration.conftest import Stack, order_event
from tests.integration.test_lifecycle import agent_ticket


@pytest.fixture
def queue(redis_url: str) -> Iterator[JobQueue]:
    client = redis.Redis.from_url(redis_url)
    q = JobQueue(client, f"test-lanes-{secrets.token_hex(4)}")
    q.ensure_group()
    try:
        yield q
    finally:
        for key in client.scan_iter(match=f"{q.prefix}:*"):
            client.delete(key)
        client.close()


def settings(**kw: Any) -> Settings:
    values: dict[str, Any] = {"block_ms": 50, "claim_idle_ms": 60_000, "retry_base_s": 0.01, "retry_max_s": 0.02}
    return Settings(env="test", **{**values, **kw})


def enqueue(queue: JobQueue, key: str, type_: str) -> str:
    [queued] = queue.enqueue_many([(key, type_, json.dumps({"type": type_}), repr(time.time()))])
    return queued.job_id


def test_each_job_type_has_its_lane() -> None:
    assert lane_of("oms.order.created") == DECISIONS and lane_of("wms.receipt.posted") == DECISIONS
    assert {lane_of(t) for t in ("crossdock.tick", "crossdock.crew.triage", "crossdock.agent.judge")} == {BACKGROUND}


def test_a_worker_on_both_lanes_takes_orders_before_a_tick_queued_earlier(queue: JobQueue) -> None:
    tick = enqueue(queue, "tick-1", "crossdock.tick")
    orders = [enqueue(queue, f"order-{n}", "oms.order.created") for n in range(3)]
    lanes = queue.stats()["lanes"]
    assert {lane: (x["depth"], x["retrying"]) for lane, x in lanes.items()} == {DECISIONS: (3, 0), BACKGROUND: (1, 0)}
    assert lanes[BACKGROUND]["oldest_age_s"] >= lanes[DECISIONS]["oldest_age_s"] >= 0  # the tick came first
    seen: list[str] = []
    Worker(queue, lambda job_id, job: seen.append(job_id) or [], settings(), name="both").run(burst=True)
    assert seen == [*orders, tick]
    assert queue.idle()


def test_an_order_is_decided_while_a_background_job_is_still_running(queue: JobQueue) -> None:
    release = threading.Event()
    started = threading.Event()
    done: dict[str, float] = {}

    def handler(job_id: str, job: dict[str, str]) -> list[str]:
        if job["type"] == "crossdock.tick":
            started.set()
            assert release.wait(10), "the test never released the tick"
        done[job["type"]] = time.monotonic()
        return []

    stop = threading.Event()
    workers = [
        Worker(queue, handler, settings(), name="bg", lanes=(BACKGROUND,)),
        Worker(queue, handler, settings(), name="orders", lanes=(DECISIONS,)),
    ]
    threads = [threading.Thread(target=w.run, args=(stop,)) for w in workers]
    for t in threads:
        t.start()
    try:
        enqueue(queue, "tick-2", "crossdock.tick")
        assert started.wait(10)
        order = enqueue(queue, "order-9", "oms.order.created")
        deadline = time.monotonic() + 10
        while "oms.order.created" not in done and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "oms.order.created" in done and "crossdock.tick" not in done  # the tick is still running
        assert (queue.job(order) or {})["status"] == "done"
        release.set()
        while "crossdock.tick" not in done and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "crossdock.tick" in done
    finally:
        release.set()
        stop.set()
        for t in threads:
            t.join(10)


def test_a_worker_waiting_on_both_lanes_takes_an_order_as_soon_as_it_comes(queue: JobQueue) -> None:
    taken: dict[str, float] = {}
    stop = threading.Event()

    def handler(job_id: str, job: dict[str, str]) -> list[str]:
        taken[job["type"]] = time.monotonic()
        return []

    worker = Worker(queue, handler, settings(block_ms=3000), name="both")
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        time.sleep(0.5)  # the worker is blocked waiting, on both lanes at once
        sent = time.monotonic()
        enqueue(queue, "order-late", "oms.order.created")
        deadline = sent + 10
        while "oms.order.created" not in taken and time.monotonic() < deadline:
            time.sleep(0.01)
        assert taken["oms.order.created"] - sent < 1.5  # not after the 3 s block on the background lane
    finally:
        stop.set()
        thread.join(10)


def test_a_failed_background_job_retries_and_comes_back_to_its_own_lane(queue: JobQueue) -> None:
    job = enqueue(queue, "tick-3", "crossdock.tick")
    [delivery] = queue.read("w", count=10, block_ms=0, lane=BACKGROUND)
    assert delivery.job_id == job and queue.read("w", count=10, block_ms=0, lane=DECISIONS) == []
    assert queue.fail(delivery, "boom", max_attempts=3, base_s=0.0, max_s=0.0) == "retrying"
    assert queue.stats()["lanes"][BACKGROUND]["retrying"] == 1
    assert queue.promote_due(now=time.time() + 1) == 1
    assert [d.job_id for d in queue.read("w", count=10, block_ms=0, lane=BACKGROUND)] == [job]
    # Dead-lettered, then replayed by an operator: back on the background lane, not the decisions one.
    queue.dead_letter(Delivery("0-1", job, 1, BACKGROUND), "gave up")
    assert queue.replay_dead(job)
    assert queue.r.xlen(queue.streams[BACKGROUND]) == 2 and queue.r.xlen(queue.streams[DECISIONS]) == 0


def test_the_engine_decides_and_executes_before_the_agent_is_even_asked(stack: Stack) -> None:
    c = stack.container
    stack.set_policy(modes={"order_release": "autonomous", "allocation": "autonomous"})
    asked: list[str] = []

    def judge(event: Any, proposals: list[Proposal]) -> list[Any]:
        asked.append(event.id)
        return [agent_ticket(str(event.data["id"]))]

    c.pipeline.judge = judge
    resp = stack.publish(order_event("SO-L1", [("SKU-100", 1)], note="Deliver between 9 and 11"))
    job_id = resp.json()["job_id"]
    # Only the decisions lane: the event's job finishes, the judgement waits on the background lane.
    Worker(c.queue, c.pipeline.handle, c.settings, name="orders", lanes=(DECISIONS,)).run(burst=True)
    job = c.queue.job(job_id) or {}
    assert job["status"] == "done" and asked == []
    [engine] = c.store.list_decisions(job_id=job_id)
    assert (engine.outcome, engine.status) == ("released", "executed")
    judgement = c.queue.job(job["judgement_job"]) or {}
    assert judgement["status"] == "queued" and judgement["type"] == "crossdock.agent.judge"
    # A redelivered event job queues the judgement once (its id derives from the event's).
    assert c.queue.stats()["lanes"][BACKGROUND]["depth"] == 1
    Worker(c.queue, c.pipeline.handle, c.settings, name="bg", lanes=(BACKGROUND,)).run(burst=True)
    assert len(asked) == 1
    decisions = stack.client.get(f"/v1/jobs/{job_id}", headers=stack.headers("planner")).json()["decisions"]
    assert [(d["engine_version"], d["outcome"], d["status"]) for d in decisions] == [
        (engine.engine_version, "released", "executed"),
        ("agent:allocation", "ticketed", "executed"),
    ], decisions
    assert [t["subject"] for t in stack.state.export_state()["tickets"]] == ["SO-L1"]


def test_a_source_system_cannot_post_an_agent_judgement(stack: Stack) -> None:
    resp = stack.post_events(
        {
            "specversion": "1.0",
            "id": "forged-judge",
            "source": "oms/test",
            "type": "crossdock.agent.judge",
            "data": {"event": {}, "proposals": [], "before": {}, "job_id": "job-x", "accepted_at": 0},
        }
    )
    assert resp.status_code == 422 and "crossdock.agent.judge" in resp.text


def test_the_clock_tick_goes_to_the_background_lane(queue: JobQueue) -> None:
    from datetime import UTC, datetime

    event = tick_event(datetime(2026, 3, 21, 8, 0, tzinfo=UTC), 60)
    queue.enqueue_many([(event.key, event.type, event.model_dump_json(), repr(time.time()))])
    assert queue.r.xlen(queue.streams[BACKGROUND]) == 1 and queue.r.xlen(queue.streams[DECISIONS]) == 0
