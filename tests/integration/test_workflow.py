"""The seed workflow end to end: HTTP intake → Redis → worker → twin, with governance and audit."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from tests.integration.conftest import Stack, capacity_event, order_event


def job_of(stack: Stack, resp: httpx.Response) -> dict[str, Any]:
    job_id = resp.json()["job_id"]
    body: dict[str, Any] = stack.client.get(f"/v1/jobs/{job_id}", headers=stack.headers("gateway")).json()
    return body


def applied_counts(stack: Stack) -> dict[str, int]:
    return {a["idempotency_key"]: a["count"] for a in stack.state.applied_actions()}


def test_a_feasible_order_is_allocated_waved_and_released(stack: Stack) -> None:
    resp = stack.publish(order_event("SO-1", [("SKU-100", 4), ("SKU-200", 1)], customer="CUST-1"))
    assert stack.drain() == 1
    job = job_of(stack, resp)
    assert job["status"] == "done"
    [decision] = job["decisions"]
    assert decision["outcome"] == "released" and decision["status"] == "executed"
    assert decision["workflow"] == "order_release" and decision["engine_version"] == "release/1.1.0"
    order = stack.state.order("SO-1")
    assert order.status == "released"
    assert [(a.node, a.qty) for a in order.lines[0].allocations] == [("DC-EAST", 4)]
    [wave] = stack.state.export_state()["wms"]["waves"]
    assert wave["waveId"] == "WV-SO-1-DC-EAST"
    assert wave["parameters"] == {
        "workZone": "PICK-ZONE-A",
        "carrierCode": "FEDX_GROUND",
        "cutoffTime": "2026-03-21T14:00:00Z",
    }
    assert 0 < wave["orders"][0]["priorityScore"] <= 100
    # Evidence names the figures the decision used: 35 on hand, 10 locked at DC-EAST.
    east = decision["evidence"]["lines"][0]["nodes"]["DC-EAST"]
    assert (east["on_hand"], east["locked"], east["pickable"]) == (35, 10, 25)


def test_a_short_order_is_split_and_its_backorder_waits_for_a_planner(stack: Stack) -> None:
    resp = stack.publish(order_event("SO-2", [("SKU-200", 10)]))
    stack.drain()
    release, backorder = job_of(stack, resp)["decisions"]
    assert (release["outcome"], release["status"]) == ("partially_released", "executed")
    assert (backorder["outcome"], backorder["status"]) == ("backordered", "pending_review")
    assert backorder["human_review_required"] is True
    order = stack.state.order("SO-2")
    assert order.status == "partially_released"
    assert order.lines[0].allocations[0].qty == 7 and order.lines[0].backordered == 3
    assert stack.state.export_state()["erp"]["backorders"] == []  # not before approval
    # PO-9001 brings SKU-200 to DC-EAST on 2026-03-23; one day of transit to US-NE.
    erp_action = next(a for a in backorder["actions"] if a["type"] == "create_backorder")
    assert erp_action["payload"]["promise_date"] == "2026-03-24"

    pending = stack.client.get("/v1/decisions", params={"status": "pending_review"}, headers=stack.headers("planner"))
    assert [d["id"] for d in pending.json()] == [backorder["id"]]
    approved = stack.client.post(f"/v1/decisions/{backorder['id']}/approve", headers=stack.headers("planner"))
    assert approved.status_code == 200 and approved.json()["status"] == "executed"
    assert [b["qty"] for b in stack.state.export_state()["erp"]["backorders"]] == [3]
    assert str(stack.state.order("SO-2").lines[0].promise_date) == "2026-03-24"


def test_orders_are_held_for_credit_and_for_no_stock_with_a_ticket(stack: Stack) -> None:
    stack.publish(order_event("SO-3", [("SKU-300", 2)], customer="CUST-9", region="US-W"))
    stack.publish(order_event("SO-4", [("SKU-300", 5)], region="US-W", allow_split=False))
    stack.drain()
    assert stack.state.order("SO-3").hold_reason == "credit_hold"
    assert stack.state.order("SO-4").hold_reason == "no_stock"
    tickets = stack.state.export_state()["tickets"]
    assert sorted(t["team"] for t in tickets) == ["finance", "planning"]
    assert stack.state.order("SO-4").lines[0].allocations == []


def test_an_unknown_sku_holds_the_order_with_a_clear_reason_instead_of_retrying(stack: Stack) -> None:
    resp = stack.publish(order_event("SO-5", [("SKU-9", 1)]))
    stack.drain()
    job = job_of(stack, resp)
    assert job["status"] == "done" and job["attempts"] == 0
    [decision] = job["decisions"]
    assert decision["outcome"] == "held"
    assert "SKU-9 is not in the ERP material master" in decision["rationale"]
    assert stack.state.order("SO-5").hold_reason == "review"


def test_an_event_with_no_specialist_is_recorded_as_observed_no_action(stack: Stack) -> None:
    event = {
        "specversion": "1.0",
        "id": "evt-po",
        "source": "erp/test",
        "type": "erp.po.created",
        "subject": "PO-9100",
        "data": {
            "id": "PO-9100",
            "supplier": "SUP-1",
            "node": "DC-EAST",
            "lines": [{"line": 10, "sku": "SKU-100", "qty": 5}],
        },
    }
    resp = stack.post_events(event)
    stack.drain()
    [decision] = job_of(stack, resp)["decisions"]
    assert (decision["workflow"], decision["outcome"], decision["status"]) == (
        "backorder_prevention",
        "no_action",
        "observed",
    )
    assert "No backorder_prevention specialist" in decision["rationale"]
    assert stack.state.applied_actions() == []


def inbound(kind: str, doc: dict[str, Any], at: str) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"evt-{doc['id']}", "source": "wms/test", "type": kind, "time": at, "data": doc}


def test_a_receipt_within_tolerance_closes_its_po_line_and_a_short_wrong_lot_line_goes_to_review(
    stack: Stack,
) -> None:
    asn = {
        "id": "ASN-1",
        "po_id": "PO-9001",
        "expected": "2026-03-21",
        "lines": [
            {"po_line": 10, "sku": "SKU-100", "qty": 100},
            {"po_line": 20, "sku": "SKU-200", "qty": 50, "lot": "L-77"},
        ],
    }
    resp = stack.publish(inbound("wms.asn.received", asn, "2026-03-21T09:00:00Z"))
    stack.drain()
    [waiting] = job_of(stack, resp)["decisions"]
    assert (waiting["workflow"], waiting["outcome"]) == ("reconciliation", "no_action")  # goods still awaited

    receipt = {
        "id": "GR-1",
        "po_id": "PO-9001",
        "asn_id": "ASN-1",
        "node": "DC-EAST",
        "received_at": "2026-03-21T10:30:00Z",
        "lines": [
            {"po_line": 10, "sku": "SKU-100", "qty": 98},  # 2 % short: exactly at tolerance
            {"po_line": 20, "sku": "SKU-200", "qty": 40, "lot": "L-78"},
        ],
    }
    resp = stack.publish(inbound("wms.receipt.posted", receipt, "2026-03-21T10:30:00Z"))
    stack.drain()
    decisions = {d["subject"]: d for d in job_of(stack, resp)["decisions"] if d["workflow"] == "reconciliation"}
    closed, short = decisions["PO-9001/10"], decisions["PO-9001/20"]
    assert (closed["outcome"], closed["status"]) == ("matched", "executed")
    assert [a["type"] for a in closed["actions"]] == ["close_po_line"]
    assert (short["outcome"], short["status"], short["human_review_required"]) == (
        "discrepancy",
        "pending_review",
        True,
    )
    teams = sorted(a["payload"]["team"] for a in short["actions"] if a["type"] == "ticket")
    assert teams and all(t in {"receiving", "finance"} for t in teams)
    [po] = stack.state.export_state()["erp"]["purchase_orders"]
    assert [ln["status"] for ln in po["lines"]] == ["closed", "open"]

    # The same receipt posted again is a duplicate: it is named, and nothing is counted twice.
    again = inbound("wms.receipt.posted", receipt, "2026-03-21T11:00:00Z")
    again["id"] = "evt-GR-1-again"
    resp = stack.publish(again)
    stack.drain()
    [dup] = [d for d in job_of(stack, resp)["decisions"] if d["workflow"] == "reconciliation"]
    assert (dup["subject"], dup["outcome"], dup["evidence"]["finding"]) == ("GR-1", "discrepancy", "duplicate_receipt")


def test_propose_mode_waits_for_review_and_concurrent_approvals_execute_once(stack: Stack) -> None:
    stack.set_policy(modes={"order_release": "propose"})
    resp = stack.publish(order_event("SO-6", [("SKU-100", 3)]))
    stack.drain()
    [decision] = job_of(stack, resp)["decisions"]
    assert decision["status"] == "pending_review" and stack.state.applied_actions() == []

    codes: list[int] = []

    def approve() -> None:
        with httpx.Client(base_url=stack.api.url, trust_env=False, timeout=30) as c:
            codes.append(
                c.post(f"/v1/decisions/{decision['id']}/approve", headers=stack.headers("planner")).status_code
            )

    threads = [threading.Thread(target=approve) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] + [409] * 5
    counts = applied_counts(stack)
    assert len(counts) == len(decision["actions"]) and set(counts.values()) == {1}
    assert sum(a.qty for a in stack.state.order("SO-6").lines[0].allocations) == 3


def test_a_rejected_decision_executes_nothing_and_cannot_be_approved_later(stack: Stack) -> None:
    stack.set_policy(modes={"order_release": "propose"})
    resp = stack.publish(order_event("SO-7", [("SKU-100", 3)]))
    stack.drain()
    [decision] = job_of(stack, resp)["decisions"]
    planner = stack.headers("planner")
    rejected = stack.client.post(
        f"/v1/decisions/{decision['id']}/reject", json={"reason": "customer called"}, headers=planner
    )
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert stack.client.post(f"/v1/decisions/{decision['id']}/approve", headers=planner).status_code == 409
    assert stack.state.applied_actions() == []


def test_cost_and_confidence_thresholds_send_decisions_to_review(stack: Stack) -> None:
    stack.set_policy(review_cost_above=1.0)
    resp = stack.publish(order_event("SO-8", [("SKU-100", 3)]))  # 3 x 1.1 = 3.3 > 1.0
    stack.drain()
    [decision] = job_of(stack, resp)["decisions"]
    assert decision["status"] == "pending_review" and "cost impact 3.3 > 1" in decision["evidence"]["governance"]


def test_approving_after_the_stock_moved_is_stale_and_decides_again(stack: Stack) -> None:
    stack.set_policy(modes={"order_release": "propose"})
    first = stack.publish(order_event("SO-9", [("SKU-200", 7)]))
    second = stack.publish(order_event("SO-10", [("SKU-200", 7)]))
    stack.drain()
    d1 = job_of(stack, first)["decisions"][0]
    d2 = job_of(stack, second)["decisions"][0]
    planner = stack.headers("planner")
    assert stack.client.post(f"/v1/decisions/{d1['id']}/approve", headers=planner).status_code == 200
    conflict = stack.client.post(f"/v1/decisions/{d2['id']}/approve", headers=planner)
    detail = conflict.json()["detail"]
    assert conflict.status_code == 409 and detail["error"] == "stale"
    assert any("only 0 pickable" in r for r in detail["reasons"])
    # Nothing of the stale plan ran; the order was decided again at once, on today's stock.
    assert stack.state.order("SO-10").lines[0].allocations == []
    fresh = detail["fresh"]
    assert fresh is not None and fresh["subject"] == "SO-10" and fresh["supersedes"] == d2["id"]
    assert fresh["status"] == "pending_review" and not any(
        a["type"] == "allocate" and a["payload"]["node"] == "DC-EAST" and a["payload"]["qty"] == 7
        for a in fresh["actions"]
    )
    old = stack.client.get(f"/v1/decisions/{d2['id']}", headers=planner).json()
    assert old["status"] == "superseded" and old["superseded_by"] == fresh["id"] and old["review"]["kind"] == "stale"
    assert stack.state.export_state()["oversells"]["count"] == 0


def test_redelivering_a_finished_job_applies_nothing_twice(stack: Stack) -> None:
    resp = stack.publish(order_event("SO-11", [("SKU-100", 2)]))
    stack.drain()
    before = applied_counts(stack)
    job_id = resp.json()["job_id"]
    # At-least-once delivery: the same job id lands on the stream again.
    stack.container.redis.xadd(stack.container.queue.stream, {"job": job_id})
    stack.drain()
    # And a handler re-run straight after deciding (a crash before the ack) is harmless too.
    job = stack.container.queue.job(job_id)
    assert job is not None
    stack.container.pipeline.handle(job_id, {k: str(v) for k, v in job.items()})
    assert applied_counts(stack) == before and set(before.values()) == {1}
    assert len(stack.container.store.list_decisions(job_id=job_id)) == 1


def test_the_audit_log_records_the_trail_and_verifies(stack: Stack) -> None:
    stack.publish(order_event("SO-12", [("SKU-100", 2)]))
    stack.drain()
    trail = stack.client.get("/v1/audit", params={"subject": "SO-12"}, headers=stack.headers("planner")).json()
    kinds = [e["kind"] for e in trail]
    assert kinds[0] == "event.accepted" and kinds[1] == "decision.recorded" and kinds[-1] == "decision.executed"
    assert kinds.count("action.executed") == 3  # allocate, wave, status
    verify = stack.client.get("/v1/audit/verify", headers=stack.headers("planner")).json()
    assert verify["ok"] is True and verify["entries"] >= len(trail)


def test_a_cs_rep_reads_an_order_but_cannot_approve(stack: Stack) -> None:
    stack.publish(order_event("SO-13", [("SKU-100", 2)]))
    stack.drain()
    order = stack.client.get("/v1/orders/SO-13", headers=stack.headers("cs_rep"))
    assert order.status_code == 200 and order.json()["status"] == "released"
    assert stack.client.get("/v1/orders/SO-404", headers=stack.headers("cs_rep")).status_code == 404
    assert stack.client.post("/v1/decisions/x/approve", headers=stack.headers("cs_rep")).status_code == 403


def test_a_tick_re_sources_orders_held_for_stock_once_stock_arrives(stack: Stack) -> None:
    stack.publish(order_event("SO-20", [("SKU-200", 10)], allow_split=False))
    stack.publish(order_event("SO-21", [("SKU-200", 9)], allow_split=False, customer="CUST-1"))  # gold
    stack.drain()
    assert [stack.state.order(o).hold_reason for o in ("SO-20", "SO-21")] == ["no_stock", "no_stock"]
    # The WMS finds 5 more units (7 -> 12 pickable): enough for one of the two, not both.
    adjusted = {
        "specversion": "1.0",
        "id": "evt-adj",
        "source": "wms/test",
        "type": "wms.inventory.adjusted",
        "time": "2026-03-21T11:00:00Z",
        "data": {"node": "DC-EAST", "sku": "SKU-200", "qty_delta": 5, "location": "A-02-02"},
    }
    stack.publish(adjusted)
    tick = {
        "specversion": "1.0",
        "id": "evt-tick",
        "source": "crossdock/clock",
        "type": "crossdock.tick",
        "time": "2026-03-21T12:00:00Z",
        "data": {"now": "2026-03-21T12:00:00Z"},
    }
    resp = stack.publish(tick)
    stack.drain()
    decisions = job_of(stack, resp)["decisions"]
    summary, release, waves = [d for d in decisions if d["workflow"] not in ("backorder_prevention", "discrepancy")]
    # The scenario's standing variance no event touches is raised by the tick's full reconciliation pass.
    assert [(d["subject"], d["outcome"]) for d in decisions if d["workflow"] == "discrepancy"] == [
        ("SKU-300@DC-WEST", "discrepancy")
    ]
    assert (summary["workflow"], summary["outcome"], summary["status"]) == ("allocation", "reoptimised", "observed")
    # The release waved SO-21 itself; the tick's wave plan found nothing else waiting.
    assert (waves["subject"], waves["outcome"]) == ("waves", "no_action")
    assert any(o["orderId"] == "SO-21" for w in stack.state.export_state()["wms"]["waves"] for o in w["orders"])
    assert summary["evidence"]["considered"] == 2 and summary["evidence"]["released"] == ["SO-21"]
    # The gold customer's order gets the scarce units; the other stays held, untouched.
    assert (release["subject"], release["outcome"], release["status"]) == ("SO-21", "released", "executed")
    assert stack.state.order("SO-21").status == "released"
    assert [(a.node, a.qty) for a in stack.state.order("SO-21").lines[0].allocations] == [("DC-EAST", 9)]
    assert stack.state.order("SO-20").hold_reason == "no_stock"
    assert stack.state.export_state()["oversells"]["count"] == 0


def test_a_capacity_change_waves_an_order_the_full_window_had_left_waiting(stack: Stack) -> None:
    # DC-EAST/PICK-ZONE-A picks 300 lines/h; a 0.01 h window holds 3 lines.
    stack.set_policy(wave_window_hours=0.01)
    stack.publish(order_event("SO-30", [("SKU-100", 2), ("SKU-200", 1)]))
    stack.publish(order_event("SO-31", [("SKU-100", 1), ("SKU-200", 1)]))
    stack.drain()
    waved = {o["orderId"] for w in stack.state.export_state()["wms"]["waves"] for o in w["orders"]}
    assert waved == {"SO-30"}
    assert stack.state.order("SO-31").status == "released"  # reserved, waiting for room in the window
    assert [(a.node, a.qty) for a in stack.state.order("SO-31").lines[0].allocations] == [("DC-EAST", 1)]

    resp = stack.publish(capacity_event(600))
    stack.drain()
    [plan] = job_of(stack, resp)["decisions"]
    assert (plan["subject"], plan["outcome"], plan["status"]) == ("waves", "waves_planned", "executed")
    assert plan["evidence"]["committed_lines"] == {"DC-EAST/PICK-ZONE-A": 2}
    [wave] = [w for w in stack.state.export_state()["wms"]["waves"] if w["waveId"] != "WV-SO-30-DC-EAST"]
    assert [o["orderId"] for o in wave["orders"]] == ["SO-31"]
    assert wave["parameters"] == {
        "workZone": "PICK-ZONE-A",
        "carrierCode": "FEDX_GROUND",
        "cutoffTime": "2026-03-21T14:00:00Z",
    }


def stock_event(kind: str, node: str, sku: str, delta: float, at: str, event_id: str) -> dict[str, Any]:
    data: dict[str, Any] = {"node": node, "sku": sku, "qty_delta": delta}
    if kind == "erp.inventory.posted":
        data.update(movement_type="701", document_id=f"MAT-{event_id}", posted_at=at)
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "wms/test" if kind.startswith("wms") else "erp/test",
        "type": kind,
        "time": at,
        "data": data,
    }


def test_a_count_the_erp_has_not_booked_yet_is_a_timing_difference_and_uncovered_orders_go_back(
    stack: Stack,
) -> None:
    stack.publish(order_event("SO-40", [("SKU-200", 6)]))
    stack.drain()
    assert [(a.node, a.qty) for a in stack.state.order("SO-40").lines[0].allocations] == [("DC-EAST", 6)]

    # The WMS counts 3 fewer SKU-200 at DC-EAST (7 -> 4): the ERP has not booked it yet.
    adjusted = stock_event("wms.inventory.adjusted", "DC-EAST", "SKU-200", -3, "2026-03-21T09:00:00Z", "e1")
    adjusted["data"]["location"] = "A-02-02"  # 6 there (1 in A-02-01)
    resp = stack.publish(adjusted)
    stack.drain()
    stock, held = job_of(stack, resp)["decisions"]
    assert (stock["subject"], stock["outcome"], stock["actions"]) == ("SKU-200@DC-EAST", "timing_difference", [])
    # SO-40 reserved 6, the warehouse has 4: its reservation goes back and the tick will re-source it.
    assert (held["subject"], held["outcome"], held["status"]) == ("SO-40", "held", "executed")
    order = stack.state.order("SO-40")
    assert (order.status, order.hold_reason, order.lines[0].allocations) == ("held", "no_stock", [])

    # The ERP books the same count an hour later: both sides agree, nothing was corrected twice.
    resp = stack.publish(stock_event("erp.inventory.posted", "DC-EAST", "SKU-200", -3, "2026-03-21T10:00:00Z", "e2"))
    stack.drain()
    [stock] = job_of(stack, resp)["decisions"]
    assert stock["outcome"] == "in_sync"
    assert stack.state.export_state()["erp"]["adjustments"] == []


def test_a_true_variance_corrects_the_erp_book_to_the_wms_count(stack: Stack) -> None:
    stack.set_policy(posting_grace_hours=0)  # nothing waits for the other side's posting
    resp = stack.publish(stock_event("wms.inventory.adjusted", "DC-WEST", "SKU-100", -2, "2026-03-21T09:00:00Z", "e3"))
    stack.drain()
    [stock] = job_of(stack, resp)["decisions"]
    assert (stock["outcome"], stock["status"]) == ("discrepancy", "executed")
    [adjustment] = stack.state.export_state()["erp"]["adjustments"]
    assert (adjustment["node"], adjustment["sku"], adjustment["qty_delta"]) == ("DC-WEST", "SKU-100", -2)
    book = {(b["node"], b["sku"]): b["qty"] for b in stack.state.export_state()["erp"]["book_stock"]}
    assert book[("DC-WEST", "SKU-100")] == 58


def tick_at(now: str, event_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "crossdock/clock",
        "type": "crossdock.tick",
        "time": now,
        "data": {"now": now},
    }


def test_a_posting_that_never_comes_becomes_a_true_variance_when_the_grace_window_ends(stack: Stack) -> None:
    adjusted = stock_event("wms.inventory.adjusted", "DC-EAST", "SKU-200", -3, "2026-03-21T09:00:00Z", "e5")
    adjusted["data"]["location"] = "A-02-02"
    stack.publish(adjusted)
    stack.drain()
    # 12:00 is inside the 4 h grace window: nothing is re-checked yet.
    resp = stack.publish(tick_at("2026-03-21T12:00:00Z", "t-12"))
    stack.drain()
    assert not [d for d in job_of(stack, resp)["decisions"] if d["subject"] == "SKU-200@DC-EAST"]
    # 14:00: the ERP never booked the count. The book moves to the WMS figure, once.
    resp = stack.publish(tick_at("2026-03-21T14:00:00Z", "t-14"))
    stack.drain()
    [variance] = [d for d in job_of(stack, resp)["decisions"] if d["workflow"] == "discrepancy"]
    assert (variance["subject"], variance["outcome"], variance["status"]) == (
        "SKU-200@DC-EAST",
        "discrepancy",
        "executed",
    )
    assert variance["evidence"]["sweep"].startswith("stock re-check")
    # (The 12:00 tick's full reconciliation pass corrected the scenario's standing SKU-300 variance.)
    [adjustment] = [a for a in stack.state.export_state()["erp"]["adjustments"] if a["sku"] == "SKU-200"]
    assert (adjustment["sku"], adjustment["qty_delta"]) == ("SKU-200", -3)
    resp = stack.publish(tick_at("2026-03-21T16:00:00Z", "t-16"))
    stack.drain()
    assert not [d for d in job_of(stack, resp)["decisions"] if d["workflow"] == "discrepancy"]


def test_an_overdue_asn_is_raised_once_by_the_tick_sweep(stack: Stack) -> None:
    asn = {
        "id": "ASN-9",
        "po_id": "PO-9001",
        "expected": "2026-03-19",
        "lines": [{"po_line": 10, "sku": "SKU-100", "qty": 100}],
    }
    stack.publish(inbound("wms.asn.received", asn, "2026-03-19T08:00:00Z"))
    stack.drain()
    resp = stack.publish(tick_at("2026-03-21T12:00:00Z", "t-a"))
    stack.drain()
    [overdue] = [d for d in job_of(stack, resp)["decisions"] if d["subject"] == "ASN-9"]
    assert (overdue["outcome"], overdue["evidence"]["finding"]) == ("discrepancy", "asn_overdue")
    assert [a["payload"]["team"] for a in overdue["actions"]] == ["planning"]
    resp = stack.publish(tick_at("2026-03-21T14:00:00Z", "t-b"))
    stack.drain()
    assert not [d for d in job_of(stack, resp)["decisions"] if d["subject"] == "ASN-9"]
