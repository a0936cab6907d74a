"""Wave planning: score releasable orders and build waves that fit zone capacity and cutoffs.

Pure and deterministic: no I/O, no clock (``simulate_day`` takes an optional timer from
the caller for measuring planning time, and never lets it change a decision).

Model
-----
* Each :class:`ReleasableOrder` is the part of an order that one node picks in one work
  zone and ships with one carrier. Capacity is counted in order lines (one line = one pick)
  against the zone's ``pick_capacity_per_hour``.
* The cutoff of a (node, zone, carrier) group is the carrier's next cutoff at/after ``now``.
* Per zone, orders are sequenced earliest cutoff first (a truck leaves at the cutoff, so
  nothing with a later truck may take capacity from an earlier one), then carrier, then
  score (most urgent first), then creation time and id. Walking that sequence (lines already
  queued in the zone come first), each order is added to the zone's on-time set; whenever
  the lines due by the newest order's cutoff exceed ``rate × hours to that cutoff``, one order
  leaves the set (Moore–Hodgson, which maximises the number of orders that make their trucks):
  the largest *standard* order if dropping it alone frees enough lines, otherwise the largest
  order of all, express/gold included (``protect_priority=False``: always the largest order).
  An order left out is **missed**: not waved (a wave would miss the truck), it takes no
  capacity, and it gets a new promise date: the day of the carrier's *following* cutoff (next
  cutoff + 1 day) with **0 transit days added** — the date the order can ship, which the OMS
  may extend by transit; its evidence names the rule and the order whose cutoff bound it.
  Each order kept finishes at ``now + (lines queued + kept lines up to and including it) / rate``:

  - kept orders are feasible and consume capacity; they are **waved** while they
    fit in what the zone can pick over the planning window (``rate × window_hours`` minus the
    lines already queued), as a strict prefix of the sequence so the next plan keeps the order;
    the remaining feasible orders are **deferred** to a later plan (no action);
  - an order that cannot be planned at all (unknown node, zone or carrier, a zone with no
    capacity, more lines than one planning window holds) is **unplanned**, with the reason.

  Every order ends in exactly one of waved / missed / deferred / unplanned.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from domain.context import WaveView
from domain.decisions import Action
from domain.engines.clock import as_utc, next_cutoff
from domain.models import Carrier, Node, Zone
from domain.rationale import num

ENGINE_VERSION = "waves/1.1.0"
EPS = 1e-9

# Score weights: the maximum points of each component; they add up to 100.
CUTOFF_POINTS = 30.0  # full at the cutoff, 0 when it is CUTOFF_HORIZON_H or more away
CUTOFF_HORIZON_H = 12.0
URGENCY_POINTS = 25.0  # full when ship_by / promised is due now or overdue, 0 at URGENCY_HORIZON_H
URGENCY_HORIZON_H = 48.0
EXPRESS_POINTS = 15.0
GOLD_POINTS = 10.0
DENSITY_POINTS = 10.0  # full at DENSITY_FULL_LINES lines in the zone
DENSITY_FULL_LINES = 5
SPLIT_POINTS = 10.0


@dataclass(frozen=True, kw_only=True)
class ReleasableOrder:
    """The part of an order one node picks in one zone and ships with one carrier."""

    order_id: str
    node: str
    zone: str
    carrier: str
    lines: list[tuple[int, str, float]]
    priority: Literal["standard", "express"] = "standard"
    tier: Literal["standard", "gold"] = "standard"
    ship_by: datetime | None = None
    promised: date | None = None
    created: datetime
    allow_split: bool = True
    split: bool = False

    @property
    def key(self) -> str:
        """Identity within a plan: one order may have parts at several nodes."""
        return f"{self.order_id}@{self.node}"

    @property
    def picks(self) -> int:
        return len(self.lines)


@dataclass(frozen=True)
class MissedOrder:
    key: str
    order_id: str
    node: str
    zone: str
    carrier: str
    cutoff_at: datetime
    promise_date: date
    reason: str


@dataclass
class WavePlan:
    now: datetime
    window_hours: float
    actions: list[Action] = field(default_factory=list)
    waved: list[str] = field(default_factory=list)  # order keys, in pick sequence per zone
    missed: list[MissedOrder] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    unplanned: list[tuple[str, str]] = field(default_factory=list)  # (order key, reason)
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)  # per order key
    zones: dict[str, dict[str, Any]] = field(default_factory=dict)  # per "node/zone"

    @property
    def waves(self) -> list[Action]:
        return [a for a in self.actions if a.name == "wms.create_wave"]

    @property
    def counts(self) -> dict[str, Any]:
        return {
            "orders_waved": len(self.waved),
            "orders_missing_cutoff": len(self.missed),
            "orders_deferred": len(self.deferred),
            "orders_unplanned": len(self.unplanned),
            "waves": len(self.waves),
            "utilisation": {z: v["utilisation"] for z, v in self.zones.items()},
        }


# --- scoring ----------------------------------------------------------------------------


def score(order: ReleasableOrder, now: datetime, cutoff_at: datetime) -> tuple[float, dict[str, float]]:
    """Priority score 0–100 and its components (points per component; they sum to the score).

    * ``cutoff_proximity`` (≤30): linear from 0 at 12 h before the carrier cutoff to 30 at it;
    * ``ship_urgency`` (≤25): linear from 0 at 48 h before the nearer of ``ship_by`` and the end
      of the ``promised`` day, to 25 when due or overdue; 0 with neither;
    * ``priority_tier`` (≤25): express +15, gold +10;
    * ``pick_density`` (≤10): lines this order picks in its zone, full at 5;
    * ``split_avoidance`` (≤10): +10 for an order already split across nodes, so its parts
      go out together rather than one part waiting.
    """
    now = as_utc(now)
    to_cutoff = max(0.0, _hours(as_utc(cutoff_at) - now))
    cutoff_pts = CUTOFF_POINTS * _clamp01(1.0 - to_cutoff / CUTOFF_HORIZON_H)
    to_due = hours_to_due(order, now)
    urgency_pts = 0.0 if to_due is None else URGENCY_POINTS * _clamp01(1.0 - to_due / URGENCY_HORIZON_H)
    prio_pts = EXPRESS_POINTS * (order.priority == "express") + GOLD_POINTS * (order.tier == "gold")
    density_pts = DENSITY_POINTS * min(1.0, order.picks / DENSITY_FULL_LINES)
    split_pts = SPLIT_POINTS if order.split else 0.0
    components = {
        "cutoff_proximity": round(cutoff_pts, 2),
        "ship_urgency": round(urgency_pts, 2),
        "priority_tier": round(prio_pts, 2),
        "pick_density": round(density_pts, 2),
        "split_avoidance": round(split_pts, 2),
    }
    return round(sum(components.values()), 2), components


def hours_to_due(order: ReleasableOrder, now: datetime) -> float | None:
    """Hours from ``now`` to the nearer of ship_by and the end of the promised day (None: neither)."""
    dues: list[datetime] = []
    if order.ship_by is not None:
        dues.append(as_utc(order.ship_by))
    if order.promised is not None:
        dues.append(datetime.combine(order.promised + timedelta(days=1), time(), tzinfo=UTC))
    return _hours(min(dues) - as_utc(now)) if dues else None


# --- planning ---------------------------------------------------------------------------


@dataclass
class _Item:
    order: ReleasableOrder
    cutoff_at: datetime
    score: float
    components: dict[str, float]


def plan_waves(
    orders: Iterable[ReleasableOrder],
    nodes: list[Node],
    now: datetime,
    window_hours: float = 2.0,
    committed_lines: Mapping[tuple[str, str], float] | None = None,
    *,
    protect_priority: bool = True,
    wave_tag: str | None = None,
) -> WavePlan:
    """Build waves per (node, zone, carrier) that meet cutoffs and fit the planning window.

    ``committed_lines`` are lines already released to a zone and not yet picked, keyed by
    (node, zone): they are picked first and take capacity from both the cutoff and the window.
    ``protect_priority`` (default) drops a standard order before an express/gold one whenever
    that alone frees enough lines; off, the largest order goes whatever its priority.
    ``wave_tag`` names this plan in the wave ids (default: ``now`` to the minute); give each
    plan its own, so two plans in the same minute never reuse a wave id.

    Keep ``window_hours`` close to the re-plan interval (about 1.5 of it): lines released
    beyond the next plan are picked before any order that arrives meanwhile, earlier truck or
    not (on the release bench, 2 h windows at 30 min ticks cost 30–55 more late orders than 0.75 h).
    """
    if window_hours <= 0:
        raise ValueError(f"window_hours must be positive, got {window_hours}")
    now = as_utc(now)
    committed = committed_lines or {}
    plan = WavePlan(now=now, window_hours=window_hours)
    zones, carriers = _network(nodes)
    buckets: dict[tuple[str, str], list[_Item]] = defaultdict(list)
    for order in _unique(orders):
        zone = zones.get((order.node, order.zone))
        carrier = carriers.get((order.node, order.carrier))
        why = _unplannable(order, zone, carrier, window_hours)
        if why or zone is None or carrier is None:
            plan.unplanned.append((order.key, why or "unplannable"))
            plan.evidence[order.key] = {"outcome": "unplanned", "reason": why}
            continue
        cutoff_at = next_cutoff(now, carrier.cutoff)
        total, components = score(order, now, cutoff_at)
        buckets[(order.node, order.zone)].append(_Item(order, cutoff_at, total, components))

    wave_no = 0
    for node_id, zone_id in sorted(set(buckets) | {k for k in committed if k in zones}):
        rate = zones[(node_id, zone_id)].pick_capacity_per_hour
        queued = max(0.0, committed.get((node_id, zone_id), 0.0))
        window_cap = rate * window_hours
        window_left = max(0.0, window_cap - queued)
        sequence = sorted(buckets.get((node_id, zone_id), []), key=_sequence_key)
        kept, drops = _keep_most_on_time(sequence, queued, rate, now, protect_priority)
        ahead = queued  # lines the zone picks before the next kept order in the sequence
        releasing = True
        waved: list[_Item] = []
        for item in sequence:
            o = item.order
            to_cutoff_h = max(0.0, _hours(item.cutoff_at - now))
            lines_to_cutoff = rate * to_cutoff_h
            ev: dict[str, Any] = {
                "engine": ENGINE_VERSION,
                "score": item.score,
                "components": item.components,
                "hours_to_cutoff": round(to_cutoff_h, 4),
                "hours_to_due": _round_opt(hours_to_due(o, now)),
                "cutoff": rfc3339(item.cutoff_at),
                "zone": f"{node_id}/{zone_id}",
                "carrier": o.carrier,
                "lines": o.picks,
                "capacity": {
                    "rate_lines_per_hour": rate,
                    "lines_ahead": round(ahead, 4),
                    "lines_to_cutoff": round(lines_to_cutoff, 4),
                    "window_lines": round(window_cap, 4),
                    "window_left_before": round(window_left, 4),
                },
            }
            plan.evidence[o.key] = ev
            drop = drops.get(o.key)
            if drop is not None:
                promise = _promise_after(item.cutoff_at, o.promised)
                reason = f"{drop.reason}; promised for the next cutoff day {promise.isoformat()} (+0 transit days)"
                plan.missed.append(
                    MissedOrder(o.key, o.order_id, o.node, o.zone, o.carrier, item.cutoff_at, promise, reason)
                )
                ev["capacity"]["lines_due_by_binding_cutoff"] = round(drop.load, 4)
                ev["capacity"]["lines_fit_by_binding_cutoff"] = round(drop.limit, 4)
                ev.update(
                    outcome="missed",
                    reason=reason,
                    rule=drop.rule,
                    binding_order=drop.binding,
                    binding_cutoff=rfc3339(drop.binding_cutoff),
                    promise_date=promise.isoformat(),
                )
                continue
            ahead += o.picks
            ev["finish_at"] = rfc3339(now + timedelta(hours=ahead / rate))
            ev["capacity"]["left_to_cutoff_after"] = round(lines_to_cutoff - ahead, 4)
            if releasing and o.picks <= window_left + EPS:
                window_left -= o.picks
                waved.append(item)
                plan.waved.append(o.key)
                ev["capacity"]["window_left_after"] = round(window_left, 4)
                ev["outcome"] = "waved"
            else:
                releasing = False  # keep the sequence: nothing behind a deferred order jumps it
                plan.deferred.append(o.key)
                ev.update(
                    outcome="deferred",
                    reason=(
                        f"makes the cutoff, but the {num(window_hours)} h window of {node_id}/{zone_id} "
                        f"has {num(window_left)} line(s) left"
                    ),
                )
        waved_lines = sum(i.order.picks for i in waved)
        plan.zones[f"{node_id}/{zone_id}"] = {
            "rate_lines_per_hour": rate,
            "window_lines": round(window_cap, 4),
            "committed_lines": round(queued, 4),
            "waved_lines": waved_lines,
            "window_left": round(window_left, 4),
            "utilisation": round((queued + waved_lines) / window_cap, 4) if window_cap > 0 else 0.0,
        }
        # Group the waved prefix by carrier: the sequence keeps a carrier's orders together.
        groups: dict[str, list[_Item]] = {}
        for item in waved:
            groups.setdefault(item.order.carrier, []).append(item)
        for carrier_code, items in groups.items():
            wave_no += 1
            wave_id = f"WV-{node_id}-{zone_id}-{carrier_code}-{wave_tag or f'{now:%Y%m%d%H%M}'}-{wave_no}"
            for item in items:
                plan.evidence[item.order.key]["wave_id"] = wave_id
            plan.actions.append(_wave(wave_id, node_id, zone_id, carrier_code, items[0].cutoff_at, items))

    promises: dict[str, date] = {}
    for m in plan.missed:
        promises[m.order_id] = max(promises.get(m.order_id, m.promise_date), m.promise_date)
    for order_id in sorted(promises):
        plan.actions.append(
            Action(
                system="oms",
                type="update_promise_date",
                payload={"order_id": order_id, "line": None, "promise_date": promises[order_id].isoformat()},
            )
        )
    return plan


@dataclass(frozen=True)
class _Drop:
    """Why an order was left out of the zone's on-time set."""

    rule: str
    binding: str  # key of the order whose cutoff could not be met with it in
    binding_cutoff: datetime
    load: float  # lines due by that cutoff, queued lines included, before the drop
    limit: float  # lines the zone picks by that cutoff
    reason: str


def committed_lines(waves: Iterable[WaveView], now: datetime) -> dict[tuple[str, str], float]:
    """Lines still to pick per (node, zone): every released wave whose truck has not left.

    A wave's lines count until its cutoff, whatever has been picked of it already (the WMS
    reports waves, not pick progress), so the estimate errs on the side of less new work.
    """
    now = as_utc(now)
    out: dict[tuple[str, str], float] = defaultdict(float)
    for w in waves:
        if w.zone is None or w.status in _CLOSED_WAVE or (w.cutoff is not None and as_utc(w.cutoff) <= now):
            continue
        out[(w.node, w.zone)] += sum(w.orders.values())
    return dict(out)


def add_committed(committed: dict[tuple[str, str], float], wave: Action) -> None:
    """Count a wave about to be released against its zone (plans made one after another)."""
    params = wave.payload.get("parameters") or {}
    zone = params.get("workZone")
    if wave.name != "wms.create_wave" or not zone:
        return
    key = (str(wave.payload["node"]), str(zone))
    committed[key] = committed.get(key, 0.0) + sum(len(o.get("lines") or []) for o in wave.payload["orders"])


def on_a_wave(waves: Iterable[WaveView]) -> set[tuple[str, str]]:
    """(order id, node) pairs already on a released wave: a planner must not wave them again."""
    return {(order_id, w.node) for w in waves if w.status != "cancelled" for order_id in w.orders}


_CLOSED_WAVE = {"cancelled", "shipped", "closed"}


def _is_protected(order: ReleasableOrder) -> bool:
    return order.priority == "express" or order.tier == "gold"


def _drop_rank(item: _Item) -> tuple[int, float, datetime, str]:
    """Among equals in size, drop the least urgent: lowest score, then newest, then last key."""
    return (item.order.picks, -item.score, as_utc(item.order.created), item.order.key)


def _drop_rank_any(item: _Item) -> tuple[int, bool, float, datetime, str]:
    """The largest order; among equals in size a standard one before express/gold, then as ``_drop_rank``."""
    return (item.order.picks, not _is_protected(item.order), -item.score, as_utc(item.order.created), item.order.key)


def _keep_most_on_time(
    sequence: list[_Item], queued: float, rate: float, now: datetime, protect_priority: bool = True
) -> tuple[list[_Item], dict[str, _Drop]]:
    """Moore–Hodgson: the largest set of orders that all finish by their cutoffs.

    Walk the sequence (earliest cutoff first) adding orders; whenever the lines due by the
    newest order's cutoff (``queued`` first) exceed what the zone picks by then, drop one order
    from those kept so far: the largest *standard* order when dropping it alone is enough,
    otherwise the largest order of all (express or gold included). Dropping the largest order
    frees the most capacity for what follows, which maximises the number of orders on time
    (Moore 1968); protecting express/gold only chooses among drops that each cost one order.
    When the queued lines alone overrun a cutoff, orders are dropped until none is left.
    """
    kept: list[_Item] = []
    drops: dict[str, _Drop] = {}
    load = queued
    for item in sequence:
        kept.append(item)
        load += item.order.picks
        limit = rate * max(0.0, _hours(item.cutoff_at - now))
        while kept and load > limit + EPS:
            over = load - limit
            standard = [i for i in kept if not _is_protected(i.order)] if protect_priority else []
            victim = max(standard, key=_drop_rank) if standard else None
            if victim is not None and victim.order.picks + EPS >= over:
                rule = "largest standard order"
            else:
                victim = max(kept, key=_drop_rank_any)
                rule = "largest order" + (
                    "" if victim.order.picks + EPS >= over else " (the queued lines alone overrun the cutoff)"
                )
                if standard and _is_protected(victim.order):
                    rule += "; no standard order frees enough lines on its own"
            o = victim.order
            when = rfc3339(now + timedelta(hours=load / rate))
            reason = (
                f"with it, {num(load)} lines ({num(queued)} already queued) would be due in {o.node}/{o.zone} by the "
                f"{item.order.carrier} cutoff {rfc3339(item.cutoff_at)} and {num(limit)} fit at {num(rate)} lines/h: "
                f"the last would finish at {when}, after the {item.order.carrier} cutoff {rfc3339(item.cutoff_at)}; "
                f"left out as the {rule} ({o.picks} line(s)) so that more orders make their trucks"
            )
            drops[o.key] = _Drop(
                rule=f"moore-hodgson: {rule}",
                binding=item.order.key,
                binding_cutoff=item.cutoff_at,
                load=load,
                limit=limit,
                reason=reason,
            )
            kept.remove(victim)
            load -= o.picks
    return kept, drops


def _sequence_key(item: _Item) -> tuple[datetime, str, float, datetime, str]:
    return (item.cutoff_at, item.order.carrier, -item.score, as_utc(item.order.created), item.order.key)


def _wave(wave_id: str, node: str, zone: str, carrier: str, cutoff_at: datetime, items: list[_Item]) -> Action:
    return Action(
        system="wms",
        type="create_wave",
        payload={
            "waveId": wave_id,
            "node": node,
            "orders": [
                {
                    "orderId": i.order.order_id,
                    "priorityScore": i.score,
                    "lines": [{"line": ln, "sku": sku, "qty": qty} for ln, sku, qty in i.order.lines],
                }
                for i in items
            ],
            "parameters": {"workZone": zone, "carrierCode": carrier, "cutoffTime": rfc3339(cutoff_at)},
        },
    )


def _promise_after(cutoff_at: datetime, promised: date | None) -> date:
    """The following cutoff's day (+0 transit days); never earlier than an existing promise."""
    nxt = (cutoff_at + timedelta(days=1)).date()
    return max(nxt, promised) if promised is not None else nxt


def _unplannable(order: ReleasableOrder, zone: Zone | None, carrier: Carrier | None, window_hours: float) -> str | None:
    if zone is None:
        return f"zone {order.zone} is not known at node {order.node}"
    if carrier is None:
        return f"carrier {order.carrier} does not serve node {order.node}"
    if zone.pick_capacity_per_hour <= 0:
        return f"zone {order.node}/{order.zone} has no pick capacity"
    if order.picks == 0:
        return "the order has no lines to pick"
    if order.picks > zone.pick_capacity_per_hour * window_hours + EPS:
        return (
            f"{order.picks} lines exceed what {order.node}/{order.zone} picks in one {num(window_hours)} h window "
            f"({num(zone.pick_capacity_per_hour * window_hours)}); it needs a dedicated wave from a planner"
        )
    return None


def _network(nodes: list[Node]) -> tuple[dict[tuple[str, str], Zone], dict[tuple[str, str], Carrier]]:
    zones = {(n.id, z.id): z for n in nodes for z in n.zones}
    carriers = {(n.id, c.code): c for n in nodes for c in n.carriers}
    return zones, carriers


def _unique(orders: Iterable[ReleasableOrder]) -> list[ReleasableOrder]:
    out: dict[str, ReleasableOrder] = {}
    for o in orders:
        if o.key in out:
            raise ValueError(f"order {o.order_id} appears twice at node {o.node}")
        out[o.key] = o
    return [out[k] for k in sorted(out)]


# --- baseline -------------------------------------------------------------------------


def baseline_static_waves(orders: Iterable[ReleasableOrder], nodes: list[Node], now: datetime) -> WavePlan:
    """The yardstick: one static wave at the next even hour, FIFO, no scoring, no look-ahead.

    Every releasable order goes into the wave of its (node, zone, carrier) at the next even
    hour at/after ``now``, whether or not it can still make its cutoff. ``priorityScore`` is
    0 (the baseline does not score); orders are listed FIFO by creation time.
    """
    now = as_utc(now)
    release = _next_even_hour(now)
    plan = WavePlan(now=release, window_hours=2.0)
    zones, carriers = _network(nodes)
    groups: dict[tuple[str, str, str], list[ReleasableOrder]] = defaultdict(list)
    for o in _unique(orders):
        if (o.node, o.zone) not in zones or (o.node, o.carrier) not in carriers or o.picks == 0:
            plan.unplanned.append((o.key, "unknown zone or carrier, or no lines"))
            continue
        groups[(o.node, o.zone, o.carrier)].append(o)
    for n, (node, zone, carrier) in enumerate(sorted(groups), start=1):
        members = sorted(groups[(node, zone, carrier)], key=lambda o: (as_utc(o.created), o.key))
        cutoff_at = next_cutoff(release, carriers[(node, carrier)].cutoff)
        wave_id = f"WV-{node}-{zone}-{carrier}-{release:%Y%m%d%H%M}-B{n}"
        plan.actions.append(
            _wave(wave_id, node, zone, carrier, cutoff_at, [_Item(o, cutoff_at, 0.0, {}) for o in members])
        )
        for o in members:
            plan.waved.append(o.key)
            plan.evidence[o.key] = {"outcome": "waved", "wave_id": wave_id, "policy": "baseline"}
    return plan


def _next_even_hour(moment: datetime) -> datetime:
    top = moment.replace(minute=0, second=0, microsecond=0)
    if top < moment:
        top += timedelta(hours=1)
    if top.hour % 2:
        top += timedelta(hours=1)
    return top


# --- simulation -----------------------------------------------------------------------


def simulate_day(
    orders_with_arrival_times: Iterable[tuple[datetime, ReleasableOrder]],
    nodes: list[Node],
    start: datetime,
    policy: Literal["crossdock", "baseline", "rules"],
    tick_minutes: int = 30,
    *,
    window_hours: float = 2.0,
    timer: Callable[[], float] | None = None,
    protect_priority: bool = True,
) -> dict[str, Any]:
    """Replay one day: orders arrive, the policy releases waves, zones pick FIFO at capacity.

    Ticks run from ``start`` every ``tick_minutes`` until the last order's target cutoff (the
    carrier's first cutoff at/after the order's arrival). Crossdock plans the releasable
    backlog every tick; the baseline (and the rules policy, whose waves are the baseline's) releases
    a static wave on each even hour. A zone picks
    one line after another at ``pick_capacity_per_hour``, in release order. An order ships on
    time when its picks finish by its target cutoff and that cutoff is not after ``ship_by``.

    ``timer`` (e.g. ``time.perf_counter``) only measures planning time; without it the result
    is fully deterministic.
    """
    if policy not in ("crossdock", "baseline", "rules"):
        raise ValueError(f"policy must be 'crossdock', 'baseline' or 'rules', got {policy!r}")
    if tick_minutes <= 0:
        raise ValueError("tick_minutes must be positive")
    start = as_utc(start)
    zones, carriers = _network(nodes)
    arrivals = sorted(((as_utc(t), o) for t, o in orders_with_arrival_times), key=lambda x: (x[0], x[1].key))
    orders = {o.key: o for _, o in arrivals}
    if len(orders) != len(arrivals):
        raise ValueError("an order appears twice at one node")
    target: dict[str, float] = {}  # hours since start
    for t, o in arrivals:
        c = carriers.get((o.node, o.carrier))
        if c is not None:
            target[o.key] = _hours(next_cutoff(max(t, start), c.cutoff) - start)
    end_h = max(target.values(), default=0.0)

    free_h: dict[tuple[str, str], float] = {z: 0.0 for z in zones}  # zone idle from (hours since start)
    busy_h: dict[tuple[str, str], float] = {z: 0.0 for z in zones}
    done: dict[str, float] = {}
    flagged_missed: set[str] = set()
    waved_late: list[str] = []
    backlog: dict[str, ReleasableOrder] = {}
    wave_lines: list[int] = []
    plan_seconds: list[float] = []
    promise_updates = 0
    i = 0
    tick = 0
    while True:
        t_h = tick * tick_minutes / 60
        if t_h > end_h + EPS:
            break
        now = start + timedelta(minutes=tick * tick_minutes)
        tick += 1
        while i < len(arrivals) and arrivals[i][0] <= now:
            backlog[arrivals[i][1].key] = arrivals[i][1]
            i += 1
        release: list[ReleasableOrder] = []
        if policy == "crossdock":
            committed = {z: (free_h[z] - t_h) * zones[z].pick_capacity_per_hour for z in zones if free_h[z] > t_h + EPS}
            t0 = timer() if timer else 0.0
            plan = plan_waves(
                list(backlog.values()), nodes, now, window_hours, committed, protect_priority=protect_priority
            )
            if timer:
                plan_seconds.append(timer() - t0)
            for m in plan.missed:
                flagged_missed.add(m.key)
                backlog.pop(m.key, None)
            promise_updates += sum(1 for a in plan.actions if a.name == "oms.update_promise_date")
            for key, _why in plan.unplanned:
                backlog.pop(key, None)
            release = [orders[k] for k in plan.waved]
        elif now.minute == 0 and now.second == 0 and now.hour % 2 == 0:
            t0 = timer() if timer else 0.0
            plan = baseline_static_waves(list(backlog.values()), nodes, now)
            if timer:
                plan_seconds.append(timer() - t0)
            for key, _why in plan.unplanned:
                backlog.pop(key, None)
            # The static wave is picked FIFO by creation within each zone.
            release = sorted((orders[k] for k in plan.waved), key=lambda o: (as_utc(o.created), o.key))
        else:
            continue
        for wave in plan.waves:
            wave_lines.append(sum(len(o["lines"]) for o in wave.payload["orders"]))
        for o in release:
            z = (o.node, o.zone)
            dur = o.picks / zones[z].pick_capacity_per_hour
            begin = max(free_h[z], t_h)
            free_h[z] = begin + dur
            busy_h[z] += dur
            done[o.key] = free_h[z]
            backlog.pop(o.key, None)
            if policy == "crossdock" and o.key in target and free_h[z] > _hours_next_cutoff(start, now, o, carriers):
                waved_late.append(o.key)

    on_time = 0
    on_time_priority = 0
    on_time_zone: dict[str, int] = {f"{n}/{z}": 0 for n, z in sorted(zones)}
    missing = 0
    for key, o in orders.items():
        tgt = target.get(key)
        fin = done.get(key)
        made_cutoff = tgt is not None and fin is not None and fin <= tgt + EPS
        if not made_cutoff:
            missing += 1
            continue
        cutoff_at = start + timedelta(hours=tgt or 0.0)
        if o.ship_by is None or cutoff_at <= as_utc(o.ship_by) + timedelta(seconds=1):
            on_time += 1
            on_time_priority += _is_protected(o)
            on_time_zone[f"{o.node}/{o.zone}"] = on_time_zone.get(f"{o.node}/{o.zone}", 0) + 1
    util_zone: dict[str, float] = {}
    for z, rate in ((z, zones[z].pick_capacity_per_hour) for z in sorted(zones)):
        if rate <= 0 or end_h <= 0:
            continue
        inside = busy_h[z] - max(0.0, free_h[z] - end_h)
        util_zone[f"{z[0]}/{z[1]}"] = round(inside / end_h, 4)
    total = len(orders)
    return {
        "policy": policy,
        "orders": total,
        "on_time": on_time,
        "on_time_rate": round(on_time / total, 4) if total else 0.0,
        "orders_missing_cutoff": missing,
        "express_or_gold": sum(1 for o in orders.values() if _is_protected(o)),
        "express_or_gold_on_time": on_time_priority,
        "on_time_by_zone": on_time_zone,
        "orders_flagged_missed": len(flagged_missed),
        "promise_updates": promise_updates,
        "waved_then_late": len(waved_late),
        "waves": len(wave_lines),
        "mean_lines_per_wave": round(sum(wave_lines) / len(wave_lines), 2) if wave_lines else 0.0,
        "utilisation": round(sum(util_zone.values()) / len(util_zone), 4) if util_zone else 0.0,
        "utilisation_by_zone": util_zone,
        "ticks": tick,
        "horizon_hours": round(end_h, 4),
        "plan_seconds": plan_seconds,
    }


def on_time_upper_bound(
    orders_with_arrival_times: Iterable[tuple[datetime, ReleasableOrder]],
    nodes: list[Node],
    start: datetime,
    threshold_minutes: int = 30,
) -> dict[str, Any]:
    """An upper bound on the orders any release policy ships on time in :func:`simulate_day`'s model.

    Per zone (one picker line at ``pick_capacity_per_hour``, nothing picked before ``start``),
    each order is a job of ``lines / rate`` hours due at its target cutoff. An order whose
    ship_by is before that cutoff, or that no zone/carrier can serve, is never on time.
    Relaxation: for a threshold time ``r``, orders arriving before ``r`` all count as on time,
    and those arriving at/after ``r`` are all treated as available at ``r``; Moore–Hodgson then
    gives the most of them that can finish by their cutoffs when picking starts at ``r``. Each
    threshold gives a valid bound; the minimum over thresholds every ``threshold_minutes`` from
    ``start`` is returned (``r = start`` alone is the plain capacity bound).
    """
    start = as_utc(start)
    zones, carriers = _network(nodes)
    jobs: dict[tuple[str, str], list[tuple[float, float, float]]] = defaultdict(list)  # (release, due, hours)
    never = 0
    total = 0
    for t, o in orders_with_arrival_times:
        total += 1
        arrive = max(as_utc(t), start)
        zone = zones.get((o.node, o.zone))
        carrier = carriers.get((o.node, o.carrier))
        if zone is None or carrier is None or zone.pick_capacity_per_hour <= 0 or o.picks == 0:
            never += 1
            continue
        cutoff_at = next_cutoff(arrive, carrier.cutoff)
        if o.ship_by is not None and cutoff_at > as_utc(o.ship_by) + timedelta(seconds=1):
            never += 1
            continue
        jobs[(o.node, o.zone)].append(
            (_hours(arrive - start), _hours(cutoff_at - start), o.picks / zone.pick_capacity_per_hour)
        )
    by_zone: dict[str, dict[str, int]] = {}
    for z in sorted(jobs):
        js = jobs[z]
        last = max(r for r, _, _ in js)
        best = len(js)
        r0 = 0.0
        while r0 <= last + EPS:
            before = sum(1 for r, _, _ in js if r < r0 - EPS)
            best = min(best, before + _moore_hodgson_count([(d, p) for r, d, p in js if r >= r0 - EPS], r0))
            r0 += threshold_minutes / 60
        by_zone[f"{z[0]}/{z[1]}"] = {"orders": len(js), "max_on_time": best}
    bound = sum(v["max_on_time"] for v in by_zone.values())
    return {
        "on_time": bound,
        "on_time_rate": round(bound / total, 4) if total else 0.0,
        "never_on_time": never,
        "by_zone": by_zone,
    }


def _moore_hodgson_count(jobs: list[tuple[float, float]], begin: float) -> int:
    """Most jobs ``(due, hours)`` one machine starting at ``begin`` finishes by their due times."""
    heap: list[float] = []  # negated durations of the jobs kept
    clock = begin
    for due, dur in sorted(jobs):
        heapq.heappush(heap, -dur)
        clock += dur
        if clock > due + EPS:
            clock += heapq.heappop(heap)
    return len(heap)


def _hours_next_cutoff(start: datetime, now: datetime, o: ReleasableOrder, carriers: Mapping[Any, Carrier]) -> float:
    """Hours since ``start`` of the cutoff the order was waved for (its carrier's next at ``now``)."""
    return _hours(next_cutoff(now, carriers[(o.node, o.carrier)].cutoff) - start) + EPS


# --- helpers --------------------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, to the second."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


def _clamp01(x: float) -> float:
    return max(0.0, min(1.0, x))


def _round_opt(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
