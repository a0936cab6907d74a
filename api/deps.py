"""Request dependencies: the container, and API-key authentication with role checks.

A key belongs to a named person (``runtime.settings.KeyHolder``): what they do is recorded as
``role:name`` (``planner:alice``) in the audit trail, on decisions and in the logs. A ``cs_rep``
key bound to customers sees only their orders (``Principal.may_see``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import structlog
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


@dataclass(frozen=True)
class Principal:
    """Who calls: the key holder's role and name, and the customers a bound cs_rep key may see."""

    role: Role
    name: str
    key_id: str  # a prefix of the key's hash, for what a key owns (chat conversations); never the key
    customers: frozenset[str] | None = None  # None: not bound to customers

    @property
    def actor(self) -> str:
        """How the audit trail, decisions and logs name this caller: ``planner:alice``."""
        return f"{self.role}:{self.name}"

    def may_see(self, customer: str | None) -> bool:
        """Whether an order of ``customer`` is visible to this key (always, unless it is bound)."""
        return self.customers is None or customer in self.customers


def authenticate(request: Request, container: Container, allowed: frozenset[str]) -> Principal:
    """The caller (401 without a valid key, 403 when its role is not in ``allowed``), without
    FastAPI's dependency resolution: what ``identify`` and ``require`` do, for a hot route to call
    itself (``POST /v1/events``). ``allowed`` names admin too (``roles``)."""
    key = _presented_key(request)
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    hashed = hash_key(key)
    holder = container.settings.key_holder(hashed)
    if holder is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
    if holder.role not in allowed:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"role {holder.role!r} may not do this; needs one of {sorted(allowed)}"
        )
    who = Principal(holder.role, holder.name, hashed[:16], frozenset(holder.customers) if holder.customers else None)
    request.state.key_id = who.key_id
    request.state.principal = who
    structlog.contextvars.bind_contextvars(actor=who.actor)  # the request's log lines say who asked
    return who


def roles(*names: Role) -> frozenset[str]:
    """The roles that may do something: ``names`` and admin."""
    return frozenset(names) | {"admin"}


def identify(*names: Role) -> Callable[[Request, Container], Awaitable[Principal]]:
    """Dependency: a valid key (401 otherwise) whose role is in ``names`` or admin (403 otherwise);
    the caller as a ``Principal``."""
    allowed = roles(*names)

    # async on purpose: a sync dependency would cost a thread hop on every request.
    async def check(request: Request, container: ContainerDep) -> Principal:
        return authenticate(request, container, allowed)

    return check


def require(*names: Role) -> Callable[[Request, Container], Awaitable[Role]]:
    """Dependency: as ``identify``, the caller's role only."""
    allowed = roles(*names)

    async def check(request: Request, container: ContainerDep) -> Role:
        return authenticate(request, container, allowed).role

    return check


GatewayRole = Annotated[Role, Depends(require("gateway"))]
PlannerRole = Annotated[Role, Depends(require("planner"))]
ReaderRole = Annotated[Role, Depends(require("planner", "gateway", "cs_rep"))]
OrderReaderRole = Annotated[Role, Depends(require("cs_rep", "planner"))]
AdminRole = Annotated[Role, Depends(require())]
Planner = Annotated[Principal, Depends(identify("planner"))]
OrderReader = Annotated[Principal, Depends(identify("cs_rep", "planner"))]
Admin = Annotated[Principal, Depends(identify())]
