"""The OpenAPI document as the API really behaves, and the docs pages served from this process.

FastAPI derives paths, parameters and success bodies from the routes. This adds what it cannot
see: the API-key security schemes (``Authorization: Bearer`` and ``X-API-Key``), the error shape
every error answer has (``{"detail": ...}``: a message, a list of ``{loc, msg, type}``, or an object
such as approve's ``{"error": "stale", ...}``), every status code an operation can answer, with
``Retry-After`` on 429 and 503, and the request body of ``POST /v1/events`` (whose route reads the
raw body itself).

Swagger UI (``/docs``) and ReDoc (``/redoc``) load their scripts from ``api/static/``, shipped with
their licences: nothing is fetched from a CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from api.routes.events import openapi_request_body

STATIC = Path(__file__).resolve().parent / "static"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
SECURITY_SCHEMES = {
    "HTTPBearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "the API key"},
}
REF_ERROR = {"$ref": "#/components/schemas/Error"}
RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer", "minimum": 0}}
}

# Status -> what it means, for every operation it applies to.
MEANINGS = {
    401: "no API key, or an unknown one (or, on intake, a missing, wrong or stale signature)",
    403: "the key's role may not call this (or, on intake, the key may not post for that source)",
    404: "no such resource (or not visible to this key)",
    409: "conflict: the resource is not in a state that allows this (see detail.error)",
    413: "request body larger than CROSSDOCK_MAX_BODY_BYTES",
    415: "Content-Type is not application/json (or application/cloudevents+json, cloudevents-batch+json)",
    422: "invalid request: detail lists each bad field as {loc, msg, type} (JSON too deep, numbers not finite, ...)",
    429: "this key's rate limit is used up: retry after Retry-After seconds",
    502: "a connected system (WMS, ERP, OMS) is unreachable or returned a malformed record",
    503: "Redis or the store is unavailable (retry after Retry-After seconds), or an execution was interrupted",
}
# What particular operations answer besides the generic codes.
SPECIFIC: dict[tuple[str, str], tuple[int, ...]] = {
    ("get", "/v1/jobs/{job_id}"): (404,),
    ("get", "/v1/decisions/{decision_id}"): (404,),
    ("post", "/v1/decisions/{decision_id}/approve"): (404, 409, 502),
    ("post", "/v1/decisions/{decision_id}/reject"): (404, 409, 502),
    ("get", "/v1/orders/{order_id}"): (404, 502),
    ("get", "/v1/orders/at-risk"): (502,),
    ("post", "/v1/chat"): (404, 409, 429, 502),
    ("post", "/v1/chat/stream"): (404, 409, 429, 502),
    ("get", "/v1/crews/triage/{job_id}"): (404,),
    ("post", "/v1/events"): (429,),
    ("post", "/v1/dead-letters/{job_id}/replay"): (404, 409),
}
# Operations whose success is not JSON: the media type and its schema (an SSE stream's is one event's).
SSE_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {"event": {"type": "string", "enum": ["token", "final"]}, "data": {"type": "string"}},
    "description": "token events carry {text}, then one final event carries the whole reply (as /v1/chat)",
}
MEDIA: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("post", "/v1/chat/stream"): ("text/event-stream", SSE_EVENT),
    ("get", "/metrics"): ("text/plain", {"type": "string", "description": "Prometheus text exposition format"}),
}
BODY_METHODS = frozenset({"post", "put", "patch"})

ERROR_SCHEMAS: dict[str, Any] = {
    "FieldError": {
        "title": "FieldError",
        "type": "object",
        "required": ["loc", "msg", "type"],
        "properties": {
            "loc": {"type": "string", "description": "the field's dotted path, e.g. data.lines.0.qty"},
            "msg": {"type": "string"},
            "type": {"type": "string"},
        },
    },
    "Error": {
        "title": "Error",
        "type": "object",
        "required": ["detail"],
        "properties": {
            "detail": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
                    {"type": "object"},
                ]
            }
        },
    },
}


def document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of ``app`` with security, error answers and the intake body (cached)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas.update(ERROR_SCHEMAS)
    components["securitySchemes"] = SECURITY_SCHEMES
    body, body_schemas = openapi_request_body()
    for name, definition in body_schemas.items():
        schemas.setdefault(name, definition)
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "patch", "delete"):
                continue
            if (method, path) == ("post", "/v1/events"):
                op["requestBody"] = body
            _complete(op, method, path)
    app.openapi_schema = schema
    return schema


def _complete(op: dict[str, Any], method: str, path: str) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    codes: set[int] = set(SPECIFIC.get((method, path), ()))
    if path not in OPEN_PATHS:
        op["security"] = [{"HTTPBearer": []}, {"APIKeyHeader": []}]
        codes |= {401, 403, 503}
    if method in BODY_METHODS:
        codes |= {413, 415, 422}
    if op.get("parameters") or op.get("requestBody") or "422" in responses:
        codes.add(422)
    if any(p.get("in") == "path" for p in op.get("parameters", [])):
        codes.add(404)  # a path names a resource, which may not exist (or not be visible to this key)
    for code in sorted(codes):
        entry = responses.setdefault(str(code), {})
        entry["description"] = entry.get("description") or MEANINGS[code]
        if code == 422 or entry.get("description") == "Validation Error":
            entry["description"] = MEANINGS[422]
        entry["content"] = {"application/json": {"schema": REF_ERROR}}
        if code in (429, 503):
            entry["headers"] = RETRY_AFTER
    media = MEDIA.get((method, path))
    if media is not None:
        for status, answer in responses.items():
            if status.startswith("2"):
                answer["content"] = {media[0]: {"schema": media[1]}}
    if path == "/readyz":  # not ready answers the same body as ready, with 503
        ok = responses.get("200", {}).get("content", {"application/json": {"schema": {"type": "object"}}})
        responses["503"] = {"description": "not ready: Redis or the store is unreachable", "content": ok}


def install(app: FastAPI) -> None:
    """The OpenAPI generator, the static assets and the docs pages (Swagger UI, ReDoc)."""
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url="/static/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui.css",
            swagger_favicon_url="data:,",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            redoc_js_url="/static/redoc.standalone.js",
            redoc_favicon_url="data:,",
            with_google_fonts=False,
        )
