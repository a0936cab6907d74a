"""Audit log: read the hash-chained trail and verify it has not been tampered with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from api.deps import ContainerDep, PlannerRole

router = APIRouter(tags=["audit"])


@router.get("/v1/audit")
async def audit(
    container: ContainerDep,
    _role: PlannerRole,
    subject: str | None = None,
    kind: str | None = None,
    after_seq: int = Query(0, ge=0),
    limit: int = Query(500, ge=1, le=5000),
) -> list[dict[str, Any]]:
    """Entries in chain order, filtered by subject (order id, sku@node, ...) or kind."""
    entries = await run_in_threadpool(
        container.store.audit, subject=subject, kind=kind, limit=limit, after_seq=after_seq
    )
    return [e.model_dump(mode="json") for e in entries]


@router.get("/v1/audit/verify")
async def verify(container: ContainerDep, _role: PlannerRole) -> dict[str, Any]:
    """Recompute the whole hash chain; ``ok`` is false and ``first_bad_seq`` set if it was altered."""
    result = await run_in_threadpool(container.store.verify_audit)
    return result.model_dump()
