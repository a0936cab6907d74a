"""Jobs: the status of an accepted event and the decisions it produced."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from api.deps import ContainerDep, ReaderRole

router = APIRouter(tags=["jobs"])


class JobPublic(BaseModel):
    id: str
    status: str
    type: str | None = None
    event_key: str | None = None
    attempts: int = 0
    error: str | None = None
    accepted_at: float | None = None
    finished_at: str | None = None
    decisions: list[dict[str, Any]] = []


@router.get("/v1/jobs/{job_id}", response_model=JobPublic)
async def get_job(job_id: str, container: ContainerDep, _role: ReaderRole) -> JobPublic:
    """Status of one job and the decisions it produced."""
    job = await run_in_threadpool(container.queue.job, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    decisions = await run_in_threadpool(container.store.list_decisions, job_id=job_id)
    return JobPublic(
        id=job_id,
        status=job.get("status", "unknown"),
        type=job.get("type"),
        event_key=job.get("event_key"),
        attempts=job["attempts"],
        error=job.get("error") or None,
        accepted_at=float(job["accepted_at"]) if job.get("accepted_at") else None,
        finished_at=job.get("finished_at"),
        decisions=[d.model_dump(mode="json") for d in decisions],
    )
