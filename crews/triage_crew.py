"""A planner's triage crew over a batch of open exceptions.

Runs in a worker, as a queued job (``crossdock.crew.triage``, see ``runtime.pipeline``). Each
exception first goes to the deterministic triage specialist (the same ``route`` every event takes).
With a model configured, a hierarchical crew then looks at the whole batch: the exception-desk
supervisor gets one task per exception (and one customer follow-up per exception tied to an order)
and delegates each to the exception-triage or the customer-service agent. Every answer is validated
against the specialist the task belongs to, whoever wrote it; every proposal, the engine's or an
agent's, goes through the governance gate; a rejected agent output is stored as a ``rejected``
decision. An agent's proposal naming a node, SKU, order or location the systems do not know is
turned into an escalation before it is recorded (``crews.existence``); the engine checks its own.

No CrewAI import at module level: deterministic mode never loads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agents.proposals import RejectedProposal
from crews.existence import checked
from crews.supervisor import route
from domain.decisions import Decision, Proposal, decision_id
from domain.events import CloudEvent
from domain.models import Policy
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


class DecisionRecorder(Protocol):
    """The decision service (``runtime.lifecycle.DecisionService``): gate → save → audit."""

    def record(
        self,
        proposal: Proposal,
        policy: Policy,
        did: str,
        *,
        actor: str,
        default_engine: str,
        event_id: str | None = None,
        job_id: str | None = None,
    ) -> Decision | None: ...

    def save_rejected(self, decision: Decision) -> Decision: ...


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


def triage_batch(
    items: Sequence[OpenException],
    systems: Systems,
    policy: Policy,
    recorder: DecisionRecorder,
    *,
    job_id: str,
    runtime: Any = None,
    hold: Hold | None = None,
) -> list[Decision]:
    """Decide every exception (engine, then agents when ``runtime`` is given); record and return the
    decisions. The engine decides and records under each case's locks; the agents run outside them."""
    hold = hold or (lambda keys: nullcontext())
    decisions: list[Decision] = []
    engine: dict[str, list[Proposal]] = {}
    for item in items:
        event = _event(job_id, item)
        specialist = route(event.type, policy)
        with hold(specialist.lock_keys(event, systems)):
            proposals = specialist.propose(event, systems)
            for i, proposal in enumerate(proposals):
                did = decision_id(event.key, proposal.workflow, i)
                recorded = recorder.record(
                    proposal,
                    policy,
                    did,
                    actor=ACTOR,
                    default_engine=proposal.workflow,
                    event_id=event.id,
                    job_id=job_id,
                )
                if recorded is not None:
                    decisions.append(recorded)
        engine[item.task_id] = proposals
    if runtime is None:
        return decisions
    for did, event_id, agent, result in _agent_decisions(items, engine, job_id, runtime):
        if isinstance(result, RejectedProposal):
            decisions.append(recorder.save_rejected(result.to_decision(did, event_id=event_id, job_id=job_id)))
            continue
        result = checked(result, systems)  # a bin, SKU, node or order the systems do not know: escalated
        with hold(sorted({f"sku:{a.payload['sku']}" for a in result.actions if a.payload.get("sku")})):
            recorded = recorder.record(
                result,
                policy,
                did,
                actor=f"agent:{agent}",
                default_engine=result.workflow,
                event_id=event_id,
                job_id=job_id,
            )
        if recorded is not None:
            decisions.append(recorded)
    return decisions


def _agent_decisions(
    items: Sequence[OpenException], engine: dict[str, list[Proposal]], job_id: str, runtime: Any
) -> list[tuple[str, str, str, Proposal | RejectedProposal]]:
    """The agents' answers, each with its decision id and event id (runs outside every lock)."""
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
    return [
        (decision_id(f"{job_id}#agent", case.agent, n), case.event_id or job_id, case.agent, result)
        for n, (case, result) in enumerate(zip(cases, results, strict=True))
    ]
