"""Allocation (sourcing) engine: which node serves which order line — pure and deterministic.

Two paths share one cost model:

* ``optimise`` — the batch optimiser. The batch is a transportation problem solved as a
  min-cost flow (OR-Tools ``SimpleMinCostFlow``): each line supplies its quantity; it can
  flow to a (sku, node) bucket of *free* stock, to a bucket of *safety* stock (express
  orders and gold customers only) or to an "unfilled" arc. Arc cost per unit is the lane
  cost, plus the late penalty spread over the line's units when the node's next carrier
  cutoff falls after the line's ship-by time, plus the substitution penalty when the
  bucket holds a substitute SKU (the k-th listed substitute costs k penalties, so the first
  substitute with stock wins a tie). Identical splittable lines share one flow node. When
  the flow optimum sends an order that may not split to several nodes, those orders are placed
  first (one node each, chosen on cost plus what the stock taken is worth to the other lines:
  the flow optimum's bucket duals) and the flow is re-solved for the rest; otherwise the
  optimum is kept and only split lines are repaired. A plan that is not provably optimal is
  compared with the greedy plan, whose run stops as soon as a dual bound shows it cannot be
  cheaper. A small batch (up to ``POLISH_LINES`` lines) with one-node orders is then polished
  by the exact MIP of ``allocation_exact`` (its root node, in what is left of a budget of 1 s
  of CPU time), started from that plan; the MIP's plan is kept only if it is cheaper.
* ``greedy`` — the real-time path for one order, O(lines × nodes).

With ``Penalties.split_only_for_service`` (the policy's rule, on for releases) both paths split
an order only for service: when one node serves it as well (as many units, as few late lines,
as few substitutes) the order ships from that node whatever the lanes cost, and a split reuses
the order's nodes before it adds one.

``certify`` solves the same transportation LP with GLOP (``pywraplp``) so a benchmark can
check the flow optimum against a second solver; ``allocation_exact.exact`` solves the whole
problem, split rules included, so it can measure the plan's true gap.

Costs: money per unit for lanes; ``Penalties`` for late lines, splits, unfilled units and
substitution. Nothing here does I/O; equal costs are broken by node id.
"""

from __future__ import annotations

import bisect
import copy
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import numpy.typing as npt
from ortools.graph.python import min_cost_flow
from ortools.linear_solver import pywraplp

from domain.context import BookPosition, Network, NodeStock, SkuInfo
from domain.engines.clock import as_utc, ship_carrier
from domain.models import Lane

ENGINE_VERSION = "allocation/1.0.0"

Priority = Literal["standard", "express"]
Tier = Literal["standard", "gold"]
LineKey = tuple[str, int]

POLISH_LINES = 400  # batches up to this many lines get the exact MIP polish (see optimise)
POLISH_BUDGET_S = 1.0  # optimise's budget in CPU seconds (on an idle core, wall seconds); the polish gets what is left
POLISH_NODES = 1  # branch-and-bound nodes of the polish: the root (presolve, LP, cuts, heuristics)
COST_SCALE = 1_000_000  # integer cost units per money unit, for the integral min-cost flow
_EPS = 1e-9

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
_NO_NODES: set[str] = set()


# --- public shapes --------------------------------------------------------------------


@dataclass(frozen=True)
class AllocLine:
    """One open order line to source."""

    order_id: str
    line: int
    sku: str
    qty: float
    region: str
    priority: Priority = "standard"
    tier: Tier = "standard"
    created: datetime | None = None
    ship_by: datetime | None = None
    carrier: str | None = None
    allow_split: bool = True  # may the line / its order be served from more than one node
    allow_substitution: bool = False
    substitutes: list[str] = field(default_factory=list)  # best first

    def __post_init__(self) -> None:
        if not (math.isfinite(self.qty) and self.qty > 0):
            raise ValueError(f"{self.order_id} line {self.line}: qty must be a positive number, got {self.qty!r}")

    @property
    def key(self) -> LineKey:
        return (self.order_id, self.line)

    @property
    def privileged(self) -> bool:
        """Express orders and gold customers may use safety stock."""
        return self.priority == "express" or self.tier == "gold"


@dataclass(frozen=True)
class NodeStockView:
    """Stock of one SKU at one node: ``usable`` any line may take; ``safety`` only express/gold lines."""

    node: str
    sku: str
    usable: float
    safety: float = 0.0

    def __post_init__(self) -> None:
        if not (self.usable >= 0 and self.safety >= 0 and math.isfinite(self.usable) and math.isfinite(self.safety)):
            raise ValueError(f"{self.sku}@{self.node}: stock must be finite and non-negative")


@dataclass(frozen=True)
class Penalties:
    split: float = 5.0  # per extra node used by an order line
    late: float = 25.0  # per late line (spread over its units)
    unfilled: float = 1000.0  # per unit left unfilled
    substitution: float = 1.0  # per substituted unit (×k for the k-th listed substitute)
    priority_factor: float = 2.0  # unfilled units of express/gold lines cost this many times more
    # A rule, not a price: an order is split over nodes only when no single node serves it as
    # well (as many units, as few late lines, as few substitutes); a cheaper lane alone never
    # buys a second parcel. Off here (the cost model the benchmarks and the exact MIP share);
    # the policy's ``split_only_for_service`` (on by default) turns it on for releases.
    split_only_for_service: bool = False


# Ranks single nodes by service before cost: an unfilled unit outweighs any late line, a late
# line outweighs a substitute, a substitute outweighs a lane (``_single_for_service``).
_SERVICE_FIRST = Penalties(late=1e6, unfilled=1e9, substitution=1e3, priority_factor=1.0)


@dataclass(frozen=True)
class Assignment:
    order_id: str
    line: int
    node: str
    sku: str
    qty: float
    late: bool
    used_safety: bool
    safety_qty: float = 0.0


@dataclass(frozen=True)
class CostBreakdown:
    shipping: float = 0.0
    late: float = 0.0
    split: float = 0.0
    unfilled: float = 0.0
    substitution: float = 0.0

    @property
    def total(self) -> float:
        return self.shipping + self.late + self.split + self.unfilled + self.substitution


@dataclass(frozen=True)
class SolverStats:
    solver: str
    status: str
    wall_ms: float
    arcs: int = 0
    nodes: int = 0
    splits: int = 0  # lines served from more than one node in the final plan
    repaired: int = 0  # orders / lines moved by the split repair
    lower_bound: float | None = None  # the flow (LP) optimum before split rules: no plan costs less
    phases_ms: dict[str, float] = field(default_factory=dict)  # wall time per phase (build, solve, ...)


@dataclass(frozen=True)
class AllocationPlan:
    assignments: list[Assignment]
    unfilled: dict[LineKey, float]
    substitutions: dict[LineKey, str]
    cost: CostBreakdown
    evidence: dict[LineKey, str]
    stats: SolverStats

    @property
    def objective(self) -> float:
        return self.cost.total

    @property
    def flow_objective(self) -> float | None:
        return self.stats.lower_bound

    def substituted_by(self, order_id: str, line: int) -> str | None:
        return self.substitutions.get((order_id, line))


def stock_views(
    stock: Iterable[NodeStock], book: Iterable[BookPosition], skus: Iterable[SkuInfo]
) -> list[NodeStockView]:
    """WMS pickable less ERP blocks the WMS does not mirror; safety stock split off.

    usable = max(0, pickable − max(0, erp_blocked − wms_locked)); safety = min(safety_stock,
    usable); the view's ``usable`` is what is left for any line (usable − safety).
    """
    blocked: dict[tuple[str, str], float] = defaultdict(float)
    for b in book:
        blocked[(b.node, b.sku)] += b.blocked
    safety_of = {s.id: s.safety_stock for s in skus}
    views = []
    for ns in sorted(stock, key=lambda s: (s.sku, s.node)):
        unmirrored = max(0.0, blocked.get((ns.node, ns.sku), 0.0) - ns.locked)
        usable = max(0.0, ns.pickable - unmirrored)
        safety = min(max(0.0, safety_of.get(ns.sku, {}).get(ns.node, 0.0)), usable)
        views.append(NodeStockView(node=ns.node, sku=ns.sku, usable=usable - safety, safety=safety))
    return views


# --- shared network view ----------------------------------------------------------------


class _Net:
    """Lanes, stock and carrier cutoffs, indexed for fast look-ups."""

    def __init__(self, stock: Iterable[NodeStockView], network: Network, now: datetime) -> None:
        self.now = as_utc(now)
        self.nodes = {n.id: n for n in network.nodes}
        self.lanes: dict[tuple[str, str], Lane] = {}
        for ln in network.lanes:
            known = self.lanes.get((ln.from_node, ln.to_region))
            if known is None or (ln.cost_per_unit, ln.transit_days) < (known.cost_per_unit, known.transit_days):
                self.lanes[(ln.from_node, ln.to_region)] = ln
        self.free: dict[tuple[str, str], float] = defaultdict(float)  # (sku, node)
        self.safety: dict[tuple[str, str], float] = defaultdict(float)
        for v in stock:
            self.free[(v.sku, v.node)] += v.usable
            self.safety[(v.sku, v.node)] += v.safety
        ids = sorted(set(self.nodes) | {n for _, n in self.free} | {n for n, _ in self.lanes})
        self.rank = {n: i for i, n in enumerate(ids)}
        self._region: dict[str, list[tuple[str, float]]] = {}
        self._region_rank: dict[str, dict[str, int]] = {}
        self._cands: dict[tuple[str, str], list[tuple[str, float]]] = {}
        self._cut: dict[tuple[str, str | None], tuple[datetime | None, str]] = {}
        self._late: dict[tuple[str | None, datetime], frozenset[str]] = {}
        self._late_of: dict[int, tuple[AllocLine, frozenset[str]]] = {}  # per line object
        self._stock_of: dict[tuple[str, str], tuple[float, float, tuple[float, str]]] = {}
        self._held: dict[str, set[str]] | None = None  # sku → nodes holding free or safety stock
        self._stocked: dict[str, set[str]] | None = None  # the same, for any stock above zero
        self.why_cache: dict[tuple[str, str, float, bool, bool, str | None, bool], str] = {}  # for _why_not
        self._by_cutoff: dict[str | None, tuple[list[datetime], list[str], dict[int, frozenset[str]]]] = {}

    def region_nodes(self, region: str) -> list[tuple[str, float]]:
        """(node, lane cost) for every node with a lane to ``region``: cheapest, then fastest, then by id."""
        got = self._region.get(region)
        if got is None:
            got = [
                (n, ln.cost_per_unit)
                for n, ln in sorted(
                    ((n, ln) for (n, r), ln in self.lanes.items() if r == region),
                    key=lambda x: (x[1].cost_per_unit, x[1].transit_days, self.rank[x[0]]),
                )
            ]
            self._region[region] = got
        return got

    def region_rank(self, region: str) -> dict[str, int]:
        """Position of each node in ``region_nodes``: the greedy path's tie-break (cost, transit, id)."""
        got = self._region_rank.get(region)
        if got is None:
            got = {n: i for i, (n, _) in enumerate(self.region_nodes(region))}
            self._region_rank[region] = got
        return got

    def candidates(self, sku: str, region: str) -> list[tuple[str, float]]:
        """Nodes holding ``sku`` (free or safety) with a lane to ``region``, cheapest first."""
        key = (sku, region)
        got = self._cands.get(key)
        if got is None:
            if self._held is None:
                held: dict[str, set[str]] = defaultdict(set)
                for stock in (self.free, self.safety):
                    for (s, n), v in stock.items():
                        if v > _EPS:
                            held[s].add(n)
                self._held = held
            at = self._held.get(sku, set())
            got = [(n, c) for n, c in self.region_nodes(region) if n in at]
            self._cands[key] = got
        return got

    def region_stock(self, sku: str, region: str) -> tuple[float, float, tuple[float, str]]:
        """Free and safety ``sku`` at the nodes with a lane to ``region``, and the most free at one."""
        key = (sku, region)
        got = self._stock_of.get(key)
        if got is None:
            nodes = self.region_nodes(region)
            free = sum(self.free.get((sku, n), 0.0) for n, _ in nodes)
            safety = sum(self.safety.get((sku, n), 0.0) for n, _ in nodes)
            most = max((self.free.get((sku, n), 0.0), n) for n, _ in nodes) if nodes else (0.0, "-")
            got = self._stock_of[key] = (free, safety, most)
        return got

    def stocked(self, sku: str) -> set[str]:
        """Nodes holding any free or safety stock of ``sku`` (however little)."""
        if self._stocked is None:
            stocked: dict[str, set[str]] = defaultdict(set)
            for stock in (self.free, self.safety):
                for (s, n), v in stock.items():
                    if v > 0:
                        stocked[s].add(n)
            self._stocked = stocked
        return self._stocked.get(sku, _NO_NODES)

    def cutoff(self, node: str, carrier: str | None) -> tuple[datetime | None, str]:
        """Next cutoff at ``node``: the order's carrier if offered there, else the node's earliest."""
        key = (node, carrier)
        got = self._cut.get(key)
        if got is None:
            ships = ship_carrier(self.nodes.get(node), carrier, self.now)
            if ships is None:
                got = (None, "no carrier")
            else:
                c, at = ships
                got = (at, f"{c.cutoff} {c.code}")
            self._cut[key] = got
        return got

    def late_nodes(self, line: AllocLine) -> frozenset[str]:
        """Nodes whose next cutoff (for the line's carrier) falls after its ship-by; cached per pair."""
        if line.ship_by is None:
            return frozenset()
        seen = self._late_of.get(id(line))
        if seen is not None and seen[0] is line:
            return seen[1]
        key = (line.carrier, line.ship_by)
        got = self._late.get(key)
        if got is None:
            # Nodes by next cutoff for this carrier; the late ones are a suffix past ship-by.
            table = self._by_cutoff.get(line.carrier)
            if table is None:
                timed = sorted(
                    ((at, n) for n in self.rank if (at := self.cutoff(n, line.carrier)[0]) is not None),
                    key=lambda x: x[0],
                )
                table = self._by_cutoff[line.carrier] = ([at for at, _ in timed], [n for _, n in timed], {})
            times, names, suffixes = table
            k = bisect.bisect_right(times, as_utc(line.ship_by))
            got = suffixes.get(k)
            if got is None:
                got = suffixes[k] = frozenset(names[k:])
            self._late[key] = got
        self._late_of[id(line)] = (line, got)  # the line is held, so its id cannot be reused
        return got

    def late(self, line: AllocLine, node: str) -> bool:
        return node in self.late_nodes(line)

    def residual(self, state: _State) -> _Net:
        """The same network with only the stock ``state`` has left."""
        twin = copy.copy(self)
        twin.free = defaultdict(float, {k: max(0.0, v) for k, v in state.free.items()})
        twin.safety = defaultdict(float, {k: max(0.0, v) for k, v in state.safety.items()})
        twin._cands = {}
        twin._held = None
        twin._stocked = None
        twin.why_cache = {}
        twin._stock_of = {}
        return twin


def _options(line: AllocLine) -> list[tuple[str, int]]:
    """(sku, rank): the line's own SKU (rank −1), then its substitutes if the order allows."""
    opts = [(line.sku, -1)]
    if line.allow_substitution:
        seen = {line.sku}
        for i, s in enumerate(line.substitutes):
            if s not in seen:
                opts.append((s, i))
                seen.add(s)
    return opts


def _unit_cost(line: AllocLine, lane_cost: float, late: bool, rank: int, pen: Penalties) -> float:
    cost = lane_cost
    if late:
        cost += pen.late / line.qty
    if rank >= 0:
        cost += pen.substitution * (rank + 1)
    return cost


def _unfilled_rate(line: AllocLine, pen: Penalties) -> float:
    return pen.unfilled * (pen.priority_factor if line.privileged else 1.0)


@dataclass
class _Part:
    node: str
    sku: str
    qty: float
    safety_qty: float
    late: bool
    rank: int
    lane: float


class _State:
    """Residual stock while a plan is built."""

    def __init__(self, net: _Net) -> None:
        self.free = dict(net.free)
        self.safety = dict(net.safety)

    def avail(self, sku: str, node: str, privileged: bool) -> float:
        have = self.free.get((sku, node), 0.0)
        if privileged:
            have += self.safety.get((sku, node), 0.0)
        return have

    def take(self, sku: str, node: str, qty: float, privileged: bool) -> float:
        """Take ``qty`` (free first, then safety if allowed); return the safety units used."""
        key = (sku, node)
        free = self.free.get(key, 0.0)
        from_free = min(free, qty)
        self.free[key] = free - from_free
        rest = qty - from_free
        if rest > _EPS:
            if not privileged:
                raise AssertionError(f"standard line would take safety stock at {sku}@{node}")
            safety = self.safety.get(key, 0.0)
            if rest > safety + 1e-7:
                raise AssertionError(f"oversell at {sku}@{node}: {qty} > available")
            self.safety[key] = safety - min(rest, safety)
            return rest
        return 0.0

    def give_back(self, part: _Part) -> None:
        key = (part.sku, part.node)
        self.free[key] = self.free.get(key, 0.0) + part.qty - part.safety_qty
        self.safety[key] = self.safety.get(key, 0.0) + part.safety_qty

    def consume(self, part: _Part) -> None:
        key = (part.sku, part.node)
        self.free[key] = self.free.get(key, 0.0) - (part.qty - part.safety_qty)
        self.safety[key] = self.safety.get(key, 0.0) - part.safety_qty


def _part(line: AllocLine, net: _Net, state: _State, node: str, sku: str, rank: int, qty: float) -> _Part:
    safety_qty = state.take(sku, node, qty, line.privileged)
    lane = net.lanes[(node, line.region)].cost_per_unit
    return _Part(node, sku, qty, safety_qty, net.late(line, node), rank, lane)


def _parts_cost(line: AllocLine, parts: Sequence[_Part], pen: Penalties) -> float:
    filled = 0.0
    cost = 0.0
    for p in parts:
        filled += p.qty
        cost += p.qty * _unit_cost(line, p.lane, p.late, p.rank, pen)
    cost += max(0.0, line.qty - filled) * _unfilled_rate(line, pen)
    if len(parts) < 2:
        return cost
    nodes = len({p.node for p in parts})
    return cost + pen.split * max(0, nodes - 1)


# --- single-order building blocks (greedy and repair) -----------------------------------


def _best_single_node(
    lines: Sequence[AllocLine],
    net: _Net,
    state: _State,
    pen: Penalties,
    price: dict[tuple[str, str], tuple[float, float]] | None = None,
) -> tuple[list[list[_Part]], float]:
    """Serve every line of an order from one node (partial fills allowed); cheapest node wins.

    ``price``: per (sku, node), what a unit of its free and of its safety stock is worth to the
    rest of the batch (the flow optimum's duals); the node is then chosen on cost plus the worth
    of the stock it takes, and the cost returned includes it.
    """
    region = lines[0].region
    empty: list[list[_Part]] = [[] for _ in lines]
    best: tuple[float, int, str | None] = (sum(ln.qty * _unfilled_rate(ln, pen) for ln in lines), -1, None)
    # Per line, once: options, late nodes, safety right, unfilled rate.
    info = [(ln, _options(ln), net.late_nodes(ln), ln.privileged, _unfilled_rate(ln, pen)) for ln in lines]
    free, safety = state.free, state.safety
    rrank = net.region_rank(region)
    # Only nodes holding some stock of some option can serve anything (a plan never holds more
    # stock than the network), so the others are skipped; the order of the rest is kept.
    held: set[str] = set()
    for _, opts, _, _, _ in info:
        for sku, _ in opts:
            held |= net.stocked(sku)
    qty_rate = [(ln.qty, rate) for ln, _, _, _, rate in info]
    total_qty = sum(ln.qty for ln in lines)
    min_rate = min(rate for _, rate in qty_rate)
    for node, lane in net.region_nodes(region):
        if node not in held:
            continue
        # Nodes come cheapest lane first (then by rank), and every unit costs at least the lane
        # or its unfilled rate: once that floor is above the best, no later node can win.
        floor = lane * total_qty if lane <= min_rate else sum(q * min(lane, rate) for q, rate in qty_rate)
        if floor * (1 - 1e-12) > best[0]:
            break
        local: dict[tuple[str, str], float] = {}
        taken: dict[tuple[str, str], float] = {}
        cost = 0.0
        useful = False
        for ln, opts, late_at, priv, unfilled_rate in info:
            late = node in late_at
            qty_left = ln.qty
            for sku, rank in opts:
                key = (sku, node)
                have = local.get(key)
                if have is None:
                    have = free.get(key, 0.0) + (safety.get(key, 0.0) if priv else 0.0)
                if have + _EPS >= ln.qty:
                    local[key] = have - ln.qty
                    cost += ln.qty * _unit_cost(ln, lane, late, rank, pen)
                    if price is not None:
                        cost += _worth(price, taken, free, key, ln.qty)
                    qty_left = 0.0
                    break
            if qty_left > 0:  # nothing fills it whole here: take what the own SKU has
                key = (ln.sku, node)
                have = local.get(key)
                if have is None:
                    have = free.get(key, 0.0) + (safety.get(key, 0.0) if priv else 0.0)
                take = min(have, ln.qty)
                if take > _EPS:
                    local[key] = have - take
                    cost += take * _unit_cost(ln, lane, late, -1, pen)
                    if price is not None:
                        cost += _worth(price, taken, free, key, take)
                    qty_left -= take
                cost += qty_left * unfilled_rate
            useful = useful or qty_left < ln.qty
        r = rrank[node]
        if useful and (cost < best[0] - 1e-9 or (best[2] is not None and cost <= best[0] + 1e-9 and r < best[1])):
            best = (cost, r, node)
    if best[2] is None:
        return empty, best[0]
    node = best[2]
    out: list[list[_Part]] = []
    for ln in lines:
        parts: list[_Part] = []
        for sku, rank in _options(ln):
            if state.avail(sku, node, ln.privileged) + _EPS >= ln.qty:
                parts.append(_part(ln, net, state, node, sku, rank, ln.qty))
                break
        else:
            take = min(state.avail(ln.sku, node, ln.privileged), ln.qty)
            if take > _EPS:
                parts.append(_part(ln, net, state, node, ln.sku, -1, take))
        out.append(parts)
    return out, best[0]


def _worth(
    price: dict[tuple[str, str], tuple[float, float]],
    taken: dict[tuple[str, str], float],
    free: dict[tuple[str, str], float],
    key: tuple[str, str],
    qty: float,
) -> float:
    """What ``qty`` more units of bucket ``key`` are worth (free stock first, then safety)."""
    before = taken.get(key, 0.0)
    taken[key] = before + qty
    worth = price.get(key)
    if worth is None:
        return 0.0
    from_free = min(qty, max(0.0, free.get(key, 0.0) - before))
    return worth[0] * from_free + worth[1] * (qty - from_free)


def _best_whole_line(
    line: AllocLine,
    net: _Net,
    state: _State,
    pen: Penalties,
    *,
    on_time: bool | None,
    subs: bool,
    prefer: set[str] | None = None,
) -> tuple[str, str, int] | None:
    """Cheapest (node, sku, rank) that fills the whole line; the first substitute with stock wins.

    ``prefer``: nodes the order already ships from. For each SKU option, one of them that fills
    the line wins over a cheaper node the order does not use yet (a lane is no reason for
    another parcel).
    """
    for sku, rank in _options(line) if subs else [(line.sku, -1)]:
        for only in (prefer, None) if prefer else (None,):
            node = _whole_line_at(line, net, state, pen, sku, rank, on_time=on_time, only=only)
            if node is not None:
                return node, sku, rank
    return None


def _whole_line_at(
    line: AllocLine,
    net: _Net,
    state: _State,
    pen: Penalties,
    sku: str,
    rank: int,
    *,
    on_time: bool | None,
    only: set[str] | None,
) -> str | None:
    """The cheapest node (of ``only``, when given) that fills the whole line with ``sku``."""
    late_at = net.late_nodes(line)
    rrank = net.region_rank(line.region)
    free, safety = state.free, state.safety
    priv, qty = line.privileged, line.qty
    best: tuple[float, int, str] | None = None
    extra = pen.substitution * (rank + 1) if rank >= 0 else 0.0
    for node, lane in net.candidates(sku, line.region):
        # cheapest lane first, then by rank: a later node costs at least lane (+ substitution)
        if best is not None and (lane + extra if rank >= 0 else lane) >= best[0]:
            break
        if only is not None and node not in only:
            continue
        late = node in late_at
        if on_time is not None and late == on_time:
            continue
        key = (sku, node)
        have = free.get(key, 0.0)
        if priv:
            have += safety.get(key, 0.0)
        if have + _EPS < qty:
            continue
        cand = (_unit_cost(line, lane, late, rank, pen), rrank[node], node)
        if best is None or cand[:2] < best[:2]:
            best = cand
    return None if best is None else best[2]


def _greedy_order(lines: Sequence[AllocLine], net: _Net, state: _State, pen: Penalties) -> list[list[_Part]]:
    region = lines[0].region
    # 1) the whole order from the cheapest on-time node that has every line in stock.
    best: tuple[float, int, str] | None = None
    late_any = frozenset().union(*(net.late_nodes(ln) for ln in lines))
    rrank = net.region_rank(region)
    free, safety = state.free, state.safety
    info = [(ln.sku, ln.qty, ln.privileged) for ln in lines]
    total_qty = sum(ln.qty for ln in lines)
    # A node without any stock of the first line's SKU cannot fill it (unless it is a speck).
    first = net.stocked(lines[0].sku) if lines[0].qty > 2 * _EPS else None
    for node, lane in net.region_nodes(region):
        if node in late_any or (first is not None and node not in first):
            continue
        local: dict[str, float] = {}
        ok = True
        for sku, qty, priv in info:
            have = local.get(sku)
            if have is None:
                key = (sku, node)
                have = free.get(key, 0.0)
                if priv:
                    have += safety.get(key, 0.0)
            if have + _EPS < qty:
                ok = False
                break
            local[sku] = have - qty
        if ok:  # nodes come cheapest lane first, then by rank: the first that fits wins
            best = (total_qty * lane, rrank[node], node)
            break
    if best is not None:
        node = best[2]
        return [[_part(ln, net, state, node, ln.sku, -1, ln.qty)] for ln in lines]
    if not lines[0].allow_split:
        return _best_single_node(lines, net, state, pen)[0]
    # 2) line by line: on time, then a substitute on time, then late, then split, else unfilled.
    cheapest = [_line_parts(ln, net, state, pen) for ln in lines]
    if not pen.split_only_for_service or len(_nodes_of(cheapest)) <= 1:
        return cheapest
    # Split only for service: one node when one node serves the order as well, whatever the lanes
    # cost; else the split over fewer nodes when that costs no more than the parcels it saves.
    plan = _single_if_as_good(lines, cheapest, net, state)
    return _fewer_nodes(lines, cheapest, net, state, pen) if plan is cheapest else plan


def _line_parts(ln: AllocLine, net: _Net, state: _State, pen: Penalties, used: set[str] | None = None) -> list[_Part]:
    """One line's parts (taken from ``state``): the cheapest node that fills it whole on time, then
    a substitute on time, then late, else spread over the nodes with stock. ``used``: nodes the
    order already ships from, preferred when they serve the line as well."""
    pick = _best_whole_line(ln, net, state, pen, on_time=True, subs=ln.allow_substitution, prefer=used)
    if pick is None:
        pick = _best_whole_line(ln, net, state, pen, on_time=False, subs=False, prefer=used)
    if pick is not None:
        node, sku, rank = pick
        return [_part(ln, net, state, node, sku, rank, ln.qty)]
    parts: list[_Part] = []
    need = ln.qty
    rrank = net.region_rank(ln.region)
    if used is None:
        ranked = sorted(
            net.candidates(ln.sku, ln.region),
            key=lambda x: (_unit_cost(ln, x[1], net.late(ln, x[0]), -1, pen), rrank[x[0]]),
        )
    else:  # on time first, then the order's own nodes, then cost
        ranked = sorted(
            net.candidates(ln.sku, ln.region),
            key=lambda x: (net.late(ln, x[0]), x[0] not in used, _unit_cost(ln, x[1], False, -1, pen), rrank[x[0]]),
        )
    for node, _lane in ranked:
        take = min(state.avail(ln.sku, node, ln.privileged), need)
        if take > _EPS:
            parts.append(_part(ln, net, state, node, ln.sku, -1, take))
            need -= take
        if need <= _EPS:
            break
    return parts


def _on_time_nodes(ln: AllocLine, net: _Net, state: _State) -> int:
    """How many nodes could fill the line whole and on time with its own SKU."""
    late_at = net.late_nodes(ln)
    return sum(
        1
        for node, _ in net.candidates(ln.sku, ln.region)
        if node not in late_at and state.avail(ln.sku, node, ln.privileged) + _EPS >= ln.qty
    )


Service = tuple[float, int, int]  # units unfilled, late lines, substituted lines


def _service(lines: Sequence[AllocLine], parts: Sequence[Sequence[_Part]]) -> Service:
    """What the customer gets from a plan for one order: fewer of each is better."""
    unfilled = sum(max(0.0, ln.qty - sum(p.qty for p in ps)) for ln, ps in zip(lines, parts, strict=True))
    late = sum(1 for ps in parts if any(p.late for p in ps))
    substituted = sum(1 for ps in parts if any(p.rank >= 0 for p in ps))
    return (unfilled, late, substituted)


def _as_good(a: Service, b: Service) -> bool:
    """Plan ``a`` serves the customer at least as well as ``b`` on every count."""
    return a[0] <= b[0] + 1e-7 and a[1] <= b[1] and a[2] <= b[2]


def _nodes_of(plan: Sequence[Sequence[_Part]]) -> set[str]:
    return {p.node for ps in plan for p in ps}


def _give_back_all(plan: Sequence[Sequence[_Part]], state: _State) -> None:
    for ps in plan:
        for p in ps:
            state.give_back(p)


def _consume_all(plan: Sequence[Sequence[_Part]], state: _State) -> None:
    for ps in plan:
        for p in ps:
            state.consume(p)


def _single_if_as_good(
    lines: Sequence[AllocLine], split: list[list[_Part]], net: _Net, state: _State
) -> list[list[_Part]]:
    """The order from one node instead of ``split`` when one node serves it as well (as many
    units, as few late lines, as few substitutes): a split must buy service, not a lane. The
    single node is chosen on service first, then cost. ``split`` is taken from ``state``; the
    plan returned is."""
    _give_back_all(split, state)
    single, _ = _best_single_node(lines, net, state, _SERVICE_FIRST)
    if any(single) and _as_good(_service(lines, single), _service(lines, split)):
        return single
    _give_back_all(single, state)
    _consume_all(split, state)
    return split


def _fewer_nodes(
    lines: Sequence[AllocLine], split: list[list[_Part]], net: _Net, state: _State, pen: Penalties
) -> list[list[_Part]]:
    """``split`` over fewer nodes, when it serves the order as well and costs no more than
    ``pen.split`` per node it saves (the price of a parcel); else ``split``.

    The most constrained lines are placed first, each on a node the order already ships from
    when one serves it the same way; then each whole line moves to the cheapest node of that set
    that serves it the same way. ``split`` is taken from ``state``; the plan returned is.
    """
    _give_back_all(split, state)
    fewer: list[list[_Part]] = [[] for _ in lines]
    used: set[str] = set()
    for i in sorted(range(len(lines)), key=lambda i: (_on_time_nodes(lines[i], net, state), i)):
        fewer[i] = _line_parts(lines[i], net, state, pen, used)
        used |= {p.node for p in fewer[i]}
    for ln, ps in zip(lines, fewer, strict=True):
        if len(ps) == 1:
            p = ps[0]
            state.give_back(p)
            node = _whole_line_at(ln, net, state, pen, p.sku, p.rank, on_time=not p.late, only=used)
            ps[0] = _part(ln, net, state, node or p.node, p.sku, p.rank, p.qty)
    saved = len(_nodes_of(split)) - len(_nodes_of(fewer))
    cost = sum(_parts_cost(ln, ps, pen) for ln, ps in zip(lines, fewer, strict=True))
    was = sum(_parts_cost(ln, ps, pen) for ln, ps in zip(lines, split, strict=True))
    if saved > 0 and _as_good(_service(lines, fewer), _service(lines, split)) and cost <= was + pen.split * saved:
        return fewer
    _give_back_all(fewer, state)
    _consume_all(split, state)
    return split


def _order_sort_key(ln: AllocLine) -> tuple[bool, datetime, datetime, str]:
    far = datetime.max.replace(tzinfo=UTC)
    return (
        not ln.privileged,
        as_utc(ln.ship_by) if ln.ship_by else far,
        as_utc(ln.created) if ln.created else far,
        ln.order_id,
    )


def _group_orders(lines: Sequence[AllocLine]) -> list[list[int]]:
    by_order: dict[str, list[int]] = {}
    for i, ln in enumerate(lines):
        by_order.setdefault(ln.order_id, []).append(i)
    return sorted(by_order.values(), key=lambda idx: _order_sort_key(lines[idx[0]]))


def _check_lines(lines: Sequence[AllocLine]) -> None:
    seen: set[LineKey] = set()
    for ln in lines:
        if ln.key in seen:
            raise ValueError(f"{ln.order_id} line {ln.line} appears twice")
        seen.add(ln.key)


# --- public entry points ----------------------------------------------------------------


def greedy(
    lines: Sequence[AllocLine],
    stock: Iterable[NodeStockView],
    network: Network,
    now: datetime,
    penalties: Penalties = Penalties(),  # noqa: B008 - frozen, immutable default
) -> AllocationPlan:
    """The real-time path for one order: cheapest on-time node with stock, one node if possible."""
    started = time.perf_counter()
    if len({ln.order_id for ln in lines}) > 1:
        raise ValueError("greedy() takes the lines of one order; use greedy_batch() for several")
    _check_lines(lines)
    net = _Net(stock, network, now)
    parts = _greedy_order(lines, net, _State(net), penalties) if lines else []
    wall = (time.perf_counter() - started) * 1000
    return _compose(lines, parts, net, penalties, SolverStats("greedy", "FEASIBLE", wall))


def greedy_batch(
    lines: Sequence[AllocLine],
    stock: Iterable[NodeStockView],
    network: Network,
    now: datetime,
    penalties: Penalties = Penalties(),  # noqa: B008
) -> AllocationPlan:
    """Greedy, order by order (express/gold first, then earliest ship-by), sharing the stock."""
    started = time.perf_counter()
    _check_lines(lines)
    net = _Net(stock, network, now)
    parts = _greedy_all(lines, net, penalties)
    wall = (time.perf_counter() - started) * 1000
    return _compose(lines, parts, net, penalties, SolverStats("greedy", "FEASIBLE", wall))


def _greedy_all(
    lines: Sequence[AllocLine], net: _Net, pen: Penalties, orders: list[list[int]] | None = None
) -> list[list[_Part]]:
    state = _State(net)
    parts: list[list[_Part]] = [[] for _ in lines]
    for idx in _group_orders(lines) if orders is None else orders:
        for i, p in zip(idx, _greedy_order([lines[i] for i in idx], net, state, pen), strict=True):
            parts[i] = p
    return parts


def _greedy_bounded(
    lines: Sequence[AllocLine],
    net: _Net,
    pen: Penalties,
    orders: list[list[int]],
    model: _Model,
    beat: float,
) -> tuple[list[list[_Part]], float] | None:
    """``_greedy_all`` that gives up once it provably cannot cost less than ``beat``.

    After each stretch of orders the running cost of the greedy plan plus a lower bound for the
    orders still to come (priced with the flow optimum's bucket duals, see below) is compared
    with ``beat``. Returns the greedy plan and its cost, or None once it cannot win. The plan,
    when returned, is exactly ``_greedy_all``'s.
    """
    n = len(lines)
    if n == 0:
        return [], 0.0
    # Bucket prices u ≥ 0: the flow optimum's dual, read off its residual network. Any u ≥ 0
    # gives a valid (Lagrangian) bound for lines R on what stock S' is left,
    #   cost(R, S') ≥ Σ_{i∈R} q_i · min(unfilled_i, min_j c_ij + u_j) − Σ_b u_b S'_b,
    # and the optimum's prices make it tight (at the start it is the flow objective itself).
    if model.scale != 1 or model.flows is None or model.unfilled is None:
        parts_all = _greedy_all(lines, net, pen, orders)
        return parts_all, sum(_parts_cost(ln, p, pen) for ln, p in zip(lines, parts_all, strict=True))
    u = _bucket_prices(model)
    nb = len(model.buckets)
    node_of = np.where(model.arc_safety, nb + model.arc_bucket, model.arc_bucket)
    value = model.unfilled_rate.copy()
    np.minimum.at(value, model.arc_line, model.arc_cost + u[node_of])
    qty = np.array([ln.qty for ln in lines], dtype=np.float64)
    line_value = (qty * value).tolist()
    # Σ_b u_b S'_b, kept up to date as the greedy takes stock.
    price_of: dict[tuple[str, str], tuple[float, float]] = {}
    for b in np.nonzero((u[:nb] > 0) | (u[nb:] > 0))[0].tolist():
        price_of[model.buckets[b]] = (float(u[b]), float(u[nb + b]))
    held = float((u[:nb] * model.free_cap).sum() + (u[nb:] * model.safety_cap).sum())
    rest_value = float(sum(line_value))
    state = _State(net)
    parts: list[list[_Part]] = [[] for _ in lines]
    running = 0.0
    tolerance = 1e-7 * max(1.0, abs(beat))
    for idx in orders:
        order_lines = [lines[i] for i in idx]
        for i, ln, p in zip(idx, order_lines, _greedy_order(order_lines, net, state, pen), strict=True):
            parts[i] = p
            running += _parts_cost(ln, p, pen)
            rest_value -= line_value[i]
            for x in p:
                price = price_of.get((x.sku, x.node))
                if price is not None:
                    held -= price[0] * (x.qty - x.safety_qty) + price[1] * x.safety_qty
        if running + rest_value - max(0.0, held) > beat + tolerance:
            return None
    return parts, running


def _restrict(m: _Model, keep: list[int], state: _State) -> _Model:
    """The model for lines ``keep`` (renumbered in that order) on the stock ``state`` has left.

    The same as building it afresh on ``_Net.residual``: the same arcs in the same order, less
    those of other lines and those into buckets left empty.
    """
    index = np.full(len(m.supply), -1, dtype=np.int64)
    index[np.array(keep, dtype=np.int64)] = np.arange(len(keep), dtype=np.int64)
    free_cap = np.array(
        [math.floor(max(0.0, state.free.get(k, 0.0)) * m.scale + 1e-6) for k in m.buckets], dtype=np.int64
    )
    safety_cap = np.array(
        [math.floor(max(0.0, state.safety.get(k, 0.0)) * m.scale + 1e-6) for k in m.buckets], dtype=np.int64
    )
    room = np.where(m.arc_safety, safety_cap[m.arc_bucket] > 0, free_cap[m.arc_bucket] > 0)
    sel = np.nonzero((index[m.arc_line] >= 0) & room)[0]
    keep_idx = np.array(keep, dtype=np.int64)
    comps = groups = None
    if m.comps is not None:  # components and merge groups carry over, renumbered
        comps = (m.comps[0][keep_idx], m.comps[1], m.comps[2])
    if m.groups is not None:
        kept = np.unique(m.groups[0][keep_idx])
        renumber = np.full(len(m.groups[1]), -1, dtype=np.int64)
        renumber[kept] = np.arange(kept.size, dtype=np.int64)
        members = [[int(index[i]) for i in m.groups[1][g]] for g in kept.tolist()]
        if all(i >= 0 for g in members for i in g):
            groups = (renumber[m.groups[0][keep_idx]], members)
    return _Model(
        scale=m.scale,
        buckets=m.buckets,
        free_cap=free_cap,
        safety_cap=safety_cap,
        supply=m.supply[keep_idx],
        unfilled_rate=m.unfilled_rate[keep_idx],
        arc_line=index[m.arc_line[sel]],
        arc_bucket=m.arc_bucket[sel],
        arc_safety=m.arc_safety[sel],
        arc_rank=m.arc_rank[sel],
        arc_cost=m.arc_cost[sel],
        arc_icost=m.arc_icost[sel],
        comps=comps,
        groups=groups,
    )


def _price_map(m: _Model) -> dict[tuple[str, str], tuple[float, float]]:
    """(free, safety) dual price per (sku, node) of a solved flow, for the buckets worth anything."""
    u = _bucket_prices(m)
    nb = len(m.buckets)
    return {m.buckets[b]: (float(u[b]), float(u[nb + b])) for b in np.nonzero((u[:nb] > 0) | (u[nb:] > 0))[0].tolist()}


def _bucket_prices(m: _Model) -> FloatArray:
    """Dual prices (money per unit, ≥ 0) of every free bucket then every safety bucket.

    The largest potentials that satisfy the optimality conditions of the solved flow: a bucket
    with room left is free (0); a full one is worth at most what its cheapest user pays over
    the arc (π_i − c_ib); a line is worth at most its unfilled rate or any arc with room
    (c_ib + u_b). Iterated from the top in integer cost units until nothing changes.
    """
    assert m.flows is not None and m.unfilled is not None
    if m.prices is not None:
        return m.prices
    nb = len(m.buckets)
    node_of = np.where(m.arc_safety, nb + m.arc_bucket, m.arc_bucket)
    cap = np.concatenate([m.free_cap, m.safety_cap])
    used = np.bincount(node_of, weights=m.flows.astype(np.float64), minlength=2 * nb)
    room = (used < cap) | (cap == 0)
    rate = np.rint(m.unfilled_rate * COST_SCALE).astype(np.int64)
    top = int(rate.max()) if rate.size else 0
    # arcs with room (the line can send more), grouped by line
    fwd = np.nonzero(m.flows < m.supply[m.arc_line])[0]
    fwd = fwd[np.argsort(m.arc_line[fwd], kind="stable")]
    f_line = m.arc_line[fwd]
    f_start = np.flatnonzero(np.r_[True, f_line[1:] != f_line[:-1]]) if fwd.size else np.zeros(0, dtype=np.int64)
    f_has, f_node, f_cost = f_line[f_start], node_of[fwd], m.arc_icost[fwd]
    # arcs that carry flow, grouped by bucket
    carry = np.nonzero(m.flows > 0)[0]
    carry = carry[np.argsort(node_of[carry], kind="stable")]
    c_node = node_of[carry]
    c_start = np.flatnonzero(np.r_[True, c_node[1:] != c_node[:-1]]) if carry.size else np.zeros(0, dtype=np.int64)
    c_has, c_line, c_cost = c_node[c_start], m.arc_line[carry], m.arc_icost[carry]
    pi = rate.copy()
    u = np.full(2 * nb, top, dtype=np.int64)
    u[room] = 0
    for _ in range(200):
        nu = np.full(2 * nb, top, dtype=np.int64)
        if carry.size:
            nu[c_has] = np.maximum(0, np.minimum.reduceat(pi[c_line] - c_cost, c_start))
        nu[room] = 0
        npi = rate.copy()
        if fwd.size:
            npi[f_has] = np.minimum(npi[f_has], np.minimum.reduceat(f_cost + nu[f_node], f_start))
        if np.array_equal(nu, u) and np.array_equal(npi, pi):
            break
        u, pi = nu, npi
    m.prices = u.astype(np.float64) / COST_SCALE
    return m.prices


def optimise(
    lines: Sequence[AllocLine],
    stock: Iterable[NodeStockView],
    network: Network,
    now: datetime,
    penalties: Penalties = Penalties(),  # noqa: B008
    *,
    improve: bool = True,
) -> AllocationPlan:
    """The batch optimiser: min-cost flow, split repair, and the greedy plan as a safety net.

    ``improve=False`` leaves out what issue 19 added to the repair (the dual-priced placement of
    one-node orders and the MIP polish of small batches): the benchmark's baseline.
    """
    started, started_cpu = time.perf_counter(), time.process_time()
    phases: dict[str, float] = defaultdict(float)
    clock = [started]

    def lap(phase: str) -> None:
        now_ = time.perf_counter()
        phases[phase] += (now_ - clock[0]) * 1000
        clock[0] = now_

    _check_lines(lines)
    net = _Net(stock, network, now)
    model = _build(lines, net, penalties)
    lap("build")
    _, lower_bound = _solve_flow(lines, model, net, with_parts=False)
    arcs, graph_nodes = model.num_arcs, model.num_nodes
    lap("solve")

    def total_of(plan: Sequence[Sequence[_Part]]) -> float:
        return sum(_parts_cost(ln, p, penalties) for ln, p in zip(lines, plan, strict=True))

    tolerance = 1e-6 * max(1.0, abs(lower_bound))
    orders = _group_orders(lines)
    pinned = [idx for idx in orders if not lines[idx[0]].allow_split]
    if not _flow_splits_pinned(lines, model, net, pinned):
        # Candidate A: the flow optimum already keeps every one-node order on one node; only
        # split lines may still move to one node.
        flow_parts = _flow_parts(lines, model, net)
        state = _State(net)
        for parts in flow_parts:
            for p in parts:
                state.consume(p)
        repaired = _repair(lines, flow_parts, net, state, penalties, orders)
        chosen, solver, total = flow_parts, "min_cost_flow", total_of(flow_parts)
        lap("repair")
    else:
        # Candidate B: place the one-node orders first, then re-solve the flow for the rest.
        # (Repairing the flow optimum in place would move the same orders one by one onto
        # what stock is left; placing them first and re-optimising the rest does better.)
        # Each order's node is chosen on its cost plus what the stock it takes is worth to the
        # rest of the batch (the flow optimum's bucket duals), which keeps a one-node order off
        # stock another line cannot do without (``improve=False``: on its own cost only).
        price = _price_map(model) if improve else None
        state = _State(net)
        chosen = [[] for _ in lines]
        for idx in pinned:
            single, _ = _best_single_node([lines[i] for i in idx], net, state, penalties, price)
            for i, line_parts in zip(idx, single, strict=True):
                chosen[i] = line_parts
        rest = [i for idx in orders if lines[idx[0]].allow_split for i in idx]
        rest_lines = [lines[i] for i in rest]
        rest_net = net.residual(state)
        lap("repair")
        rest_model = _restrict(model, rest, state)
        lap("build")
        rest_parts, _ = _solve_flow(rest_lines, rest_model, rest_net)
        arcs += rest_model.num_arcs
        lap("solve")
        rest_state = _State(rest_net)
        for parts in rest_parts:
            for p in parts:
                rest_state.consume(p)
        repaired = _repair(rest_lines, rest_parts, rest_net, rest_state, penalties) + len(pinned)
        for i, line_parts in zip(rest, rest_parts, strict=True):
            chosen[i] = line_parts
        solver = "min_cost_flow/pinned-first" + ("/priced" if improve else "")
        total = total_of(chosen)
        lap("repair")
    if total > lower_bound + tolerance:
        # Not provably optimal after the split rules: keep the greedy plan if it is cheaper.
        # The greedy run stops as soon as it provably cannot be.
        got = _greedy_bounded(lines, net, penalties, orders, model, total - 1e-9)
        if got is not None and got[1] < total - 1e-9:
            chosen, solver, total = got[0], "greedy", got[1]
        lap("greedy")
    if improve and pinned and len(lines) <= POLISH_LINES and total > lower_bound + tolerance:
        # A small batch with one-node orders: the exact MIP (allocation_exact), started from the
        # plan so far, gets what is left of the time budget; its plan is kept only if cheaper.
        left = POLISH_BUDGET_S - (time.process_time() - started_cpu)
        if left > 0.05:
            from domain.engines.allocation_exact import polish

            better = polish(lines, net, penalties, chosen, time_limit_s=left, node_limit=POLISH_NODES)
            if better is not None and (cost := total_of(better)) < total - 1e-9:
                chosen, solver, total = better, solver + "+mip", cost
        lap("polish")
    if penalties.split_only_for_service:
        # The flow splits an order for a cheaper lane; the policy allows a split only for service.
        consolidated = _consolidate(lines, chosen, net, orders)
        if consolidated:
            repaired += consolidated
            solver += "+one-node"
        lap("repair")
    wall = (time.perf_counter() - started) * 1000
    stats = SolverStats(
        solver, "OPTIMAL", wall, arcs=arcs, nodes=graph_nodes, repaired=repaired, lower_bound=lower_bound
    )
    plan = _compose(lines, chosen, net, penalties, stats)
    lap("evidence")
    plan.stats.phases_ms.update({k: round(v, 1) for k, v in phases.items()})
    return plan


def certify(
    lines: Sequence[AllocLine],
    stock: Iterable[NodeStockView],
    network: Network,
    now: datetime,
    penalties: Penalties = Penalties(),  # noqa: B008
) -> float:
    """Optimal value of the same transportation LP, solved by GLOP (no split rules)."""
    _check_lines(lines)
    net = _Net(stock, network, now)
    m = _build(lines, net, penalties)
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:  # pragma: no cover - GLOP ships with OR-Tools
        raise RuntimeError("GLOP is not available")
    inf = solver.infinity()
    q = float(m.scale)
    line_rows = [solver.Constraint(ln.qty, ln.qty) for ln in lines]
    nb = len(m.buckets)
    free_rows = [solver.Constraint(-inf, float(m.free_cap[b]) / q) for b in range(nb)]
    safety_rows = [solver.Constraint(-inf, float(m.safety_cap[b]) / q) for b in range(nb)]
    objective = solver.Objective()
    for i in range(len(lines)):
        x = solver.NumVar(0.0, inf, "")
        line_rows[i].SetCoefficient(x, 1.0)
        objective.SetCoefficient(x, float(m.unfilled_rate[i]))
    arc_line = m.arc_line.tolist()
    arc_bucket = m.arc_bucket.tolist()
    arc_safety = m.arc_safety.tolist()
    arc_cost = m.arc_cost.tolist()
    for a in range(len(arc_line)):
        x = solver.NumVar(0.0, inf, "")
        line_rows[arc_line[a]].SetCoefficient(x, 1.0)
        (safety_rows if arc_safety[a] else free_rows)[arc_bucket[a]].SetCoefficient(x, 1.0)
        objective.SetCoefficient(x, arc_cost[a])
    objective.SetMinimization()
    status = solver.Solve()
    if status != pywraplp.Solver.OPTIMAL:
        raise RuntimeError(f"GLOP did not reach an optimum (status {status})")
    return float(objective.Value())


# --- the flow model ---------------------------------------------------------------------


@dataclass
class _Model:
    scale: int  # quantity units per flow unit
    buckets: list[tuple[str, str]]  # (sku, node)
    free_cap: IntArray
    safety_cap: IntArray
    supply: IntArray  # per line, scaled
    unfilled_rate: FloatArray  # money per unfilled unit, per line
    arc_line: IntArray
    arc_bucket: IntArray
    arc_safety: BoolArray
    arc_rank: IntArray
    arc_cost: FloatArray  # money per unit (lane + late + substitution)
    arc_icost: IntArray  # integer cost per flow unit, with tie-breaks
    num_arcs: int = 0
    num_nodes: int = 0
    flows: IntArray | None = None  # per arc, after the solve
    unfilled: IntArray | None = None  # per line, after the solve
    comps: tuple[IntArray, IntArray, int] | None = None  # see _components
    groups: tuple[IntArray, list[list[int]]] | None = None  # see _merge_groups
    prices: FloatArray | None = None  # see _bucket_prices, kept once computed


def _ts(moment: datetime | None) -> float:
    return as_utc(moment).timestamp() if moment is not None else float("inf")


def _integral(values: Iterable[float]) -> bool:
    arr = np.fromiter(values, dtype=np.float64)
    return bool(np.all(np.abs(arr - np.round(arr)) < 1e-9))


def _build(lines: Sequence[AllocLine], net: _Net, pen: Penalties) -> _Model:
    """The transportation model as flat arc arrays, built without a Python loop per arc."""
    keys = sorted(k for k in set(net.free) | set(net.safety) if net.free[k] > _EPS or net.safety[k] > _EPS)
    bucket_of = {k: b for b, k in enumerate(keys)}
    whole = _integral(ln.qty for ln in lines) and _integral(v for k in keys for v in (net.free[k], net.safety[k]))
    scale = 1 if whole else 1000
    free_cap = np.array([math.floor(net.free[k] * scale + 1e-6) for k in keys], dtype=np.int64)
    safety_cap = np.array([math.floor(net.safety[k] * scale + 1e-6) for k in keys], dtype=np.int64)
    supply = np.array([round(ln.qty * scale) for ln in lines], dtype=np.int64)

    # Per line: ship-by, late penalty per unit, safety right, carrier.
    carrier_of: dict[str | None, int] = {}
    line_carrier = np.array([carrier_of.setdefault(ln.carrier, len(carrier_of)) for ln in lines], dtype=np.int64)
    ship = np.array([_ts(ln.ship_by) for ln in lines], dtype=np.float64)
    late_rate = np.array([pen.late / ln.qty for ln in lines], dtype=np.float64)
    priv = np.array([ln.privileged for ln in lines], dtype=np.bool_)
    # Next cutoff per (carrier, node rank); −inf where a node has no carrier (never late).
    node_ids = sorted(net.rank, key=net.rank.__getitem__)
    cut_table = np.array(
        [[_ts_or(net.cutoff(n, carrier)[0], float("-inf")) for n in node_ids] for carrier in carrier_of],
        dtype=np.float64,
    ).reshape(len(carrier_of), len(node_ids))

    # Candidate buckets per (sku, region), stored once (CSR), and one (line, option) pair per row.
    cand_of: dict[tuple[str, str], int] = {}
    cand_start = [0]
    cand_bucket: list[int] = []
    cand_lane: list[float] = []
    cand_node: list[int] = []
    pair_line: list[int] = []
    pair_cand: list[int] = []
    pair_rank: list[int] = []
    for i, ln in enumerate(lines):
        for sku, rank in _options(ln):
            k = cand_of.get((sku, ln.region))
            if k is None:
                cands = net.candidates(sku, ln.region)
                cand_bucket.extend(bucket_of[(sku, n)] for n, _ in cands)
                cand_lane.extend(c for _, c in cands)
                cand_node.extend(net.rank[n] for n, _ in cands)
                cand_start.append(len(cand_bucket))
                k = cand_of[(sku, ln.region)] = len(cand_of)
            pair_line.append(i)
            pair_cand.append(k)
            pair_rank.append(rank)
    starts = np.array(cand_start, dtype=np.int64)
    c_bucket = np.array(cand_bucket, dtype=np.int64)
    c_lane = np.array(cand_lane, dtype=np.float64)
    c_node = np.array(cand_node, dtype=np.int64)
    p_line = np.array(pair_line, dtype=np.int64)
    p_cand = np.array(pair_cand, dtype=np.int64)
    p_rank = np.array(pair_rank, dtype=np.int64)
    counts = starts[p_cand + 1] - starts[p_cand]
    # Expand every pair into its candidate arcs.
    pair_of_arc = np.repeat(np.arange(p_line.size, dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    ci = starts[p_cand][pair_of_arc] + np.arange(pair_of_arc.size, dtype=np.int64) - first[pair_of_arc]
    a_line = p_line[pair_of_arc]
    a_rank = p_rank[pair_of_arc]
    a_bucket = c_bucket[ci]
    a_node = c_node[ci]
    late = cut_table[line_carrier[a_line], a_node] > ship[a_line]
    cost = c_lane[ci] + late * late_rate[a_line] + np.where(a_rank >= 0, pen.substitution * (a_rank + 1), 0.0)
    icost = np.rint(cost * COST_SCALE).astype(np.int64) + a_node
    safety_tie = len(net.rank) + 1  # prefer free stock over safety stock at equal cost
    use_free = free_cap[a_bucket] > 0
    use_safety = priv[a_line] & (safety_cap[a_bucket] > 0)
    free_idx = np.nonzero(use_free)[0]
    safety_idx = np.nonzero(use_safety)[0]
    pick = np.concatenate([free_idx, safety_idx])
    return _Model(
        scale=scale,
        buckets=keys,
        free_cap=free_cap,
        safety_cap=safety_cap,
        supply=supply,
        unfilled_rate=np.array([_unfilled_rate(ln, pen) for ln in lines], dtype=np.float64),
        arc_line=a_line[pick],
        arc_bucket=a_bucket[pick],
        arc_safety=np.concatenate([np.zeros(free_idx.size, dtype=np.bool_), np.ones(safety_idx.size, dtype=np.bool_)]),
        arc_rank=a_rank[pick],
        arc_cost=cost[pick].astype(np.float64),
        arc_icost=icost[pick] + np.where(np.arange(pick.size) >= free_idx.size, safety_tie, 0),
    )


def _ts_or(moment: datetime | None, default: float) -> float:
    return as_utc(moment).timestamp() if moment is not None else default


def _components(lines: Sequence[AllocLine], m: _Model) -> tuple[IntArray, IntArray, int]:
    """Independent sub-problems: SKUs linked by substitution share stock, nothing else does.

    Returns the component of every line and of every bucket, and the number of components.
    """
    parent: dict[str, str] = {}

    def find(s: str) -> str:
        root = parent.setdefault(s, s)
        while root != parent[root]:
            root = parent[root]
        while s != root:  # path compression
            parent[s], s = root, parent[s]
        return root

    for ln in lines:
        a = find(ln.sku)
        if ln.allow_substitution:
            for sub in ln.substitutes:
                b = find(sub)
                if a != b:
                    parent[b] = a
    ids: dict[str, int] = {}
    line_comp = np.array([ids.setdefault(find(ln.sku), len(ids)) for ln in lines], dtype=np.int64)
    bucket_comp = np.array([ids.setdefault(find(sku), len(ids)) for sku, _ in m.buckets], dtype=np.int64)
    return line_comp, bucket_comp, len(ids)


def _spans(keys: IntArray, n: int) -> tuple[IntArray, IntArray]:
    """Stable order of ``keys`` (0 ≤ key < n) and the start offset of every key in it."""
    order = np.argsort(keys, kind="stable").astype(np.int64)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=n), out=starts[1:])
    return order, starts


def _merge_groups(lines: Sequence[AllocLine], net: _Net) -> tuple[IntArray, list[list[int]]]:
    """Group splittable lines the flow cannot tell apart: same options, region, safety right,
    unfilled rate and late nodes (and, when any node is late, the same quantity, since the
    late penalty is spread over the line's units). Returns each line's group and the members
    of every group (first member first); one-node lines stay on their own."""
    ids: dict[object, int] = {}
    members: list[list[int]] = []
    group = np.empty(len(lines), dtype=np.int64)
    for i, ln in enumerate(lines):
        if ln.allow_split:
            late = net.late_nodes(ln)
            subs = tuple(ln.substitutes) if ln.allow_substitution else ()
            key: object = (ln.sku, subs, ln.region, ln.privileged, late, ln.qty if late else None)
        else:
            key = i
        g = ids.get(key)
        if g is None:
            g = ids[key] = len(members)
            members.append([])
        members[g].append(i)
        group[i] = g
    return group, members


def _split_back(m: _Model, members: list[list[int]], flows: IntArray, unfilled: IntArray) -> None:
    """Share a merged group's flow (held on its first member) out to its members, in place.

    Members take, in line order, their quantity from the group's arcs cheapest first, then from
    its unfilled flow, so each line uses as few nodes as the group's flow allows.
    """
    multi = [g for g in members if len(g) > 1]
    if not multi:
        return
    arc_order, arc_start = _spans(m.arc_line, len(m.supply))
    starts = arc_start.tolist()
    supply = m.supply.tolist()
    icost = m.arc_icost
    for g in multi:
        rep = g[0]
        rep_arcs = arc_order[starts[rep] : starts[rep + 1]]
        f = flows[rep_arcs]
        nz = np.nonzero(f)[0]
        seq: list[list[int]] = [[int(k), int(f[k])] for k in nz[np.lexsort((nz, icost[rep_arcs[nz]]))]]
        seq.append([-1, int(unfilled[rep])])
        flows[rep_arcs] = 0
        unfilled[rep] = 0
        at = 0
        for i in g:
            own = arc_order[starts[i] : starts[i + 1]]
            need = supply[i]
            while need > 0:
                k, left = seq[at]
                take = min(need, left)
                if k >= 0:
                    flows[own[k]] += take
                else:
                    unfilled[i] += take
                need -= take
                seq[at][1] = left - take
                if left == take:
                    at += 1


def _solve_flow(
    lines: Sequence[AllocLine], m: _Model, net: _Net, *, with_parts: bool = True
) -> tuple[list[list[_Part]], float]:
    """Solve the transportation problem; return per-line parts and the flow's money objective.

    The problem falls apart into independent components (SKUs linked by substitution); each is
    solved as its own min-cost flow, which is exact and much faster than one large network.
    """
    n_lines, n_b = len(lines), len(m.buckets)
    if m.comps is None:
        m.comps = _components(lines, m)
    line_comp, bucket_comp, n_comp = m.comps
    # Identical splittable lines share one flow node (exact for the LP); split back below.
    if m.groups is None:
        m.groups = _merge_groups(lines, net)
    group, members = m.groups
    is_rep = np.zeros(n_lines, dtype=np.bool_)
    is_rep[[g[0] for g in members]] = True
    g_supply = np.zeros(len(members), dtype=np.int64)
    np.add.at(g_supply, group, m.supply)
    rep_arc = is_rep[m.arc_line]
    arc_comp = line_comp[m.arc_line]
    line_order, line_start = _spans(np.where(is_rep, line_comp, n_comp), n_comp + 1)
    bucket_order, bucket_start = _spans(bucket_comp, n_comp)
    arc_order, arc_start = _spans(np.where(rep_arc, arc_comp, n_comp), n_comp + 1)
    local_line = np.zeros(n_lines, dtype=np.int64)
    local_bucket = np.zeros(n_b, dtype=np.int64)
    flows = np.zeros(len(m.arc_line), dtype=np.int64)
    unfilled = np.where(is_rep, g_supply[group], 0)  # groups without any arc stay unfilled
    unfilled_cost = np.rint(m.unfilled_rate * COST_SCALE).astype(np.int64)
    num_arcs = num_nodes = 0
    for c in range(n_comp):
        arcs = arc_order[arc_start[c] : arc_start[c + 1]]
        if arcs.size == 0:
            continue
        li = line_order[line_start[c] : line_start[c + 1]]
        bi = bucket_order[bucket_start[c] : bucket_start[c + 1]]
        nl, nb = li.size, bi.size
        local_line[li] = np.arange(nl, dtype=np.int64)
        local_bucket[bi] = np.arange(nb, dtype=np.int64)
        sink = nl + 2 * nb
        smcf = min_cost_flow.SimpleMinCostFlow()
        tails = local_line[m.arc_line[arcs]]
        b_local = local_bucket[m.arc_bucket[arcs]]
        heads = np.where(m.arc_safety[arcs], nl + nb + b_local, nl + b_local)
        line_arcs = smcf.add_arcs_with_capacity_and_unit_cost(
            tails, heads, g_supply[group[m.arc_line[arcs]]], m.arc_icost[arcs]
        )
        supply = g_supply[group[li]]
        sinks_l = np.full(nl, sink, dtype=np.int64)
        # line → sink: left unfilled
        unfilled_arcs = smcf.add_arcs_with_capacity_and_unit_cost(
            np.arange(nl, dtype=np.int64), sinks_l, supply, unfilled_cost[li]
        )
        # buckets → sink; safety stock costs a tie-break more than free stock (on the line arcs)
        b_idx = np.arange(nb, dtype=np.int64)
        sinks_b = np.full(nb, sink, dtype=np.int64)
        zero = np.zeros(nb, dtype=np.int64)
        smcf.add_arcs_with_capacity_and_unit_cost(nl + b_idx, sinks_b, m.free_cap[bi], zero)
        smcf.add_arcs_with_capacity_and_unit_cost(nl + nb + b_idx, sinks_b, m.safety_cap[bi], zero)
        smcf.set_nodes_supplies(np.append(np.arange(nl, dtype=np.int64), sink), np.append(supply, -int(supply.sum())))
        status = smcf.solve()
        if status != smcf.OPTIMAL:
            raise RuntimeError(f"min-cost flow did not reach an optimum (status {status})")
        num_arcs += smcf.num_arcs()
        num_nodes += smcf.num_nodes()
        flows[arcs] = smcf.flows(line_arcs)
        unfilled[li] = smcf.flows(unfilled_arcs)
    _split_back(m, members, flows, unfilled)
    m.num_arcs = num_arcs
    m.num_nodes = num_nodes
    m.flows = flows
    m.prices = None
    m.unfilled = unfilled
    q = float(m.scale)
    objective = float((flows * m.arc_cost).sum() / q + (unfilled * m.unfilled_rate).sum() / q)
    return (_flow_parts(lines, m, net) if with_parts else []), objective


def _flow_parts(lines: Sequence[AllocLine], m: _Model, net: _Net) -> list[list[_Part]]:
    """The solved flow as parts per line (one per node and SKU), by node id."""
    assert m.flows is not None
    flows = m.flows
    q = float(m.scale)
    parts: list[list[_Part]] = [[] for _ in lines]
    merged: dict[tuple[int, str, str], _Part] = {}
    used = np.nonzero(flows)[0]
    buckets = m.buckets
    for i, b, f, rank, is_safety in zip(
        m.arc_line[used].tolist(),
        m.arc_bucket[used].tolist(),
        flows[used].tolist(),
        m.arc_rank[used].tolist(),
        m.arc_safety[used].tolist(),
        strict=True,
    ):
        ln = lines[i]
        sku, node = buckets[b]
        qty = f / q
        key = (i, node, sku)
        part = merged.get(key)
        if part is None:
            lane = net.lanes[(node, ln.region)].cost_per_unit
            part = _Part(node, sku, 0.0, 0.0, net.late(ln, node), rank, lane)
            merged[key] = part
            parts[i].append(part)
        part.qty += qty
        if is_safety:
            part.safety_qty += qty
    for p in parts:
        if len(p) > 1:
            p.sort(key=lambda x: (net.rank[x.node], x.sku))
    return parts


def _flow_splits_pinned(lines: Sequence[AllocLine], m: _Model, net: _Net, pinned: list[list[int]]) -> bool:
    """Does the solved flow send any one-node order to more than one node?"""
    assert m.flows is not None
    order_of = np.full(len(lines), -1, dtype=np.int64)
    for k, idx in enumerate(pinned):
        order_of[idx] = k
    used = np.nonzero(m.flows)[0]
    orders = order_of[m.arc_line[used]]
    keep = orders >= 0
    if not keep.any():
        return False
    node_of_bucket = np.array([net.rank[n] for _, n in m.buckets], dtype=np.int64)
    nodes = node_of_bucket[m.arc_bucket[used[keep]]]
    pairs = np.unique(orders[keep] * (len(net.rank) + 1) + nodes)
    return bool(np.unique(pairs // (len(net.rank) + 1)).size < pairs.size)


# --- split repair -------------------------------------------------------------------------


def _cheapest_whole_line(
    line: AllocLine, net: _Net, state: _State, pen: Penalties
) -> tuple[float, str, str, int] | None:
    best: tuple[float, int, str, str, int] | None = None
    for sku, rank in _options(line):
        extra = pen.substitution * (rank + 1) if rank >= 0 else 0.0
        for node, lane in net.candidates(sku, line.region):
            # cheapest lane first: once the lane alone costs more than the best, stop this SKU
            if best is not None and line.qty * (lane + extra if rank >= 0 else lane) > best[0]:
                break
            if state.avail(sku, node, line.privileged) + _EPS < line.qty:
                continue
            cost = line.qty * _unit_cost(line, lane, net.late(line, node), rank, pen)
            if best is None or (cost, net.rank[node]) < (best[0] - 1e-9, best[1]):
                best = (cost, net.rank[node], node, sku, rank)
    return None if best is None else (best[0], best[2], best[3], best[4])


def _repair(
    lines: Sequence[AllocLine],
    parts: list[list[_Part]],
    net: _Net,
    state: _State,
    pen: Penalties,
    orders: list[list[int]] | None = None,
) -> int:
    """Enforce allow_split=False per order; move split lines to one node when that is cheaper."""
    repaired = 0
    for idx in _group_orders(lines) if orders is None else orders:
        if not lines[idx[0]].allow_split:
            if len({p.node for i in idx for p in parts[i]}) <= 1:
                continue
            for i in idx:
                for p in parts[i]:
                    state.give_back(p)
            single, _ = _best_single_node([lines[i] for i in idx], net, state, pen)
            for i, line_parts in zip(idx, single, strict=True):
                parts[i] = line_parts
            repaired += 1
            continue
        for i in idx:
            ln = lines[i]
            if len({p.node for p in parts[i]}) <= 1:
                continue
            current = _parts_cost(ln, parts[i], pen)
            for p in parts[i]:
                state.give_back(p)
            pick = _cheapest_whole_line(ln, net, state, pen)
            if pick is not None and pick[0] < current - 1e-9:
                _, node, sku, rank = pick
                parts[i] = [_part(ln, net, state, node, sku, rank, ln.qty)]
                repaired += 1
            else:
                for p in parts[i]:
                    state.consume(p)
    return repaired


def _consolidate(lines: Sequence[AllocLine], parts: list[list[_Part]], net: _Net, orders: list[list[int]]) -> int:
    """Move each split order of the plan to one node when one node serves it as well (the policy's
    split-only-for-service rule), in priority order, on the stock the rest of the plan leaves.
    Returns how many orders moved."""
    state = _State(net)
    _consume_all(parts, state)
    moved = 0
    for idx in orders:
        if len({p.node for i in idx for p in parts[i]}) <= 1:
            continue
        order_lines = [lines[i] for i in idx]
        before = [parts[i] for i in idx]
        after = _single_if_as_good(order_lines, before, net, state)
        if after is not before:
            moved += 1
            for i, line_parts in zip(idx, after, strict=True):
                parts[i] = line_parts
    return moved


# --- the plan and its evidence ------------------------------------------------------------


def _compose(
    lines: Sequence[AllocLine], parts: Sequence[Sequence[_Part]], net: _Net, pen: Penalties, stats: SolverStats
) -> AllocationPlan:
    assignments: list[Assignment] = []
    unfilled: dict[LineKey, float] = {}
    substitutions: dict[LineKey, str] = {}
    evidence: dict[LineKey, str] = {}
    shipping = late = split = unfilled_cost = substitution = 0.0
    splits = 0
    for ln, ps in zip(lines, parts, strict=True):
        if len(ps) > 1:
            ps = sorted(ps, key=lambda p: (net.rank[p.node], p.rank, p.sku))
        rest = ln.qty - sum(p.qty for p in ps)
        if rest > 1e-7:
            unfilled[ln.key] = rest
            unfilled_cost += rest * _unfilled_rate(ln, pen)
        nodes = {p.node for p in ps}
        if len(nodes) > 1:
            splits += 1
            split += pen.split * (len(nodes) - 1)
        for p in ps:
            assignments.append(
                Assignment(ln.order_id, ln.line, p.node, p.sku, p.qty, p.late, p.safety_qty > _EPS, p.safety_qty)
            )
            shipping += p.qty * p.lane
            if p.late:
                late += p.qty * pen.late / ln.qty
            if p.rank >= 0:
                substitution += p.qty * pen.substitution * (p.rank + 1)
        subs = sorted((p.rank, p.sku) for p in ps if p.rank >= 0)
        if subs:
            substitutions[ln.key] = subs[0][1]
        evidence[ln.key] = _explain(ln, ps, max(0.0, rest), net)
    cost = CostBreakdown(shipping, late, split, unfilled_cost, substitution)
    final = SolverStats(
        stats.solver,
        stats.status,
        stats.wall_ms,
        stats.arcs,
        stats.nodes,
        splits,
        stats.repaired,
        stats.lower_bound,
        dict(stats.phases_ms),
    )
    return AllocationPlan(assignments, unfilled, substitutions, cost, evidence, final)


def _who(line: AllocLine) -> str:
    if line.priority == "express":
        return "express order"
    return "gold customer" if line.tier == "gold" else "standard order"


def _stock_note(line: AllocLine, node: str, sku: str, net: _Net) -> str:
    free = net.free.get((sku, node), 0.0)
    safety = net.safety.get((sku, node), 0.0)
    note = f"{node} had {free:g} free"
    if safety > _EPS:
        note += f" + {safety:g} safety" + ("" if line.privileged else " kept back for express/gold orders")
    return note + f" of {sku}"


def _why_not(line: AllocLine, node: str, net: _Net) -> str:
    """Why a cheaper node did not serve the line: lateness, stock, or competition (cached)."""
    late = net.late(line, node)
    key = (node, line.sku, line.qty, line.privileged, line.allow_split, line.carrier if late else None, late)
    got = net.why_cache.get(key)
    if got is None:
        got = net.why_cache[key] = _why_not_text(line, node, net)
    return got


def _why_not_text(line: AllocLine, node: str, net: _Net) -> str:
    if net.late(line, node):
        _, label = net.cutoff(node, line.carrier)
        return f"{node} would ship late for the {label} cutoff"
    have = net.free.get((line.sku, node), 0.0) + (net.safety.get((line.sku, node), 0.0) if line.privileged else 0.0)
    if have + _EPS < line.qty:
        return _stock_note(line, node, line.sku, net)
    if not line.allow_split:
        return f"{node} had the stock but the order must ship from one node"
    return f"{node}'s {line.sku} went to other lines in the batch"


def _explain(line: AllocLine, parts: Sequence[_Part], rest: float, net: _Net) -> str:
    sentences: list[str] = []
    region_nodes = net.region_nodes(line.region)
    if parts:
        main = parts[0] if len(parts) == 1 else max(parts, key=lambda p: (p.qty, -net.rank[p.node]))
        served = ", ".join(f"{p.qty:g} × {p.sku} from {p.node} at {p.lane:g}/unit" for p in parts)
        _, label = net.cutoff(main.node, line.carrier)
        head = f"Served {served}"
        if main.late and line.ship_by is not None:
            due = f"{as_utc(line.ship_by):%Y-%m-%d %H:%M}"
            head += f", late: the next cutoff at {main.node} ({label}) is after ship-by {due}"
        elif line.ship_by is not None and label != "no carrier":
            head += f", on time for the {label} cutoff"
        sentences.append(head)
        used = {p.node for p in parts}
        cheaper: list[str] = []  # region_nodes is sorted by lane cost: the first three will do
        for n, c in region_nodes:
            if not c < main.lane - 1e-12:
                break
            if n not in used:
                cheaper.append(n)
                if len(cheaper) == 3:
                    break
        if cheaper:
            sentences.append("Binding: " + "; ".join(_why_not(line, n, net) for n in cheaper[:3]))
        else:
            sentences.append(f"Binding: none, the cheapest lane to {line.region} had the stock")
        for p in parts:
            if p.safety_qty > _EPS:
                sentences.append(f"Used {p.safety_qty:g} units of safety stock at {p.node} ({_who(line)})")
            if p.rank >= 0:
                sentences.append(
                    f"Substituted {p.sku} (substitute #{p.rank + 1}) for {line.sku}: no on-time node could fill "
                    f"{line.qty:g} × {line.sku}"
                )
        if len(used) > 1:
            best = net.region_stock(line.sku, line.region)[2]
            sentences.append(
                f"Split across {', '.join(sorted(used))}: no single node could serve {line.qty:g} "
                f"(most free at one node: {best[0]:g} at {best[1]})"
            )
    if rest > 1e-7:
        if not region_nodes:
            sentences.append(f"{rest:g} units unfilled: no node has a lane to region {line.region}")
        else:
            free, safety, _ = net.region_stock(line.sku, line.region)
            why = f"{rest:g} units unfilled: nodes with a lane to {line.region} held {free:g} free {line.sku}"
            if safety > _EPS:
                why += (
                    f" + {safety:g} safety stock"
                    if line.privileged
                    else f"; {safety:g} safety stock was kept back ({_who(line)}; only express/gold may use it)"
                )
            if free + (safety if line.privileged else 0.0) + _EPS >= line.qty:
                why += "; the rest went to other lines" + (
                    "" if line.allow_split else " or the order must ship from one node"
                )
            sentences.append(why)
    return ". ".join(sentences) + "."
