"""The planner and service console: server-rendered pages (Jinja2) made interactive with htmx.

Every page checks the session's role against the roles the matching API route allows, and every
action calls the service the API route calls (the decision service, the chat's ``_converse``, the
at-risk reader), so the console can do nothing the API would refuse.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from api.console import queries, reviews, shipby
from api.console.auth import (
    CONSOLE_ROLES,
    COOKIE,
    CSRF_FIELD,
    SIGNIN_COOKIE,
    Area,
    PageError,
    Session,
    acting,
    check_csrf,
    clear_session_cookie,
    config_of,
    current_session,
    first,
    form_of,
    require_area,
    resolve_key,
    secure,
    sessions_of,
    set_session_cookie,
)
from api.console.timeline import NotVisible, order_timeline
from api.console.views import (
    age,
    binding_constraints,
    changes_by_system,
    evidence_tables,
    fmt_num,
    money,
    pct,
    review_summary,
    when,
)
from domain.decisions import Decision
from domain.errors import ConnectorError
from runtime.bootstrap import Container
from runtime.lifecycle import ChangeRejected

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals.update(when=when, age=age, money=money, pct=pct, fmt_num=fmt_num)
templates.env.filters.update(when=when, age=age, money=money, pct=pct, num=fmt_num)

router = APIRouter(prefix="/console", include_in_schema=False)

STREAM_POLL_S = 1.0
STREAM_MAX_S = 45.0  # the browser reconnects by itself; a stream never outlives a server stop by long
ORDER_WORKFLOWS = frozenset({"order_release", "allocation", "customer_service", "exception_triage"})
NOT_ORDERS = frozenset({"waves", "backlog"})


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def _nav(session: Session) -> list[tuple[str, str]]:
    """The pages this role may open (and only those)."""
    user = session.user
    items: list[tuple[str, str]] = []
    if user.can("review"):
        items += [("/console/queue", "Review queue"), ("/console/kpis", "KPIs"), ("/console/audit", "Audit")]
        items += [("/console/policy", "Policy"), ("/console/autonomy", "Autonomy"), ("/console/replay", "Replay")]
    if user.can("service"):
        items += [("/console/chat", "Customer chat"), ("/console/at-risk", "At-risk orders")]
    if user.can("admin"):
        items += [("/console/dead-letters", "Dead letters")]
    return items


def render(
    request: Request, template: str, session: Session | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    context.update(
        request=request,
        session=session,
        user=session.user if session else None,
        nav=_nav(session) if session else [],
        path=request.url.path,
        now=datetime.now(UTC),
        csrf_field=CSRF_FIELD,
    )
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    return response


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"


def looks_like_order(workflow: str, subject: str) -> bool:
    return workflow in ORDER_WORKFLOWS and subject not in NOT_ORDERS and not any(c in subject for c in ":@/ ")


templates.env.globals.update(looks_like_order=looks_like_order)


# ------------------------------------------------------------------------------ sign-in


@router.get("")
@router.get("/")
async def home(request: Request) -> Response:
    session = await current_session(request)
    target = "/console/queue" if session.user.can("review") else "/console/chat"
    return RedirectResponse(target, status_code=303)


def _signin_page(request: Request, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    import secrets

    token = secrets.token_urlsafe(24)
    notice = None
    if request.query_params.get("expired"):
        notice = "Your session has ended. Sign in again to carry on."
    elif request.query_params.get("signed_out"):
        notice = "You are signed out."
    idle_min = config_of(request).idle_s // 60
    response = render(
        request, "signin.html", None, status_code, error=error, notice=notice, signin_token=token, idle_min=idle_min
    )
    response.set_cookie(
        SIGNIN_COOKIE, token, max_age=900, httponly=True, samesite="strict", secure=secure(request), path="/console"
    )
    return response


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    return _signin_page(request)


@router.post("/signin")
async def signin(request: Request) -> Response:
    import secrets

    form = await form_of(request)
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    presented = first(form, CSRF_FIELD)
    if not expected or not presented or not secrets.compare_digest(expected, presented):
        return _signin_page(request, "The sign-in form had expired. Please try again.", 400)
    sessions = sessions_of(request)
    client = request.client.host if request.client else "unknown"
    if await sessions.throttled(client):
        return _signin_page(
            request, "Too many failed sign-ins from this address. Wait five minutes, then try again.", 429
        )
    user = resolve_key(_container(request), first(form, "key"))
    if user is None:
        await sessions.failed(client)
        return _signin_page(request, "That API key is not known. Check it and try again.", 401)
    if user.role not in CONSOLE_ROLES:
        return _signin_page(
            request,
            f"A {user.role} key cannot use the console: it only posts events. Sign in with a planner, "
            "customer-service or admin key.",
            403,
        )
    previous = request.cookies.get(COOKIE)
    if previous:  # signing in again replaces the session (never reuse a token from before)
        await sessions.drop(previous)
    token, _ = await sessions.create(user)
    target = first(form, "next")
    if not (target.startswith("/console/") and "//" not in target and "\\" not in target):
        target = "/console"
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(request, response, token)
    response.delete_cookie(SIGNIN_COOKIE, path="/console")
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    session = await current_session(request)
    await check_csrf(request, session)
    token = request.cookies.get(COOKIE)
    if token:
        await sessions_of(request).drop(token)
    response = RedirectResponse("/console/signin?signed_out=1", status_code=303)
    clear_session_cookie(request, response)
    return response


# ------------------------------------------------------------------------------ review queue


def _float(value: str | None) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def _int(value: str | None, default: int) -> int:
    try:
        return int(value or default)
    except ValueError:
        return default


def queue_filter(params: Any) -> queries.QueueFilter:
    sort = params.get("sort") or "age"
    return queries.QueueFilter(
        status=params.get("status") or None,
        workflow=params.get("workflow") or None,
        q=(params.get("q") or "").strip()[:100] or None,
        min_value=_float(params.get("min_value")),
        max_value=_float(params.get("max_value")),
        min_age_h=_float(params.get("min_age_h")),
        max_age_h=_float(params.get("max_age_h")),
        sort=sort if sort in queries.SORTS else "age",
        desc=params.get("dir") == "desc",
        page=max(1, _int(params.get("page"), 1)),
        size=_int(params.get("size"), 50),
    )


def filter_query(f: queries.QueueFilter, **override: Any) -> str:
    values: dict[str, Any] = {
        "status": f.status or "",
        "workflow": f.workflow or "",
        "q": f.q or "",
        "min_value": "" if f.min_value is None else fmt_num(f.min_value).replace(",", ""),
        "max_value": "" if f.max_value is None else fmt_num(f.max_value).replace(",", ""),
        "min_age_h": "" if f.min_age_h is None else fmt_num(f.min_age_h).replace(",", ""),
        "max_age_h": "" if f.max_age_h is None else fmt_num(f.max_age_h).replace(",", ""),
        "sort": f.sort,
        "dir": "desc" if f.desc else "asc",
        "size": f.size,
        "page": f.page,
    }
    values.update(override)
    return urlencode({k: v for k, v in values.items() if v not in ("", None)})


templates.env.globals.update(filter_query=filter_query)


def _queue_data(container: Container, f: queries.QueueFilter) -> dict[str, Any]:
    page = queries.review_queue(container.store, f)
    orders = [r.subject for r in page.rows if looks_like_order(r.workflow, r.subject)]
    dates, complete = shipby.ship_by(container, orders)
    return {"page": page, "ship_by": dates, "ship_by_complete": complete, "f": f}


async def _queue_context(request: Request, f: queries.QueueFilter, selected: set[str]) -> dict[str, Any]:
    try:
        data = await run_in_threadpool(_queue_data, _container(request), f)
        data["error"] = None
    except Exception as exc:  # noqa: BLE001 - the page says what failed and what to do
        data = {"page": None, "ship_by": {}, "ship_by_complete": True, "f": f, "error": f"{type(exc).__name__}: {exc}"}
    data["selected"] = selected
    data["workflows_all"] = sorted(
        [
            "order_release",
            "allocation",
            "reconciliation",
            "discrepancy",
            "exception_triage",
            "backorder_prevention",
            "customer_service",
        ]
    )
    data["sorts"] = queries.SORTS
    data["sizes"] = queries.PAGE_SIZES
    return data


@router.get("/queue")
async def queue(request: Request) -> Response:
    session = await require_area(request, "review")
    f = queue_filter(request.query_params)
    context = await _queue_context(request, f, set(request.query_params.getlist("ids")))
    return render(request, "queue.html", session, results=None, **context)


@router.get("/queue/rows")
async def queue_rows(request: Request) -> Response:
    session = await require_area(request, "review")
    f = queue_filter(request.query_params)
    context = await _queue_context(request, f, set(request.query_params.getlist("ids")))
    response = render(request, "_queue_rows.html", session, **context)
    if request.query_params.get("push") != "no":
        response.headers["HX-Push-Url"] = f"/console/queue?{filter_query(f)}"
    return response


@router.get("/queue/stream")
async def queue_stream(request: Request) -> Response:
    """Server-Sent Events: ``changed`` whenever a decision is recorded, superseded or settled (the
    store's newest ``updated_at`` moves), so the queue re-reads its page."""
    await require_area(request, "review")
    store = _container(request).store

    async def events() -> AsyncIterator[str]:
        last = await run_in_threadpool(queries.change_mark, store)
        yield f"retry: 2000\nevent: ready\ndata: {json.dumps({'live': last[1]})}\n\n"
        started = beat = time.monotonic()
        while time.monotonic() - started < STREAM_MAX_S:
            await asyncio.sleep(STREAM_POLL_S)
            if await request.is_disconnected():
                return
            mark = await run_in_threadpool(queries.change_mark, store)
            if mark != last:
                last = mark
                yield f"event: changed\ndata: {json.dumps({'live': mark[1]})}\n\n"
            elif time.monotonic() - beat > 15:
                beat = time.monotonic()
                yield ": still here\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _bulk(container: Container, action: str, ids: list[str], actor: str, reason: str) -> list[reviews.Verdict]:
    """Each selected decision on its own, through the decision service (each re-checked)."""
    out = []
    for decision_id in ids:
        if action == "approve":
            out.append(reviews.approve(container, decision_id, actor, None, ""))
        else:
            out.append(reviews.reject(container, decision_id, actor, reason))
    return out


@router.post("/queue/bulk")
async def queue_bulk(request: Request) -> Response:
    session = await acting(request, "review")
    form = await form_of(request)
    ids = list(dict.fromkeys(i for i in form.get("ids", []) if i))[: queries.MAX_BULK]
    action = first(form, "action")
    reason = first(form, "reason").strip()
    f = queue_filter({k: v[0] for k, v in form.items() if v})
    problem = None
    results: list[reviews.Verdict] = []
    if action not in ("approve", "reject"):
        problem = "Choose approve or reject."
    elif not ids:
        problem = "Select at least one decision first (the boxes in the first column)."
    elif action == "reject" and not reason:
        problem = "Rejecting needs a reason: the engines decide again with it. Type one in the reason box."
    else:
        results = await run_in_threadpool(_bulk, _container(request), action, ids, session.user.actor, reason)
    context = await _queue_context(request, f, set() if results else set(ids))
    context.update(results=results, problem=problem, action=action)
    if is_htmx(request):
        return render(request, "_bulk_result.html", session, oob=True, **context)
    return render(request, "queue.html", session, **context)


# ------------------------------------------------------------------------------ decision page


def _decision_context(container: Container, decision_id: str) -> dict[str, Any]:
    decision = container.store.get_decision(decision_id)
    if decision is None:
        raise PageError(404, f"There is no decision {decision_id}.", "Open the review queue to find a live one.")
    nodes: list[str] = []
    problems: list[str] = []
    if decision.status == "pending_review" and any(
        a.name in ("oms.allocate", "wms.create_transfer") for a in decision.actions
    ):
        try:
            nodes = sorted(n.id for n in container.systems.oms.network().nodes)
        except ConnectorError as exc:
            problems.append(f"The OMS could not be reached for the node list (type a node id instead): {exc}")
    facts, tables = evidence_tables(decision.evidence)
    newer = container.store.get_decision(decision.superseded_by) if decision.superseded_by else None
    return {
        "d": decision,
        "changes": changes_by_system(decision),
        "binding": binding_constraints(decision),
        "evidence_facts": facts,
        "evidence_tables": tables,
        "review_text": review_summary(decision),
        "nodes": nodes,
        "problems": problems,
        "newer": newer,
        "facts_json": json.dumps(decision.facts, indent=1, sort_keys=True, default=str),
        "editable": [c for _, group in changes_by_system(decision) for c in group if c.editable],
    }


async def _decision_page(
    request: Request, session: Session, decision_id: str, verdict: reviews.Verdict | None = None, status_code: int = 200
) -> Response:
    context = await run_in_threadpool(_decision_context, _container(request), decision_id)
    return render(request, "decision.html", session, status_code, verdict=verdict, **context)


@router.get("/decisions/{decision_id}")
async def decision_page(request: Request, decision_id: str) -> Response:
    session = await require_area(request, "review")
    return await _decision_page(request, session, decision_id)


@router.post("/decisions/{decision_id}/approve")
async def decision_approve(request: Request, decision_id: str) -> Response:
    session = await acting(request, "review")
    form = await form_of(request)
    note = first(form, "note").strip()
    container = _container(request)
    decision = await run_in_threadpool(container.store.get_decision, decision_id)
    if decision is None:
        raise PageError(404, f"There is no decision {decision_id}.", "Open the review queue to find a live one.")
    verdict: reviews.Verdict
    changes: list[dict[str, Any]] = []
    if first(form, "with_changes") == "1":
        try:
            changes = reviews.parse_changes(decision, form)
        except ChangeRejected as exc:
            verdict = reviews.Verdict(decision_id, "refused", f"The change is not valid: {exc}")
            return await _decision_page(request, session, decision_id, verdict, 422)
        if not changes:
            verdict = reviews.Verdict(
                decision_id, "invalid", "Nothing was changed: edit a field, or use Approve to approve as proposed."
            )
            return await _decision_page(request, session, decision_id, verdict, 422)
    verdict = await run_in_threadpool(reviews.approve, container, decision_id, session.user.actor, changes, note)
    return await _decision_page(request, session, decision_id, verdict, _status(verdict))


@router.get("/decisions/{decision_id}/approve")
@router.get("/decisions/{decision_id}/reject")
async def decision_action_reloaded(request: Request, decision_id: str) -> Response:
    """A reload of an approve or reject answer: back to the decision (nothing is sent again)."""
    await require_area(request, "review")
    return RedirectResponse(f"/console/decisions/{quote(decision_id, safe='')}", status_code=303)


@router.post("/decisions/{decision_id}/reject")
async def decision_reject(request: Request, decision_id: str) -> Response:
    session = await acting(request, "review")
    form = await form_of(request)
    verdict = await run_in_threadpool(
        reviews.reject, _container(request), decision_id, session.user.actor, first(form, "reason")
    )
    return await _decision_page(request, session, decision_id, verdict, _status(verdict))


def _status(verdict: reviews.Verdict) -> int:
    """The API's status for the same outcome (the page explains it either way)."""
    if verdict.ok:
        return 200
    return {"refused": 422, "invalid": 422, "not_found": 404, "interrupted": 503, "unreachable": 503}.get(
        verdict.kind, 409
    )


# ------------------------------------------------------------------------------ orders


@router.get("/orders")
async def order_search(request: Request) -> Response:
    await require_area(request, "service")
    order_id = (request.query_params.get("id") or "").strip()
    if not order_id:
        return RedirectResponse("/console/at-risk", status_code=303)
    return RedirectResponse(f"/console/orders/{quote(order_id, safe='')}", status_code=303)


@router.get("/orders/{order_id}")
async def order_page(request: Request, order_id: str) -> Response:
    session = await require_area(request, "service")
    try:
        tl = await run_in_threadpool(order_timeline, _container(request), order_id, session.user)
    except NotVisible:
        raise PageError(404, f"There is no order {order_id} you may see.", "Check the order id.") from None
    status_code = 404 if tl.view is None and not tl.decisions else 200
    return render(request, "order.html", session, status_code, tl=tl)


# ------------------------------------------------------------------------------ KPIs, audit, policy, dead letters


@router.get("/kpis")
async def kpis_page(request: Request) -> Response:
    session = await require_area(request, "review")
    k = await run_in_threadpool(queries.kpis, _container(request).store)
    workflows = sorted(k.by_workflow)
    totals = {wf: sum(k.by_workflow[wf].values()) for wf in workflows}
    return render(
        request, "kpis.html", session, k=k, workflows=workflows, totals=totals, most=max(totals.values(), default=0)
    )


@router.get("/audit")
async def audit_page(request: Request) -> Response:
    session = await require_area(request, "review")
    store = _container(request).store
    subject = (request.query_params.get("subject") or "").strip() or None
    kind = (request.query_params.get("kind") or "").strip() or None
    after = max(0, _int(request.query_params.get("after"), 0))
    limit = 100

    def read() -> tuple[list[Any], list[str]]:
        return store.audit(subject=subject, kind=kind, after_seq=after, limit=limit), queries.audit_kinds(store)

    entries, kinds = await run_in_threadpool(read)
    next_after = entries[-1].seq if len(entries) == limit else None
    rows = [(e, json.dumps(e.payload, indent=1, sort_keys=True, default=str)) for e in entries]
    return render(
        request,
        "audit.html",
        session,
        rows=rows,
        kinds=kinds,
        subject=subject or "",
        kind=kind or "",
        after=after,
        next_after=next_after,
    )


@router.get("/audit/verify")
async def audit_verify(request: Request) -> Response:
    session = await require_area(request, "review")
    result = await run_in_threadpool(_container(request).store.verify_audit)
    template = "_verify.html" if is_htmx(request) else "audit_verify.html"
    return render(request, template, session, result=result, details=result.model_dump())


POLICY_NUMBERS = (
    "review_cost_above",
    "review_confidence_below",
    "receipt_tolerance_pct",
    "wave_window_hours",
    "posting_grace_hours",
)
MODES = ("observe", "propose", "autonomous")


def _versions() -> Any:
    """``runtime.policy_versions`` (policy versions in the audit chain), where the store has it."""
    try:
        from runtime import policy_versions
    except ImportError:  # pragma: no cover - a store without policy versions: read-only page
        return None
    return policy_versions


async def _policy_page(
    request: Request,
    session: Session,
    status_code: int = 200,
    message: str | None = None,
    errors: list[str] | None = None,
) -> Response:
    from domain.decisions import Workflow
    from domain.governance import DEFAULT_MODE

    store = _container(request).store
    versions = _versions()

    def read() -> tuple[Any, list[Any]]:
        history = versions.history(store) if versions is not None else []
        return store.get_policy(), list(reversed(history))[:20]

    policy, history = await run_in_threadpool(read)
    workflows = list(Workflow.__args__)  # type: ignore[attr-defined]
    modes = [(wf, policy.modes.get(wf), DEFAULT_MODE) for wf in workflows]
    numbers = [(name, getattr(policy, name)) for name in POLICY_NUMBERS if hasattr(policy, name)]
    other = {k: v for k, v in policy.model_dump(mode="json").items() if k != "modes" and k not in POLICY_NUMBERS}
    return render(
        request,
        "policy.html",
        session,
        status_code,
        modes=modes,
        mode_names=MODES,
        numbers=numbers,
        other=other,
        history=history,
        can_edit=session.user.can("admin") and versions is not None,
        message=message,
        errors=errors or [],
    )


@router.get("/policy")
async def policy_page(request: Request) -> Response:
    session = await require_area(request, "review")
    return await _policy_page(request, session)


@router.post("/policy")
async def policy_change(request: Request) -> Response:
    """An admin's change, with the semantics of ``PATCH /v1/policy``: only what the form changed
    is sent, and it becomes a new policy version in the audit chain (who, when, diff, reason)."""
    from domain.governance import DEFAULT_MODE

    session = await acting(request, "admin")
    versions = _versions()
    if versions is None:  # pragma: no cover
        raise PageError(404, "This store keeps no policy versions; change the policy through the API.")
    form = await form_of(request)
    store = _container(request).store
    reason = first(form, "reason").strip() or None
    current = await run_in_threadpool(store.get_policy)
    body: dict[str, Any] = {}
    modes = {}
    for field in (k for k in form if k.startswith("mode.")):
        wf, wanted = field[5:], first(form, field)
        now = {str(k): str(v) for k, v in current.modes.items()}
        if wanted and wanted != now.get(wf, DEFAULT_MODE):  # a default left as it is stays unset
            modes[wf] = wanted
    if modes:
        body["modes"] = modes
    errors: list[str] = []
    for name in POLICY_NUMBERS:
        raw = first(form, name).strip()
        if raw == "" or not hasattr(current, name):
            continue
        value = _float(raw)
        if value is None:
            errors.append(f"{name.replace('_', ' ')}: {raw!r} is not a number")
        elif value != getattr(current, name):
            body[name] = value
    if errors:
        return await _policy_page(request, session, 422, errors=errors)
    if not body:
        return await _policy_page(request, session, message="Nothing was changed.")

    def apply() -> Any:
        return versions.change(store, versions.merged(current, body), session.user.actor, reason)

    try:
        version = await run_in_threadpool(apply)
    except versions.PolicyError as exc:
        found = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors]
        return await _policy_page(request, session, 422, errors=found)
    message = "Nothing was changed." if version is None else f"Saved as version {version.version}."
    return await _policy_page(request, session, message=message)


@router.get("/dead-letters")
async def dead_letters_page(request: Request) -> Response:
    session = await require_area(request, "admin")
    letters = await run_in_threadpool(_container(request).queue.dead_letters)
    return render(request, "dead_letters.html", session, letters=letters)


# ------------------------------------------------------------------------------ customer service


def principal(session: Session) -> Any:
    """The signed-in user as the API's ``Principal`` (``api.deps``): who the chat acts for."""
    from api import deps

    make = getattr(deps, "Principal", None)
    user = session.user
    if make is None:  # an API without named keys takes the role
        return user.role
    return make(user.role, user.name, user.key_id, frozenset(user.customers) if user.customers else None)


def _conversation(container: Container, session: Session) -> Any:
    from chat.conversations import ConversationStore

    if not session.conversation:
        return None
    conv = ConversationStore(container.redis, container.settings.stream_prefix).load(session.conversation)
    if conv is None or conv.owner not in (None, session.user.key_id):
        return None
    return conv


@router.get("/chat")
async def chat_page(request: Request) -> Response:
    session = await require_area(request, "service")
    conv = await run_in_threadpool(_conversation, _container(request), session)
    return render(request, "chat.html", session, conv=conv)


@router.post("/chat")
async def chat_send(request: Request) -> Response:
    """One message through the same service as ``POST /v1/chat`` (``api.routes.chat._converse``)."""
    from api.routes.chat import ChatRequest, _caller, _converse

    session = await acting(request, "service")
    form = await form_of(request)
    container = _container(request)
    message = first(form, "message").strip()
    customer = first(form, "customer_id").strip() or None
    error = None
    reply = None
    try:
        body = ChatRequest(conversation_id=session.conversation, message=message, customer_id=customer)
    except ValidationError as exc:
        body = None
        error = "Type a message first." if not message else f"{exc.errors()[0]['msg']}"
    if body is not None:
        try:
            caller = await run_in_threadpool(_caller, request, container, principal(session))
            out = await run_in_threadpool(_converse, container, caller, body)
            reply = out.reply
            if reply.conversation_id != session.conversation:
                session = await sessions_of(request).update(session, conversation=reply.conversation_id)
        except HTTPException as exc:
            error = str(exc.detail)
    context: dict[str, Any] = {"message": message, "reply": reply, "error": error}
    if is_htmx(request):
        return render(request, "_chat_turn.html", session, **context)
    conv = await run_in_threadpool(_conversation, container, session)
    return render(request, "chat.html", session, conv=conv, **context)


@router.post("/chat/new")
async def chat_new(request: Request) -> Response:
    session = await acting(request, "service")
    await sessions_of(request).update(session, conversation=None)
    return RedirectResponse("/console/chat", status_code=303)


@router.get("/at-risk")
async def at_risk_page(request: Request) -> Response:
    """The same reader as ``GET /v1/orders/at-risk``, with each drafted message."""
    from chat.risk import at_risk, clock_of

    session = await require_area(request, "service")
    container = _container(request)

    def run() -> list[dict[str, Any]]:
        when_ = clock_of(container.store) or datetime.now(UTC)
        if when_.tzinfo is None:
            when_ = when_.replace(tzinfo=UTC)
        return at_risk(container.systems, container.store, when_)

    error = None
    rows: list[dict[str, Any]] = []
    try:
        rows = await run_in_threadpool(run)
    except ConnectorError as exc:
        error = f"A system could not be reached, so the list is missing: {exc}. Try again in a minute."
    rows = [r for r in rows if session.user.may_see(r.get("customer_id"))]
    return render(request, "at_risk.html", session, rows=rows, error=error)


def area_label(area: Area) -> str:
    return {"review": "planners and admins", "service": "customer service, planners and admins", "admin": "admins"}[
        area
    ]


templates.env.globals.update(area_label=area_label)


def decision_link(d: Decision) -> str:
    return f"/console/decisions/{quote(d.id, safe='')}"


templates.env.globals.update(decision_link=decision_link)
