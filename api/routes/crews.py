"""Crews: a planner triggers a triage crew over a set of open exceptions and follows the job.

The request is queued on the same Redis stream as every event, as an internal
``crossdock.crew.triage`` job, and a worker runs it (``runtime.pipeline``): the engine for each
exception, then, with ``CROSSDOCK_LLM_MODEL`` set, the hierarchical agent crew. The route never
imports CrewAI.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from agents.settings import llm_mode
from api.deps import ContainerDep, Planner, PlannerRole
from crews.triage_crew import ACTOR, MAX_BATCH, OpenException
from domain.events import CREW_TRIAGE, parse_event

router = APIRouter(tags=["crews"])
SOURCE = "crossdock/api/crews"


class TriageRequest(BaseModel):
    exceptions: list[OpenException] = Field(min_length=1, max_length=MAX_BATCH)


class TriageAccepted(BaseModel):
    job_id: str
    status: str
    mode: str
    model: str | None = None
    exceptions: int


class TriageJob(BaseModel):
    job_id: str
    status: str
    mode: str | None = Field(default=None, description="the worker's mode; None until a worker takes the job")
    model: str | None = None
    exceptions: int = 0
    requested_by: str = ""
    attempts: int = 0
    error: str | None = None
    decisions: list[dict[str, Any]] = []


@router.post("/v1/crews/triage", status_code=202, response_model=TriageAccepted)
async def start_triage(body: TriageRequest, container: ContainerDep, caller: Planner) -> TriageAccepted:
    """Queue a triage crew over open exceptions; answers at once with the job id (a worker runs it)."""
    mode = llm_mode()
    event = parse_event(
        {
            "specversion": "1.0",
            "id": f"crew-{uuid.uuid4().hex[:20]}",
            "source": SOURCE,
            "type": CREW_TRIAGE,
            "time": datetime.now(UTC).isoformat(),
            "data": {
                "exceptions": [e.model_dump(exclude_none=True) for e in body.exceptions],
                "requested_by": caller.actor,
            },
        },
        allow_internal=True,
    )
    [queued] = await container.queue.enqueue_many_async(
        container.aredis, [(event.key, event.type, event.model_dump_json(), repr(time.time()))]
    )
    # The mode is left to the worker that runs the job (it may run with another configuration).
    await run_in_threadpool(
        container.queue.set_fields, queued.job_id, exceptions=len(body.exceptions), requested_by=caller.actor
    )
    await run_in_threadpool(
        container.store.append_audit,
        "crew.triage.requested",
        queued.job_id,
        caller.actor,
        {"job_id": queued.job_id, "mode": mode, "tasks": [e.task_id for e in body.exceptions], "actor": ACTOR},
    )
    return TriageAccepted(
        job_id=queued.job_id,
        status=queued.status,
        mode=mode["mode"],
        model=mode.get("model"),
        exceptions=len(body.exceptions),
    )


@router.get("/v1/crews/triage/{job_id}", response_model=TriageJob)
async def get_triage(job_id: str, container: ContainerDep, _role: PlannerRole) -> TriageJob:
    """A triage crew job: its status (queued, running, done, retrying, dead), mode and decisions."""
    job = await run_in_threadpool(container.queue.job, job_id)
    if job is None or job.get("type") != CREW_TRIAGE:
        raise HTTPException(404, f"no triage job {job_id!r}")
    decisions = await run_in_threadpool(container.store.list_decisions, job_id=job_id)
    return TriageJob(
        job_id=job_id,
        status=job.get("status", "unknown"),
        mode=job.get("mode") or None,
        model=job.get("model") or None,
        exceptions=int(job.get("exceptions") or 0),
        requested_by=job.get("requested_by", ""),
        attempts=int(job.get("attempts") or 0),
        error=job.get("error") or None,
        decisions=[d.model_dump(mode="json") for d in decisions],
    )
