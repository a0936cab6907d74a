"""Recorded reads: what a decision read from the WMS, ERP and OMS, kept so it can be decided again.

* :class:`RecordingSystems` wraps the live :class:`~tools.context.Systems`. Every read on the wms,
  erp and oms ports (the optional readers ``tasks``, ``transfers`` and ``demand_history`` and the
  bulk reads ``stock_many`` and ``books_many`` too, when the port has them) goes to the live system
  and its answer (a result, or the error it raised) is kept as ``(port, method, args, kwargs) ->
  result``, with each pydantic model's type so it can be rebuilt. The memo's answers
  (``first_time``, ``due``) are kept the same way.
  Writes pass through unrecorded: this is the live path. Recording never fails a decision: an
  answer that cannot be kept makes the record incomplete (:attr:`Tape.incomplete`), nothing else.
* :class:`ReplaySystems` serves a recording back: a read answers what was recorded for the same
  call (in order, the last answer repeating), a read that was not recorded raises
  :class:`NotRecorded`, and every write (``apply`` on wms, erp, oms and notify) raises
  :class:`ReadOnlyViolation`: an error, never a no-op. Its memo is a throw-away in-memory one that
  answers what was recorded and remembers the rest only for itself (nothing reaches Redis).
* :class:`ReadOnlySystems` reads the live systems and refuses every write the same way, for a
  replay or shadow path that must read live.

Neither error is a ``LookupError`` or a ``CrossdockError``: the context tools treat those as
answers (an unknown customer is a standard-tier one), and a missing recording must not pass for one.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel

from connectors.ports import ErpPort, NotifyPort, OmsPort, WmsPort
from domain.decisions import Action
from tools.context import Memo, Systems

# Every read each port may serve; the optional readers are recorded only when the port has them.
READS: dict[str, tuple[str, ...]] = {
    "wms": ("stock", "movements", "asns", "receipts", "waves", "tasks", "transfers", "stock_snapshot", "stock_many"),
    "erp": (
        "sku",
        "book_stock",
        "planned_supply",
        "credit_hold",
        "postings",
        "purchase_order",
        "open_purchase_orders",
        "demand_history",
        "book_snapshot",
        "books_many",
    ),
    "oms": ("order", "customer", "orders", "network", "allocations_snapshot"),
}
MEMO_READS = ("first_time", "due", "value")
# Types are rebuilt only from these packages: a recording is data, never a way to import code.
_TYPE_PACKAGES = ("domain.", "connectors.")
FORMAT = 1


class ReadOnlyViolation(RuntimeError):  # noqa: N818 - the name says what happened
    """A replay or shadow path tried to write to a system (every write is refused)."""

    def __init__(self, port: str, action: Action | None = None) -> None:
        what = f" {action.name}" if action is not None else ""
        super().__init__(f"read-only systems: a write{what} to {port} was refused (replay and shadow never write)")
        self.port = port


class NotRecorded(RuntimeError):  # noqa: N818 - the name says what happened
    """A replayed decision made a read that the recording does not hold."""

    def __init__(self, call: str) -> None:
        super().__init__(f"not recorded: {call}")
        self.call = call


class UnrecordableValue(TypeError):
    """An answer of a type a recording cannot keep."""


# ------------------------------------------------------------------------------------------ encoding


def _tag(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve(tag: str) -> type:
    module, _, name = tag.partition(":")
    if not module.startswith(_TYPE_PACKAGES) or not name:
        raise UnrecordableValue(f"a recorded type outside {', '.join(_TYPE_PACKAGES)}: {tag}")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise UnrecordableValue(f"not a type: {tag}")
    return obj


def plain(value: Any) -> Any:
    """Arguments as JSON (the key a call is recorded under)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(plain(v) for v in value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise UnrecordableValue(f"cannot key a call on a {type(value).__name__}")


_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _finite(value: Any) -> Any:
    """A model's JSON dump with infinities and NaN as the strings pydantic reads back as floats
    (strict JSON, which PostgreSQL's json type requires, has no such numbers). A value that is
    strict JSON already, as nearly every one is, comes back as it is (checked by the C encoder:
    walking every answer in Python was a tenth of an order decision's CPU)."""
    try:
        json.dumps(value, allow_nan=False)
    except (ValueError, TypeError):
        return _finite_copy(value)
    return value


def _finite_copy(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else _NON_FINITE[value]
    if isinstance(value, dict):
        return {k: _finite_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_copy(v) for v in value]
    return value


def encode(value: Any) -> Any:
    """A read's answer as JSON that :func:`decode` rebuilds (models keep their type)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"$f": _finite(value)}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, BaseModel):
        if not type(value).__module__.startswith(_TYPE_PACKAGES):
            raise UnrecordableValue(f"a model outside {', '.join(_TYPE_PACKAGES)}: {_tag(type(value))}")
        return {"$m": _tag(type(value)), "v": _finite(value.model_dump(mode="json"))}
    if isinstance(value, list | tuple):
        items = list(value)
        kinds = {type(v) for v in items}
        if items and len(kinds) == 1 and issubclass(next(iter(kinds)), BaseModel):
            first = encode(items[0])  # checks the type's package
            return {"$ms": first["$m"], "v": [_finite(v.model_dump(mode="json")) for v in items]}
        return [encode(v) for v in items]
    if isinstance(value, dict):
        return {"$d": {str(k): encode(v) for k, v in value.items()}}
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if not type(value).__module__.startswith(_TYPE_PACKAGES):
            raise UnrecordableValue(f"a dataclass outside {', '.join(_TYPE_PACKAGES)}: {_tag(type(value))}")
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"$c": _tag(type(value)), "v": fields}
    raise UnrecordableValue(f"cannot record a {type(value).__name__}")


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$m" in value:
        return cast(type[BaseModel], _resolve(value["$m"])).model_validate(value["v"])
    if "$ms" in value:
        cls = cast(type[BaseModel], _resolve(value["$ms"]))
        return [cls.model_validate(v) for v in value["v"]]
    if "$d" in value:
        return {k: decode(v) for k, v in value["$d"].items()}
    if "$dt" in value:
        return datetime.fromisoformat(value["$dt"])
    if "$f" in value:
        return float(value["$f"])
    if "$c" in value:
        cls = _resolve(value["$c"])
        if not dataclasses.is_dataclass(cls):
            raise UnrecordableValue(f"not a dataclass: {value['$c']}")
        return cls(**{k: decode(v) for k, v in value["v"].items()})
    raise UnrecordableValue(f"not a recorded value: {sorted(value)}")


def encode_error(exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    if not cls.__module__.startswith(_TYPE_PACKAGES):
        raise UnrecordableValue(f"an error outside {', '.join(_TYPE_PACKAGES)}: {_tag(cls)}")
    attrs = {k: v for k, v in vars(exc).items() if v is None or isinstance(v, str | int | float | bool)}
    return {"$raise": _tag(cls), "args": [str(a) for a in exc.args], "attrs": attrs}


def decode_error(value: dict[str, Any]) -> BaseException:
    cls = _resolve(value["$raise"])
    if not issubclass(cls, Exception):
        raise UnrecordableValue(f"not an error: {value['$raise']}")
    exc = cls.__new__(cls)
    Exception.__init__(exc, *value.get("args", []))
    exc.__dict__.update(value.get("attrs", {}))
    return exc


def call_key(port: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    shown = json.dumps([plain(list(args)), plain(kwargs)], sort_keys=True, separators=(",", ":"))
    return f"{port}.{method}{shown}"


# ------------------------------------------------------------------------------------------ the tape


class Tape:
    """The calls a decision made and their answers, in the order first made.

    Each entry: ``{"call": "wms.stock", "args": [...], "kwargs": {...}, "answers": [...]}``, one
    per distinct call; ``answers`` holds each different answer in turn (a repeated call that
    answered the same is kept once), each ``{"r": value}`` or ``{"x": error}``."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.incomplete: list[str] = []
        self.optional: set[str] = set()
        self.memo = False
        self.settings: dict[str, Any] = {}

    def keep(
        self, port: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], answer: dict[str, Any]
    ) -> None:
        try:
            key = call_key(port, method, args, kwargs)
        except UnrecordableValue as exc:
            self.incomplete.append(f"{port}.{method}: {exc}")
            return
        entry = self.entries.get(key)
        if entry is None:
            entry = {"call": f"{port}.{method}", "args": plain(list(args))}
            if kwargs:
                entry["kwargs"] = plain(kwargs)
            entry["answers"] = []
            self.entries[key] = entry
        if not entry["answers"] or entry["answers"][-1] != answer:
            entry["answers"].append(answer)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "memo": self.memo, "calls": list(self.entries.values())}
        if self.settings:
            out["settings"] = self.settings
        if self.optional:
            out["optional"] = sorted(self.optional)
        if self.incomplete:
            out["incomplete"] = self.incomplete
        return cast(dict[str, Any], _finite(out))  # strict JSON whatever a setting or error held


def _reads_of(port: str, inner: object) -> list[str]:
    return [m for m in READS[port] if callable(getattr(inner, m, None))]


def _port_class(name: str, methods: dict[str, Callable[..., Any]]) -> type:
    # A class per port with real methods, so the ports' runtime_checkable Protocols (the optional
    # readers included) see exactly the reads the wrapped port has.
    return type(name, (), methods)


def _recording_port(port: str, inner: Any, tape: Tape) -> Any:
    def reader(method: str) -> Callable[..., Any]:
        live = getattr(inner, method)

        def read(_self: Any, *args: Any, **kwargs: Any) -> Any:
            if method in BULK and (args[0] if args else kwargs.get("since")) is None:
                # A full reconciliation pass's pages of every SKU@node (up to 50,000 rows) are not
                # kept: the record would outweigh the decision. Such a tick replays as incomplete;
                # the change-feed reads of the other ticks (``since`` a watermark) are kept.
                note = f"{port}.{method}: full-pass snapshot reads are not kept"
                if note not in tape.incomplete:
                    tape.incomplete.append(note)
                return live(*args, **kwargs)
            try:
                result = live(*args, **kwargs)
            except Exception as exc:
                try:
                    tape.keep(port, method, args, kwargs, {"x": encode_error(exc)})
                except UnrecordableValue as why:
                    tape.incomplete.append(f"{port}.{method}: {why}")
                raise
            try:
                tape.keep(port, method, args, kwargs, {"r": encode(result)})
            except UnrecordableValue as why:
                tape.incomplete.append(f"{port}.{method}: {why}")
            return result

        read.__name__ = method
        return read

    methods = {m: reader(m) for m in _reads_of(port, inner)}
    tape.optional |= {f"{port}.{m}" for m in methods if m in _OPTIONAL}
    methods["apply"] = lambda _self, action: inner.apply(action)
    return _port_class(f"Recording{port.capitalize()}", methods)()


_PORTS = ("wms", "erp", "oms", "notify", "memo")


def _settings_of(systems: Systems) -> dict[str, Any]:
    """The scalar settings a ``Systems`` carries beside its ports (kept so a replay decides alike)."""
    out = {}
    for f in dataclasses.fields(systems):
        value = getattr(systems, f.name)
        if f.name not in _PORTS and (value is None or isinstance(value, str | int | float | bool)):
            out[f.name] = value
    return out


def _with_settings(settings: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(Systems)} - set(_PORTS)
    return {k: v for k, v in settings.items() if k in known}


BULK = frozenset({"stock_snapshot", "book_snapshot", "allocations_snapshot"})
# Reads an adapter may lack; a replay offers one only when the recording's adapter had it, so a
# recording made without the bulk reads (``stock_many``, ``books_many``) replays by its reads per SKU.
_OPTIONAL = {
    "tasks",
    "transfers",
    "demand_history",
    "stock_snapshot",
    "book_snapshot",
    "allocations_snapshot",
    "stock_many",
    "books_many",
}


class _RecordingMemo:
    def __init__(self, inner: Memo, tape: Tape) -> None:
        self.inner, self.tape = inner, tape

    def first_time(self, key: str) -> bool:
        answer = self.inner.first_time(key)
        self.tape.keep("memo", "first_time", (key,), {}, {"r": answer})
        return answer

    def schedule(self, queue: str, member: str, due: float) -> None:
        self.inner.schedule(queue, member, due)

    def due(self, queue: str, now: float) -> list[str]:
        answer = self.inner.due(queue, now)
        self.tape.keep("memo", "due", (queue, now), {}, {"r": list(answer)})
        return answer

    def done(self, queue: str, members: Iterable[str]) -> None:
        self.inner.done(queue, members)

    def value(self, key: str) -> str | None:
        answer: str | None = cast(Any, self.inner).value(key)
        self.tape.keep("memo", "value", (key,), {}, {"r": answer})
        return answer

    def put(self, key: str, value: str) -> None:
        cast(Any, self.inner).put(key, value)


class RecordingSystems:
    """The live systems, with every read's answer kept (``.systems`` to decide on, ``.reads()``)."""

    def __init__(self, live: Systems) -> None:
        self.tape = Tape()
        self.tape.memo = live.memo is not None
        self.tape.settings = _settings_of(live)
        self.systems = dataclasses.replace(
            live,
            wms=cast(WmsPort, _recording_port("wms", live.wms, self.tape)),
            erp=cast(ErpPort, _recording_port("erp", live.erp, self.tape)),
            oms=cast(OmsPort, _recording_port("oms", live.oms, self.tape)),
            memo=cast(Memo, _RecordingMemo(live.memo, self.tape)) if live.memo is not None else None,
        )

    def reads(self) -> dict[str, Any]:
        """The recording, as JSON (what :class:`ReplaySystems` takes)."""
        return self.tape.to_json()


# ------------------------------------------------------------------------------------------ refusing writes


def _refuse(port: str) -> Callable[[Any, Action], dict[str, Any]]:
    def apply(_self: Any, action: Action) -> dict[str, Any]:
        raise ReadOnlyViolation(port, action)

    return apply


class _RefusingNotify:
    def apply(self, action: Action) -> dict[str, Any]:
        raise ReadOnlyViolation("notify", action)


class InMemoryMemo:
    """A throw-away memo: recorded answers first, else this replay's own memory (never Redis)."""

    def __init__(self, recorded: dict[str, list[Any]] | None = None) -> None:
        self.recorded = recorded or {}
        self.seen: set[str] = set()
        self.queues: dict[str, dict[str, float]] = {}
        self.values: dict[str, str] = {}
        self.served: dict[str, int] = {}

    def _answer(self, key: str) -> tuple[bool, Any]:
        answers = self.recorded.get(key)
        if not answers:
            return False, None
        n = self.served.get(key, 0)
        self.served[key] = n + 1
        return True, answers[min(n, len(answers) - 1)]

    def first_time(self, key: str) -> bool:
        found, answer = self._answer(call_key("memo", "first_time", (key,), {}))
        fresh = key not in self.seen
        self.seen.add(key)
        return bool(answer) if found else fresh

    def schedule(self, queue: str, member: str, due: float) -> None:
        self.queues.setdefault(queue, {})[member] = due

    def due(self, queue: str, now: float) -> list[str]:
        found, answer = self._answer(call_key("memo", "due", (queue, now), {}))
        if found:
            return [str(m) for m in answer]
        return sorted(m for m, at in self.queues.get(queue, {}).items() if at <= now)

    def done(self, queue: str, members: Iterable[str]) -> None:
        for m in members:
            self.queues.get(queue, {}).pop(m, None)

    def value(self, key: str) -> str | None:
        found, answer = self._answer(call_key("memo", "value", (key,), {}))
        if key in self.values or not found:
            return self.values.get(key)
        return None if answer is None else str(answer)

    def put(self, key: str, value: str) -> None:
        self.values[key] = value


class ReadOnlySystems:
    """Live reads, refused writes (``.systems``); its memo is a throw-away in-memory one."""

    def __init__(self, live: Systems) -> None:
        def port(name: str, inner: Any) -> Any:
            methods: dict[str, Callable[..., Any]] = {}
            for m in _reads_of(name, inner):
                methods[m] = (lambda fn: lambda _self, *a, **kw: fn(*a, **kw))(getattr(inner, m))
            methods["apply"] = _refuse(name)
            return _port_class(f"ReadOnly{name.capitalize()}", methods)()

        self.systems = dataclasses.replace(
            live,
            wms=cast(WmsPort, port("wms", live.wms)),
            erp=cast(ErpPort, port("erp", live.erp)),
            oms=cast(OmsPort, port("oms", live.oms)),
            notify=cast(NotifyPort, _RefusingNotify()),
            memo=cast(Memo, InMemoryMemo()) if live.memo is not None else None,
        )


class ReplaySystems:
    """A recording served back (``.systems``): recorded answers, :class:`NotRecorded` for any other
    read, :class:`ReadOnlyViolation` for every write."""

    def __init__(self, recording: dict[str, Any]) -> None:
        if recording.get("format") != FORMAT:
            raise ValueError(f"a recording of format {recording.get('format')!r} (this code reads {FORMAT})")
        self.answers: dict[str, list[dict[str, Any]]] = {}
        memo: dict[str, list[Any]] = {}
        for entry in recording.get("calls", []):
            system, _, method = str(entry["call"]).partition(".")
            key = call_key(system, method, tuple(entry.get("args", [])), entry.get("kwargs", {}))
            if system == "memo":
                memo[key] = [a.get("r") for a in entry["answers"]]
            else:
                self.answers[key] = entry["answers"]
        self.served: dict[str, int] = {}
        optional = set(recording.get("optional", []))

        def port(name: str) -> Any:
            methods: dict[str, Callable[..., Any]] = {}
            for m in READS[name]:
                if m in _OPTIONAL and f"{name}.{m}" not in optional:
                    continue
                methods[m] = self._reader(name, m)
            methods["apply"] = _refuse(name)
            return _port_class(f"Replay{name.capitalize()}", methods)()

        self.systems = Systems(
            wms=cast(WmsPort, port("wms")),
            erp=cast(ErpPort, port("erp")),
            oms=cast(OmsPort, port("oms")),
            notify=cast(NotifyPort, _RefusingNotify()),
            memo=cast(Memo, InMemoryMemo(memo)) if recording.get("memo") else None,
            **_with_settings(recording.get("settings", {})),
        )

    def _reader(self, port: str, method: str) -> Callable[..., Any]:
        def read(_self: Any, *args: Any, **kwargs: Any) -> Any:
            key = call_key(port, method, args, kwargs)
            answers = self.answers.get(key)
            if not answers:
                raise NotRecorded(key)
            n = self.served.get(key, 0)
            self.served[key] = n + 1
            answer = answers[min(n, len(answers) - 1)]
            if "x" in answer:
                raise decode_error(answer["x"])
            return decode(answer["r"])

        read.__name__ = method
        return read
