"""The chat's order-change policy: what a line-quantity request becomes, and the wave re-check."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from chat.facts import OrderFacts
from chat.policy import build_proposal, order_change_locks, waved_since
from domain.context import LineAllocation, OrderLineView, OrderView, WaveView
from domain.decisions import Action, Decision
from domain.models import Order, OrderLine, Policy


def facts(waves: list[WaveView] | None = None, status: str = "released") -> OrderFacts:
    order = Order(
        id="SO-1",
        customer="CUST-1",
        lines=[OrderLine(line=1, sku="SKU-100", qty=4), OrderLine(line=2, sku="SKU-200", qty=5)],
    )
    view = OrderView(
        order=order,
        status=status,
        lines=[
            OrderLineView(line=1, sku="SKU-100", qty=4, allocations=[LineAllocation(node="DC-EAST", qty=4)]),
            OrderLineView(line=2, sku="SKU-200", qty=5, allocations=[LineAllocation(node="DC-EAST", qty=5)]),
        ],
    )
    return OrderFacts(view=view, waves=waves or [], decisions=[], supply={})


def change(role: str, line: int | None, qty: float | None, of: OrderFacts | None = None, **modes: Any) -> Any:
    return build_proposal(
        "change",
        of or facts(),
        role=role,
        policy=Policy(modes=modes),
        conversation_id="c-1",
        detail="change it",
        line=line,
        qty=qty,
    )


def test_a_planner_lowering_a_line_changes_the_oms_directly() -> None:
    p = change("planner", 2, 3)
    [action] = p.actions
    assert action.name == "oms.update_line_qty"
    assert action.payload == {"order_id": "SO-1", "line": 2, "qty": 3}
    assert (p.outcome, p.review_required) == ("change_line_qty", False)
    assert p.evidence["current_qty"] == 5 and p.evidence["skus"] == ["SKU-100", "SKU-200"]
    assert "line 2 is 5" in p.rationale


def test_a_cs_rep_lowering_a_line_waits_for_review_unless_the_workflow_is_autonomous() -> None:
    p = change("cs_rep", 2, 3)
    assert p.actions[0].name == "oms.update_line_qty"
    assert p.review_required and p.review_reason == "a cs_rep request to change an order needs review"
    auto = change("cs_rep", 2, 3, customer_service="autonomous")
    assert auto.actions[0].name == "oms.update_line_qty" and not auto.review_required


def test_an_increase_zero_same_or_unknown_line_is_a_ticket_with_the_reason() -> None:
    cases = {
        (2, 8): "an increase to 8 needs stock",
        (2, 0): "cancel the order",
        (2, 5): "already 5",
        (9, 1): "SO-1 has no line 9",
        (None, 3): "which line and which quantity",
        (2, None): "which line and which quantity",
    }
    for (line, qty), reason in cases.items():
        p = change("planner", line, qty)
        [action] = p.actions
        assert (action.name, action.payload["team"]) == ("notify.ticket", "customer_service"), (line, qty)
        assert p.outcome == "ticket_opened" and reason in p.rationale and reason in action.payload["summary"]
        assert not p.review_required
    # A cs_rep's change request waits for review as before, even when it only becomes a ticket.
    assert change("cs_rep", 2, 8).review_required


def test_a_line_change_on_a_waved_order_is_a_warehouse_ticket() -> None:
    wave = WaveView(wave_id="WV-1", node="DC-EAST", orders={"SO-1": 2})
    p = change("planner", 2, 3, of=facts([wave]))
    [action] = p.actions
    assert (action.name, action.payload["team"], p.outcome) == ("notify.ticket", "warehouse", "ticket_opened")


def decision(workflow: str, *actions: Action, status: str = "pending_review") -> Decision:
    return Decision(
        id="dec-1",
        event_id=None,
        workflow=workflow,
        subject="SO-1",
        outcome="x",
        confidence=1.0,
        cost_impact=0.0,
        rationale="r",
        evidence={"skus": ["SKU-200", "SKU-100"]},
        actions=list(actions),
        human_review_required=True,
        status=status,
        actor="cs_rep:chat",
        decided_at=datetime(2026, 3, 21, tzinfo=UTC),
    )


class Wms:
    def __init__(self, waves: list[WaveView]) -> None:
        self._waves = waves

    def waves(self, cutoff_after: datetime | None = None, nodes: Any = None) -> list[WaveView]:
        return self._waves


def test_waved_since_covers_a_cancel_and_a_line_change_of_chat_decisions_only() -> None:
    cancel = Action(system="oms", type="update_order_status", payload={"order_id": "SO-1", "status": "cancelled"})
    lower = Action(system="oms", type="update_line_qty", payload={"order_id": "SO-1", "line": 2, "qty": 3})
    hold = Action(system="oms", type="hold_order", payload={"order_id": "SO-1", "reason": "review"})
    waved: Any = Wms([WaveView(wave_id="WV-9", node="DC-EAST", orders={"SO-1": 1})])
    for action in (cancel, lower):
        d = decision("customer_service", action)
        assert waved_since(waved, d) == (
            "SO-1 joined wave WV-9 before the change ran; ask again for a warehouse ticket"
        )
        assert waved_since(cast(Any, Wms([])), d) is None
        assert order_change_locks(d) == ["sku:SKU-100", "sku:SKU-200"]
    # Triage mirrors a cancellation the OMS already made: its own play handles the waves.
    assert waved_since(waved, decision("exception_triage", cancel)) is None
    assert order_change_locks(decision("exception_triage", cancel)) == []
    assert waved_since(waved, decision("customer_service", hold)) is None


def proposal(action: Any, role: str = "cs_rep", of: OrderFacts | None = None, **kw: Any) -> Any:
    return build_proposal(
        action, of if of is not None else facts(), role=role, policy=Policy(), conversation_id="conv-9", **kw
    )


def test_an_expedite_is_a_high_priority_planning_ticket_a_reps_waits_for_review() -> None:
    wave = WaveView(wave_id="WV-1", node="DC-EAST", orders={"SO-1": 2})
    p = proposal("expedite", of=facts([wave]), detail="customer needs it by Friday")
    [action] = p.actions
    assert (p.workflow, p.subject, p.outcome) == ("customer_service", "SO-1", "expedite")
    assert (action.name, action.payload["team"], action.payload["priority"]) == ("notify.ticket", "planning", "high")
    assert "released; on wave WV-1" in action.payload["summary"] and "by Friday" in action.payload["summary"]
    assert p.review_required and p.review_reason == "a cs_rep request to expedite an order needs review"
    assert not proposal("expedite", role="planner").review_required
    # a shipped or cancelled order is past expediting
    assert proposal("expedite", of=facts(status="shipped")).actions == []


def test_a_hand_over_carries_the_transcript_and_is_about_the_conversation() -> None:
    lines = ["Q: where is SO-1?", "A: SO-1 is released.", "Q: can I talk to a human?", "A: I can hand ..."]
    p = proposal("handover", transcript=lines)
    [action] = p.actions
    assert p.subject == "conv-9" and p.outcome == "ticket_opened" and not p.review_required
    assert (action.payload["team"], action.payload["priority"]) == ("customer_service", "high")
    assert action.payload["summary"].endswith("\n".join(lines)) and "SO-1" in action.payload["refs"]
    assert p.evidence["request"] == "handover" and p.evidence["transcript"] == lines
    # without an order in focus it still goes to a person
    alone = build_proposal("handover", None, role="cs_rep", policy=Policy(), conversation_id="conv-9")
    assert alone.actions[0].payload["refs"] == ["conv-9"]
