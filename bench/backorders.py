"""Backorder-prevention benchmark: planted looming stockouts, SBA forecast, priced transfers.

The network (warehouses, transfer lanes, unit costs) comes from ``twin.generator.generate(seed,
size)``. Around it, each **pair** (a SKU at a warehouse; one synthetic SKU per pair so pairs do
not interact) gets a demand process with ``random.Random(seed)``: a day has demand with
probability ``π`` (intermittent: 0.25–1.0) and then a size around a mean. 28 days of history are
drawn from it; the **future** 14 days are drawn from the same process and kept hidden. Stock is
planted as 1–20 days of cover, so some pairs run out within the horizon and some do not; some
have a PO arriving after the stockout (an expedite candidate), and another warehouse holds an
excess of the SKU for most pairs (a transfer candidate).

Ground truth: the true stockout date is the first day the hidden demand takes the stock (plus
receipts) below zero. The engine sees only the history, the stock and the supply:
``prescribe`` runs directly (pure, no HTTP), its proposals go through the real governance gate
(the scenario's thresholds, ``backorder_prevention`` autonomous). A stockout is **prevented**
when the proposed transfer, replayed against the hidden demand, keeps the stock at or above
zero until the next supply (or the horizon); **announced** when Crossdock flagged the pair at
least 2 days before the true stockout. ``false_alarms`` are flagged pairs that do not run out.

The reactive baseline acts when the shelf is empty: nothing prevented, nothing announced, and
the margin on every unit short is lost. A second tick with the created transfers counted as
supply checks that no transfer is proposed twice.
"""

from __future__ import annotations

import platform
import random
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from domain.engines.forecast import (
    HORIZON_DAYS,
    MARGIN_SHARE,
    OpenPoLine,
    Position,
    Receipt,
    SkuNetwork,
    prescribe,
    sba_rate,
)
from domain.governance import gate
from domain.models import Scenario
from twin.generator import Size, generate

NOW = datetime(2026, 3, 21, 6, 0, tzinfo=UTC)
HISTORY_DAYS = 28


@dataclass
class _Pair:
    sku: str
    node: str
    unit_cost: float
    history: list[float]
    future: list[float]
    start: float
    receipts: list[Receipt]
    net: SkuNetwork


def _demand(rng: random.Random, p: float, mean: float, days: int) -> list[float]:
    return [float(max(1, round(rng.gauss(mean, mean * 0.3)))) if rng.random() < p else 0.0 for _ in range(days)]


def _true_stockout(
    start: float, receipts: list[Receipt], future: list[float], today: date
) -> tuple[date | None, float]:
    """First day the hidden demand takes stock below zero, and the units short before the next supply."""
    level = start
    out: date | None = None
    worst = 0.0
    for d, qty in enumerate(future):
        day = today + timedelta(days=d)
        level += sum(r.qty for r in receipts if (r.when <= day if d == 0 else r.when == day))
        if out is not None and any(r.when == day for r in receipts) and level >= 0:
            break
        level -= qty
        if level < 0:
            out = out or day
            worst = min(worst, level)
    return out, -worst


def build_pairs(seed: int = 7, pairs: int = 200, size: Size = "medium") -> tuple[list[_Pair], Scenario]:
    scenario = Scenario.model_validate(generate(seed, size))
    rng = random.Random(seed * 104729 + pairs)
    warehouses = [n.id for n in scenario.nodes if n.type == "warehouse"]
    lanes = list(scenario.transfer_lanes)
    costs = [s.unit_cost for s in scenario.skus]
    today = NOW.date()
    out = []
    for i in range(pairs):
        node = rng.choice(warehouses)
        sku = f"FC-{i:05d}"
        p = rng.uniform(0.25, 1.0)
        mean = rng.uniform(2.0, 12.0)
        history = _demand(rng, p, mean, HISTORY_DAYS)
        future = _demand(rng, p, mean, HORIZON_DAYS)
        rate = p * mean
        cover = rng.uniform(1.0, 20.0)
        on_hand = float(round(rate * cover))
        reserved = float(min(on_hand, round(rng.uniform(0, 1) * rate)))
        receipts: list[Receipt] = []
        po_lines: list[OpenPoLine] = []
        if rng.random() < 0.5:
            when = today + timedelta(days=rng.randint(int(cover) + 1, int(cover) + 8))
            qty = float(round(rate * 20))
            receipts.append(Receipt(when, qty, f"purchase_order PO-{i}"))
            po_lines.append(OpenPoLine(f"PO-{i}", 10, node, qty, when))
        positions = {
            node: Position(node=node, on_hand=on_hand, locked=0.0, reserved=reserved, rate=0.0, receipts=receipts)
        }
        if rng.random() < 0.7:
            src = rng.choice([w for w in warehouses if w != node])
            src_rate = rng.uniform(0.0, 2.0)
            positions[src] = Position(
                node=src,
                on_hand=float(round(src_rate * HORIZON_DAYS + rate * rng.uniform(5, 25))),
                locked=0.0,
                reserved=0.0,
                rate=src_rate,
                safety_stock=float(rng.randint(0, 10)),
            )
        net = SkuNetwork(
            sku=sku, unit_cost=rng.choice(costs), positions=positions, transfer_lanes=lanes, po_lines=po_lines
        )
        out.append(_Pair(sku, node, net.unit_cost, history, future, on_hand - reserved, receipts, net))
    return out, scenario


def run_backorder_bench(seed: int = 7, pairs: int = 200, size: Size = "medium") -> dict[str, Any]:
    """Plant ``pairs`` SKU@node positions, forecast and prescribe, score against the hidden future."""
    items, scenario = build_pairs(seed, pairs, size)
    policy = scenario.settings.model_copy(
        update={"modes": {**scenario.settings.modes, "backorder_prevention": "autonomous"}}
    )
    today = NOW.date()
    stockouts = prevented = announced = announced_2d = false_alarms = 0
    announceable = announceable_hit = 0
    transfers = auto_transfers = reproposed = 0
    transfer_cost = 0.0
    lost_margin_base = lost_margin_xd = 0.0
    lead_days: list[int] = []
    times: list[float] = []
    outcomes: dict[str, int] = {}
    for pair in items:
        rate = sba_rate(pair.history)
        sigma = statistics.pstdev(pair.history)
        positions = dict(pair.net.positions)
        positions[pair.node] = Position(**{**positions[pair.node].__dict__, "rate": rate, "sigma": sigma})
        net = SkuNetwork(pair.sku, pair.unit_cost, positions, pair.net.transfer_lanes, pair.net.po_lines)
        started = time.perf_counter()
        proposals = [p for p in prescribe(net, NOW) if p.subject == f"{pair.sku}@{pair.node}"]
        times.append((time.perf_counter() - started) * 1000)
        for p in proposals:
            outcomes[p.outcome] = outcomes.get(p.outcome, 0) + 1
        true_out, true_short = _true_stockout(pair.start, pair.receipts, pair.future, today)
        margin_unit = MARGIN_SHARE * pair.unit_cost
        transfer = next((p for p in proposals if p.outcome == "transfer_proposed"), None)
        extra: list[Receipt] = []
        if transfer is not None:
            transfers += 1
            transfer_cost += transfer.cost_impact
            auto_transfers += gate(transfer, policy).status == "executed"
            a = transfer.actions[0].payload
            extra = [Receipt(date.fromisoformat(a["eta"]), float(a["qty"]), "transfer")]
            # The next tick sees the transfer as supply: it must not propose it again.
            again_positions = dict(positions)
            dst = positions[pair.node]
            again_positions[pair.node] = Position(**{**dst.__dict__, "receipts": [*dst.receipts, *extra]})
            src = positions[a["from"]]
            again_positions[a["from"]] = Position(**{**src.__dict__, "outgoing": src.outgoing + float(a["qty"])})
            again = SkuNetwork(pair.sku, pair.unit_cost, again_positions, net.transfer_lanes, net.po_lines)
            reproposed += sum(p.outcome == "transfer_proposed" for p in prescribe(again, NOW + timedelta(hours=2)))
        flagged = bool(proposals)
        if true_out is None:
            false_alarms += flagged
            continue
        stockouts += 1
        lost_margin_base += true_short * margin_unit
        after, short_after = _true_stockout(pair.start, [*pair.receipts, *extra], pair.future, today)
        lost_margin_xd += short_after * margin_unit
        if extra and after is None:
            prevented += 1
        if flagged:
            announced += 1
            lead = (true_out - today).days
            lead_days.append(lead)
            announced_2d += lead >= 2
        if (true_out - today).days >= 2:
            announceable += 1
            announceable_hit += (extra != [] and after is None) or flagged
        outcomes["_prevented_or_announced_2d"] = outcomes.get("_prevented_or_announced_2d", 0) + (
            (extra != [] and after is None) or (flagged and (true_out - today).days >= 2)
        )
    hits = outcomes.pop("_prevented_or_announced_2d", 0)
    rate_2d = round(hits / stockouts, 4) if stockouts else 0.0
    crossdock: dict[str, Any] = {
        "planted_stockouts": stockouts,
        "prevented": prevented,
        "announced": announced,
        "announced_ge_2_days_ahead": announced_2d,
        "prevented_or_announced_2d": hits,
        "prevented_or_announced_2d_rate": rate_2d,
        "stockouts_2_or_more_days_out": announceable,
        "prevented_or_announced_rate_of_those": round(announceable_hit / announceable, 4) if announceable else 0.0,
        "false_alarms": false_alarms,
        "transfers_proposed": transfers,
        "transfers_auto_executed": auto_transfers,
        "transfer_cost": round(transfer_cost, 2),
        "lost_margin": round(lost_margin_xd, 2),
        "transfers_reproposed_next_tick": reproposed,
        "lead_days_median": statistics.median(lead_days) if lead_days else None,
        "proposals_by_outcome": outcomes,
        "prescribe_ms_p50": round(statistics.median(times), 3) if times else 0.0,
    }
    baseline = {
        "planted_stockouts": stockouts,
        "prevented": 0,
        "announced_ge_2_days_ahead": 0,
        "transfer_cost": 0.0,
        "lost_margin": round(lost_margin_base, 2),
    }
    return {
        "bench": "backorders",
        "seed": seed,
        "size": size,
        "pairs": pairs,
        "method": "SBA (Syntetos-Boylan approximation of Croston), alpha 0.1",
        "horizon_days": HORIZON_DAYS,
        "driven": "pure engine (prescribe) + governance gate; no HTTP, no queue",
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "goals": {
            "prevented_or_announced_2d_ge_80pct": rate_2d >= 0.8,
            "no_transfer_reproposed": reproposed == 0,
        },
        "baseline": baseline,
        "crossdock": crossdock,
    }
