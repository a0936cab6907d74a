"""Request dependencies: the container, and API-key authentication with role checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from runtime.bootstrap import Container
from runtime.settings import Role, hash_key


async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def require(*roles: Role) -> Callable[[Request, Container], Awaitable[Role]]:
    """Dependency: a valid key (401 otherwise) whose role is in ``roles`` or admin (403 otherwise)."""
    allowed = set(roles) | {"admin"}

    # async on purpose: a sync dependency would cost a thread hop on every request.
    async def check(request: Request, container: ContainerDep) -> Role:
        key = _presented_key(request)
        if key is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing API key (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        hashed = hash_key(key)
        role = container.settings.key_hashes.get(hashed)
        if role is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {role!r} may not do this; needs one of {sorted(allowed)}"
            )
        request.state.key_id = hashed[:16]  # who asks, for what a key owns (chat conversations); never the key
        return role

    return check


GatewayRole = Annotated[Role, Depends(require("gateway"))]
PlannerRole = Annotated[Role, Depends(require("planner"))]
ReaderRole = Annotated[Role, Depends(require("planner", "gateway", "cs_rep"))]
OrderReaderRole = Annotated[Role, Depends(require("cs_rep", "planner"))]
AdminRole = Annotated[Role, Depends(require())]
