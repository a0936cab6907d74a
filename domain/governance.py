"""Governance gate: decide whether a proposal executes now, waits for a human, or is recorded.

Pure function of the proposal and the policy settings, so every rule is unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import get_args

from domain.decisions import Decision, DecisionStatus, Proposal, Workflow, with_idempotency_keys
from domain.models import Mode, Policy

# A workflow the policy does not name runs in observe mode: a fresh install decides and records
# every workflow and writes nothing. Propose, then autonomous, is an admin's explicit act
# (``PATCH /v1/policy``), recorded as a policy version in the audit chain.
DEFAULT_MODE: Mode = "observe"
WORKFLOWS: tuple[Workflow, ...] = get_args(Workflow)


def mode_of(settings: Policy, workflow: Workflow, outcome: str | None = None) -> Mode:
    """The mode a workflow (or one of its outcomes) runs in under ``settings``: the pair's own mode
    (``outcome_modes["workflow/outcome"]``, set by promotion and demotion) if it has one, else the
    workflow's (``DEFAULT_MODE`` when it names none)."""
    if outcome is not None:
        pair = settings.outcome_modes.get(f"{workflow}/{outcome}")
        if pair is not None:
            return pair
    return settings.modes.get(workflow, DEFAULT_MODE)


@dataclass(frozen=True)
class GateResult:
    status: DecisionStatus
    human_review_required: bool
    reason: str


def gate(proposal: Proposal, settings: Policy) -> GateResult:
    """Apply the workflow's mode and the cost/confidence thresholds."""
    mode = mode_of(settings, proposal.workflow, proposal.outcome)
    pair = f"{proposal.workflow}/{proposal.outcome}"
    who = pair if pair in settings.outcome_modes else proposal.workflow
    if not proposal.actions:
        return GateResult("observed", False, "nothing to execute")
    if mode == "observe":
        return GateResult("observed", False, f"{who} runs in observe mode")
    reasons = []
    if mode == "propose":
        reasons.append(f"{who} runs in propose mode")
    if proposal.review_required:
        reasons.append(proposal.review_reason or "the engine asked for review")
    if proposal.cost_impact > settings.review_cost_above:
        reasons.append(f"cost impact {proposal.cost_impact:g} > {settings.review_cost_above:g}")
    if proposal.confidence < settings.review_confidence_below:
        reasons.append(f"confidence {proposal.confidence:g} < {settings.review_confidence_below:g}")
    if reasons:
        return GateResult("pending_review", True, "; ".join(reasons))
    return GateResult("executed", False, f"{who} is autonomous and within thresholds")


def gated_decision(
    proposal: Proposal,
    settings: Policy,
    decision_id: str,
    *,
    actor: str,
    default_engine: str,
    event_id: str | None = None,
    job_id: str | None = None,
    accepted_at: datetime | None = None,
) -> Decision:
    """The decision a proposal becomes once the gate has ruled: ``executing`` when it may run now
    (the executor ends it executed or failed), else ``pending_review`` or ``observed``; the gate's
    reason is kept in the evidence. Every path that records decisions builds them here; the
    decision service (``runtime.lifecycle``) cites the SOP on the proposal first
    (``knowledge.citations``), so the domain reads no files."""
    verdict = gate(proposal, settings)
    now = datetime.now(UTC)
    return Decision(
        id=decision_id,
        event_id=event_id,
        job_id=job_id,
        workflow=proposal.workflow,
        subject=proposal.subject,
        outcome=proposal.outcome,
        confidence=proposal.confidence,
        cost_impact=proposal.cost_impact,
        human_review_required=verdict.human_review_required,
        status="executing" if verdict.status == "executed" else verdict.status,
        rationale=proposal.rationale,
        evidence={**proposal.evidence, "governance": verdict.reason},
        actions=with_idempotency_keys(decision_id, proposal.actions),
        engine_version=str(proposal.evidence.get("engine", default_engine)),
        actor=actor,
        created_at=now,
        decided_at=now,
        accepted_at=accepted_at,
    )
