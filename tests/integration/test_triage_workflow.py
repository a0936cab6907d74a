"""Exception triage and backorder prevention end to end: HTTP intake → Redis → worker → twin."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stack, close_stack, make_stack, order_event
from tests.integration.test_workflow import job_of


@pytest.fixture
def triage_stack(tmp_path: Path, redis_url: str, example: dict[str, Any]) -> Iterator[Stack]:
    scenario = copy.deepcopy(example)
    # A second free location of SKU-100 at DC-EAST to re-pick from.
    scenario["wms"]["stock"].append(
        {
            "node": "DC-EAST",
            "zone": "PICK-ZONE-A",
            "location": "A-01-03",
            "sku": "SKU-100",
            "lot": None,
            "on_hand": 15,
            "locked": 0,
        }
    )
    scenario["erp"]["book_stock"][0]["qty"] = 50
    # The next purchase order lands late, so DC-EAST runs out of SKU-100 before it.
    scenario["erp"]["purchase_orders"][0]["expected"] = "2026-03-30"
    s = make_stack(tmp_path, redis_url, scenario)
    yield s
    close_stack(s)


def event(type_: str, event_id: str, data: dict[str, Any], at: str = "2026-03-21T09:00:00Z") -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "test", "type": type_, "time": at, "data": data}


def test_a_short_pick_is_re_picked_from_another_location_and_the_location_counted(triage_stack: Stack) -> None:
    stack = triage_stack
    stack.publish(order_event("SO-1", [("SKU-100", 4)]))
    stack.drain()
    assert stack.state.order("SO-1").lines[0].allocations[0].node == "DC-EAST"
    exception = {
        "task_id": "PICK-1",
        "node": "DC-EAST",
        "sku": "SKU-100",
        "reason": "short_pick",
        "order_id": "SO-1",
        "location": "A-01-01",
        "expected_qty": 4,
        "found_qty": 1,
    }
    resp = stack.publish(event("wms.task.exception", "evt-ex-1", exception))
    stack.drain()
    fix, count, adjust = job_of(stack, resp)["decisions"]
    assert (fix["workflow"], fix["outcome"], fix["status"]) == ("exception_triage", "auto_resolved", "executed")
    assert (count["outcome"], count["status"]) == ("cycle_count", "executed")
    assert (adjust["outcome"], adjust["status"]) == ("stock_correction", "pending_review")
    tasks = stack.state.export_state()["wms"]["tasks"]
    repick = next(t for t in tasks if t["task_type"] == "repick")
    assert (repick["location"], repick["qty"], repick["order_id"]) == ("A-01-03", 3, "SO-1")
    assert any(t["task_type"] == "cycle_count" and t["location"] == "A-01-01" for t in tasks)
    assert stack.state.export_state()["erp"]["adjustments"] == []  # waits for a planner

    # A second short pick in the same location joins the open case: no second count or adjustment.
    stack.publish(order_event("SO-2", [("SKU-100", 2)], event_id="evt-SO-2"))
    stack.drain()
    second = {**exception, "task_id": "PICK-2", "order_id": "SO-2", "expected_qty": 2, "found_qty": 0}
    resp = stack.publish(event("wms.task.exception", "evt-ex-2", second))
    stack.drain()
    [only] = job_of(stack, resp)["decisions"]
    assert only["evidence"]["case"]["grouped"] is True
    assert only["evidence"]["case"]["key"] == "missing:SKU-100@DC-EAST/A-01-01"
    assert sum(t["task_type"] == "cycle_count" for t in stack.state.export_state()["wms"]["tasks"]) == 1


def test_a_payment_failure_holds_the_order_with_the_reason(triage_stack: Stack) -> None:
    stack = triage_stack
    stack.publish(order_event("SO-3", [("SKU-100", 2)]))
    stack.drain()
    resp = stack.publish(event("oms.payment.failed", "evt-pay", {"order_id": "SO-3", "reason": "card declined"}))
    stack.drain()
    [decision] = job_of(stack, resp)["decisions"]
    assert (decision["outcome"], decision["status"]) == ("held", "executed")
    order = stack.state.order("SO-3")
    assert (order.status, order.hold_reason) == ("held", "payment_failed")
    assert order.lines[0].allocations[0].qty == 2  # the reservation is kept for the retry
    assert [t["team"] for t in stack.state.export_state()["tickets"]] == ["finance"]


def test_a_cancellation_releases_the_reservation_and_tickets_the_wave(triage_stack: Stack) -> None:
    stack = triage_stack
    stack.publish(order_event("SO-4", [("SKU-100", 3)]))
    stack.drain()
    assert stack.state.stock("SKU-100")[0].allocated == 3
    # The OMS reports the cancellation but leaves the reservation to Crossdock (no apply_event).
    resp = stack.post_events(event("oms.order.cancelled", "evt-cancel", {"order_id": "SO-4", "reason": "customer"}))
    stack.drain()
    [decision] = job_of(stack, resp)["decisions"]
    assert (decision["outcome"], decision["status"]) == ("cancelled", "executed")
    assert [a["type"] for a in decision["actions"]] == ["release_allocation", "update_order_status", "ticket"]
    order = stack.state.order("SO-4")
    assert order.status == "cancelled" and order.lines[0].allocations == []
    assert stack.state.stock("SKU-100")[0].allocated == 0
    [ticket] = stack.state.export_state()["tickets"]
    assert ticket["team"] == "warehouse" and "WV-SO-4-DC-EAST" in ticket["refs"]


def test_a_tick_proposes_a_priced_transfer_once(triage_stack: Stack) -> None:
    stack = triage_stack
    stack.set_policy(modes={"backorder_prevention": "autonomous", "allocation": "autonomous"})
    resp = stack.publish(event("crossdock.tick", "evt-tick-1", {"now": "2026-03-21T08:00:00Z"}))
    stack.drain()
    decisions = job_of(stack, resp)["decisions"]
    [transfer] = [d for d in decisions if d["outcome"] == "transfer_proposed"]
    assert transfer["subject"] == "SKU-100@DC-EAST" and transfer["status"] == "executed"
    [action] = transfer["actions"]
    assert (action["payload"]["from"], action["payload"]["to"]) == ("DC-WEST", "DC-EAST")
    assert transfer["cost_impact"] == pytest.approx(0.4 * action["payload"]["qty"])
    assert transfer["evidence"]["expected_lost_margin"] > transfer["cost_impact"]
    assert transfer["evidence"]["method"].startswith("SBA")
    [created] = stack.state.export_state()["wms"]["transfers"]
    assert created["qty"] == action["payload"]["qty"] and created["eta"] == action["payload"]["eta"]

    resp = stack.publish(event("crossdock.tick", "evt-tick-2", {"now": "2026-03-21T10:00:00Z"}))
    stack.drain()
    again = [d for d in job_of(stack, resp)["decisions"] if d["outcome"] == "transfer_proposed"]
    assert again == []  # the transfer already created counts as supply
    assert len(stack.state.export_state()["wms"]["transfers"]) == 1
