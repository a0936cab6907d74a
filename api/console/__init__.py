"""The planner and service console at ``/console``: Jinja2 pages and htmx, every asset in the package.

``mount(app)`` adds the pages, the static files and the console's error pages to the API app."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.console.auth import CsrfFailed, Forbidden, PageError, SignInRequired, current_session

STATIC = Path(__file__).resolve().parent / "static"

# Everything is served from here: no inline script, no CDN, no frames.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class ConsoleHeaders:
    """Security headers on every /console answer; pages (not static files) are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/console"):
            await self.app(scope, receive, send)
            return
        static = path.startswith("/console/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def _wants_events(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


def _htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


async def _sign_in(request: Request, exc: Exception) -> Response:
    expired = isinstance(exc, SignInRequired) and exc.expired
    target = "/console/signin" + ("?expired=1" if expired else "")
    if _wants_events(request):
        return Response("sign in", status_code=401)
    if _htmx(request):  # htmx follows HX-Redirect with a full page load
        return Response(status_code=200, headers={"HX-Redirect": target})
    if request.method == "GET" and not expired and request.url.path not in ("/console", "/console/"):
        target += "?next=" + quote(request.url.path)
    return RedirectResponse(target, status_code=303)


async def _page_error(request: Request, exc: Exception) -> Response:
    from api.console.routes import render

    session = None
    try:
        session = await current_session(request)
    except SignInRequired:
        session = None
    if isinstance(exc, Forbidden):
        status, title = 403, "Not for your role"
        message = f"A {exc.user.role} key cannot open this page."
        hint = "The menu shows the pages your role may use."
    elif isinstance(exc, CsrfFailed):
        status, title = 403, "The form was out of date"
        message = "This action did not carry the page's security token, so nothing was done."
        hint = "Reload the page and try again."
    elif isinstance(exc, PageError):
        status, title, message, hint = (
            exc.status_code,
            "Not found" if exc.status_code == 404 else "Error",
            exc.message,
            exc.hint,
        )
    else:  # pragma: no cover - registered for the three above only
        raise exc
    response: HTMLResponse = render(request, "error.html", session, status, title=title, message=message, hint=hint)
    return response


def mount(app: FastAPI) -> None:
    """Add the console to an API app: pages, static files, error pages and security headers."""
    from api.console.autonomy import router as autonomy_router
    from api.console.routes import router

    app.include_router(router)
    app.include_router(autonomy_router)  # autonomy and shadow replay pages
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_exception_handler(SignInRequired, _sign_in)
    for exc in (Forbidden, CsrfFailed, PageError):
        app.add_exception_handler(exc, _page_error)
    app.add_middleware(ConsoleHeaders)
