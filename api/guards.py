"""What a request may carry, checked before any route runs: one ASGI middleware.

- a body larger than ``CROSSDOCK_MAX_BODY_BYTES`` answers 413 (``Content-Length`` is checked first,
  then the bytes as they arrive, so a lying or chunked request is cut off too);
- on the JSON API (``/v1/...``), a body whose ``Content-Type`` is not JSON answers 415 (no
  ``Content-Type`` is read as JSON), and JSON nested deeper than ``CROSSDOCK_MAX_JSON_DEPTH``, or
  holding ``NaN`` / ``Infinity`` or a number out of a float's range, answers 422;
- per-key rate limits on ``POST /v1/events`` (events per second, a batch counts each event) and on
  the chat (requests per minute) answer 429 with ``Retry-After``: a fixed window per key in Redis;
- every request is counted by route and status, with its latency (``runtime.metrics``).

The parsed body is kept in the request state (``json_body``), so intake does not parse it twice.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import redis
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import Match

from runtime.metrics import HTTP_LATENCY, HTTP_REQUESTS, RATE_LIMITED
from runtime.settings import hash_key

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPES = frozenset({"application/json", "application/cloudevents+json", "application/cloudevents-batch+json"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
API_PREFIX = "/v1/"
CHAT_PATHS = frozenset({"/v1/chat", "/v1/chat/stream"})
RETRY_AFTER_UNAVAILABLE_S = 2


class JsonRejected(ValueError):
    """Valid JSON syntax that Crossdock refuses: too deep, or a number that is not finite."""

    def __init__(self, msg: str, type_: str) -> None:
        super().__init__(msg)
        self.msg = msg
        self.type = type_


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRejected(f"number {text[:40]} is out of range: only finite numbers are accepted", "finite_number")
    return value


def _no_constant(name: str) -> float:
    raise JsonRejected(f"{name} is not a JSON number: only finite numbers are accepted", "finite_number")


def too_deep(value: Any, limit: int) -> bool:
    """True when ``value`` nests objects/arrays more than ``limit`` levels (the top level is 1)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def loads(body: bytes, max_depth: int) -> Any:
    """Strict JSON: ``ValueError`` (a ``json.JSONDecodeError`` or ``UnicodeDecodeError``) for bad
    syntax or encoding, ``JsonRejected`` for nesting deeper than ``max_depth`` or a non-finite number."""
    try:
        value = json.loads(body, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise JsonRejected(f"JSON nested deeper than {max_depth} levels", "too_deep") from None
    # Nesting needs an opening bracket per level: a body with no more brackets than the limit
    # (counted in C, strings included) cannot be too deep, and is not walked.
    if body.count(b"[") + body.count(b"{") > max_depth and too_deep(value, max_depth):
        raise JsonRejected(f"JSON nested deeper than {max_depth} levels", "too_deep")
    return value


def media_type(content_type: str | None) -> str | None:
    return content_type.split(";", 1)[0].strip().lower() if content_type else None


def route_of(scope: Scope) -> str:
    """The route template a request matched (``/v1/jobs/{job_id}``), for metric labels."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", []):
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            return str(getattr(candidate, "path", "unmatched"))
    return "unmatched"


_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_MAX_CHILDREN = 4096  # a client can send any method: past this, children are looked up each time


def _metrics(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The request counter's and the latency histogram's children for these labels, bound once
    (``labels()`` costs a lock and a dict lookup per call)."""
    found = _CHILDREN.get((method, route, status))
    if found is None:
        found = (
            HTTP_REQUESTS.labels(method=method, route=route, status=str(status)),
            HTTP_LATENCY.labels(method=method, route=route),
        )
        if len(_CHILDREN) < _MAX_CHILDREN:
            _CHILDREN[(method, route, status)] = found
    return found


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class RequestGuard:
    """The middleware (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self._guarded(scope, receive, sending)
        finally:
            count, latency = _metrics(str(scope.get("method", "")), route_of(scope), status[0])
            count.inc()
            latency.observe(time.perf_counter() - started)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        container = getattr(getattr(scope.get("app"), "state", None), "container", None)
        if scope.get("method") not in BODY_METHODS or container is None:
            await self.app(scope, receive, send)
            return
        settings = container.settings
        headers = Headers(scope=scope)
        limit = int(settings.max_body_bytes)
        too_large = f"request body larger than {limit} bytes (CROSSDOCK_MAX_BODY_BYTES)"
        declared = headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _error(413, too_large)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _error(413, too_large)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        parsed: Any = None
        if body and str(scope.get("path", "")).startswith(API_PREFIX):  # the JSON API; not HTML forms
            kind = media_type(headers.get("content-type"))
            if kind is not None and kind not in JSON_TYPES:
                accepted = ", ".join(sorted(JSON_TYPES))
                await _error(415, f"Content-Type {kind!r} is not accepted; send one of: {accepted}")(
                    scope, receive, send
                )
                return
            try:
                parsed = loads(body, int(settings.max_json_depth))
            except JsonRejected as exc:
                await _error(422, [{"loc": "body", "msg": exc.msg, "type": exc.type}])(scope, receive, send)
                return
            except ValueError:
                parsed = None  # bad syntax: the route answers 422 with the parser's message
            else:
                scope.setdefault("state", {})["json_body"] = (body, parsed)
        refusal = await self._rate_limited(scope, container, headers, parsed)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _rate_limited(self, scope: Scope, container: Any, headers: Headers, parsed: Any) -> JSONResponse | None:
        """429 (or 503 when Redis is down) for a known key past its limit; None to go on."""
        settings = container.settings
        path, method = scope.get("path", ""), scope.get("method")
        if path == "/v1/events" and method == "POST" and settings.rate_limit_events_per_s > 0:
            kind, window_s, allowed = "events", 1, settings.rate_limit_events_per_s
            cost = len(parsed) if isinstance(parsed, list) and parsed else 1
        elif path in CHAT_PATHS and method == "POST" and settings.rate_limit_chat_per_min > 0:
            kind, window_s, allowed, cost = "chat", 60, settings.rate_limit_chat_per_min, 1
        else:
            return None
        key = _presented_key(headers)
        if key is None:
            return None
        hashed = hash_key(key)
        if hashed not in settings.key_hashes:
            return None  # unknown keys get their 401 from the route, and cost Redis nothing
        now = time.time()
        window = int(now // window_s)
        counter = f"{settings.stream_prefix}:ratelimit:{kind}:{hashed[:16]}:{window}"
        try:
            pipe = container.aredis.pipeline(transaction=False)
            pipe.incrby(counter, cost)
            pipe.expire(counter, window_s * 2)
            used, _ = await pipe.execute()
        except redis.RedisError as exc:
            return unavailable(exc)
        if int(used) <= allowed:
            return None
        RATE_LIMITED.labels(kind=kind).inc()
        retry_after = max(1, math.ceil((window + 1) * window_s - now))
        unit = "events per second" if kind == "events" else "chat requests per minute"
        variable = "CROSSDOCK_RATE_LIMIT_EVENTS_PER_S" if kind == "events" else "CROSSDOCK_RATE_LIMIT_CHAT_PER_MIN"
        message = f"rate limit: this key may send {allowed:g} {unit} ({variable}); retry in {retry_after} s"
        if cost > allowed:
            message = f"a batch of {cost} events is larger than this key's limit of {allowed:g} {unit} ({variable})"
        return _error(429, message, {"Retry-After": str(retry_after)})


def _presented_key(headers: Headers) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return headers.get("x-api-key") or None


def unavailable(exc: Exception) -> JSONResponse:
    """503 with Retry-After: Redis (the queue) cannot be reached right now."""
    return _error(
        503,
        f"the queue (Redis) is unavailable, retry shortly: {type(exc).__name__}: {str(exc)[:200]}",
        {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)},
    )
