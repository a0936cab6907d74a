"""Decisions and actions: what an engine proposes and what connectors execute.

A decision's id is derived from the event and workflow that produced it, and each
action's idempotency key from the decision id and the action's position, so that
redelivering an event reproduces the same keys and never applies an effect twice.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Workflow = Literal[
    "order_release",
    "allocation",
    "reconciliation",
    "discrepancy",
    "exception_triage",
    "backorder_prevention",
    "customer_service",
]
# "executing" is internal (extension): approved, actions under way; it ends as executed or failed.
DecisionStatus = Literal["executed", "pending_review", "observed", "rejected", "failed", "executing"]
System = Literal["wms", "erp", "oms", "notify"]
Mode = Literal["observe", "propose", "autonomous"]


class Action(BaseModel):
    """One write to one system; ``system.type`` follows the contract's action vocabulary."""

    model_config = ConfigDict(extra="forbid")

    system: System
    type: str
    payload: dict[str, Any]
    idempotency_key: str = ""

    @property
    def name(self) -> str:
        return f"{self.system}.{self.type}"


class Proposal(BaseModel):
    """What an engine (or an agent) proposes; governance turns it into a Decision."""

    workflow: Workflow
    subject: str
    outcome: str
    confidence: float = Field(ge=0, le=1)
    cost_impact: float = 0.0
    rationale: str
    evidence: dict[str, Any] = {}
    actions: list[Action] = []
    # An engine may insist on a human (e.g. a promise date given to a customer).
    review_required: bool = False
    review_reason: str | None = None


class Decision(BaseModel):
    """A recorded decision, as it appears in the report and in ``GET /v1/decisions``."""

    id: str
    event_id: str | None
    job_id: str | None = None
    workflow: Workflow
    subject: str
    outcome: str
    confidence: float
    cost_impact: float
    human_review_required: bool
    status: DecisionStatus
    rationale: str
    evidence: dict[str, Any]
    actions: list[Action]
    engine_version: str = ""
    actor: str = "engine"
    created_at: datetime | None = None
    decided_at: datetime | None = None
    accepted_at: datetime | None = None
    error: str | None = None

    def report_dict(self) -> dict[str, Any]:
        """The decision in the shape of the report contract."""
        return {
            "id": self.id,
            "event_id": self.event_id,
            "workflow": self.workflow,
            "subject": self.subject,
            "outcome": self.outcome,
            "confidence": round(self.confidence, 4),
            "cost_impact": round(self.cost_impact, 2),
            "human_review_required": self.human_review_required,
            "status": self.status,
            "rationale": self.rationale,
            "evidence": self.evidence,
            "actions": [a.model_dump() for a in self.actions],
        }


def decision_id(event_key: str, workflow: str, index: int = 0) -> str:
    """A stable id for the index-th decision a workflow takes on an event."""
    digest = hashlib.sha256(f"{event_key}#{workflow}#{index}".encode()).hexdigest()
    return f"dec-{digest[:20]}"


def with_idempotency_keys(decision_id_: str, actions: list[Action]) -> list[Action]:
    """Give each action a key derived from its decision and position."""
    keyed = []
    for i, action in enumerate(actions):
        key = hashlib.sha256(f"{decision_id_}#{i}#{action.name}".encode()).hexdigest()[:32]
        keyed.append(action.model_copy(update={"idempotency_key": f"{decision_id_}-{i}-{key[:12]}"}))
    return keyed


def ticket(team: str, subject: str, summary: str, refs: list[str], priority: str = "normal") -> Action:
    """A ``notify.ticket`` action: a packaged ticket for a team's queue."""
    return Action(
        system="notify",
        type="ticket",
        payload={"team": team, "subject": subject, "summary": summary, "priority": priority, "refs": refs},
    )
