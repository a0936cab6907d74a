"""Stock discrepancies: timing differences are left alone, true variances correct the ERP book."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.context import BookPosition, Movement, NodeStock
from domain.engines.discrepancy import Reservation, StockPicture, decide_discrepancy, in_flight

NOW = datetime(2026, 3, 21, 12, 0, tzinfo=UTC)


def move(kind: str, qty: float, hours_ago: float, ref: str = "m") -> Movement:
    return Movement(kind=kind, node="N1", sku="SKU-1", qty_delta=qty, at=NOW - timedelta(hours=hours_ago), ref=ref)  # type: ignore[arg-type]


def picture(
    physical: float,
    book: float,
    *,
    wms_moves: list[Movement] | None = None,
    erp_postings: list[Movement] | None = None,
    reservations: list[Reservation] | None = None,
    locked: float = 0.0,
) -> StockPicture:
    reserved = sum(r.qty for r in reservations or [])
    return StockPicture(
        sku="SKU-1",
        node="N1",
        now=NOW,
        unit_cost=10.0,
        wms=NodeStock(
            node="N1",
            sku="SKU-1",
            on_hand=physical,
            locked=locked,
            allocated=reserved,
            pickable=max(0.0, physical - locked - reserved),
        ),
        book=BookPosition(node="N1", sku="SKU-1", qty=book, blocked=0),
        wms_moves=wms_moves or [],
        erp_postings=erp_postings or [],
        reservations=reservations or [],
    )


def actions(p: object) -> list[str]:
    return [a.name for a in p.actions]  # type: ignore[attr-defined]


def test_books_that_agree_need_nothing() -> None:
    [p] = decide_discrepancy(picture(20, 20))
    assert (p.outcome, p.actions) == ("in_sync", [])


def test_a_wms_adjustment_whose_erp_posting_has_not_arrived_is_a_timing_difference() -> None:
    # The WMS counted 3 fewer an hour ago; the ERP has not booked it yet. Correcting now would
    # correct twice once the posting lands.
    [p] = decide_discrepancy(picture(17, 20, wms_moves=[move("adjustment", -3, 1)]))
    assert p.outcome == "timing_difference" and p.actions == []
    assert p.evidence["variance"] == -3 and p.evidence["residual"] == 0
    assert "in flight" in p.rationale


def test_an_unbooked_receipt_is_a_timing_difference_too() -> None:
    [p] = decide_discrepancy(picture(30, 20, wms_moves=[move("receipt", 10, 2, "GR-1")]))
    assert p.outcome == "timing_difference"


def test_a_movement_older_than_the_grace_window_is_no_longer_in_flight() -> None:
    [p] = decide_discrepancy(picture(17, 20, wms_moves=[move("adjustment", -3, 5)]))
    assert p.outcome == "discrepancy"
    assert p.actions[0].payload == {
        "node": "N1",
        "sku": "SKU-1",
        "qty_delta": -3,
        "reason": p.actions[0].payload["reason"],
    }
    assert "source of truth for physical stock" in p.rationale


def test_paired_movements_cancel_and_the_rest_is_a_true_variance() -> None:
    # Both sides booked -3 (paired); the ERP is still 2 above the count: a true variance of -2.
    pic = picture(15, 17, wms_moves=[move("adjustment", -3, 1, "w")], erp_postings=[move("posting", -3, 0.5, "e")])
    assert in_flight(pic) == ([], [])
    [p] = decide_discrepancy(pic)
    assert p.outcome == "discrepancy" and p.evidence["residual"] == -2
    assert actions(p) == ["erp.post_adjustment"] and not p.review_required
    assert p.cost_impact == 20.0


def test_an_erp_posting_the_warehouse_has_not_mirrored_yet_is_in_flight() -> None:
    [p] = decide_discrepancy(picture(20, 23, erp_postings=[move("posting", 3, 1, "MAT-1")]))
    assert p.outcome == "timing_difference"


def test_a_large_variance_asks_for_a_cycle_count_and_a_human() -> None:
    # 40 on hand: the threshold is max(5, 10 % of 40) = 5; a gap of 12 puts the count in doubt.
    [p] = decide_discrepancy(picture(40, 52))
    assert actions(p) == ["erp.post_adjustment", "wms.create_task"]
    assert p.actions[1].payload["task_type"] == "cycle_count"
    assert p.review_required and "in doubt" in (p.review_reason or "")


def test_at_the_threshold_no_cycle_count_is_needed() -> None:
    [p] = decide_discrepancy(picture(40, 45))
    assert actions(p) == ["erp.post_adjustment"] and not p.review_required


def test_reservations_the_count_no_longer_covers_are_released_newest_standard_first() -> None:
    early = NOW - timedelta(hours=5)
    late = NOW - timedelta(hours=1)
    reservations = [
        Reservation(order_id="SO-OLD", line=1, qty=4, created=early),
        Reservation(order_id="SO-NEW", line=1, qty=4, created=late),
        Reservation(order_id="SO-EXP", line=1, qty=4, priority="express", created=late),
    ]
    # 12 reserved, the WMS now has 9: 3 short, so the newest standard order gives its 4 back.
    stock, *held = decide_discrepancy(picture(9, 12, reservations=reservations))
    assert [h.subject for h in held] == ["SO-NEW"]
    assert actions(held[0]) == ["oms.release_allocation", "oms.hold_order", "oms.update_order_status", "notify.ticket"]
    assert held[0].actions[0].payload == {"order_id": "SO-NEW", "line": 1, "node": "N1", "qty": 4}
    assert held[0].actions[1].payload["reason"] == "no_stock"


def test_covered_reservations_are_left_alone() -> None:
    [p] = decide_discrepancy(picture(12, 12, reservations=[Reservation(order_id="SO-1", line=1, qty=12)]))
    assert p.outcome == "in_sync"
