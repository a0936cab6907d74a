"""The governance gate: observe / propose / autonomous, cost and confidence thresholds."""

from __future__ import annotations

from typing import Any

import pytest

from domain.decisions import Action, Proposal
from domain.governance import gate
from domain.models import Policy

TICKET = Action(system="notify", type="ticket", payload={"team": "planning"})
AUTO: dict[str, Any] = {"order_release": "autonomous"}


def proposal(**overrides: Any) -> Proposal:
    fields: dict[str, Any] = {
        "workflow": "order_release",
        "subject": "SO-1",
        "outcome": "released",
        "confidence": 0.9,
        "cost_impact": 100.0,
        "rationale": "All lines are pickable.",
        "actions": [TICKET],
    }
    return Proposal(**{**fields, **overrides})


def test_executes_an_autonomous_proposal_within_thresholds() -> None:
    result = gate(proposal(), Policy(modes={"order_release": "autonomous"}))

    assert result.status == "executed"
    assert result.human_review_required is False
    assert "autonomous" in result.reason


def test_a_workflow_with_no_configured_mode_observes() -> None:
    result = gate(proposal(), Policy())  # a fresh install: decide and record, write nothing
    assert (result.status, result.reason) == ("observed", "order_release runs in observe mode")


def test_observe_mode_only_records_even_a_proposal_that_asks_for_review() -> None:
    settings = Policy(modes={"order_release": "observe"})

    result = gate(proposal(review_required=True, cost_impact=10_000, confidence=0.1), settings)

    assert result.status == "observed"
    assert result.human_review_required is False
    assert result.reason == "order_release runs in observe mode"


def test_propose_mode_sends_every_proposal_to_a_human() -> None:
    result = gate(proposal(), Policy(modes={"order_release": "propose"}))

    assert result.status == "pending_review"
    assert result.human_review_required is True
    assert result.reason == "order_release runs in propose mode"


def test_modes_apply_per_workflow() -> None:
    settings = Policy(modes={**AUTO, "reconciliation": "propose"})

    assert gate(proposal(), settings).status == "executed"
    assert gate(proposal(workflow="reconciliation"), settings).status == "pending_review"


def test_a_cost_impact_above_the_threshold_needs_review() -> None:
    settings = Policy(modes=AUTO, review_cost_above=1000)

    result = gate(proposal(cost_impact=1000.01), settings)

    assert result.status == "pending_review"
    assert result.reason == "cost impact 1000.01 > 1000"


def test_a_cost_impact_at_the_threshold_executes() -> None:
    assert gate(proposal(cost_impact=1000), Policy(modes=AUTO, review_cost_above=1000)).status == "executed"


def test_a_confidence_below_the_threshold_needs_review() -> None:
    result = gate(proposal(confidence=0.69), Policy(modes=AUTO, review_confidence_below=0.7))

    assert result.status == "pending_review"
    assert result.human_review_required is True
    assert result.reason == "confidence 0.69 < 0.7"


def test_a_confidence_at_the_threshold_executes() -> None:
    assert gate(proposal(confidence=0.7), Policy(modes=AUTO, review_confidence_below=0.7)).status == "executed"


def test_an_engine_can_insist_on_review_with_its_reason() -> None:
    result = gate(proposal(review_required=True, review_reason="a promise date goes to a planner"), Policy(modes=AUTO))

    assert result.status == "pending_review"
    assert result.reason == "a promise date goes to a planner"


def test_an_engine_review_request_without_a_reason_gets_a_generic_one() -> None:
    assert gate(proposal(review_required=True), Policy(modes=AUTO)).reason == "the engine asked for review"


def test_every_reason_for_review_is_listed() -> None:
    settings = Policy(modes={"order_release": "propose"}, review_cost_above=10, review_confidence_below=0.95)

    result = gate(proposal(review_required=True, review_reason="backorder"), settings)

    assert result.reason.split("; ") == [
        "order_release runs in propose mode",
        "backorder",
        "cost impact 100 > 10",
        "confidence 0.9 < 0.95",
    ]


@pytest.mark.parametrize("mode", ["observe", "propose", "autonomous"])
def test_a_proposal_with_nothing_to_execute_is_only_observed(mode: str) -> None:
    result = gate(proposal(actions=[], review_required=True), Policy(modes={"order_release": mode}))

    assert result.status == "observed"
    assert result.human_review_required is False
    assert result.reason == "nothing to execute"
