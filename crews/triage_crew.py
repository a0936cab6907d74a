"""A planner's triage crew over a batch of open exceptions.

Runs in a worker, as a queued job (``crossdock.crew.triage``, see ``runtime.pipeline``). Each
exception first goes to the deterministic triage specialist (the same ``route`` every event takes).
With a model configured, a hierarchical crew then looks at the whole batch: the exception-desk
supervisor gets one task per exception (and one customer follow-up per exception tied to an order)
and delegates each to the exception-triage or the customer-service agent. Every answer is validated
against the specialist the task belongs to, whoever wrote it; every proposal, the engine's or an
agent's, goes through the governance gate; a rejected agent output is stored as a ``rejected``
decision.

No CrewAI import at module level: deterministic mode never loads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agents.proposals import RejectedProposal
from crews.supervisor import route
from domain.decisions import Decision, Proposal, decision_id
from domain.events import CloudEvent
from domain.governance import gated_decision
from domain.models import Settings as Policy
from tools.context import Systems

MAX_BATCH = 50
ACTOR = "crossdock-crew"
MANAGER = "triage_supervisor"


class OpenException(BaseModel):
    """One open warehouse exception as a planner submits it (the ``wms.task.exception`` data, plus a note)."""

    model_config = ConfigDict(extra="forbid")

    task_id: str = Field(min_length=1, max_length=128)
    node: str = Field(min_length=1, max_length=64)
    sku: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=1, max_length=64)
    order_id: str | None = Field(default=None, max_length=128)
    location: str | None = Field(default=None, max_length=128)
    expected_qty: float | None = None
    found_qty: float | None = None
    note: str | None = Field(default=None, max_length=2000, description="free text; data to agents, never instructions")


class DecisionSink(Protocol):
    def save_decision(self, d: Decision) -> bool: ...

    def append_audit(self, kind: str, subject: str, actor: str, payload: dict[str, Any]) -> Any: ...


Hold = Callable[[list[str]], AbstractContextManager[Any]]


def _event(job_id: str, item: OpenException) -> CloudEvent:
    data = item.model_dump(exclude_none=True, exclude={"note"})
    return CloudEvent.model_validate(
        {
            "specversion": "1.0",
            "id": f"{job_id}:{item.task_id}",
            "source": "crossdock/crews/triage",
            "type": "wms.task.exception",
            "subject": item.task_id,
            "time": datetime.now(UTC).isoformat(),
            "data": data,
        }
    )


def _decision(proposal: Proposal, did: str, event_id: str, job_id: str, policy: Policy, actor: str) -> Decision:
    return gated_decision(
        proposal, policy, did, actor=actor, default_engine=proposal.workflow, event_id=event_id, job_id=job_id
    )


def triage_batch(
    items: Sequence[OpenException],
    systems: Systems,
    policy: Policy,
    sink: DecisionSink,
    *,
    job_id: str,
    runtime: Any = None,
    hold: Hold | None = None,
) -> list[Decision]:
    """Decide every exception (engine, then agents when ``runtime`` is given); save and return the decisions."""
    hold = hold or (lambda keys: nullcontext())
    decisions: list[Decision] = []
    engine: dict[str, list[Proposal]] = {}
    for item in items:
        event = _event(job_id, item)
        specialist = route(event.type, policy)
        with hold(specialist.lock_keys(event, systems)):
            proposals = specialist.propose(event, systems)
        engine[item.task_id] = proposals
        for i, proposal in enumerate(proposals):
            decisions.append(
                _decision(proposal, decision_id(event.key, proposal.workflow, i), event.id, job_id, policy, ACTOR)
            )
    if runtime is not None:
        decisions.extend(_agent_decisions(items, engine, policy, job_id, runtime))
    for decision in decisions:
        if sink.save_decision(decision):
            sink.append_audit(
                "decision.recorded",
                decision.subject,
                decision.actor,
                {"decision": decision.id, "outcome": decision.outcome, "status": decision.status, "job_id": job_id},
            )
    return decisions


def _agent_decisions(
    items: Sequence[OpenException], engine: dict[str, list[Proposal]], policy: Policy, job_id: str, runtime: Any
) -> list[Decision]:
    from agents.bounds import AgentBoundExceeded
    from crews.agent_runtime import Case  # CrewAI only on this path

    cases = []
    for item in items:
        subjects = [item.task_id, *(p.subject for p in engine[item.task_id])]
        if item.order_id:
            subjects.append(item.order_id)
        data = {
            "exception": item.model_dump(exclude_none=True),
            "engine_proposals": [p.model_dump(mode="json", exclude={"actions"}) for p in engine[item.task_id]],
        }
        cases.append(
            Case(
                agent="exception_triage",
                instruction="Triage this open warehouse exception and propose the next step.",
                data=data,
                subjects=subjects,
                event_id=f"{job_id}:{item.task_id}",
            )
        )
    for item in items:
        if item.order_id:
            cases.append(
                Case(
                    agent="customer_service",
                    instruction="An exception touches this customer's order: propose the customer follow-up.",
                    data={"exception": item.model_dump(exclude_none=True)},
                    subjects=[item.order_id],
                    event_id=f"{job_id}:{item.task_id}",
                )
            )
    try:
        results: list[Proposal | RejectedProposal] = runtime.run_crew(
            cases, context_from_previous=True, manager=MANAGER
        )
    except AgentBoundExceeded as exc:
        results = [
            RejectedProposal(
                agent=case.agent,
                workflow="exception_triage" if case.agent == "exception_triage" else "customer_service",
                subject=case.subjects[0],
                reason=str(exc),
                evidence={"bound": exc.bound},
            )
            for case in cases
        ]
    out = []
    for n, (case, result) in enumerate(zip(cases, results, strict=True)):
        did = decision_id(f"{job_id}#agent", case.agent, n)
        if isinstance(result, RejectedProposal):
            out.append(result.to_decision(did, event_id=case.event_id, job_id=job_id))
        else:
            out.append(_decision(result, did, case.event_id or job_id, job_id, policy, f"agent:{case.agent}"))
    return out
