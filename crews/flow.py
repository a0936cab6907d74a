"""The supervisor as a CrewAI Flow: route by event type, run the deterministic specialist, and
call an agent only when a model is configured and the case needs judgement.

Routing is the same code as ``crews.supervisor.route`` (the ``@router`` returns the workflow of
``WORKFLOW_BY_TYPE``; the listener asks ``route`` for the specialist), so text inside an event can
never pick another path. Without ``CROSSDOCK_LLM_MODEL`` the flow is the deterministic pipeline.
Agent proposals are added beside the engine's, never instead of them, and are gated like them.

Importing this module imports CrewAI; the worker's hot path (``runtime.pipeline``) does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domain.extras import needs
from tools.offline import crewai_import

with needs("agents"), crewai_import():
    from crewai.flow.flow import Flow, listen, or_, router, start
from pydantic import BaseModel, PrivateAttr  # noqa: E402

from agents.bounds import AgentBoundExceeded  # noqa: E402
from agents.proposals import RejectedProposal  # noqa: E402
from agents.settings import AgentSettings, llm_mode  # noqa: E402
from crews.supervisor import WORKFLOW_BY_TYPE, Specialist, route  # noqa: E402
from domain.decisions import Proposal  # noqa: E402
from domain.events import CloudEvent  # noqa: E402
from domain.models import Settings as Policy  # noqa: E402
from tools.context import Systems  # noqa: E402

WORKFLOWS = sorted(set(WORKFLOW_BY_TYPE.values()))

# Which agent judges a case of each workflow.
AGENT_FOR_WORKFLOW = {
    "order_release": "allocation",
    "allocation": "allocation",
    "reconciliation": "reconciliation",
    "discrepancy": "reconciliation",
    "exception_triage": "exception_triage",
    "backorder_prevention": "backorder_prevention",
    "customer_service": "customer_service",
}

INSTRUCTION = {
    "allocation": "The allocation engine could not settle this order on its own. Review it and propose.",
    "reconciliation": "Review this inbound or stock discrepancy case and propose the follow-up.",
    "exception_triage": "Triage this warehouse exception and propose the next step.",
    "backorder_prevention": "Assess the stockout risk in this case and propose what to do.",
    "customer_service": "Work out what the customer needs and propose the follow-up.",
}


def judgement_reason(event: CloudEvent, proposals: list[Proposal]) -> str | None:
    """Why a case needs an agent's judgement, or None when the engines settled it."""
    if any(p.evidence.get("ambiguous") for p in proposals):
        return "an engine proposal is flagged ambiguous"
    note = event.data.get("note") if isinstance(event.data, dict) else None
    if isinstance(note, str) and note.strip():
        return "the order carries a free-text note"
    if event.type == "wms.task.exception" and all(p.outcome == "no_action" for p in proposals):
        return "an exception with no playbook answer"
    return None


def subjects_of(event: CloudEvent, proposals: list[Proposal]) -> list[str]:
    """The subjects an agent may propose about: the event's and those the engines named."""
    out: list[str] = []
    data = event.data if isinstance(event.data, dict) else {}
    for value in (event.subject, data.get("id"), data.get("order_id"), *(p.subject for p in proposals)):
        if isinstance(value, str) and value and value not in out:
            out.append(value)
    return out


def judge(event: CloudEvent, proposals: list[Proposal], runtime: Any, reason: str) -> list[Proposal | RejectedProposal]:
    """One agent run on the case; a bound breach comes back as a rejected record (already audited)."""
    from crews.agent_runtime import Case  # CrewAI agents only on this path

    workflow = WORKFLOW_BY_TYPE[event.type]
    agent = AGENT_FOR_WORKFLOW[workflow]
    case = Case(
        agent=agent,
        instruction=f"{INSTRUCTION[agent]} Why you are asked: {reason}.",
        data={
            "event": {"id": event.id, "type": event.type, "source": event.source, "subject": event.subject},
            "data": event.data,
            "engine_proposals": [p.model_dump(mode="json", exclude={"actions"}) for p in proposals],
        },
        subjects=subjects_of(event, proposals),
        event_id=event.id,
    )
    return [runtime.run_safely(case)]


class SupervisorState(BaseModel):
    event: dict[str, Any] = {}
    workflow: str = ""
    specialist: str = ""
    mode: str = "deterministic"
    judgement: str | None = None
    proposals: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []


@dataclass
class SupervisorResult:
    workflow: str
    specialist: str
    mode: str
    proposals: list[Proposal]
    rejected: list[RejectedProposal] = field(default_factory=list)
    judgement: str | None = None


class SupervisorFlow(Flow[SupervisorState]):
    """start → router(event type) → specialist → (agent, when configured and needed)."""

    _skip_auto_memory = True  # a private CrewAI flag: no LanceDB memory per flow (pinned, tested)
    _systems: Any = PrivateAttr(default=None)
    _policy: Any = PrivateAttr(default=None)
    _runtime: Any = PrivateAttr(default=None)
    _specialist: Any = PrivateAttr(default=None)
    _proposals: list[Proposal] = PrivateAttr(default_factory=list)
    _rejected: list[RejectedProposal] = PrivateAttr(default_factory=list)

    def bind(self, systems: Systems, policy: Policy, runtime: Any = None) -> SupervisorFlow:
        self._systems, self._policy, self._runtime = systems, policy, runtime
        return self

    def _event(self) -> CloudEvent:
        return CloudEvent.model_validate(self.state.event)

    @start()
    def classify(self) -> None:
        event = self._event()
        self.state.workflow = WORKFLOW_BY_TYPE[event.type]
        self.state.mode = "llm" if self._runtime is not None else "deterministic"

    @router(classify)
    def by_event_type(self) -> str:
        return str(self.state.workflow)

    @listen(or_(*WORKFLOWS))
    def run_specialist(self) -> None:
        event = self._event()
        specialist: Specialist = route(event.type, self._policy)
        self._specialist = specialist
        self.state.specialist = type(specialist).__name__
        self._proposals = list(specialist.propose(event, self._systems))
        self.state.proposals = [p.model_dump(mode="json") for p in self._proposals]

    @listen(run_specialist)
    def judge_if_needed(self) -> None:
        if self._runtime is None:
            return
        event = self._event()
        reason = judgement_reason(event, self._proposals)
        self.state.judgement = reason
        if reason is None:
            return
        for result in judge(event, self._proposals, self._runtime, reason):
            if isinstance(result, RejectedProposal):
                self._rejected.append(result)
                self.state.rejected.append({"agent": result.agent, "reason": result.reason})
            else:
                self._proposals.append(result)
                self.state.proposals.append(result.model_dump(mode="json"))

    def result(self) -> SupervisorResult:
        return SupervisorResult(
            workflow=self.state.workflow,
            specialist=self.state.specialist,
            mode=self.state.mode,
            proposals=list(self._proposals),
            rejected=list(self._rejected),
            judgement=self.state.judgement,
        )


def supervise(
    event: CloudEvent,
    systems: Systems,
    policy: Policy | None = None,
    *,
    runtime: Any = None,
    settings: AgentSettings | None = None,
) -> SupervisorResult:
    """Run the supervisor flow on one event. ``runtime`` (an ``AgentRuntime``) is built from
    ``settings`` only when a model is configured; pass one to inject a scripted model."""
    if runtime is None and llm_mode(settings)["mode"] == "llm":
        from crews.agent_runtime import AgentRuntime

        runtime = AgentRuntime(settings, systems=systems)
    flow = SupervisorFlow(suppress_flow_events=True).bind(systems, policy or Policy(), runtime)
    flow.kickoff(inputs={"event": event.model_dump(mode="json")})
    return flow.result()


__all__ = [
    "AgentBoundExceeded",
    "SupervisorFlow",
    "SupervisorResult",
    "SupervisorState",
    "judge",
    "judgement_reason",
    "supervise",
]
