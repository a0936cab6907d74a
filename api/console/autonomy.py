"""Console pages for guarded autonomy: the measured trust of each (workflow, outcome) pair with
promote and demote (admin, with a reason), and the shadow replay of a candidate policy.

They call what the API routes call (``runtime.autonomy``, ``runtime.shadow``) with the same roles:
planners and admins read, admins promote and demote (``api.routes.autonomy``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api.console.auth import Session, acting, first, form_of, require_area
from api.console.routes import render
from domain.governance import WORKFLOWS
from runtime import autonomy, shadow
from runtime.bootstrap import Container
from tools.recording import ReadOnlyViolation

router = APIRouter(prefix="/console", include_in_schema=False)


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def _autonomy_page(
    request: Request, session: Session, status_code: int = 200, message: str | None = None, error: str | None = None
) -> Response:
    found = await run_in_threadpool(autonomy.trust, _container(request).store)
    return render(
        request,
        "autonomy.html",
        session,
        status_code,
        pairs=[t.report() for t in found],
        can_edit=session.user.can("admin"),
        message=message,
        error=error,
    )


@router.get("/autonomy")
async def autonomy_page(request: Request) -> Response:
    session = await require_area(request, "review")
    return await _autonomy_page(request, session)


@router.post("/autonomy")
async def autonomy_change(request: Request) -> Response:
    """Promote or demote a pair (admin, with a reason), as ``POST /v1/autonomy/{wf}/{outcome}/…``."""
    session = await acting(request, "admin")
    form = await form_of(request)
    workflow, outcome = first(form, "workflow"), first(form, "outcome").strip()
    what, reason = first(form, "action"), first(form, "reason").strip()
    if workflow not in WORKFLOWS or not outcome or len(outcome) > 64 or what not in ("promote", "demote"):
        return await _autonomy_page(request, session, 422, error="Pick a pair and promote or demote.")
    if not reason:
        return await _autonomy_page(
            request, session, 422, error="A reason is required: it is recorded with the version."
        )
    store = _container(request).store
    done: dict[str, Any] | None
    try:
        if what == "promote":
            force = first(form, "force") == "1"
            done = await run_in_threadpool(
                lambda: autonomy.promote(store, workflow, outcome, session.user.actor, reason, force=force)
            )
        else:
            done = await run_in_threadpool(
                lambda: autonomy.demote(store, workflow, outcome, session.user.actor, reason)
            )
    except autonomy.NotEligible as exc:
        return await _autonomy_page(request, session, 409, error=str(exc))
    if done is None:
        return await _autonomy_page(request, session, 409, error=f"{workflow}/{outcome} is not autonomous.")
    message = f"{done['pair']} is now {done['mode']} (policy version {done['version']})."
    return await _autonomy_page(request, session, message=message)


def _when(raw: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@router.get("/replay")
async def replay_page(request: Request) -> Response:
    session = await require_area(request, "review")
    now = datetime.now(UTC).replace(microsecond=0)
    form = {
        "since": (now - timedelta(days=1)).isoformat(),
        "until": now.isoformat(),
        "policy": "{}",
        "method": "regate",
    }
    return render(request, "replay.html", session, form=form, result=None, error=None)


@router.post("/replay")
async def replay_run(request: Request) -> Response:
    """The shadow replay of a period with a candidate policy (a PATCH over the one in force), as
    ``POST /v1/replay``: it writes nothing, so a planner may run it."""
    session = await acting(request, "review")
    raw = await form_of(request)
    form = {k: first(raw, k) for k in ("since", "until", "policy", "method")}
    engines = form["method"] == "engines"
    since, until = _when(form["since"]), _when(form["until"])
    error = None
    body: Any = None
    if since is None or until is None or until <= since:
        error = "Give the period as ISO times (2026-03-21T00:00:00Z), the end after the start."
    else:
        try:
            body = json.loads(form["policy"] or "{}")
        except json.JSONDecodeError as exc:
            error = f"The candidate policy is not JSON: {exc}"
        if error is None and not isinstance(body, dict):
            error = 'The candidate policy is a JSON object, e.g. {"review_cost_above": 250}.'
    if error is not None:
        return render(request, "replay.html", session, 422, form=form, result=None, error=error)
    store = _container(request).store
    assert since is not None and until is not None  # for mypy: checked above

    def run() -> dict[str, Any]:
        candidate = shadow.candidate_policy(store.get_policy(), body)
        return (shadow.engine_replay if engines else shadow.replay)(store, since, until, candidate)

    try:
        result = await run_in_threadpool(run)
    except (ValueError, ReadOnlyViolation) as exc:
        return render(request, "replay.html", session, 422, form=form, result=None, error=str(exc))
    return render(request, "replay.html", session, form=form, result=result, error=None)
