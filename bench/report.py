"""The scenario report (``shared/contracts/report.md``): decisions, final state and KPIs.

KPI definitions, where the contract leaves room:

- ``on_time_ship_rate``: share of *all* order lines that are fully allocated and whose every
  allocation ships at the node's first carrier cutoff after the order was created, no
  later than ``ship_by`` (an unallocated line is not on time). The carrier is the order's
  when the node offers it, else the node's earliest (``domain.engines.clock.ship_carrier``).
  A line with an oversold allocation (reserved against stock the node did not have) is not
  on time: it cannot ship.
- ``units_allocated``, ``fulfilment_cost_per_unit`` (extensions): units reserved and cost per
  unit, because a policy that reserves fewer units also spends less in total.
- ``split_shipments``: orders served from more than one node or with a line served from
  more than one node (each order counted once).
- ``auto_resolved_rate``: of the decisions in exception/discrepancy/reconciliation
  workflows, the share executed with no human; 0.0 when there were none.
- ``decision_latency_ms``: event accepted by the API → decision recorded, over all decisions.
- ``orders_missing_cutoff`` (extension): orders with stock reserved at a node whose next carrier
  cutoff after the order was created falls after ``ship_by``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from domain.decisions import Decision
from domain.engines.clock import ship_carrier
from domain.models import Order, Scenario
from domain.report import Report

EXCEPTION_WORKFLOWS = {"exception_triage", "discrepancy", "reconciliation"}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    # Nearest rank is ceil(q/100 · n); round(x + 0.5) rounds half to even and overshoots.
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered) - 1e-9)))
    return ordered[rank - 1]


def decision_latency_ms(d: Decision) -> float | None:
    """Its event accepted → the decision recorded, in ms (None when the decision was not timed)."""
    if d.accepted_at and d.decided_at:
        return max(0.0, (d.decided_at - d.accepted_at).total_seconds() * 1000)
    return None


def latency_ms(decisions: list[Decision]) -> list[float]:
    return [ms for ms in map(decision_latency_ms, decisions) if ms is not None]


def scenario_orders(scenario: Scenario) -> dict[str, Order]:
    """Every order the scenario knows: the OMS snapshot and the ``oms.order.created`` events."""
    orders = {o.id: o for o in scenario.oms.orders}
    for raw in scenario.events:
        if raw.get("type") == "oms.order.created" and isinstance(raw.get("data"), dict):
            try:
                order = Order.model_validate(raw["data"])
            except ValueError:
                continue
            orders.setdefault(order.id, order)
    return orders


def kpis(scenario: Scenario, decisions: list[Decision], final_state: dict[str, Any]) -> dict[str, Any]:
    orders = scenario_orders(scenario)
    nodes = {n.id: n for n in scenario.nodes}
    lane_cost = {(ln.from_node, ln.to_region): ln.cost_per_unit for ln in scenario.lanes}
    transfer_cost = {(t.from_node, t.to_node): t.cost_per_unit for t in scenario.transfer_lanes}
    state_orders = final_state.get("oms", {}).get("orders", [])

    oversells = final_state.get("oversells", {})
    # A line allocated against stock that is not there cannot ship, on time or at all.
    oversold = {(o.get("order_id"), o.get("line")) for o in oversells.get("events", [])}
    n_lines = on_time = splits = backorders = held = missing_cutoff = 0
    cost = units = 0.0
    for rec in state_orders:
        order = orders.get(rec["id"])
        order_nodes: set[str] = set()
        line_split = False
        for line in rec["lines"]:
            n_lines += 1
            allocs = line.get("allocations", [])
            order_nodes |= {a["node"] for a in allocs}
            line_split |= len({a["node"] for a in allocs}) > 1
            if line.get("backordered", 0) > 0:
                backorders += 1
            region = order.region if order else ""
            cost += sum(lane_cost.get((a["node"], region), 0.0) * a["qty"] for a in allocs)
            units += sum(a["qty"] for a in allocs)
            if (rec["id"], line["line"]) in oversold:
                continue
            if order and sum(a["qty"] for a in allocs) + 1e-9 >= line["qty"] and allocs:
                on_time += all(_ships_on_time(order, nodes.get(a["node"])) for a in allocs)
        splits += len(order_nodes) > 1 or line_split
        held += rec.get("status") == "held"
        if order and order_nodes and not all(_ships_on_time(order, nodes.get(n)) for n in order_nodes):
            missing_cutoff += 1
    for t in final_state.get("wms", {}).get("transfers", []):
        cost += transfer_cost.get((t.get("from"), t.get("to")), 0.0) * float(t.get("qty", 0))

    exceptions = [d for d in decisions if d.workflow in EXCEPTION_WORKFLOWS]
    auto = [d for d in exceptions if d.status == "executed" and not d.human_review_required]
    lat = latency_ms(decisions)
    return {
        "orders": len(state_orders),
        "lines": n_lines,
        "oversells": int(oversells.get("count", 0)),
        "split_shipments": splits,
        "on_time_ship_rate": round(on_time / n_lines, 4) if n_lines else 0.0,
        "fulfilment_cost": round(cost, 2),
        # Extensions: units reserved, and cost per unit (a policy that reserves less spends less).
        "units_allocated": round(units, 4),
        "fulfilment_cost_per_unit": round(cost / units, 4) if units else 0.0,
        "backorders": backorders,
        "held_orders": held,
        # Extension: orders with stock reserved at a node whose next cutoff is after ship_by.
        "orders_missing_cutoff": missing_cutoff,
        "auto_resolved_rate": round(len(auto) / len(exceptions), 4) if exceptions else 0.0,
        "pending_review": sum(d.status in ("pending_review", "awaiting_planner") for d in decisions),
        "superseded": sum(d.status == "superseded" for d in decisions),
        "stale_approvals": sum((d.review or {}).get("kind") == "stale" for d in decisions),
        "decision_latency_ms": {"p50": round(percentile(lat, 50), 2), "p99": round(percentile(lat, 99), 2)},
    }


def _ships_on_time(order: Order, node: Any) -> bool:
    if node is None or order.created is None:
        return False
    if order.ship_by is None:
        return True
    ships = ship_carrier(node, order.carrier, order.created)
    if ships is None:
        return False
    ships_at: datetime = ships[1]
    ship_by = order.ship_by if order.ship_by.tzinfo else order.ship_by.replace(tzinfo=UTC)  # contract times are UTC
    return ships_at <= ship_by


def _settled(decision: Decision) -> Decision:
    """A decision whose execution never finished (its job died) is reported as failed, honestly."""
    if decision.status != "executing":
        return decision
    return decision.model_copy(update={"status": "failed", "error": decision.error or "execution did not finish"})


def build_report(
    scenario: Scenario, policy: str, decisions: list[Decision], final_state: dict[str, Any]
) -> dict[str, Any]:
    contract_state = {
        "oms": final_state.get("oms", {"orders": []}),
        "wms": final_state.get("wms", {}),
        "erp": final_state.get("erp", {}),
        # Extensions beyond the contract: what reached people, and every oversell moment.
        "notify": {"tickets": final_state.get("tickets", [])},
        "oversells": final_state.get("oversells", {"count": 0, "events": []}),
    }
    report = {
        "scenario": scenario.scenario,
        "policy": policy,
        "decisions": [_settled(d).report_dict() for d in decisions],
        "final_state": contract_state,
        "kpis": kpis(scenario, decisions, final_state),
    }
    Report.model_validate(report)  # the contract is checked on every report we write
    return report
