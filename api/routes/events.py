"""Event intake: validate, verify signatures, dedup and queue — nothing malformed reaches Redis."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_binary_event
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.deps import authenticate, roles
from api.guards import JsonRejected, loads
from api.signing import SignatureError, lookalike, verify
from domain.events import DATA_SCHEMAS, INTERNAL_TYPES, CloudEvent, EventError, parse_event
from runtime.bootstrap import Container
from runtime.metrics import EVENTS
from runtime.settings import Settings


class IntakeRoute(APIRoute):
    """A route FastAPI documents from its endpoint as any other (answers, ``response_model``, the
    OpenAPI schema), whose requests go straight to the endpoint: it takes the request alone and
    returns its Response, and no dependency or parameter resolution runs per request (a sixth of
    intake's time). The endpoint checks the key itself (``deps.authenticate``). A dependency would
    never run here, so one given to the route is refused; the app and the include add none."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        if self.dependant.dependencies:
            raise TypeError(f"{self.path}: an IntakeRoute runs no dependencies; check in the endpoint")
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint


router = APIRouter(tags=["events"], route_class=IntakeRoute)

GATEWAY = roles("gateway")
# Bound once: ``labels()`` looks the child up on every call.
REJECTED, ACCEPTED, DUPLICATE = (EVENTS.labels(result=r) for r in ("rejected", "accepted", "duplicate"))


class EventAccepted(BaseModel):
    job_id: str
    event_id: str
    source: str
    duplicate: bool
    status: str


class BatchAccepted(BaseModel):
    jobs: list[EventAccepted]
    accepted: int
    duplicates: int


def _unprocessable(errors: list[dict[str, Any]]) -> HTTPException:
    REJECTED.inc()
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=errors)


@router.post(
    "/v1/events",
    status_code=202,
    response_model=EventAccepted | BatchAccepted,
    responses={422: {"description": "invalid event; detail names each bad field"}},
)
async def post_events(request: Request) -> JSONResponse:
    """Accept one CloudEvent or a JSON array of them; answer with the job per event."""
    # The key is checked here rather than by a FastAPI dependency (GatewayRole): the same check
    # (deps.authenticate); the route resolves no dependencies (IntakeRoute).
    container: Container = request.app.state.container
    authenticate(request, container, GATEWAY)
    guarded = getattr(request.state, "json_body", None)  # the guard's read (and parse) of this body
    body = guarded[0] if isinstance(guarded, tuple) else await request.body()
    settings = container.settings
    raw: Any
    try:
        raw = _binary_mode(request, body) if "ce-specversion" in request.headers else _json(request, body, settings)
    except BinaryModeError as exc:
        raise _unprocessable([{"loc": "headers", "msg": str(exc), "type": "cloudevent_invalid"}]) from None
    except JsonRejected as exc:
        raise _unprocessable([{"loc": "body", "msg": exc.msg, "type": exc.type}]) from None
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError, an integer too long to read
        raise _unprocessable(
            [{"loc": "body", "msg": f"body is not valid JSON: {exc}", "type": "json_invalid"}]
        ) from None
    batch = isinstance(raw, list)
    items: list[Any] = raw if batch else [raw]
    if batch and not items:
        raise _unprocessable([{"loc": "body", "msg": "empty batch", "type": "too_short"}])
    if len(items) > settings.max_batch:
        raise _unprocessable(
            [{"loc": "body", "msg": f"batch larger than {settings.max_batch} events", "type": "too_long"}]
        )
    _check_signatures(request, body, items, settings)
    _check_bound_sources(request, items, settings.source_bindings)
    events: list[CloudEvent] = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        try:
            events.append(parse_event(item, (i,) if batch else ()))
        except EventError as exc:
            errors.extend(exc.errors)
    if errors:
        raise _unprocessable(errors)
    accepted_at = repr(time.time())
    results = await container.queue.enqueue_many_async(
        container.aredis, [(e.key, e.type, e.model_dump_json(), accepted_at) for e in events]
    )
    # EventAccepted's fields, as a dict: every value already has its type, so no model is built.
    out = [
        {"job_id": r.job_id, "event_id": e.id, "source": e.source, "duplicate": r.duplicate, "status": r.status}
        for e, r in zip(events, results, strict=True)
    ]
    dups = sum(r.duplicate for r in results)
    ACCEPTED.inc(len(out) - dups)
    DUPLICATE.inc(dups)
    payload = {"jobs": out, "accepted": len(out) - dups, "duplicates": dups} if batch else out[0]
    return JSONResponse(payload, status_code=202)


def _json(request: Request, body: bytes, settings: Settings) -> Any:
    """The body as strict JSON (finite numbers, bounded depth); the guard middleware's parse when
    it made one of this very body."""
    parsed = getattr(request.state, "json_body", None)
    if isinstance(parsed, tuple) and parsed[0] == body:
        return parsed[1]
    return loads(body, settings.max_json_depth)


class BinaryModeError(ValueError):
    """The ``ce-*`` headers do not make a CloudEvent."""


def _binary_mode(request: Request, body: bytes) -> dict[str, Any]:
    """A CloudEvent in HTTP binary mode (``ce-*`` headers, data as the body), via the cloudevents SDK."""
    try:
        event = from_binary_event(HTTPMessage(headers=dict(request.headers), body=body))
    except Exception as exc:  # noqa: BLE001 - the SDK raises several types; all mean a bad request
        raise BinaryModeError(f"not a valid binary-mode CloudEvent: {exc}") from None
    envelope: dict[str, Any] = {
        "specversion": event.get_specversion(),
        "id": event.get_id(),
        "source": event.get_source(),
        "type": event.get_type(),
        "data": event.get_data(),
    }
    for name, value in (("time", event.get_time()), ("subject", event.get_subject())):
        if value is not None:
            envelope[name] = value.isoformat() if hasattr(value, "isoformat") else value
    return envelope


def _sources(items: list[Any]) -> set[str]:
    return {i["source"] for i in items if isinstance(i, dict) and isinstance(i.get("source"), str)}


def _refuse(code: int, message: str) -> HTTPException:
    EVENTS.labels(result="unauthorized" if code == 401 else "forbidden").inc()
    return HTTPException(code, message)


def _check_signatures(request: Request, body: bytes, items: list[Any], settings: Settings) -> None:
    """Every source in the body that has a secret must have signed this exact body. Sources are
    compared exactly as configured: one that differs from a signed source only by case, whitespace
    or a trailing slash is refused, not taken for another source. With
    ``CROSSDOCK_REQUIRE_SIGNATURES`` every source needs a secret and a signature."""
    secrets = settings.secrets()
    if not secrets and not settings.require_signatures:
        return
    header = request.headers.get("x-crossdock-signature")
    for source in sorted(_sources(items)):
        if source in secrets:
            try:
                verify(header, body, secrets[source], settings.signature_tolerance_s)
            except SignatureError as exc:
                raise _refuse(401, f"source {source!r}: {exc}") from None
            continue
        twin = lookalike(source, secrets)
        if twin is not None:
            raise _refuse(
                401,
                f"source {source!r} is not the signed source {twin!r}: sources are compared exactly, "
                "a difference of case, whitespace or a trailing slash makes another source",
            )
        if settings.require_signatures:
            raise _refuse(
                401, f"source {source!r} has no signing secret and CROSSDOCK_REQUIRE_SIGNATURES is on (unsigned)"
            )


def _check_bound_sources(request: Request, items: list[Any], bindings: dict[str, frozenset[str]]) -> None:
    """A key bound to sources (``CROSSDOCK_GATEWAY_SOURCES``, by its holder's name or its id) may
    post only for them: 403 otherwise."""
    if not bindings:
        return
    principal = getattr(request.state, "principal", None)
    name, key_id = getattr(principal, "name", None), getattr(request.state, "key_id", None)
    allowed = bindings.get(name) if isinstance(name, str) and name in bindings else bindings.get(str(key_id))
    if allowed is None:
        return
    foreign = sorted(_sources(items) - allowed)
    if foreign:
        raise _refuse(403, f"this key may post events only for {sorted(allowed)}, not for {foreign}")


# Printable, and neither starting nor ending with whitespace (``CloudEvent._source_as_sent``).
SOURCE_PATTERN = r"^[^\s\x00-\x1f\x7f]([^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"


def openapi_request_body() -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI ``requestBody`` of ``POST /v1/events`` and the component schemas it refers to:
    a CloudEvent per public type (its ``type`` fixed, its ``data`` that type's schema), or an array
    of them. The route reads the raw body itself (binary mode, signatures), so FastAPI cannot
    derive this."""
    public = sorted(t for t in DATA_SCHEMAS if t not in INTERNAL_TYPES)
    models = sorted({DATA_SCHEMAS[t] for t in public}, key=lambda m: m.__name__)
    _, top = models_json_schema([(m, "validation") for m in models], ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = dict(top.get("$defs", {}))
    variants = []
    for type_ in public:
        name = "CloudEvent_" + type_.replace(".", "_")
        components[name] = {
            "type": "object",
            "title": f"{type_} (CloudEvents 1.0, structured mode)",
            "required": ["specversion", "id", "source", "type", "data"],
            "properties": {
                "specversion": {"type": "string", "enum": ["1.0"]},
                "id": {"type": "string", "minLength": 1, "maxLength": 256},
                "source": {"type": "string", "minLength": 1, "maxLength": 512, "pattern": SOURCE_PATTERN},
                "type": {"type": "string", "enum": [type_]},
                "time": {"type": "string", "format": "date-time"},
                "subject": {"type": "string"},
                "datacontenttype": {"type": "string", "enum": ["application/json"]},
                "data": {"$ref": f"#/components/schemas/{DATA_SCHEMAS[type_].__name__}"},
            },
            "additionalProperties": True,
        }
        variants.append({"$ref": f"#/components/schemas/{name}"})
    components["CloudEvent"] = {"title": "CloudEvent", "oneOf": variants}
    components["CloudEventBatch"] = {
        "title": "CloudEvent batch",
        "type": "array",
        "items": {"$ref": "#/components/schemas/CloudEvent"},
        "minItems": 1,
        "maxItems": 1000,
    }
    one = {"$ref": "#/components/schemas/CloudEvent"}
    many = {"$ref": "#/components/schemas/CloudEventBatch"}
    body = {
        "required": True,
        "description": "One CloudEvent or an array of them (at most CROSSDOCK_MAX_BATCH). Binary mode (ce-* "
        "headers, the data as the body) is accepted too. Numbers must be finite JSON numbers.",
        "content": {
            "application/json": {"schema": {"oneOf": [one, many]}},
            "application/cloudevents+json": {"schema": one},
            "application/cloudevents-batch+json": {"schema": many},
        },
    }
    return body, components
