"""Backorder prevention on ``crossdock.tick``: forecast, project and prescribe for every SKU@node.

``backorder_proposals(systems, now, policy)`` is called by the tick specialist. It reads the
ERP demand history (the optional ``DemandHistoryReader`` port; without it the forecast is
zero and only reserved stock can run out), the open reservations (OMS), stock (WMS), planned
supply and open PO lines (ERP) and the transfers already created (the optional
``WmsTransferReader``: they count as supply, so a transfer is never proposed twice), then lets
``domain.engines.forecast`` predict stockouts and price the remedies.

Every SKU is read at once (issue 20): one ERP read for the material masters and planned supply
(``connectors.ports.books_of``), one WMS read for the stock (``stock_of``) and one for the
transfers, where four or five reads per SKU made the tick's sweeps most of its time. An adapter
without the bulk reads (Tryton, a gateway answering 404) is read per SKU by those helpers.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime, timedelta

from connectors.ports import DemandHistoryReader, WmsTransferReader, stock_of
from domain.decisions import Proposal
from domain.engines.clock import as_utc
from domain.engines.forecast import (
    HORIZON_DAYS,
    OpenPoLine,
    Position,
    Receipt,
    SkuNetwork,
    TransferView,
    daily_series,
    prescribe,
    sba_rate,
)
from domain.models import DemandPoint, Policy
from tools.context import RESERVING, Systems, known_books

TRANSIT_STATUSES = frozenset({"created", "in_transit", "shipped"})


def backorder_proposals(
    systems: Systems, now: datetime, policy: Policy | None = None, horizon: int = HORIZON_DAYS
) -> list[Proposal]:
    """Stockout-prevention proposals for every SKU with demand history or open reservations."""
    now = as_utc(now)
    today = now.date()
    history: list[DemandPoint] = []
    if isinstance(systems.erp, DemandHistoryReader):
        history = systems.erp.demand_history()
    by_pair: dict[tuple[str, str], list[DemandPoint]] = defaultdict(list)
    for d in history:
        by_pair[(d.sku, d.node)].append(d)
    reserved_skus = {
        ln.substituted_by or ln.sku
        for v in systems.oms.orders(RESERVING)
        for ln in v.lines
        if any(a.qty > 0 for a in ln.allocations)
    }
    skus = sorted({sku for sku, _ in by_pair} | reserved_skus)
    network = systems.oms.network()
    lanes = {(ln.from_node, ln.to_node): ln for ln in network.transfer_lanes}
    po_lines_by_sku: dict[str, list[tuple[str, int, str, float]]] = defaultdict(list)
    for po in systems.erp.open_purchase_orders():
        for ln in po.po.lines:
            if ln.line in po.closed_lines:
                continue
            left = ln.qty - po.received.get(ln.line, 0.0)
            if left > 0:
                po_lines_by_sku[ln.sku].append((po.po.id, ln.line, po.po.node, left))
    books = known_books(systems, skus)  # an unknown SKU (no material record) is skipped
    stock_by_sku = stock_of(systems.wms, list(books))
    transfers_by_sku: dict[str, list[TransferView]] = defaultdict(list)
    if books and isinstance(systems.wms, WmsTransferReader):
        for t in systems.wms.transfers():
            if t.sku in books and t.status in TRANSIT_STATUSES:
                transfers_by_sku[t.sku].append(t)
    out: list[Proposal] = []
    for sku, b in books.items():
        info, supply, transfers = b.info, b.supply, transfers_by_sku[sku]
        assert info is not None
        stock = {s.node: s for s in stock_by_sku[sku]}
        receipts: dict[str, list[Receipt]] = defaultdict(list)
        po_lines: list[OpenPoLine] = []
        for s in supply:
            when = s.date or today + timedelta(days=horizon)
            receipts[s.node].append(Receipt(when, s.qty, f"{s.kind} {s.id}"))
            if s.kind == "purchase_order":
                match = next((x for x in po_lines_by_sku[sku] if x[0] == s.id and x[2] == s.node), None)
                if match is not None:
                    po_lines.append(OpenPoLine(s.id, match[1], s.node, s.qty, s.date))
        outgoing: dict[str, float] = defaultdict(float)
        for t in transfers:
            lane = lanes.get((t.from_node, t.to_node))
            eta = t.eta or today + timedelta(days=lane.transit_days if lane else 0)
            receipts[t.to_node].append(Receipt(eta, t.qty, f"transfer {t.id}"))
            outgoing[t.from_node] += t.qty
        nodes = set(stock) | {n for (s, n) in by_pair if s == sku}
        positions = {}
        for node in sorted(nodes):
            ns = stock.get(node)
            series = daily_series(by_pair.get((sku, node), []), today)
            rate = sba_rate(series)
            positions[node] = Position(
                node=node,
                on_hand=ns.on_hand if ns else 0.0,
                locked=ns.locked if ns else 0.0,
                reserved=ns.allocated if ns else 0.0,
                rate=rate,
                safety_stock=info.safety_stock.get(node, 0.0),
                receipts=sorted(receipts.get(node, []), key=lambda r: (r.when, r.source)),
                outgoing=outgoing.get(node, 0.0),
                sigma=statistics.pstdev(series) if len(series) > 1 else 0.0,
            )
        net = SkuNetwork(
            sku=sku,
            unit_cost=info.unit_cost,
            positions=positions,
            transfer_lanes=list(network.transfer_lanes),
            po_lines=po_lines,
        )
        out.extend(prescribe(net, now, horizon))
    return out
