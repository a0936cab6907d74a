"""When the pipeline asks an agent, and how: the LLM path's judgement step.

The worker's pipeline (``runtime.pipeline``) routes by event type in code (``crews.supervisor``),
lets the engines decide, and only then, when a model is configured and the case needs judgement
(``judgement_reason``), runs one agent on it (``judge``). Agent proposals come beside the
engine's, never instead of them, and are gated like them. CrewAI is imported only inside ``judge``
(through ``crews.agent_runtime``), so the deterministic path never loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from agents.proposals import RejectedProposal
from crews.supervisor import WORKFLOW_BY_TYPE
from domain.decisions import Proposal
from domain.events import CloudEvent

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

# The instruction per agent lives with the task text in agents/tasks.yaml.
INSTRUCTION: dict[str, str] = yaml.safe_load((Path(__file__).parents[1] / "agents" / "tasks.yaml").read_text())[
    "judgement"
]


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
