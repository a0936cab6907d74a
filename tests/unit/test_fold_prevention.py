"""Backorder-prevention proposals a planner reads as a list are folded into one decision per tick."""

from __future__ import annotations

from crews.backlog import fold_prevention
from domain.decisions import Action, Proposal


def proposal(outcome: str, subject: str, cost: float = 0.0, actions: list[Action] | None = None) -> Proposal:
    return Proposal(
        workflow="backorder_prevention",
        subject=subject,
        outcome=outcome,
        confidence=0.8,
        cost_impact=cost,
        rationale=f"{subject} runs short",
        actions=actions or [],
        review_required=bool(actions),
    )


def raise_ss(sku: str) -> Action:
    return Action(system="erp", type="update_safety_stock", payload={"sku": sku, "node": "N1", "qty": 5})


def test_transfers_stay_single_and_lists_are_folded() -> None:
    transfer = proposal(
        "transfer_proposed", "SKU-1@N1", 12.0, [Action(system="wms", type="create_transfer", payload={})]
    )
    folded = fold_prevention(
        [
            transfer,
            proposal("stockout_announced", "SKU-2@N1"),
            proposal("stockout_announced", "SKU-3@N1"),
            proposal("safety_stock_proposed", "SKU-4@N1", 3.0, [raise_ss("SKU-4")]),
            proposal("safety_stock_proposed", "SKU-5@N1", 4.0, [raise_ss("SKU-5")]),
        ]
    )
    assert [p.subject for p in folded] == ["SKU-1@N1", "stockouts", "safety-stock"]
    stockouts, safety = folded[1], folded[2]
    assert stockouts.actions == [] and [i["subject"] for i in stockouts.evidence["items"]] == ["SKU-2@N1", "SKU-3@N1"]
    assert [a.payload["sku"] for a in safety.actions] == ["SKU-4", "SKU-5"]
    assert safety.cost_impact == 7.0 and safety.review_required


def test_nothing_to_fold_is_nothing() -> None:
    assert fold_prevention([]) == []
