"""Decisions and approvals: the planner's review queue."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ContainerDep, Planner, PlannerRole
from domain.errors import ConnectorError
from runtime.lifecycle import (
    ChangeRejected,
    DecisionNotFound,
    ExecutionInterrupted,
    NotReviewable,
    SameApprover,
)
from runtime.locks import LockTimeout

router = APIRouter(tags=["decisions"])


class Change(BaseModel):
    """One edit of a proposal's action: which action (its index) and the fields to set."""

    model_config = ConfigDict(extra="forbid")

    action: int = Field(ge=0, description="index of the action in the decision's actions")
    node: str | None = Field(default=None, max_length=64, description="oms.allocate: the node to reserve at")
    qty: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="oms.allocate, wms.create_transfer")
    from_: str | None = Field(default=None, alias="from", max_length=64, description="wms.create_transfer: source")
    promise_date: date | None = Field(default=None, description="oms.update_promise_date, erp.create_backorder")

    def edits(self) -> dict[str, Any]:
        return {"action": self.action, **self.model_dump(mode="json", by_alias=True, exclude_none=True)}


class ApproveBody(BaseModel):
    """Approve as proposed, or with changes (recorded as "approved with changes": an override)."""

    model_config = ConfigDict(extra="forbid")

    changes: list[Change] = Field(default=[], max_length=50)
    note: str = Field(default="", max_length=2000)
    lines: list[int] | None = Field(
        default=None,
        max_length=10_000,
        description="approve only these actions (indexes); the others are declined, recorded and audited",
    )


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1, max_length=2000, pattern=r"\S", description="why: the engines decide again with it"
    )


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


@router.post(
    "/v1/decisions/{decision_id}/approve",
    responses={202: {"description": "first of two approvals recorded"}, 409: {"description": "stale or not pending"}},
    response_model=None,
)
async def approve(
    decision_id: str, container: ContainerDep, who: Planner, body: ApproveBody | None = None
) -> dict[str, Any] | JSONResponse:
    """Approve a pending decision: its facts are re-checked, then its actions run exactly once.

    Facts that moved answer 409 ``stale`` with the fresh proposal; an interrupted execution answers
    503 and is resumed (approve again, or the worker resumes it); a permanent failure undoes what
    was applied and answers 409 ``failed``. A decision above the policy's four-eyes amount needs
    two approvers with different names: the first answers 202 ``pending_review``, the same name
    again 409 ``same_approver``, and the second executes it. ``lines`` approves only those actions
    of a grouped decision (a safety-stock list): the rest are declined and never run."""
    body = body or ApproveBody()
    changes = [c.edits() for c in body.changes]
    try:
        review = await run_in_threadpool(
            container.pipeline.decisions.approve, decision_id, who.actor, changes or None, body.note, body.lines
        )
    except DecisionNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except SameApprover as exc:
        raise HTTPException(409, {"error": "same_approver", "message": str(exc)}) from None
    except NotReviewable as exc:
        raise HTTPException(409, {"error": "not_pending", "message": str(exc)}) from None
    except ChangeRejected as exc:
        raise HTTPException(422, {"error": "invalid_change", "message": str(exc)}) from None
    except (ExecutionInterrupted, LockTimeout) as exc:
        raise HTTPException(503, {"error": "interrupted", "message": str(exc)}) from None
    except ConnectorError as exc:  # a read failed before anything was claimed: it is still pending
        raise HTTPException(503, {"error": "unreachable", "message": f"a system could not be reached: {exc}"}) from None
    if review.outcome == "stale":
        raise HTTPException(
            409,
            {
                "error": "stale",
                "message": "the facts this proposal stood on have moved; nothing was executed",
                "reasons": review.reasons,
                "decision": review.decision.model_dump(mode="json"),
                "fresh": review.fresh.model_dump(mode="json") if review.fresh else None,
            },
        )
    if review.outcome == "pending_review":  # four-eyes: the first of two approvals
        approvals = (review.decision.model_dump(mode="json")["review"] or {}).get("approvals", [])
        return JSONResponse(
            {"status": "pending_review", "needs": "second approver", "decision": decision_id, "approvals": approvals},
            status_code=202,
        )
    if review.decision.status == "failed":
        raise HTTPException(
            409,
            {
                "error": "failed",
                "message": f"approved but not executed: {review.decision.error}",
                "undone": review.decision.undone,
                "decision": review.decision.model_dump(mode="json"),
            },
        )
    return review.decision.model_dump(mode="json")


@router.post("/v1/decisions/{decision_id}/reject")
async def reject(decision_id: str, body: RejectBody, container: ContainerDep, who: Planner) -> dict[str, Any]:
    """Reject a live decision with a reason: nothing is executed, and the subject is decided again
    with the reason as an override (or waits for a planner in ``awaiting_planner``)."""
    try:
        review = await run_in_threadpool(container.pipeline.decisions.reject, decision_id, who.actor, body.reason)
    except DecisionNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except NotReviewable as exc:
        raise HTTPException(409, {"error": "not_pending", "message": str(exc)}) from None
    return {
        **review.decision.model_dump(mode="json"),
        "next": review.fresh.model_dump(mode="json") if review.fresh else None,
    }
