"""Wave planning engine: scoring, cutoff-aware waves, the static baseline and the day simulation."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.release import run_release_bench
from domain.engines.waves import (
    ReleasableOrder,
    baseline_static_waves,
    on_time_upper_bound,
    plan_waves,
    score,
    simulate_day,
)
from domain.models import Carrier, Node, Zone

NOW = datetime(2026, 3, 23, 9, 0, tzinfo=UTC)
Z_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def node(rate: float = 10, rate_b: float = 10, cutoffs: dict[str, str] | None = None) -> Node:
    cutoffs = cutoffs or {"UPS": "12:00", "FEDX": "17:00"}
    return Node(
        id="N1",
        region="east",
        zones=[Zone(id="A", pick_capacity_per_hour=rate), Zone(id="B", pick_capacity_per_hour=rate_b)],
        carriers=[Carrier(code=c, cutoff=t) for c, t in cutoffs.items()],
    )


def order(
    oid: str, lines: int = 1, *, zone: str = "A", carrier: str = "UPS", minute: int = 0, **kw: Any
) -> ReleasableOrder:
    return ReleasableOrder(
        order_id=oid,
        node=kw.pop("node", "N1"),
        zone=zone,
        carrier=carrier,
        lines=[(i + 1, f"SKU-{i}", 1.0) for i in range(lines)],
        created=NOW.replace(hour=8) + timedelta(minutes=minute),
        **kw,
    )


def waves(plan: Any) -> list[dict[str, Any]]:
    return [a.payload for a in plan.actions if a.name == "wms.create_wave"]


def promise_actions(plan: Any) -> list[dict[str, Any]]:
    return [a.payload for a in plan.actions if a.name == "oms.update_promise_date"]


# --- score ----------------------------------------------------------------------------


def test_express_gold_and_near_cutoff_orders_score_higher_than_a_plain_order() -> None:
    far = NOW + timedelta(hours=10)
    plain, _ = score(order("P"), NOW, far)
    express, _ = score(order("E", priority="express"), NOW, far)
    gold, _ = score(order("G", tier="gold"), NOW, far)
    near, _ = score(order("C"), NOW, NOW + timedelta(hours=1))
    due, _ = score(order("D", ship_by=NOW + timedelta(hours=3)), NOW, far)
    split, _ = score(order("S", split=True), NOW, far)
    assert express > gold > plain
    assert near > plain and due > plain and split > plain


def test_score_is_the_sum_of_its_components_and_stays_within_0_to_100() -> None:
    top = order("T", 9, priority="express", tier="gold", ship_by=NOW - timedelta(hours=1), split=True)
    total, parts = score(top, NOW, NOW)
    assert total == 100.0
    assert set(parts) == {"cutoff_proximity", "ship_urgency", "priority_tier", "pick_density", "split_avoidance"}
    low, low_parts = score(order("L", promised=date(2026, 4, 30)), NOW, NOW + timedelta(hours=20))
    assert low == pytest.approx(sum(low_parts.values())) and 0 <= low < 10
    assert low_parts["cutoff_proximity"] == 0 and low_parts["ship_urgency"] == 0
    assert low_parts["pick_density"] == 2.0  # one line of five for full density


# --- plan_waves -----------------------------------------------------------------------


def test_an_order_that_cannot_make_todays_cutoff_is_not_waved_and_gets_a_new_promise_date() -> None:
    # Zone A picks 10 lines/h; UPS leaves at 12:00, 3 h away: 30 lines fit before it.
    # The express order goes first; the 25-line order cannot fit after its 10 lines.
    orders = [order("SO-BIG", 25, minute=0), order("SO-EXP", 10, priority="express", minute=5)]
    plan = plan_waves(orders, [node()], NOW, window_hours=3.0)
    assert plan.waved == ["SO-EXP@N1"]
    [missed] = plan.missed
    assert missed.order_id == "SO-BIG" and missed.cutoff_at == NOW.replace(hour=12)
    assert missed.promise_date == date(2026, 3, 24)  # next cutoff day, +0 transit days
    assert "after the UPS cutoff 2026-03-23T12:00:00Z" in missed.reason
    assert promise_actions(plan) == [{"order_id": "SO-BIG", "line": None, "promise_date": "2026-03-24"}]
    assert all(o["orderId"] != "SO-BIG" for w in waves(plan) for o in w["orders"])
    assert plan.evidence["SO-BIG@N1"]["outcome"] == "missed"
    assert plan.counts["orders_missing_cutoff"] == 1 and plan.counts["orders_waved"] == 1


def test_feasible_orders_beyond_the_window_are_deferred_and_waved_lines_never_exceed_capacity() -> None:
    orders = [order(f"SO-{i}", 4, carrier="FEDX", minute=i) for i in range(10)]  # 40 lines, 8 h to cutoff
    plan = plan_waves(orders, [node(rate=10)], NOW, window_hours=2.0)
    waved_lines = sum(len(o["lines"]) for w in waves(plan) for o in w["orders"])
    assert waved_lines == 20  # 10 lines/h x 2 h, exactly filled by five 4-line orders
    assert plan.waved == [f"SO-{i}@N1" for i in range(5)]
    assert plan.deferred == [f"SO-{i}@N1" for i in range(5, 10)]
    assert plan.missed == [] and promise_actions(plan) == []
    assert plan.zones["N1/A"]["utilisation"] == 1.0
    ev = plan.evidence["SO-4@N1"]["capacity"]
    assert ev["window_left_after"] == 0 and ev["lines_to_cutoff"] == 80


def test_lines_already_released_to_a_zone_take_capacity_first() -> None:
    orders = [order("SO-1", 5), order("SO-2", 5, minute=1)]
    # 25 lines already queued: 30 fit before 12:00, so only SO-1 can still make UPS.
    plan = plan_waves(orders, [node()], NOW, window_hours=3.0, committed_lines={("N1", "A"): 25})
    assert plan.waved == ["SO-1@N1"] and [m.order_id for m in plan.missed] == ["SO-2"]
    assert plan.zones["N1/A"]["utilisation"] == 1.0


def test_dropping_the_largest_order_keeps_more_orders_on_time_than_dropping_the_first_that_does_not_fit() -> None:
    # 30 lines fit before UPS 12:00. In sequence: BIG 25, S1 5, S2 5, S3 5 (equal scores, by creation).
    # Dropping whichever order first does not fit keeps BIG + S1 (2 on time); Moore-Hodgson drops
    # BIG when S2 overruns (35 > 30) and keeps S1, S2, S3: 15 lines, 3 on time.
    orders = [order("BIG", 25), *(order(f"S{i}", 5, minute=i) for i in (1, 2, 3))]
    plan = plan_waves(orders, [node()], NOW, window_hours=3.0)
    assert plan.waved == ["S1@N1", "S2@N1", "S3@N1"] and plan.deferred == []
    [missed] = plan.missed
    assert missed.order_id == "BIG" and missed.promise_date == date(2026, 3, 24)
    assert "largest standard order (25 line(s))" in missed.reason and "35 lines" in missed.reason
    ev = plan.evidence["BIG@N1"]
    assert ev["outcome"] == "missed" and ev["rule"] == "moore-hodgson: largest standard order"
    assert ev["binding_order"] == "S2@N1" and ev["binding_cutoff"] == "2026-03-23T12:00:00Z"
    assert ev["capacity"]["lines_due_by_binding_cutoff"] == 35 and ev["capacity"]["lines_fit_by_binding_cutoff"] == 30
    assert plan.evidence["S3@N1"]["finish_at"] == "2026-03-23T10:30:00Z"  # 15 lines at 10/h


def test_a_standard_order_is_dropped_before_a_larger_express_one_when_that_alone_is_enough() -> None:
    # EXP 14 (express, first by score), A 8, B 10 for UPS: 32 lines > 30. Dropping B (10 >= 2 over)
    # keeps two orders, as dropping the larger express order would; protection picks B.
    orders = [order("EXP", 14, priority="express"), order("A", 8, minute=1), order("B", 10, minute=2)]
    plan = plan_waves(orders, [node()], NOW, window_hours=3.0)
    assert [m.order_id for m in plan.missed] == ["B"] and plan.waved == ["EXP@N1", "A@N1"]
    plain = plan_waves(orders, [node()], NOW, window_hours=3.0, protect_priority=False)
    assert [m.order_id for m in plain.missed] == ["EXP"] and plain.waved == ["A@N1", "B@N1"]
    assert plain.evidence["EXP@N1"]["rule"] == "moore-hodgson: largest order"


def test_a_priority_order_is_dropped_when_no_standard_order_frees_enough_lines() -> None:
    # UPS 12:00 holds 30 lines, FEDX 13:00 holds 40. STD 3 (UPS), then EXP 20, GOLD 22 (FEDX): 45 > 40.
    # STD alone frees 3 < 5 lines, so the largest order, GOLD, goes: STD + EXP stay (2 of 3, the most possible).
    orders = [
        order("STD", 3),
        order("EXP", 20, carrier="FEDX", priority="express"),
        order("GOLD", 22, carrier="FEDX", tier="gold"),
    ]
    plan = plan_waves(orders, [node(cutoffs={"UPS": "12:00", "FEDX": "13:00"})], NOW, window_hours=3.0)
    assert plan.waved == ["STD@N1", "EXP@N1"] and [m.order_id for m in plan.missed] == ["GOLD"]
    rule = plan.evidence["GOLD@N1"]["rule"]
    assert rule == "moore-hodgson: largest order; no standard order frees enough lines on its own"


def test_waves_group_orders_by_zone_and_carrier() -> None:
    orders = [
        order("SO-1", zone="A", carrier="UPS"),
        order("SO-2", zone="A", carrier="FEDX"),
        order("SO-3", zone="B", carrier="UPS"),
        order("SO-4", zone="A", carrier="UPS", minute=1),
    ]
    plan = plan_waves(orders, [node()], NOW)
    groups = {
        (w["parameters"]["workZone"], w["parameters"]["carrierCode"]): [o["orderId"] for o in w["orders"]]
        for w in waves(plan)
    }
    assert groups == {("A", "UPS"): ["SO-1", "SO-4"], ("A", "FEDX"): ["SO-2"], ("B", "UPS"): ["SO-3"]}


def test_wave_payload_matches_the_wms_contract() -> None:
    plan = plan_waves([order("SO-1", 2, priority="express")], [node()], NOW)
    [action] = plan.waves
    assert action.system == "wms" and action.type == "create_wave"
    w = action.payload
    assert set(w) == {"waveId", "node", "orders", "parameters"}
    assert w["waveId"] == "WV-N1-A-UPS-202603230900-1" and w["node"] == "N1"
    [o] = w["orders"]
    assert o["orderId"] == "SO-1"
    assert o["priorityScore"] == plan.evidence["SO-1@N1"]["score"] and 0 < o["priorityScore"] <= 100
    assert o["lines"] == [{"line": 1, "sku": "SKU-0", "qty": 1.0}, {"line": 2, "sku": "SKU-1", "qty": 1.0}]
    assert w["parameters"] == {"workZone": "A", "carrierCode": "UPS", "cutoffTime": "2026-03-23T12:00:00Z"}
    assert Z_RFC3339.match(w["parameters"]["cutoffTime"])


def test_the_cutoff_after_todays_has_passed_is_tomorrows() -> None:
    plan = plan_waves([order("SO-1")], [node()], NOW.replace(hour=13))
    assert waves(plan)[0]["parameters"]["cutoffTime"] == "2026-03-24T12:00:00Z"


def test_plan_is_deterministic_whatever_the_input_order() -> None:
    orders = [
        order(f"SO-{i}", 1 + i % 4, zone="AB"[i % 2], carrier=["UPS", "FEDX"][i % 3 % 2], minute=i) for i in range(30)
    ]
    first = plan_waves(orders, [node(rate=12, rate_b=6)], NOW)
    again = plan_waves(list(reversed(orders)), [node(rate=12, rate_b=6)], NOW)
    assert [a.model_dump() for a in first.actions] == [a.model_dump() for a in again.actions]
    assert first.evidence == again.evidence and first.missed and first.deferred


def test_orders_the_network_cannot_plan_are_reported_not_waved() -> None:
    orders = [order("SO-1", carrier="DHL"), order("SO-2", zone="Q"), order("SO-3", 30)]
    plan = plan_waves(orders, [node()], NOW)
    assert plan.actions == []
    reasons = dict(plan.unplanned)
    assert "carrier DHL" in reasons["SO-1@N1"] and "zone Q" in reasons["SO-2@N1"]
    assert "exceed" in reasons["SO-3@N1"]


def test_the_same_order_twice_at_one_node_is_rejected() -> None:
    with pytest.raises(ValueError, match="SO-1 appears twice"):
        plan_waves([order("SO-1"), order("SO-1")], [node()], NOW)


# --- baseline -------------------------------------------------------------------------


def test_baseline_static_waves_release_everything_fifo_at_the_next_even_hour_regardless_of_cutoff() -> None:
    orders = [
        order("SO-LATE", 25, minute=9),
        order("SO-EARLY", 25, minute=1),
        order("SO-EXP", 10, priority="express", minute=5),
    ]
    plan = baseline_static_waves(orders, [node()], NOW.replace(hour=9, minute=20))
    [w] = waves(plan)
    assert w["waveId"].endswith("-202603231000-B1")  # 10:00 is the next even hour
    assert [o["orderId"] for o in w["orders"]] == ["SO-EARLY", "SO-EXP", "SO-LATE"]  # FIFO, express not first
    assert {o["priorityScore"] for o in w["orders"]} == {0.0}
    # 60 lines at 10 lines/h cannot make the 12:00 UPS cutoff, yet all are waved and none get a promise.
    assert plan.missed == [] and promise_actions(plan) == []


# --- simulation -----------------------------------------------------------------------

START = datetime(2026, 3, 23, 6, 0, tzinfo=UTC)


def tiny_day() -> tuple[list[tuple[datetime, ReleasableOrder]], list[Node]]:
    """Zone A picks 4 lines/h. A (FEDX 10:00) came first, then B and C (UPS 08:00), 4 lines each."""
    net = [node(rate=4, cutoffs={"UPS": "08:00", "FEDX": "10:00"})]

    def mk(oid: str, carrier: str, created: datetime) -> ReleasableOrder:
        return ReleasableOrder(
            order_id=oid, node="N1", zone="A", carrier=carrier, lines=[(i, "S", 1.0) for i in range(4)], created=created
        )

    return [
        (START, mk("A", "FEDX", START - timedelta(minutes=10))),
        (START, mk("B", "UPS", START - timedelta(minutes=5))),
        (START, mk("C", "UPS", START - timedelta(minutes=2))),
    ], net


def test_simulated_tiny_day_gives_the_hand_computed_kpis_for_both_policies() -> None:
    day, net = tiny_day()
    # Baseline: one static wave at 06:00, FIFO: A 06-07, B 07-08 (on time), C 08-09 misses UPS 08:00.
    base = simulate_day(day, net, START, "baseline")
    assert base["on_time"] == 2 and base["on_time_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert base["orders_missing_cutoff"] == 1
    assert base["waves"] == 2 and base["mean_lines_per_wave"] == 6.0  # UPS wave B+C, FEDX wave A
    assert base["horizon_hours"] == 4.0
    assert base["utilisation_by_zone"] == {"N1/A": 0.75, "N1/B": 0.0}  # A busy 3 h of 06:00-10:00
    assert base["utilisation"] == 0.375  # the mean over zones
    # Crossdock: 06:00 waves B, C (UPS first; the 2 h window holds 8 lines) and defers A;
    # 07:00 waves A (4 lines queued, 4 free in the window): 08-09, before FEDX 10:00.
    cd = simulate_day(day, net, START, "crossdock")
    assert cd["on_time"] == 3 and cd["on_time_rate"] == 1.0 and cd["orders_missing_cutoff"] == 0
    assert cd["waves"] == 2 and cd["mean_lines_per_wave"] == 6.0
    assert cd["utilisation_by_zone"]["N1/A"] == 0.75 and cd["ticks"] == 9 and cd["waved_then_late"] == 0


def test_an_order_that_makes_its_cutoff_after_its_ship_by_is_not_on_time() -> None:
    day, net = tiny_day()
    late_a = ReleasableOrder(**{**day[0][1].__dict__, "ship_by": START + timedelta(hours=3)})  # 09:00 < FEDX 10:00
    kpis = simulate_day([(START, late_a), *day[1:]], net, START, "crossdock")
    assert kpis["orders_missing_cutoff"] == 0 and kpis["on_time"] == 2


def test_simulation_timer_only_measures_and_does_not_change_the_outcome() -> None:
    day, net = tiny_day()
    ticks = iter(range(1000))
    timed = simulate_day(day, net, START, "crossdock", timer=lambda: float(next(ticks)))
    plain = simulate_day(day, net, START, "crossdock")
    assert timed.pop("plan_seconds") == [1.0] * 9 and plain.pop("plan_seconds") == []
    assert timed == plain


def test_release_bench_measures_both_policies_on_the_same_day() -> None:
    r = run_release_bench(orders=300, seed=5)
    cd, base = r["crossdock"], r["baseline"]
    assert cd["orders"] == base["orders"] == 300
    assert cd["plans"] == cd["ticks"] and base["plans"] < base["ticks"]  # baseline plans on even hours only
    assert cd["waved_then_late"] == 0 and cd["orders_flagged_missed"] == cd["orders_missing_cutoff"]
    assert cd["plan_ms_p99"] >= cd["plan_ms_p50"] > 0
    assert r["delta"]["orders_missing_cutoff"] == cd["orders_missing_cutoff"] - base["orders_missing_cutoff"]
    bound = r["on_time_upper_bound"]["on_time"]
    assert (
        bound >= cd["on_time"]
        and bound >= base["on_time"]
        and bound >= r["crossdock_without_priority_protection"]["on_time"]
    )


def test_upper_bound_counts_capacity_arrivals_and_ship_by() -> None:
    net = [node(rate=4, cutoffs={"UPS": "08:00", "FEDX": "10:00"})]

    def mk(oid: str, carrier: str, **kw: Any) -> ReleasableOrder:
        return ReleasableOrder(
            order_id=oid,
            node="N1",
            zone="A",
            carrier=carrier,
            lines=[(i, "S", 1.0) for i in range(4)],
            created=START,
            **kw,
        )

    # 1 h of picking each. B, C, D are due 08:00: only two fit in 06:00-08:00; A (FEDX 10:00) fits after.
    day = [(START, mk("A", "FEDX")), *((START, mk(k, "UPS")) for k in "BCD")]
    bound = on_time_upper_bound(day, net, START)
    assert bound["on_time"] == 3 and bound["by_zone"] == {"N1/A": {"orders": 4, "max_on_time": 3}}
    # E arrives 07:30 for UPS 08:00 and needs 1 h: never on time, though the 06:00 capacity bound allows it.
    late = [(START, mk("A", "FEDX")), (START + timedelta(minutes=90), mk("E", "UPS"))]
    assert on_time_upper_bound(late, net, START)["on_time"] == 1
    # An order whose ship_by is before its truck cannot be on time at all.
    due_early = [(START, mk("F", "FEDX", ship_by=START + timedelta(hours=3)))]
    assert on_time_upper_bound(due_early, net, START) | {"by_zone": {}} == {
        "on_time": 0,
        "on_time_rate": 0.0,
        "never_on_time": 1,
        "by_zone": {},
    }


# --- property ---------------------------------------------------------------------------


@st.composite
def backlogs(
    draw: st.DrawFn,
) -> tuple[list[ReleasableOrder], list[Node], datetime, float, dict[tuple[str, str], float]]:
    rates = (draw(st.integers(1, 30)), draw(st.integers(1, 30)))
    cutoffs = {c: f"{draw(st.integers(0, 23)):02d}:{draw(st.sampled_from([0, 30])):02d}" for c in ("UPS", "FEDX")}
    net = [node(rate=rates[0], rate_b=rates[1], cutoffs=cutoffs)]
    n = draw(st.integers(0, 25))
    orders = [
        order(
            f"SO-{i}",
            draw(st.integers(1, 8)),
            zone=draw(st.sampled_from("AB")),
            carrier=draw(st.sampled_from(["UPS", "FEDX"])),
            minute=draw(st.integers(0, 300)),
            priority=draw(st.sampled_from(["standard", "express"])),
            tier=draw(st.sampled_from(["standard", "gold"])),
            split=draw(st.booleans()),
        )
        for i in range(n)
    ]
    now = NOW.replace(hour=draw(st.integers(0, 23)), minute=draw(st.sampled_from([0, 15, 45])))
    window = draw(st.sampled_from([0.5, 1.0, 2.0, 3.0]))
    committed = {("N1", "A"): float(draw(st.integers(0, 40)))}
    return orders, net, now, window, committed


@settings(max_examples=200, deadline=None)
@given(backlogs())
def test_every_order_lands_in_exactly_one_outcome_and_waves_fit_capacity_and_cutoffs(
    case: tuple[list[ReleasableOrder], list[Node], datetime, float, dict[tuple[str, str], float]],
) -> None:
    orders, net, now, window, committed = case
    plan = plan_waves(orders, net, now, window_hours=window, committed_lines=committed)
    rate = {z.id: z.pick_capacity_per_hour for z in net[0].zones}

    outcomes = Counter([*plan.waved, *(m.key for m in plan.missed), *plan.deferred, *(k for k, _ in plan.unplanned)])
    assert outcomes == Counter(o.key for o in orders)  # each order exactly once
    in_waves = Counter(f"{o['orderId']}@{w['node']}" for w in waves(plan) for o in w["orders"])
    assert in_waves == Counter(plan.waved) and not set(in_waves) & {m.key for m in plan.missed}
    assert {p["order_id"] for p in promise_actions(plan)} == {m.order_id for m in plan.missed}

    lines: dict[str, int] = defaultdict(int)
    for w in waves(plan):
        lines[w["parameters"]["workZone"]] += sum(len(o["lines"]) for o in w["orders"])
    for z, used in lines.items():
        queued = committed.get(("N1", z), 0.0)
        assert used <= max(0.0, rate[z] * window - queued) + 1e-9
        # Every waved order is predicted to finish by its cutoff.
        for w in waves(plan):
            if w["parameters"]["workZone"] != z:
                continue
            cutoff = datetime.strptime(w["parameters"]["cutoffTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            for o in w["orders"]:
                finish = datetime.strptime(plan.evidence[f"{o['orderId']}@N1"]["finish_at"], "%Y-%m-%dT%H:%M:%SZ")
                assert finish.replace(tzinfo=UTC) <= cutoff
