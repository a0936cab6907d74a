"""A small JSON-RPC client for trytond 8.2 on httpx.

Protocol (trytond/protocols/dispatcher.py, jsonrpc.py, wrappers.py):

- ``POST {url}/{database}/rpc/`` with ``{"id", "method", "params"}``.
- ``common.db.login(login, {"password": ...}, language)`` answers ``[user_id, session, bus_url]``.
- Every later call carries ``Authorization: Session base64("login:user_id:session")``.
- ``model.<name>.<method>`` takes the method's arguments followed by a context dict.
- Answers are ``{"id", "result"}`` or ``{"id", "error"}``. A ``UserError`` (and its subclasses
  such as ``ValidationError`` and ``AccessError``) arrives as ``["UserError", [message,
  description, domain]]``; any other exception as ``[str(exc), traceback]``.
- Decimal, date, datetime, time, timedelta and bytes travel as ``{"__class__": ...}`` objects.

Error translation: a rejected call (UserError, UserWarning, a method not exposed, bad arguments)
becomes a short ``PermanentConnectorError`` naming the model, the method and the first line of
Tryton's message; transport errors, timeouts, 429/5xx, concurrency conflicts and locked-database
errors become a retryable ``ConnectorError``. Idempotent reads are retried here a few times on
transport errors; writes are not (the queue retries whole actions, which are idempotent).

Credentials come from the environment (``TrytonConfig.from_env``) and are never logged or put into
an error message.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import html
import itertools
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from domain.errors import ConnectorError, PermanentConnectorError

READ_METHODS = frozenset({"search", "read", "search_read", "search_count", "fields_get", "default_get"})
RETRYABLE_ERRORS = ("ConcurrencyException", "DatabaseOperationalError", "OperationalError", "TimeOutException")


class TrytonAuthError(PermanentConnectorError):
    """Tryton refused the credentials (or the session could not be renewed)."""


@dataclass(frozen=True)
class TrytonConfig:
    """Where and as whom to connect. ``password`` is excluded from ``repr``."""

    url: str
    database: str
    user: str
    password: str = field(repr=False)
    timeout_s: float = 10.0
    read_retries: int = 2
    language: str = "en"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrytonConfig:
        """``TRYTON_URL``, ``TRYTON_DATABASE``, ``TRYTON_USER`` and ``TRYTON_PASSWORD`` (or
        ``TRYTON_PASSWORD_FILE``, a file whose first line is the password); ``TRYTON_TIMEOUT_S``
        is optional."""
        env = os.environ if env is None else env
        missing = [k for k in ("TRYTON_URL", "TRYTON_DATABASE", "TRYTON_USER") if not env.get(k)]
        password = env.get("TRYTON_PASSWORD", "")
        if not password and env.get("TRYTON_PASSWORD_FILE"):
            with open(env["TRYTON_PASSWORD_FILE"]) as fh:
                password = fh.readline().rstrip("\n")
        if not password:
            missing.append("TRYTON_PASSWORD")
        if missing:
            raise PermanentConnectorError(f"Tryton connector is not configured: set {', '.join(missing)}")
        return cls(
            url=env["TRYTON_URL"],
            database=env["TRYTON_DATABASE"],
            user=env["TRYTON_USER"],
            password=password,
            timeout_s=float(env.get("TRYTON_TIMEOUT_S") or 10.0),
        )


# -- Tryton's JSON flavour ------------------------------------------------------------------


def _encode(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return {"__class__": "Decimal", "decimal": str(obj)}
    if isinstance(obj, dt.datetime):
        return {
            "__class__": "datetime",
            **{k: getattr(obj, k) for k in ("year", "month", "day", "hour", "minute", "second", "microsecond")},
        }
    if isinstance(obj, dt.date):
        return {"__class__": "date", "year": obj.year, "month": obj.month, "day": obj.day}
    if isinstance(obj, dt.time):
        return {"__class__": "time", **{k: getattr(obj, k) for k in ("hour", "minute", "second", "microsecond")}}
    if isinstance(obj, dt.timedelta):
        return {"__class__": "timedelta", "seconds": obj.total_seconds()}
    if isinstance(obj, bytes | bytearray):
        return {"__class__": "bytes", "base64": base64.b64encode(obj).decode()}
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"cannot send {type(obj).__name__} to Tryton")


def _decode(dct: dict[str, Any]) -> Any:
    kind = dct.get("__class__")
    if kind is None:
        return dct
    if kind == "Decimal":
        return Decimal(dct["decimal"])
    if kind == "date":
        return dt.date(dct["year"], dct["month"], dct["day"])
    if kind == "datetime":
        return dt.datetime(
            dct["year"], dct["month"], dct["day"], dct["hour"], dct["minute"], dct["second"], dct["microsecond"]
        )
    if kind == "time":
        return dt.time(dct["hour"], dct["minute"], dct["second"], dct["microsecond"])
    if kind == "timedelta":
        return dt.timedelta(seconds=dct["seconds"])
    if kind == "bytes":
        return base64.b64decode(dct["base64"])
    return dct


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=_encode, separators=(",", ":")).encode()


def loads(data: bytes) -> Any:
    return json.loads(data, object_hook=_decode)


def first_line(text: object, limit: int = 200) -> str:
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def describe_error(error: Any) -> tuple[str, str]:
    """``(kind, short message)`` from a JSON-RPC ``error`` member."""
    if isinstance(error, list) and len(error) == 2 and isinstance(error[1], list):
        kind, args = str(error[0]), error[1]
        if kind == "UserError" and args:
            return kind, first_line(args[0])
        if kind == "UserWarning" and len(args) >= 2:
            return kind, first_line(args[1])
        if kind == "LoginException" and len(args) >= 2:
            return kind, first_line(args[1])
        return kind, first_line(args[0] if args else kind)
    if isinstance(error, list) and len(error) == 2 and isinstance(error[0], str):
        # A server-side exception: [str(exc), traceback]. Name the exception class from the
        # traceback's last line, and keep only the first line of its message.
        message, traceback = error
        last = next((ln for ln in reversed(str(traceback).splitlines()) if ln.strip()), "")
        kind = last.split(":", 1)[0].rsplit(".", 1)[-1].strip() if ":" in last else "ServerError"
        return kind or "ServerError", first_line(message) or kind
    if isinstance(error, list) and error and isinstance(error[0], str):
        return error[0], first_line(error[1] if len(error) > 1 else error[0])
    return "ServerError", first_line(error)


class TrytonClient:
    """One session against one Tryton database; thread-safe (httpx.Client is)."""

    def __init__(self, config: TrytonConfig, client: httpx.Client | None = None) -> None:
        self.config = config
        self._http = client or httpx.Client(trust_env=False, timeout=httpx.Timeout(config.timeout_s))
        self._own_http = client is None
        self._endpoint = f"{config.url.rstrip('/')}/{config.database}/rpc/"
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._auth: str | None = None
        self.user_id: int | None = None
        self.context: dict[str, Any] = {}

    # -- session ------------------------------------------------------------------------------

    def login(self) -> None:
        """Open a session and load the user's preferences as the base context (as the Tryton
        client does): language, company, companies, employees, ..."""
        with self._lock:
            self._login_locked()

    def _login_locked(self) -> None:
        result = self._post(
            "common.db.login",
            [self.config.user, {"password": self.config.password}, self.config.language],
            label="login",
            auth=None,
        )
        if not (isinstance(result, list) and len(result) >= 2):
            raise TrytonAuthError(f"Tryton login of {self.config.user!r} answered unexpectedly")
        user_id, session = int(result[0]), str(result[1])
        token = base64.b64encode(f"{self.config.user}:{user_id}:{session}".encode()).decode()
        self._auth = f"Session {token}"
        self.user_id = user_id
        prefs = self._post("model.res.user.get_preferences", [True, {}], label="res.user.get_preferences")
        self.context = dict(prefs) if isinstance(prefs, dict) else {}

    def _session(self) -> str:
        if self._auth is None:
            with self._lock:
                if self._auth is None:
                    self._login_locked()
        assert self._auth is not None
        return self._auth

    def close(self) -> None:
        if self._auth is not None:
            with contextlib.suppress(ConnectorError):
                self._post("common.db.logout", [], label="logout", auth=self._auth)
            self._auth = None
        if self._own_http:
            self._http.close()

    def __enter__(self) -> TrytonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ----------------------------------------------------------------------------------

    def call(self, model: str, method: str, *args: Any, context: Mapping[str, Any] | None = None) -> Any:
        """``model.<model>.<method>(*args, context)`` with the session's context plus ``context``."""
        ctx = {**self.context, **(context or {})}
        label = f"{model}.{method}"
        attempts = 1 + (self.config.read_retries if method in READ_METHODS else 0)
        for attempt in range(attempts):
            auth = self._session()
            try:
                return self._post(f"model.{model}.{method}", [*args, ctx], label=label, auth=auth)
            except _SessionExpired:
                with self._lock:
                    if self._auth == auth:  # nobody renewed it meanwhile
                        self._auth = None
                auth = self._session()
                return self._post(f"model.{model}.{method}", [*args, ctx], label=label, auth=auth, renew=False)
            except ConnectorError as exc:
                if isinstance(exc, PermanentConnectorError) or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    # Conveniences for the ORM methods every model exposes.
    def search(
        self,
        model: str,
        domain: list[Any],
        *,
        offset: int = 0,
        limit: int | None = None,
        order: list[tuple[str, str]] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> list[int]:
        return list(self.call(model, "search", domain, offset, limit, order, context=context))

    def search_read(
        self,
        model: str,
        domain: list[Any],
        fields: list[str],
        *,
        offset: int = 0,
        limit: int | None = None,
        order: list[tuple[str, str]] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        return list(self.call(model, "search_read", domain, offset, limit, order, fields, context=context))

    def read(
        self, model: str, ids: list[int], fields: list[str], *, context: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        if not ids:
            return []
        return list(self.call(model, "read", ids, fields, context=context))

    def create(
        self, model: str, values: list[dict[str, Any]], *, context: Mapping[str, Any] | None = None
    ) -> list[int]:
        return [int(i) for i in self.call(model, "create", values, context=context)]

    def write(
        self, model: str, ids: list[int], values: dict[str, Any], *, context: Mapping[str, Any] | None = None
    ) -> None:
        if ids:
            self.call(model, "write", ids, values, context=context)

    def button(self, model: str, method: str, ids: list[int], *, context: Mapping[str, Any] | None = None) -> Any:
        """A workflow button (``quote``, ``confirm``, ``wait``, ``assign_try``...) on ``ids``."""
        if not ids:
            return None
        return self.call(model, method, ids, context=context)

    # -- transport ------------------------------------------------------------------------------

    def _post(self, method: str, params: list[Any], *, label: str, auth: str | None = "", renew: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth == "":
            auth = self._session()
        if auth:
            headers["Authorization"] = auth
        body = dumps({"id": next(self._ids), "method": method, "params": params})
        try:
            response = self._http.post(self._endpoint, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise ConnectorError(f"Tryton {label} timed out after {self.config.timeout_s:g}s") from exc
        except httpx.HTTPError as exc:
            raise ConnectorError(
                f"Tryton at {self.config.url} unreachable during {label}: {type(exc).__name__}"
            ) from exc
        status = response.status_code
        if status == 401 or (status == 403 and method.startswith("common.db.login")):
            if method == "common.db.login":
                raise TrytonAuthError(
                    f"Tryton refused the login of {self.config.user!r} on database {self.config.database!r}"
                )
            if renew:
                raise _SessionExpired()
            raise TrytonAuthError(f"Tryton {label}: session refused after a fresh login")
        if status == 404:
            raise PermanentConnectorError(f"Tryton {label}: database {self.config.database!r} not found")
        if status in (408, 429) or status >= 500:
            raise ConnectorError(f"Tryton {label} failed with HTTP {status}")
        if status >= 400:
            detail = first_line(_html_text(response.text)) or response.reason_phrase
            raise PermanentConnectorError(f"Tryton {label} rejected with HTTP {status}: {detail}")
        try:
            payload = loads(response.content)
        except ValueError as exc:
            raise ConnectorError(f"Tryton {label} answered with invalid JSON") from exc
        if isinstance(payload, dict) and payload.get("error") is not None:
            kind, message = describe_error(payload["error"])
            text = (
                f"Tryton {label}: {message}"
                if kind in ("UserError", "UserWarning")
                else (f"Tryton {label}: {kind}: {message}")
            )
            if kind in RETRYABLE_ERRORS or "database is locked" in message:
                raise ConnectorError(text)
            raise PermanentConnectorError(text)
        if not isinstance(payload, dict) or "result" not in payload:
            raise ConnectorError(f"Tryton {label} answered without a result")
        return payload["result"]


class _SessionExpired(Exception):
    """Internal: the session is no longer valid; log in again once."""


def _html_text(text: str) -> str:
    """The readable part of werkzeug's HTML error page (its <p> line)."""
    start = text.find("<p>")
    if start >= 0:
        end = text.find("</p>", start)
        text = text[start + 3 : end if end > 0 else None]
    return html.unescape(text)
