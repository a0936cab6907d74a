"""Decisions and actions: what an engine proposes and what connectors execute.

A decision's id is derived from the event and workflow that produced it, and each
action's idempotency key from the decision id and the action's position, so that
redelivering an event reproduces the same keys and never applies an effect twice.
"""

from __future__ import annotations

import hashlib
import json
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
# The lifecycle (README "Decision lifecycle"). Extensions to the report contract's statuses:
# "executing" (approved, actions under way; it ends executed or failed) and "awaiting_planner" (a
# planner rejected the plan and the engines have nothing else to offer: a person must decide; the
# report shows it as pending_review). An approval that finds the facts moved ends the proposal
# ``superseded`` by the fresh one, with ``review.kind == "stale"``.
DecisionStatus = Literal[
    "executed",
    "pending_review",
    "observed",
    "rejected",
    "failed",
    "superseded",
    "executing",
    "awaiting_planner",
]
# At most one decision per live key is in one of these states (a database constraint).
LIVE_STATUSES: frozenset[str] = frozenset({"pending_review", "awaiting_planner"})
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
    # The lifecycle's links and records (extensions): the proposal this one replaced and the one
    # that replaced it; what the decision stood on (``runtime.premises``); how a person reviewed
    # it; what was compensated when it failed half-way.
    supersedes: str | None = None
    superseded_by: str | None = None
    facts: dict[str, Any] = {}
    review: dict[str, Any] | None = None
    undone: list[dict[str, Any]] = []

    @property
    def live_key(self) -> str:
        return live_key(self.workflow, self.subject, self.outcome)

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
            "status": "pending_review" if self.status == "awaiting_planner" else self.status,
            "rationale": self.rationale,
            "evidence": self.evidence,
            "actions": [a.model_dump() for a in self.actions],
        }


# Release and re-sourcing decide the same thing about an order: one live proposal between them.
_FAMILY = {"allocation": "order_release"}


def live_key(workflow: str, subject: str, outcome: str = "") -> str:
    """The key under which at most one proposal is live: the workflow (family) and the subject.

    A release that is short comes as two proposals on one order, the release of what is there and
    the backorder of the rest (``decide_release``): they act on different units, so the backorder
    half has a key of its own and does not replace the release half."""
    part = ":backorder" if outcome == "backordered" else ""
    return f"{_FAMILY.get(workflow, workflow)}:{subject}{part}"


# Payload fields that follow from the clock or the event rather than from the plan's substance.
_VOLATILE = frozenset({"waveId", "priorityScore", "cutoffTime", "promise_date", "eta", "summary"})


def _material(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _material(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_material(v) for v in value]
    return value


def plan_signature(actions: list[Action]) -> str:
    """A hash of what a plan would do (actions and their material payload, not their keys, wave
    ids or dates): two plans with one signature reserve, move and change the same things."""
    body = json.dumps(
        [[a.name, _material(a.payload)] for a in actions], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(body.encode()).hexdigest()[:24]


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
