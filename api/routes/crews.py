"""Crews: a planner triggers a triage crew over a set of open exceptions and follows the job.

The route never imports CrewAI: deterministic mode runs the triage engine alone; with
``CROSSDOCK_LLM_MODEL`` set the job loads the agent runtime in the background thread.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, BackgroundTasks, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from agents.settings import AgentSettings, llm_mode
from api.deps import ContainerDep, PlannerRole
from crews.triage_crew import MAX_BATCH, OpenException, triage_batch
from runtime.bootstrap import Container

router = APIRouter(tags=["crews"])
ACTOR = "crossdock-crew"
JOB_TTL_S = 7 * 24 * 3600

# Builds the agent runtime for a job (tests inject a scripted model); None: from AgentSettings.
runtime_factory: Callable[[Container], Any] | None = None


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
    mode: str
    model: str | None = None
    exceptions: int = 0
    requested_by: str = ""
    error: str | None = None
    decisions: list[dict[str, Any]] = []


def _key(container: Container, job_id: str) -> str:
    return f"{container.settings.stream_prefix}:crewjob:{job_id}"


def _set(container: Container, job_id: str, **fields: Any) -> None:
    key = _key(container, job_id)
    container.redis.hset(key, mapping={k: "" if v is None else str(v) for k, v in fields.items()})
    container.redis.expire(key, JOB_TTL_S)


def _get(container: Container, job_id: str) -> dict[str, str]:
    raw: dict[Any, Any] = container.redis.hgetall(_key(container, job_id))
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in raw.items()
    }


def run_triage_job(container: Container, job_id: str, items: list[OpenException], mode: dict[str, Any]) -> None:
    """The job body (a worker thread): decide, gate, store, and execute what the gate let through."""
    _set(container, job_id, status="running")
    try:
        runtime = None
        if runtime_factory is not None:
            runtime = runtime_factory(container)
        elif mode["mode"] == "llm":
            from crews.agent_runtime import AgentRuntime

            runtime = AgentRuntime(AgentSettings(), systems=container.systems, audit=container.store)
        policy = container.store.get_policy()
        decisions = triage_batch(
            items,
            container.systems,
            policy,
            container.store,
            job_id=job_id,
            runtime=runtime,
            hold=container.locks.hold,
        )
        for decision in decisions:
            if decision.status == "executing":
                keys = sorted({f"sku:{a.payload['sku']}" for a in decision.actions if a.name == "oms.allocate"})
                with container.locks.hold(keys):
                    container.executor.execute(decision, ACTOR, verify_stock=policy.policy != "baseline")
        _set(container, job_id, status="done", finished_at=time.time())
        container.store.append_audit(
            "crew.triage.finished", job_id, ACTOR, {"job_id": job_id, "decisions": [d.id for d in decisions]}
        )
    except Exception as exc:  # noqa: BLE001 - the job records its failure; the API stays up
        _set(container, job_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
        container.store.append_audit("crew.triage.failed", job_id, ACTOR, {"job_id": job_id, "error": str(exc)[:500]})


@router.post("/v1/crews/triage", status_code=202, response_model=TriageAccepted)
async def start_triage(
    body: TriageRequest, container: ContainerDep, role: PlannerRole, background: BackgroundTasks
) -> TriageAccepted:
    """Start a triage crew over open exceptions; answers at once with the job id."""
    job_id = f"crew-{uuid.uuid4().hex[:20]}"
    mode = llm_mode()
    await run_in_threadpool(
        _set,
        container,
        job_id,
        status="queued",
        mode=mode["mode"],
        model=mode.get("model"),
        exceptions=len(body.exceptions),
        requested_by=role,
    )
    await run_in_threadpool(
        container.store.append_audit,
        "crew.triage.requested",
        job_id,
        f"{role}:api",
        {"job_id": job_id, "mode": mode, "tasks": [e.task_id for e in body.exceptions]},
    )
    background.add_task(run_triage_job, container, job_id, list(body.exceptions), mode)
    return TriageAccepted(
        job_id=job_id, status="queued", mode=mode["mode"], model=mode.get("model"), exceptions=len(body.exceptions)
    )


@router.get("/v1/crews/triage/{job_id}", response_model=TriageJob)
async def get_triage(job_id: str, container: ContainerDep, _role: PlannerRole) -> TriageJob:
    """A triage crew job: its status, mode and the decisions it recorded."""
    job = await run_in_threadpool(_get, container, job_id)
    if not job:
        raise HTTPException(404, f"no triage job {job_id!r}")
    decisions = await run_in_threadpool(container.store.list_decisions, job_id=job_id)
    return TriageJob(
        job_id=job_id,
        status=job.get("status", "unknown"),
        mode=job.get("mode", "deterministic"),
        model=job.get("model") or None,
        exceptions=int(job.get("exceptions") or 0),
        requested_by=job.get("requested_by", ""),
        error=job.get("error") or None,
        decisions=[d.model_dump(mode="json") for d in decisions],
    )
