"""Governance gate: decide whether a proposal executes now, waits for a human, or is recorded.

Pure function of the proposal and the policy settings, so every rule is unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.decisions import DecisionStatus, Proposal
from domain.models import Settings

DEFAULT_MODE = "autonomous"


@dataclass(frozen=True)
class GateResult:
    status: DecisionStatus
    human_review_required: bool
    reason: str


def gate(proposal: Proposal, settings: Settings) -> GateResult:
    """Apply the workflow's mode and the cost/confidence thresholds."""
    mode = settings.modes.get(proposal.workflow, DEFAULT_MODE)
    if not proposal.actions:
        return GateResult("observed", False, "nothing to execute")
    if mode == "observe":
        return GateResult("observed", False, f"{proposal.workflow} runs in observe mode")
    reasons = []
    if mode == "propose":
        reasons.append(f"{proposal.workflow} runs in propose mode")
    if proposal.review_required:
        reasons.append(proposal.review_reason or "the engine asked for review")
    if proposal.cost_impact > settings.review_cost_above:
        reasons.append(f"cost impact {proposal.cost_impact:g} > {settings.review_cost_above:g}")
    if proposal.confidence < settings.review_confidence_below:
        reasons.append(f"confidence {proposal.confidence:g} < {settings.review_confidence_below:g}")
    if reasons:
        return GateResult("pending_review", True, "; ".join(reasons))
    return GateResult("executed", False, f"{proposal.workflow} is autonomous and within thresholds")
