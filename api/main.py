"""FastAPI application factory; the container is built in the lifespan, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.console import mount as mount_console
from api.routes import audit, autonomy, chat, decisions, events, jobs, system
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
        try:
            yield
        finally:
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
    )
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

    app.include_router(chat.router)  # before system: /v1/orders/at-risk must precede /v1/orders/{id}
    for module in (events, jobs, decisions, audit, system):
        app.include_router(module.router)
    app.include_router(crew_routes.router)
    app.include_router(autonomy.router)  # guarded autonomy and shadow replay (runtime.autonomy, runtime.shadow)
    mount_console(app)  # the planner and service console at /console (api/console)
    return app
