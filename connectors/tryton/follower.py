"""Follow a live Tryton and post its changes to Crossdock's intake as CloudEvents.

Tryton emits no events, so the follower polls it over JSON-RPC (``search_read``) for records
changed since a watermark, per model, and posts what they mean to ``POST /v1/events``:

| Tryton change | event |
|---|---|
| ``sale.sale`` confirmed or processing | ``oms.order.created`` (subject: the sale's reference) |
| ``sale.sale`` cancelled, after its ``oms.order.created`` was posted | ``oms.order.cancelled`` |
| ``purchase.purchase`` confirmed or processing | ``erp.po.created`` |
| ``stock.shipment.in`` done (a supplier receipt) | ``wms.receipt.posted``, one per purchase it receives |
| ``stock.inventory`` done, not made by Crossdock | ``wms.inventory.adjusted`` per line whose count changed |

Not followed (``UNMAPPED``): customer shipments and stock moves (Crossdock makes most of them
itself; the other changes have no event type), draft supplier shipments (no ASN is announced),
sales that are done before the follower sees them (shipped: nothing left to decide).

**Order of work.** Each poll reads, for every model, the records whose ``write_date`` or
``create_date`` is at or after ``watermark - overlap`` (default 1 s: trytond stamps a write with
its transaction's start, so a transaction that commits late is re-read), sorts every change by
(time, model, id), maps them, and posts them in batches. A model's watermark moves only after the
intake accepted every event of the poll (202).

**Never twice, never skipped.** An event id is derived from the record and the state it reached
(``tryton:sale.sale:42:confirmed``): a later unrelated write to the same record (Tryton's own
processing, a comment) maps to the same id, so the order is not created twice. Ids the intake
accepted go into a Redis set; re-read records whose id is in it are not posted again. If the
follower dies between the intake's answer and that set, the next follower posts the same id and
the intake answers ``duplicate`` (it deduplicates on (source, id)): nothing is queued twice.
Watermarks and the set live in Redis under ``<CROSSDOCK_STREAM_PREFIX>:tryton-follow:<source>``,
so a new follower process continues where the last one stopped.

**First start.** With no watermark, ``since="now"`` starts after the newest change Tryton holds
(Tryton's clock, not ours); the changes in the overlap before it are marked as seen, not posted.
``since="all"`` posts every record's current state; an ISO time starts there.

**Where it runs.** ``crossdock connect tryton`` runs it as its own process, posting over HTTP
(``Intake``); with ``CROSSDOCK_TRYTON_FOLLOW`` ``crossdock serve`` runs it in a thread of the
instance holding a Redis lease, queueing in-process (``runtime.tryton_follow``). Both use the
source ``tryton/<database>`` (``source_of``) and so the same state: one continues the other.

**Keys.** Crossdock finds sales and purchases by ``reference`` (``connectors.tryton.adapters``):
a confirmed sale or purchase without one gets its ``number`` written as its reference first.
An order's region comes from the sale's Crossdock extras, else the network file's ``regions``
(``connectors.tryton.network_file``: by customer, then by shipment country), else ''.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import redis
import structlog

from connectors.tryton.adapters import NOTE_TAG, TrytonBackend, _extras
from connectors.tryton.rpc import TrytonClient, TrytonConfig
from domain.errors import ConnectorError, PermanentConnectorError
from domain.events import EventError, parse_event

log = structlog.get_logger("crossdock.tryton.follower")

FOLLOWED: tuple[str, ...] = ("sale.sale", "purchase.purchase", "stock.shipment.in", "stock.inventory")
# The states worth a read: a record in another state maps to no event.
STATES: dict[str, list[str]] = {
    "sale.sale": ["confirmed", "processing", "cancelled"],
    "purchase.purchase": ["confirmed", "processing"],
    "stock.shipment.in": ["done"],
    "stock.inventory": ["done"],
}
UNMAPPED: dict[str, str] = {
    "stock.shipment.out": "customer shipments are Crossdock's own writes (oms.allocate); a picking problem has "
    "no Tryton record that says which task failed (wms.task.exception)",
    "stock.move": "followed through the documents that hold them (supplier shipments, inventories)",
    "stock.shipment.in (draft)": "a draft supplier shipment is not an announcement; no wms.asn.received",
    "stock.shipment.internal": "transfers are Crossdock's own writes (wms.create_transfer)",
    "sale.sale (done)": "shipped before the follower saw it: nothing is left to decide",
    "wms.capacity.changed": "Tryton has no pick-capacity field",
    "oms.payment.failed": "needs the account modules' payment state (not activated)",
}
EPOCH = dt.datetime(1970, 1, 1)


class IntakeError(RuntimeError):
    """The intake refused the events for good (a bad key, a role without gateway, a 422)."""


class IntakeUnavailable(RuntimeError):
    """The intake could not be reached or answered 429/5xx; worth retrying."""


class EventSink(Protocol):
    """Where the follower posts: ``Intake`` (``POST /v1/events``, for ``crossdock connect tryton``)
    or ``runtime.tryton_follow.QueueIntake`` (the queue itself, inside ``crossdock serve``). Both
    answer one dict per event (``job_id``, ``event_id``, ``duplicate``...) and raise
    ``IntakeUnavailable`` (retry) or ``IntakeError`` (refused for good)."""

    def post(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class Regions(Protocol):
    """Where an order ships to when the sale does not say: ``NetworkSpec`` (the network file) or
    the Tryton adapters' live overlay (``Overlay``: a ``PUT /v1/network`` is in force at once)."""

    def region_of(self, customer: str, country: str | None) -> str: ...


def source_of(config: TrytonConfig) -> str:
    """The followed database's CloudEvent source (and its state's name in Redis): ``tryton/<database>``,
    the same for ``crossdock connect tryton`` and the follower inside ``crossdock serve``, so one
    continues where the other stopped."""
    return f"tryton/{config.database}"


def logged_in(config: TrytonConfig) -> TrytonClient:
    """A client with its session open; a refused login or an unreachable Tryton raises
    ``ConnectorError`` with one line (``Tryton at URL unreachable during login: ConnectError``)."""
    client = TrytonClient(config)
    try:
        client.login()
    except BaseException:
        client.close()
        raise
    return client


class Intake:
    """``POST /v1/events`` with an API key (role gateway)."""

    def __init__(self, url: str, api_key: str, *, timeout_s: float = 30.0, client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = client or httpx.Client(timeout=httpx.Timeout(timeout_s, connect=3.0), trust_env=False)
        self._own = client is None
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    def post(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Post a batch; the intake's answer per event (``job_id``, ``event_id``, ``duplicate``...)."""
        try:
            response = self._http.post(f"{self.url}/v1/events", json=events, headers=self._headers)
        except httpx.HTTPError as exc:
            raise IntakeUnavailable(f"Crossdock intake at {self.url} unreachable: {type(exc).__name__}") from exc
        code = response.status_code
        if code == 202:
            body = response.json()
            jobs: list[dict[str, Any]] = body["jobs"] if isinstance(body, dict) and "jobs" in body else [body]
            return jobs
        if code in (429, 503) or code >= 500:
            raise IntakeUnavailable(f"Crossdock intake answered HTTP {code}")
        detail = response.text.strip().replace("\n", " ")[:300]
        if code in (401, 403):
            raise IntakeError(f"Crossdock intake refused the API key (HTTP {code}): it needs the gateway role")
        raise IntakeError(f"Crossdock intake refused the events (HTTP {code}): {detail}")

    def close(self) -> None:
        if self._own:
            self._http.close()


class FollowState:
    """Watermarks (per model) and the ids the intake accepted, in Redis."""

    def __init__(self, client: redis.Redis, prefix: str, source: str) -> None:
        self.r = client
        self.base = f"{prefix}:tryton-follow:{source}"

    def watermark(self, model: str) -> dt.datetime | None:
        raw = self.r.hget(f"{self.base}:watermark", model)
        if raw is None:
            return None
        return dt.datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else str(raw))

    def set_watermarks(self, marks: dict[str, dt.datetime]) -> None:
        if marks:
            self.r.hset(f"{self.base}:watermark", mapping={m: ts.isoformat() for m, ts in marks.items()})

    def posted(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` the intake has accepted before."""
        if not ids:
            return set()
        flags = self.r.smismember(f"{self.base}:posted", ids)
        return {i for i, flag in zip(ids, flags, strict=True) if flag}

    def mark(self, ids: list[str]) -> None:
        if ids:
            self.r.sadd(f"{self.base}:posted", *ids)


@dataclass
class Change:
    """One record version: what changed, when, and the events it maps to."""

    model: str
    record: int
    at: dt.datetime
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PollResult:
    changes: int = 0  # record versions read (overlap included)
    posted: int = 0  # events sent to the intake
    accepted: int = 0  # queued by the intake
    duplicates: int = 0  # answered duplicate by the intake (posted before; not queued again)
    already: int = 0  # skipped: accepted before (the Redis set)
    invalid: list[str] = field(default_factory=list)  # records that map to an event the intake would refuse
    watermarks: dict[str, str] = field(default_factory=dict)
    event_ids: list[str] = field(default_factory=list)  # the ids posted in this poll
    duplicate_ids: list[str] = field(default_factory=list)  # of those, the ones the intake had already
    seconds: float = 0.0

    def line(self) -> str:
        marks = ", ".join(f"{m.split('.')[-1]} {w[11:23] or w}" for m, w in sorted(self.watermarks.items()))
        bad = f", {len(self.invalid)} unmappable" if self.invalid else ""
        return (
            f"read {self.changes} change(s), posted {self.posted} (accepted {self.accepted}, duplicate "
            f"{self.duplicates}), {self.already} already posted{bad} in {self.seconds * 1000:.0f} ms; "
            f"watermarks: {marks}"
        )


def _ts(row: dict[str, Any]) -> dt.datetime:
    value = row.get("write_date") or row.get("create_date")
    return value if isinstance(value, dt.datetime) else EPOCH


def _iso(ts: dt.datetime) -> str:
    return (ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)).isoformat()


def _num(value: Any) -> float:
    return float(value or 0)


class TrytonFollower:
    """Poll ``client`` and post the mapped events to ``intake``; state in ``state``."""

    def __init__(
        self,
        client: TrytonClient,
        intake: EventSink,
        state: FollowState,
        *,
        source: str,
        network: Regions | None = None,
        since: str = "now",
        overlap_s: float = 1.0,
        batch: int = 200,
    ) -> None:
        self.client = client
        self.intake = intake
        self.state = state
        self.source = source
        self.network = network
        self.since = since
        self.overlap = dt.timedelta(seconds=overlap_s)
        self.batch = batch
        self.backend = TrytonBackend(client)

    # -- the poll ------------------------------------------------------------------------------

    def poll_once(self) -> PollResult:
        started = time.perf_counter()
        result = PollResult()
        marks: dict[str, dt.datetime] = {}
        changes: list[Change] = []
        for model in FOLLOWED:
            mark = self.state.watermark(model)
            if mark is None:
                mark = self._start(model)
            marks[model] = mark
            changes += self._read(model, mark - self.overlap)
        changes.sort(key=lambda c: (c.at, FOLLOWED.index(c.model), c.record))
        result.changes = len(changes)
        pending: list[dict[str, Any]] = []
        for change in changes:
            for event in change.events:
                try:
                    parse_event(event)
                except EventError as exc:
                    result.invalid.append(f"{change.model} {change.record}: {exc}")
                    log.warning("tryton.follow.unmappable", model=change.model, record=change.record, error=str(exc))
                    continue
                pending.append(event)
        seen = self.state.posted([e["id"] for e in pending])
        result.already = len(seen)
        todo = [e for e in pending if e["id"] not in seen]
        for start in range(0, len(todo), self.batch):
            chunk = todo[start : start + self.batch]
            jobs = self.intake.post(chunk)
            self.state.mark([e["id"] for e in chunk])
            result.posted += len(chunk)
            result.duplicates += sum(1 for j in jobs if j.get("duplicate"))
            result.accepted += sum(1 for j in jobs if not j.get("duplicate"))
            result.event_ids += [e["id"] for e in chunk]
            result.duplicate_ids += [str(j.get("event_id")) for j in jobs if j.get("duplicate")]
        for change in changes:  # everything read was posted: the watermarks may move
            marks[change.model] = max(marks[change.model], change.at)
        self.state.set_watermarks(marks)
        result.watermarks = {m: ts.isoformat(sep=" ") for m, ts in marks.items()}
        result.seconds = time.perf_counter() - started
        return result

    def run(
        self,
        stop: threading.Event,
        interval_s: float = 2.0,
        on_poll: Callable[[PollResult], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        """Poll every ``interval_s`` until ``stop``; Tryton or the intake being away is retried
        with a growing pause (up to 30 s), a refusal for good (credentials, a 422) ends the loop."""
        pause = interval_s
        while not stop.is_set():
            try:
                result = self.poll_once()
            except (IntakeUnavailable, ConnectorError) as exc:
                if isinstance(exc, PermanentConnectorError):
                    raise
                if on_error:
                    on_error(str(exc))
                log.warning("tryton.follow.retry", error=str(exc), pause_s=pause)
                stop.wait(pause)
                pause = min(30.0, pause * 2)
                continue
            pause = interval_s
            if on_poll:
                on_poll(result)
            stop.wait(interval_s)

    # -- reading Tryton ------------------------------------------------------------------------

    def _start(self, model: str) -> dt.datetime:
        """The first watermark of ``model``: ``since`` (now = Tryton's newest change)."""
        if self.since == "all":
            return EPOCH
        if self.since != "now":
            at = dt.datetime.fromisoformat(self.since.replace("Z", "+00:00"))
            return at.astimezone(dt.UTC).replace(tzinfo=None) if at.tzinfo else at
        newest = EPOCH
        for column in ("write_date", "create_date"):
            rows = self.client.search_read(
                model, [(column, "!=", None)], [column], limit=1, order=[(column, "DESC"), ("id", "DESC")]
            )
            if rows and isinstance(rows[0].get(column), dt.datetime):
                newest = max(newest, rows[0][column])
        # What is already there is not news: the overlap before the start counts as posted.
        self.state.mark([e["id"] for c in self._read(model, newest - self.overlap) for e in c.events])
        self.state.set_watermarks({model: newest})
        return newest

    def _rows(self, model: str, since: dt.datetime, fields: list[str]) -> list[dict[str, Any]]:
        domain: list[Any] = [
            ["OR", ("write_date", ">=", since), ("create_date", ">=", since)],
            ("state", "in", STATES[model]),
        ]
        out: list[dict[str, Any]] = []
        page = 500
        while True:
            rows = self.client.search_read(
                model,
                domain,
                [*fields, "write_date", "create_date"],
                offset=len(out),
                limit=page,
                order=[("id", "ASC")],
            )
            out += rows
            if len(rows) < page:
                return out

    def _read(self, model: str, since: dt.datetime) -> list[Change]:
        reader = {
            "sale.sale": self._sales,
            "purchase.purchase": self._purchases,
            "stock.shipment.in": self._receipts,
            "stock.inventory": self._inventories,
        }[model]
        return reader(since)

    def _envelope(
        self, event_id: str, kind: str, at: dt.datetime, subject: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": event_id,
            "source": self.source,
            "type": kind,
            "time": _iso(at),
            "subject": subject,
            "data": data,
        }

    def _index(self, locations: list[int]) -> Any:
        """The location tree, read again when a warehouse or location is new to it."""
        index = self.backend.index()
        if any(loc and loc not in index.node_of for loc in locations):
            index = self.backend.index(refresh=True)
        return index

    def _keyed(self, model: str, rows: list[dict[str, Any]]) -> None:
        """Give a record without a reference its number as reference (Crossdock's key)."""
        for r in rows:
            if not r.get("reference") and r.get("number"):
                self.client.write(model, [int(r["id"])], {"reference": r["number"]})
                log.info("tryton.follow.keyed", model=model, record=r["id"], reference=r["number"])
                r["reference"] = r["number"]

    def _sales(self, since: dt.datetime) -> list[Change]:
        rows = self._rows(
            "sale.sale",
            since,
            [
                "reference",
                "number",
                "state",
                "party.code",
                "sale_date",
                "shipping_date",
                "description",
                "comment",
                "shipment_address.country.code",
            ],
        )
        if not rows:
            return []
        self._keyed("sale.sale", [r for r in rows if r["state"] != "cancelled"])
        lines = self.client.search_read(
            "sale.line",
            [("sale", "in", [r["id"] for r in rows]), ("type", "=", "line")],
            ["sale", "sequence", "quantity", "product.code"],
            order=[("sequence", "ASC"), ("id", "ASC")],
        )
        by_sale: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ln in lines:
            by_sale[int(ln["sale"])].append(ln)
        created_ids = {int(r["id"]): f"tryton:sale.sale:{r['id']}:confirmed" for r in rows}
        known = self.state.posted(list(created_ids.values()))
        out = []
        for r in rows:
            at, sid = _ts(r), int(r["id"])
            order_id = str(r.get("reference") or r.get("number") or sid)
            change = Change("sale.sale", sid, at)
            if r["state"] == "cancelled":
                if created_ids[sid] in known:
                    change.events.append(
                        self._envelope(
                            f"tryton:sale.sale:{sid}:cancelled",
                            "oms.order.cancelled",
                            at,
                            order_id,
                            {"order_id": order_id, "reason": "cancelled in Tryton"},
                        )
                    )
                out.append(change)
                continue
            extras = _extras(r.get("description"))
            customer = str((r.get("party.") or {}).get("code") or "")
            address = r.get("shipment_address.") or {}
            country = (address.get("country.") or {}).get("code") if isinstance(address, dict) else None
            region = str(extras.get("region") or "") or (
                self.network.region_of(customer, country) if self.network else ""
            )
            sale_date, ship_date = r.get("sale_date"), r.get("shipping_date")
            data: dict[str, Any] = {
                "id": order_id,
                "customer": customer,
                "region": region,
                "priority": "express" if extras.get("priority") == "express" else "standard",
                "created": extras.get("created")
                or (_iso(dt.datetime.combine(sale_date, dt.time())) if sale_date else None),
                "ship_by": extras.get("ship_by")
                or (_iso(dt.datetime.combine(ship_date, dt.time(23, 59))) if ship_date else None),
                "carrier": extras.get("carrier"),
                "allow_split": bool(extras.get("allow_split", True)),
                "allow_substitution": bool(extras.get("allow_substitution", False)),
                "note": r.get("comment") or None,
                "lines": [
                    {
                        "line": int(ln["sequence"] or i + 1),
                        "sku": (ln.get("product.") or {}).get("code"),
                        "qty": _num(ln["quantity"]),
                    }
                    for i, ln in enumerate(by_sale.get(sid, []))
                ],
            }
            change.events.append(self._envelope(created_ids[sid], "oms.order.created", at, order_id, data))
            out.append(change)
        return out

    def _purchases(self, since: dt.datetime) -> list[Change]:
        rows = self._rows(
            "purchase.purchase",
            since,
            ["reference", "number", "state", "party.code", "party.name", "warehouse", "delivery_date"],
        )
        if not rows:
            return []
        self._keyed("purchase.purchase", rows)
        lines = self.client.search_read(
            "purchase.line",
            [("purchase", "in", [r["id"] for r in rows]), ("type", "=", "line")],
            ["purchase", "sequence", "product.code", "quantity", "unit_price"],
            order=[("sequence", "ASC"), ("id", "ASC")],
        )
        by_po: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ln in lines:
            by_po[int(ln["purchase"])].append(ln)
        index = self._index([int(r.get("warehouse") or 0) for r in rows])
        out = []
        for r in rows:
            at, pid = _ts(r), int(r["id"])
            po_id = str(r.get("reference") or r.get("number") or pid)
            wh = index.wh_by_id.get(int(r.get("warehouse") or 0))
            party = r.get("party.") or {}
            data = {
                "id": po_id,
                "supplier": str(party.get("code") or party.get("name") or ""),
                "node": wh.code if wh else "",
                "expected": r["delivery_date"].isoformat() if r.get("delivery_date") else None,
                "lines": [
                    {
                        "line": int(ln["sequence"] or 0),
                        "sku": (ln.get("product.") or {}).get("code"),
                        "qty": _num(ln["quantity"]),
                        "unit_price": _num(ln.get("unit_price")),
                    }
                    for ln in by_po.get(pid, [])
                ],
            }
            event = self._envelope(f"tryton:purchase.purchase:{pid}:confirmed", "erp.po.created", at, po_id, data)
            out.append(Change("purchase.purchase", pid, at, [event]))
        return out

    def _receipts(self, since: dt.datetime) -> list[Change]:
        rows = self._rows("stock.shipment.in", since, ["reference", "number", "warehouse", "effective_date"])
        if not rows:
            return []
        moves = self.client.search_read(
            "stock.move",
            [
                ("shipment", "in", [f"stock.shipment.in,{r['id']}" for r in rows]),
                ("origin", "like", "purchase.line,%"),
                ("state", "=", "done"),
            ],
            ["shipment", "product.code", "quantity", "origin.sequence", "purchase.reference", "purchase.number"],
            order=[("id", "ASC")],
        )
        per: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        for m in moves:
            purchase = m.get("purchase.") or {}
            po = str(purchase.get("reference") or purchase.get("number") or "")
            per[int(str(m["shipment"]).split(",")[1])][po].append(m)
        index = self._index([int(r.get("warehouse") or 0) for r in rows])
        out = []
        for r in rows:
            at, sid = _ts(r), int(r["id"])
            wh = index.wh_by_id.get(int(r.get("warehouse") or 0))
            receipt_id = str(r.get("reference") or r.get("number") or sid)
            eff = r.get("effective_date")
            change = Change("stock.shipment.in", sid, at)
            pos = per.get(sid, {})
            for po, po_moves in sorted(pos.items()):
                suffix = f":{po}" if len(pos) > 1 else ""
                data = {
                    "id": receipt_id + suffix,
                    "po_id": po,
                    "node": wh.code if wh else "",
                    "received_at": _iso(dt.datetime.combine(eff, dt.time())) if eff else _iso(at),
                    "lines": [
                        {
                            "po_line": int((m.get("origin.") or {}).get("sequence") or 0),
                            "sku": (m.get("product.") or {}).get("code"),
                            "qty": _num(m["quantity"]),
                        }
                        for m in po_moves
                    ],
                }
                change.events.append(
                    self._envelope(f"tryton:stock.shipment.in:{sid}:done{suffix}", "wms.receipt.posted", at, po, data)
                )
            out.append(change)
        return out

    def _inventories(self, since: dt.datetime) -> list[Change]:
        rows = self._rows("stock.inventory", since, ["number", "location", "date"])
        if not rows:
            return []
        ours = {
            str(n["resource"])
            for n in self.client.search_read(
                "ir.note",
                [
                    ("resource", "in", [f"stock.inventory,{r['id']}" for r in rows]),
                    ("message", "like", f"{NOTE_TAG} key=%"),
                ],
                ["resource"],
            )
        }
        lines = self.client.search_read(
            "stock.inventory.line",
            [("inventory", "in", [r["id"] for r in rows])],
            ["inventory", "product.code", "expected_quantity", "quantity"],
            order=[("id", "ASC")],
        )
        by_inv: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ln in lines:
            by_inv[int(ln["inventory"])].append(ln)
        index = self._index([int(r.get("location") or 0) for r in rows])
        out = []
        for r in rows:
            at, iid = _ts(r), int(r["id"])
            change = Change("stock.inventory", iid, at)
            out.append(change)
            if f"stock.inventory,{iid}" in ours:
                continue  # Crossdock's own adjustment (erp.post_adjustment): not news to it
            loc = int(r.get("location") or 0)
            place = index.places.get(loc)
            node = place.node if place else index.node_of.get(loc, "")
            for ln in by_inv.get(iid, []):
                delta = _num(ln.get("quantity")) - _num(ln.get("expected_quantity"))
                if abs(delta) < 1e-9:
                    continue
                sku = (ln.get("product.") or {}).get("code")
                data = {
                    "node": node,
                    "sku": sku,
                    "qty_delta": round(delta, 6),
                    "location": place.location if place else None,
                    "reason": f"inventory {r.get('number') or iid} counted in Tryton",
                }
                change.events.append(
                    self._envelope(
                        f"tryton:stock.inventory:{iid}:done:{ln['id']}",
                        "wms.inventory.adjusted",
                        at,
                        f"{node}/{sku}",
                        data,
                    )
                )
        return out
