"""The network a Tryton ERP cannot hold (lanes, carriers, regions, substitutes, safety stock): read
it, replace it, and read its history. Versioned in the audit chain like the policy
(``runtime.network_versions``); ``CROSSDOCK_NETWORK_FILE`` is the other way to set it."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.deps import Admin, ContainerDep, PlannerRole
from connectors.tryton.network_file import NetworkSpec
from runtime import network_versions

router = APIRouter(tags=["network"])
log = structlog.get_logger("crossdock.api")


@router.get("/v1/network")
async def get_network(container: ContainerDep, _role: PlannerRole) -> dict[str, Any]:
    """The network in force: its version (null before the first), where it came from (``file:…`` or
    ``api``), who put it there and when, and the network itself."""
    versions = await run_in_threadpool(network_versions.history, container.store)
    if not versions:
        return {"version": None, "source": None, "actor": None, "at": None, "network": NetworkSpec().dump()}
    v = versions[-1]
    return {"version": v.version, "source": v.source, "actor": v.actor, "at": v.at.isoformat(), "network": v.network}


@router.put("/v1/network")
async def put_network(request: Request, container: ContainerDep, who: Admin) -> Response:
    """Replace the network (the file's shape as JSON; ``reason`` optional). 422 names a bad field;
    409 when Crossdock does not run against Tryton (``CROSSDOCK_ERP=tryton``: the twin holds its own
    network). The change is a new version in the audit chain (``network.changed``) and is in force
    for this process's workers at once; other processes take it when they start."""
    if container.settings.erp != "tryton":
        raise HTTPException(409, {"error": "not_tryton", "message": "the network applies to CROSSDOCK_ERP=tryton"})
    try:
        body = await request.json()
    except ValueError:
        raise RequestValidationError([{"loc": ("body",), "msg": "not valid JSON", "type": "json_invalid"}]) from None
    if not isinstance(body, dict):
        raise RequestValidationError([{"loc": ("body",), "msg": "expected a JSON object", "type": "dict_type"}])
    reason = body.pop("reason", None) or request.headers.get("x-crossdock-reason") or None
    if reason is not None and (not isinstance(reason, str) or len(reason) > 2000):
        raise RequestValidationError(
            [{"loc": ("body", "reason"), "msg": "a string of at most 2000 characters", "type": "string_type"}]
        )
    try:
        spec = NetworkSpec.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError(
            [{"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
        ) from None
    version = await run_in_threadpool(network_versions.record, container.store, spec, who.actor, reason, "api")
    backend = getattr(container.systems.oms, "b", None)
    if backend is not None and hasattr(backend, "overlay"):
        backend.overlay = spec.overlay()  # the three Tryton adapters share this backend
    headers = {}
    if version is not None:
        log.info("network.changed", version=version.version, actor=who.actor, reason=reason)
        headers["X-Crossdock-Network-Version"] = str(version.version)
    return JSONResponse({"version": version.version if version else None, "network": spec.dump()}, headers=headers)


@router.get("/v1/network/history")
async def network_history(container: ContainerDep, _role: PlannerRole) -> list[dict[str, Any]]:
    """Every network version, oldest first, from the audit chain: version, when, who, why, source,
    digest and the whole network."""
    versions = await run_in_threadpool(network_versions.history, container.store)
    return [v.model_dump(mode="json") for v in versions]
