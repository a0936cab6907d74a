"""Event intake: validate, verify signatures, dedup and queue — nothing malformed reaches Redis."""

from __future__ import annotations

import json
import time
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_binary_event
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import ContainerDep, GatewayRole
from api.signing import SignatureError, verify
from domain.events import CloudEvent, EventError, parse_event
from runtime.metrics import EVENTS

router = APIRouter(tags=["events"])


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
    EVENTS.labels(result="rejected").inc()
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=errors)


@router.post(
    "/v1/events",
    status_code=202,
    response_model=EventAccepted | BatchAccepted,
    responses={422: {"description": "invalid event; detail names each bad field"}},
)
async def post_events(request: Request, container: ContainerDep, _role: GatewayRole) -> JSONResponse:
    """Accept one CloudEvent or a JSON array of them; answer with the job per event."""
    body = await request.body()
    raw: Any
    try:
        raw = _binary_mode(request, body) if "ce-specversion" in request.headers else json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _unprocessable(
            [{"loc": "body", "msg": f"body is not valid JSON: {exc}", "type": "json_invalid"}]
        ) from None
    except ValueError as exc:
        raise _unprocessable([{"loc": "headers", "msg": str(exc), "type": "cloudevent_invalid"}]) from None
    batch = isinstance(raw, list)
    items: list[Any] = raw if batch else [raw]
    if batch and not items:
        raise _unprocessable([{"loc": "body", "msg": "empty batch", "type": "too_short"}])
    if len(items) > container.settings.max_batch:
        raise _unprocessable(
            [{"loc": "body", "msg": f"batch larger than {container.settings.max_batch} events", "type": "too_long"}]
        )
    _check_signatures(request, body, items, container.settings.secrets(), container.settings.signature_tolerance_s)
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
    out = [
        EventAccepted(job_id=r.job_id, event_id=e.id, source=e.source, duplicate=r.duplicate, status=r.status)
        for e, r in zip(events, results, strict=True)
    ]
    dups = sum(r.duplicate for r in out)
    EVENTS.labels(result="accepted").inc(len(out) - dups)
    EVENTS.labels(result="duplicate").inc(dups)
    if batch:
        payload: BaseModel = BatchAccepted(jobs=out, accepted=len(out) - dups, duplicates=dups)
    else:
        payload = out[0]
    return JSONResponse(payload.model_dump(), status_code=202)


def _binary_mode(request: Request, body: bytes) -> dict[str, Any]:
    """A CloudEvent in HTTP binary mode (``ce-*`` headers, data as the body), via the cloudevents SDK."""
    try:
        event = from_binary_event(HTTPMessage(headers=dict(request.headers), body=body))
    except Exception as exc:  # noqa: BLE001 - the SDK raises several types; all mean a bad request
        raise ValueError(f"not a valid binary-mode CloudEvent: {exc}") from None
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


def _check_signatures(request: Request, body: bytes, items: list[Any], secrets: dict[str, str], tolerance: int) -> None:
    """Every source in the body that has a secret must have signed this exact body."""
    if not secrets:
        return
    sources = {str(i.get("source")) for i in items if isinstance(i, dict) and i.get("source") in secrets}
    header = request.headers.get("x-crossdock-signature")
    for source in sorted(sources):
        try:
            verify(header, body, secrets[source], tolerance)
        except SignatureError as exc:
            EVENTS.labels(result="unauthorized").inc()
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"source {source!r}: {exc}") from None
