"""The three-way match engine: each difference class, the tolerance boundary, duplicates, proposals."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.reconciliation import run_reconciliation_bench
from domain.decisions import Proposal
from domain.engines.matching import (
    DAMAGED,
    DUPLICATE,
    LOT,
    NO_ASN,
    OVER,
    OVERDUE,
    SHORT,
    UNEXPECTED,
    LineMatch,
    MatchResult,
    match,
    reconcile_proposals,
)
from domain.models import Asn, AsnLine, PoLine, PurchaseOrder, Receipt, ReceiptLine

NOW = datetime(2026, 3, 21, 8, 0, tzinfo=UTC)
YESTERDAY = date(2026, 3, 20)


def po(*lines: tuple[int, str, float, float, str | None], po_id: str = "PO-1") -> PurchaseOrder:
    """PO lines as (line, sku, qty, unit_price, lot)."""
    return PurchaseOrder(
        id=po_id,
        supplier="SUP-1",
        node="DC-1",
        lines=[PoLine(line=ln, sku=sku, qty=qty, unit_price=price, lot=lot) for ln, sku, qty, price, lot in lines],
    )


def asn(
    *lines: tuple[int, str, float, str | None],
    asn_id: str = "ASN-1",
    po_id: str = "PO-1",
    expected: date | None = YESTERDAY,
) -> Asn:
    """ASN lines as (po_line, sku, qty, lot)."""
    return Asn(
        id=asn_id,
        po_id=po_id,
        expected=expected,
        lines=[AsnLine(po_line=ln, sku=sku, qty=qty, lot=lot) for ln, sku, qty, lot in lines],
    )


def rec(
    *lines: tuple[int, str, float, str | None, float],
    rec_id: str = "GR-1",
    po_id: str = "PO-1",
    asn_id: str | None = "ASN-1",
) -> Receipt:
    """Receipt lines as (po_line, sku, qty, lot, damaged)."""
    return Receipt(
        id=rec_id,
        po_id=po_id,
        asn_id=asn_id,
        node="DC-1",
        received_at=NOW,
        lines=[ReceiptLine(po_line=ln, sku=sku, qty=qty, lot=lot, damaged=d) for ln, sku, qty, lot, d in lines],
    )


def one_line(
    received: float,
    *,
    ordered: float = 100,
    damaged: float = 0,
    po_lot: str | None = None,
    rec_lot: str | None = None,
    pct: float = 2.0,
    price: float = 5.0,
) -> tuple[MatchResult, LineMatch, list[Proposal]]:
    p = po((1, "A", ordered, price, po_lot))
    result = match([p], [asn((1, "A", ordered, po_lot))], [rec((1, "A", received, rec_lot, damaged))], pct, NOW)
    [line] = result.lines
    return result, line, reconcile_proposals(result, {p.id: p})


def actions(p: Proposal) -> list[str]:
    return [a.name for a in p.actions]


def ticket_resolutions(p: Proposal) -> list[tuple[str, str]]:
    return [(a.payload["team"], a.payload["resolution"]) for a in p.actions if a.name == "notify.ticket"]


# --------------------------------------------------------------------------- within tolerance


def test_exact_receipt_closes_the_line() -> None:
    result, line, [prop] = one_line(100)
    assert line.classes == [] and line.within_tolerance and line.auto_close
    assert (line.ordered, line.announced, line.received, line.damaged) == (100, 100, 100, 0)
    assert prop.workflow == "reconciliation" and prop.subject == "PO-1/1" and prop.outcome == "matched"
    assert not prop.review_required and prop.cost_impact == 0
    [close] = prop.actions
    assert close.name == "erp.close_po_line"
    assert close.payload["po_id"] == "PO-1" and close.payload["line"] == 1
    assert "within the 2% tolerance" in close.payload["reason"]
    assert result.findings == []


def test_receipt_in_tolerance_closes_the_line_and_records_why() -> None:
    _, line, [prop] = one_line(99, price=7.5)
    assert line.auto_close and line.evidence["diff"] == -1 and line.evidence["tolerance_qty"] == 2
    assert prop.outcome == "matched" and actions(prop) == ["erp.close_po_line"]
    assert prop.cost_impact == pytest.approx(7.5)  # the written-off unit
    assert "99 of 100" in prop.rationale and "±2" in prop.rationale


@pytest.mark.parametrize(
    ("ordered", "received", "pct", "closes", "cls"),
    [
        (100, 98, 2.0, True, None),  # exactly at tolerance, under
        (100, 102, 2.0, True, None),  # exactly at tolerance, over
        (100, 97.99, 2.0, False, SHORT),  # just outside
        (100, 102.01, 2.0, False, OVER),
        (55, 53.9, 2.0, True, None),  # tolerance 1.1 is not exact in binary floating point
        (55, 56.1, 2.0, True, None),
        (55, 53.89, 2.0, False, SHORT),
        (50, 48.9, 2.2, True, None),
        (100, 100, 0.0, True, None),  # zero tolerance: only an exact match closes
        (100, 99.5, 0.0, False, SHORT),
    ],
)
def test_tolerance_boundary(ordered: float, received: float, pct: float, closes: bool, cls: str | None) -> None:
    _, line, [prop] = one_line(received, ordered=ordered, pct=pct)
    assert line.auto_close is closes
    assert line.within_tolerance is closes
    assert line.classes == ([] if cls is None else [cls])
    assert prop.outcome == ("matched" if closes else "discrepancy")
    assert prop.review_required is not closes


# --------------------------------------------------------------------------- difference classes


def test_short_shipment_keeps_the_line_open_and_asks_for_a_backorder() -> None:
    _, line, [prop] = one_line(90, price=4.0)
    assert line.classes == [SHORT] and not line.auto_close
    assert prop.outcome == "discrepancy" and prop.review_required
    assert "erp.close_po_line" not in actions(prop)
    assert ticket_resolutions(prop) == [("receiving", "backorder_rest")]
    assert prop.cost_impact == pytest.approx(40.0)
    assert "90 good of 100 ordered, 10 short" in prop.rationale
    ticket = prop.actions[0].payload
    assert ticket["evidence"]["ordered"] == 100 and ticket["evidence"]["received_good"] == 90
    assert ticket["refs"] == ["PO-1", "PO-1/1", "GR-1", "ASN-1"]


def test_line_missing_from_the_receipt_is_short() -> None:
    p = po((1, "A", 10, 1.0, None), (2, "B", 20, 1.0, None))
    result = match([p], [asn((1, "A", 10, None), (2, "B", 20, None))], [rec((1, "A", 10, None, 0))], 2.0, NOW)
    first, second = result.lines
    assert first.auto_close
    assert second.classes == [SHORT] and second.received == 0


def test_over_shipment_asks_to_return_the_excess() -> None:
    _, line, [prop] = one_line(110, price=2.0)
    assert line.classes == [OVER]
    assert ticket_resolutions(prop) == [("receiving", "return_excess")]
    assert prop.cost_impact == pytest.approx(20.0)


def test_lot_mismatch_never_auto_closes() -> None:
    _, line, [prop] = one_line(100, po_lot="L-1", rec_lot="L-2")
    assert line.classes == [LOT] and line.within_tolerance and not line.auto_close
    assert ticket_resolutions(prop) == [("receiving", "correct_lot")]
    assert prop.cost_impact == 0
    assert "lot L-2 received where lot L-1 was expected" in prop.rationale
    assert line.evidence["received_lots"] == [{"receipt": "GR-1", "lot": "L-2", "qty": 100}]


def test_missing_lot_where_one_is_expected_is_a_mismatch() -> None:
    _, line, _ = one_line(100, po_lot="L-1", rec_lot=None)
    assert line.classes == [LOT]


def test_lot_announced_by_the_asn_is_expected_when_the_po_names_none() -> None:
    p = po((1, "A", 100, 1.0, None))
    result = match([p], [asn((1, "A", 100, "L-A"))], [rec((1, "A", 100, "L-B", 0))], 2.0, NOW)
    assert result.lines[0].classes == [LOT]
    result = match([p], [asn((1, "A", 100, "L-A"))], [rec((1, "A", 100, "L-A", 0))], 2.0, NOW)
    assert result.lines[0].auto_close


def test_a_lot_captured_where_none_is_expected_is_fine() -> None:
    _, line, _ = one_line(100, po_lot=None, rec_lot="L-9")
    assert line.auto_close


def test_damage_within_tolerance_still_goes_to_finance() -> None:
    _, line, [prop] = one_line(100, damaged=1, price=3.0)
    assert line.received_good == 99 and line.within_tolerance
    assert line.classes == [DAMAGED] and not line.auto_close
    assert ticket_resolutions(prop) == [("finance", "debit_note")]
    assert prop.cost_impact == pytest.approx(3.0)


def test_damaged_units_are_not_received_good() -> None:
    _, line, [prop] = one_line(100, damaged=10, price=3.0)
    assert line.received == 100 and line.damaged == 10 and line.received_good == 90
    assert line.classes == [SHORT, DAMAGED]
    assert ticket_resolutions(prop) == [("receiving", "backorder_rest"), ("finance", "debit_note")]
    assert prop.cost_impact == pytest.approx(30.0)  # the 10 damaged units are the shortfall: not counted twice


def test_wrong_sku_received_is_unexpected_and_does_not_count() -> None:
    p = po((1, "A", 100, 1.0, None))
    result = match([p], [asn((1, "A", 100, None))], [rec((1, "Z", 100, None, 0))], 2.0, NOW)
    [line] = result.lines
    assert line.classes == [SHORT, UNEXPECTED] and line.received == 0
    assert line.evidence["unexpected"] == [{"source": "receipt", "doc": "GR-1", "sku": "Z", "qty": 100}]
    [prop] = reconcile_proposals(result, {p.id: p}, unit_cost={"Z": 2.0})
    assert ("receiving", "unexpected_sku") in ticket_resolutions(prop)
    assert "GR-1" in prop.actions[-1].payload["refs"]
    assert prop.cost_impact == pytest.approx(100 * 1.0 + 100 * 2.0)


def test_wrong_sku_announced_is_unexpected() -> None:
    p = po((1, "A", 100, 1.0, None))
    result = match([p], [asn((1, "Z", 100, None))], [rec((1, "A", 100, None, 0))], 2.0, NOW)
    [line] = result.lines
    assert line.classes == [UNEXPECTED] and not line.auto_close and line.announced is None


def test_a_line_the_po_does_not_have_is_an_unexpected_row() -> None:
    p = po((1, "A", 100, 1.0, None))
    result = match([p], [asn((1, "A", 100, None))], [rec((1, "A", 100, None, 0), (7, "Q", 4, None, 0))], 2.0, NOW)
    first, extra = result.lines
    assert first.auto_close
    assert (extra.po_id, extra.po_line, extra.sku, extra.on_po) == ("PO-1", 7, "Q", False)
    assert extra.classes == [UNEXPECTED] and extra.ordered == 0 and extra.received == 4
    props = reconcile_proposals(result, {p.id: p}, unit_cost={"Q": 10.0})
    assert [x.subject for x in props] == ["PO-1/1", "PO-1/7"]
    assert props[1].cost_impact == pytest.approx(40.0)
    assert "PO PO-1 has no line 7" in props[1].rationale


def test_receipt_for_an_unknown_po() -> None:
    result = match([], [], [rec((1, "A", 5, None, 0), po_id="PO-X", asn_id=None)], 2.0, NOW)
    [line] = result.lines
    assert not line.on_po and line.classes == [UNEXPECTED] and line.evidence["reason"] == "PO PO-X is not known"
    assert [f.kind for f in result.findings] == [NO_ASN]


# --------------------------------------------------------------------------- document-level findings


def test_duplicate_receipt_same_id_is_not_counted_twice() -> None:
    p = po((1, "A", 100, 1.0, None))
    r = rec((1, "A", 100, None, 0))
    result = match([p], [asn((1, "A", 100, None))], [r, r.model_copy()], 2.0, NOW)
    [line] = result.lines
    assert line.received == 100 and line.auto_close
    [dup] = result.duplicate_receipts
    assert (dup.kind, dup.doc_id, dup.evidence["duplicate_of"]) == (DUPLICATE, "GR-1", "GR-1")
    props = reconcile_proposals(result, {p.id: p})
    assert [(x.subject, x.outcome) for x in props] == [("PO-1/1", "matched"), ("GR-1", "discrepancy")]
    assert props[1].review_required and ticket_resolutions(props[1]) == [("receiving", "reverse_duplicate")]
    assert props[1].cost_impact == pytest.approx(100.0)
    assert "posted a second time" in props[1].rationale


def test_second_receipt_for_the_same_asn_with_identical_lines_is_a_duplicate() -> None:
    p = po((1, "A", 100, 1.0, "L"), (2, "B", 10, 1.0, None))
    lines: tuple[tuple[int, str, float, str | None, float], ...] = ((1, "A", 100, "L", 0), (2, "B", 10, None, 0))
    first = rec(*lines, rec_id="GR-1")
    again = rec(*reversed(lines), rec_id="GR-2")  # same lines in another order
    result = match([p], [asn((1, "A", 100, "L"), (2, "B", 10, None))], [first, again], 2.0, NOW)
    assert [ln.received for ln in result.lines] == [100, 10]
    assert all(ln.auto_close for ln in result.lines)
    [dup] = result.duplicate_receipts
    assert dup.doc_id == "GR-2" and dup.evidence["duplicate_of"] == "GR-1"


def test_two_different_receipts_for_one_asn_both_count() -> None:
    p = po((1, "A", 100, 1.0, None))
    parts = [rec((1, "A", 60, None, 0), rec_id="GR-1"), rec((1, "A", 40, None, 0), rec_id="GR-2")]
    result = match([p], [asn((1, "A", 100, None))], parts, 2.0, NOW)
    [line] = result.lines
    assert line.received == 100 and line.auto_close and result.findings == []
    assert line.evidence["receipts"] == ["GR-1", "GR-2"]


@pytest.mark.parametrize(
    ("asn_id", "asns", "reason"),
    [
        (None, [], "the receipt names no ASN"),
        ("ASN-404", [], "ASN ASN-404 is not known"),
        ("ASN-9", [asn((1, "A", 100, None), asn_id="ASN-9", po_id="PO-9")], "ASN ASN-9 belongs to PO PO-9"),
    ],
)
def test_receipt_without_asn(asn_id: str | None, asns: list[Asn], reason: str) -> None:
    p = po((1, "A", 100, 1.0, None))
    result = match([p], asns, [rec((1, "A", 100, None, 0), asn_id=asn_id)], 2.0, NOW)
    line = result.lines[0]  # (an ASN for an unknown PO adds a row of its own)
    assert line.subject == "PO-1/1" and line.auto_close  # the goods match the PO: a finding, not a hold
    [finding] = result.receipts_without_asn
    assert finding.kind == NO_ASN and finding.doc_id == "GR-1" and finding.evidence["reason"].startswith(reason)
    props = {x.subject: x for x in reconcile_proposals(result, {p.id: p})}
    assert props["GR-1"].outcome == "discrepancy" and props["GR-1"].review_required
    assert ticket_resolutions(props["GR-1"]) == [("receiving", "request_asn")]


@pytest.mark.parametrize(
    ("expected", "overdue"),
    [(date(2026, 3, 19), True), (date(2026, 3, 20), True), (date(2026, 3, 21), False), (None, False)],
)
def test_asn_never_received_is_overdue_after_its_day_and_grace(expected: date | None, overdue: bool) -> None:
    p = po((1, "A", 100, 1.0, None))
    result = match([p], [asn((1, "A", 100, None), expected=expected)], [], 2.0, NOW)
    [line] = result.lines
    assert line.awaiting and not line.auto_close and line.classes == []  # nothing is short yet
    assert [f.doc_id for f in result.overdue_asns] == (["ASN-1"] if overdue else [])
    props = reconcile_proposals(result, {p.id: p})
    assert [(x.subject, x.outcome) for x in props] == ([("ASN-1", "discrepancy")] if overdue else [])
    if overdue:
        assert ticket_resolutions(props[0]) == [("planning", "chase_supplier")]


def test_overdue_after_hours_is_configurable() -> None:
    p = po((1, "A", 100, 1.0, None))
    late = match([p], [asn((1, "A", 100, None))], [], 2.0, NOW, overdue_after_hours=24)
    lenient = match([p], [asn((1, "A", 100, None))], [], 2.0, NOW, overdue_after_hours=48)
    assert len(late.overdue_asns) == 1 and lenient.overdue_asns == []


def test_a_received_asn_is_not_overdue() -> None:
    p = po((1, "A", 100, 1.0, None))
    result = match([p], [asn((1, "A", 100, None), expected=date(2026, 3, 1))], [rec((1, "A", 100, None, 0))], 2, NOW)
    assert result.overdue_asns == [] and result.lines[0].auto_close


def test_a_line_still_announced_by_an_unreceived_asn_is_awaited_not_short() -> None:
    p = po((1, "A", 100, 1.0, None), (2, "B", 10, 1.0, None))
    asns = [asn((1, "A", 50, None)), asn((1, "A", 50, None), (2, "B", 10, None), asn_id="ASN-2", expected=NOW.date())]
    result = match([p], asns, [rec((1, "A", 50, None, 0))], 2.0, NOW)
    first, second = result.lines
    assert first.awaiting and first.classes == [] and not first.auto_close
    assert second.awaiting and second.classes == []
    assert reconcile_proposals(result, {p.id: p}) == []
    # Too much already there is over, even before the rest arrives.
    result = match([p], asns, [rec((1, "A", 120, None, 0))], 2.0, NOW)
    assert result.lines[0].classes == [OVER] and result.lines[0].awaiting


def test_a_receipt_naming_no_asn_does_not_receive_the_pos_asn() -> None:
    # Conservative: the receipt may or may not be that ASN's delivery, so a person decides.
    p = po((1, "A", 100, 1.0, None))
    result = match([p], [asn((1, "A", 100, None))], [rec((1, "A", 100, None, 0), asn_id=None)], 2.0, NOW)
    [line] = result.lines
    assert line.awaiting and not line.auto_close
    assert [(f.kind, f.doc_id) for f in result.findings] == [(NO_ASN, "GR-1"), (OVERDUE, "ASN-1")]


def test_asn_vs_po_difference_is_kept_in_evidence() -> None:
    p = po((1, "A", 100, 1.0, "L-1"))
    result = match([p], [asn((1, "A", 90, "L-0"))], [rec((1, "A", 100, "L-1", 0))], 2.0, NOW)
    [line] = result.lines
    assert line.auto_close  # the receipt matches the PO; the ASN's figures are evidence
    assert line.announced == 90 and line.evidence["asn_diff"] == -10 and line.evidence["asn_lot"] == "L-0"


def test_several_classes_on_one_line() -> None:
    p = po((1, "A", 100, 2.0, "L-1"))
    result = match([p], [asn((1, "A", 100, "L-1"))], [rec((1, "A", 80, "L-2", 5))], 2.0, NOW)
    [line] = result.lines
    assert line.classes == [SHORT, LOT, DAMAGED]
    [prop] = reconcile_proposals(result, {p.id: p})
    assert ticket_resolutions(prop) == [
        ("receiving", "backorder_rest"),
        ("receiving", "correct_lot"),
        ("finance", "debit_note"),
    ]
    assert prop.cost_impact == pytest.approx(25 * 2.0)
    assert prop.review_reason is not None and "short shipment" in prop.review_reason


def test_unit_cost_prices_a_line_whose_po_has_no_price() -> None:
    p = po((1, "A", 100, 0.0, None))
    result = match([p], [asn((1, "A", 100, None))], [rec((1, "A", 90, None, 0))], 2.0, NOW)
    [prop] = reconcile_proposals(result, {p.id: p}, unit_cost={"A": 3.0})
    assert prop.cost_impact == pytest.approx(30.0)


def test_repeated_po_and_line_keep_their_first_occurrence() -> None:
    p = po((1, "A", 100, 1.0, None), (1, "B", 5, 1.0, None))
    result = match([p, po((1, "C", 1, 1.0, None))], [asn((1, "A", 100, None))], [rec((1, "A", 100, None, 0))], 2, NOW)
    assert [(ln.po_line, ln.sku, ln.auto_close) for ln in result.lines] == [(1, "A", True)]


def test_same_input_same_output() -> None:
    p1 = po((1, "A", 100, 1.0, "L"), (2, "B", 10, 2.0, None))
    p2 = po((1, "C", 30, 1.0, None), po_id="PO-2")
    asns = [asn((1, "A", 100, "L"), (2, "B", 10, None))]
    recs = [
        rec((1, "A", 95, "L", 2), (2, "B", 10, None, 0)),
        rec((1, "C", 31, None, 0), rec_id="GR-2", po_id="PO-2", asn_id=None),
    ]

    def run() -> list[dict[str, Any]]:
        result = match([p1, p2], asns, recs, 2.0, NOW)
        return [x.model_dump() for x in reconcile_proposals(result, {"PO-1": p1, "PO-2": p2})]

    first = run()
    assert first == run()
    assert [x["subject"] for x in first] == ["PO-1/1", "PO-1/2", "PO-2/1", "GR-2"]


def test_negative_tolerance_is_refused() -> None:
    with pytest.raises(ValueError, match="tolerance_pct"):
        match([], [], [], -1.0, NOW)


# --------------------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
@given(
    ordered=st.integers(min_value=1, max_value=1000),
    received=st.integers(min_value=0, max_value=1200),
    damaged_share=st.floats(min_value=0, max_value=1),
    pct=st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0]),
    po_lot=st.sampled_from([None, "L-1"]),
    rec_lot=st.sampled_from([None, "L-1", "L-2"]),
    duplicate=st.booleans(),
)
def test_auto_close_only_within_tolerance_and_without_classes(
    ordered: int,
    received: int,
    damaged_share: float,
    pct: float,
    po_lot: str | None,
    rec_lot: str | None,
    duplicate: bool,
) -> None:
    damaged = float(int(received * damaged_share))
    p = po((1, "A", ordered, 1.0, po_lot))
    receipts = [rec((1, "A", received, rec_lot, damaged))]
    if duplicate:
        receipts.append(receipts[0].model_copy())
    result = match([p], [asn((1, "A", ordered, po_lot))], receipts, pct, NOW)
    [line] = result.lines
    good = received - damaged
    assert line.received == received and line.received_good == good  # a duplicate never counts twice
    tolerance = ordered * pct / 100
    if line.auto_close:
        assert line.within_tolerance and line.classes == []
        assert abs(good - ordered) <= tolerance + 1e-9 * ordered
    assert line.within_tolerance == (abs(good - ordered) * 100 <= ordered * pct)
    assert (SHORT in line.classes) == (good * 100 < ordered * (100 - pct))
    assert (OVER in line.classes) == (good * 100 > ordered * (100 + pct))
    assert (DAMAGED in line.classes) == (damaged > 0)
    assert (LOT in line.classes) == (po_lot is not None and rec_lot != po_lot)
    [prop, *_] = reconcile_proposals(result, {p.id: p})
    assert (prop.outcome == "matched") == line.auto_close
    assert ("erp.close_po_line" in actions(prop)) == line.auto_close
    assert [f.kind for f in result.findings] == ([DUPLICATE] if duplicate else [])


# --------------------------------------------------------------------------- benchmark


def test_bench_finds_every_planted_difference_and_closes_nothing_wrongly() -> None:
    result = run_reconciliation_bench(lines=5000, runs=1)
    ours = result["crossdock"]
    classes = [SHORT, OVER, LOT, DAMAGED, UNEXPECTED, DUPLICATE, NO_ASN, OVERDUE]
    assert all(result["planted"][c] > 0 for c in classes)
    assert {c: ours[f"{c}_recall"] for c in classes} == dict.fromkeys(classes, 1.0)
    assert ours["wrong_auto_closes"] == 0
    assert ours["auto_closed_share_of_in_tolerance"] >= 0.9
    assert result["baseline"]["auto_closed"] == 0
    assert result["po_lines"] == 5000
