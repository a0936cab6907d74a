"""Console sign-in: an API key, checked against the same hashes as the API, opens a server session.

* The session lives in Redis (``<prefix>:console:session:<sha256 of the token>``) with an idle
  expiry that each request renews, and an absolute one; the browser holds only a random token in an
  HttpOnly, SameSite=Strict cookie scoped to ``/console`` (Secure behind HTTPS).
* Every session is re-checked against the keys on every request: a key taken out of the settings,
  or given another role, ends its sessions.
* Every POST (forms and htmx actions) carries the session's CSRF token (a form field or the
  ``X-CSRF-Token`` header htmx sends); the sign-in form carries one of its own (a short-lived cookie).
* Failed sign-ins are counted per client address in Redis: too many and sign-in pauses.
* Who acts is ``role:name`` (``planner:alice``), the API's convention: a key without a name is named
  after its role.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import parse_qsl

import structlog
from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool

from runtime.bootstrap import Container
from runtime.settings import hash_key

COOKIE = "crossdock_console"
SIGNIN_COOKIE = "crossdock_console_signin"
PATH = "/console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"

Area = Literal["review", "service", "admin"]
# What each part of the console needs: the roles of the API routes it calls (admin may do everything).
AREAS: dict[Area, frozenset[str]] = {
    "review": frozenset({"planner", "admin"}),  # /v1/decisions, approve, reject, audit, policy (read)
    "service": frozenset({"cs_rep", "planner", "admin"}),  # /v1/chat, /v1/orders/{id}, /v1/orders/at-risk
    "admin": frozenset({"admin"}),  # /v1/dead-letters, PUT /v1/policy
}
CONSOLE_ROLES = AREAS["service"]  # a gateway key posts events: there is nothing for it here


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip().isdigit() else default


@dataclass
class ConsoleConfig:
    """Session lifetimes and the sign-in throttle (``CROSSDOCK_CONSOLE_IDLE_S``, ``_MAX_S``)."""

    idle_s: int = field(default_factory=lambda: _env_int("CROSSDOCK_CONSOLE_IDLE_S", 30 * 60))
    max_s: int = field(default_factory=lambda: _env_int("CROSSDOCK_CONSOLE_MAX_S", 12 * 3600))
    max_failures: int = 10
    failure_window_s: int = 300


@dataclass(frozen=True)
class User:
    """Who is signed in: the key holder's role and name; a bound cs_rep key sees only its customers."""

    role: str
    name: str
    key_hash: str
    customers: tuple[str, ...] | None = None

    @property
    def key_id(self) -> str:
        """What the API calls the key (a hash prefix): chat conversations belong to it."""
        return self.key_hash[:16]

    @property
    def actor(self) -> str:
        """How the audit trail names this person: ``planner:alice`` (``planner:planner`` unnamed)."""
        return f"{self.role}:{self.name}"

    def can(self, area: Area) -> bool:
        return self.role in AREAS[area]

    def may_see(self, customer: str | None) -> bool:
        return self.customers is None or customer in self.customers


@dataclass(frozen=True)
class Session:
    token_hash: str
    user: User
    csrf: str
    created: float
    conversation: str | None = None


class SignInRequired(Exception):
    """No valid session: sign in (``expired``: there was one, and it ended)."""

    def __init__(self, expired: bool = False) -> None:
        super().__init__("sign in")
        self.expired = expired


class Forbidden(Exception):
    """The signed-in role may not use this part of the console (the API would answer 403)."""

    def __init__(self, user: User, area: Area) -> None:
        super().__init__(f"role {user.role!r} may not use {area}")
        self.user = user
        self.area = area


class CsrfFailed(Exception):
    """A POST without the session's CSRF token."""


class PageError(Exception):
    """A console page that cannot be shown: the status, what went wrong and what to do."""

    def __init__(self, status_code: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.hint = hint


def user_for_key_hash(container: Container, hashed: str) -> User | None:
    """The key's holder, read the way ``api/deps.py`` reads it (``settings.key_holder`` when the
    settings have named keys, the role otherwise); None for an unknown key."""
    settings = container.settings
    holder_of = getattr(settings, "key_holder", None)
    if callable(holder_of):
        holder = holder_of(hashed)
        if holder is None:
            return None
        customers = tuple(getattr(holder, "customers", ()) or ())
        return User(str(holder.role), str(holder.name), hashed, customers or None)
    role = settings.key_hashes.get(hashed)
    return None if role is None else User(str(role), str(role), hashed)


def resolve_key(container: Container, key: str) -> User | None:
    return user_for_key_hash(container, hash_key(key.strip())) if key.strip() else None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Console sessions in Redis (the API's asyncio client when it has one)."""

    def __init__(self, container: Container, config: ConsoleConfig) -> None:
        self.container = container
        self.config = config
        self.prefix = f"{container.settings.stream_prefix}:console"

    async def _call(self, command: str, *args: Any) -> Any:
        aredis = self.container.aredis
        if aredis is not None:
            return await getattr(aredis, command)(*args)
        return await run_in_threadpool(getattr(self.container.redis, command), *args)

    def _key(self, token_hash: str) -> str:
        return f"{self.prefix}:session:{token_hash}"

    async def create(self, user: User) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(_token_hash(token), user, secrets.token_urlsafe(32), time.time())
        await self._save(session)
        return token, session

    async def _save(self, session: Session) -> None:
        body = {
            "role": session.user.role,
            "name": session.user.name,
            "key_hash": session.user.key_hash,
            "csrf": session.csrf,
            "created": session.created,
            "conversation": session.conversation,
        }
        await self._call("set", self._key(session.token_hash), json.dumps(body), self.config.idle_s)

    async def load(self, token: str) -> Session | None:
        """The session for a cookie's token, its idle expiry renewed; None when it has ended, its key
        is gone, or its key's role changed."""
        token_hash = _token_hash(token)
        raw = await self._call("get", self._key(token_hash))
        if raw is None:
            return None
        body = json.loads(raw)
        if time.time() - float(body["created"]) > self.config.max_s:
            await self.drop(token)
            return None
        user = user_for_key_hash(self.container, str(body["key_hash"]))
        if user is None or user.role != body["role"]:
            await self.drop(token)
            return None
        await self._call("expire", self._key(token_hash), self.config.idle_s)
        return Session(token_hash, user, str(body["csrf"]), float(body["created"]), body.get("conversation"))

    async def update(self, session: Session, **changes: Any) -> Session:
        session = replace(session, **changes)
        await self._save(session)
        return session

    async def drop(self, token: str) -> None:
        await self._call("delete", self._key(_token_hash(token)))

    # -- the sign-in throttle

    def _failures_key(self, client: str) -> str:
        return f"{self.prefix}:signin-failures:{hashlib.sha256(client.encode()).hexdigest()[:24]}"

    async def throttled(self, client: str) -> bool:
        raw = await self._call("get", self._failures_key(client))
        return raw is not None and int(raw) >= self.config.max_failures

    async def failed(self, client: str) -> None:
        key = self._failures_key(client)
        await self._call("incr", key)
        await self._call("expire", key, self.config.failure_window_s)


def config_of(request: Request) -> ConsoleConfig:
    config = getattr(request.app.state, "console_config", None)
    if not isinstance(config, ConsoleConfig):
        config = ConsoleConfig()
        request.app.state.console_config = config
    return config


def sessions_of(request: Request) -> Sessions:
    container: Container = request.app.state.container
    return Sessions(container, config_of(request))


def secure(request: Request) -> bool:
    """Mark cookies Secure when the browser talks HTTPS (directly or through a proxy that says so)."""
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https"


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure(request), path=PATH)


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict", secure=secure(request))


async def current_session(request: Request) -> Session:
    """The signed-in session (SignInRequired otherwise); cached on the request."""
    cached = getattr(request.state, "console_session", None)
    if isinstance(cached, Session):
        return cached
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired()
    session = await sessions_of(request).load(token)
    if session is None:
        raise SignInRequired(expired=True)
    request.state.console_session = session
    request.state.key_id = session.user.key_id  # what the API's chat reads: conversations are per key
    structlog.contextvars.bind_contextvars(actor=session.user.actor)  # the request's log lines say who
    return session


async def require_area(request: Request, area: Area) -> Session:
    session = await current_session(request)
    if not session.user.can(area):
        raise Forbidden(session.user, area)
    return session


async def form_of(request: Request) -> dict[str, list[str]]:
    """The urlencoded form of a POST (what htmx and plain forms send), each field's values in order."""
    cached = getattr(request.state, "console_form", None)
    if isinstance(cached, dict):
        return cached
    body = (await request.body()).decode("utf-8", errors="replace")
    form: dict[str, list[str]] = {}
    for k, v in parse_qsl(body, keep_blank_values=True):
        form.setdefault(k, []).append(v)
    request.state.console_form = form
    return form


def first(form: dict[str, list[str]], name: str, default: str = "") -> str:
    values = form.get(name)
    return values[0] if values else default


async def check_csrf(request: Request, session: Session) -> None:
    """The session's token, from the htmx header or the form's hidden field; CsrfFailed otherwise."""
    presented = request.headers.get(CSRF_HEADER) or first(await form_of(request), CSRF_FIELD)
    if not presented or not secrets.compare_digest(presented, session.csrf):
        raise CsrfFailed()


async def acting(request: Request, area: Area) -> Session:
    """A POST by a signed-in user allowed in ``area``, with a valid CSRF token."""
    session = await require_area(request, area)
    await check_csrf(request, session)
    return session
