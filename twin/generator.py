"""Scenario generator: a realistic, seeded fulfilment network with a day of events to replay.

Demand is Pareto-skewed (a few SKUs take most order lines). Planted on purpose: WMS/ERP
stock discrepancies, locked and blocked stock, stock-outs that force splits and backorders,
ASNs and receipts that differ from their POs, short picks, an inventory adjustment, a
capacity change, and a ``crossdock.tick`` every two simulated hours.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Size = Literal["small", "medium", "large"]


@dataclass(frozen=True)
class _Shape:
    warehouses: int
    stores: int
    regions: int
    skus: int
    orders: int
    customers: int


SHAPES: dict[str, _Shape] = {
    "small": _Shape(warehouses=2, stores=1, regions=2, skus=15, orders=30, customers=12),
    "medium": _Shape(warehouses=3, stores=3, regions=3, skus=80, orders=300, customers=60),
    "large": _Shape(warehouses=5, stores=7, regions=4, skus=400, orders=3000, customers=300),
}
REGIONS = ["US-NE", "US-W", "US-SE", "US-MW"]
CARRIERS = [("FEDX_GROUND", 14), ("UPS_GROUND", 15), ("USPS_PRIORITY", 16), ("DHL_EXPRESS", 13)]
ADJECTIVES = ["blue", "red", "steel", "compact", "heavy-duty", "mini", "pro", "eco", "classic", "xl"]
NOUNS = [
    "Widget",
    "Gadget",
    "Sprocket",
    "Bracket",
    "Hinge",
    "Valve",
    "Gasket",
    "Bolt kit",
    "Fan",
    "Lamp",
    "Cable",
    "Adapter",
    "Filter",
    "Pump",
    "Clamp",
]
COMPANY = ["Acme", "Bolt", "Cobalt", "Delta", "Ember", "Fjord", "Granite", "Harbor", "Iris", "Juniper"]
TRADE = ["Retail", "Hardware", "Supplies", "Industrial", "Outfitters", "Depot", "Trading"]
SUPPLIERS = ["SUP-1", "SUP-2", "SUP-3", "SUP-4", "SUP-5"]
NOTES = [
    "Leave at the back door.",
    "Call before delivery.",
    "Gift wrap, please.",
    "Deliver after 2pm.",
    "Urgent: store opening on Monday.",
]
PARETO_EXPONENT = 1.3  # Zipf-like: weight of the r-th most popular SKU is 1 / r**1.3


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Builder:
    def __init__(self, seed: int, size: Size) -> None:
        if size not in SHAPES:
            raise ValueError(f"size must be one of {', '.join(SHAPES)}, got {size!r}")
        self.rng = random.Random(seed)
        self.shape = SHAPES[size]
        self.name = f"generated-{size}-{seed}"
        self.start = datetime(2026, 3, 2, 6, 0, tzinfo=UTC) + timedelta(days=seed % 28)
        self.events: list[tuple[datetime, int, dict[str, Any]]] = []

    # ------------------------------------------------------------------ network

    def network(self) -> None:
        rng, shape = self.rng, self.shape
        self.regions = REGIONS[: shape.regions]
        self.nodes: list[dict[str, Any]] = []
        for i in range(shape.warehouses):
            region = self.regions[i % len(self.regions)]
            zones = [
                {"id": f"PICK-{chr(65 + z)}", "pick_capacity_per_hour": rng.randrange(150, 401, 10)}
                for z in range(rng.randint(1, 3))
            ]
            carriers = rng.sample(CARRIERS, rng.randint(2, 3))
            self.nodes.append(
                {
                    "id": f"DC-{region.split('-')[1]}-{i + 1}",
                    "type": "warehouse",
                    "region": region,
                    "zones": zones,
                    "carriers": [{"code": c, "cutoff": f"{h + rng.choice([0, 0, 1]):02d}:00"} for c, h in carriers],
                }
            )
        for i in range(shape.stores):
            region = self.regions[(i + 1) % len(self.regions)]
            code, hour = rng.choice(CARRIERS)
            self.nodes.append(
                {
                    "id": f"STORE-{10 + i}",
                    "type": "store",
                    "region": region,
                    "zones": [{"id": "BACKROOM", "pick_capacity_per_hour": rng.randrange(15, 41, 5)}],
                    "carriers": [{"code": code, "cutoff": f"{hour - 2:02d}:00"}],
                }
            )
        self.warehouses = [n for n in self.nodes if n["type"] == "warehouse"]
        self.lanes = []
        for node in self.nodes:
            store_extra = 0.8 if node["type"] == "store" else 0.0
            for region in self.regions:
                own = region == node["region"]
                self.lanes.append(
                    {
                        "from": node["id"],
                        "to_region": region,
                        "cost_per_unit": round(rng.uniform(0.9, 1.5) if own else rng.uniform(2.4, 4.0), 2)
                        + store_extra,
                        "transit_days": 1 if own else rng.randint(3, 5),
                    }
                )
        self.transfer_lanes = [
            {
                "from": a["id"],
                "to": b["id"],
                "cost_per_unit": round(rng.uniform(0.3, 0.6), 2),
                "transit_days": rng.randint(2, 4),
            }
            for a in self.warehouses
            for b in self.warehouses
            if a is not b
        ]

    # ------------------------------------------------------------------ catalogue & customers

    def catalogue(self) -> None:
        rng, n = self.rng, self.shape.skus
        self.skus: list[dict[str, Any]] = [
            {
                "id": f"SKU-{1000 + i}",
                "description": f"{NOUNS[i % len(NOUNS)]}, {ADJECTIVES[(i // len(NOUNS)) % len(ADJECTIVES)]}"
                + (f" #{i // (len(NOUNS) * len(ADJECTIVES)) + 1}" if i >= len(NOUNS) * len(ADJECTIVES) else ""),
                "unit_cost": round(rng.lognormvariate(2.3, 0.8), 2),
                "substitutes": [],
                "safety_stock": {},
            }
            for i in range(n)
        ]
        ranks = list(range(1, n + 1))
        rng.shuffle(ranks)
        self.weights = [1.0 / r**PARETO_EXPONENT for r in ranks]
        for sku in self.skus:
            if rng.random() < 0.12:
                other = rng.choice(self.skus)
                if other is not sku:
                    sku["substitutes"] = [other["id"]]
            for wh in self.warehouses:
                if rng.random() < 0.2:
                    sku["safety_stock"][wh["id"]] = rng.randint(2, 20)
        self.customers = []
        for i in range(self.shape.customers):
            name = f"{COMPANY[i % len(COMPANY)]} {TRADE[(i // len(COMPANY)) % len(TRADE)]}"
            self.customers.append(
                {"id": f"CUST-{i + 1}", "name": name, "tier": "gold" if rng.random() < 0.15 else "standard"}
            )
        holds = max(1, self.shape.customers // 20)
        self.credit_holds = sorted(c["id"] for c in rng.sample(self.customers, holds))

    # ------------------------------------------------------------------ orders

    def orders(self) -> None:
        rng = self.rng
        times = sorted(rng.uniform(0, 86_000) for _ in range(self.shape.orders))
        self.order_list: list[dict[str, Any]] = []
        self.demand: dict[str, float] = {}
        for i, offset in enumerate(times):
            created = self.start + timedelta(seconds=int(offset))
            region = rng.choice(self.regions)
            express = rng.random() < 0.15
            carriers = sorted({c["code"] for n in self.nodes if n["region"] == region for c in n["carriers"]})
            lines = []
            n_lines = min(1 + int(rng.expovariate(0.9)), 5, len(self.skus))
            chosen: list[int] = []
            while len(chosen) < n_lines:
                pick = rng.choices(range(len(self.skus)), weights=self.weights)[0]
                if pick not in chosen:
                    chosen.append(pick)
            for number, idx in enumerate(chosen, start=1):
                qty = rng.randint(10, 30) if rng.random() < 0.05 else rng.randint(1, 3 if express else 6)
                sku = self.skus[idx]["id"]
                lines.append({"line": number, "sku": sku, "qty": qty})
                self.demand[sku] = self.demand.get(sku, 0) + qty
            ship_days = 0 if express else rng.randint(1, 3)
            ship_by = (created + timedelta(days=ship_days)).replace(hour=15, minute=0, second=0)
            if ship_by <= created:
                ship_by = created + timedelta(days=1)
            order_id = f"SO-{100001 + i}"
            order: dict[str, Any] = {
                "id": order_id,
                "customer": rng.choice(self.customers)["id"],
                "region": region,
                "priority": "express" if express else "standard",
                "created": _ts(created),
                "ship_by": _ts(ship_by),
                "carrier": rng.choice(carriers) if carriers else None,
                "allow_split": rng.random() < 0.7,
                "allow_substitution": rng.random() < 0.3,
                "note": rng.choice(NOTES) if rng.random() < 0.08 else None,
                "lines": lines,
            }
            self.order_list.append(order)
            self._event(created, "oms/gen", "oms.order.created", order_id, order)

    # ------------------------------------------------------------------ stock

    def stock(self) -> None:
        rng = self.rng
        self.stock_records: list[dict[str, Any]] = []
        self.book: list[dict[str, Any]] = []
        self.short_skus: list[str] = []
        slots: dict[str, int] = {}
        popular = sorted(self.skus, key=lambda s: -self.demand.get(s["id"], 0))[: max(1, len(self.skus) // 3)]
        popular_ids = {s["id"] for s in popular}
        for sku in self.skus:
            demand = self.demand.get(sku["id"], 0)
            roll = rng.random()
            if demand and roll < 0.06:
                factor = 0.0  # a stock-out everywhere: backorders
                self.short_skus.append(sku["id"])
            elif demand and roll < 0.18:
                factor = rng.uniform(0.3, 0.8)  # short: splits and partial releases
                self.short_skus.append(sku["id"])
            else:
                factor = rng.uniform(1.3, 3.0)
            total = int(max(demand, 4) * factor)
            holders = [n for n in self.warehouses if rng.random() < 0.85] or [rng.choice(self.warehouses)]
            holders += [
                n for n in self.nodes if n["type"] == "store" and sku["id"] in popular_ids and rng.random() < 0.5
            ]
            shares = [rng.random() + 0.2 for _ in holders]
            for node, share in zip(holders, shares, strict=True):
                qty = int(total * share / sum(shares))
                self._place(node, sku["id"], qty, slots)
        # Planted discrepancies between WMS and ERP books.
        for rec in self.book:
            roll = rng.random()
            if roll < 0.06:
                rec["qty"] += rng.choice([-5, -3, -2, -1, 1, 2, 4])
                rec["qty"] = max(0, rec["qty"])
            elif roll < 0.09 and rec["qty"] > 2:
                rec["blocked"] = rng.randint(1, min(5, rec["qty"]))

    def _place(self, node: dict[str, Any], sku: str, qty: int, slots: dict[str, int]) -> None:
        rng = self.rng
        parts = [qty] if qty < 12 or rng.random() < 0.7 else [qty // 2, qty - qty // 2]
        for part in parts:
            zone = rng.choice(node["zones"])["id"]
            slots[node["id"]] = slots.get(node["id"], 0) + 1
            n = slots[node["id"]]
            locked = 0
            if part > 0 and rng.random() < 0.05:
                locked = rng.randint(1, part)  # cycle-count or quality lock
            self.stock_records.append(
                {
                    "node": node["id"],
                    "zone": zone,
                    "location": f"{zone}-{n // 20 + 1:02d}-{n % 20 + 1:02d}",
                    "sku": sku,
                    "lot": f"L-{rng.randint(10, 99)}" if rng.random() < 0.3 else None,
                    "on_hand": part,
                    "locked": locked,
                }
            )
        self.book.append({"node": node["id"], "sku": sku, "qty": qty, "blocked": 0})

    # ------------------------------------------------------------------ supply

    def supply(self) -> None:
        rng = self.rng
        start_day = self.start.date()
        extra = [s["id"] for s in rng.sample(self.skus, len(self.skus) // 4)]
        candidates = list(dict.fromkeys(self.short_skus + extra))
        self.purchase_orders: list[dict[str, Any]] = []
        po_no = 9001
        while candidates:
            take = candidates[: rng.randint(1, 4)]
            candidates = candidates[len(take) :]
            node = rng.choice(self.warehouses)["id"]
            lines = []
            for n, sku in enumerate(take, start=1):
                cost = next(s["unit_cost"] for s in self.skus if s["id"] == sku)
                qty = max(10, int(self.demand.get(sku, 0) * rng.uniform(1.0, 2.5)) // 10 * 10)
                lines.append(
                    {
                        "line": n * 10,
                        "sku": sku,
                        "qty": qty,
                        "unit_price": cost,
                        "lot": f"L-{rng.randint(10, 99)}" if rng.random() < 0.3 else None,
                    }
                )
            self.purchase_orders.append(
                {
                    "id": f"PO-{po_no}",
                    "supplier": rng.choice(SUPPLIERS),
                    "node": node,
                    "expected": (start_day + timedelta(days=rng.randint(1, 10))).isoformat(),
                    "lines": lines,
                }
            )
            po_no += 1
        # A few POs are created during the day rather than known at the start.
        self.new_pos = [po for po in self.purchase_orders if rng.random() < 0.15]
        for po in self.new_pos:
            self._event(self._moment(1, 20), "erp/gen", "erp.po.created", po["id"], po)
        self.in_transit = []
        if len(self.warehouses) > 1:
            for i, sku in enumerate(rng.sample(self.skus, max(1, len(self.skus) // 20))):
                src, dst = rng.sample(self.warehouses, 2)
                self.in_transit.append(
                    {
                        "id": f"TO-{500 + i}",
                        "sku": sku["id"],
                        "from": src["id"],
                        "to": dst["id"],
                        "qty": rng.randint(5, 40),
                        "eta": (start_day + timedelta(days=rng.randint(1, 4))).isoformat(),
                    }
                )

    def inbound(self) -> None:
        """ASNs for some POs and receipts against them, several differing from the PO."""
        rng = self.rng
        known = [po for po in self.purchase_orders if po not in self.new_pos]
        arriving = rng.sample(known, max(min(3, len(known)), len(known) // 2))
        kinds = ["exact", "short", "over", "wrong_lot", "damaged"]
        for i, po in enumerate(arriving):
            asn_at = self._moment(0, 10)
            asn_lines = []
            for ln in po["lines"]:
                qty = ln["qty"] if rng.random() < 0.8 else max(1, ln["qty"] - rng.randint(1, 5))
                asn_lines.append({"po_line": ln["line"], "sku": ln["sku"], "qty": qty, "lot": ln["lot"]})
            asn = {
                "id": f"ASN-{5001 + i}",
                "po_id": po["id"],
                "supplier": po["supplier"],
                "expected": asn_at.date().isoformat(),
                "lines": asn_lines,
            }
            self._event(asn_at, "wms/gen", "wms.asn.received", asn["id"], asn)
            if i >= len(kinds) and rng.random() < 0.25:
                continue  # not received yet
            received_at = asn_at + timedelta(hours=rng.uniform(1, 8))
            kind = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds)
            lines = []
            for ln in asn_lines:
                qty, lot, damaged = ln["qty"], ln["lot"], 0
                if kind == "short":
                    qty = max(0, qty - rng.randint(1, max(1, qty // 5)))
                elif kind == "over":
                    qty += rng.randint(1, 5)
                elif kind == "wrong_lot":
                    lot = f"L-{rng.randint(100, 199)}"
                elif kind == "damaged":
                    damaged = rng.randint(1, max(1, qty // 10))
                lines.append({"po_line": ln["po_line"], "sku": ln["sku"], "qty": qty, "lot": lot, "damaged": damaged})
            receipt = {
                "id": f"GR-{7001 + i}",
                "po_id": po["id"],
                "asn_id": asn["id"],
                "node": po["node"],
                "received_at": _ts(received_at),
                "lines": lines,
            }
            self._event(received_at, "wms/gen", "wms.receipt.posted", receipt["id"], receipt)

    # ------------------------------------------------------------------ exceptions & clock

    def exceptions(self) -> None:
        rng = self.rng
        by_key: dict[str, list[dict[str, Any]]] = {}
        for rec in self.stock_records:
            if rec["on_hand"] > 0:
                by_key.setdefault(rec["sku"], []).append(rec)
        picks = [o for o in self.order_list if any(ln["sku"] in by_key for ln in o["lines"])]
        count = max(2, len(self.order_list) // 30)
        for i, order in enumerate(rng.sample(picks, min(count, len(picks)))):
            line = next(ln for ln in order["lines"] if ln["sku"] in by_key)
            rec = rng.choice(by_key[line["sku"]])
            reason = "short_pick" if rng.random() < 0.75 else rng.choice(["damaged", "location_locked", "not_found"])
            at = datetime.fromisoformat(order["created"]) + timedelta(minutes=rng.randint(30, 120))
            expected = line["qty"]
            self._event(
                at,
                "wms/gen",
                "wms.task.exception",
                f"TASK-{i + 1}",
                {
                    "task_id": f"TASK-{i + 1}",
                    "node": rec["node"],
                    "sku": line["sku"],
                    "reason": reason,
                    "order_id": order["id"],
                    "location": rec["location"],
                    "expected_qty": expected,
                    "found_qty": rng.randint(0, max(0, int(expected) - 1)),
                },
            )
        for _ in range(max(1, len(self.stock_records) // 150)):
            rec = rng.choice(self.stock_records)
            delta = rng.choice([-3, -2, -1, 2]) if rec["on_hand"] >= 3 else 2
            self._event(
                self._moment(2, 22),
                "wms/gen",
                "wms.inventory.adjusted",
                f"{rec['sku']}@{rec['node']}",
                {
                    "node": rec["node"],
                    "sku": rec["sku"],
                    "qty_delta": delta,
                    "location": rec["location"],
                    "reason": "cycle_count",
                },
            )
        for _ in range(max(1, len(self.book) // 200)):
            rec = rng.choice(self.book)
            self._event(
                self._moment(2, 22),
                "erp/gen",
                "erp.inventory.posted",
                f"{rec['sku']}@{rec['node']}",
                {
                    "node": rec["node"],
                    "sku": rec["sku"],
                    "qty_delta": rng.choice([-2, -1, 1, 3]),
                    "movement_type": "701",
                    "document_id": f"MAT-{rng.randint(4900000000, 4999999999)}",
                    "posted_at": _ts(self._moment(2, 22)),
                },
            )
        node = rng.choice(self.warehouses)
        zone = node["zones"][0]
        self._event(
            self._moment(3, 12),
            "wms/gen",
            "wms.capacity.changed",
            f"{node['id']}/{zone['id']}",
            {
                "node": node["id"],
                "zone": zone["id"],
                "pick_capacity_per_hour": int(zone["pick_capacity_per_hour"] * 0.6),
            },
        )
        for order in rng.sample(self.order_list, max(1, len(self.order_list) // 60)):
            at = datetime.fromisoformat(order["created"]) + timedelta(minutes=rng.randint(10, 90))
            reason_type = rng.choice(["oms.order.cancelled", "oms.payment.failed"])
            reason = "customer request" if reason_type == "oms.order.cancelled" else "card declined"
            self._event(at, "oms/gen", reason_type, order["id"], {"order_id": order["id"], "reason": reason})
        for hour in range(2, 25, 2):
            now = self.start + timedelta(hours=hour)
            self._event(now, "crossdock/clock", "crossdock.tick", "tick", {"now": _ts(now)})

    def demand_history(self) -> list[dict[str, Any]]:
        rng = self.rng
        out = []
        held = {(b["node"], b["sku"]) for b in self.book}
        for node in self.warehouses:
            for sku in self.skus:
                if (node["id"], sku["id"]) not in held:
                    continue
                mean = self.demand.get(sku["id"], 0) / len(self.warehouses)
                if mean <= 0 and rng.random() < 0.8:
                    continue
                for day in range(7, 0, -1):
                    qty = max(0, round(rng.gauss(mean, max(1.0, mean * 0.3))))
                    out.append(
                        {
                            "node": node["id"],
                            "sku": sku["id"],
                            "date": (self.start.date() - timedelta(days=day)).isoformat(),
                            "qty": qty,
                        }
                    )
        return out

    # ------------------------------------------------------------------ helpers

    def _moment(self, from_hour: float, to_hour: float) -> datetime:
        return self.start + timedelta(seconds=int(self.rng.uniform(from_hour * 3600, to_hour * 3600)))

    def _event(self, at: datetime, source: str, type_: str, subject: str, data: dict[str, Any]) -> None:
        self.events.append(
            (
                at,
                len(self.events),
                {
                    "specversion": "1.0",
                    "id": "",
                    "source": source,
                    "type": type_,
                    "time": _ts(at),
                    "subject": subject,
                    "datacontenttype": "application/json",
                    "data": data,
                },
            )
        )

    def build(self) -> dict[str, Any]:
        self.network()
        self.catalogue()
        self.orders()
        self.stock()
        self.supply()
        self.inbound()
        self.exceptions()
        events = []
        for n, (_, _, event) in enumerate(sorted(self.events, key=lambda e: (e[0], e[1])), start=1):
            event["id"] = f"evt-{n:06d}"
            events.append(event)
        return {
            "scenario": self.name,
            "start": _ts(self.start),
            "settings": {
                "receipt_tolerance_pct": 2.0,
                "review_cost_above": 500.0,
                "review_confidence_below": 0.8,
                # Every workflow named: one left out would run in observe mode (the default).
                "modes": {
                    "order_release": "autonomous",
                    "allocation": "autonomous",
                    "reconciliation": "propose",
                    "discrepancy": "autonomous",
                    "exception_triage": "autonomous",
                    "backorder_prevention": "propose",
                    "customer_service": "autonomous",
                },
            },
            "nodes": self.nodes,
            "lanes": self.lanes,
            "transfer_lanes": self.transfer_lanes,
            "skus": self.skus,
            "wms": {"stock": self.stock_records},
            "erp": {
                "book_stock": self.book,
                "in_transit": self.in_transit,
                "purchase_orders": [po for po in self.purchase_orders if po not in self.new_pos],
                "credit_holds": self.credit_holds,
                "demand_history": self.demand_history(),
            },
            "oms": {"customers": self.customers, "orders": [], "allocations": []},
            "asns": [],
            "receipts": [],
            "events": events,
        }


def generate(seed: int, size: Size = "small") -> dict[str, Any]:
    """A scenario document (scenario.md shape) for ``seed`` and ``size``; same inputs, same output."""
    return _Builder(seed, size).build()
