"""The twin's world: a simulated WMS, ERP and OMS held in memory and loaded from a scenario.

Everything goes through one re-entrant lock, so the HTTP server (many worker threads) and a
replay driver can share one ``TwinState``. Writes arrive as contract actions through
``apply`` and are idempotent on the action's key; source-system changes reported by events
arrive through ``apply_event`` before the event is posted to Crossdock.
"""

from __future__ import annotations

import bisect
import copy
import json
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from pydantic import ValidationError

from domain.context import (
    BookPosition,
    LineAllocation,
    LocationStock,
    Network,
    NodeStock,
    OrderLineView,
    OrderView,
    SkuInfo,
    Supply,
)
from domain.decisions import Action
from domain.errors import UnknownOrder, UnknownSku
from domain.models import Asn, Customer, DemandPoint, Node, Order, PurchaseOrder, Receipt, Scenario

ORDER_STATUSES = frozenset({"open", "released", "partially_released", "held", "backordered", "cancelled", "shipped"})
# Reservations on these orders no longer hold stock.
_CLOSED_STATUSES = frozenset({"cancelled", "shipped"})


class TwinRejected(ValueError):
    """The twin refused an action: unknown type, unknown order or line, bad payload."""


class TwinNotFound(LookupError):
    """A resource the twin does not hold (customer, order, material, ...)."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


def _num(payload: dict[str, Any], field: str, *, positive: bool = False) -> float:
    value = _req(payload, field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TwinRejected(f"payload.{field} must be a number, got {value!r}")
    if positive and value <= 0:
        raise TwinRejected(f"payload.{field} must be > 0, got {value!r}")
    return float(value)


def _req(payload: dict[str, Any], field: str) -> Any:
    if field not in payload or payload[field] is None:
        raise TwinRejected(f"payload.{field} is required")
    return payload[field]


def _int(payload: dict[str, Any], field: str) -> int:
    value = _req(payload, field)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TwinRejected(f"payload.{field} must be an integer, got {value!r}") from None


def _date(value: Any, field: str) -> str:
    try:
        return date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise TwinRejected(f"payload.{field} must be a date YYYY-MM-DD, got {value!r}") from None


class TwinState:
    """An in-memory WMS + ERP + OMS; thread-safe, idempotent on action keys."""

    def __init__(self, scenario: Scenario) -> None:
        self._lock = threading.RLock()
        self.scenario_name = scenario.scenario
        self.settings = scenario.settings
        # Network (OMS sourcing config, WMS zones).
        self._nodes: dict[str, Node] = {n.id: n.model_copy(deep=True) for n in scenario.nodes}
        self._lanes = [lane.model_copy() for lane in scenario.lanes]
        self._transfer_lanes = [lane.model_copy() for lane in scenario.transfer_lanes]
        # WMS.
        self._stock: list[dict[str, Any]] = [r.model_dump() for r in scenario.wms.stock]
        self._waves: list[dict[str, Any]] = []
        self._tasks: list[dict[str, Any]] = []
        self._transfers: list[dict[str, Any]] = []
        # Stock movements each side recorded (WMS adjustments and receipts, ERP postings), so a
        # reader can tell a posting still in flight from a true variance.
        self._wms_moves: list[dict[str, Any]] = []
        self._erp_postings: list[dict[str, Any]] = []
        # Inbound documents as the WMS recorded them (a receipt posted twice is kept twice).
        self._asns: dict[str, dict[str, Any]] = {a.id: a.model_dump(mode="json") for a in scenario.asns}
        self._receipts: list[dict[str, Any]] = [r.model_dump(mode="json") for r in scenario.receipts]
        # ERP.
        self._skus: dict[str, SkuInfo] = {s.id: SkuInfo.model_validate(s.model_dump()) for s in scenario.skus}
        self._book: list[dict[str, Any]] = [b.model_dump() for b in scenario.erp.book_stock]
        self._in_transit: list[dict[str, Any]] = [
            t.model_dump(by_alias=True, mode="json") for t in scenario.erp.in_transit
        ]
        self._pos: dict[str, dict[str, Any]] = {}
        for po in scenario.erp.purchase_orders:
            self._add_po(po)
        self._credit_holds: set[str] = set(scenario.erp.credit_holds)
        self._demand: list[DemandPoint] = [d.model_copy() for d in scenario.erp.demand_history]
        self._backorders: list[dict[str, Any]] = []
        self._adjustments: list[dict[str, Any]] = []
        # OMS.
        self._customers: dict[str, Customer] = {c.id: c for c in scenario.oms.customers}
        self._orders: dict[str, dict[str, Any]] = {}
        for order in scenario.oms.orders:
            self._add_order(order)
        for alloc in scenario.oms.allocations:
            rec = self._orders.get(alloc.order)
            line = rec["lines"].get(alloc.line) if rec else None
            if line is None:
                raise TwinRejected(f"allocation for unknown order line {alloc.order}/{alloc.line}")
            self._add_allocation(line, alloc.node, line["sku"], alloc.qty)
        # Notify.
        self._tickets: list[dict[str, Any]] = []
        # Idempotency and audit of applied actions.
        self._results: dict[str, dict[str, Any]] = {}
        self._counts: dict[str, int] = {}
        self._calls: dict[str, int] = {}
        self._log: list[dict[str, Any]] = []
        self._oversells: list[dict[str, Any]] = []
        self._seq = 0
        # Change feed for bulk reads: when each system last changed a SKU@node (wall clock, UTC),
        # and the sorted rows of the last bulk read per system, kept until the state changes.
        self._changed: dict[str, dict[tuple[str, str], datetime]] = {"wms": {}, "erp": {}, "oms": {}}
        self._version = 0
        self._snapshots: dict[str, tuple[int, list[str], dict[str, dict[str, Any]]]] = {}
        # WMS stock records by sku (records are only ever appended, so the index is rebuilt when the
        # list grew), and the network's ETag: this twin's own token and a version bumped on change.
        self._stock_index: dict[str, list[dict[str, Any]]] = {}
        self._stock_indexed = -1
        self._instance = secrets.token_hex(6)
        self._network_version = 0
        self._network_doc: tuple[int, dict[str, Any]] | None = None

    # ------------------------------------------------------------------ loading helpers

    def _add_po(self, po: PurchaseOrder) -> None:
        data = po.model_dump(mode="json")
        data["status"] = "open"
        for line in data["lines"]:
            line.update(status="open", received=0.0, expected=None)
        self._pos[po.id] = data

    def _add_order(self, order: Order) -> None:
        self._orders[order.id] = {
            "order": order,
            "status": "open",
            "hold_reason": None,
            "lines": {
                ln.line: {
                    "line": ln.line,
                    "sku": ln.sku,
                    "qty": ln.qty,
                    # Each allocation remembers the sku it reserved (a substitute may differ).
                    "allocations": [],
                    "backordered": 0.0,
                    "promise_date": None,
                    "substituted_by": None,
                }
                for ln in order.lines
            },
        }

    @staticmethod
    def _add_allocation(line: dict[str, Any], node: str, sku: str, qty: float) -> None:
        for alloc in line["allocations"]:
            if alloc["node"] == node and alloc["sku"] == sku:
                alloc["qty"] += qty
                return
        line["allocations"].append({"node": node, "sku": sku, "qty": qty})

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-{self._seq:05d}"

    # ------------------------------------------------------------------ stock arithmetic

    def _physical(self, node: str, sku: str) -> float:
        return float(sum(r["on_hand"] - r["locked"] for r in self._stock if r["node"] == node and r["sku"] == sku))

    def _allocated(self, node: str, sku: str) -> float:
        total = 0.0
        for rec in self._orders.values():
            if rec["status"] in _CLOSED_STATUSES:
                continue
            for line in rec["lines"].values():
                for alloc in line["allocations"]:
                    if alloc["node"] == node and alloc["sku"] == sku:
                        total += alloc["qty"]
        return total

    def _node_order(self, node: str) -> tuple[int, str]:
        ids = list(self._nodes)
        return (ids.index(node) if node in ids else len(ids), node)

    # ------------------------------------------------------------------ queries

    def stock(self, sku: str) -> list[NodeStock]:
        """WMS stock of ``sku`` at every node holding a location of it."""
        with self._lock:
            return self._stock_of(sku, self._allocations({sku}))

    def stock_many(self, skus: list[str]) -> dict[str, list[NodeStock]]:
        """``stock`` of each of ``skus`` (in the order given), reading the reservations once."""
        with self._lock:
            allocated = self._allocations(set(skus))
            return {sku: self._stock_of(sku, allocated) for sku in skus}

    def _stock_records(self, sku: str) -> list[dict[str, Any]]:
        """The WMS location records of ``sku``, in the order the WMS holds them."""
        if self._stock_indexed != len(self._stock):
            index: dict[str, list[dict[str, Any]]] = {}
            for r in self._stock:
                index.setdefault(r["sku"], []).append(r)
            self._stock_index, self._stock_indexed = index, len(self._stock)
        return self._stock_index.get(sku, [])

    def _allocations(self, skus: set[str]) -> dict[tuple[str, str], float]:
        """(node, sku) -> units reserved by orders still holding stock, for ``skus``, in one pass
        (summed in the order ``_allocated`` sums them)."""
        totals: dict[tuple[str, str], float] = {}
        for rec in self._orders.values():
            if rec["status"] in _CLOSED_STATUSES:
                continue
            for line in rec["lines"].values():
                for alloc in line["allocations"]:
                    if alloc["sku"] in skus:
                        key = (alloc["node"], alloc["sku"])
                        totals[key] = totals.get(key, 0.0) + alloc["qty"]
        return totals

    def _stock_of(self, sku: str, allocations: dict[tuple[str, str], float]) -> list[NodeStock]:
        records = self._stock_records(sku)
        nodes = sorted({r["node"] for r in records}, key=self._node_order)
        out = []
        for node in nodes:
            recs = [r for r in records if r["node"] == node]
            on_hand = sum(r["on_hand"] for r in recs)
            locked = sum(r["locked"] for r in recs)
            allocated = allocations.get((node, sku), 0.0)
            out.append(
                NodeStock(
                    node=node,
                    sku=sku,
                    on_hand=on_hand,
                    locked=locked,
                    allocated=allocated,
                    pickable=max(0.0, on_hand - locked - allocated),
                    locations=[LocationStock.model_validate(r) for r in recs],
                )
            )
        return out

    def sku(self, sku_id: str) -> SkuInfo:
        with self._lock:
            info = self._skus.get(sku_id)
            if info is None:
                raise UnknownSku(sku_id)
            return info.model_copy(deep=True)

    def book_stock(self, sku: str) -> list[BookPosition]:
        with self._lock:
            return [BookPosition.model_validate(b) for b in self._book if b["sku"] == sku]

    def planned_supply(self, sku: str) -> list[Supply]:
        """Open PO lines (their unreceived qty) and in-transit transfers of ``sku``."""
        with self._lock:
            out = []
            for po in self._pos.values():
                if po["status"] == "closed":
                    continue
                for line in po["lines"]:
                    remaining = line["qty"] - line["received"]
                    if line["sku"] != sku or line["status"] == "closed" or remaining <= 0:
                        continue
                    when = line["expected"] or po["expected"]
                    out.append(
                        Supply(
                            kind="purchase_order",
                            id=po["id"],
                            node=po["node"],
                            sku=sku,
                            qty=remaining,
                            date=when,
                        )
                    )
            for t in self._in_transit:
                if t["sku"] == sku:
                    out.append(Supply(kind="transfer", id=t["id"], node=t["to"], sku=sku, qty=t["qty"], date=t["eta"]))
            return out

    def credit_hold(self, customer: str) -> bool:
        with self._lock:
            return customer in self._credit_holds

    def demand_history(self, sku: str | None = None, node: str | None = None) -> list[DemandPoint]:
        """Units shipped per day (ERP), optionally for one sku and/or node, oldest first."""
        with self._lock:
            found = [d for d in self._demand if (sku is None or d.sku == sku) and (node is None or d.node == node)]
            return [d.model_copy() for d in sorted(found, key=lambda d: (d.date, d.node, d.sku))]

    def tasks(self, sku: str | None = None, node: str | None = None) -> list[dict[str, Any]]:
        """Warehouse tasks created so far, optionally for one sku and/or node."""
        with self._lock:
            return copy.deepcopy(
                [t for t in self._tasks if (sku is None or t["sku"] == sku) and (node is None or t["node"] == node)]
            )

    def transfers(self, sku: str | None = None) -> list[dict[str, Any]]:
        """Stock transfers the WMS created, optionally for one sku."""
        with self._lock:
            return copy.deepcopy([t for t in self._transfers if sku is None or t["sku"] == sku])

    def order(self, order_id: str) -> OrderView:
        with self._lock:
            rec = self._orders.get(order_id)
            if rec is None:
                raise UnknownOrder(order_id)
            return OrderView(
                order=rec["order"].model_copy(deep=True),
                status=rec["status"],
                hold_reason=rec["hold_reason"],
                lines=[
                    OrderLineView(
                        line=ln["line"],
                        sku=ln["sku"],
                        qty=ln["qty"],
                        allocations=[LineAllocation(node=a["node"], qty=a["qty"]) for a in ln["allocations"]],
                        backordered=ln["backordered"],
                        promise_date=ln["promise_date"],
                        substituted_by=ln["substituted_by"],
                    )
                    for ln in rec["lines"].values()
                ],
            )

    def order_ids(self) -> list[str]:
        with self._lock:
            return list(self._orders)

    def orders(self, statuses: set[str] | None = None) -> list[OrderView]:
        """Orders (optionally only those in ``statuses``), in the order they were created."""
        with self._lock:
            ids = [i for i, rec in self._orders.items() if statuses is None or rec["status"] in statuses]
        return [self.order(i) for i in ids]

    def customer(self, customer_id: str) -> Customer:
        with self._lock:
            found = self._customers.get(customer_id)
            if found is None:
                raise TwinNotFound(f"customer {customer_id} is not known to the OMS")
            return found.model_copy()

    def network(self) -> Network:
        with self._lock:
            return Network(
                nodes=[n.model_copy(deep=True) for n in self._nodes.values()],
                lanes=[lane.model_copy() for lane in self._lanes],
                transfer_lanes=[lane.model_copy() for lane in self._transfer_lanes],
            )

    def network_etag(self) -> str:
        """An entity tag that changes whenever the network does (and differs between twins)."""
        with self._lock:
            return f'"{self._instance}-{self._network_version}"'

    def network_document(self) -> tuple[str, dict[str, Any]]:
        """The network as the OMS API answers it, with its ETag; dumped once per version (the
        caller must not change the document)."""
        with self._lock:
            kept = self._network_doc
            if kept is None or kept[0] != self._network_version:
                kept = (self._network_version, self.network().model_dump(mode="json", by_alias=True))
                self._network_doc = kept
            return self.network_etag(), kept[1]

    def books_many(self, skus: list[str]) -> list[dict[str, Any]]:
        """Each of ``skus`` as the ERP holds it, in the order given: its material master record
        (None when unknown) with its book stock and planned supply (empty when unknown)."""
        with self._lock:
            out = []
            for sku in skus:
                info = self._skus.get(sku)
                book = self.book_stock(sku) if info is not None else []
                supply = self.planned_supply(sku) if info is not None else []
                out.append(
                    {
                        "sku": sku,
                        "material": info.model_dump(mode="json") if info is not None else None,
                        "book_stock": [b.model_dump(mode="json") for b in book],
                        "planned_supply": [x.model_dump(mode="json") for x in supply],
                    }
                )
            return out

    # ------------------------------------------------------------------ actions

    def apply(self, action: Action) -> dict[str, Any]:
        """Execute one contract action; a repeated idempotency key returns the first result."""
        return self.execute(action)[0]

    def execute(self, action: Action) -> tuple[dict[str, Any], bool]:
        """Like ``apply``, also telling whether the key was already applied (a replay)."""
        key = action.idempotency_key
        with self._lock:
            if key:
                self._calls[key] = self._calls.get(key, 0) + 1
                if key in self._results:
                    return copy.deepcopy(self._results[key]), True
            handler = self._HANDLERS.get(action.name)
            if handler is None:
                raise TwinRejected(f"unknown action type {action.name!r}")
            order_id = action.payload.get("order_id") if action.system == "oms" else None
            before = self._reserved_keys(order_id)
            result = handler(self, dict(action.payload), key)
            self._version += 1
            for node, sku in before | self._reserved_keys(order_id):
                self._touch("oms", node, sku)
            if action.name == "erp.post_adjustment":
                self._touch("erp", str(action.payload["node"]), str(action.payload["sku"]))
            result = {"action": action.name, "idempotency_key": key, **result}
            if key:
                self._results[key] = copy.deepcopy(result)
                self._counts[key] = self._counts.get(key, 0) + 1
            self._log.append(
                {
                    "idempotency_key": key,
                    "system": action.system,
                    "type": action.type,
                    "payload": copy.deepcopy(action.payload),
                }
            )
            return copy.deepcopy(result), False

    def application_count(self, key: str) -> int:
        """How many times an action with this key changed the state (1 when idempotency holds)."""
        with self._lock:
            return self._counts.get(key, 0)

    def applied_actions(self) -> list[dict[str, Any]]:
        """Applied actions in order, with how often each key was applied and requested."""
        with self._lock:
            return [
                {
                    "idempotency_key": entry["idempotency_key"],
                    "system": entry["system"],
                    "type": entry["type"],
                    "count": self._counts.get(entry["idempotency_key"], 1),
                    "requests": self._calls.get(entry["idempotency_key"], 1),
                }
                for entry in self._log
            ]

    def _order_rec(self, payload: dict[str, Any]) -> dict[str, Any]:
        order_id = str(_req(payload, "order_id"))
        rec = self._orders.get(order_id)
        if rec is None:
            raise TwinRejected(f"order {order_id} is not known to the OMS")
        return rec

    def _line_rec(self, rec: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        number = _int(payload, "line")
        line = rec["lines"].get(number)
        if line is None:
            raise TwinRejected(f"order {rec['order'].id} has no line {number}")
        found: dict[str, Any] = line
        return found

    # OMS ------------------------------------------------------------------

    def _oms_allocate(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        rec = self._order_rec(p)
        line = self._line_rec(rec, p)
        node = str(_req(p, "node"))
        if node not in self._nodes:
            raise TwinRejected(f"node {node} is not in the network")
        qty = _num(p, "qty", positive=True)
        sku = str(p.get("sku") or line["substituted_by"] or line["sku"])
        if rec["status"] in _CLOSED_STATUSES:
            raise TwinRejected(f"order {rec['order'].id} is {rec['status']}; cannot allocate")
        self._add_allocation(line, node, sku, qty)
        allocated, physical = self._allocated(node, sku), self._physical(node, sku)
        if allocated > physical + 1e-9:
            self._oversells.append(
                {
                    "node": node,
                    "sku": sku,
                    "allocated": allocated,
                    "physical": physical,
                    "order_id": rec["order"].id,
                    "line": line["line"],
                    "qty_over": min(qty, allocated - physical),
                    "idempotency_key": key,
                }
            )
        return {
            "order_id": rec["order"].id,
            "line": line["line"],
            "node": node,
            "sku": sku,
            "allocated": sum(a["qty"] for a in line["allocations"]),
        }

    def _set_status(self, rec: dict[str, Any], status: str) -> None:
        if status not in ORDER_STATUSES:
            raise TwinRejected(f"unknown order status {status!r}; known: {', '.join(sorted(ORDER_STATUSES))}")
        rec["status"] = status
        if status == "cancelled":
            for line in rec["lines"].values():
                line["allocations"] = []
        if status != "held":
            rec["hold_reason"] = None

    def _oms_update_order_status(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        rec = self._order_rec(p)
        self._set_status(rec, str(_req(p, "status")))
        return {"order_id": rec["order"].id, "status": rec["status"]}

    def _oms_release_allocation(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        rec = self._order_rec(p)
        line = self._line_rec(rec, p)
        node = str(_req(p, "node"))
        qty = _num(p, "qty", positive=True)
        held = sum(a["qty"] for a in line["allocations"] if a["node"] == node)
        if held + 1e-9 < qty:
            raise TwinRejected(f"order {rec['order'].id} line {line['line']} holds {held:g} at {node}, not {qty:g}")
        left = qty
        for alloc in line["allocations"]:
            if alloc["node"] == node and left > 0:
                take = min(alloc["qty"], left)
                alloc["qty"] -= take
                left -= take
        line["allocations"] = [a for a in line["allocations"] if a["qty"] > 1e-9]
        return {"order_id": rec["order"].id, "line": line["line"], "node": node, "released": qty}

    def _oms_update_line_qty(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        """Set a line's ordered quantity; reservations above it are given back, newest first."""
        rec = self._order_rec(p)
        line = self._line_rec(rec, p)
        qty = _num(p, "qty", positive=True)
        order_id = rec["order"].id
        if rec["status"] in _CLOSED_STATUSES:
            raise TwinRejected(f"order {order_id} is {rec['status']}; cannot change line {line['line']}")
        waves = self._waves_with_line(order_id, line["line"])
        if waves:
            raise TwinRejected(
                f"order {order_id} line {line['line']} is on released wave {', '.join(waves)}; "
                "the warehouse is picking it"
            )
        previous = float(line["qty"])
        excess = sum(a["qty"] for a in line["allocations"]) - qty
        released: list[dict[str, Any]] = []
        for alloc in reversed(line["allocations"]):  # appended in order: newest last
            if excess <= 1e-9:
                break
            take = min(alloc["qty"], excess)
            alloc["qty"] -= take
            excess -= take
            released.append({"node": alloc["node"], "sku": alloc["sku"], "qty": take})
        line["allocations"] = [a for a in line["allocations"] if a["qty"] > 1e-9]
        line["qty"] = qty
        left = max(0.0, qty - sum(a["qty"] for a in line["allocations"]))
        line["backordered"] = min(float(line["backordered"]), left)
        self._trim_backorders(order_id, line["line"], line["backordered"])
        fully = all(sum(a["qty"] for a in ln["allocations"]) >= ln["qty"] - 1e-9 for ln in rec["lines"].values())
        if fully and rec["status"] in ("partially_released", "backordered"):
            self._set_status(rec, "released")  # what was short is no longer ordered
        # The order itself carries the demand the engines read.
        order: Order = rec["order"]
        rec["order"] = order.model_copy(
            update={
                "lines": [ln.model_copy(update={"qty": qty}) if ln.line == line["line"] else ln for ln in order.lines]
            }
        )
        return {
            "order_id": order_id,
            "line": line["line"],
            "qty": qty,
            "previous_qty": previous,
            "released": released,
        }

    def _trim_backorders(self, order_id: str, line_no: int, keep: float) -> None:
        """The ERP's backorders of one line hold at most ``keep`` units (newest trimmed first)."""
        mine = [b for b in self._backorders if b["order_id"] == order_id and b["line"] == line_no]
        excess = sum(b["qty"] for b in mine) - keep
        for b in reversed(mine):
            if excess <= 1e-9:
                break
            take = min(b["qty"], excess)
            b["qty"] -= take
            excess -= take
        self._backorders = [b for b in self._backorders if b["qty"] > 1e-9]

    def _waves_with_line(self, order_id: str, line_no: int) -> list[str]:
        """Released waves that carry this line (a wave entry without lines carries the whole order)."""
        found = []
        for wave in self._waves:
            if wave.get("status", "released") in ("cancelled", "done", "shipped", "closed"):
                continue
            for entry in wave["orders"]:
                if not isinstance(entry, dict) or entry.get("orderId") != order_id:
                    continue
                lines = entry.get("lines")
                numbers = [x.get("line") for x in lines if isinstance(x, dict)] if isinstance(lines, list) else []
                if not numbers or line_no in numbers:
                    found.append(str(wave["waveId"]))
                    break
        return found

    def _oms_hold_order(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        rec = self._order_rec(p)
        self._set_status(rec, "held")
        rec["hold_reason"] = str(_req(p, "reason"))
        rec["hold_detail"] = p.get("detail")
        return {"order_id": rec["order"].id, "status": "held", "hold_reason": rec["hold_reason"]}

    def _oms_split_line(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        rec = self._order_rec(p)
        line = self._line_rec(rec, p)
        backorder = _num(p, "backorder_qty")
        if backorder < 0 or backorder > line["qty"]:
            raise TwinRejected(f"payload.backorder_qty must be within 0..{line['qty']}, got {backorder}")
        line["backordered"] = backorder
        return {"order_id": rec["order"].id, "line": line["line"], "backordered": backorder}

    def _oms_update_promise_date(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        rec = self._order_rec(p)
        promise = _date(_req(p, "promise_date"), "promise_date")
        if p.get("line") is not None:
            lines = [self._line_rec(rec, p)]
        else:
            lines = [ln for ln in rec["lines"].values() if ln["backordered"] > 0] or list(rec["lines"].values())
        for line in lines:
            line["promise_date"] = promise
        return {"order_id": rec["order"].id, "lines": [ln["line"] for ln in lines], "promise_date": promise}

    def _oms_substitute_line(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        rec = self._order_rec(p)
        line = self._line_rec(rec, p)
        substitute = str(_req(p, "substitute"))
        if substitute not in self._skus:
            raise TwinRejected(f"substitute {substitute} is not in the ERP material master")
        line["substituted_by"] = substitute
        return {"order_id": rec["order"].id, "line": line["line"], "substituted_by": substitute}

    # WMS ------------------------------------------------------------------

    def _wms_create_wave(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        wave_id = str(_req(p, "waveId"))
        node = str(_req(p, "node"))
        if node not in self._nodes:
            raise TwinRejected(f"node {node} is not in the network")
        if any(w["waveId"] == wave_id for w in self._waves):
            raise TwinRejected(f"wave {wave_id} already exists")
        orders = _req(p, "orders")
        if not isinstance(orders, list) or not orders:
            raise TwinRejected("payload.orders must be a non-empty list")
        for entry in orders:
            order_id = entry.get("orderId") if isinstance(entry, dict) else None
            if order_id not in self._orders:
                raise TwinRejected(f"wave order {order_id!r} is not known to the OMS")
        wave = {
            "waveId": wave_id,
            "node": node,
            "status": "released",
            "orders": copy.deepcopy(orders),
            "parameters": copy.deepcopy(p.get("parameters") or {}),
        }
        self._waves.append(wave)
        return {"waveId": wave_id, "status": "released"}

    def _wms_create_task(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        node = str(_req(p, "node"))
        if node not in self._nodes:
            raise TwinRejected(f"node {node} is not in the network")
        task = {
            "id": self._next_id("TASK"),
            "node": node,
            "task_type": str(_req(p, "task_type")),
            "sku": str(_req(p, "sku")),
            "location": p.get("location"),
            "qty": _num(p, "qty") if p.get("qty") is not None else None,
            "reason": p.get("reason"),
            "status": "open",
            # Extension: the order a re-pick serves and the triage case a task belongs to.
            "order_id": p.get("order_id"),
            "case_key": p.get("case_key"),
        }
        self._tasks.append(task)
        return {"task_id": task["id"], "status": "open"}

    def _wms_create_transfer(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        src, dst = str(_req(p, "from")), str(_req(p, "to"))
        for node in (src, dst):
            if node not in self._nodes:
                raise TwinRejected(f"node {node} is not in the network")
        transfer = {
            "id": self._next_id("TR"),
            "sku": str(_req(p, "sku")),
            "from": src,
            "to": dst,
            "qty": _num(p, "qty", positive=True),
            "status": "created",
            # Extension: when the transfer is expected to land (so a planner does not send it twice).
            "eta": _date(p["eta"], "eta") if p.get("eta") else None,
        }
        self._transfers.append(transfer)
        return {"transfer_id": transfer["id"], "status": "created"}

    # Compensations (extension): undo a wave, task or transfer a failed decision created.

    def _cancel(self, records: list[dict[str, Any]], field: str, value: str, what: str) -> dict[str, Any]:
        rec = next((r for r in records if r.get(field) == value), None)
        if rec is None:
            raise TwinRejected(f"{what} {value} does not exist")
        if rec.get("status") in ("done", "shipped", "closed", "received"):
            raise TwinRejected(f"{what} {value} is {rec['status']}; too late to cancel")
        rec["status"] = "cancelled"
        return {field: value, "status": "cancelled"}

    def _wms_cancel_wave(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        return self._cancel(self._waves, "waveId", str(_req(p, "waveId")), "wave")

    def _wms_cancel_task(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        return self._cancel(self._tasks, "id", str(_req(p, "task_id")), "task")

    def _wms_cancel_transfer(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        return self._cancel(self._transfers, "id", str(_req(p, "transfer_id")), "transfer")

    # ERP ------------------------------------------------------------------

    def _erp_create_backorder(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        rec = self._order_rec(p)
        line = self._line_rec(rec, p)
        backorder = {
            "id": self._next_id("BO"),
            "order_id": rec["order"].id,
            "line": line["line"],
            "sku": str(p.get("sku") or line["sku"]),
            "qty": _num(p, "qty", positive=True),
            "promise_date": _date(p["promise_date"], "promise_date") if p.get("promise_date") else None,
        }
        self._backorders.append(backorder)
        return {"backorder_id": backorder["id"]}

    def _book_record(self, node: str, sku: str) -> dict[str, Any]:
        for b in self._book:
            if b["node"] == node and b["sku"] == sku:
                return b
        b = {"node": node, "sku": sku, "qty": 0.0, "blocked": 0.0}
        self._book.append(b)
        return b

    def _erp_post_adjustment(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        node, sku = str(_req(p, "node")), str(_req(p, "sku"))
        delta = _num(p, "qty_delta")
        book = self._book_record(node, sku)
        book["qty"] += delta
        adjustment = {
            "id": self._next_id("ADJ"),
            "node": node,
            "sku": sku,
            "qty_delta": delta,
            "reason": p.get("reason"),
        }
        self._adjustments.append(adjustment)
        return {"adjustment_id": adjustment["id"], "book_qty": book["qty"]}

    def _po_line(self, p: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        po_id = str(_req(p, "po_id"))
        po = self._pos.get(po_id)
        if po is None:
            raise TwinRejected(f"purchase order {po_id} is not known to the ERP")
        number = _int(p, "line")
        for line in po["lines"]:
            if line["line"] == number:
                return po, line
        raise TwinRejected(f"purchase order {po_id} has no line {number}")

    def _erp_expedite_po(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        po, line = self._po_line(p)
        line["expected"] = _date(_req(p, "new_date"), "new_date")
        line["expedite_requested"] = True
        return {"po_id": po["id"], "line": line["line"], "expected": line["expected"]}

    def _erp_update_safety_stock(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        sku, node = str(_req(p, "sku")), str(_req(p, "node"))
        info = self._skus.get(sku)
        if info is None:
            raise TwinRejected(f"{sku} is not in the ERP material master")
        info.safety_stock[node] = _num(p, "qty")
        return {"sku": sku, "node": node, "safety_stock": info.safety_stock[node]}

    def _erp_close_po_line(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        po, line = self._po_line(p)
        line["status"] = "closed"
        if all(ln["status"] == "closed" for ln in po["lines"]):
            po["status"] = "closed"
        return {"po_id": po["id"], "line": line["line"], "po_status": po["status"]}

    # Notify ---------------------------------------------------------------

    def _notify_ticket(self, p: dict[str, Any], key: str) -> dict[str, Any]:
        ticket = {
            "id": self._next_id("TKT"),
            "team": str(_req(p, "team")),
            "subject": str(_req(p, "subject")),
            "summary": p.get("summary"),
            "priority": p.get("priority"),
            "refs": copy.deepcopy(p.get("refs")),
        }
        self._tickets.append(ticket)
        return {"ticket_id": ticket["id"]}

    _HANDLERS: dict[str, Callable[[TwinState, dict[str, Any], str], dict[str, Any]]] = {
        "oms.allocate": _oms_allocate,
        "oms.release_allocation": _oms_release_allocation,
        "oms.update_line_qty": _oms_update_line_qty,
        "oms.update_order_status": _oms_update_order_status,
        "oms.hold_order": _oms_hold_order,
        "oms.split_line": _oms_split_line,
        "oms.update_promise_date": _oms_update_promise_date,
        "oms.substitute_line": _oms_substitute_line,
        "wms.create_wave": _wms_create_wave,
        "wms.create_task": _wms_create_task,
        "wms.create_transfer": _wms_create_transfer,
        "wms.cancel_wave": _wms_cancel_wave,
        "wms.cancel_task": _wms_cancel_task,
        "wms.cancel_transfer": _wms_cancel_transfer,
        "erp.create_backorder": _erp_create_backorder,
        "erp.post_adjustment": _erp_post_adjustment,
        "erp.expedite_po": _erp_expedite_po,
        "erp.update_safety_stock": _erp_update_safety_stock,
        "erp.close_po_line": _erp_close_po_line,
        "notify.ticket": _notify_ticket,
    }

    # ------------------------------------------------------------------ source events

    def apply_event(self, event: dict[str, Any]) -> None:
        """Apply the source system's own change that ``event`` reports (before it is posted)."""
        etype = event.get("type")
        data = event.get("data")
        if not isinstance(data, dict):
            raise TwinRejected("event data must be an object")
        try:
            with self._lock:
                self._version += 1
                if etype == "oms.order.created":
                    order = Order.model_validate(data)
                    if order.id not in self._orders:
                        self._add_order(order)
                elif etype == "oms.order.cancelled":
                    rec = self._orders.get(str(data.get("order_id")))
                    if rec is not None:
                        for node, sku in self._reserved_keys(rec["order"].id):
                            self._touch("oms", node, sku)
                        self._set_status(rec, "cancelled")
                elif etype == "erp.po.created":
                    po = PurchaseOrder.model_validate(data)
                    if po.id not in self._pos:
                        self._add_po(po)
                elif etype == "erp.inventory.posted":
                    self._book_record(str(data["node"]), str(data["sku"]))["qty"] += float(data["qty_delta"])
                    self._touch("erp", str(data["node"]), str(data["sku"]))
                    self._erp_postings.append(
                        _movement("posting", data, data.get("posted_at") or event.get("time"), data.get("document_id"))
                    )
                elif etype == "wms.inventory.adjusted":
                    rec = self._location(str(data["node"]), str(data["sku"]), data.get("location"))
                    rec["on_hand"] = max(0.0, rec["on_hand"] + float(data["qty_delta"]))
                    self._touch("wms", str(data["node"]), str(data["sku"]))
                    self._wms_moves.append(_movement("adjustment", data, event.get("time"), event.get("id")))
                elif etype == "wms.asn.received":
                    asn = Asn.model_validate(data)
                    self._asns[asn.id] = asn.model_dump(mode="json")
                elif etype == "wms.receipt.posted":
                    self._receipts.append(Receipt.model_validate(data).model_dump(mode="json"))
                    self._receive(data)
                    for line in data["lines"]:
                        good = float(line["qty"]) - float(line.get("damaged") or 0)
                        if good > 0:
                            moved = {"node": data["node"], "sku": line["sku"], "qty_delta": good}
                            at = data.get("received_at") or event.get("time")
                            self._wms_moves.append(_movement("receipt", moved, at, data.get("id")))
                elif etype == "wms.capacity.changed":
                    self._set_capacity(str(data["node"]), str(data["zone"]), float(data["pick_capacity_per_hour"]))
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            if isinstance(exc, TwinRejected):
                raise
            raise TwinRejected(f"event {event.get('id')!r} of type {etype!r} has bad data: {exc}") from None

    def _location(self, node: str, sku: str, location: str | None = None) -> dict[str, Any]:
        """The WMS location record to change: the named one, else the node's first for the sku."""
        recs = [r for r in self._stock if r["node"] == node and r["sku"] == sku]
        if location:
            for r in recs:
                if r["location"] == location:
                    return r
        elif recs:
            return recs[0]
        zone = self._nodes[node].zones[0].id if node in self._nodes and self._nodes[node].zones else "DEFAULT"
        rec = {
            "node": node,
            "zone": zone,
            "location": location or f"{zone}-{sku}",
            "sku": sku,
            "lot": None,
            "on_hand": 0.0,
            "locked": 0.0,
        }
        self._stock.append(rec)
        return rec

    def _receive(self, data: dict[str, Any]) -> None:
        node = str(data["node"])
        po = self._pos.get(str(data.get("po_id")))
        for line in data["lines"]:
            good = float(line["qty"]) - float(line.get("damaged") or 0)
            if good > 0:
                self._location(node, str(line["sku"]))["on_hand"] += good
                self._touch("wms", node, str(line["sku"]))
            if po is not None:
                for po_line in po["lines"]:
                    if po_line["line"] == line.get("po_line"):
                        po_line["received"] += float(line["qty"])

    def _set_capacity(self, node: str, zone_id: str, capacity: float) -> None:
        found = self._nodes.get(node)
        if found is None:
            return
        zones = [
            z.model_copy(update={"pick_capacity_per_hour": capacity}) if z.id == zone_id else z for z in found.zones
        ]
        self._nodes[node] = found.model_copy(update={"zones": zones})
        self._network_version += 1

    # ------------------------------------------------------------------ bulk reads (change feed)

    def drift(self, node: str, sku: str, book_delta: float) -> None:
        """Twin control: move the ERP book with no posting, no event and no change-feed entry (a
        direct database edit): a standing difference only a full reconciliation pass can find."""
        with self._lock:
            self._book_record(node, sku)["qty"] += book_delta
            self._version += 1

    def _touch(self, system: str, node: str, sku: str) -> None:
        self._changed[system][(node, sku)] = datetime.now(UTC)

    def _reserved_keys(self, order_id: Any) -> set[tuple[str, str]]:
        """(node, sku) of every reservation an order holds (none for an unknown order)."""
        rec = self._orders.get(str(order_id)) if order_id is not None else None
        if rec is None:
            return set()
        return {(a["node"], a["sku"]) for ln in rec["lines"].values() for a in ln["allocations"]}

    def _aggregate(self, system: str) -> dict[tuple[str, str], tuple[float, float]]:
        """(node, sku) -> (qty, held) as the system sees it now."""
        out: dict[tuple[str, str], tuple[float, float]] = {}
        if system == "wms":
            for r in self._stock:
                qty, held = out.get((r["node"], r["sku"]), (0.0, 0.0))
                out[(r["node"], r["sku"])] = (qty + r["on_hand"], held + r["locked"])
        elif system == "erp":
            for b in self._book:
                qty, held = out.get((b["node"], b["sku"]), (0.0, 0.0))
                out[(b["node"], b["sku"])] = (qty + b["qty"], held + b.get("blocked", 0.0))
        else:
            for rec in self._orders.values():
                if rec["status"] in _CLOSED_STATUSES:
                    continue
                for line in rec["lines"].values():
                    for a in line["allocations"]:
                        qty, _ = out.get((a["node"], a["sku"]), (0.0, 0.0))
                        out[(a["node"], a["sku"])] = (qty + a["qty"], 0.0)
        return out

    def _snapshot(self, system: str) -> tuple[list[str], dict[str, dict[str, Any]]]:
        """Every row the system holds or changed, sorted by key; rebuilt only after a change."""
        cached = self._snapshots.get(system)
        if cached is not None and cached[0] == self._version:
            return cached[1], cached[2]
        current = self._aggregate(system)
        changed = self._changed[system]
        rows: dict[str, dict[str, Any]] = {}
        for node, sku in set(current) | set(changed):
            qty, held = current.get((node, sku), (0.0, 0.0))
            at = changed.get((node, sku))
            rows[f"{sku}@{node}"] = {
                "sku": sku,
                "node": node,
                "qty": qty,
                "held": held,
                "changed_at": at.isoformat() if at else None,
                "_at": at,
                "_held": (node, sku) in current,
            }
        keys = sorted(rows)
        self._snapshots[system] = (self._version, keys, rows)
        return keys, rows

    def snapshot(
        self, system: str, since: datetime | None = None, after: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        """One page of SKU@node rows of ``system`` (wms, erp or oms) in key order, after ``after``.

        Without ``since``: every row the system holds. With it: only rows changed at or after it,
        a row given up since (a reservation released) included with qty 0.
        """
        if system not in self._changed:
            raise TwinNotFound(f"no bulk read for system {system!r}")
        floor = since.astimezone(UTC) if since is not None and since.tzinfo else since
        if floor is not None and floor.tzinfo is None:
            floor = floor.replace(tzinfo=UTC)
        with self._lock:
            keys, rows = self._snapshot(system)
            start = bisect.bisect_right(keys, after) if after is not None else 0
            page: list[dict[str, Any]] = []
            last = None
            for key in keys[start:]:
                row = rows[key]
                if floor is None and not row["_held"]:
                    continue
                if floor is not None and (row["_at"] is None or row["_at"] < floor):
                    continue
                page.append({k: v for k, v in row.items() if not k.startswith("_")})
                last = key
                if len(page) >= limit:
                    break
            more = last is not None and len(page) >= limit and keys[-1] != last
            return {"rows": page, "next_after": last if more else None}

    # ------------------------------------------------------------------ export

    def movements(self, side: str, sku: str, node: str) -> list[dict[str, Any]]:
        """Stock movements of ``sku`` at ``node`` recorded by the WMS or the ERP, oldest first."""
        with self._lock:
            found = self._wms_moves if side == "wms" else self._erp_postings
            return copy.deepcopy([m for m in found if m["sku"] == sku and m["node"] == node])

    def asns(self, po_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy([a for a in self._asns.values() if po_id is None or a["po_id"] == po_id])

    def receipts(self, po_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy([r for r in self._receipts if po_id is None or r["po_id"] == po_id])

    def purchase_order(self, po_id: str) -> dict[str, Any]:
        with self._lock:
            po = self._pos.get(po_id)
            if po is None:
                raise TwinNotFound(f"purchase order {po_id} is not known to the ERP")
            return copy.deepcopy(po)

    def purchase_orders(self, status: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy([po for po in self._pos.values() if status is None or po["status"] == status])

    def waves(self, nodes: set[str] | None = None) -> list[dict[str, Any]]:
        """Released waves (copies), only those of ``nodes`` when given: the wave API reads this,
        not ``export_state``, which copies the whole world."""
        with self._lock:
            return copy.deepcopy([w for w in self._waves if nodes is None or w.get("node") in nodes])

    def waves_json(self, nodes: set[str] | None = None, keep: Callable[[dict[str, Any]], bool] | None = None) -> str:
        """``waves`` as the JSON the wave API answers, only those ``keep`` accepts: written under
        the lock from the waves themselves (no copy: a node's waves grow all day, and copying them
        all for every order decision was the twin's dearest read)."""
        with self._lock:
            found = [w for w in self._waves if (nodes is None or w.get("node") in nodes) and (keep is None or keep(w))]
            return json.dumps(found, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default)

    def export_state(self) -> dict[str, Any]:
        """The world now, in the shape of the report's ``final_state`` plus tickets and oversells."""
        with self._lock:
            orders = []
            for rec in self._orders.values():
                orders.append(
                    {
                        "id": rec["order"].id,
                        "status": rec["status"],
                        "hold_reason": rec["hold_reason"],
                        "lines": [
                            {
                                "line": ln["line"],
                                "sku": ln["sku"],
                                "qty": ln["qty"],
                                "allocations": [{"node": a["node"], "qty": a["qty"]} for a in ln["allocations"]],
                                "backordered": ln["backordered"],
                                "promise_date": ln["promise_date"],
                                "substituted_by": ln["substituted_by"],
                            }
                            for ln in rec["lines"].values()
                        ],
                    }
                )
            state = {
                "oms": {"orders": orders},
                "wms": {
                    "waves": self._waves,
                    "transfers": self._transfers,
                    "tasks": self._tasks,
                    "stock": [
                        {
                            "node": r["node"],
                            "zone": r["zone"],
                            "location": r["location"],
                            "sku": r["sku"],
                            "lot": r["lot"],
                            "on_hand": r["on_hand"],
                            "locked": r["locked"],
                        }
                        for r in self._stock
                    ],
                },
                "erp": {
                    "book_stock": self._book,
                    "backorders": self._backorders,
                    "adjustments": self._adjustments,
                    "purchase_orders": list(self._pos.values()),
                    "safety_stock": {s.id: s.safety_stock for s in self._skus.values() if s.safety_stock},
                },
                "tickets": self._tickets,
                "oversells": {"count": len(self._oversells), "events": self._oversells},
            }
            return copy.deepcopy(state)


def _json_default(value: Any) -> Any:
    """A payload value JSON has no type for, as the HTTP API writes it (times in ISO 8601)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _movement(kind: str, data: dict[str, Any], at: Any, ref: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "node": str(data["node"]),
        "sku": str(data["sku"]),
        "qty_delta": float(data["qty_delta"]),
        "at": str(at) if at else None,
        "ref": str(ref) if ref else None,
    }
