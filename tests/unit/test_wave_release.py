"""Waves at release and on ticks: what a zone already has to pick decides whether an order is waved.

The network is ``test_release_engine``'s: N2 (zone A, 80 lines/h, DPD at 16:30) is the
cheapest node for region east; the clock is 08:00, so N2 can pick 680 lines before its truck
and 240 in the default 3 h window.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime

from domain.context import LineAllocation, Network, OrderLineView, OrderView, WaveView
from domain.engines.backlog import AwaitingWave, WaveContext, decide_waves
from domain.engines.release import decide_release
from domain.engines.waves import add_committed, committed_lines, on_a_wave
from domain.models import Customer, Order, OrderLine
from tests.unit.test_release_engine import LANES, NODES, NOW, actions, make_ctx, ns

TRUCK = datetime(2026, 3, 21, 16, 30, tzinfo=UTC)


def queued(lines: int, *, cutoff: datetime = TRUCK, node: str = "N2", zone: str = "A") -> WaveView:
    return WaveView(wave_id=f"W-{lines}", node=node, zone=zone, carrier="DPD", cutoff=cutoff, orders={"SO-0": lines})


def test_an_order_its_zone_can_pick_before_the_truck_is_waved_at_release() -> None:
    ctx = dataclasses.replace(make_ctx([("SKU-1", 5)], stock=[ns("N2", 10)]), waves=[queued(100)])

    [p] = decide_release(ctx)

    [wave] = actions(p, "wms.create_wave")
    assert wave["waveId"] == "WV-SO-1-N2"
    assert wave["parameters"] == {"workZone": "A", "carrierCode": "DPD", "cutoffTime": "2026-03-21T16:30:00Z"}
    assert p.evidence["waves"]["N2"]["outcome"] == "waved"
    assert p.evidence["waves"]["N2"]["capacity"]["lines_ahead"] == 100


def test_an_order_that_would_miss_its_truck_is_not_waved_and_its_promise_moves() -> None:
    # 680 lines already due by 16:30 fill N2/A to the truck: one more line would miss it.
    ctx = dataclasses.replace(make_ctx([("SKU-1", 5)], stock=[ns("N2", 10)]), waves=[queued(680)])

    [p] = decide_release(ctx)

    assert p.outcome == "released"  # the stock is reserved; only the wave waits
    assert actions(p, "wms.create_wave") == []
    assert actions(p, "oms.update_promise_date") == [{"order_id": "SO-1", "line": None, "promise_date": "2026-03-22"}]
    assert p.evidence["waves"]["N2"]["outcome"] == "missed"
    assert "Not waved at N2" in p.rationale and "2026-03-22" in p.rationale


def test_an_order_beyond_the_planning_window_waits_for_the_next_plan() -> None:
    # 240 lines fill the 3 h window, but the truck at 16:30 is 8.5 h away: on time, just not yet.
    ctx = dataclasses.replace(make_ctx([("SKU-1", 5)], stock=[ns("N2", 10)]), waves=[queued(240)])

    [p] = decide_release(ctx)

    assert actions(p, "wms.create_wave") == [] and actions(p, "oms.update_promise_date") == []
    assert p.evidence["waves"]["N2"]["outcome"] == "deferred"
    assert "waits for the next plan" in p.rationale
    # A wider window (the policy's wave_window_hours) takes it now.
    [wider] = decide_release(dataclasses.replace(ctx, wave_window_hours=4.0))
    assert len(actions(wider, "wms.create_wave")) == 1


def test_waves_whose_truck_has_left_no_longer_take_capacity() -> None:
    gone = queued(680, cutoff=datetime(2026, 3, 21, 7, 0, tzinfo=UTC))
    assert committed_lines([gone, queued(7)], NOW) == {("N2", "A"): 7}
    [p] = decide_release(dataclasses.replace(make_ctx([("SKU-1", 5)], stock=[ns("N2", 10)]), waves=[gone]))
    assert len(actions(p, "wms.create_wave")) == 1


def test_a_batch_counts_the_waves_of_the_releases_before_it() -> None:
    committed: dict[tuple[str, str], float] = {}
    [first] = decide_release(dataclasses.replace(make_ctx([("SKU-1", 5)], stock=[ns("N2", 10)]), committed=committed))
    for a in first.actions:
        add_committed(committed, a)
    assert committed == {("N2", "A"): 1}


# --- the tick's wave plan ---------------------------------------------------------------------


def released(
    order_id: str, node: str, qty: float, *, priority: str = "standard", promise: date | None = None
) -> AwaitingWave:
    order = Order(
        id=order_id,
        customer="C-1",
        region="east",
        priority=priority,  # type: ignore[arg-type]
        created=NOW,
        lines=[OrderLine(line=1, sku="SKU-1", qty=qty)],
    )
    view = OrderView(
        order=order,
        status="released",
        lines=[
            OrderLineView(
                line=1, sku="SKU-1", qty=qty, allocations=[LineAllocation(node=node, qty=qty)], promise_date=promise
            )
        ],
    )
    return AwaitingWave(view=view, customer=Customer(id="C-1"))


def wave_ctx(orders: list[AwaitingWave], waves: list[WaveView], now: datetime = NOW) -> WaveContext:
    return WaveContext(
        orders=orders,
        stock={"SKU-1": [ns("N2", 100)]},
        network=Network(nodes=NODES, lanes=LANES),
        waves=waves,
        now=now,
    )


def test_the_tick_waves_reservations_that_wait_and_leaves_waved_ones_alone() -> None:
    on_wave = WaveView(wave_id="WV-SO-2-N2", node="N2", zone="A", carrier="DPD", cutoff=TRUCK, orders={"SO-2": 1})
    ctx = wave_ctx([released("SO-1", "N2", 5), released("SO-2", "N2", 3)], [on_wave])
    assert on_a_wave(ctx.waves) == {("SO-2", "N2")}

    p = decide_waves(ctx, tag="t1", trigger="crossdock.tick")

    assert p.outcome == "waves_planned" and p.subject == "waves"
    [wave] = actions(p, "wms.create_wave")
    assert [o["orderId"] for o in wave["orders"]] == ["SO-1"]
    assert wave["waveId"] == "WV-N2-A-DPD-t1-1"
    assert p.evidence["committed_lines"] == {"N2/A": 1}


def test_when_the_zone_is_short_the_express_order_makes_the_truck_and_the_other_promise_moves() -> None:
    # 679 lines queued: room for one more order before 16:30 (a 9 h window lets the plan reach it).
    ctx = wave_ctx([released("SO-1", "N2", 5), released("SO-9", "N2", 5, priority="express")], [queued(679)])
    ctx = dataclasses.replace(ctx, window_hours=9.0)

    p = decide_waves(ctx, tag="t2", trigger="crossdock.tick")

    [wave] = actions(p, "wms.create_wave")
    assert [o["orderId"] for o in wave["orders"]] == ["SO-9"]
    assert actions(p, "oms.update_promise_date") == [{"order_id": "SO-1", "line": None, "promise_date": "2026-03-22"}]
    assert [m["part"] for m in p.evidence["missed"]] == ["SO-1@N2"]


def test_a_promise_already_moved_is_not_moved_again() -> None:
    ctx = wave_ctx([released("SO-1", "N2", 5, promise=date(2026, 3, 22))], [queued(680)])
    p = decide_waves(ctx, tag="t3", trigger="wms.capacity.changed")
    assert p.actions == [] and p.outcome == "no_action"
    assert p.evidence["missed"][0]["part"] == "SO-1@N2"


def test_nothing_waiting_is_no_action() -> None:
    p = decide_waves(wave_ctx([], []), tag="t4", trigger="crossdock.tick")
    assert (p.outcome, p.actions) == ("no_action", [])
