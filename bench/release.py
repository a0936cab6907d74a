"""Release benchmark: cutoff-aware wave planning vs static 2-hourly FIFO waves, one simulated day.

A day of orders is generated with ``random.Random(seed)`` over three nodes, six work zones
(three of them tight on pick capacity) and six carriers with cutoffs from 14:00 to 19:00 UTC.
Arrivals are skewed towards the morning; priorities, tiers, ship-by times and promised dates
are mixed. Both policies replay the same day with ``domain.engines.waves.simulate_day`` in the
same run; every number returned is measured, none is fixed in advance.

Crossdock re-plans every ``TICK_MINUTES`` and releases at most ``WINDOW_HOURS`` of picking per
zone (1.5 ticks: enough that a zone never idles between plans, little enough that lines already
released do not block an order with an earlier truck that arrives at the next tick). The same
day is also replayed without express/gold protection (plain Moore–Hodgson drops), and
``on_time_upper_bound`` is a capacity bound no release policy can beat on this day (see
``domain.engines.waves.on_time_upper_bound``).
"""

from __future__ import annotations

import platform
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bench.report import percentile
from domain.engines.clock import next_cutoff
from domain.engines.waves import ReleasableOrder, on_time_upper_bound, simulate_day
from domain.models import Carrier, Node, Zone

DAY = datetime(2026, 3, 23, 6, 0, tzinfo=UTC)
TICK_MINUTES = 30
WINDOW_HOURS = 0.75


def bench_network() -> list[Node]:
    """Three nodes; zones DC-EAST/B, DC-WEST/C and STORE-12/S are tight on capacity."""
    return [
        Node(
            id="DC-EAST",
            region="east",
            zones=[Zone(id="A", pick_capacity_per_hour=190), Zone(id="B", pick_capacity_per_hour=70)],
            carriers=[
                Carrier(code="UPS", cutoff="14:00"),
                Carrier(code="FEDX_GROUND", cutoff="17:00"),
                Carrier(code="USPS", cutoff="19:00"),
            ],
        ),
        Node(
            id="DC-WEST",
            region="west",
            zones=[Zone(id="A", pick_capacity_per_hour=170), Zone(id="C", pick_capacity_per_hour=55)],
            carriers=[Carrier(code="UPS", cutoff="15:00"), Carrier(code="FEDX_GROUND", cutoff="18:00")],
        ),
        Node(
            id="STORE-12",
            type="store",
            region="east",
            zones=[Zone(id="S", pick_capacity_per_hour=30)],
            carriers=[Carrier(code="LOCAL", cutoff="16:00")],
        ),
    ]


# (node, zone, weight): how the day's orders spread over the pick zones.
_ZONE_MIX = [
    ("DC-EAST", "A", 34),
    ("DC-EAST", "B", 16),
    ("DC-WEST", "A", 28),
    ("DC-WEST", "C", 13),
    ("STORE-12", "S", 9),
]
_LINES = ([1, 2, 3, 4, 5, 6, 8], [30, 25, 18, 12, 7, 5, 3])


def generate_day(orders: int, seed: int) -> list[tuple[datetime, ReleasableOrder]]:
    """A deterministic day of ``orders`` releasable orders with their arrival times."""
    rng = random.Random(seed)
    nodes = {n.id: n for n in bench_network()}
    out: list[tuple[datetime, ReleasableOrder]] = []
    for k in range(orders):
        node_id, zone, _ = rng.choices(_ZONE_MIX, weights=[w for *_, w in _ZONE_MIX])[0]
        carrier = rng.choice(nodes[node_id].carriers)
        cutoff_today = next_cutoff(DAY.replace(hour=0), carrier.cutoff)
        # Skewed arrivals: a morning peak from 04:00, and nothing later than 30 min before the truck.
        arrival = DAY.replace(hour=4) + timedelta(hours=14 * rng.betavariate(1.6, 2.8))
        latest = cutoff_today - timedelta(minutes=30)
        if arrival > latest:
            arrival = DAY.replace(hour=4) + (latest - DAY.replace(hour=4)) * rng.random()
        arrival = arrival.replace(second=0, microsecond=0)
        express = rng.random() < 0.2
        ship_by = cutoff_today if express else (DAY.replace(hour=23, minute=59) if rng.random() < 0.3 else None)
        promised = (DAY + timedelta(days=rng.choice([0, 1, 1, 2]))).date() if rng.random() < 0.4 else None
        n_lines = rng.choices(*_LINES)[0]
        out.append(
            (
                arrival,
                ReleasableOrder(
                    order_id=f"SO-{seed}-{k:05d}",
                    node=node_id,
                    zone=zone,
                    carrier=carrier.code,
                    lines=[(i + 1, f"SKU-{rng.randrange(400):03d}", float(rng.randint(1, 4))) for i in range(n_lines)],
                    priority="express" if express else "standard",
                    tier="gold" if rng.random() < 0.15 else "standard",
                    ship_by=ship_by,
                    promised=promised,
                    created=arrival,
                    split=rng.random() < 0.05,
                ),
            )
        )
    return out


def _run(
    policy: Literal["crossdock", "baseline"],
    day: list[tuple[datetime, ReleasableOrder]],
    nodes: list[Node],
    *,
    protect_priority: bool = True,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    kpis = simulate_day(
        day,
        nodes,
        DAY,
        policy,
        tick_minutes=TICK_MINUTES,
        window_hours=WINDOW_HOURS,
        timer=time.perf_counter,
        protect_priority=protect_priority,
    )
    wall = time.perf_counter() - t0
    ms = [s * 1000 for s in kpis.pop("plan_seconds")]
    kpis["plan_ms_p50"] = round(percentile(ms, 50), 3)
    kpis["plan_ms_p99"] = round(percentile(ms, 99), 3)
    kpis["plans"] = len(ms)
    kpis["simulation_seconds"] = round(wall, 3)
    return kpis


def run_release_bench(orders: int = 2000, seed: int = 3) -> dict[str, Any]:
    """Simulate one day under both policies and return their measured KPIs side by side."""
    nodes = bench_network()
    day = generate_day(orders, seed)
    crossdock = _run("crossdock", day, nodes)
    baseline = _run("baseline", day, nodes)
    unprotected = _run("crossdock", day, nodes, protect_priority=False)
    bound = on_time_upper_bound(day, nodes, DAY)
    lines = sum(o.picks for _, o in day)
    return {
        "bench": "release",
        "orders": orders,
        "lines": lines,
        "seed": seed,
        "start": DAY.isoformat().replace("+00:00", "Z"),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "tick_minutes": TICK_MINUTES,
        "window_hours": WINDOW_HOURS,
        "crossdock": crossdock,
        "baseline": baseline,
        "crossdock_without_priority_protection": {
            k: unprotected[k]
            for k in ("on_time", "on_time_rate", "orders_missing_cutoff", "express_or_gold", "express_or_gold_on_time")
        },
        "on_time_upper_bound": bound,
        "delta": {
            "on_time_rate_points": round(100 * (crossdock["on_time_rate"] - baseline["on_time_rate"]), 2),
            "orders_missing_cutoff": crossdock["orders_missing_cutoff"] - baseline["orders_missing_cutoff"],
            "max_on_time_rate_points": round(100 * (bound["on_time_rate"] - baseline["on_time_rate"]), 2),
        },
    }
