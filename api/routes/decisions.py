"""Decisions and approvals: the planner's review queue."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from api.deps import ContainerDep, PlannerRole
from domain.errors import ConnectorError

router = APIRouter(tags=["decisions"])


class RejectBody(BaseModel):
    reason: str | None = None


@router.get("/v1/decisions")
async def list_decisions(
    container: ContainerDep,
    _role: PlannerRole,
    status: str | None = None,
    workflow: str | None = None,
    subject: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> list[dict[str, Any]]:
    """Decisions, newest last; filter by status (e.g. pending_review), workflow or subject."""
    found = await run_in_threadpool(
        container.store.list_decisions, status=status, workflow=workflow, subject=subject, limit=limit, offset=offset
    )
    return [d.model_dump(mode="json") for d in found]


@router.get("/v1/decisions/{decision_id}")
async def get_decision(decision_id: str, container: ContainerDep, _role: PlannerRole) -> dict[str, Any]:
    """One decision with its evidence and actions."""
    decision = await run_in_threadpool(container.store.get_decision, decision_id)
    if decision is None:
        raise HTTPException(404, f"no decision {decision_id!r}")
    return decision.model_dump(mode="json")


@router.post("/v1/decisions/{decision_id}/approve")
async def approve(decision_id: str, container: ContainerDep, role: PlannerRole) -> dict[str, Any]:
    """Approve a pending decision: its actions execute now, exactly once."""
    actor = f"{role}:api"
    try:
        result = await run_in_threadpool(container.pipeline.approve, decision_id, actor)
    except ConnectorError as exc:
        raise HTTPException(503, f"a system could not be reached; approve again to resume: {exc}") from None
    if result is None:
        return _conflict(container, decision_id)
    if result.status == "failed":
        raise HTTPException(409, f"approved but not executed: {result.error}")
    return result.model_dump(mode="json")


@router.post("/v1/decisions/{decision_id}/reject")
async def reject(
    decision_id: str, container: ContainerDep, role: PlannerRole, body: RejectBody | None = None
) -> dict[str, Any]:
    """Reject a pending decision: nothing is executed."""
    result = await run_in_threadpool(
        container.pipeline.reject, decision_id, f"{role}:api", body.reason if body else None
    )
    if result is None:
        return _conflict(container, decision_id)
    return result.model_dump(mode="json")


def _conflict(container: ContainerDep, decision_id: str) -> dict[str, Any]:
    current = container.store.get_decision(decision_id)
    if current is None:
        raise HTTPException(404, f"no decision {decision_id!r}")
    raise HTTPException(409, f"decision {decision_id} is {current.status}, not pending_review")
