"""Health, readiness, metrics, policy and the OMS order view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import PlainTextResponse

from agents.settings import llm_mode
from api import readiness
from api.deps import Admin, AdminRole, ContainerDep, OrderReader, PlannerRole, Principal
from domain.errors import ConnectorError, UnknownOrder
from domain.models import Policy
from runtime import metrics as metrics_gauges
from runtime import policy_versions

router = APIRouter()
log = structlog.get_logger("crossdock.api")


@router.get("/healthz", tags=["system"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers (open, for probes)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["system"])
async def readyz(container: ContainerDep, request: Request, response: Response) -> dict[str, Any]:
    """Readiness: Redis and the store are reachable (open, for probes; otherwise 503). Also says
    how far behind the queue is (jobs waiting, the oldest one's age), whether each connected
    system answers (WMS, ERP, OMS, notify: one cheap read each, in parallel, bounded by
    ``CROSSDOCK_READY_TIMEOUT_S``), which LLM mode runs and whether a knowledge base is loaded.
    None of those makes the service not ready: events are still accepted and queued."""
    checks: dict[str, Any] = {}
    try:
        checks["redis"] = bool(await run_in_threadpool(container.redis.ping))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    try:
        checks["store"] = bool(await run_in_threadpool(container.store.ping))
    except Exception as exc:  # noqa: BLE001
        checks["store"] = f"unreachable: {type(exc).__name__}"
    ready = all(v is True for v in checks.values())
    response.status_code = 200 if ready else 503
    kb = getattr(request.app.state, "knowledge", None)
    knowledge = {"loaded": kb is not None, "location": getattr(kb, "location", None)}
    extra = await readiness.report(container)
    return {"status": "ready" if ready else "not_ready", **checks, **extra, "llm": llm_mode(), "knowledge": knowledge}


@router.get("/metrics", tags=["system"], response_class=PlainTextResponse)
async def metrics(container: ContainerDep, _role: AdminRole) -> Response:
    """Prometheus metrics (admin key; scrapers send it as a bearer token): this process's counters
    (HTTP requests by route and status with latency, events, jobs, decisions, actions, 429s) and
    gauges of the shared state read at scrape time (queue depth and oldest age, dead letters,
    pending reviews and the oldest one's age, decisions by status)."""
    await run_in_threadpool(metrics_gauges.refresh, container.queue, container.store)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/policy", tags=["policy"])
async def get_policy(container: ContainerDep, _role: PlannerRole) -> dict[str, Any]:
    """Governance settings: per-workflow modes (a workflow not named runs in observe mode), the
    review thresholds and four-eyes amounts."""
    policy = await run_in_threadpool(container.store.get_policy)
    return policy.model_dump()


async def versioned_body(request: Request) -> tuple[dict[str, Any], str | None]:
    """A versioned setting's body (the policy, the network) as an object, and the change's reason
    (``reason`` in the body, else the ``X-Crossdock-Reason`` header)."""
    try:
        body = await request.json()  # NaN and Infinity parse here, and are refused by the model
    except ValueError:
        raise RequestValidationError([{"loc": ("body",), "msg": "not valid JSON", "type": "json_invalid"}]) from None
    if not isinstance(body, dict):
        raise RequestValidationError([{"loc": ("body",), "msg": "expected a JSON object", "type": "dict_type"}])
    reason = body.pop("reason", None) or request.headers.get("x-crossdock-reason") or None
    if reason is not None and (not isinstance(reason, str) or len(reason) > 2000):
        raise RequestValidationError(
            [{"loc": ("body", "reason"), "msg": "a string of at most 2000 characters", "type": "string_type"}]
        )
    return body, reason


async def _put_in_force(
    container: ContainerDep, who: Principal, build: Callable[[Policy], Policy], reason: str | None
) -> Response:
    def run() -> tuple[Policy, policy_versions.PolicyVersion | None]:
        new = build(container.store.get_policy())
        return new, policy_versions.change(container.store, new, who.actor, reason)

    try:
        new, version = await run_in_threadpool(run)
    except policy_versions.PolicyError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors]) from None
    if version is not None:
        log.info("policy.changed", version=version.version, actor=who.actor, diff=version.diff, reason=reason)
    headers = {"X-Crossdock-Policy-Version": str(version.version)} if version is not None else {}
    return JSONResponse(new.model_dump(mode="json"), headers=headers)


@router.put("/v1/policy", tags=["policy"])
async def put_policy(request: Request, container: ContainerDep, who: Admin) -> Response:
    """Replace the governance settings: every field must be given (422 names a missing one). The
    change is a new version in the audit chain (``policy.changed``: who, when, diff, reason)."""
    body, reason = await versioned_body(request)
    return await _put_in_force(container, who, lambda _current: policy_versions.replaced(body), reason)


@router.patch("/v1/policy", tags=["policy"])
async def patch_policy(request: Request, container: ContainerDep, who: Admin) -> Response:
    """Change some settings: only the fields given change, and in ``modes`` and
    ``four_eyes_cost_above`` only the workflows given (null removes one). Audited as for PUT."""
    body, reason = await versioned_body(request)
    return await _put_in_force(container, who, lambda current: policy_versions.merged(current, body), reason)


@router.get("/v1/policy/history", tags=["policy"])
async def policy_history(container: ContainerDep, _role: PlannerRole) -> list[dict[str, Any]]:
    """Every policy version, oldest first, read from the audit chain: version, when, who, why,
    what changed and the whole policy."""
    versions = await run_in_threadpool(policy_versions.history, container.store)
    return [v.model_dump(mode="json") for v in versions]


@router.get("/v1/orders/{order_id}", tags=["orders"])
async def get_order(order_id: str, container: ContainerDep, who: OrderReader) -> dict[str, Any]:
    """An order as the OMS holds it now (status, reservations, promise dates). A key bound to
    customers gets the same 404 for another customer's order as for an unknown one."""
    try:
        view = await run_in_threadpool(container.systems.oms.order, order_id)
    except UnknownOrder as exc:
        raise HTTPException(404, str(exc)) from None
    except ConnectorError as exc:
        raise HTTPException(502, f"OMS unavailable: {exc}") from None
    if not who.may_see(view.order.customer):
        raise HTTPException(404, str(UnknownOrder(order_id)))
    return view.model_dump(mode="json")


@router.get("/v1/dead-letters", tags=["jobs"])
async def dead_letters(container: ContainerDep, _role: AdminRole) -> list[dict[str, str]]:
    """Jobs that failed every attempt, with the last error kept."""
    return await run_in_threadpool(container.queue.dead_letters)


@router.post("/v1/dead-letters/{job_id}/replay", tags=["jobs"], status_code=202)
async def replay_dead_letter(job_id: str, container: ContainerDep, role: AdminRole) -> dict[str, Any]:
    """Put a dead job back on the queue (attempts reset, its last error kept as ``replayed_error``),
    once whatever made it fail is fixed. Audited. 404: no such job; 409: the job is not dead."""
    job = await run_in_threadpool(container.queue.job, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    if not await run_in_threadpool(container.queue.replay_dead, job_id):
        raise HTTPException(409, {"error": "not_dead", "message": f"job {job_id} is {job.get('status')!r}, not dead"})
    await run_in_threadpool(
        container.store.append_audit,
        "job.replayed",
        job_id,
        f"{role}:api",
        {"job_id": job_id, "type": job.get("type"), "last_error": job.get("error")},
    )
    return {"job_id": job_id, "status": "queued", "replayed_error": job.get("error") or None}
