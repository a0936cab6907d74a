"""Event intake through the real HTTP API and the machine's Redis."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import redis.asyncio
from fastapi import APIRouter, Depends

from api.main import create_app
from api.routes.events import IntakeRoute, post_events
from api.signing import sign
from runtime.queue import JobQueue, _Coalesced, job_id_for
from tests.integration.conftest import Stack, close_stack, make_stack, order_event


def stream_len(stack: Stack) -> int:
    return int(stack.container.redis.xlen(stack.container.queue.stream))


def test_accepts_an_event_with_202_and_a_job_id_and_queues_it(stack: Stack) -> None:
    resp = stack.post_events(order_event("SO-1", [("SKU-100", 2)]))
    assert resp.status_code == 202
    body = resp.json()
    assert body["job_id"].startswith("job-") and body["duplicate"] is False and body["status"] == "queued"
    assert stream_len(stack) == 1
    job = stack.client.get(f"/v1/jobs/{body['job_id']}", headers=stack.headers("gateway")).json()
    assert job["status"] == "queued" and job["type"] == "oms.order.created" and job["decisions"] == []


def test_a_duplicate_source_and_id_answers_with_the_first_job_and_queues_nothing(stack: Stack) -> None:
    event = order_event("SO-1", [("SKU-100", 2)])
    first = stack.post_events(event).json()
    event["data"]["lines"][0]["qty"] = 9  # same (source, id), different body: still the same event
    second = stack.post_events(event).json()
    assert second["job_id"] == first["job_id"] and second["duplicate"] is True
    assert stream_len(stack) == 1


def test_the_same_id_from_another_source_is_a_different_event(stack: Stack) -> None:
    a = order_event("SO-1", [("SKU-100", 2)])
    b = {**a, "source": "oms/other"}
    assert stack.post_events(a).json()["job_id"] != stack.post_events(b).json()["job_id"]
    assert stream_len(stack) == 2


def test_a_batch_is_accepted_whole_and_duplicates_inside_it_are_counted(stack: Stack) -> None:
    events = [order_event(f"SO-{i}", [("SKU-100", 1)]) for i in range(5)]
    resp = stack.post_events([*events, events[0]])
    assert resp.status_code == 202
    body = resp.json()
    assert body["accepted"] == 5 and body["duplicates"] == 1 and len(body["jobs"]) == 6
    assert stream_len(stack) == 5


def test_bad_data_answers_422_naming_the_field_and_queues_nothing(stack: Stack) -> None:
    event = order_event("SO-1", [("SKU-100", 0)])
    resp = stack.post_events(event)
    assert resp.status_code == 422
    locs = [e["loc"] for e in resp.json()["detail"]]
    assert "data.lines.0.qty" in locs
    assert stream_len(stack) == 0


def test_a_bad_event_in_a_batch_rejects_the_whole_batch_naming_its_index(stack: Stack) -> None:
    good = order_event("SO-1", [("SKU-100", 1)])
    bad = order_event("SO-2", [("SKU-100", 1)])
    del bad["data"]["customer"]
    resp = stack.post_events([good, bad])
    assert resp.status_code == 422
    assert [e["loc"] for e in resp.json()["detail"]] == ["1.data.customer"]
    assert stream_len(stack) == 0


def test_unknown_type_missing_attribute_and_invalid_json_are_422(stack: Stack) -> None:
    unknown = {**order_event("SO-1", [("SKU-100", 1)]), "type": "oms.order.exploded"}
    r1 = stack.post_events(unknown)
    assert r1.status_code == 422 and r1.json()["detail"][0]["loc"] == "type"
    missing = order_event("SO-1", [("SKU-100", 1)])
    del missing["specversion"]
    r2 = stack.post_events(missing)
    assert r2.status_code == 422 and r2.json()["detail"][0]["loc"] == "specversion"
    r3 = stack.client.post("/v1/events", content=b"{not json", headers=stack.headers("gateway"))
    assert r3.status_code == 422 and r3.json()["detail"][0]["loc"] == "body"
    assert stream_len(stack) == 0


def test_no_key_is_401_and_the_wrong_role_is_403(stack: Stack) -> None:
    event = order_event("SO-1", [("SKU-100", 1)])
    assert stack.client.post("/v1/events", json=event).status_code == 401
    assert stack.client.post("/v1/events", json=event, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert stack.post_events(event, role="cs_rep").status_code == 403
    assert stack.post_events(event, role="planner").status_code == 403
    assert stack.client.get("/v1/decisions", headers=stack.headers("gateway")).status_code == 403
    assert stack.client.get("/v1/decisions", headers=stack.headers("planner")).status_code == 200
    assert stack.client.get("/metrics", headers=stack.headers("planner")).status_code == 403
    assert stream_len(stack) == 0


def test_health_readiness_and_metrics(stack: Stack) -> None:
    assert stack.client.get("/healthz").json() == {"status": "ok"}
    ready = stack.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["redis"] is True and ready.json()["store"] is True
    assert ready.json()["knowledge"] == {"loaded": False, "location": None}
    stack.api.server.config.app.state.knowledge = type("KB", (), {"location": "/srv/kb"})()
    assert stack.client.get("/readyz").json()["knowledge"] == {"loaded": True, "location": "/srv/kb"}
    stack.post_events(order_event("SO-1", [("SKU-100", 1)]))
    metrics = stack.client.get("/metrics", headers=stack.headers("admin")).text
    assert 'crossdock_events_total{result="accepted"}' in metrics


def test_readiness_is_503_when_redis_is_unreachable(stack: Stack) -> None:
    real = stack.container.redis
    stack.container.redis = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)  # nothing listens
    try:
        resp = stack.client.get("/readyz")
    finally:
        stack.container.redis = real
    assert resp.status_code == 503 and resp.json()["status"] == "not_ready"
    assert resp.json()["redis"].startswith("unreachable")


def _signed_stack(tmp_path: Any, redis_url: str, example: dict[str, Any]) -> Stack:
    return make_stack(tmp_path, redis_url, example, source_secrets="oms/test=s3cret,wms/other=zzz")


def test_signed_sources_need_a_valid_fresh_signature(tmp_path: Any, redis_url: str, example: dict[str, Any]) -> None:
    stack = _signed_stack(tmp_path, redis_url, example)
    try:
        body = json.dumps(order_event("SO-1", [("SKU-100", 1)])).encode()
        h = {**stack.headers("gateway"), "Content-Type": "application/json"}
        assert stack.client.post("/v1/events", content=body, headers=h).status_code == 401
        wrong = {**h, "X-Crossdock-Signature": sign(body, "other-secret")}
        assert stack.client.post("/v1/events", content=body, headers=wrong).status_code == 401
        stale = {**h, "X-Crossdock-Signature": sign(body, "s3cret", int(time.time()) - 301)}
        assert stack.client.post("/v1/events", content=body, headers=stale).status_code == 401
        assert stream_len(stack) == 0
        good = {**h, "X-Crossdock-Signature": sign(body, "s3cret")}
        assert stack.client.post("/v1/events", content=body, headers=good).status_code == 202
        # A source with no secret configured needs no signature.
        unsigned = order_event("SO-2", [("SKU-100", 1)])
        unsigned["source"] = "oms/unsigned"
        assert stack.post_events(unsigned).status_code == 202
        assert stream_len(stack) == 2
    finally:
        close_stack(stack)


def test_a_binary_mode_cloudevent_is_accepted_like_a_structured_one(stack: Stack) -> None:
    event = order_event("SO-B1", [("SKU-100", 2)])
    headers = {
        **stack.headers("gateway"),
        "ce-specversion": "1.0",
        "ce-id": event["id"],
        "ce-source": event["source"],
        "ce-type": event["type"],
        "ce-time": event["time"],
        "ce-subject": event["subject"],
        "Content-Type": "application/json",
    }
    resp = stack.client.post("/v1/events", content=json.dumps(event["data"]).encode(), headers=headers)
    assert resp.status_code == 202, resp.text
    structured = stack.post_events(event).json()
    assert structured["duplicate"] is True and structured["job_id"] == resp.json()["job_id"]
    bad = {**headers, "ce-type": "oms.order.exploded"}
    rejected = stack.client.post("/v1/events", content=json.dumps(event["data"]).encode(), headers=bad)
    assert rejected.status_code == 422 and rejected.json()["detail"][0]["loc"] == "type"
    assert stream_len(stack) == 1


def _counts(stack: Stack) -> dict[str, float]:
    """This process's ``crossdock_events_total`` by result."""
    text = stack.client.get("/metrics", headers=stack.headers("admin")).text
    found = re.findall(r'^crossdock_events_total\{result="(\w+)"\} ([\d.e+]+)$', text, re.MULTILINE)
    return {result: float(value) for result, value in found}


def test_accepted_and_duplicate_events_are_counted_and_an_admin_key_may_post(stack: Stack) -> None:
    before = _counts(stack)
    event = order_event("SO-M1", [("SKU-100", 1)])
    assert stack.post_events(event).status_code == 202
    assert stack.post_events(event, role="admin").json()["duplicate"] is True
    assert stack.post_events([event, order_event("SO-M2", [("SKU-100", 1)])]).json()["accepted"] == 1
    assert stack.post_events({**event, "id": ""}).status_code == 422
    after = _counts(stack)
    assert after["accepted"] - before.get("accepted", 0) == 2
    assert after["duplicate"] - before.get("duplicate", 0) == 2
    assert after["rejected"] - before.get("rejected", 0) == 1


def test_concurrent_posts_each_get_their_own_jobs(stack: Stack) -> None:
    events = [order_event(f"SO-C{i}", [("SKU-100", 1 + i % 3)]) for i in range(24)]
    bodies: list[Any] = [*events[:16], events[16:20], events[20:], events[0], [events[1], events[5]]]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(stack.post_events, bodies))
    assert [a.status_code for a in answers] == [202] * len(bodies)
    singles = [a.json() for a in answers[:16]]
    assert [s["event_id"] for s in singles] == [e["id"] for e in events[:16]]
    assert all(s["job_id"] == job_id_for(f"{e['source']}|{e['id']}") for s, e in zip(singles, events, strict=False))
    assert [j["event_id"] for j in answers[16].json()["jobs"]] == [e["id"] for e in events[16:20]]
    assert answers[17].json()["accepted"] == 4
    # Posted with the first: which one was queued depends on the order they arrived, but not both.
    assert singles[0]["duplicate"] + answers[18].json()["duplicate"] == 1
    assert stream_len(stack) == 24


def _intake(n: int) -> tuple[str, str, str, str]:
    return (f"oms/t|e{n}", "oms.order.created", json.dumps({"n": n}), "1.0")


def _counted_queue(redis_url: str) -> tuple[JobQueue, list[int]]:
    """A queue on its own prefix whose script calls are recorded (events per call)."""
    queue = JobQueue(redis.Redis.from_url(redis_url), prefix=f"test-{secrets.token_hex(4)}")
    calls: list[int] = []
    send = queue._intake_async

    async def counted(client: Any, keys: list[str], args: list[str]) -> list[Any]:
        calls.append(len(keys) - 2)  # the two streams, then a job key per event
        return await send(client, keys, args)

    queue._intake_async = counted  # type: ignore[method-assign]
    return queue, calls


def _drop(queue: JobQueue) -> None:
    for key in queue.r.scan_iter(match=f"{queue.prefix}:*", count=1000):
        queue.r.delete(key)


def _together(redis_url: str, queue: JobQueue, *calls: list[tuple[str, str, str, str]]) -> list[Any]:
    """The calls made in one turn of a loop (as concurrent requests make them); results or errors."""

    async def run() -> list[Any]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            made = [queue.enqueue_many_async(client, events) for events in calls]
            return await asyncio.gather(*made, return_exceptions=True)
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_intake_calls_made_together_share_one_script_call_each_with_its_own_results(redis_url: str) -> None:
    queue, calls = _counted_queue(redis_url)
    try:
        first, second, third = _together(
            redis_url, queue, [_intake(1), _intake(2)], [_intake(3)], [_intake(2), _intake(4)]
        )
        assert calls == [5]
        assert [r.job_id for r in first] == [job_id_for("oms/t|e1"), job_id_for("oms/t|e2")]
        assert [r.job_id for r in second] == [job_id_for("oms/t|e3")]
        # e2 again, made after the first call: a duplicate of it, as it would be one call later.
        assert [(r.duplicate, r.status) for r in third] == [(True, "queued"), (False, "queued")]
        assert queue.r.hget(queue.job_key(job_id_for("oms/t|e2")), "event") == b'{"n": 2}'
        assert queue.r.xlen(queue.stream) == 4
        [alone] = _together(redis_url, queue, [_intake(4), _intake(5)])
        assert calls == [5, 2] and [r.duplicate for r in alone] == [True, False]
    finally:
        _drop(queue)


def test_intake_calls_made_together_are_split_by_size_but_each_stays_whole(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Coalesced, "MAX_EVENTS", 3)
    queue, calls = _counted_queue(redis_url)
    try:
        sizes = [2, 1, 2, 5, 1]
        made, n = [], 0
        for size in sizes:
            made.append([_intake(n + i) for i in range(size)])
            n += size
        results = _together(redis_url, queue, *made)
        assert calls == [3, 2, 5, 1]  # 2+1, then 2 (2+5 is over 3), 5 alone (whole), then 1
        assert [len(r) for r in results] == sizes
        assert [r.job_id for call in results for r in call] == [job_id_for(f"oms/t|e{i}") for i in range(n)]
        assert queue.r.xlen(queue.stream) == n
    finally:
        _drop(queue)


def test_a_failed_script_call_fails_every_call_made_with_it(redis_url: str) -> None:
    queue, calls = _counted_queue(redis_url)
    try:
        queue.r.set(queue.stream, "not a stream")  # XADD answers WRONGTYPE inside the script
        results = _together(redis_url, queue, [_intake(1)], [_intake(2), _intake(3)])
        assert calls == [3]
        assert all(isinstance(r, redis.ResponseError) and "WRONGTYPE" in str(r) for r in results)
        queue.r.delete(queue.stream)
        [after] = _together(redis_url, queue, [_intake(4)])  # the next call is unaffected
        assert after[0].status == "queued" and queue.r.xlen(queue.stream) == 1
    finally:
        _drop(queue)


def test_the_app_keeps_what_startup_made_out_of_the_collector_while_it_serves(
    tmp_path: Any, redis_url: str, example: dict[str, Any]
) -> None:
    stack = make_stack(tmp_path, redis_url, example)
    try:
        assert gc.get_freeze_count() > 0  # frozen in the lifespan: full collections skip it
        stack.api.stop()
        assert gc.get_freeze_count() == 0  # given back: nothing stays uncollectable
    finally:
        close_stack(stack)


def test_an_intake_route_refuses_a_dependency_it_would_never_run() -> None:
    async def guard() -> None:
        return None

    router = APIRouter(route_class=IntakeRoute)
    with pytest.raises(TypeError, match="runs no dependencies"):
        router.add_api_route("/v1/x", post_events, methods=["POST"], dependencies=[Depends(guard)])
    assert create_app().router.dependencies == []  # nor does the app give every route one
