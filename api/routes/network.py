"""The network a Tryton ERP cannot hold (lanes, carriers, regions, substitutes, safety stock): read
it, replace it, and read its history. Versioned in the audit chain like the policy
(``runtime.network_versions``); ``CROSSDOCK_NETWORK_FILE`` is the other way to set it."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.deps import Admin, ContainerDep, PlannerRole
from api.routes.system import versioned_body
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
    """Replace the network (the file's shape as JSON; ``reason`` optional); 422 names a bad field.
    The change is a new version in the audit chain (``network.changed``). With
    ``CROSSDOCK_ERP=tryton`` it is in force for this process's workers at once (``in_force``) and
    for other processes when they start; against the twin, which holds its own network, it is only
    recorded."""
    body, reason = await versioned_body(request)
    try:
        spec = NetworkSpec.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError(
            [{"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
        ) from None
    version = await run_in_threadpool(network_versions.record, container.store, spec, who.actor, reason, "api")
    backend: Any = getattr(container.systems.oms, "b", None)
    in_force = container.settings.erp == "tryton" and hasattr(backend, "overlay")
    if in_force:
        backend.overlay = spec.overlay()  # the three Tryton adapters share this backend
    headers = {}
    if version is not None:
        log.info("network.changed", version=version.version, actor=who.actor, reason=reason)
        headers["X-Crossdock-Network-Version"] = str(version.version)
    body = {"version": version.version if version else None, "in_force": in_force, "network": spec.dump()}
    return JSONResponse(body, headers=headers)


@router.get("/v1/network/history")
async def network_history(container: ContainerDep, _role: PlannerRole) -> list[dict[str, Any]]:
    """Every network version, oldest first, from the audit chain: version, when, who, why, source,
    digest and the whole network."""
    versions = await run_in_threadpool(network_versions.history, container.store)
    return [v.model_dump(mode="json") for v in versions]
