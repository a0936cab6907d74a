"""Event intake through the real HTTP API and the machine's Redis."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from api.signing import sign
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
