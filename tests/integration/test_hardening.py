"""Issue 15, items 4-6: what a hostile tester found on loopback, reproduced, and the fixes held.

4. Intake that bad input cannot hurt: non-finite and non-number quantities, deep JSON, huge bodies,
   wrong content types, look-alike signed sources, unsigned events under CROSSDOCK_REQUIRE_SIGNATURES,
   keys bound to sources, and read endpoints that survive a malformed record from a connector.
5. Nothing accepted is lost: the embedded Redis is append-only; a restart keeps every accepted
   event; during the outage the API answers 503 with Retry-After, and after it reconnects.
6. Operators see the truth: one-line settings errors, /readyz with connectors and queue age,
   dead-letter replay, local docs assets, an honest OpenAPI, pager metrics, per-key rate limits.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api.guards import loads, too_deep
from api.signing import sign
from runtime.bootstrap import StartupError, bootstrap, check_redis_persistence, stop_embedded
from runtime.processes import OWNER, start_embedded_redis
from runtime.servers import free_port
from runtime.settings import Settings, hash_key
from tests.integration.conftest import REPO, Stack, close_stack, make_stack, order_event

ASGIApp = Callable[[dict[str, Any], Any, Any], Any]
JSON = {"Content-Type": "application/json"}


def stream_len(stack: Stack) -> int:
    return int(stack.container.redis.xlen(stack.container.queue.stream))


def post_raw(stack: Stack, body: bytes | str, role: str = "gateway", **headers: str) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return stack.client.post("/v1/events", content=content, headers={**stack.headers(role), **JSON, **headers})


def with_qty(order_id: str, qty_text: str) -> str:
    """An order event whose first line's qty is ``qty_text`` verbatim (``Infinity``, ``"3"``, ``true``)."""
    return json.dumps(order_event(order_id, [("SKU-100", 2)])).replace('"qty": 2', f'"qty": {qty_text}')


def nested(depth: int) -> str:
    """A valid order event whose note is ``depth`` arrays deep (extra keys are otherwise ignored)."""
    event = json.dumps(order_event("SO-DEEP", [("SKU-100", 1)]))
    return event[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"


# --- 4. intake that bad input cannot hurt ------------------------------------------------------

BAD_QUANTITIES = ["Infinity", "-Infinity", "NaN", "1e999", "-1e999", '"3"', "true", "false", "null", "[2]", '{"v": 2}']


@pytest.mark.parametrize("qty", BAD_QUANTITIES)
def test_a_quantity_that_is_not_a_finite_number_is_422_and_nothing_is_queued(stack: Stack, qty: str) -> None:
    resp = post_raw(stack, with_qty("SO-1", qty))
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert any(e["loc"] in ("body", "data.lines.0.qty") for e in detail), detail
    assert stream_len(stack) == 0


def test_infinity_no_longer_dead_letters_and_later_ticks_still_run(stack: Stack) -> None:
    """Before: 202, then the job dead-lettered and every later tick too. Now: 422 at the door."""
    assert post_raw(stack, with_qty("SO-INF", "Infinity")).status_code == 422
    tick = {
        "specversion": "1.0",
        "id": "tick-1",
        "source": "crossdock/clock",
        "type": "crossdock.tick",
        "data": {"now": "2026-03-21T09:00:00Z"},
    }
    assert stack.post_events(tick).status_code == 202
    stack.drain()
    assert stack.container.queue.dead_letters() == []


def test_numbers_in_every_event_type_must_be_finite_and_real_numbers(stack: Stack) -> None:
    base = {"specversion": "1.0", "source": "wms/test", "time": "2026-03-21T08:00:00Z"}
    bad = [
        ("wms.capacity.changed", {"node": "DC-EAST", "zone": "PICK-ZONE-A", "pick_capacity_per_hour": "9"}),
        ("wms.inventory.adjusted", {"node": "DC-EAST", "sku": "SKU-100", "qty_delta": True}),
        ("erp.inventory.posted", {"node": "DC-EAST", "sku": "SKU-100", "qty_delta": "-2"}),
        (
            "wms.task.exception",
            {"task_id": "T1", "node": "DC-EAST", "sku": "SKU-100", "reason": "damaged", "found_qty": "1"},
        ),
    ]
    for i, (type_, data) in enumerate(bad):
        resp = stack.post_events({**base, "id": f"e{i}", "type": type_, "data": data})
        assert resp.status_code == 422, (type_, resp.text)
        assert resp.json()["detail"][0]["loc"].startswith("data.")
    assert stream_len(stack) == 0


def test_json_nested_10000_deep_is_422_not_500_on_every_route(stack: Stack) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    for path, role in (("/v1/events", "gateway"), ("/v1/chat", "cs_rep"), ("/v1/decisions/x/reject", "planner")):
        resp = stack.client.post(path, content=deep.encode(), headers={**stack.headers(role), **JSON})
        assert resp.status_code == 422, (path, resp.status_code, resp.text[:200])
        assert "nested deeper" in resp.json()["detail"][0]["msg"]
    # Within the limit (32 by default) an event is fine; one level past it is not.
    assert post_raw(stack, nested(30)).status_code == 202
    assert post_raw(stack, nested(40)).status_code == 422
    assert stream_len(stack) == 1


def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(stack: Stack) -> None:
    note = "x" * (10 * 1024 * 1024)
    big = order_event("SO-BIG", [("SKU-100", 1)], note=note)
    resp = stack.post_events(big)  # the 10 MB note the tester queued
    assert resp.status_code == 413 and "CROSSDOCK_MAX_BODY_BYTES" in resp.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer, counted as it arrives
        body = json.dumps(big).encode()
        for i in range(0, len(body), 256 * 1024):
            yield body[i : i + 256 * 1024]

    streamed = stack.client.post("/v1/events", content=chunks(), headers={**stack.headers("gateway"), **JSON})
    assert streamed.status_code == 413
    assert stream_len(stack) == 0
    # Just under 1 MiB is accepted.
    assert stack.post_events(order_event("SO-OK", [("SKU-100", 1)], note="y" * 1_000_000)).status_code == 202


def test_the_content_type_is_checked(stack: Stack) -> None:
    body = json.dumps(order_event("SO-1", [("SKU-100", 1)]))
    for wrong in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/json"):
        resp = post_raw(stack, body, **{"Content-Type": wrong})
        assert resp.status_code == 415, wrong
        assert "application/json" in resp.json()["detail"]
    assert stream_len(stack) == 0
    assert post_raw(stack, body, **{"Content-Type": "application/cloudevents+json; charset=utf-8"}).status_code == 202
    batch = json.dumps([order_event("SO-2", [("SKU-100", 1)])])
    assert post_raw(stack, batch, **{"Content-Type": "application/cloudevents-batch+json"}).status_code == 202
    chat = stack.client.post(
        "/v1/chat", content=b'{"message": "hi"}', headers={**stack.headers("cs_rep"), "Content-Type": "text/plain"}
    )
    assert chat.status_code == 415
    assert stream_len(stack) == 2


def _signed_stack(tmp_path: Path, redis_url: str, example: dict[str, Any], **overrides: Any) -> Stack:
    return make_stack(tmp_path, redis_url, example, source_secrets="oms/signed=s3cret", **overrides)


@pytest.mark.parametrize("variant", ["oms/signed ", " oms/signed", "OMS/signed", "oms/Signed", "oms/signed/"])
def test_a_look_alike_of_a_signed_source_is_refused(
    tmp_path: Path, redis_url: str, example: dict[str, Any], variant: str
) -> None:
    stack = _signed_stack(tmp_path, redis_url, example)
    try:
        event = {**order_event("SO-1", [("SKU-100", 1)]), "source": variant}
        resp = stack.post_events(event)  # unsigned, as the tester sent it
        assert resp.status_code in (401, 422), resp.text
        assert stream_len(stack) == 0
        signed = {**event, "source": "oms/signed"}
        body = json.dumps(signed).encode()
        ok = post_raw(stack, body, **{"X-Crossdock-Signature": sign(body, "s3cret")})
        assert ok.status_code == 202
    finally:
        close_stack(stack)


def test_require_signatures_refuses_every_unsigned_event(
    tmp_path: Path, redis_url: str, example: dict[str, Any]
) -> None:
    stack = _signed_stack(tmp_path, redis_url, example, require_signatures=True)
    try:
        unsigned = {**order_event("SO-1", [("SKU-100", 1)]), "source": "oms/elsewhere"}
        resp = stack.post_events(unsigned)
        assert resp.status_code == 401 and "CROSSDOCK_REQUIRE_SIGNATURES" in resp.json()["detail"]
        body = json.dumps({**unsigned, "source": "oms/signed"}).encode()
        assert post_raw(stack, body).status_code == 401  # a signed source without its signature
        assert stream_len(stack) == 0
        assert post_raw(stack, body, **{"X-Crossdock-Signature": sign(body, "s3cret")}).status_code == 202
    finally:
        close_stack(stack)


def reconfigure(stack: Stack, **changes: Any) -> None:
    """The stack's settings with ``changes``, validated as at start-up."""
    stack.container.settings = Settings(**{**stack.container.settings.model_dump(), **changes})


def test_a_gateway_key_bound_to_sources_may_post_only_for_them(
    tmp_path: Path, redis_url: str, example: dict[str, Any]
) -> None:
    stack = make_stack(tmp_path, redis_url, example)
    try:
        key_id = hash_key(stack.keys["gateway"])[:16]  # or the key holder's name
        reconfigure(stack, gateway_sources=f"{key_id}=oms/a|oms/b")
        mine = {**order_event("SO-1", [("SKU-100", 1)]), "source": "oms/a"}
        theirs = {**order_event("SO-2", [("SKU-100", 1)]), "source": "oms/test"}
        refused = stack.post_events(theirs)
        assert refused.status_code == 403 and "oms/test" in refused.json()["detail"]
        assert stack.post_events([mine, theirs]).status_code == 403  # a batch is refused whole
        assert stream_len(stack) == 0
        assert stack.post_events(mine).status_code == 202
        assert stack.post_events(theirs, role="admin").status_code == 202  # another key is not bound
    finally:
        close_stack(stack)


def test_gateway_sources_setting_is_checked() -> None:
    s = Settings(gateway_sources="erp-gw=erp/main, oms-gw=oms/a|oms/b")
    assert s.source_bindings == {"erp-gw": frozenset({"erp/main"}), "oms-gw": frozenset({"oms/a", "oms/b"})}
    with pytest.raises(ValueError, match="CROSSDOCK_GATEWAY_SOURCES"):
        Settings(gateway_sources="oms-gw")
    with pytest.raises(ValueError, match="CROSSDOCK_GATEWAY_SOURCES"):
        Settings(gateway_sources="oms-gw=oms/a||oms/b")


def tamper_orders(bad_ids: set[str]) -> Callable[[ASGIApp], ASGIApp]:
    """The OMS hands back ``bad_ids`` with a first-line qty of ``Infinity`` (a careless connector)."""

    def wrap(app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http" or not scope["path"].startswith("/oms/api/v1/orders"):
                await app(scope, receive, send)
                return
            start: dict[str, Any] = {}
            parts: list[bytes] = []

            async def capture(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    start.update(message)
                else:
                    parts.append(message.get("body", b""))

            await app(scope, receive, capture)
            payload = json.loads(b"".join(parts) or b"null")
            for view in payload if isinstance(payload, list) else [payload]:
                if isinstance(view, dict) and view.get("order", {}).get("id") in bad_ids:
                    view["order"]["lines"][0]["qty"] = math.inf
            body = json.dumps(payload).encode()  # Infinity: not JSON, but what a careless system sends
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        return wrapped

    return wrap


def test_a_malformed_record_from_the_oms_fails_only_itself(
    tmp_path: Path, redis_url: str, example: dict[str, Any]
) -> None:
    stack = make_stack(tmp_path, redis_url, example, twin_app_wrapper=tamper_orders({"SO-BAD"}))
    try:
        for oid in ("SO-BAD", "SO-OK"):
            stack.state.apply_event(order_event(oid, [("SKU-100", 1)]))
        bad = stack.client.get("/v1/orders/SO-BAD", headers=stack.headers("cs_rep"))
        assert bad.status_code == 502, bad.text
        detail = bad.json()["detail"]
        assert detail["error"] == "malformed_record" and "OrderView" in detail["message"]
        assert "order.lines.0.qty" in {e["loc"] for e in detail["errors"]}
        assert stack.client.get("/v1/orders/SO-OK", headers=stack.headers("cs_rep")).status_code == 200
        risk = stack.client.get("/v1/orders/at-risk", headers=stack.headers("planner"))
        assert risk.status_code == 200, risk.text
        flagged = [r for r in risk.json() if r["status"] == "malformed"]
        assert [r["order_id"] for r in flagged] == ["SO-BAD"]
        assert flagged[0]["reasons"][0]["kind"] == "malformed_record"
        assert "order.lines.0.qty" in flagged[0]["reasons"][0]["detail"]
    finally:
        close_stack(stack)


def bad_requests(stack: Stack) -> list[tuple[str, str, dict[str, str], bytes | None]]:
    """(method, path, headers, body) a hostile client tries; each must get a 4xx."""
    gw, cs, pl, ad = (stack.headers(r) for r in ("gateway", "cs_rep", "planner", "admin"))
    good = order_event("SO-F", [("SKU-100", 1)])

    def ev(**changes: Any) -> bytes:
        return json.dumps({**good, **changes}).encode()

    def data(**changes: Any) -> bytes:
        return json.dumps({**good, "data": {**good["data"], **changes}}).encode()

    events: list[bytes] = [
        b"",
        b"null",
        b"0",
        b'"x"',
        b"[]",
        b"[1]",
        b"{}",
        b"{",
        b"\xff\xfe",
        b'{"a": NaN}',
        b"[" * 5000,
        *(with_qty("SO-F", q).encode() for q in BAD_QUANTITIES),
        ev(specversion="0.3"),
        ev(id=""),
        ev(id="x" * 300),
        ev(source=""),
        ev(source=5),
        ev(source=["oms"]),
        ev(source="oms/test\n"),
        ev(type="crossdock.crew.triage"),
        ev(type=None),
        ev(time="yesterday"),
        ev(datacontenttype="text/xml"),
        ev(data=[]),
        ev(data="x"),
        ev(data=None),
        data(lines=[]),
        data(lines=None),
        data(lines=[{"line": "1", "sku": "SKU-100", "qty": 1}]),
        data(lines=[{"line": 1, "sku": "SKU-100", "qty": 1}, {"line": 1, "sku": "SKU-100", "qty": 1}]),
        data(lines=[{"line": 1, "sku": "", "qty": 1}]),
        data(lines=[{"line": 1, "sku": "SKU-100", "qty": -1}]),
        data(priority="urgent"),
        data(ship_by="soon"),
        data(id=""),
        data(customer=None),
        data(lines=[{"line": 1, "sku": "SKU-100", "qty": 10**400}]),
        with_qty("SO-F", "9" * 5000).encode(),
        json.dumps([good] * 1001).encode(),
    ]
    Request = tuple[str, str, dict[str, str], bytes | None]
    out: list[Request] = [("POST", "/v1/events", {**gw, **JSON}, b) for b in events]
    out += [
        ("POST", "/v1/events", {**gw, "Content-Type": "text/plain"}, ev()),
        ("POST", "/v1/events", {"Content-Type": "application/json"}, ev()),
        ("POST", "/v1/events", {**cs, **JSON}, ev()),
        ("POST", "/v1/events", {**gw, **JSON, "ce-specversion": "1.0", "ce-type": "oms.order.created"}, b"{}"),
        ("POST", "/v1/chat", {**cs, **JSON}, b'{"message": ""}'),
        ("POST", "/v1/chat", {**cs, **JSON}, b'{"message": 5}'),
        ("POST", "/v1/chat", {**cs, **JSON}, b'{"message": "hi", "conversation_id": "../../etc"}'),
        ("POST", "/v1/chat", {**cs, **JSON}, json.dumps({"message": "x" * 5000}).encode()),
        ("PUT", "/v1/policy", {**ad, **JSON}, b'{"review_cost_above": NaN}'),
        ("PUT", "/v1/policy", {**ad, **JSON}, b'{"review_cost_above": 1e999}'),
        ("PUT", "/v1/policy", {**ad, **JSON}, b'{"modes": {"order_release": "yolo"}}'),
        ("POST", "/v1/decisions/nope/approve", {**pl, **JSON}, b'{"changes": [{"action": 0, "qty": Infinity}]}'),
        ("POST", "/v1/decisions/nope/approve", {**pl, **JSON}, b'{"changes": [{"action": -1}]}'),
        ("POST", "/v1/decisions/nope/reject", {**pl, **JSON}, b'{"reason": " "}'),
        ("GET", "/v1/jobs/nope", gw, None),
        ("GET", "/v1/orders/NOPE", cs, None),
        ("GET", "/v1/decisions?limit=0", pl, None),
        ("GET", "/v1/audit?after_seq=-1", pl, None),
        ("GET", "/v1/orders/at-risk?now=never", cs, None),
        ("POST", "/v1/dead-letters/nope/replay", ad, None),
        ("POST", "/v1/crews/triage", {**pl, **JSON}, b'{"exceptions": []}'),
    ]
    return out


def test_every_bad_input_gets_a_4xx_never_a_5xx(stack: Stack) -> None:
    tried = bad_requests(stack)
    statuses = {}
    for method, path, headers, body in tried:
        resp = stack.client.request(method, path, headers=headers, content=body)
        statuses[(method, path, (body or b"")[:60])] = resp.status_code
    server_errors = {k: v for k, v in statuses.items() if v >= 500}
    assert not server_errors, server_errors
    assert all(400 <= v < 500 for v in statuses.values()), {k: v for k, v in statuses.items() if v < 400}
    assert stream_len(stack) == 0
    print(f"\nbad inputs tried: {len(tried)}, 5xx: {len(server_errors)}")


def test_strict_json_helpers() -> None:
    assert loads(b'{"a": [1, 2.5, -3e2]}', 32) == {"a": [1, 2.5, -300.0]}
    for text in (b"Infinity", b"[NaN]", b'{"a": -Infinity}', b"1e400"):
        with pytest.raises(ValueError, match="finite"):
            loads(text, 32)
    assert too_deep([[[]]], 2) and not too_deep([[[]]], 3) and not too_deep(5, 0)


# --- 5. nothing accepted is lost ---------------------------------------------------------------


def _embedded(folder: Path, port: int) -> Any:
    return start_embedded_redis(folder / "redis.db", port=port)


def _stop(server: Any) -> None:
    pid = int(server.pid or 0)
    stop_embedded(server)
    OWNER.release(pid)


def test_the_embedded_redis_is_append_only_in_the_data_directory(tmp_path: Path) -> None:
    server = _embedded(tmp_path / "redis", free_port())
    try:
        assert server.config_get("appendonly")["appendonly"] == "yes"
        assert server.config_get("appendfsync")["appendfsync"] == "everysec"
        assert Path(server.config_get("dir")["dir"]) == (tmp_path / "redis").resolve()
    finally:
        _stop(server)


def test_accepted_events_survive_a_redis_restart_and_the_outage_answers_503(
    tmp_path: Path, example: dict[str, Any]
) -> None:
    folder, port = tmp_path / "redis", free_port()
    server = _embedded(folder, port)
    stack = make_stack(tmp_path, f"redis://127.0.0.1:{port}/0", example)
    try:
        accepted = [stack.post_events(order_event(f"SO-{i}", [("SKU-100", 1)])) for i in range(20)]
        assert {r.status_code for r in accepted} == {202}
        jobs = [r.json()["job_id"] for r in accepted]
        _stop(server)  # the server goes away (SHUTDOWN NOSAVE: the append-only file is flushed)

        during = stack.post_events(order_event("SO-X", [("SKU-100", 1)]))
        assert during.status_code == 503, during.text
        assert int(during.headers["Retry-After"]) > 0 and "Redis" in during.json()["detail"]
        job = stack.client.get(f"/v1/jobs/{jobs[0]}", headers=stack.headers("gateway"))
        assert job.status_code == 503 and "Retry-After" in job.headers
        assert stack.client.get("/readyz").status_code == 503

        server = _embedded(folder, port)  # started again on the same data directory
        after = stack.post_events(order_event("SO-X", [("SKU-100", 1)]))  # reconnects on its own
        assert after.status_code == 202, after.text
        for job_id in jobs:
            got = stack.client.get(f"/v1/jobs/{job_id}", headers=stack.headers("gateway"))
            assert got.status_code == 200 and got.json()["status"] == "queued"
        assert stream_len(stack) == 21  # 0 of the 20 accepted events lost
        assert stack.drain() == 21
        assert all(stack.container.queue.job(j)["status"] == "done" for j in jobs)  # type: ignore[index]
    finally:
        close_stack(stack)
        _stop(server)


def test_crossdock_restarted_on_its_data_directory_finds_its_queue(tmp_path: Path) -> None:
    """The shipped configuration: no REDIS_URL, the embedded server in CROSSDOCK_DATA_DIR."""
    settings = Settings(env="test", data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    first = bootstrap(settings)
    try:
        queued = first.queue.enqueue_many([(f"oms/t|e{i}", "oms.order.created", "{}", "0") for i in range(50)])
    finally:
        first.close()
    second = bootstrap(settings)
    try:
        assert int(second.redis.xlen(second.queue.stream)) == 50
        assert all(second.queue.job(q.job_id) is not None for q in queued)
    finally:
        second.close()


class FakeRedis:
    def __init__(self, config: dict[str, str] | None, ping: Exception | None = None) -> None:
        self.config, self.ping_error = config, ping
        self.connection_pool = type("Pool", (), {"connection_kwargs": {"host": "10.0.0.9", "port": 6379, "db": 0}})()

    def ping(self) -> bool:
        if self.ping_error:
            raise self.ping_error
        return True

    def config_get(self, name: str) -> dict[str, str]:
        if self.config is None:
            raise redis.ResponseError("unknown command 'CONFIG'")
        return {name: self.config.get(name, "")}


def test_redis_persistence_is_checked_at_start_up() -> None:
    prod, dev = Settings.model_construct(env="production"), Settings.model_construct(env="development")
    safe = {"appendonly": "yes", "appendfsync": "everysec", "save": ""}
    assert check_redis_persistence(FakeRedis(safe), prod) == "ok"  # type: ignore[arg-type]
    for volatile in (
        {"appendonly": "no", "save": ""},
        {"appendonly": "no", "save": "3600 1"},
        {"appendonly": "yes", "appendfsync": "no"},
    ):
        with pytest.raises(StartupError, match="REDIS_URL: .* could lose accepted events"):
            check_redis_persistence(FakeRedis(volatile), prod)  # type: ignore[arg-type]
        assert check_redis_persistence(FakeRedis(volatile), dev) == "volatile"  # type: ignore[arg-type]
    assert check_redis_persistence(FakeRedis(None), prod) == "unknown"  # type: ignore[arg-type]
    with pytest.raises(StartupError, match="REDIS_URL: cannot reach redis at 10.0.0.9:6379"):
        check_redis_persistence(FakeRedis(safe, redis.ConnectionError("refused")), dev)  # type: ignore[arg-type]


def test_a_real_server_without_append_only_is_refused_in_production(tmp_path: Path) -> None:
    port = free_port()
    server = _embedded(tmp_path / "redis", port)
    try:
        server.config_set("appendonly", "no")
        client = redis.Redis(host="127.0.0.1", port=port)
        with pytest.raises(StartupError, match="appendonly is no"):
            check_redis_persistence(client, Settings.model_construct(env="production"))
        client.close()
    finally:
        _stop(server)


# --- 6. operators see the truth ----------------------------------------------------------------


def _serve(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "crossdock.cli", "serve"],
        env={**os.environ, "CROSSDOCK_API_KEYS": "k" * 20 + ":admin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    return done, time.monotonic() - started


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CROSSDOCK_PORT": "eighty"}, "CROSSDOCK_PORT"),
        ({"CROSSDOCK_PORT": "99999"}, "CROSSDOCK_PORT"),
        ({"REDIS_URL": "redis://127.0.0.1:1/0"}, "REDIS_URL"),
        ({"REDIS_URL": "http://nope"}, "REDIS_URL"),
        ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://u@127.0.0.1/x"}, "DATABASE_URL"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    tmp_path: Path, redis_url: str, env: dict[str, str], variable: str
) -> None:
    done, elapsed = _serve({"CROSSDOCK_DATA_DIR": str(tmp_path), "REDIS_URL": redis_url, **env})
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {variable}"), done.stderr
    assert "Traceback" not in done.stderr and "postgres@" not in lines[0]
    assert elapsed < 15, elapsed  # about 1 s on an idle machine; generous for a loaded CI box


def test_readyz_reports_each_connector_and_the_queue_age(stack: Stack) -> None:
    first = stack.client.get("/readyz").json()
    assert {name: c["reachable"] for name, c in first["connectors"].items()} == dict.fromkeys(
        ("wms", "erp", "oms", "notify"), True
    )
    empty = {"depth": 0, "retrying": 0, "oldest_age_s": None}
    assert first["queue"] == {**empty, "dead": 0, "lanes": {"decisions": empty, "background": empty}}
    stack.post_events(order_event("SO-1", [("SKU-100", 1)]))
    time.sleep(0.05)
    queue = stack.client.get("/readyz").json()["queue"]
    assert queue["depth"] == 1 and queue["oldest_age_s"] >= 0.05
    assert queue["lanes"]["decisions"]["depth"] == 1 and queue["lanes"]["background"] == empty
    stack.twin.stop()  # the systems go away: still ready (intake works), and it says so
    started = time.monotonic()
    down = stack.client.get("/readyz")
    assert down.status_code == 200 and time.monotonic() - started < 5
    assert all(c["reachable"] is False and "error" in c for c in down.json()["connectors"].values())


def test_a_dead_letter_can_be_replayed_by_an_admin(stack: Stack) -> None:
    queue = stack.container.queue
    job_id = stack.publish(order_event("SO-1", [("SKU-100", 1)])).json()["job_id"]
    [delivery] = queue.read("t", 1, 100)
    queue.dead_letter(delivery, "ConnectorError: the OMS was down")
    assert [d["job"] for d in queue.dead_letters()] == [job_id]
    path = f"/v1/dead-letters/{job_id}/replay"
    assert stack.client.post(path, headers=stack.headers("planner")).status_code == 403
    resp = stack.client.post(path, headers=stack.headers("admin"))
    assert resp.status_code == 202 and resp.json()["replayed_error"] == "ConnectorError: the OMS was down"
    job = queue.job(job_id)
    assert job is not None and job["status"] == "queued" and job["attempts"] == 0
    assert queue.dead_letters() == []
    assert stack.client.post(path, headers=stack.headers("admin")).status_code == 409  # not dead any more
    assert stack.client.post("/v1/dead-letters/job-nope/replay", headers=stack.headers("admin")).status_code == 404
    assert stack.drain() == 1 and queue.job(job_id)["status"] == "done"  # type: ignore[index]
    audit = stack.client.get("/v1/audit", params={"kind": "job.replayed"}, headers=stack.headers("planner")).json()
    assert [e["subject"] for e in audit] == [job_id]


def test_the_docs_pages_load_their_assets_from_this_server(stack: Stack) -> None:
    for page, assets in (
        ("/docs", ["/static/swagger-ui-bundle.js", "/static/swagger-ui.css"]),
        ("/redoc", ["/static/redoc.standalone.js"]),
    ):
        html = stack.client.get(page)
        assert html.status_code == 200
        assert "http://" not in html.text and "https://" not in html.text, page  # no CDN, no web fonts
        for asset in assets:
            assert asset in html.text
            got = stack.client.get(asset)
            assert got.status_code == 200 and len(got.content) > 100_000
    static = REPO / "api" / "static"
    for licence in ("swagger-ui-dist.LICENSE", "swagger-ui-dist.NOTICE", "redoc.LICENSE"):
        assert (static / licence).stat().st_size > 0


def test_the_openapi_declares_security_errors_and_the_intake_body(stack: Stack) -> None:
    doc = stack.client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {**schemes["HTTPBearer"], "type": "http", "scheme": "bearer"}
    assert schemes["APIKeyHeader"]["in"] == "header" and schemes["APIKeyHeader"]["name"] == "X-API-Key"
    intake = doc["paths"]["/v1/events"]["post"]
    assert set(intake["requestBody"]["content"]) == {
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
    }
    assert {"401", "403", "413", "415", "422", "429", "503"} <= set(intake["responses"])
    assert "Retry-After" in intake["responses"]["429"]["headers"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path in ("/healthz", "/readyz"):
                assert "security" not in op
                continue
            assert op["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}], (method, path)
            assert {"401", "403", "503"} <= set(op["responses"]), (method, path)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert doc["paths"]["/v1/dead-letters/{job_id}/replay"]["post"]["responses"].keys() >= {"202", "404", "409"}


def test_metrics_a_pager_can_use(stack: Stack) -> None:
    stack.post_events(order_event("SO-1", [("SKU-100", 1)]))
    stack.client.get("/v1/jobs/job-nope", headers=stack.headers("gateway"))
    text = stack.client.get("/metrics", headers=stack.headers("admin")).text
    for needle in (
        'crossdock_http_requests_total{method="POST",route="/v1/events",status="202"}',
        'crossdock_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"}',
        'crossdock_http_request_duration_seconds_count{method="POST",route="/v1/events"}',
        "crossdock_queue_depth 1.0",
        "crossdock_queue_oldest_age_seconds",
        "crossdock_dead_letters 0.0",
        "crossdock_pending_reviews",
        "crossdock_pending_review_oldest_age_seconds",
    ):
        assert needle in text, needle
    stack.drain()
    text = stack.client.get("/metrics", headers=stack.headers("admin")).text
    assert "crossdock_queue_depth 0.0" in text and "crossdock_decisions_by_status{status=" in text


def test_per_key_rate_limits_answer_429_with_retry_after(
    tmp_path: Path, redis_url: str, example: dict[str, Any]
) -> None:
    stack = make_stack(tmp_path, redis_url, example, rate_limit_events_per_s=5, rate_limit_chat_per_min=2)
    try:
        time.sleep(1.02 - time.time() % 1)  # start at the top of a second: both posts fall in one window
        first = stack.post_events([order_event(f"SO-{i}", [("SKU-100", 1)]) for i in range(5)])
        over = stack.post_events(order_event("SO-5", [("SKU-100", 1)]))
        assert first.status_code == 202 and over.status_code == 429, (first.text, over.text)
        assert over.headers["Retry-After"] == "1" and "CROSSDOCK_RATE_LIMIT_EVENTS_PER_S" in over.text
        assert stack.post_events(order_event("SO-A", [("SKU-100", 1)]), role="admin").status_code == 202  # other key
        big = stack.post_events([order_event(f"SO-B{i}", [("SKU-100", 1)]) for i in range(6)], role="admin")
        assert big.status_code == 429 and "larger than" in big.json()["detail"]
        if time.time() % 60 > 50:  # keep the three chats in one minute's window
            time.sleep(61 - time.time() % 60)
        chats = [
            stack.client.post("/v1/chat", json={"message": "hello"}, headers=stack.headers("cs_rep")) for _ in range(3)
        ]
        assert [c.status_code for c in chats] == [200, 200, 429]
        assert 1 <= int(chats[2].headers["Retry-After"]) <= 60
    finally:
        close_stack(stack)


def test_rate_limits_off_and_the_bench_turns_intake_limits_off(stack: Stack) -> None:
    reconfigure(stack, rate_limit_events_per_s=0)
    statuses = {stack.post_events(order_event(f"SO-{i}", [("SKU-100", 1)])).status_code for i in range(30)}
    assert statuses == {202}
    assert '"CROSSDOCK_RATE_LIMIT_EVENTS_PER_S": "0"' in (REPO / "bench" / "intake.py").read_text()
