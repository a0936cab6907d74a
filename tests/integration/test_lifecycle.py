"""The decision lifecycle over real HTTP, Redis, SQLite and the twin: one live proposal per subject,
approvals that re-check and finish or undo, rejections that lead somewhere, approve with changes,
resume of interrupted executions, and the built-in clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from domain.decisions import Action, Proposal
from runtime.clock import Clock, Lease
from tests.integration.conftest import Stack, close_stack, make_stack, order_event
from tests.integration.test_workflow import job_of

PROPOSE = {"order_release": "propose", "allocation": "propose"}


def tick(stack: Stack, n: int, now: str = "2026-03-21T09:00:00Z") -> httpx.Response:
    return stack.publish(
        {
            "specversion": "1.0",
            "id": f"evt-tick-{n}",
            "source": "crossdock/test",
            "type": "crossdock.tick",
            "time": now,
            "data": {"now": now},
        }
    )


def decide(stack: Stack, event: dict[str, Any]) -> list[dict[str, Any]]:
    resp = stack.publish(event)
    stack.drain()
    decisions: list[dict[str, Any]] = job_of(stack, resp)["decisions"]
    return decisions


def live(stack: Stack, subject: str) -> list[dict[str, Any]]:
    got = stack.client.get(
        "/v1/decisions", params={"subject": subject, "status": "pending_review"}, headers=stack.headers("planner")
    )
    found: list[dict[str, Any]] = got.json()
    return found


class Faults:
    """A switch in front of the twin: while ``down`` matches a request path, the twin answers 503
    (what a load balancer says when the system behind it is gone)."""

    def __init__(self) -> None:
        self.down: Callable[[str, str], bool] = lambda method, path: False

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and self.down(scope["method"], scope["path"]):
                await send({"type": "http.response.start", "status": 503, "headers": []})
                await send({"type": "http.response.body", "body": b"down"})
                return
            await app(scope, receive, send)

        return guarded


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def flaky(tmp_path: Path, redis_url: str, example: dict[str, Any], faults: Faults) -> Iterator[Stack]:
    s = make_stack(tmp_path, redis_url, example, twin_app_wrapper=faults.wrap, resume_after_s=0.01)
    yield s
    close_stack(s)


# ---------------------------------------------------------------------------- one live proposal


def test_each_tick_reproposing_an_order_keeps_one_live_proposal_and_records_no_duplicates(stack: Stack) -> None:
    stack.set_policy(modes=PROPOSE)
    [first] = decide(stack, order_event("SO-20", [("SKU-100", 3)]))
    assert first["status"] == "pending_review" and first["facts"]["orders"]["SO-20"]["status"] == "open"
    # The same order on the same facts, proposed again: not recorded a second time.
    again = decide(stack, order_event("SO-20", [("SKU-100", 3)], event_id="evt-SO-20-again"))
    assert again == []  # the job recorded nothing new
    assert [d.id for d in stack.container.store.list_decisions(subject="SO-20")] == [first["id"]]
    # Stock the plan consumes moves away: a newer proposal supersedes the live one.
    stack.state.apply_event(
        {
            "specversion": "1.0",
            "id": "adj-1",
            "source": "wms/test",
            "type": "wms.inventory.adjusted",
            "time": "2026-03-21T08:20:00Z",
            "data": {"node": "DC-EAST", "location": "A-01-01", "sku": "SKU-100", "qty_delta": -24, "reason": "damage"},
        }
    )
    [newer] = decide(stack, order_event("SO-20", [("SKU-100", 3)], event_id="evt-SO-20-third"))
    assert newer["id"] != first["id"] and newer["supersedes"] == first["id"]
    old = stack.client.get(f"/v1/decisions/{first['id']}", headers=stack.headers("planner")).json()
    assert old["status"] == "superseded" and old["superseded_by"] == newer["id"]
    assert [d["id"] for d in live(stack, "SO-20")] == [newer["id"]]
    [entry] = stack.container.store.audit(subject="SO-20", kind="decision.superseded")
    assert entry.payload == {"decision": first["id"], "superseded_by": newer["id"]}
    # Approving the superseded one does nothing.
    assert (
        stack.client.post(f"/v1/decisions/{first['id']}/approve", headers=stack.headers("planner")).status_code == 409
    )


def test_two_proposals_for_the_same_units_approved_at_once_exactly_one_acts(stack: Stack) -> None:
    stack.set_policy(modes=PROPOSE)
    # SKU-200: 7 pickable at DC-EAST, two orders of 7 each, both proposed from the same units.
    [a] = decide(stack, order_event("SO-21", [("SKU-200", 7)]))
    [b] = decide(stack, order_event("SO-22", [("SKU-200", 7)]))
    assert a["status"] == b["status"] == "pending_review"
    results: dict[str, httpx.Response] = {}

    def approve(d: dict[str, Any]) -> None:
        with httpx.Client(base_url=stack.api.url, timeout=30.0, trust_env=False) as client:
            results[d["id"]] = client.post(f"/v1/decisions/{d['id']}/approve", headers=stack.headers("planner"))

    threads = [threading.Thread(target=approve, args=(d,)) for d in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(r.status_code for r in results.values())
    assert codes == [200, 409], {k: r.text for k, r in results.items()}
    loser = next(r for r in results.values() if r.status_code == 409).json()["detail"]
    assert loser["error"] == "stale"
    allocated = sum(al.qty for o in ("SO-21", "SO-22") for ln in stack.state.order(o).lines for al in ln.allocations)
    assert allocated == 7 and stack.state.export_state()["oversells"]["count"] == 0


def test_an_approval_acts_once_however_often_it_is_sent(stack: Stack) -> None:
    stack.set_policy(modes=PROPOSE)
    [d] = decide(stack, order_event("SO-23", [("SKU-100", 2)]))
    first = stack.client.post(f"/v1/decisions/{d['id']}/approve", headers=stack.headers("planner"))
    second = stack.client.post(f"/v1/decisions/{d['id']}/approve", headers=stack.headers("planner"))
    assert first.status_code == 200 and first.json()["status"] == "executed"
    assert second.status_code == 409 and second.json()["detail"]["error"] == "not_pending"
    assert [al.qty for ln in stack.state.order("SO-23").lines for al in ln.allocations] == [2]


# ---------------------------------------------------------------------------- finish or undo


def test_a_permanent_failure_mid_execution_undoes_what_was_applied(stack: Stack) -> None:
    """The half-applied case: the allocation ran, the wave was refused; the allocation is released."""
    service = stack.container.pipeline.decisions
    stack.state.apply_event(order_event("SO-24", [("SKU-100", 3)]))
    proposal = Proposal(
        workflow="order_release",
        subject="SO-24",
        outcome="released",
        confidence=0.9,
        rationale="test plan whose wave the WMS refuses",
        actions=[
            Action(
                system="oms",
                type="allocate",
                payload={"order_id": "SO-24", "line": 1, "sku": "SKU-100", "node": "DC-EAST", "qty": 3},
            ),
            Action(system="oms", type="update_order_status", payload={"order_id": "SO-24", "status": "released"}),
            Action(system="wms", type="create_wave", payload={"waveId": "WV-X", "node": "NOWHERE", "orders": []}),
        ],
        review_required=True,
    )
    stack.set_policy(modes=PROPOSE)
    policy = stack.container.store.get_policy()
    decision = service.record(proposal, policy, "dec-half", actor="test", default_engine="test")
    assert decision is not None and decision.status == "pending_review"
    resp = stack.client.post("/v1/decisions/dec-half/approve", headers=stack.headers("planner"))
    assert resp.status_code == 409, resp.text
    detail = resp.json()["detail"]
    assert detail["error"] == "failed" and "NOWHERE" in detail["message"]
    assert [u["action"] for u in detail["undone"] if u["undone"]] == ["oms.update_order_status", "oms.allocate"]
    order = stack.state.order("SO-24")
    assert order.status == "open" and all(not ln.allocations for ln in order.lines)
    stored = stack.container.store.get_decision("dec-half")
    assert stored is not None and stored.status == "failed" and stored.undone == detail["undone"]


def test_an_interrupted_approval_stays_executing_and_a_second_approve_finishes_it(flaky: Stack, faults: Faults) -> None:
    stack = flaky
    stack.set_policy(modes=PROPOSE)
    [d] = decide(stack, order_event("SO-25", [("SKU-100", 2)]))
    faults.down = lambda method, path: method == "POST" and path.endswith("/waves")
    first = stack.client.post(f"/v1/decisions/{d['id']}/approve", headers=stack.headers("planner"))
    assert first.status_code == 503 and first.json()["detail"]["error"] == "interrupted"
    stored = stack.container.store.get_decision(d["id"])
    assert stored is not None and stored.status == "executing"
    faults.down = lambda method, path: False
    second = stack.client.post(f"/v1/decisions/{d['id']}/approve", headers=stack.headers("planner"))
    assert second.status_code == 200 and second.json()["status"] == "executed"
    counts = [a["count"] for a in stack.state.applied_actions() if a["idempotency_key"].startswith(d["id"])]
    assert counts and set(counts) == {1}  # every action applied exactly once


def test_the_worker_resumes_an_interrupted_execution_by_itself(flaky: Stack, faults: Faults) -> None:
    stack = flaky
    stack.set_policy(modes=PROPOSE)
    [d] = decide(stack, order_event("SO-26", [("SKU-100", 2)]))
    faults.down = lambda method, path: method == "POST" and path.endswith("/waves")
    assert stack.client.post(f"/v1/decisions/{d['id']}/approve", headers=stack.headers("planner")).status_code == 503
    faults.down = lambda method, path: False
    settled = stack.container.pipeline.maintain(resume_after_s=0.0, give_up_s=600)
    assert settled == 1
    stored = stack.container.store.get_decision(d["id"])
    assert stored is not None and stored.status == "executed"


def test_an_execution_that_never_recovers_is_undone_and_failed_not_left_executing(flaky: Stack, faults: Faults) -> None:
    stack = flaky
    stack.set_policy(modes=PROPOSE)
    [d] = decide(stack, order_event("SO-27", [("SKU-100", 2)]))
    faults.down = lambda method, path: method == "POST" and path.endswith("/waves")
    assert stack.client.post(f"/v1/decisions/{d['id']}/approve", headers=stack.headers("planner")).status_code == 503
    assert stack.container.pipeline.maintain(resume_after_s=0.0, give_up_s=0.0) == 1
    stored = stack.container.store.get_decision(d["id"])
    assert stored is not None and stored.status == "failed" and "gave up" in (stored.error or "")
    assert all(not ln.allocations for ln in stack.state.order("SO-27").lines)


# ---------------------------------------------------------------------------- rejections


def test_a_rejection_needs_a_reason(stack: Stack) -> None:
    stack.set_policy(modes=PROPOSE)
    [d] = decide(stack, order_event("SO-28", [("SKU-100", 2)]))
    for body in (None, {}, {"reason": ""}, {"reason": "   "}):
        resp = stack.client.post(f"/v1/decisions/{d['id']}/reject", json=body, headers=stack.headers("planner"))
        assert resp.status_code == 422, (body, resp.text)
    assert stack.container.store.get_decision(d["id"]).status == "pending_review"  # type: ignore[union-attr]


def test_a_rejected_source_is_decided_again_from_another_node(stack: Stack) -> None:
    stack.set_policy(modes=PROPOSE)
    [d] = decide(stack, order_event("SO-29", [("SKU-100", 3)]))
    assert {a["payload"]["node"] for a in d["actions"] if a["type"] == "allocate"} == {"DC-EAST"}
    resp = stack.client.post(
        f"/v1/decisions/{d['id']}/reject", json={"reason": "DC-EAST is closing early"}, headers=stack.headers("planner")
    )
    assert resp.status_code == 200 and resp.json()["status"] == "rejected"
    fresh = resp.json()["next"]
    assert fresh["status"] == "pending_review" and fresh["supersedes"] == d["id"]
    nodes = {a["payload"]["node"] for a in fresh["actions"] if a["type"] == "allocate"}
    assert nodes and "DC-EAST" not in nodes
    assert fresh["evidence"]["override"] == {"rejected": d["id"], "reason": "DC-EAST is closing early"}
    # The engine does not propose the rejected plan again on the same facts.
    again = decide(stack, order_event("SO-29", [("SKU-100", 3)], event_id="evt-SO-29-again"))
    assert all(x["id"] != d["id"] and x["status"] != "pending_review" or x["id"] == fresh["id"] for x in again)
    assert [x["id"] for x in live(stack, "SO-29")] == [fresh["id"]]


def test_rejecting_a_hold_with_nothing_else_to_offer_leaves_the_order_awaiting_a_planner(stack: Stack) -> None:
    stack.set_policy(modes=PROPOSE)
    # SKU-200: 7 at DC-EAST, nowhere else; 9 wanted and no split allowed: held for stock.
    [d] = decide(stack, order_event("SO-30", [("SKU-200", 9)], allow_split=False))
    assert (d["outcome"], d["status"]) == ("held", "pending_review")
    resp = stack.client.post(
        f"/v1/decisions/{d['id']}/reject", json={"reason": "do not hold, find stock"}, headers=stack.headers("planner")
    )
    waiting = resp.json()["next"]
    assert waiting["status"] == "awaiting_planner" and waiting["subject"] == "SO-30"
    queue = stack.client.get(
        "/v1/decisions", params={"status": "awaiting_planner"}, headers=stack.headers("planner")
    ).json()
    assert [q["id"] for q in queue] == [waiting["id"]]
    risk = stack.client.get("/v1/orders/at-risk", headers=stack.headers("planner")).json()
    [row] = [r for r in risk if r["order_id"] == "SO-30"]
    assert "awaiting_planner" in {r["kind"] for r in row["reasons"]}
    # Stock arrives at DC-EAST; the next tick sees the waiting order and proposes its release.
    stack.state.apply_event(
        {
            "specversion": "1.0",
            "id": "adj-2",
            "source": "wms/test",
            "type": "wms.inventory.adjusted",
            "time": "2026-03-21T08:30:00Z",
            "data": {"node": "DC-EAST", "location": "A-02-02", "sku": "SKU-200", "qty_delta": 5, "reason": "found"},
        }
    )
    tick(stack, 1)
    stack.drain()
    [now_live] = live(stack, "SO-30")
    assert now_live["outcome"] in ("released", "partially_released") and now_live["supersedes"] == waiting["id"]
    assert stack.container.store.get_decision(waiting["id"]).status == "superseded"  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- approve with changes


def test_approve_with_changes_checks_the_edit_and_records_an_override(stack: Stack) -> None:
    stack.set_policy(modes=PROPOSE)
    [d] = decide(stack, order_event("SO-31", [("SKU-100", 3)]))
    i = next(n for n, a in enumerate(d["actions"]) if a["type"] == "allocate")
    planner = stack.headers("planner")
    bad = [
        ({"action": i, "node": "MARS"}, "not a node"),
        ({"action": i, "qty": 30}, "orders 3"),
        ({"action": i, "qty": -1}, "greater than 0"),
        ({"action": 99, "qty": 1}, "index"),
        ({"action": i, "promise_date": "2026-04-01"}, "cannot change"),
    ]
    for change, why in bad:
        resp = stack.client.post(f"/v1/decisions/{d['id']}/approve", json={"changes": [change]}, headers=planner)
        assert resp.status_code == 422 and why in resp.text, (change, resp.text)
    resp = stack.client.post(
        f"/v1/decisions/{d['id']}/approve",
        json={"changes": [{"action": i, "node": "STORE-12"}], "note": "keep DC-EAST for express"},
        headers=planner,
    )
    assert resp.status_code == 200, resp.text
    done = resp.json()
    assert done["status"] == "executed" and done["review"]["kind"] == "approved_with_changes"
    assert done["review"]["original_actions"][i]["payload"]["node"] == "DC-EAST"
    assert [(al.node, al.qty) for ln in stack.state.order("SO-31").lines for al in ln.allocations] == [("STORE-12", 3)]
    [entry] = stack.container.store.audit(subject="SO-31", kind="decision.approved")
    assert entry.payload["kind"] == "approved_with_changes" and entry.actor == "planner:planner"  # named after its role


# ---------------------------------------------------------------------------- the clock


def test_with_two_instances_only_the_lease_holder_ticks(stack: Stack) -> None:
    c = stack.container
    one = Clock(c.redis, c.queue, c.settings.stream_prefix, interval_s=60)
    two = Clock(c.redis, c.queue, c.settings.stream_prefix, interval_s=60)
    at = datetime(2026, 3, 21, 9, 0, tzinfo=UTC)
    assert one.beat(at) is True
    assert two.beat(at) is False  # not the holder
    assert one.beat(at) is False  # same slot: one tick per slot
    assert one.beat(datetime(2026, 3, 21, 9, 1, tzinfo=UTC)) is True
    assert stack.drain() == 2
    ticks = [d for d in c.store.list_decisions(limit=1000) if d.subject == "waves"]
    assert len(ticks) == 2
    # The holder stops: the other takes over at once.
    stop = threading.Event()
    stop.set()
    one.run(stop)
    assert two.beat(datetime(2026, 3, 21, 9, 2, tzinfo=UTC)) is True


def test_a_lease_that_ran_out_is_not_released_from_under_its_successor(stack: Stack) -> None:
    r, key = stack.container.redis, f"{stack.container.settings.stream_prefix}:test-lease"
    old, successor = Lease(r, key, lease_ms=50), Lease(r, key, lease_ms=60_000)
    assert old.hold() and not successor.hold()
    time.sleep(0.1)  # the old holder stopped renewing: its lease ran out
    assert successor.hold()
    old.release()  # late: must leave the successor's lease alone
    assert r.get(key) in (successor.token, successor.token.encode()) and not old.hold()
    successor.release()
    assert r.get(key) is None


# ---------------------------------------------------------------------------- agents outside the locks


def agent_ticket(order_id: str) -> Proposal:
    return Proposal(
        workflow="order_release",
        subject=order_id,
        outcome="ticketed",
        confidence=0.9,
        rationale="tell customer service about the delivery slot",
        evidence={"engine": "agent:allocation"},
        actions=[
            Action(
                system="notify",
                type="ticket",
                payload={"team": "customer_service", "subject": order_id, "summary": "slot", "refs": [order_id]},
            )
        ],
    )


def test_the_agent_judges_outside_the_stock_locks_and_its_proposal_is_gated_under_them(stack: Stack) -> None:
    c = stack.container
    held_during_judgement: list[list[str]] = []

    def judge(event: Any, proposals: list[Proposal]) -> list[Any]:
        held_during_judgement.append(
            [k.decode() for k in c.redis.scan_iter(match=f"{c.settings.stream_prefix}:lock:*")]
        )
        return [agent_ticket(str(event.data["id"]))]

    stack.set_policy(modes={"order_release": "autonomous", "allocation": "autonomous"})
    c.pipeline.judge = judge
    decisions = decide(stack, order_event("SO-40", [("SKU-100", 2)], note="call before delivery"))
    assert held_during_judgement == [[]]  # no SKU lock while the model thinks
    engine, agent = decisions
    assert (engine["outcome"], engine["status"]) == ("released", "executed")  # the engines decided first
    assert agent["engine_version"] == "agent:allocation" and agent["status"] == "executed"


def test_an_agent_proposal_about_an_order_that_moved_while_it_thought_is_stored_rejected(stack: Stack) -> None:
    c = stack.container
    stack.set_policy(modes=PROPOSE)

    def judge(event: Any, proposals: list[Proposal]) -> list[Any]:
        # While the model thinks, the customer cancels the order in the OMS.
        stack.state.apply_event(
            {
                "specversion": "1.0",
                "id": "cancel-SO-41",
                "source": "oms/test",
                "type": "oms.order.cancelled",
                "time": "2026-03-21T08:20:00Z",
                "data": {"order_id": "SO-41", "reason": "customer"},
            }
        )
        return [agent_ticket("SO-41")]

    c.pipeline.judge = judge
    decisions = decide(stack, order_event("SO-41", [("SKU-100", 2)], note="call before delivery"))
    [agent] = [d for d in decisions if d["engine_version"].startswith("agent:")]
    assert agent["status"] == "rejected" and "moved while the agent ran" in agent["error"]
    assert agent["actions"] == [] and stack.state.export_state()["tickets"] == []
