"""WMS, ERP and OMS ports backed by one Tryton database (stock, sale, purchase) over JSON-RPC.

Reads
-----
- ``TrytonWms.stock(sku)``: per node (a ``stock.location`` warehouse, code = node id), the
  quantity of every location under its storage zone and under its quarantine ``<node>/LOCK``
  (``stock.location.read(..., ['quantity'])`` with context ``product``, ``with_childs=False``),
  read twice: once plain (done moves = on hand) and once with ``stock_assign`` (assigned outgoing
  moves counted as gone). on_hand − that = ``allocated``; units under ``<node>/LOCK`` are
  ``locked``. Dock stock (input and output zones) is not pickable and is left out.
- ``TrytonWms.waves()``: released work = customer shipments Tryton has assigned
  (``stock.shipment.out`` in state ``assigned``), grouped by the wave ``wms.create_wave`` tagged
  them with (zone, carrier, cutoff), else one wave per shipment. ``wave_dicts()`` gives the
  twin's shape and can include waiting shipments.
- ``TrytonWms.movements`` / ``TrytonErp.postings``: the same ledger (Tryton has one): done moves
  from confirmed ``stock.inventory`` (adjustments) and from suppliers (receipts).
  ``asns``/``receipts``: the purchase's ``stock.shipment.in``, draft (announced) or
  received/done; Tryton keeps one document, whose quantities and lots become the received ones.
  A received shipment that was announced first is a receipt naming that ASN (``asn_id`` = its
  own reference) and stays among the ASNs (as the twin keeps a received ASN), holding what
  arrived; one entered and received at once is a receipt without ASN. Announced = Tryton's log
  (``ir.model.log``) shows the draft stood on its own before the Receive click: it or its
  incoming moves were written in a later transaction than the one that created it, or the
  receive came ``ANNOUNCED_AFTER`` (60 s) or more after its creation; with no logged receive
  the adapter cannot tell and names the ASN (see ``TrytonBackend.announced``).
  A line's ``lot`` is its incoming move's ``lot.number`` (stock_lot).
- ``TrytonErp.purchase_order``/``open_purchase_orders``: ``purchase.purchase`` by reference,
  received = done incoming moves per line, a line is closed when none of its moves is pending;
  a line's ``lot`` is the lot noted as expected on the ``purchase.line`` (an ``ir.note`` with key
  ``po-lot:<PO>/<line>``, see ``connectors.tryton.loader.expect_lot``), since a purchase line has
  no lot field and its moves carry the lot that arrived.
- ``TrytonErp.sku``: ``product.product`` by code; ``book_stock``: warehouse ``quantity`` (blocked
  = the quarantine's quantity); ``planned_supply``: open incoming ``stock.move`` of purchases
  (``purchase.reference`` = PO id) and of internal shipments between warehouses (reference =
  transfer id); ``credit_hold``: the party's ``credit_limit_amount`` (account_credit_limit) is set
  and its exposure reaches it: ``credit_amount`` (receivable plus confirmed, uninvoiced sales, as
  sale_credit_limit computes it) plus the untaxed amount of its draft and quotation sales.
- ``TrytonOms``: ``sale.sale`` by reference (= order id). A sale has no column for priority,
  carrier, region, split/substitution rules: ``create_sale`` keeps them as JSON in its
  description. Status: ``cancelled`` and ``shipped`` come from Tryton's own states; otherwise the
  last status Crossdock set (an ``ir.note`` on the sale), else ``open``. Allocations per line are
  the assigned inventory moves of its open customer shipments, per warehouse.

Writes (``apply``; every one idempotent on the action's key)
------------------------------------------------------------
See ``MAPPED`` and ``NOT_MAPPED`` below: each action names the Tryton models and methods it uses,
or why it has no clean equivalent (those raise ``PermanentConnectorError``).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from connectors.ports import SNAPSHOT_PAGE, SnapshotPage
from connectors.tryton.loader import (
    GOLD_CATEGORY,
    ORDER_EXTRAS_PREFIX,
    ensure_order_point,
    lock_code,
    note_message,
)
from connectors.tryton.loader import NOTE_TAG as NOTE_TAG
from connectors.tryton.rpc import TrytonClient
from connectors.tryton.snapshot import snapshots
from domain.context import (
    BookPosition,
    LineAllocation,
    LocationStock,
    Movement,
    Network,
    NodeStock,
    OrderLineView,
    OrderView,
    PurchaseOrderView,
    SkuInfo,
    Supply,
    WaveView,
)
from domain.decisions import Action
from domain.errors import PermanentConnectorError, UnknownDocument, UnknownOrder, UnknownSku
from domain.models import (
    Asn,
    AsnLine,
    Carrier,
    Customer,
    Lane,
    Node,
    Order,
    OrderLine,
    PoLine,
    PurchaseOrder,
    Receipt,
    ReceiptLine,
    Scenario,
    TransferLane,
    Zone,
)

MAPPED: dict[str, str] = {
    "oms.allocate": (
        "stock.shipment.out create (reference = key; outgoing move origin = sale.line, at the node's warehouse) "
        "→ wait → assign_try; a short assignment keeps what was assigned and moves the rest to a waiting "
        "backorder shipment (reference = key + ':backorder')"
    ),
    "oms.split_line": "a waiting stock.shipment.out for backorder_qty at the line's node (reference = key)",
    "oms.update_order_status": "ir.note on the sale.sale (the status Crossdock set); 'cancelled' = sale.sale.cancel "
    "while the sale is draft or quotation",
    "oms.hold_order": "ir.note on the sale.sale with status held, reason and detail",
    "oms.release_allocation": "reduce the line's open stock.shipment.out at the node (wait, write the outgoing "
    "move's quantity, wait, assign_try), or cancel and delete a shipment released whole; the target quantities "
    "are noted (ir.note) before anything changes, so a retry sets the same",
    "oms.update_line_qty": "write sale.line quantity while the sale is draft or quotation (back to draft, write, "
    "quote again; noted first so a retry ends in the same state); a confirmed or processing sale's lines are "
    "read-only, so the change fails with that reason",
    "wms.create_wave": "assign_try on the orders' stock.shipment.out at the node, tagged with an ir.note (wave id, "
    "priority, parameters)",
    "wms.create_transfer": "stock.shipment.internal (reference = key) storage → storage, wait → assign_try",
    "erp.post_adjustment": "stock.inventory on the bin holding the SKU (or the storage zone), one line at "
    "expected + qty_delta, confirm; tagged with an ir.note carrying the key",
    "erp.expedite_po": "write planned_date = new_date on the open stock.move of the purchase.line",
    "erp.update_safety_stock": "stock.order_point (stock_supply) of type purchase for the product at the node's "
    "warehouse, min_quantity = target_quantity = qty: created, or written when it exists (one per product and "
    "warehouse); tagged with an ir.note carrying the key",
    "erp.close_po_line": "cancel the purchase.line's pending stock.move, add them to the line's moves_ignored (what "
    "Tryton's Handle Shipment Exception wizard does when nothing is recreated) and process the purchase; a retry "
    "finds nothing pending",
    "erp.create_backorder": "planned_date = promise_date on the line's waiting stock.shipment.out holding what is "
    "not assigned (oms.allocate and oms.split_line create it): draft, write, wait, as Tryton allows the date only "
    "on a draft shipment; without one, a waiting stock.shipment.out for qty (reference = key) at the warehouse "
    "the sale ships from",
    "oms.update_promise_date": "planned_date = promise_date on the line's (or, without a line, every line's) "
    "waiting stock.shipment.out holding no assigned stock (draft, write, wait; shipments holding stock keep their "
    "reservation and date), and an "
    "ir.note with the promise that OrderLineView.promise_date reads",
    "wms.create_task": "by payload.task_type: cycle_count = a draft stock.inventory of the bin (payload.location, "
    "else the storage zone) with one line for the SKU, quantity left to count, tagged with an ir.note carrying "
    "the key; repick, replenish, relocate = a draft stock.shipment.internal (reference = key) inside the node, "
    "from payload.from_location or location (else storage) to payload.to_location (a repick defaults to the "
    "output zone)",
}
NOT_MAPPED: dict[str, str] = {
    "oms.substitute_line": "a sale.line's product is read-only once the sale is confirmed (Tryton's rule), and the "
    "customer shipment's moves must match the line's product; substitute by cancelling the line's shipment and "
    "adding a line in Tryton",
}
TASK_TYPES = ("cycle_count", "repick", "replenish", "relocate")

OPEN_SHIPMENT_STATES = ("waiting", "assigned", "picked", "packed")
RECEIVED_STATES = ("received", "done")
# How long a supplier shipment stood in draft before its receive for it to count as announced
# when nothing was written to it in between (``TrytonBackend.announced``): a shipment entered
# at the dock is saved and received in one go, seconds apart at most.
ANNOUNCED_AFTER = dt.timedelta(seconds=60)


@dataclass
class Overlay:
    """What Tryton does not store but the engines need: lanes, carriers, regions, substitutes."""

    lanes: list[Lane] = field(default_factory=list)
    transfer_lanes: list[TransferLane] = field(default_factory=list)
    nodes: dict[str, Node] = field(default_factory=dict)
    substitutes: dict[str, list[str]] = field(default_factory=dict)
    safety_stock: dict[str, dict[str, float]] = field(default_factory=dict)
    # Where a sale ships to when it does not say (CROSSDOCK_NETWORK_FILE regions): by customer
    # code, else by the shipment address's country code.
    customer_regions: dict[str, str] = field(default_factory=dict)
    country_regions: dict[str, str] = field(default_factory=dict)

    def region_of(self, customer: str, country: str | None) -> str:
        return self.customer_regions.get(customer) or self.country_regions.get(country or "") or ""

    @classmethod
    def from_scenario(cls, scenario: dict[str, Any] | Scenario) -> Overlay:
        sc = scenario if isinstance(scenario, Scenario) else Scenario.model_validate(scenario)
        return cls(
            lanes=list(sc.lanes),
            transfer_lanes=list(sc.transfer_lanes),
            nodes={n.id: n for n in sc.nodes},
            substitutes={s.id: list(s.substitutes) for s in sc.skus if s.substitutes},
            safety_stock={s.id: dict(s.safety_stock) for s in sc.skus if s.safety_stock},
        )


@dataclass
class _Warehouse:
    id: int
    code: str
    input: int
    output: int
    storage: int
    lock: int | None


@dataclass
class _Place:
    node: str
    zone: str
    location: str
    locked: bool


class _Index:
    """The location tree: warehouses, and each pickable or quarantine location's node/zone/bin."""

    def __init__(self, locations: list[dict[str, Any]]) -> None:
        by_id = {int(r["id"]): r for r in locations}
        self.warehouses: dict[str, _Warehouse] = {}
        self.places: dict[int, _Place] = {}
        for r in locations:
            if r["type"] != "warehouse" or not r["code"]:
                continue
            code = str(r["code"])
            lock = next(
                (int(x["id"]) for x in locations if x["parent"] == r["id"] and x["code"] == lock_code(code)), None
            )
            wh = _Warehouse(
                int(r["id"]),
                code,
                int(r["input_location"]),
                int(r["output_location"]),
                int(r["storage_location"]),
                lock,
            )
            self.warehouses[code] = wh
            for root, locked in ((wh.storage, False), (wh.lock, True)):
                if root is None or root not in by_id:
                    continue
                top = by_id[root]
                for x in locations:
                    if not (top["left"] <= x["left"] and x["right"] <= top["right"]) or x["type"] != "storage":
                        continue
                    chain = [x]
                    while chain[-1]["id"] != root and chain[-1]["parent"] in by_id:
                        chain.append(by_id[chain[-1]["parent"]])
                    depth = len(chain) - 1  # 0 = the root itself, 1 = a zone, 2+ = a bin
                    zone = "" if depth == 0 else str(chain[-2]["code"] or chain[-2]["name"])
                    self.places[int(x["id"])] = _Place(code, zone, str(x["code"] or x["name"]), locked)
        self.wh_by_id = {w.id: w for w in self.warehouses.values()}
        self.node_of: dict[int, str] = {}
        for x in locations:
            for w in self.warehouses.values():
                top = by_id[w.id]
                if top["left"] <= x["left"] and x["right"] <= top["right"]:
                    self.node_of[int(x["id"])] = w.code
                    break

    def warehouse(self, node: str) -> _Warehouse:
        wh = self.warehouses.get(node)
        if wh is None:
            raise PermanentConnectorError(f"node {node} is not a warehouse in Tryton")
        return wh


class TrytonBackend:
    """The client plus the caches the three adapters share (location tree, product ids)."""

    def __init__(self, client: TrytonClient, overlay: Overlay | None = None) -> None:
        self.client = client
        self.overlay = overlay or Overlay()
        self._lock = threading.Lock()
        self._index: _Index | None = None
        self._products: dict[str, int] = {}
        self.announced_after = ANNOUNCED_AFTER

    # -- caches ------------------------------------------------------------------------------

    def index(self, refresh: bool = False) -> _Index:
        if self._index is None or refresh:
            rows = self.client.search_read(
                "stock.location",
                [("type", "in", ["warehouse", "storage", "view"])],
                [
                    "code",
                    "name",
                    "type",
                    "parent",
                    "left",
                    "right",
                    "input_location",
                    "output_location",
                    "storage_location",
                ],
            )
            with self._lock:
                self._index = _Index(rows)
        return self._index

    def product_id(self, sku: str) -> int | None:
        pid = self._products.get(sku)
        if pid is None:
            found = self.client.search("product.product", [("code", "=", sku)], limit=1)
            if not found:
                return None
            pid = self._products[sku] = found[0]
        return pid

    def require_product(self, sku: str) -> int:
        pid = self.product_id(sku)
        if pid is None:
            raise PermanentConnectorError(f"{sku} is not a product in Tryton")
        return pid

    # -- notes: where Crossdock keeps what a Tryton record has no field for -----------------------

    def note(self, resource: str, key: str, body: dict[str, Any]) -> int:
        existing = self.find_note(key, resource)
        if existing is not None:
            return existing
        (nid,) = self.client.create("ir.note", [{"resource": resource, "message": note_message(key, body)}])
        return nid

    def find_note(self, key: str, resource: str | None = None) -> int | None:
        domain: list[Any] = [("message", "like", f"{NOTE_TAG} key={key}\n%")]
        if resource:
            domain.append(("resource", "=", resource))
        found = self.client.search("ir.note", domain, limit=1)
        return found[0] if found else None

    def notes(self, resources: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Crossdock's notes per resource, oldest first, each as its JSON body."""
        if not resources:
            return {}
        rows = self.client.search_read(
            "ir.note",
            [("resource", "in", resources), ("message", "like", f"{NOTE_TAG} key=%")],
            ["resource", "message"],
            order=[("id", "ASC")],
        )
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            _, _, body = str(r["message"]).partition("\n")
            try:
                parsed = json.loads(body)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                out[str(r["resource"])].append(parsed)
        return out

    # -- the stock ledger and the inbound documents (shared by the WMS and ERP views) -----------

    def ledger(
        self, sku: str, node: str
    ) -> list[tuple[Literal["adjustment", "receipt"], float, dt.datetime | None, str | None]]:
        """Done moves of ``sku`` into or out of ``node`` that are adjustments (from a
        ``stock.inventory``) or supplier receipts: ``(kind, signed qty, date, reference)``, oldest
        first. The opening balance the loader posts (moves without an origin) is not reported."""
        pid = self.product_id(sku)
        if pid is None:
            return []
        index = self.index()
        wh = index.warehouses.get(node)
        if wh is None:
            return []
        rows = self.client.search_read(
            "stock.move",
            [
                ("product", "=", pid),
                ("state", "=", "done"),
                [
                    "OR",
                    ("to_location", "child_of", [wh.id], "parent"),
                    ("from_location", "child_of", [wh.id], "parent"),
                ],
                ["OR", ("origin", "like", "stock.inventory.line,%"), ("from_location.type", "=", "supplier")],
            ],
            [
                "internal_quantity",
                "effective_date",
                "from_location",
                "to_location",
                "origin",
                "shipment",
                "shipment.reference",
                "shipment.number",
                "purchase.reference",
            ],
            order=[("effective_date", "ASC"), ("id", "ASC")],
        )
        inventory_lines = sorted(
            int(str(r["origin"]).split(",")[1])
            for r in rows
            if str(r.get("origin") or "").startswith("stock.inventory.line,")
        )
        numbers = {
            int(x["id"]): (x.get("inventory.") or {}).get("number")
            for x in self.client.read("stock.inventory.line", inventory_lines, ["inventory.number"])
        }
        out: list[tuple[Literal["adjustment", "receipt"], float, dt.datetime | None, str | None]] = []
        for r in rows:
            into = index.node_of.get(int(r["to_location"])) == node
            out_of = index.node_of.get(int(r["from_location"])) == node
            if into == out_of:
                continue
            qty = float(r["internal_quantity"]) * (1 if into else -1)
            origin = str(r.get("origin") or "")
            shipment = r.get("shipment.") or {}
            if origin.startswith("stock.inventory.line,"):
                kind: Literal["adjustment", "receipt"] = "adjustment"
                ref = numbers.get(int(origin.split(",")[1]))
            else:
                kind = "receipt"
                ref = shipment.get("reference") or shipment.get("number") or (r.get("purchase.") or {}).get("reference")
            out.append((kind, qty, _date_dt(r.get("effective_date")), str(ref) if ref else None))
        return out

    def purchases(self, domain: list[Any]) -> list[dict[str, Any]]:
        """Purchases with their lines, each line with its moves (state, quantity, shipment, lot) and
        the lot noted as expected on it (``expected_lot``, None when none is)."""
        c = self.client
        rows = c.search_read(
            "purchase.purchase",
            domain,
            ["reference", "number", "state", "party.code", "warehouse", "delivery_date"],
            order=[("id", "ASC")],
        )
        if not rows:
            return []
        lines = c.search_read(
            "purchase.line",
            [("purchase", "in", [r["id"] for r in rows]), ("type", "=", "line")],
            ["purchase", "sequence", "product.code", "quantity", "unit_price"],
            order=[("sequence", "ASC")],
        )
        moves = (
            c.search_read(
                "stock.move",
                [("origin", "in", [f"purchase.line,{ln['id']}" for ln in lines])],
                [
                    "origin",
                    "state",
                    "internal_quantity",
                    "shipment",
                    "effective_date",
                    "planned_date",
                    "lot.number",
                ],
            )
            if lines
            else []
        )
        by_line: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for m in moves:
            by_line[int(str(m["origin"]).split(",")[1])].append(m)
        lots: dict[int, str] = {}
        if lines:
            for resource, bodies in self.notes([f"purchase.line,{ln['id']}" for ln in lines]).items():
                lot = next((b["expected_lot"] for b in bodies if b.get("expected_lot")), None)
                if lot:
                    lots[int(resource.split(",")[1])] = str(lot)
        for r in rows:
            r["lines"] = [
                dict(ln, moves=by_line.get(int(ln["id"]), []), expected_lot=lots.get(int(ln["id"])))
                for ln in lines
                if int(ln["purchase"]) == int(r["id"])
            ]
        return rows

    def supplier_shipments(self, po_id: str) -> list[tuple[dict[str, Any], list[tuple[int, str, float, str | None]]]]:
        """The ``stock.shipment.in`` holding the purchase's moves: (shipment, [(po line, sku, qty, lot)]).
        Each shipment also carries ``move_ids``, the ids of those moves."""
        purchases = self.purchases([("reference", "=", po_id)])
        if not purchases:
            return []
        ship_moves: dict[int, list[tuple[int, str, float, str | None]]] = defaultdict(list)
        move_ids: dict[int, list[int]] = defaultdict(list)
        for ln in purchases[0]["lines"]:
            seq = int(ln["sequence"] or 0)
            sku = str((ln.get("product.") or {}).get("code"))
            for m in ln["moves"]:
                if str(m.get("shipment") or "").startswith("stock.shipment.in,") and m["state"] != "cancelled":
                    sid = int(str(m["shipment"]).split(",")[1])
                    lot = (m.get("lot.") or {}).get("number")
                    ship_moves[sid].append((seq, sku, float(m["internal_quantity"]), str(lot) if lot else None))
                    move_ids[sid].append(int(m["id"]))
        if not ship_moves:
            return []
        ships = self.client.read(
            "stock.shipment.in",
            sorted(ship_moves),
            [
                "reference",
                "number",
                "state",
                "planned_date",
                "effective_date",
                "warehouse",
                "supplier.code",
                "create_date",
            ],
        )
        return [(dict(sh, move_ids=move_ids[int(sh["id"])]), ship_moves[int(sh["id"])]) for sh in ships]

    def announced(self, shipments: list[dict[str, Any]]) -> set[int]:
        """The received supplier shipments (of ``supplier_shipments``) that were announced before
        they were received, so their receipt names them as its ASN.

        Tryton keeps one document for the ASN and the receipt, and no field says it was announced;
        its log (``ir.model.log``: every button a user clicks, every write a user makes, with the
        time of the transaction) tells how the draft came to be received. A shipment entered at the
        dock is created and received in one go: nothing happens to it between the transaction that
        created it and the Receive click. An announced one stood on its own as a draft: it or its
        incoming moves were written in a transaction after its creation (what arrived typed over
        what was announced, a date moved), or it was received ``announced_after`` or more after
        its creation. This holds whoever announces (a user, an EDI import, the loader) and does not
        depend on the reference's spelling or on a note only Crossdock would write. A receive that
        was not logged (made by server code, not a user) leaves nothing to tell: the shipment was a
        draft, which ``asns`` reports as announced, so it names its ASN rather than raise a
        ``receipt_without_asn`` on no evidence."""
        received = [sh for sh in shipments if sh["state"] in RECEIVED_STATES]
        if not received:
            return set()
        owner: dict[str, int] = {}
        for sh in received:
            sid = int(sh["id"])
            owner[f"stock.shipment.in,{sid}"] = sid
            owner.update({f"stock.move,{m}": sid for m in sh.get("move_ids", [])})
        logs = self.client.search_read(
            "ir.model.log",
            [("resource", "in", sorted(owner)), ("event", "in", ["write", "button"])],
            ["resource", "event", "target", "create_date"],
            order=[("create_date", "ASC"), ("id", "ASC")],
        )
        by_shipment: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for log in logs:
            sid_of = owner.get(str(log.get("resource") or ""))
            if sid_of is not None and log.get("create_date") is not None:
                by_shipment[sid_of].append(log)
        out: set[int] = set()
        for sh in received:
            sid, created = int(sh["id"]), sh.get("create_date")
            events = by_shipment.get(sid, [])
            receive = next(
                (
                    log["create_date"]
                    for log in events
                    if log["event"] == "button"
                    and log["target"] == "receive"
                    and str(log["resource"]).startswith("stock.shipment.in,")
                ),
                None,
            )
            if receive is None or created is None:  # nothing to tell by
                out.add(sid)
                continue
            touched = any(created < log["create_date"] < receive for log in events)
            if touched or receive - created >= self.announced_after:
                out.add(sid)
        return out

    def book_qty(self, warehouse: int, product: int) -> float:
        (r,) = self.client.read("stock.location", [warehouse], ["quantity"], context={"product": product})
        return float(r["quantity"] or 0)

    def today(self) -> dt.date:
        value = self.client.call("ir.date", "today")
        return value if isinstance(value, dt.date) else dt.date.today()


def _dispatch(
    action: Action, system: str, handlers: Mapping[str, Callable[[Action], dict[str, Any]]]
) -> dict[str, Any]:
    """Apply ``action`` with the handler for its name, after the checks every write passes."""
    _refuse(action, system)
    handler = handlers.get(action.name)
    if handler is None:
        raise PermanentConnectorError(f"unknown action type {action.name!r}")
    return handler(action)


def _refuse(action: Action, system: str) -> None:
    if action.system != system:
        raise PermanentConnectorError(f"the {system} adapter cannot apply {action.name}")
    if not action.idempotency_key:
        raise PermanentConnectorError(f"{action.name} has no idempotency key; refusing to write")
    if action.name in NOT_MAPPED:
        raise PermanentConnectorError(f"{action.name} has no Tryton equivalent: {NOT_MAPPED[action.name]}")


def _req(payload: dict[str, Any], name: str, action: Action) -> Any:
    value = payload.get(name)
    if value is None or value == "":
        raise PermanentConnectorError(f"{action.name} payload is missing {name}")
    return value


def _qty(payload: dict[str, Any], name: str, action: Action, *, positive: bool = False) -> float:
    value = _req(payload, name, action)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PermanentConnectorError(f"{action.name} payload.{name} must be a number, got {value!r}") from None
    if positive and number <= 0:
        raise PermanentConnectorError(f"{action.name} payload.{name} must be greater than 0")
    return number


# -- WMS --------------------------------------------------------------------------------------------


class TrytonWms:
    system = "wms"

    def __init__(self, backend: TrytonBackend) -> None:
        self.b = backend

    def stock(self, sku: str) -> list[NodeStock]:
        pid = self.b.product_id(sku)
        if pid is None:
            return []
        index = self.b.index()
        ids = sorted(index.places)
        ctx = {"product": pid, "with_childs": False}
        c = self.b.client
        on_hand = {r["id"]: float(r["quantity"] or 0) for r in c.read("stock.location", ids, ["quantity"], context=ctx)}
        after = {
            r["id"]: float(r["quantity"] or 0)
            for r in c.read("stock.location", ids, ["quantity"], context={**ctx, "stock_assign": True})
        }
        per_node: dict[str, dict[tuple[str, str], list[float]]] = defaultdict(dict)
        allocated: dict[str, float] = defaultdict(float)
        for loc_id in ids:
            qty, free = on_hand.get(loc_id, 0.0), after.get(loc_id, 0.0)
            if not qty and not free:
                continue
            place = index.places[loc_id]
            cell = per_node[place.node].setdefault((place.zone, place.location), [0.0, 0.0])
            cell[0] += qty
            if place.locked:
                cell[1] += qty
            allocated[place.node] += qty - free
        out = []
        for node in sorted(per_node):
            locs = [
                LocationStock(zone=zone, location=loc, on_hand=v[0], locked=v[1])
                for (zone, loc), v in sorted(per_node[node].items())
            ]
            total, locked = sum(x.on_hand for x in locs), sum(x.locked for x in locs)
            alloc = max(0.0, allocated[node])
            out.append(
                NodeStock(
                    node=node,
                    sku=sku,
                    on_hand=total,
                    locked=locked,
                    allocated=alloc,
                    pickable=max(0.0, total - locked - alloc),
                    locations=locs,
                )
            )
        return out

    def stock_snapshot(
        self, since: dt.datetime | None = None, after: str | None = None, limit: int = SNAPSHOT_PAGE
    ) -> SnapshotPage:
        """Bulk read: on hand and locked per SKU@node (``connectors.tryton.snapshot``)."""
        return snapshots(self.b).page("wms", since, after, limit)

    def movements(self, sku: str, node: str) -> list[Movement]:
        """Adjustments (confirmed ``stock.inventory``) and supplier receipts at ``node``; Tryton keeps
        one ledger, so these are the same moves ``TrytonErp.postings`` reports."""
        return [
            Movement(kind=kind, node=node, sku=sku, qty_delta=qty, at=at, ref=ref)
            for kind, qty, at, ref in self.b.ledger(sku, node)
        ]

    def asns(self, po_id: str) -> list[Asn]:
        """Supplier shipments (``stock.shipment.in``) of the purchase that are announced: drafts, and
        received ones that were announced first (``TrytonBackend.announced``), which hold what
        arrived (Tryton keeps one document)."""
        shipments = self.b.supplier_shipments(po_id)
        announced = self.b.announced([sh for sh, _ in shipments])
        out = []
        for sh, lines in shipments:
            if not lines or not (sh["state"] == "draft" or int(sh["id"]) in announced):
                continue
            out.append(
                Asn(
                    id=_doc_id(sh),
                    po_id=po_id,
                    supplier=str((sh.get("supplier.") or {}).get("code") or ""),
                    expected=sh.get("planned_date"),
                    lines=[AsnLine(po_line=ln, sku=sku, qty=qty, lot=lot) for ln, sku, qty, lot in lines],
                )
            )
        return out

    def receipts(self, po_id: str) -> list[Receipt]:
        """Supplier shipments of the purchase that are received or done; one announced first names
        itself as its ASN (``TrytonBackend.announced``), one entered and received at once names none."""
        index = self.b.index()
        shipments = self.b.supplier_shipments(po_id)
        announced = self.b.announced([sh for sh, _ in shipments])
        out = []
        for sh, lines in shipments:
            if sh["state"] not in RECEIVED_STATES or not lines:
                continue
            wh = index.wh_by_id.get(int(sh["warehouse"] or 0))
            doc_id = _doc_id(sh)
            out.append(
                Receipt(
                    id=doc_id,
                    po_id=po_id,
                    asn_id=doc_id if int(sh["id"]) in announced else None,
                    node=wh.code if wh else "",
                    received_at=_date_dt(sh.get("effective_date")),
                    lines=[ReceiptLine(po_line=ln, sku=sku, qty=qty, lot=lot) for ln, sku, qty, lot in lines],
                )
            )
        return out

    def waves(self, cutoff_after: dt.datetime | None = None, nodes: Sequence[str] | None = None) -> list[WaveView]:
        """Released waves: customer shipments Tryton has assigned (stock reserved, ready to pick),
        grouped by the wave ``wms.create_wave`` tagged them with, else one wave per shipment. With
        ``cutoff_after``, only waves whose cutoff is later (or that have none); with ``nodes``,
        only those warehouses' waves."""
        waves = [WaveView.from_wms(w) for w in self.wave_dicts(states=("assigned",))]
        if nodes is not None:
            waves = [w for w in waves if w.node in set(nodes)]
        if cutoff_after is None:
            return waves
        after = cutoff_after if cutoff_after.tzinfo else cutoff_after.replace(tzinfo=dt.UTC)
        return [w for w in waves if w.cutoff is None or w.cutoff > after]

    def wave_dicts(self, states: tuple[str, ...] = ("waiting", "assigned")) -> list[dict[str, Any]]:
        """Open customer shipments as waves in the twin's shape (``waveId``, ``node``, ``status``,
        ``orders`` with ``priorityScore`` and ``lines``, ``parameters``)."""
        c = self.b.client
        ships = c.search_read(
            "stock.shipment.out",
            [("state", "in", list(states))],
            ["number", "reference", "state", "warehouse"],
            order=[("id", "ASC")],
        )
        if not ships:
            return []
        index = self.b.index()
        moves = c.search_read(
            "stock.move",
            [("shipment", "in", [f"stock.shipment.out,{s['id']}" for s in ships]), ("origin", "like", "sale.line,%")],
            ["shipment", "quantity", "product.code", "origin", "sale.reference"],
        )
        line_ids = sorted({int(str(m["origin"]).split(",")[1]) for m in moves})
        seq = {r["id"]: r["sequence"] for r in c.read("sale.line", line_ids, ["sequence"])}
        notes = self.b.notes([f"stock.shipment.out,{s['id']}" for s in ships])
        waves: dict[str, dict[str, Any]] = {}
        for s in ships:
            res = f"stock.shipment.out,{s['id']}"
            tag = next((n for n in reversed(notes.get(res, [])) if n.get("kind") == "wave"), None)
            wave_id = str(tag["waveId"]) if tag else f"shipment:{s['number'] or s['id']}"
            wh = index.wh_by_id.get(int(s["warehouse"]))
            wave = waves.setdefault(
                wave_id,
                {
                    "waveId": wave_id,
                    "node": wh.code if wh else str(s["warehouse"]),
                    "status": "released" if s["state"] == "assigned" else "waiting",
                    "orders": [],
                    "parameters": dict(tag.get("parameters") or {}) if tag else {},
                },
            )
            if s["state"] != "assigned":
                wave["status"] = "waiting"
            by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for m in moves:
                if m["shipment"] != res or not m.get("sale."):
                    continue
                by_order[str(m["sale."]["reference"])].append(
                    {
                        "line": seq.get(int(str(m["origin"]).split(",")[1])),
                        "sku": (m.get("product.") or {}).get("code"),
                        "qty": float(m["quantity"]),
                    }
                )
            scores = dict(tag.get("scores") or {}) if tag else {}
            for order_id, lines in sorted(by_order.items()):
                existing = next((o for o in wave["orders"] if o["orderId"] == order_id), None)
                if existing is None:
                    wave["orders"].append(
                        {"orderId": order_id, "priorityScore": scores.get(order_id, 0.0), "lines": lines}
                    )
                else:
                    existing["lines"].extend(lines)
        return list(waves.values())

    def apply(self, action: Action) -> dict[str, Any]:
        handlers = {
            "wms.create_transfer": self._create_transfer,
            "wms.create_wave": self._create_wave,
            "wms.create_task": self._create_task,
        }
        return _dispatch(action, self.system, handlers)

    def _bin(self, wh: _Warehouse, location: Any) -> int:
        """The storage location of ``wh`` whose code is ``location`` (a bin or a zone)."""
        for lid, pl in self.b.index().places.items():
            if pl.node == wh.code and not pl.locked and pl.location == str(location):
                return lid
        raise PermanentConnectorError(f"location {location} is not a storage location of {wh.code} in Tryton")

    def _create_task(self, action: Action) -> dict[str, Any]:
        p = action.payload
        task_type = str(_req(p, "task_type", action))
        if task_type not in TASK_TYPES:
            raise PermanentConnectorError(
                f"wms.create_task task_type {task_type!r} has no Tryton equivalent; mapped: {', '.join(TASK_TYPES)}"
            )
        wh = self.b.index().warehouse(str(_req(p, "node", action)))
        product = self.b.require_product(str(_req(p, "sku", action)))
        if task_type == "cycle_count":
            return self._count_task(action, wh, product)
        return self._move_task(action, task_type, wh, product)

    def _count_task(self, action: Action, wh: _Warehouse, product: int) -> dict[str, Any]:
        """A draft ``stock.inventory`` of the bin with one line for the SKU: the count to do."""
        p, key, c = action.payload, action.idempotency_key, self.b.client
        note = self.b.find_note(key)
        if note is not None:
            (rec,) = c.read("ir.note", [note], ["resource"])
            inv = int(str(rec["resource"]).split(",")[1])
        else:
            location = self._bin(wh, p["location"]) if p.get("location") else wh.storage
            (inv,) = c.create(
                "stock.inventory",
                [
                    {
                        "location": location,
                        "date": self.b.today(),
                        "company": c.context.get("company"),
                        "lines": [("create", [{"product": product}])],
                    }
                ],
            )
            self.b.note(
                f"stock.inventory,{inv}",
                key,
                {
                    "kind": "task",
                    "task_type": "cycle_count",
                    "node": wh.code,
                    "sku": p.get("sku"),
                    "location": p.get("location"),
                    "reason": p.get("reason"),
                    "case_key": p.get("case_key"),
                },
            )
        (inventory,) = c.read("stock.inventory", [inv], ["state", "number"])
        status = {"draft": "open", "done": "done"}.get(str(inventory["state"]), str(inventory["state"]))
        return {"task_id": inventory["number"] or str(inv), "tryton_id": inv, "status": status}

    def _move_task(self, action: Action, task_type: str, wh: _Warehouse, product: int) -> dict[str, Any]:
        """A draft ``stock.shipment.internal`` inside the node: the move to do."""
        p, key, c = action.payload, action.idempotency_key, self.b.client
        found = c.search("stock.shipment.internal", [("reference", "=", key)], limit=1)
        if found:
            sid = found[0]
        else:
            qty = _qty(p, "qty", action, positive=True)
            source = p.get("from_location") or p.get("location")
            src = self._bin(wh, source) if source else wh.storage
            if p.get("to_location"):
                dst = self._bin(wh, p["to_location"])
            elif task_type == "repick":
                dst = wh.output
            else:
                raise PermanentConnectorError(f"wms.create_task {task_type} payload is missing to_location")
            if src == dst:
                raise PermanentConnectorError(f"wms.create_task {task_type}: from and to are the same location")
            unit = c.read("product.product", [product], ["default_uom"])[0]["default_uom"]
            company, today = c.context.get("company"), self.b.today()
            move = {
                "product": product,
                "unit": unit,
                "quantity": qty,
                "company": company,
                "from_location": src,
                "to_location": dst,
                "planned_date": today,
            }
            (sid,) = c.create(
                "stock.shipment.internal",
                [
                    {
                        "reference": key,
                        "company": company,
                        "planned_date": today,
                        "planned_start_date": today,
                        "from_location": src,
                        "to_location": dst,
                        "moves": [("create", [move])],
                    }
                ],
            )
        (ship,) = c.read("stock.shipment.internal", [sid], ["state", "number"])
        status = "open" if ship["state"] in ("request", "draft", "waiting", "assigned") else str(ship["state"])
        return {"task_id": ship["number"] or str(sid), "tryton_id": sid, "status": status}

    def _create_transfer(self, action: Action) -> dict[str, Any]:
        p, key, c = action.payload, action.idempotency_key, self.b.client
        index = self.b.index()
        src, dst = index.warehouse(str(_req(p, "from", action))), index.warehouse(str(_req(p, "to", action)))
        qty = _qty(p, "qty", action, positive=True)
        product = self.b.require_product(str(_req(p, "sku", action)))
        found = c.search("stock.shipment.internal", [("reference", "=", key)], limit=1)
        if found:
            sid = found[0]
        else:
            unit = c.read("product.product", [product], ["default_uom"])[0]["default_uom"]
            company = self.b.client.context.get("company")
            today = self.b.today()
            (sid,) = c.create(
                "stock.shipment.internal",
                [
                    {
                        "reference": key,
                        "company": company,
                        "planned_date": today,
                        "planned_start_date": today,
                        "from_location": src.storage,
                        "to_location": dst.storage,
                        "moves": [
                            (
                                "create",
                                [
                                    {
                                        "product": product,
                                        "unit": unit,
                                        "quantity": qty,
                                        "company": company,
                                        "from_location": src.storage,
                                        "to_location": dst.storage,
                                        "planned_date": today,
                                    }
                                ],
                            )
                        ],
                    }
                ],
            )
        (ship,) = c.read("stock.shipment.internal", [sid], ["state", "number"])
        if ship["state"] in ("request", "draft"):
            c.button("stock.shipment.internal", "wait", [sid])
            ship["state"] = "waiting"
        if ship["state"] == "waiting":
            c.button("stock.shipment.internal", "assign_try", [sid])
        (ship,) = c.read("stock.shipment.internal", [sid], ["state", "number"])
        return {"transfer_id": ship["number"] or str(sid), "tryton_id": sid, "status": ship["state"]}

    def _create_wave(self, action: Action) -> dict[str, Any]:
        p, key, c = action.payload, action.idempotency_key, self.b.client
        wave_id, node = str(_req(p, "waveId", action)), str(_req(p, "node", action))
        wh = self.b.index().warehouse(node)
        orders = _req(p, "orders", action)
        if not isinstance(orders, list) or not orders:
            raise PermanentConnectorError(f"{action.name} payload.orders must be a non-empty list")
        order_ids = [str(o.get("orderId")) for o in orders if isinstance(o, dict)]
        sales = {
            r["reference"]: r["id"] for r in c.search_read("sale.sale", [("reference", "in", order_ids)], ["reference"])
        }
        unknown = [o for o in order_ids if o not in sales]
        if unknown:
            raise PermanentConnectorError(f"wave {wave_id}: orders {', '.join(unknown)} are not sales in Tryton")
        ships = c.search_read(
            "stock.shipment.out",
            [
                ("warehouse", "=", wh.id),
                ("state", "in", ["waiting", "assigned"]),
                ("moves.origin.sale", "in", list(sales.values()), "sale.line"),
            ],
            ["state"],
        )
        if not ships:
            raise PermanentConnectorError(f"wave {wave_id}: no open customer shipment at {node} for these orders")
        waiting = [s["id"] for s in ships if s["state"] == "waiting"]
        if waiting:
            c.button("stock.shipment.out", "assign_try", waiting)
        scores = {str(o.get("orderId")): o.get("priorityScore", 0.0) for o in orders if isinstance(o, dict)}
        for s in ships:
            self.b.note(
                f"stock.shipment.out,{s['id']}",
                f"{key}:{s['id']}",
                {
                    "kind": "wave",
                    "waveId": wave_id,
                    "parameters": p.get("parameters") or {},
                    "scores": scores,
                },
            )
        states = c.read("stock.shipment.out", [s["id"] for s in ships], ["state"])
        status = "released" if all(s["state"] == "assigned" for s in states) else "waiting"
        return {"waveId": wave_id, "status": status, "shipments": [s["id"] for s in ships]}


# -- ERP --------------------------------------------------------------------------------------------


class TrytonErp:
    system = "erp"

    def __init__(self, backend: TrytonBackend) -> None:
        self.b = backend

    def sku(self, sku: str) -> SkuInfo:
        rows = self.b.client.search_read(
            "product.product", [("code", "=", sku)], ["code", "name", "cost_price"], limit=1
        )
        if not rows:
            raise UnknownSku(sku)
        r = rows[0]
        self.b._products[sku] = int(r["id"])
        # Safety stock: the purchase order points Tryton keeps (stock_supply), over the overlay's.
        whs = self.b.index().wh_by_id
        points = {
            whs[int(op["location"])].code: float(op["min_quantity"] or 0)
            for op in self.b.client.search_read(
                "stock.order_point",
                [("product", "=", int(r["id"])), ("type", "=", "purchase")],
                ["location", "min_quantity"],
            )
            if int(op["location"]) in whs
        }
        return SkuInfo(
            id=sku,
            description=str(r.get("name") or ""),
            unit_cost=float(r.get("cost_price") or 0),
            substitutes=self.b.overlay.substitutes.get(sku, []),
            safety_stock={**self.b.overlay.safety_stock.get(sku, {}), **points},
        )

    def book_stock(self, sku: str) -> list[BookPosition]:
        pid = self.b.product_id(sku)
        if pid is None:
            return []
        index = self.b.index()
        whs = sorted(index.warehouses.values(), key=lambda w: w.code)
        ids = [w.id for w in whs] + [w.lock for w in whs if w.lock is not None]
        qty = {
            r["id"]: float(r["quantity"] or 0)
            for r in self.b.client.read("stock.location", ids, ["quantity"], context={"product": pid})
        }
        out = []
        for w in whs:
            total, blocked = qty.get(w.id, 0.0), qty.get(w.lock, 0.0) if w.lock is not None else 0.0
            if total or blocked:
                out.append(BookPosition(node=w.code, sku=sku, qty=total, blocked=blocked))
        return out

    def book_snapshot(
        self, since: dt.datetime | None = None, after: str | None = None, limit: int = SNAPSHOT_PAGE
    ) -> SnapshotPage:
        """Bulk read: book and blocked per SKU@node (``connectors.tryton.snapshot``)."""
        return snapshots(self.b).page("erp", since, after, limit)

    def forecast(self, sku: str) -> dict[str, float]:
        """Tryton's ``forecast_quantity`` per warehouse (moves planned from today on)."""
        pid = self.b.require_product(sku)
        whs = self.b.index().warehouses
        rows = self.b.client.read(
            "stock.location", [w.id for w in whs.values()], ["code", "forecast_quantity"], context={"product": pid}
        )
        return {str(r["code"]): float(r["forecast_quantity"] or 0) for r in rows}

    def planned_supply(self, sku: str) -> list[Supply]:
        pid = self.b.product_id(sku)
        if pid is None:
            return []
        index = self.b.index()
        rows = self.b.client.search_read(
            "stock.move",
            [
                ("product", "=", pid),
                ("state", "in", ["draft", "assigned"]),
                ("to_location", "child_of", [w.id for w in index.warehouses.values()], "parent"),
            ],
            [
                "internal_quantity",
                "planned_date",
                "from_location",
                "to_location",
                "shipment",
                "purchase.reference",
                "purchase.number",
                "purchase.delivery_date",
                "shipment.reference",
                "shipment.number",
            ],
            order=[("planned_date", "ASC"), ("id", "ASC")],
        )
        out = []
        for r in rows:
            node = index.node_of.get(int(r["to_location"]))
            if node is None or index.node_of.get(int(r["from_location"])) == node:
                continue  # internal to one warehouse (putaway, picking)
            purchase, shipment = r.get("purchase."), r.get("shipment.")
            if purchase:
                kind, ref = "purchase_order", purchase.get("reference") or purchase.get("number")
                when = r["planned_date"] or purchase.get("delivery_date")
            elif shipment and str(r["shipment"]).startswith("stock.shipment.internal,"):
                kind, ref = "transfer", shipment.get("reference") or shipment.get("number")
                when = r["planned_date"]
            else:
                continue  # returns from customers, inventory corrections
            out.append(Supply(kind=kind, id=str(ref), node=node, sku=sku, qty=float(r["internal_quantity"]), date=when))
        return out

    def credit_hold(self, customer: str) -> bool:
        """On hold when the party has a credit limit and its exposure reaches it (no room is left
        for another order, so a limit of 0 holds every order): ``credit_amount`` (what it owes plus
        its confirmed, uninvoiced sales: account_credit_limit + sale_credit_limit) plus the
        untaxed amount of its draft and quotation sales, which ``credit_amount`` leaves out. No
        limit (or no such party) = no hold."""
        c = self.b.client
        fields = ["credit_limit_amount", "credit_amount"]
        rows = c.search_read("party.party", [("code", "=", customer)], fields, limit=1)
        if not rows or rows[0]["credit_limit_amount"] is None:
            return False
        limit = Decimal(rows[0]["credit_limit_amount"])
        exposure = Decimal(rows[0]["credit_amount"] or 0)
        quotes = c.search_read(
            "sale.sale", [("party", "=", rows[0]["id"]), ("state", "in", ["draft", "quotation"])], ["untaxed_amount"]
        )
        exposure += sum((Decimal(q["untaxed_amount"] or 0) for q in quotes), Decimal(0))
        return exposure >= limit

    def postings(self, sku: str, node: str) -> list[Movement]:
        """The same ledger moves as ``TrytonWms.movements``, as ERP postings."""
        return [
            Movement(kind="posting", node=node, sku=sku, qty_delta=qty, at=at, ref=ref)
            for _, qty, at, ref in self.b.ledger(sku, node)
        ]

    def purchase_order(self, po_id: str) -> PurchaseOrderView:
        rows = self.b.purchases([("reference", "=", po_id)])
        if not rows:
            raise UnknownDocument("purchase order", po_id)
        return self._po_view(rows[0])

    def open_purchase_orders(self) -> list[PurchaseOrderView]:
        rows = self.b.purchases([("state", "in", ["confirmed", "processing"])])
        return [self._po_view(r) for r in rows if r["lines"]]

    def _po_view(self, r: dict[str, Any]) -> PurchaseOrderView:
        index = self.b.index()
        wh = index.wh_by_id.get(int(r["warehouse"] or 0))
        lines, received, closed = [], {}, []
        for ln in r["lines"]:
            number = int(ln["sequence"] or 0)
            lines.append(
                PoLine(
                    line=number,
                    sku=str((ln.get("product.") or {}).get("code")),
                    qty=float(ln["quantity"]),
                    unit_price=float(ln["unit_price"] or 0),
                    lot=ln.get("expected_lot"),
                )
            )
            received[number] = sum(float(m["internal_quantity"]) for m in ln["moves"] if m["state"] == "done")
            if ln["moves"] and not any(m["state"] in ("draft", "assigned", "staging") for m in ln["moves"]):
                closed.append(number)  # nothing more is expected on this line
        po = PurchaseOrder(
            id=str(r["reference"] or r["number"]),
            supplier=str((r.get("party.") or {}).get("code") or ""),
            node=wh.code if wh else "",
            expected=r.get("delivery_date"),
            lines=lines,
        )
        status = "closed" if r["state"] in ("done", "cancelled") else "open"
        return PurchaseOrderView(po=po, status=status, closed_lines=closed, received=received)

    def apply(self, action: Action) -> dict[str, Any]:
        handlers = {
            "erp.post_adjustment": self._post_adjustment,
            "erp.expedite_po": self._expedite_po,
            "erp.update_safety_stock": self._update_safety_stock,
            "erp.close_po_line": self._close_po_line,
            "erp.create_backorder": self._create_backorder,
        }
        return _dispatch(action, self.system, handlers)

    def _update_safety_stock(self, action: Action) -> dict[str, Any]:
        p, key, c = action.payload, action.idempotency_key, self.b.client
        node, sku = str(_req(p, "node", action)), str(_req(p, "sku", action))
        qty = _qty(p, "qty", action)
        if qty < 0:
            raise PermanentConnectorError(f"{action.name} payload.qty must not be negative")
        wh = self.b.index().warehouse(node)
        product = self.b.require_product(sku)
        op = ensure_order_point(c, product, wh.id, qty, int(c.context.get("company") or 0))
        self.b.note(f"stock.order_point,{op}", key, {"kind": "safety_stock", "node": node, "sku": sku, "qty": qty})
        return {"sku": sku, "node": node, "safety_stock": qty, "order_point": op}

    def _purchase_line(self, action: Action) -> tuple[str, int, dict[str, Any], dict[str, Any]]:
        p, c = action.payload, self.b.client
        po_id, line_no = str(_req(p, "po_id", action)), int(_req(p, "line", action))
        purchases = c.search_read("purchase.purchase", [("reference", "=", po_id)], ["state"], limit=1)
        if not purchases:
            raise PermanentConnectorError(f"purchase order {po_id} is not known to Tryton")
        lines = c.search_read(
            "purchase.line",
            [("purchase", "=", purchases[0]["id"]), ("sequence", "=", line_no)],
            ["moves", "moves_ignored"],
            limit=1,
        )
        if not lines:
            raise PermanentConnectorError(f"purchase order {po_id} has no line {line_no}")
        return po_id, line_no, purchases[0], lines[0]

    def _close_po_line(self, action: Action) -> dict[str, Any]:
        c = self.b.client
        po_id, line_no, purchase, line = self._purchase_line(action)
        if purchase["state"] not in ("confirmed", "processing", "done"):
            raise PermanentConnectorError(f"purchase order {po_id} is {purchase['state']} in Tryton, not confirmed")
        moves = c.read("stock.move", list(line["moves"]), ["state"])
        pending = [int(m["id"]) for m in moves if m["state"] in ("draft", "staging", "assigned")]
        if pending:
            c.button("stock.move", "cancel", pending)
        cancelled = [int(m["id"]) for m in moves if m["state"] == "cancelled"] + pending
        to_ignore = sorted(set(cancelled) - {int(i) for i in line["moves_ignored"]})
        if to_ignore:
            c.write("purchase.line", [int(line["id"])], {"moves_ignored": [("add", to_ignore)]})
        if to_ignore or purchase["state"] == "processing":
            c.button("purchase.purchase", "process", [int(purchase["id"])])
        received = sum(
            float(m["internal_quantity"])
            for m in c.read("stock.move", list(line["moves"]), ["state", "internal_quantity"])
            if m["state"] == "done"
        )
        return {"po_id": po_id, "line": line_no, "status": "closed", "received": received, "cancelled": len(cancelled)}

    def _create_backorder(self, action: Action) -> dict[str, Any]:
        p, key, c = action.payload, action.idempotency_key, self.b.client
        order_id, line_no = str(_req(p, "order_id", action)), int(_req(p, "line", action))
        qty = _qty(p, "qty", action, positive=True)
        promise = dt.date.fromisoformat(str(p["promise_date"])) if p.get("promise_date") else None
        oms = TrytonOms(self.b)
        sale = oms._sale(order_id)
        line = oms._line(sale, line_no, order_id)
        found = c.search("stock.shipment.out", [("reference", "=", key)], limit=1)
        ships = found or _backorder_shipments(c, [int(line["id"])])
        if not ships:
            oms._confirmed(sale, order_id)
            wh = self.b.index().wh_by_id.get(int(sale["warehouse"] or 0))
            if wh is None:
                raise PermanentConnectorError(f"order {order_id} line {line_no}: no warehouse to backorder at")
            sid = oms._customer_shipment(key, sale, line, wh, int(line["product"]), qty)
            c.button("stock.shipment.out", "wait", [sid])
            ships = [sid]
        if promise is not None:
            _plan_shipments(c, ships, promise)
        else:  # a shipment an interrupted attempt left in draft
            drafts = [int(r["id"]) for r in c.read("stock.shipment.out", ships, ["state"]) if r["state"] == "draft"]
            c.button("stock.shipment.out", "wait", drafts)
        return {
            "order_id": order_id,
            "line": line_no,
            "backordered": qty,
            "promise_date": promise.isoformat() if promise else None,
            "shipments": ships,
        }

    def _post_adjustment(self, action: Action) -> dict[str, Any]:
        p, key, c = action.payload, action.idempotency_key, self.b.client
        node, sku = str(_req(p, "node", action)), str(_req(p, "sku", action))
        delta = _qty(p, "qty_delta", action)
        index = self.b.index()
        wh = index.warehouse(node)
        product = self.b.require_product(sku)
        note = self.b.find_note(key)
        if note is not None:
            (rec,) = c.read("ir.note", [note], ["resource"])
            inv = int(str(rec["resource"]).split(",")[1])
        else:
            location = self._adjust_location(wh, product, p.get("location"), delta)
            today = self.b.today()
            (inv,) = c.create(
                "stock.inventory",
                [
                    {
                        "location": location,
                        "date": today,
                        "company": c.context.get("company"),
                        "lines": [("create", [{"product": product}])],
                    }
                ],
            )
            self.b.note(
                f"stock.inventory,{inv}",
                key,
                {"kind": "adjustment", "node": node, "sku": sku, "qty_delta": delta, "reason": p.get("reason")},
            )
        (inventory,) = c.read("stock.inventory", [inv], ["state", "lines", "number"])
        if inventory["state"] == "draft":
            (line,) = c.read("stock.inventory.line", inventory["lines"][:1], ["expected_quantity"])
            target = float(line["expected_quantity"] or 0) + delta
            if target < 0:
                raise PermanentConnectorError(
                    f"adjustment of {delta:g} {sku} at {node} would leave {target:g} at the counted location"
                )
            c.write("stock.inventory.line", [line["id"]], {"quantity": target})
            c.button("stock.inventory", "confirm", [inv])
        book = self.b.book_qty(wh.id, product)
        return {"adjustment_id": inventory["number"] or str(inv), "tryton_id": inv, "book_qty": book}

    def _adjust_location(self, wh: _Warehouse, product: int, location: Any, delta: float) -> int:
        index = self.b.index()
        places = {lid: pl for lid, pl in index.places.items() if pl.node == wh.code and not pl.locked}
        if location:
            for lid, pl in places.items():
                if pl.location == str(location):
                    return lid
            raise PermanentConnectorError(f"location {location} is not a storage location of {wh.code} in Tryton")
        qty = {
            int(r["id"]): float(r["quantity"] or 0)
            for r in self.b.client.read(
                "stock.location", sorted(places), ["quantity"], context={"product": product, "with_childs": False}
            )
        }
        holding = sorted((q, lid) for lid, q in qty.items() if q > 0)
        if holding:
            return holding[-1][1] if delta < 0 else holding[0][1]
        return wh.storage

    def _expedite_po(self, action: Action) -> dict[str, Any]:
        p, c = action.payload, self.b.client
        po_id, line_no = str(_req(p, "po_id", action)), int(_req(p, "line", action))
        new_date = dt.date.fromisoformat(str(_req(p, "new_date", action)))
        purchases = c.search("purchase.purchase", [("reference", "=", po_id)], limit=1)
        if not purchases:
            raise PermanentConnectorError(f"purchase order {po_id} is not known to Tryton")
        lines = c.search("purchase.line", [("purchase", "=", purchases[0]), ("sequence", "=", line_no)], limit=1)
        if not lines:
            raise PermanentConnectorError(f"purchase order {po_id} has no line {line_no}")
        moves = c.search("stock.move", [("origin", "=", f"purchase.line,{lines[0]}"), ("state", "=", "draft")])
        c.write("stock.move", moves, {"planned_date": new_date})
        return {"po_id": po_id, "line": line_no, "expected": new_date.isoformat(), "moves": len(moves)}


# -- OMS --------------------------------------------------------------------------------------------

_SALE_FIELDS = [
    "reference",
    "state",
    "shipment_state",
    "party.code",
    "description",
    "comment",
    "sale_date",
    "shipping_date",
    "warehouse",
    "shipment_address.country.code",
]


class TrytonOms:
    system = "oms"

    def __init__(self, backend: TrytonBackend) -> None:
        self.b = backend

    # -- reads ---------------------------------------------------------------------------------

    def order(self, order_id: str) -> OrderView:
        rows = self.b.client.search_read("sale.sale", [("reference", "=", order_id)], _SALE_FIELDS, limit=1)
        if not rows:
            raise UnknownOrder(order_id)
        return self._views(rows)[0]

    def orders(self, statuses: list[str]) -> list[OrderView]:
        wanted = set(statuses)
        domain: list[Any] = [("reference", "!=", None)]
        # Tryton's own states decide "cancelled" and "shipped": skip what cannot match.
        excluded = {"cancelled"} - wanted | ({"done"} if "shipped" not in wanted else set())
        if excluded:
            domain.append(("state", "not in", sorted(excluded)))
        if not wanted - {"cancelled", "shipped"}:
            domain.append(("state", "in", ["cancelled", "done", "processing"]))
        rows = self.b.client.search_read("sale.sale", domain, _SALE_FIELDS, order=[("id", "ASC")])
        return [v for v in self._views(rows) if v.status in wanted]

    def allocations_snapshot(
        self, since: dt.datetime | None = None, after: str | None = None, limit: int = SNAPSHOT_PAGE
    ) -> SnapshotPage:
        """Bulk read: units reserved per SKU@node (``connectors.tryton.snapshot``)."""
        return snapshots(self.b).page("oms", since, after, limit)

    def customer(self, customer_id: str) -> Customer:
        rows = self.b.client.search_read(
            "party.party", [("code", "=", customer_id)], ["code", "name", "categories.name"], limit=1
        )
        if not rows:
            raise PermanentConnectorError(f"customer {customer_id} is not a party in Tryton")
        r = rows[0]
        gold = any(cat.get("name") == GOLD_CATEGORY for cat in r.get("categories.") or [])
        return Customer(id=customer_id, name=str(r.get("name") or ""), tier="gold" if gold else "standard")

    def network(self) -> Network:
        index = self.b.index()
        rows = (
            self.b.client.search_read("stock.location.lead_time", [], ["warehouse_from", "warehouse_to", "lead_time"])
            if index.warehouses
            else []
        )
        ov = self.b.overlay
        nodes = []
        for code in sorted(index.warehouses):
            known = ov.nodes.get(code)
            zones = sorted({pl.zone for pl in index.places.values() if pl.node == code and pl.zone and not pl.locked})
            node = Node(
                id=code,
                type=known.type if known else "warehouse",
                region=known.region if known else "",
                zones=known.zones if known else [Zone(id=z, pick_capacity_per_hour=0) for z in zones],
                carriers=[Carrier(code=c.code, cutoff=c.cutoff) for c in known.carriers] if known else [],
            )
            nodes.append(node)
        transfer = list(ov.transfer_lanes)
        have = {(t.from_node, t.to_node) for t in transfer}
        for r in rows:
            a, b = index.wh_by_id.get(r["warehouse_from"] or 0), index.wh_by_id.get(r["warehouse_to"] or 0)
            lead = r.get("lead_time")
            if a and b and (a.code, b.code) not in have and isinstance(lead, dt.timedelta):
                transfer.append(
                    TransferLane.model_validate(
                        {"from": a.code, "to": b.code, "cost_per_unit": 0, "transit_days": lead.days}
                    )
                )
        return Network(nodes=nodes, lanes=list(ov.lanes), transfer_lanes=transfer)

    def _views(self, sales: list[dict[str, Any]]) -> list[OrderView]:
        if not sales:
            return []
        c, index = self.b.client, self.b.index()
        sale_ids = [int(s["id"]) for s in sales]
        lines = c.search_read(
            "sale.line",
            [("sale", "in", sale_ids), ("type", "=", "line")],
            ["sale", "sequence", "quantity", "product.code"],
            order=[("sequence", "ASC"), ("id", "ASC")],
        )
        line_refs = [f"sale.line,{ln['id']}" for ln in lines]
        outgoing = (
            c.search_read(
                "stock.move",
                [("origin", "in", line_refs), ("state", "not in", ["cancelled"])],
                [
                    "origin",
                    "quantity",
                    "state",
                    "shipment",
                    "product.code",
                    "shipment.warehouse",
                    "shipment.state",
                    "shipment.reference",
                ],
            )
            if line_refs
            else []
        )
        inventory = (
            c.search_read(
                "stock.move",
                [("origin", "in", [f"stock.move,{m['id']}" for m in outgoing]), ("state", "in", ["assigned", "done"])],
                ["origin", "internal_quantity"],
            )
            if outgoing
            else []
        )
        assigned: dict[int, float] = defaultdict(float)
        for m in inventory:
            assigned[int(str(m["origin"]).split(",")[1])] += float(m["internal_quantity"])
        notes = self.b.notes([f"sale.sale,{i}" for i in sale_ids])
        per_line: dict[int, dict[str, Any]] = {}
        for ln in lines:
            per_line[int(ln["id"])] = {"alloc": defaultdict(float), "back": 0.0, "sub": None}
        for m in outgoing:
            rec = per_line.get(int(str(m["origin"]).split(",")[1]))
            ship = m.get("shipment.") or {}
            if rec is None or ship.get("state") not in OPEN_SHIPMENT_STATES:
                continue
            node = index.wh_by_id[int(ship["warehouse"])].code if int(ship["warehouse"]) in index.wh_by_id else "?"
            if str(ship.get("reference") or "").endswith(":backorder") or (
                ship.get("state") == "waiting" and not assigned.get(int(m["id"]))
            ):
                rec["back"] += float(m["quantity"])
            else:
                rec["alloc"][node] += (
                    assigned.get(int(m["id"]), 0.0) if ship.get("state") == "waiting" else float(m["quantity"])
                )
            code = (m.get("product.") or {}).get("code")
            rec["code"] = code
        views = []
        for s in sales:
            sale_lines = [ln for ln in lines if int(ln["sale"]) == int(s["id"])]
            extras = _extras(s.get("description"))
            ship_by = _dt(extras.get("ship_by")) or _date_dt(s.get("shipping_date"))
            created = _dt(extras.get("created")) or _date_dt(s.get("sale_date"))
            party = s.get("party.") or {}
            order = Order(
                id=str(s["reference"]),
                customer=str(party.get("code") or ""),
                region=str(
                    extras.get("region")
                    or self.b.overlay.region_of(
                        str(party.get("code") or ""),
                        ((s.get("shipment_address.") or {}).get("country.") or {}).get("code"),
                    )
                ),
                priority="express" if extras.get("priority") == "express" else "standard",
                created=created,
                ship_by=ship_by,
                carrier=extras.get("carrier"),
                allow_split=bool(extras.get("allow_split", True)),
                allow_substitution=bool(extras.get("allow_substitution", False)),
                note=s.get("comment") or None,
                lines=[
                    OrderLine(
                        line=int(ln["sequence"] or i + 1),
                        sku=str((ln.get("product.") or {}).get("code")),
                        qty=float(ln["quantity"]),
                    )
                    for i, ln in enumerate(sale_lines)
                ]
                or [OrderLine(line=1, sku="?", qty=1)],
            )
            status, hold = _status(s, notes.get(f"sale.sale,{s['id']}", []))
            promises = _promises(notes.get(f"sale.sale,{s['id']}", []))
            views.append(
                OrderView(
                    order=order,
                    status=status,
                    hold_reason=hold,
                    lines=[
                        OrderLineView(
                            line=int(ln["sequence"] or i + 1),
                            sku=str((ln.get("product.") or {}).get("code")),
                            qty=float(ln["quantity"]),
                            allocations=[
                                LineAllocation(node=n, qty=q)
                                for n, q in sorted(per_line[int(ln["id"])]["alloc"].items())
                                if q > 0
                            ],
                            backordered=per_line[int(ln["id"])]["back"],
                            promise_date=promises.get(int(ln["sequence"] or i + 1)) or promises.get(None),
                            substituted_by=_substitute(per_line[int(ln["id"])].get("code"), ln),
                        )
                        for i, ln in enumerate(sale_lines)
                    ],
                )
            )
        return views

    # -- writes --------------------------------------------------------------------------------

    def apply(self, action: Action) -> dict[str, Any]:
        handlers = {
            "oms.allocate": self._allocate,
            "oms.split_line": self._split_line,
            "oms.update_order_status": self._update_status,
            "oms.hold_order": self._hold,
            "oms.release_allocation": self._release_allocation,
            "oms.update_line_qty": self._update_line_qty,
            "oms.update_promise_date": self._update_promise,
        }
        return _dispatch(action, self.system, handlers)

    def _sale(self, order_id: str) -> dict[str, Any]:
        rows = self.b.client.search_read(
            "sale.sale",
            [("reference", "=", order_id)],
            ["state", "party", "shipment_address", "currency", "warehouse", "company"],
            limit=1,
        )
        if not rows:
            raise PermanentConnectorError(f"order {order_id} is not a sale in Tryton")
        return rows[0]

    def _line(self, sale: dict[str, Any], line_no: int, order_id: str) -> dict[str, Any]:
        rows = self.b.client.search_read(
            "sale.line",
            [("sale", "=", sale["id"]), ("sequence", "=", line_no), ("type", "=", "line")],
            ["product", "quantity", "unit", "unit_price", "product.code"],
            limit=1,
        )
        if not rows:
            raise PermanentConnectorError(f"order {order_id} has no line {line_no}")
        return rows[0]

    def _confirmed(self, sale: dict[str, Any], order_id: str) -> None:
        c = self.b.client
        if sale["state"] == "draft":
            c.button("sale.sale", "quote", [sale["id"]])
            sale["state"] = "quotation"
        if sale["state"] == "quotation":
            c.button("sale.sale", "confirm", [sale["id"]])
            sale["state"] = "processing"
        if sale["state"] not in ("confirmed", "processing"):
            raise PermanentConnectorError(f"order {order_id} is {sale['state']} in Tryton; cannot allocate")

    def _customer_shipment(
        self, key: str, sale: dict[str, Any], line: dict[str, Any], wh: _Warehouse, product: int, qty: float
    ) -> int:
        """The customer shipment with ``reference = key``, created at ``wh`` if it does not exist."""
        c = self.b.client
        found = c.search("stock.shipment.out", [("reference", "=", key)], limit=1)
        if found:
            return found[0]
        (party,) = c.read("party.party", [int(sale["party"])], ["customer_location"])
        today = self.b.today()
        move = {
            "product": product,
            "unit": line["unit"],
            "quantity": qty,
            "from_location": wh.output,
            "to_location": party["customer_location"],
            "unit_price": line["unit_price"] or Decimal(0),
            "currency": sale["currency"],
            "company": sale["company"],
            "planned_date": today,
            "origin": f"sale.line,{line['id']}",
        }
        (sid,) = c.create(
            "stock.shipment.out",
            [
                {
                    "reference": key,
                    "customer": sale["party"],
                    "delivery_address": sale["shipment_address"],
                    "company": sale["company"],
                    "warehouse": wh.id,
                    "warehouse_storage": wh.storage,
                    "warehouse_output": wh.output,
                    "planned_date": today,
                    "moves": [("create", [move])],
                }
            ],
        )
        return sid

    def _allocate(self, action: Action) -> dict[str, Any]:
        p, key, c = action.payload, action.idempotency_key, self.b.client
        order_id, line_no = str(_req(p, "order_id", action)), int(_req(p, "line", action))
        qty = _qty(p, "qty", action, positive=True)
        wh = self.b.index().warehouse(str(_req(p, "node", action)))
        sale = self._sale(order_id)
        line = self._line(sale, line_no, order_id)
        sku = str(p.get("sku") or (line.get("product.") or {}).get("code"))
        product = self.b.require_product(sku)
        existing = c.search("stock.shipment.out", [("reference", "=", key)], limit=1)
        if not existing:
            self._confirmed(sale, order_id)
            open_qty = sum(
                float(m["quantity"])
                for m in c.search_read(
                    "stock.move",
                    [("origin", "=", f"sale.line,{line['id']}"), ("state", "!=", "cancelled")],
                    ["quantity"],
                )
            )
            if open_qty + qty > float(line["quantity"]) + 1e-9:
                raise PermanentConnectorError(
                    f"order {order_id} line {line_no}: allocating {qty:g} more would exceed its {line['quantity']:g} "
                    f"({open_qty:g} already on shipments)"
                )
        sid = existing[0] if existing else self._customer_shipment(key, sale, line, wh, product, qty)
        (ship,) = c.read("stock.shipment.out", [sid], ["state"])
        if ship["state"] == "draft":
            c.button("stock.shipment.out", "wait", [sid])
            ship["state"] = "waiting"
        if ship["state"] == "waiting":
            c.button("stock.shipment.out", "assign_try", [sid])
        assigned, short = self._assignment(sid)
        backorder, backordered = self._backorder(key, sid, sale, line, wh, product, qty, short)
        if backorder is not None:
            assigned, _ = self._assignment(sid)
        return {
            "order_id": order_id,
            "line": line_no,
            "node": wh.code,
            "sku": sku,
            "requested": qty,
            "allocated": assigned,
            "backordered": backordered,
            "shipment": sid,
            "backorder_shipment": backorder,
        }

    def _assignment(self, sid: int) -> tuple[float, float]:
        """(assigned, unassigned) quantity of a customer shipment's inventory moves."""
        moves = self.b.client.search_read(
            "stock.move",
            [
                ("shipment", "=", f"stock.shipment.out,{sid}"),
                ("origin", "like", "stock.move,%"),
                ("state", "not in", ["cancelled"]),
            ],
            ["state", "internal_quantity"],
        )
        assigned = sum(float(m["internal_quantity"]) for m in moves if m["state"] in ("assigned", "done"))
        short = sum(float(m["internal_quantity"]) for m in moves if m["state"] in ("draft", "staging"))
        return assigned, short

    def _backorder(
        self,
        key: str,
        sid: int,
        sale: dict[str, Any],
        line: dict[str, Any],
        wh: _Warehouse,
        product: int,
        requested: float,
        short: float,
    ) -> tuple[int | None, float]:
        """Keep what Tryton assigned on ``sid`` and move the unassigned rest to a waiting backorder
        shipment (reference = key + ':backorder'): ``(backorder shipment, its quantity)``.

        The backorder shipment is created first; then the original's outgoing move is set to
        ``requested`` − backorder and its unassigned inventory moves are deleted (what Tryton's
        assign wizard does with "ignore"). Every step sets a state rather than applying a delta, so a
        retry after a crash anywhere finishes the same split.
        """
        c = self.b.client
        bkey = f"{key}:backorder"
        found = c.search("stock.shipment.out", [("reference", "=", bkey)], limit=1)
        if not found and short <= 0:
            return None, 0.0
        bid = found[0] if found else self._customer_shipment(bkey, sale, line, wh, product, short)
        (bship,) = c.read("stock.shipment.out", [bid], ["state"])
        if bship["state"] == "draft":
            c.button("stock.shipment.out", "wait", [bid])
        backordered = sum(
            float(m["quantity"])
            for m in c.search_read(
                "stock.move",
                [("shipment", "=", f"stock.shipment.out,{bid}"), ("origin", "like", "sale.line,%")],
                ["quantity"],
            )
        )
        (ship,) = c.read("stock.shipment.out", [sid], ["state"])
        if ship["state"] != "waiting":
            return bid, backordered
        moves = c.search_read(
            "stock.move",
            [("shipment", "=", f"stock.shipment.out,{sid}"), ("state", "in", ["draft", "staging"])],
            ["origin", "quantity"],
        )
        keep = max(0.0, requested - backordered)
        for m in moves:
            if str(m["origin"] or "").startswith("sale.line,") and abs(float(m["quantity"]) - keep) > 1e-9:
                c.write("stock.move", [m["id"]], {"quantity": keep})
        draft_inventory = [m["id"] for m in moves if str(m["origin"] or "").startswith("stock.move,")]
        if draft_inventory:
            c.call("stock.move", "delete", draft_inventory)
        c.button("stock.shipment.out", "assign_try", [sid])
        return bid, backordered

    def _split_line(self, action: Action) -> dict[str, Any]:
        p, key, c = action.payload, action.idempotency_key, self.b.client
        order_id, line_no = str(_req(p, "order_id", action)), int(_req(p, "line", action))
        backorder_qty = _qty(p, "backorder_qty", action)
        if backorder_qty <= 0:
            return {"order_id": order_id, "line": line_no, "backordered": 0.0}
        sale = self._sale(order_id)
        line = self._line(sale, line_no, order_id)
        found = c.search("stock.shipment.out", [("reference", "=", key)], limit=1)
        if found:
            return {"order_id": order_id, "line": line_no, "backordered": backorder_qty, "shipment": found[0]}
        self._confirmed(sale, order_id)
        index = self.b.index()
        ships = c.search_read(
            "stock.move",
            [("origin", "=", f"sale.line,{line['id']}"), ("state", "!=", "cancelled")],
            ["shipment.warehouse"],
        )
        wh_id = next((int(m["shipment."]["warehouse"]) for m in ships if m.get("shipment.")), None)
        wh = index.wh_by_id.get(wh_id or int(sale["warehouse"] or 0))
        if wh is None:
            raise PermanentConnectorError(f"order {order_id} line {line_no}: no warehouse to backorder at")
        product = int(line["product"])
        sid = self._customer_shipment(key, sale, line, wh, product, backorder_qty)
        c.button("stock.shipment.out", "wait", [sid])
        return {"order_id": order_id, "line": line_no, "backordered": backorder_qty, "shipment": sid}

    def _release_allocation(self, action: Action) -> dict[str, Any]:
        p, key, c = action.payload, action.idempotency_key, self.b.client
        order_id, line_no = str(_req(p, "order_id", action)), int(_req(p, "line", action))
        qty = _qty(p, "qty", action, positive=True)
        wh = self.b.index().warehouse(str(_req(p, "node", action)))
        sale = self._sale(order_id)
        line = self._line(sale, line_no, order_id)
        note = self.b.find_note(key)
        if note is not None:
            (rec,) = c.read("ir.note", [note], ["message"])
            targets = {
                int(k): float(v) for k, v in json.loads(str(rec["message"]).partition("\n")[2])["targets"].items()
            }
        else:
            moves = c.search_read(
                "stock.move",
                [
                    ("origin", "=", f"sale.line,{line['id']}"),
                    ("shipment.warehouse", "=", wh.id, "stock.shipment.out"),
                    ("shipment.state", "in", ["waiting", "assigned"], "stock.shipment.out"),
                    ("state", "not in", ["cancelled", "done"]),
                ],
                ["quantity"],
                order=[("id", "DESC")],
            )
            held = sum(float(m["quantity"]) for m in moves)
            if held + 1e-9 < qty:
                raise PermanentConnectorError(
                    f"order {order_id} line {line_no} holds {held:g} at {wh.code} in Tryton, not {qty:g}"
                )
            targets, left = {}, qty
            for m in moves:
                take = min(float(m["quantity"]), left)
                if take > 0:
                    targets[int(m["id"])] = float(m["quantity"]) - take
                    left -= take
            self.b.note(f"sale.sale,{sale['id']}", key, {"kind": "release", "targets": targets})
        for move_id, target in targets.items():
            rows = c.search_read("stock.move", [("id", "=", move_id)], ["quantity", "shipment"])
            if not rows or not rows[0]["shipment"]:
                continue  # already gone: released on an earlier attempt
            sid = int(str(rows[0]["shipment"]).split(",")[1])
            (ship,) = c.read("stock.shipment.out", [sid], ["state", "outgoing_moves"])
            if ship["state"] not in ("waiting", "assigned"):
                continue
            if target <= 0 and len(ship["outgoing_moves"]) == 1:
                c.button("stock.shipment.out", "cancel", [sid])
                c.call("stock.shipment.out", "delete", [sid])
                continue
            if abs(float(rows[0]["quantity"]) - target) > 1e-9:
                c.button("stock.shipment.out", "wait", [sid])  # drop the reservation, then resize
                c.write("stock.move", [move_id], {"quantity": target})
                c.button("stock.shipment.out", "wait", [sid])
            c.button("stock.shipment.out", "assign_try", [sid])
        return {"order_id": order_id, "line": line_no, "node": wh.code, "released": qty}

    def _update_line_qty(self, action: Action) -> dict[str, Any]:
        """A line's quantity, while the sale is still a draft or quotation (Tryton's own rule)."""
        p, key, c = action.payload, action.idempotency_key, self.b.client
        order_id, line_no = str(_req(p, "order_id", action)), int(_req(p, "line", action))
        qty = _qty(p, "qty", action, positive=True)
        sale = self._sale(order_id)
        line = self._line(sale, line_no, order_id)
        note = self.b.find_note(key)
        if note is not None:
            (rec,) = c.read("ir.note", [note], ["message"])
            body = json.loads(str(rec["message"]).partition("\n")[2])
            state, previous = str(body["state"]), float(body["previous_qty"])
        else:
            state, previous = str(sale["state"]), float(line["quantity"])
            if state not in ("draft", "quotation"):
                raise PermanentConnectorError(
                    f"order {order_id} is {state} in Tryton: a confirmed sale's lines are read-only, "
                    f"change line {line_no} in Tryton or cancel the order"
                )
            self.b.note(
                f"sale.sale,{sale['id']}",
                key,
                {"kind": "line_qty", "line": line_no, "qty": qty, "previous_qty": previous, "state": state},
            )
        if abs(float(line["quantity"]) - qty) > 1e-9:
            if sale["state"] == "quotation":
                c.button("sale.sale", "draft", [sale["id"]])
                sale["state"] = "draft"
            c.write("sale.line", [int(line["id"])], {"quantity": qty})
        if state == "quotation" and sale["state"] == "draft":
            c.button("sale.sale", "quote", [sale["id"]])
        # A draft or quotation has no customer shipment yet: nothing is reserved to give back.
        return {"order_id": order_id, "line": line_no, "qty": qty, "previous_qty": previous, "released": []}

    def _update_status(self, action: Action) -> dict[str, Any]:
        p, key, c = action.payload, action.idempotency_key, self.b.client
        order_id, status = str(_req(p, "order_id", action)), str(_req(p, "status", action))
        if status not in ORDER_STATUSES:
            raise PermanentConnectorError(
                f"unknown order status {status!r}; known: {', '.join(sorted(ORDER_STATUSES))}"
            )
        sale = self._sale(order_id)
        if status == "cancelled":
            if sale["state"] in ("draft", "quotation"):
                c.button("sale.sale", "cancel", [sale["id"]])
            elif sale["state"] != "cancelled":
                raise PermanentConnectorError(
                    f"order {order_id} is {sale['state']} in Tryton: cancel its shipments in Tryton, not the sale"
                )
        elif status == "shipped":
            raise PermanentConnectorError(
                "'shipped' is a fact in Tryton (stock.shipment.out done), not a status to set"
            )
        self.b.note(f"sale.sale,{sale['id']}", key, {"kind": "status", "status": status})
        return {"order_id": order_id, "status": status}

    def _update_promise(self, action: Action) -> dict[str, Any]:
        p, key, c = action.payload, action.idempotency_key, self.b.client
        order_id = str(_req(p, "order_id", action))
        promise = dt.date.fromisoformat(str(_req(p, "promise_date", action)))
        sale = self._sale(order_id)
        line_no = int(p["line"]) if p.get("line") is not None else None
        lines = [self._line(sale, line_no, order_id)] if line_no is not None else self._lines(sale)
        ships = _plan_shipments(c, _backorder_shipments(c, [int(ln["id"]) for ln in lines]), promise)
        self.b.note(
            f"sale.sale,{sale['id']}",
            key,
            {"kind": "promise", "line": line_no, "promise_date": promise.isoformat()},
        )
        return {"order_id": order_id, "line": line_no, "promise_date": promise.isoformat(), "shipments": ships}

    def _lines(self, sale: dict[str, Any]) -> list[dict[str, Any]]:
        return self.b.client.search_read("sale.line", [("sale", "=", sale["id"]), ("type", "=", "line")], ["id"])

    def _hold(self, action: Action) -> dict[str, Any]:
        p, key = action.payload, action.idempotency_key
        order_id, reason = str(_req(p, "order_id", action)), str(_req(p, "reason", action))
        sale = self._sale(order_id)
        self.b.note(
            f"sale.sale,{sale['id']}",
            key,
            {"kind": "status", "status": "held", "hold_reason": reason, "detail": p.get("detail")},
        )
        return {"order_id": order_id, "status": "held", "hold_reason": reason}


ORDER_STATUSES = frozenset({"open", "released", "partially_released", "held", "backordered", "cancelled", "shipped"})


def _backorder_shipments(c: TrytonClient, lines: list[int]) -> list[int]:
    """The lines' waiting customer shipments whose moves hold no assigned stock (their backorders)."""
    moves = c.search_read(
        "stock.move",
        [
            ("origin", "in", [f"sale.line,{line}" for line in lines]),
            # draft: a shipment an interrupted replanning left there.
            ("shipment.state", "in", ["draft", "waiting"], "stock.shipment.out"),
        ],
        ["shipment"],
    )
    ships = sorted({int(str(m["shipment"]).split(",")[1]) for m in moves if m.get("shipment")})
    if not ships:
        return []
    assigned = c.search_read(
        "stock.move",
        [("shipment", "in", [f"stock.shipment.out,{s}" for s in ships]), ("state", "in", ["assigned", "done"])],
        ["shipment"],
    )
    busy = {int(str(m["shipment"]).split(",")[1]) for m in assigned}
    return [s for s in ships if s not in busy]


def _plan_shipments(c: TrytonClient, ships: list[int], when: dt.date) -> list[int]:
    """planned_date = ``when`` on the customer shipments not yet assigned (Tryton lets a client write
    it only on a draft shipment: back to draft, write, which moves the moves' planned dates too, and
    wait again, which rebuilds the inventory moves). A shipment left in draft by an interrupted
    attempt is finished; one already at ``when`` is left alone, so a retry changes nothing. Assigned
    shipments keep their reservation and date. Returns the shipments replanned or already at
    ``when``."""
    if not ships:
        return []
    rows = c.read("stock.shipment.out", ships, ["planned_date", "state"])
    planned = []
    for r in rows:
        sid = int(r["id"])
        if r["state"] == "waiting" and r["planned_date"] != when:
            c.button("stock.shipment.out", "draft", [sid])
            r["state"] = "draft"
        if r["state"] == "draft":
            if r["planned_date"] != when:
                c.write("stock.shipment.out", [sid], {"planned_date": when})
            c.button("stock.shipment.out", "wait", [sid])
            r["state"] = "waiting"
        if r["state"] == "waiting":
            planned.append(sid)
    return planned


def _promises(notes: list[dict[str, Any]]) -> dict[int | None, str]:
    """The last promise Crossdock set per line (None = the whole order)."""
    out: dict[int | None, str] = {}
    for n in notes:
        if n.get("kind") == "promise" and n.get("promise_date"):
            out[int(n["line"]) if n.get("line") is not None else None] = str(n["promise_date"])
    return out


def _status(sale: dict[str, Any], notes: list[dict[str, Any]]) -> tuple[str, str | None]:
    if sale["state"] == "cancelled":
        return "cancelled", None
    if sale["state"] == "done" or sale.get("shipment_state") == "sent":
        return "shipped", None
    last = next((n for n in reversed(notes) if n.get("kind") == "status"), None)
    if last is None:
        return "open", None
    status = str(last.get("status") or "open")
    return status, (str(last["hold_reason"]) if status == "held" and last.get("hold_reason") else None)


def _substitute(code: Any, line: dict[str, Any]) -> str | None:
    own = (line.get("product.") or {}).get("code")
    return str(code) if code and code != own else None


def _extras(description: Any) -> dict[str, Any]:
    text = str(description or "")
    if not text.startswith(ORDER_EXTRAS_PREFIX):
        return {}
    try:
        value = json.loads(text[len(ORDER_EXTRAS_PREFIX) :])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _doc_id(shipment: dict[str, Any]) -> str:
    """A supplier shipment's id as an ASN and as a receipt: its reference, else its number."""
    return str(shipment["reference"] or shipment["number"] or shipment["id"])


def _dt(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _date_dt(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return None


def tryton_connectors(client: TrytonClient, overlay: Overlay | None = None) -> tuple[TrytonWms, TrytonErp, TrytonOms]:
    """The three adapters sharing one client and one cache of the location tree."""
    backend = TrytonBackend(client, overlay)
    return TrytonWms(backend), TrytonErp(backend), TrytonOms(backend)
