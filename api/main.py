"""FastAPI application factory; the container is built in the lifespan, never at import."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api import openapi
from api.console import mount as mount_console
from api.guards import RETRY_AFTER_UNAVAILABLE_S, RequestGuard, unavailable
from api.routes import audit, autonomy, chat, decisions, events, jobs, network, system
from api.routes import crews as crew_routes
from domain.extras import MissingExtra
from runtime.bootstrap import Container, bootstrap
from runtime.settings import Settings


def create_app(container: Container | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the API; pass a container to share one (tests, the scenario runner)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = container is None
        app.state.container = container or bootstrap(settings)
        # What startup made (modules, the container) lives as long as the app: out of the cyclic
        # collector's way, so a full collection under load scans what requests made, not all of it
        # (a full pass over everything stalled intake for 100 ms and more, its p99). Given back on
        # the way out, so an app started in a longer process (tests) leaves nothing uncollectable.
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            if app.state.container.aredis is not None:
                # The asyncio client's connections belong to this event loop: close them here.
                await app.state.container.aredis.aclose()
            if owned:
                app.state.container.close()

    app = FastAPI(
        title="Crossdock",
        version="0.1.0",
        summary="Agents propose, engines decide, policy gates, connectors execute.",
        lifespan=lifespan,
        docs_url=None,  # served by api.openapi from api/static (no CDN)
        redoc_url=None,
    )
    app.add_middleware(RequestGuard)  # body size, content type, JSON depth, rate limits, HTTP metrics
    if container is not None:
        app.state.container = container

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(MissingExtra)
    async def _missing_extra(_: Request, exc: MissingExtra) -> JSONResponse:
        # A feature whose extra is not installed: the one-line message names the pip command.
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(redis.RedisError)
    async def _redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        # Redis restarting or unreachable: the clients retried briefly (runtime.bootstrap); the
        # caller retries later, the next request reconnects.
        return unavailable(exc)

    @app.exception_handler(sa.exc.OperationalError)
    @app.exception_handler(sa.exc.InterfaceError)
    async def _store_down(_: Request, exc: sa.exc.DBAPIError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the store is unavailable, retry shortly: {type(exc.orig).__name__}"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)},
        )

    @app.exception_handler(OverflowError)
    @app.exception_handler(sa.exc.DataError)
    @app.exception_handler(sa.exc.StatementError)
    async def _out_of_range(_: Request, exc: Exception) -> JSONResponse:
        # A value the request carried that the store cannot hold (after_seq=10**30 on SQLite, a
        # date in year 1 that becomes year 0 in UTC). Any other statement error is a real fault.
        cause = getattr(exc, "orig", None)
        wrapped = isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DataError)
        if wrapped and not isinstance(cause, OverflowError | ValueError):
            raise exc
        message = f"a value is out of the range the store can hold: {str(cause or exc)[:200]}"
        return JSONResponse({"detail": [{"loc": "request", "msg": message, "type": "out_of_range"}]}, status_code=422)

    @app.exception_handler(ValidationError)
    async def _malformed_record(_: Request, exc: ValidationError) -> JSONResponse:
        # A connector handed back a record that breaks the contract (an order with no valid qty):
        # this request fails with the record and field named; other records and requests go on.
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        fields = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
        message = f"a connected system returned a malformed {exc.title} record"
        return JSONResponse(
            {"detail": {"error": "malformed_record", "message": message, "errors": fields[:20]}}, status_code=502
        )

    app.include_router(chat.router)  # before system: /v1/orders/at-risk must precede /v1/orders/{id}
    for module in (events, jobs, decisions, audit, system, network):
        app.include_router(module.router)
    app.include_router(crew_routes.router)
    app.include_router(autonomy.router)  # guarded autonomy and shadow replay (runtime.autonomy, runtime.shadow)
    openapi.install(app)
    mount_console(app)  # the planner and service console at /console (api/console)
    return app
