"""Guarded autonomy over HTTP: measured trust per (workflow, outcome), promotion and demotion, a
planner's "this was wrong", and the shadow replay of a candidate policy (README "Guarded autonomy")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import Admin, ContainerDep, Planner, PlannerRole
from domain.governance import WORKFLOWS
from runtime import autonomy, shadow
from runtime.lifecycle import ChangeRejected, DecisionNotFound, NotReviewable
from tools.recording import ReadOnlyViolation

router = APIRouter(tags=["autonomy"])


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S")


class PromoteBody(ReasonBody):
    force: bool = Field(default=False, description="promote although the rule does not make it eligible (recorded)")


class ReplayBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime
    until: datetime
    policy: dict[str, Any] = Field(description="the candidate policy: a PATCH over the policy in force")
    method: Literal["regate", "engines"] = Field(
        default="regate",
        description="regate: gate the recorded proposals again; engines: decide the recorded events again "
        "with the engines on the reads they were decided on, then gate (both write nothing)",
    )

    @field_validator("since", "until")
    @classmethod
    def _in_range(cls, at: datetime) -> datetime:
        """UTC, between 1970 and 9000 (a store cannot compare times beyond its range)."""
        try:
            at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
        except OverflowError:
            raise ValueError("out of range") from None
        if not 1970 <= at.year <= 9000:
            raise ValueError("must be between 1970 and 9000")
        return at


def _pair(workflow: str, outcome: str) -> None:
    if workflow not in WORKFLOWS:
        raise HTTPException(404, f"no workflow {workflow!r}")
    if not outcome or len(outcome) > 64:
        raise HTTPException(422, "outcome must be 1 to 64 characters")


@router.get("/v1/autonomy")
async def list_autonomy(container: ContainerDep, _role: PlannerRole) -> list[dict[str, Any]]:
    """Each (workflow, outcome) pair with settled decisions: its mode, reviews, approvals (with
    changes), rejections, wrong marks, later corrections and failures, all time, in the sliding
    window and in the recent window, with rates and Wilson intervals (95 %); whether the rule makes
    it eligible for autonomy (and why not), and whether its recent window calls for demotion."""
    found = await run_in_threadpool(autonomy.trust, container.store)
    return [t.report() for t in found]


@router.post(
    "/v1/autonomy/{workflow}/{outcome}/promote",
    responses={404: {"description": "no such workflow"}, 409: {"description": "not eligible, or autonomous already"}},
)
async def promote(
    workflow: str, outcome: str, body: PromoteBody, container: ContainerDep, who: Admin
) -> dict[str, Any]:
    """Make a pair autonomous (its ``outcome_modes`` entry): a policy version with the evidence.
    409 when the rule does not make it eligible (unless ``force``) or it is autonomous already."""
    _pair(workflow, outcome)
    try:
        return await run_in_threadpool(
            autonomy.promote, container.store, workflow, outcome, who.actor, body.reason, force=body.force
        )
    except autonomy.NotEligible as exc:
        raise HTTPException(409, {"error": "not_eligible", "message": str(exc)}) from None


@router.post(
    "/v1/autonomy/{workflow}/{outcome}/demote",
    responses={404: {"description": "no such workflow"}, 409: {"description": "the pair is not autonomous"}},
)
async def demote(workflow: str, outcome: str, body: ReasonBody, container: ContainerDep, who: Admin) -> dict[str, Any]:
    """Take an autonomous pair back to propose: a policy version with the evidence (409 when it is
    not autonomous)."""
    _pair(workflow, outcome)
    done = await run_in_threadpool(autonomy.demote, container.store, workflow, outcome, who.actor, body.reason)
    if done is None:
        raise HTTPException(409, {"error": "not_autonomous", "message": f"{workflow}/{outcome} is not autonomous"})
    return done


@router.post(
    "/v1/decisions/{decision_id}/wrong",
    responses={404: {"description": "no such decision"}, 409: {"description": "the decision is not executed"}},
)
async def mark_wrong(decision_id: str, body: ReasonBody, container: ContainerDep, who: Planner) -> dict[str, Any]:
    """A planner marks an executed decision wrong (with a reason): an override in its pair's trust,
    and its pair, if autonomous, goes back to propose at once."""
    try:
        decision, demoted = await run_in_threadpool(
            container.pipeline.decisions.mark_wrong, decision_id, who.actor, body.reason
        )
    except DecisionNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except NotReviewable as exc:
        raise HTTPException(409, {"error": "not_executed", "message": str(exc)}) from None
    except ChangeRejected as exc:
        raise HTTPException(422, {"error": "invalid", "message": str(exc)}) from None
    return {**decision.model_dump(mode="json"), "demoted": demoted}


@router.get("/v1/shadow")
async def shadow_agreement(container: ContainerDep, _role: PlannerRole) -> dict[str, Any]:
    """Shadow mode (policy field ``shadow``): how often the candidate policy agreed with the live
    one on the newest decisions of the shadowed workflows, per (workflow, outcome), and where not."""
    return await run_in_threadpool(shadow.agreement, container.store)


@router.post("/v1/replay")
async def replay(body: ReplayBody, container: ContainerDep, _role: PlannerRole) -> dict[str, Any]:
    """Shadow replay: the decisions recorded in [since, until) gated again with a candidate policy
    (the policy in force with ``policy`` merged over it); before and after by workflow and outcome.
    With ``"method": "engines"``, each event recorded with its reads is decided again by the engines
    on those reads and gated with the candidate: the diff adds cost, splits, on-time and oversells
    before and after, and the list of changed decisions. Writes nothing."""
    since, until = body.since, body.until
    if until <= since:
        raise HTTPException(422, "until must be after since")

    def run() -> dict[str, Any]:
        candidate = shadow.candidate_policy(container.store.get_policy(), body.policy)
        if body.method == "engines":
            return shadow.engine_replay(container.store, since, until, candidate)
        return shadow.replay(container.store, since, until, candidate)

    try:
        return await run_in_threadpool(run)
    except ValueError as exc:
        raise HTTPException(422, {"error": "invalid_policy", "message": str(exc)}) from None
    except ReadOnlyViolation as exc:
        raise HTTPException(500, {"error": "write_refused", "message": str(exc)}) from None
