"""The exact allocation problem as a MIP — the proof beside the batch optimiser.

``optimise`` (``domain.engines.allocation``) solves the transportation LP as a min-cost flow and
then repairs the plan for the rule that some orders must ship from one node; its LP bound ignores
that rule, so it cannot say how far the plan is from the best one. ``exact`` states the whole
problem — the same objective ``optimise`` minimises, with every rule — as a mixed-integer program
and hands it to SCIP (through OR-Tools' ``pywraplp``) with a time limit:

* ``x[i, o, n]`` (integer, in the flow's quantity units): units of option ``o`` (the line's SKU or
  a listed substitute, when the order allows) shipped to line ``i`` from node ``n``; per unit it
  costs the lane, the late penalty spread over the line's units when ``n``'s next cutoff is after
  the line's ship-by, and the substitution penalty (``_unit_cost``);
* ``u[i]``: units left unfilled, at ``_unfilled_rate`` (express/gold lines cost more);
* stock per (SKU, node): standard lines take at most the free stock; all lines together at most
  free + safety (express/gold lines may use the safety reserve);
* an order that may not split picks one node (binary ``y[order, n]``, at most one) and every unit
  of its lines comes from that node;
* a splittable line that uses k nodes pays the split penalty k − 1 times (binary ``z[i, n]``).

``exact`` returns the best plan's objective (recomputed from its units with the engine's cost
functions, not read off the solver), a proven lower bound (the better of SCIP's and the LP
relaxation's, which GLOP solves first) and the status: OPTIMAL when the bound meets the
objective, FEASIBLE when the time ran out first, so a gap computed from it is honest either way.
``polish`` runs the same MIP from a plan within a node and time limit (``optimise`` uses it on
small batches). ``components`` splits a batch into independent sub-problems (lines linked by
shared SKU stock: a line's options, and every line of an order that must ship whole) so a large
batch can be proven piece by piece. Pure: no I/O.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ortools.linear_solver import pywraplp

from domain.context import Network
from domain.engines.allocation import (
    AllocationPlan,
    AllocLine,
    NodeStockView,
    Penalties,
    _check_lines,
    _group_orders,
    _integral,
    _Net,
    _options,
    _Part,
    _part,
    _State,
    _unfilled_rate,
    _unit_cost,
)

Status = Literal["OPTIMAL", "FEASIBLE", "NO_SOLUTION"]


@dataclass(frozen=True)
class ExactResult:
    objective: float | None  # the best plan found (money), None when the time ran out before one
    bound: float  # proven: no plan that keeps every rule costs less
    status: Status
    wall_ms: float
    variables: int
    binaries: int
    # (order_id, line, node, sku, qty) of the best plan
    assignments: tuple[tuple[str, int, str, str, float], ...] = ()

    @property
    def gap(self) -> float | None:
        """(objective − bound) / objective: 0 when proven optimal."""
        if self.objective is None:
            return None
        return max(0.0, self.objective - self.bound) / max(1.0, abs(self.objective))


def components(lines: Sequence[AllocLine]) -> list[list[int]]:
    """Independent sub-problems: indices of the lines that share SKU stock, directly or through
    a chain (a line links its own SKU and its substitutes; an order that must ship from one node
    links all its lines). Every line is in exactly one component; ordered by first line."""
    parent: dict[str, str] = {}

    def find(s: str) -> str:
        root = parent.setdefault(s, s)
        while root != parent[root]:
            root = parent[root]
        while s != root:
            parent[s], s = root, parent[s]
        return root

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    for ln in lines:
        for sku, _ in _options(ln):
            union(ln.sku, sku)
    for idx in _group_orders(lines):
        if not lines[idx[0]].allow_split:
            for i in idx[1:]:
                union(lines[idx[0]].sku, lines[i].sku)
    by_root: dict[str, list[int]] = {}
    for i, ln in enumerate(lines):
        by_root.setdefault(find(ln.sku), []).append(i)
    return list(by_root.values())


def component_stock(lines: Sequence[AllocLine], stock: Iterable[NodeStockView]) -> list[NodeStockView]:
    """The stock views a set of lines can draw on (their SKUs and substitutes)."""
    skus = {sku for ln in lines for sku, _ in _options(ln)}
    return [v for v in stock if v.sku in skus]


def plan_cost(
    plan: AllocationPlan,
    lines: Sequence[AllocLine],
    stock: Iterable[NodeStockView],
    network: Network,
    now: datetime,
    penalties: Penalties = Penalties(),  # noqa: B008 - frozen, immutable default
) -> float:
    """What ``plan`` costs for ``lines`` only (a subset of its batch), with the engine's cost
    functions; over all of the plan's lines it equals ``plan.objective``."""
    net = _Net(stock, network, now)
    parts: dict[tuple[str, int], list[tuple[str, str, float]]] = defaultdict(list)
    for a in plan.assignments:
        parts[(a.order_id, a.line)].append((a.node, a.sku, a.qty))
    return sum(_line_cost(ln, parts.get(ln.key, []), net, penalties) for ln in lines)


def _line_cost(line: AllocLine, parts: Sequence[tuple[str, str, float]], net: _Net, pen: Penalties) -> float:
    rank_of = dict(_options(line))
    filled = cost = 0.0
    for node, sku, qty in parts:
        lane = net.lanes[(node, line.region)].cost_per_unit
        cost += qty * _unit_cost(line, lane, net.late(line, node), rank_of[sku], pen)
        filled += qty
    cost += max(0.0, line.qty - filled) * _unfilled_rate(line, pen)
    nodes = len({node for node, _, _ in parts})
    return cost + pen.split * max(0, nodes - 1)


def exact(
    lines: Sequence[AllocLine],
    stock: Iterable[NodeStockView],
    network: Network,
    now: datetime,
    penalties: Penalties = Penalties(),  # noqa: B008
    *,
    time_limit_s: float = 60.0,
    hint: AllocationPlan | None = None,
) -> ExactResult:
    """Solve the allocation problem with every rule exactly (SCIP, at most ``time_limit_s``).

    ``hint``: a plan of the same batch to start from (for example ``optimise``'s); the solver only
    uses it as a first incumbent, the result never depends on it being good.
    """
    started = time.perf_counter()
    _check_lines(lines)
    stock = list(stock)
    net = _Net(stock, network, now)
    start: list[list[tuple[str, str, float]]] | None = None
    if hint is not None:
        index = {ln.key: i for i, ln in enumerate(lines)}
        start = [[] for _ in lines]
        for a in hint.assignments:
            i = index.get((a.order_id, a.line))
            if i is None:
                start = None  # not a plan of this batch
                break
            start[i].append((a.node, a.sku, a.qty))
    # The LP relaxation first (GLOP, fast): its optimum is a proven bound even when SCIP's own
    # root LP does not finish in the time; then the MIP with the time that is left.
    relaxed = _solve(lines, net, penalties, time_limit_s=time_limit_s, relax=True)
    left = max(0.001, time_limit_s - (time.perf_counter() - started))
    got = _solve(lines, net, penalties, time_limit_s=left, start=start)
    wall = (time.perf_counter() - started) * 1000
    bound = max(got.bound, relaxed.bound)
    if got.objective is not None:
        bound = min(bound, got.objective)
    flat = tuple(
        sorted(
            (ln.order_id, ln.line, node, sku, qty)
            for ln, ps in zip(lines, got.parts, strict=True)
            for node, sku, qty in ps
        )
    )
    return ExactResult(got.objective, bound, got.status, wall, got.variables, got.binaries, flat)


def polish(
    lines: Sequence[AllocLine],
    net: _Net,
    pen: Penalties,
    parts: Sequence[Sequence[_Part]],
    *,
    time_limit_s: float,
    node_limit: int,
) -> list[list[_Part]] | None:
    """The MIP started from ``parts`` (a plan of ``lines`` on ``net``'s stock), within a node limit
    and ``time_limit_s`` of CPU time: its best plan as parts, or None when it found none. Used by ``optimise`` to
    polish small batches; the plan keeps every rule by construction (and ``_State.take`` checks)."""
    start = [[(p.node, p.sku, p.qty) for p in ps] for ps in parts]
    got = _solve(
        lines, net, pen, time_limit_s=time_limit_s, start=start, node_limit=node_limit, reserve=0.25, cpu_clock=True
    )
    if got.objective is None:
        return None
    state = _State(net)
    out: list[list[_Part]] = [[] for _ in lines]
    # Standard lines first: they take free stock only, so express/gold lines find theirs
    # (free first, then the safety reserve) still there.
    for i in sorted(range(len(lines)), key=lambda i: lines[i].privileged):
        ln = lines[i]
        rank_of = dict(_options(ln))
        out[i] = [_part(ln, net, state, node, sku, rank_of[sku], qty) for node, sku, qty in got.parts[i]]
    return out


@dataclass
class _Solved:
    objective: float | None
    bound: float
    status: Status
    parts: list[list[tuple[str, str, float]]]  # per line: (node, sku, qty)
    variables: int
    binaries: int


def _solve(
    lines: Sequence[AllocLine],
    net: _Net,
    pen: Penalties,
    *,
    time_limit_s: float,
    start: Sequence[Sequence[tuple[str, str, float]]] | None = None,
    node_limit: int | None = None,
    reserve: float = 0.0,
    relax: bool = False,
    cpu_clock: bool = False,
) -> _Solved:
    """Build and solve the MIP (SCIP), or with ``relax`` its LP relaxation (GLOP: a bound only).

    ``reserve``: the share of the time left after building that SCIP does not get (its clock
    starts after the model is handed over, and the solution is read back after it stops).
    ``cpu_clock``: the limit is in CPU seconds of this process (SCIP's ``timing/clocktype`` 1),
    so a busy machine does not cut the work short."""
    clock = time.process_time if cpu_clock else time.perf_counter
    deadline = clock() + time_limit_s  # building the model counts
    solver = pywraplp.Solver.CreateSolver("GLOP" if relax else "SCIP")
    if solver is None:  # pragma: no cover - both ship with OR-Tools
        raise RuntimeError("SCIP or GLOP is not available in this OR-Tools build")
    int_var = solver.NumVar if relax else solver.IntVar

    def bool_var() -> pywraplp.Variable:
        return solver.NumVar(0, 1, "") if relax else solver.BoolVar("")

    stocked = [v for k in set(net.free) | set(net.safety) for v in (net.free.get(k, 0.0), net.safety.get(k, 0.0))]
    scale = 1 if _integral(ln.qty for ln in lines) and _integral(stocked) else 1000  # as the flow model

    def units(q: float) -> int:
        return math.floor(q * scale + 1e-6)

    objective = solver.Objective()
    xs: dict[tuple[int, str, str], pywraplp.Variable] = {}  # (line, sku, node)
    std_use: dict[tuple[str, str], list[pywraplp.Variable]] = defaultdict(list)
    all_use: dict[tuple[str, str], list[pywraplp.Variable]] = defaultdict(list)
    at_node: list[dict[str, list[pywraplp.Variable]]] = [defaultdict(list) for _ in lines]
    room: list[dict[str, int]] = [defaultdict(int) for _ in lines]  # most line i can get at a node
    unfilled: list[pywraplp.Variable] = []
    binaries = 0
    for i, ln in enumerate(lines):
        q = round(ln.qty * scale)
        row = solver.Constraint(q, q)
        u = int_var(0, q, "")
        row.SetCoefficient(u, 1)
        objective.SetCoefficient(u, _unfilled_rate(ln, pen) / scale)
        unfilled.append(u)
        for sku, rank in _options(ln):
            for node, lane in net.candidates(sku, ln.region):
                key = (sku, node)
                cap = units(net.free.get(key, 0.0) + (net.safety.get(key, 0.0) if ln.privileged else 0.0))
                if cap <= 0:
                    continue
                x = int_var(0, min(q, cap), "")
                row.SetCoefficient(x, 1)
                objective.SetCoefficient(x, _unit_cost(ln, lane, net.late(ln, node), rank, pen) / scale)
                xs[(i, sku, node)] = x
                all_use[key].append(x)
                if not ln.privileged:
                    std_use[key].append(x)
                at_node[i][node].append(x)
                room[i][node] = min(q, room[i][node] + cap)
    for key, use in all_use.items():
        _at_most(solver, use, units(net.free.get(key, 0.0) + net.safety.get(key, 0.0)))
    for key, use in std_use.items():
        _at_most(solver, use, units(net.free.get(key, 0.0)))
    # One node per order that may not split; the split penalty for lines that may.
    ys: dict[tuple[int, str], pywraplp.Variable] = {}
    zs: dict[tuple[int, str], pywraplp.Variable] = {}
    orders = _group_orders(lines)
    for k, idx in enumerate(orders):
        if lines[idx[0]].allow_split:
            for i in idx:
                if round(lines[i].qty * scale) < 2 or len(at_node[i]) < 2:
                    continue  # one unit, or one node: it cannot split
                split = solver.NumVar(0, solver.infinity(), "")
                objective.SetCoefficient(split, pen.split)
                many = solver.Constraint(-1, solver.infinity())  # split ≥ Σ z − 1
                many.SetCoefficient(split, 1)
                for node, vs in at_node[i].items():
                    z = bool_var()
                    binaries += 1
                    zs[(i, node)] = z
                    many.SetCoefficient(z, -1)
                    _link(solver, vs, z, room[i][node])
            continue
        nodes = sorted({n for i in idx for n in at_node[i]})
        if len(nodes) < 2:
            continue
        one = solver.Constraint(0, 1)
        for node in nodes:
            y = bool_var()
            binaries += 1
            ys[(k, node)] = y
            one.SetCoefficient(y, 1)
            for i in idx:
                if node in at_node[i]:
                    _link(solver, at_node[i][node], y, room[i][node])
    objective.SetMinimization()
    if start is not None and not relax:
        _set_hint(solver, lines, start, scale, xs, ys, zs, unfilled, orders)
    solver.SetTimeLimit(max(1, int((1 - reserve) * (deadline - clock()) * 1000)))
    params = pywraplp.MPSolverParameters()
    if not relax:
        # Probing in presolve costs more than it finds on these models; the node limit makes a
        # short polish deterministic (the time limit only binds on a slow machine).
        settings = ["propagating/probing/maxprerounds = 0", f"timing/clocktype = {1 if cpu_clock else 2}"]
        if node_limit is not None:  # a polish: few cut rounds at the root, to reach its heuristics sooner
            settings += [f"limits/nodes = {node_limit}", "separating/maxroundsroot = 3"]
        solver.SetSolverSpecificParametersAsString("\n".join(settings) + "\n")
        params.SetDoubleParam(pywraplp.MPSolverParameters.RELATIVE_MIP_GAP, 1e-7)
    status = solver.Solve(params)
    nvars = solver.NumVariables()
    parts: list[list[tuple[str, str, float]]] = [[] for _ in lines]
    if relax:  # the relaxation's optimum is a bound; its fractional plan is no plan
        bound = float(objective.Value()) if status == pywraplp.Solver.OPTIMAL else -math.inf
        return _Solved(None, bound, "NO_SOLUTION", parts, nvars, binaries)
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return _Solved(None, -math.inf, "NO_SOLUTION", parts, nvars, binaries)
    for (i, sku, node), x in xs.items():
        v = round(x.solution_value())
        if v > 0:
            parts[i].append((node, sku, v / scale))
    value = sum(_line_cost(ln, p, net, pen) for ln, p in zip(lines, parts, strict=True))
    bound = min(float(objective.BestBound()), value)
    proven = status == pywraplp.Solver.OPTIMAL and value - bound <= 1e-6 * max(1.0, abs(value))
    return _Solved(value, bound, "OPTIMAL" if proven else "FEASIBLE", parts, nvars, binaries)


def _at_most(solver: pywraplp.Solver, xs: Sequence[pywraplp.Variable], cap: int) -> None:
    row = solver.Constraint(0, cap)
    for x in xs:
        row.SetCoefficient(x, 1)


def _link(solver: pywraplp.Solver, xs: Sequence[pywraplp.Variable], flag: pywraplp.Variable, qty: int) -> None:
    """Σ xs ≤ qty · flag: nothing from this node unless the flag is set (``qty``: the most the
    line can get there, which keeps the relaxation tight)."""
    row = solver.Constraint(-solver.infinity(), 0)
    for x in xs:
        row.SetCoefficient(x, 1)
    row.SetCoefficient(flag, -qty)


def _set_hint(
    solver: pywraplp.Solver,
    lines: Sequence[AllocLine],
    start: Sequence[Sequence[tuple[str, str, float]]],
    scale: int,
    xs: dict[tuple[int, str, str], pywraplp.Variable],
    ys: dict[tuple[int, str], pywraplp.Variable],
    zs: dict[tuple[int, str], pywraplp.Variable],
    unfilled: Sequence[pywraplp.Variable],
    orders: Sequence[Sequence[int]],
) -> None:
    """A full solution (x, u, y, z) from per-line parts, as the solver's first incumbent."""
    value: dict[pywraplp.Variable, float] = {x: 0.0 for x in xs.values()}
    nodes_of: list[set[str]] = [set() for _ in lines]
    for i, ln in enumerate(lines):
        filled = 0
        for node, sku, qty in start[i]:
            x = xs.get((i, sku, node))
            if x is None:
                return  # a part the model has no variable for: no hint
            v = round(qty * scale)
            value[x] += v
            filled += v
            nodes_of[i].add(node)
        value[unfilled[i]] = max(0, round(ln.qty * scale) - filled)
    for (i, node), z in zs.items():
        value[z] = 1.0 if node in nodes_of[i] else 0.0
    for (k, node), y in ys.items():
        value[y] = 1.0 if any(node in nodes_of[i] for i in orders[k]) else 0.0
    hinted = list(value)
    solver.SetHint(hinted, [float(value[v]) for v in hinted])
