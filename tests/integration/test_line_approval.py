"""Per-line approval of a grouped decision (issue 19.4): a planner approves some raises of a
safety-stock list; only those run, the rest are recorded as declined, in the decision and the
audit chain. Real Redis, store, API and twin (the example scenario)."""

from __future__ import annotations

from typing import Any

from domain.decisions import Action, Proposal
from tests.integration.conftest import Stack


def raise_(sku: str, node: str, qty: float) -> Action:
    return Action(system="erp", type="update_safety_stock", payload={"sku": sku, "node": node, "qty": qty})


def grouped(stack: Stack) -> dict[str, Any]:
    """A pending safety-stock list of two raises, recorded through the decision service."""
    stack.set_policy(modes={"backorder_prevention": "propose"})
    proposal = Proposal(
        workflow="backorder_prevention",
        subject="safety-stock",
        outcome="safety_stock_proposed",
        confidence=0.7,
        cost_impact=300.0,
        rationale="2 SKU@node pair(s) keep less than their days of cover in reserve: SKU-100@DC-EAST, SKU-200@DC-EAST.",
        actions=[raise_("SKU-100", "DC-EAST", 40), raise_("SKU-200", "DC-EAST", 25)],
        review_required=True,
        review_reason="safety stock ties up capital",
    )
    c = stack.container
    recorded = c.pipeline.decisions.record(
        proposal, c.store.get_policy(), "dec-lines-1", actor="crossdock-engine", default_engine="forecast"
    )
    assert recorded is not None and recorded.status == "pending_review"
    return recorded.model_dump(mode="json")


def safety(stack: Stack, sku: str) -> dict[str, float]:
    return dict(stack.state.sku(sku).safety_stock)


def test_approving_some_lines_runs_only_those_and_records_the_rest_as_declined(stack: Stack) -> None:
    d = grouped(stack)
    before = safety(stack, "SKU-100")
    planner = stack.headers("planner")
    for lines, why in (([], "at least one line"), ([2], "not actions"), ([-1], "not actions")):
        resp = stack.client.post(f"/v1/decisions/{d['id']}/approve", json={"lines": lines}, headers=planner)
        assert resp.status_code == 422 and why in resp.text, (lines, resp.text)
    resp = stack.client.post(
        f"/v1/decisions/{d['id']}/approve", json={"lines": [1], "note": "SKU-100 sells out anyway"}, headers=planner
    )
    assert resp.status_code == 200, resp.text
    done = resp.json()
    assert done["status"] == "executed"
    assert [a["payload"]["sku"] for a in done["actions"]] == ["SKU-200"]
    review = done["review"]
    assert review["kind"] == "approved_with_changes" and review["lines"] == [1]
    assert [(x["line"], x["action"]["payload"]["sku"]) for x in review["declined"]] == [(0, "SKU-100")]
    # Only the approved raise reached the ERP.
    assert safety(stack, "SKU-200")["DC-EAST"] == 25
    assert safety(stack, "SKU-100") == before
    [entry] = stack.container.store.audit(subject="safety-stock", kind="decision.approved")
    assert entry.payload["lines"] == [1] and entry.payload["declined"] == [0]


def test_approving_every_line_is_a_plain_approval(stack: Stack) -> None:
    d = grouped(stack)
    resp = stack.client.post(
        f"/v1/decisions/{d['id']}/approve", json={"lines": [1, 0, 1]}, headers=stack.headers("planner")
    )
    assert resp.status_code == 200, resp.text
    done = resp.json()
    assert done["review"]["kind"] == "approved" and len(done["actions"]) == 2
    assert safety(stack, "SKU-100")["DC-EAST"] == 40 and safety(stack, "SKU-200")["DC-EAST"] == 25
