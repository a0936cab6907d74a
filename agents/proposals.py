"""What an agent may output (``AgentProposal``), the rules it is checked against, and the
conversion to a domain ``Proposal`` that then goes through the same governance gate.

A proposal that fails a rule is never converted: it becomes a ``RejectedProposal`` the caller
stores (as a ``rejected`` decision with no actions) and audits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.specs import AgentSpec
from domain.decisions import Action, Decision, Proposal, Workflow

QTY_KEYS = ("qty", "quantity", "qty_delta")
# Payload fields that name a record: it must be one of the case's subjects. (A ticket's
# ``subject`` is its title, free text; the records a ticket is about are its ``refs``.)
REF_KEYS = ("order_id",)
MAX_ACTIONS = 20


class ProposedAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: Literal["wms", "erp", "oms", "notify"]
    type: str = Field(min_length=1, max_length=64)
    payload: dict[str, Any] = {}


class AgentProposal(BaseModel):
    """The structured output every agent task must produce (CrewAI ``output_pydantic``)."""

    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(description="the workflow this proposal belongs to")
    subject: str = Field(min_length=1, description="the order, SKU@node, PO or exception id it is about")
    outcome: str = Field(min_length=1, max_length=64, description="short verb: allocate, hold, escalate, ...")
    confidence: float = Field(ge=0, le=1)
    rationale: str = Field(min_length=1, max_length=4000)
    cost_impact: float = 0.0
    actions: list[ProposedAction] = Field(default_factory=list, max_length=MAX_ACTIONS)


class ProposalRejected(ValueError):
    """An agent's output broke one of Crossdock's rules."""


@dataclass
class RejectedProposal:
    """A proposal that failed validation: stored as a ``rejected`` decision, never executed."""

    agent: str
    workflow: Workflow
    subject: str
    reason: str
    raw: Any = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_decision(self, decision_id: str, *, event_id: str | None = None, job_id: str | None = None) -> Decision:
        now = datetime.now(UTC)
        raw = self.raw.model_dump() if isinstance(self.raw, BaseModel) else self.raw
        return Decision(
            id=decision_id,
            event_id=event_id,
            job_id=job_id,
            workflow=self.workflow,
            subject=self.subject,
            outcome="rejected_agent_output",
            confidence=0.0,
            cost_impact=0.0,
            human_review_required=False,
            status="rejected",
            rationale=f"Agent {self.agent} output rejected: {self.reason}",
            evidence={**self.evidence, "agent": self.agent, "proposed": _clip(raw)},
            actions=[],
            engine_version=f"agent:{self.agent}",
            actor=f"agent:{self.agent}",
            created_at=now,
            decided_at=now,
            error=self.reason,
        )


def _clip(value: Any, limit: int = 4000) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "…"
    return value


def parse_output(raw: Any) -> AgentProposal:
    """An ``AgentProposal`` from whatever the task returned (model, dict or JSON text)."""
    try:
        if isinstance(raw, AgentProposal):
            return raw
        if isinstance(raw, BaseModel):
            return AgentProposal.model_validate(raw.model_dump())
        if isinstance(raw, dict):
            return AgentProposal.model_validate(raw)
        if isinstance(raw, str):
            return AgentProposal.model_validate_json(_strip_fences(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "output"
        raise ProposalRejected(f"malformed output: {where}: {first['msg']}") from None
    raise ProposalRejected(f"malformed output: {type(raw).__name__}")


def _strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[text.find("\n") + 1 :] if "\n" in text else text
    return text


def validate(spec: AgentSpec, proposal: AgentProposal, known_subjects: Iterable[str]) -> tuple[Workflow, list[Action]]:
    """Apply the rules; return the proposal's workflow and actions, or raise ``ProposalRejected``."""
    known = set(known_subjects)
    if proposal.workflow not in spec.workflows:
        raise ProposalRejected(f"workflow {proposal.workflow!r} is not allowed for agent {spec.name}")
    if proposal.subject not in known:
        raise ProposalRejected(f"unknown subject {proposal.subject!r}")
    actions = []
    for i, pa in enumerate(proposal.actions):
        name = f"{pa.system}.{pa.type}"
        if name not in spec.actions:
            raise ProposalRejected(f"action {i} {name!r} is not allowed for agent {spec.name}")
        for key in QTY_KEYS:
            if key in pa.payload:
                value = pa.payload[key]
                if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                    raise ProposalRejected(f"action {i} {name}: {key} must be a positive number")
        for key in REF_KEYS:
            ref = pa.payload.get(key)
            if ref is not None and str(ref) not in known:
                raise ProposalRejected(f"action {i} {name}: unknown {key} {ref!r}")
        refs = pa.payload.get("refs", [])
        if name == "notify.ticket":
            if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
                raise ProposalRejected(f"action {i} {name}: refs must be a list of record ids")
            unknown = [r for r in refs if r not in known]
            if unknown:
                raise ProposalRejected(f"action {i} {name}: unknown refs {unknown}")
        actions.append(Action(system=pa.system, type=pa.type, payload=pa.payload))
    return proposal.workflow, actions  # type: ignore[return-value]  # membership checked above


def to_proposal(
    spec: AgentSpec,
    raw: Any,
    known_subjects: Iterable[str],
    *,
    model: str,
    review_required: bool = True,
    usage: dict[str, Any] | None = None,
) -> Proposal | RejectedProposal:
    """Validate an agent's output and convert it; a broken one comes back as ``RejectedProposal``."""
    known = list(known_subjects)
    fallback_subject = known[0] if known else "unknown"
    try:
        parsed = parse_output(raw)
        workflow, actions = validate(spec, parsed, known)
    except ProposalRejected as exc:
        subject = fallback_subject
        if isinstance(raw, AgentProposal) and raw.subject in known:
            subject = raw.subject
        return RejectedProposal(
            agent=spec.name,
            workflow=_primary(spec),
            subject=subject,
            reason=str(exc),
            raw=raw,
            evidence={"model": model, **(usage or {})},
        )
    return Proposal(
        workflow=workflow,
        subject=parsed.subject,
        outcome=parsed.outcome,
        confidence=parsed.confidence,
        cost_impact=parsed.cost_impact,
        rationale=parsed.rationale,
        evidence={"engine": f"agent:{spec.name}", "agent": spec.name, "model": model, **(usage or {})},
        actions=actions,
        review_required=review_required and bool(actions),
        review_reason=f"proposed by the {spec.name} agent ({model})" if review_required and actions else None,
    )


def _primary(spec: AgentSpec) -> Workflow:
    return sorted(spec.workflows)[0]  # type: ignore[return-value]  # spec workflows are domain workflows
