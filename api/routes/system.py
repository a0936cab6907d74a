"""Health, readiness, metrics, policy and the OMS order view."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.settings import llm_mode
from api.deps import AdminRole, ContainerDep, OrderReaderRole, PlannerRole
from domain.errors import ConnectorError, UnknownOrder
from domain.models import Settings as Policy

router = APIRouter()


@router.get("/healthz", tags=["system"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers (open, for probes)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["system"])
async def readyz(container: ContainerDep, request: Request, response: Response) -> dict[str, Any]:
    """Readiness: Redis and the store are reachable (open, for probes); also says which LLM mode
    runs and whether a knowledge base is loaded (neither makes the service not ready)."""
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
    return {"status": "ready" if ready else "not_ready", **checks, "llm": llm_mode(), "knowledge": knowledge}


@router.get("/metrics", tags=["system"])
async def metrics(_role: AdminRole) -> Response:
    """Prometheus metrics of this process (admin key; scrapers send it as a bearer token)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/policy", tags=["policy"])
async def get_policy(container: ContainerDep, _role: PlannerRole) -> dict[str, Any]:
    """Governance settings: per-workflow modes and review thresholds."""
    policy = await run_in_threadpool(container.store.get_policy)
    return policy.model_dump()


@router.put("/v1/policy", tags=["policy"])
async def put_policy(body: Policy, container: ContainerDep, role: AdminRole) -> dict[str, Any]:
    """Replace the governance settings (audited)."""
    await run_in_threadpool(container.store.set_policy, body)
    await run_in_threadpool(container.store.append_audit, "policy.updated", "policy", f"{role}:api", body.model_dump())
    return body.model_dump()


@router.get("/v1/orders/{order_id}", tags=["orders"])
async def get_order(order_id: str, container: ContainerDep, _role: OrderReaderRole) -> dict[str, Any]:
    """An order as the OMS holds it now (status, reservations, promise dates)."""
    try:
        view = await run_in_threadpool(container.systems.oms.order, order_id)
    except UnknownOrder as exc:
        raise HTTPException(404, str(exc)) from None
    except ConnectorError as exc:
        raise HTTPException(502, f"OMS unavailable: {exc}") from None
    return view.model_dump(mode="json")


@router.get("/v1/dead-letters", tags=["jobs"])
async def dead_letters(container: ContainerDep, _role: AdminRole) -> list[dict[str, str]]:
    """Jobs that failed every attempt, with the last error kept."""
    return await run_in_threadpool(container.queue.dead_letters)
