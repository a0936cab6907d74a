"""Three-way match: purchase-order lines against ASN lines against goods receipts.

``match`` flattens the documents into numpy columns once, joins ASN and receipt lines to PO
lines on (PO, line number) with a sorted-key search, and classifies every PO line with array
arithmetic; only the exceptions (lines naming a PO line that does not exist, evidence for the
lines that differ, document-level findings) are handled one by one. ``reconcile_proposals``
turns the result into one reconciliation proposal per PO line that can be settled, plus one per
document-level finding.

Semantics (the tests in ``tests/unit/test_matching.py`` hold each of them):

* **Rows.** One ``LineMatch`` per PO line, in PO input order then line order. A PO id or a line
  number seen twice keeps its first occurrence. Receipt or ASN lines that name a PO line that
  does not exist (or a PO that is not known) become extra rows with ``on_po=False``, ordered 0,
  class ``unexpected_sku``.
* **Received good** = Σ over the PO line's receipt lines with the PO line's SKU of
  ``max(qty - damaged, 0)``: a receipt line's ``qty`` is what arrived, ``damaged`` the part of it
  that arrived damaged (as the twin books it), and damaged units are not received good.
* **Tolerance** is relative to the ordered quantity: ``diff = received_good - ordered`` is within
  tolerance when ``|diff| <= ordered * tolerance_pct / 100`` (plus 1e-9 relative, for float
  rounding), so a line exactly at tolerance is within it and auto-closes.
* **Awaiting.** A PO line is settled only when its PO has at least one receipt and no ASN that
  announces the line is still unreceived. Until then it is ``awaiting``: it is never closed and
  never called short (more may come), but over-receipt, lot, damage and SKU findings are raised
  as soon as the goods are there.
* **Classes of a line** (several may apply): ``short_shipment`` (settled and
  ``diff < -tolerance``), ``over_shipment`` (``diff > tolerance``), ``lot_mismatch`` (a receipt
  line's lot differs from the expected lot: the PO line's lot, or if the PO line has none the lot
  the ASN announced; a missing lot where one is expected is a mismatch; ``""`` counts as no
  lot), ``damaged`` (any damaged units), ``unexpected_sku`` (a receipt or ASN line for this PO
  line with another SKU; its quantity does not count as received for the PO line). A difference
  within tolerance is not a class: it is the recorded reason for the auto-close.
* **Auto-close** = settled, within tolerance and no class. Lot mismatch, damage and an
  unexpected SKU therefore never auto-close, whatever the quantity.
* **Duplicate receipt** = a receipt id seen a second time, or a second receipt for the same PO
  and ASN whose lines are identical (same po_line, sku, qty, lot, damaged, in any order). The
  first one (input order) counts; the duplicate counts for nothing and becomes a finding.
* **Receipt without ASN** = a counted receipt whose ``asn_id`` is null, unknown, or an ASN of
  another PO. Its lines still count against the PO (a finding, not a reason to hold the line).
  Such a receipt never "receives" an ASN of the PO, even the only one: the ASN stays pending (its
  lines stay awaiting, and it falls overdue in time), so a person links the two.
* **Overdue ASN** = an ASN (first occurrence of its id) that no counted receipt references and
  whose expected date (the ASN's, else its PO's; taken as 00:00 UTC that day) plus
  ``overdue_after_hours`` is before ``now``. With the default 24 h, an ASN is overdue once its
  whole expected day has passed. An ASN with no date is never overdue.
* ASN-vs-PO differences (announced more or less than ordered, another lot) are kept in the
  evidence (``announced``, ``asn_diff``, ``asn_lot``) and are not classes by themselves.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any

import numpy as np
import numpy.typing as npt

from domain.decisions import Action, Proposal, ticket
from domain.models import Asn, PurchaseOrder, Receipt
from domain.rationale import num, signed

ENGINE_VERSION = "matching/1.0.0"

SHORT = "short_shipment"
OVER = "over_shipment"
LOT = "lot_mismatch"
DAMAGED = "damaged"
UNEXPECTED = "unexpected_sku"
DUPLICATE = "duplicate_receipt"
NO_ASN = "receipt_without_asn"
OVERDUE = "asn_overdue"

LINE_CLASSES: tuple[str, ...] = (SHORT, OVER, LOT, DAMAGED, UNEXPECTED)
DOCUMENT_CLASSES: tuple[str, ...] = (DUPLICATE, NO_ASN, OVERDUE)
# Classes a human must settle even when the quantity is within tolerance.
HUMAN_CLASSES = frozenset({LOT, DAMAGED, UNEXPECTED})

_BITS = {SHORT: 1, OVER: 2, LOT: 4, DAMAGED: 8, UNEXPECTED: 16}
_CLASS_LISTS: tuple[tuple[str, ...], ...] = tuple(
    tuple(c for c in LINE_CLASSES if m & _BITS[c]) for m in range(1 << len(LINE_CLASSES))
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(slots=True)
class LineMatch:
    """One PO line after the match (or a receipt/ASN line naming no PO line: ``on_po=False``)."""

    po_id: str
    po_line: int
    sku: str
    ordered: float
    announced: float | None  # Σ ASN qty for the line with its SKU; None when no ASN announces it
    received: float  # Σ receipt qty with the line's SKU, damaged units included
    damaged: float
    classes: list[str]
    within_tolerance: bool
    auto_close: bool
    evidence: dict[str, Any]
    received_good: float = 0.0  # received minus damaged: what the tolerance is applied to
    awaiting: bool = False  # no receipt on the PO yet, or an ASN for the line still unreceived
    on_po: bool = True

    @property
    def subject(self) -> str:
        return f"{self.po_id}/{self.po_line}"


@dataclass(slots=True)
class DocFinding:
    """A document-level finding: a duplicate receipt, a receipt without ASN, an overdue ASN."""

    kind: str  # one of DOCUMENT_CLASSES
    doc_id: str  # the receipt id or the ASN id
    po_id: str
    refs: list[str]
    evidence: dict[str, Any]


@dataclass(slots=True)
class MatchResult:
    lines: list[LineMatch]
    duplicate_receipts: list[DocFinding]
    receipts_without_asn: list[DocFinding]
    overdue_asns: list[DocFinding]
    tolerance_pct: float
    now: datetime
    overdue_after_hours: float
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def findings(self) -> list[DocFinding]:
        """Every document-level finding: duplicates, then receipts without ASN, then overdue ASNs."""
        return [*self.duplicate_receipts, *self.receipts_without_asn, *self.overdue_asns]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _lines_signature(receipt: Receipt) -> tuple[tuple[int, str, float, str, float], ...]:
    return tuple(sorted((ln.po_line, ln.sku, float(ln.qty), ln.lot or "", float(ln.damaged)) for ln in receipt.lines))


def _line_dicts(receipt: Receipt) -> list[dict[str, Any]]:
    return [
        {"po_line": ln.po_line, "sku": ln.sku, "qty": float(ln.qty), "lot": ln.lot, "damaged": float(ln.damaged)}
        for ln in receipt.lines
    ]


def _lookup(keys_sorted: IntArray, rank_to_row: IntArray, keys: IntArray) -> IntArray:
    """Row of each key, or -1 when no PO line has it."""
    if len(keys_sorted) == 0 or len(keys) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    pos = np.searchsorted(keys_sorted, keys)
    pos_c = np.minimum(pos, len(keys_sorted) - 1)
    found = keys_sorted[pos_c] == keys
    return np.where(found, rank_to_row[pos_c], -1)


class _Vocab:
    """Strings (SKUs, lots) as integer codes, so that comparing them is integer arithmetic; "" is 0."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {"": 0}

    def encode(self, values: list[str]) -> IntArray:
        codes = self.codes
        for v in dict.fromkeys(values):
            if v not in codes:
                codes[v] = len(codes)
        return np.array([codes[v] for v in values], dtype=np.int64)

    def words(self) -> list[str]:
        return list(self.codes)


def _same(row_values: IntArray, rows: IntArray, values: IntArray) -> BoolArray:
    """Where ``rows`` names a row (>= 0) whose value equals ``values``."""
    out = rows >= 0
    out[out] = row_values[rows[out]] == values[out]
    return out


def _grouped(rows: IntArray, values: list[str], n: int) -> tuple[list[str], list[int]]:
    """``values`` ordered by row (stable), and each row's start offset (n + 1 offsets)."""
    order = np.argsort(rows, kind="stable")
    counts = np.bincount(rows, minlength=n)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return [values[i] for i in order.tolist()], starts.tolist()


def match(
    pos: Sequence[PurchaseOrder],
    asns: Sequence[Asn],
    receipts: Sequence[Receipt],
    tolerance_pct: float,
    now: datetime,
    overdue_after_hours: float = 24.0,
) -> MatchResult:
    """Match every PO line against its ASN and receipt lines; see the module docstring.

    The cyclic garbage collector is paused while the result is built: the records are acyclic
    (reference counting frees them), and building a few hundred thousand of them next to the
    input documents otherwise triggers full collections that cost more than the match itself.
    """
    if tolerance_pct < 0:
        raise ValueError("tolerance_pct must be >= 0")
    with _gc_paused():
        return _match(pos, asns, receipts, tolerance_pct, _aware(now), overdue_after_hours)


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _match(
    pos: Sequence[PurchaseOrder],
    asns: Sequence[Asn],
    receipts: Sequence[Receipt],
    tolerance_pct: float,
    now: datetime,
    overdue_after_hours: float,
) -> MatchResult:

    # --- purchase orders: one row per (PO, line), first occurrence wins ----------------------
    po_index: dict[str, int] = {}
    po_list: list[PurchaseOrder] = []
    for po in pos:
        if po.id not in po_index:
            po_index[po.id] = len(po_list)
            po_list.append(po)
    r_po: list[int] = []
    r_line: list[int] = []
    r_sku: list[str] = []
    r_qty: list[float] = []
    r_price: list[float] = []
    r_lot: list[str] = []
    for i, po in enumerate(po_list):
        for ln in po.lines:
            r_po.append(i)
            r_line.append(ln.line)
            r_sku.append(ln.sku)
            r_qty.append(ln.qty)
            r_price.append(ln.unit_price)
            r_lot.append(ln.lot or "")

    # --- ASNs: first occurrence of an id counts ----------------------------------------------
    asn_index: dict[str, int] = {}
    asn_list: list[Asn] = []
    for asn in asns:
        if asn.id not in asn_index:
            asn_index[asn.id] = len(asn_list)
            asn_list.append(asn)

    # --- receipts: drop duplicates (same id; same PO+ASN with identical lines) ---------------
    kept: list[Receipt] = []
    duplicates: list[DocFinding] = []
    seen_ids: set[str] = set()
    unique_by_id: list[Receipt] = []
    for rec in receipts:
        if rec.id in seen_ids:
            duplicates.append(
                DocFinding(
                    kind=DUPLICATE,
                    doc_id=rec.id,
                    po_id=rec.po_id,
                    refs=[rec.id, rec.po_id, *([rec.asn_id] if rec.asn_id else [])],
                    evidence={
                        "how": "same receipt id posted again",
                        "duplicate_of": rec.id,
                        "asn_id": rec.asn_id,
                        "lines": _line_dicts(rec),
                    },
                )
            )
            continue
        seen_ids.add(rec.id)
        unique_by_id.append(rec)
    per_asn: dict[tuple[str, str], int] = {}
    for rec in unique_by_id:
        if rec.asn_id:
            k = (rec.po_id, rec.asn_id)
            per_asn[k] = per_asn.get(k, 0) + 1
    signatures: dict[tuple[str, str], dict[tuple[tuple[int, str, float, str, float], ...], str]] = {}
    for rec in unique_by_id:
        if rec.asn_id and per_asn[(rec.po_id, rec.asn_id)] > 1:
            group = signatures.setdefault((rec.po_id, rec.asn_id), {})
            sig = _lines_signature(rec)
            first = group.get(sig)
            if first is not None:
                duplicates.append(
                    DocFinding(
                        kind=DUPLICATE,
                        doc_id=rec.id,
                        po_id=rec.po_id,
                        refs=[rec.id, first, rec.po_id, rec.asn_id],
                        evidence={
                            "how": "second receipt for the same ASN with identical lines",
                            "duplicate_of": first,
                            "asn_id": rec.asn_id,
                            "lines": _line_dicts(rec),
                        },
                    )
                )
                continue
            group[sig] = rec.id
        kept.append(rec)

    received_asns: set[str] = set()
    without_asn: list[DocFinding] = []
    for rec in kept:
        asn_i = asn_index.get(rec.asn_id) if rec.asn_id else None
        if asn_i is not None and asn_list[asn_i].po_id == rec.po_id:
            received_asns.add(asn_list[asn_i].id)
            continue
        if not rec.asn_id:
            reason = "the receipt names no ASN"
        elif asn_i is None:
            reason = f"ASN {rec.asn_id} is not known"
        else:
            reason = f"ASN {rec.asn_id} belongs to PO {asn_list[asn_i].po_id}, not {rec.po_id}"
        without_asn.append(
            DocFinding(
                kind=NO_ASN,
                doc_id=rec.id,
                po_id=rec.po_id,
                refs=[rec.id, rec.po_id, *([rec.asn_id] if rec.asn_id else [])],
                evidence={
                    "reason": reason,
                    "asn_id": rec.asn_id,
                    "po_known": rec.po_id in po_index,
                    "lines": _line_dicts(rec),
                },
            )
        )

    overdue: list[DocFinding] = []
    for asn in asn_list:
        if asn.id in received_asns:
            continue
        po_i = po_index.get(asn.po_id)
        expected = asn.expected or (po_list[po_i].expected if po_i is not None else None)
        if expected is None:
            continue
        due = datetime.combine(expected, dtime(0), tzinfo=UTC) + timedelta(hours=overdue_after_hours)
        if due < now:
            overdue.append(
                DocFinding(
                    kind=OVERDUE,
                    doc_id=asn.id,
                    po_id=asn.po_id,
                    refs=[asn.id, asn.po_id],
                    evidence={
                        "expected": expected.isoformat(),
                        "overdue_after_hours": overdue_after_hours,
                        "overdue_since": due.isoformat(),
                        "hours_overdue": round((now - due).total_seconds() / 3600, 1),
                        "supplier": asn.supplier,
                        "lines": [
                            {"po_line": ln.po_line, "sku": ln.sku, "qty": ln.qty, "lot": ln.lot} for ln in asn.lines
                        ],
                    },
                )
            )

    # --- flatten ASN and receipt lines -------------------------------------------------------
    a_po: list[int] = []
    a_line: list[int] = []
    a_sku: list[str] = []
    a_qty: list[float] = []
    a_lot: list[str] = []
    a_doc: list[int] = []
    for j, asn in enumerate(asn_list):
        pi = po_index.get(asn.po_id, -1)
        for aln in asn.lines:
            a_po.append(pi)
            a_line.append(aln.po_line)
            a_sku.append(aln.sku)
            a_qty.append(aln.qty)
            a_lot.append(aln.lot or "")
            a_doc.append(j)
    c_po: list[int] = []
    c_line: list[int] = []
    c_sku: list[str] = []
    c_qty: list[float] = []
    c_dmg: list[float] = []
    c_lot: list[str] = []
    c_doc: list[int] = []
    for j, rec in enumerate(kept):
        pi = po_index.get(rec.po_id, -1)
        for rln in rec.lines:
            c_po.append(pi)
            c_line.append(rln.po_line)
            c_sku.append(rln.sku)
            c_qty.append(rln.qty)
            c_dmg.append(rln.damaged)
            c_lot.append(rln.lot or "")
            c_doc.append(j)

    # --- join on (PO index, line-number code) -------------------------------------------------
    n_r, n_a, n_c = len(r_line), len(a_line), len(c_line)
    all_lines = np.array(r_line + a_line + c_line, dtype=np.int64)
    uniq_lines, line_code = np.unique(all_lines, return_inverse=True)
    width = max(1, len(uniq_lines))
    r_key_all = np.array(r_po, dtype=np.int64) * width + line_code[:n_r]
    ukeys, first = np.unique(r_key_all, return_index=True)
    keep_rows = np.sort(first)
    row_of_old = np.full(n_r, -1, dtype=np.int64)
    row_of_old[keep_rows] = np.arange(len(keep_rows), dtype=np.int64)
    rank_to_row = row_of_old[first]
    if len(keep_rows) != n_r:  # a line number repeated on a PO: its first occurrence counts
        kr = keep_rows.tolist()
        r_po = [r_po[i] for i in kr]
        r_line = [r_line[i] for i in kr]
        r_sku = [r_sku[i] for i in kr]
        r_qty = [r_qty[i] for i in kr]
        r_price = [r_price[i] for i in kr]
        r_lot = [r_lot[i] for i in kr]
    n = len(r_line)

    a_po_arr = np.array(a_po, dtype=np.int64)
    c_po_arr = np.array(c_po, dtype=np.int64)
    a_row = _lookup(ukeys, rank_to_row, np.where(a_po_arr >= 0, a_po_arr * width + line_code[n_r : n_r + n_a], -1))
    c_row = _lookup(ukeys, rank_to_row, np.where(c_po_arr >= 0, c_po_arr * width + line_code[n_r + n_a :], -1))

    vocab = _Vocab()
    row_sku = vocab.encode(r_sku)
    row_lot = vocab.encode(r_lot)
    ordered = np.array(r_qty, dtype=np.float64)
    po_of_row = np.array(r_po, dtype=np.int64)

    # ASN lines -> announced, pending, expected lot
    a_known = a_row >= 0
    a_sku_arr = vocab.encode(a_sku)
    a_lot_arr = vocab.encode(a_lot)
    a_qty_arr = np.array(a_qty, dtype=np.float64)
    a_ok = _same(row_sku, a_row, a_sku_arr)
    a_received = np.array([asn_list[j].id in received_asns for j in range(len(asn_list))], dtype=np.bool_)
    a_doc_arr = np.array(a_doc, dtype=np.int64)
    a_pending = a_ok & ~a_received[a_doc_arr]
    announced = np.bincount(a_row[a_ok], weights=a_qty_arr[a_ok], minlength=n)
    n_announcing = np.bincount(a_row[a_ok], minlength=n)
    pending = np.bincount(a_row[a_pending], weights=a_qty_arr[a_pending], minlength=n)
    a_bad = a_known & ~a_ok
    asn_unexpected = np.bincount(a_row[a_bad], minlength=n)
    asn_lot = np.zeros(n, dtype=np.int64)
    lot_from = a_ok & (a_lot_arr != 0)
    lot_rows, lot_first = np.unique(a_row[lot_from], return_index=True)
    asn_lot[lot_rows] = a_lot_arr[lot_from][lot_first]
    expected_lot = np.where(row_lot != 0, row_lot, asn_lot)

    # receipt lines -> received, damaged, good, lot mismatch, unexpected SKU
    c_known = c_row >= 0
    c_sku_arr = vocab.encode(c_sku)
    c_lot_arr = vocab.encode(c_lot)
    c_qty_arr = np.array(c_qty, dtype=np.float64)
    c_dmg_arr = np.array(c_dmg, dtype=np.float64)
    c_ok = _same(row_sku, c_row, c_sku_arr)
    c_good = np.maximum(c_qty_arr - c_dmg_arr, 0.0)
    received = np.bincount(c_row[c_ok], weights=c_qty_arr[c_ok], minlength=n)
    damaged = np.bincount(c_row[c_ok], weights=c_dmg_arr[c_ok], minlength=n)
    good = np.bincount(c_row[c_ok], weights=c_good[c_ok], minlength=n)
    exp_lot_c = np.zeros(n_c, dtype=np.int64)
    exp_lot_c[c_ok] = expected_lot[c_row[c_ok]]
    c_lot_bad = c_ok & (exp_lot_c != 0) & (c_lot_arr != exp_lot_c)
    lot_bad = np.bincount(c_row[c_lot_bad], minlength=n)
    c_bad = c_known & ~c_ok
    rec_unexpected = np.bincount(c_row[c_bad], minlength=n)
    po_received = np.bincount(
        np.array([po_index[r.po_id] for r in kept if r.po_id in po_index], dtype=np.int64), minlength=len(po_list)
    )

    # classification
    settled = (po_received[po_of_row] > 0) & (pending <= 0)
    tol = ordered * (tolerance_pct / 100.0)
    slack = tol + 1e-9 * np.maximum(ordered, 1.0)
    diff = good - ordered
    within = np.abs(diff) <= slack
    mask = np.zeros(n, dtype=np.int64)
    mask |= np.where(settled & (diff < -slack), _BITS[SHORT], 0)
    mask |= np.where(diff > slack, _BITS[OVER], 0)
    mask |= np.where(lot_bad > 0, _BITS[LOT], 0)
    mask |= np.where(damaged > 0, _BITS[DAMAGED], 0)
    mask |= np.where((rec_unexpected > 0) | (asn_unexpected > 0), _BITS[UNEXPECTED], 0)
    auto = settled & within & (mask == 0)

    # --- per-row evidence: receipt and ASN ids by row, details for the exceptions ------------
    rec_ids = [r.id for r in kept]
    asn_ids = [a.id for a in asn_list]
    c_rows_ok = c_row[c_ok]
    c_ids_ok = [rec_ids[j] for j in np.array(c_doc, dtype=np.int64)[c_ok].tolist()]
    rid_sorted, rid_start = _grouped(c_rows_ok, c_ids_ok, n)
    a_rows_ok = a_row[a_ok]
    a_ids_ok = [asn_ids[j] for j in a_doc_arr[a_ok].tolist()]
    aid_sorted, aid_start = _grouped(a_rows_ok, a_ids_ok, n)

    extra: dict[int, dict[str, Any]] = {}
    for i in np.flatnonzero(c_lot_bad).tolist():
        row = int(c_row[i])
        got = extra.setdefault(row, {}).setdefault("received_lots", [])
        got.append({"receipt": rec_ids[c_doc[i]], "lot": c_lot[i] or None, "qty": c_qty[i]})
    for i in np.flatnonzero(c_bad).tolist():
        row = int(c_row[i])
        got = extra.setdefault(row, {}).setdefault("unexpected", [])
        got.append({"source": "receipt", "doc": rec_ids[c_doc[i]], "sku": c_sku[i], "qty": c_qty[i]})
    for i in np.flatnonzero(a_bad).tolist():
        row = int(a_row[i])
        got = extra.setdefault(row, {}).setdefault("unexpected", [])
        got.append({"source": "asn", "doc": asn_ids[a_doc[i]], "sku": a_sku[i], "qty": a_qty[i]})

    po_ids = [po.id for po in po_list]
    words = vocab.words()
    lines: list[LineMatch] = []
    append = lines.append
    cols = zip(
        r_po,
        r_line,
        r_sku,
        r_lot,
        r_price,
        ordered.tolist(),
        announced.tolist(),
        n_announcing.tolist(),
        pending.tolist(),
        received.tolist(),
        damaged.tolist(),
        good.tolist(),
        diff.tolist(),
        tol.tolist(),
        asn_lot.tolist(),
        mask.tolist(),
        within.tolist(),
        auto.tolist(),
        settled.tolist(),
        strict=True,
    )
    for row, (pi, ln_no, sku, lot, price, q, ann, n_ann, pend, rcv, dmg, gd, df, tq, alot, m, w, ac, st) in enumerate(
        cols
    ):
        s, e = rid_start[row], rid_start[row + 1]
        rids = rid_sorted[s:e]
        if e - s > 1:
            rids = list(dict.fromkeys(rids))
        s, e = aid_start[row], aid_start[row + 1]
        aids = aid_sorted[s:e]
        if e - s > 1:
            aids = list(dict.fromkeys(aids))
        ev: dict[str, Any] = {
            "ordered": q,
            "announced": ann if n_ann else None,
            "asn_diff": ann - q if n_ann else None,
            "received": rcv,
            "damaged": dmg,
            "received_good": gd,
            "diff": df,
            "tolerance_pct": tolerance_pct,
            "tolerance_qty": tq,
            "unit_price": price,
            "po_lot": lot or None,
            "receipts": rids,
            "asns": aids,
        }
        if alot:
            ev["asn_lot"] = words[alot]
        if not st:
            ev["awaiting"] = "no receipt on the PO yet" if pend <= 0 else f"ASN(s) announcing {num(pend)} not received"
        more = extra.get(row)
        if more:
            ev.update(more)
        append(
            LineMatch(
                po_ids[pi],
                ln_no,
                sku,
                q,
                ann if n_ann else None,
                rcv,
                dmg,
                list(_CLASS_LISTS[m]),
                w,
                ac,
                ev,
                gd,
                not st,
                True,
            )
        )

    lines.extend(
        _orphans(
            a_row, a_po, a_line, a_sku, a_qty, a_doc, asn_list, c_row, c_po, c_line, c_sku, c_qty, c_dmg, c_doc, kept
        )
    )
    stats = {
        "po_lines": n,
        "asn_lines": n_a,
        "receipt_lines": n_c,
        "receipts_counted": len(kept),
        "auto_close": int(auto.sum()),
        "awaiting": int(n - settled.sum()),
        "with_classes": int((mask != 0).sum()),
    }
    return MatchResult(
        lines=lines,
        duplicate_receipts=duplicates,
        receipts_without_asn=without_asn,
        overdue_asns=overdue,
        tolerance_pct=tolerance_pct,
        now=now,
        overdue_after_hours=overdue_after_hours,
        stats=stats,
    )


def _orphans(
    a_row: IntArray,
    a_po: list[int],
    a_line: list[int],
    a_sku: list[str],
    a_qty: list[float],
    a_doc: list[int],
    asn_list: list[Asn],
    c_row: IntArray,
    c_po: list[int],
    c_line: list[int],
    c_sku: list[str],
    c_qty: list[float],
    c_dmg: list[float],
    c_doc: list[int],
    kept: list[Receipt],
) -> list[LineMatch]:
    """Rows for ASN/receipt lines that name no PO line (or an unknown PO); rare, so one by one."""
    groups: dict[tuple[str, int], dict[str, Any]] = {}

    def group(po_id: str, po_line: int, sku: str, po_known: bool) -> dict[str, Any]:
        g = groups.get((po_id, po_line))
        if g is None:
            g = groups[(po_id, po_line)] = {
                "sku": sku,
                "skus": [],
                "announced": 0.0,
                "n_ann": 0,
                "received": 0.0,
                "damaged": 0.0,
                "good": 0.0,
                "receipts": [],
                "asns": [],
                "reason": f"PO {po_id} has no line {po_line}" if po_known else f"PO {po_id} is not known",
            }
        if sku not in g["skus"]:
            g["skus"].append(sku)
        return g

    for i in np.flatnonzero(a_row < 0).tolist():
        asn = asn_list[a_doc[i]]
        g = group(asn.po_id, a_line[i], a_sku[i], a_po[i] >= 0)
        g["announced"] += a_qty[i]
        g["n_ann"] += 1
        if asn.id not in g["asns"]:
            g["asns"].append(asn.id)
    for i in np.flatnonzero(c_row < 0).tolist():
        rec = kept[c_doc[i]]
        g = group(rec.po_id, c_line[i], c_sku[i], c_po[i] >= 0)
        g["received"] += c_qty[i]
        g["damaged"] += c_dmg[i]
        g["good"] += max(c_qty[i] - c_dmg[i], 0.0)
        if rec.id not in g["receipts"]:
            g["receipts"].append(rec.id)
    out: list[LineMatch] = []
    for (po_id, po_line), g in groups.items():
        ann = g["announced"] if g["n_ann"] else None
        out.append(
            LineMatch(
                po_id=po_id,
                po_line=po_line,
                sku=g["sku"],
                ordered=0.0,
                announced=ann,
                received=g["received"],
                damaged=g["damaged"],
                classes=[UNEXPECTED],
                within_tolerance=False,
                auto_close=False,
                evidence={
                    "ordered": 0.0,
                    "announced": ann,
                    "received": g["received"],
                    "damaged": g["damaged"],
                    "received_good": g["good"],
                    "reason": g["reason"],
                    "receipts": g["receipts"],
                    "asns": g["asns"],
                    "unexpected": [{"source": "line", "sku": s} for s in g["skus"]],
                },
                received_good=g["good"],
                awaiting=False,
                on_po=False,
            )
        )
    return out


# --------------------------------------------------------------------------- proposals

# class -> (team, resolution code, what the team is asked to do)
RESOLUTIONS: dict[str, tuple[str, str, str]] = {
    SHORT: ("receiving", "backorder_rest", "keep the line open and backorder the rest from the supplier"),
    OVER: ("receiving", "return_excess", "return the excess to the supplier"),
    LOT: ("receiving", "correct_lot", "correct the lot in the ERP"),
    DAMAGED: ("finance", "debit_note", "raise a debit note for the damage"),
    UNEXPECTED: ("receiving", "unexpected_sku", "check the unexpected SKU, then return it or re-book it"),
    DUPLICATE: ("receiving", "reverse_duplicate", "reverse the duplicate posting"),
    NO_ASN: ("receiving", "request_asn", "ask the supplier for the ASN and check the receipt against the PO"),
    OVERDUE: ("planning", "chase_supplier", "chase the supplier or carrier and re-plan the supply"),
}


def _n(x: float) -> str:
    """A quantity as a planner writes it: 12, 12.5, -3."""
    return f"{x:.10g}"


def _money(x: float) -> str:
    return f"{x:,.2f}"


class _Prices:
    """Unit price of a PO line (the PO's price, else ``unit_cost`` of the SKU, else 0)."""

    def __init__(self, pos: Mapping[str, PurchaseOrder], unit_cost: Mapping[str, float] | None) -> None:
        self._pos = pos
        self._unit_cost = unit_cost or {}
        self._cache: dict[str, dict[int, float]] = {}

    def sku(self, sku: str) -> float:
        return float(self._unit_cost.get(sku, 0.0))

    def line(self, po_id: str, line: int, sku: str) -> float:
        per_po = self._cache.get(po_id)
        if per_po is None:
            po = self._pos.get(po_id)
            per_po = {}
            if po is not None:
                for ln in po.lines:
                    per_po.setdefault(ln.line, ln.unit_price)  # first occurrence, as in match
            self._cache[po_id] = per_po
        price = per_po.get(line, 0.0)
        return price if price > 0 else self.sku(sku)


def reconcile_proposals(
    result: MatchResult,
    pos: Mapping[str, PurchaseOrder],
    unit_cost: Mapping[str, float] | None = None,
) -> list[Proposal]:
    """One reconciliation proposal per PO line that can be settled, then one per document finding.

    A settled line within tolerance and with no class gets ``erp.close_po_line``. A line with a
    class gets ``discrepancy``, ``review_required`` and one ``notify.ticket`` per class (see
    ``RESOLUTIONS``), each ticket carrying the line's evidence; a short line is left open. Lines
    still awaiting goods with no class get no proposal. ``cost_impact`` is the money at stake:
    for a close, the written-off difference; for a discrepancy, (short or damaged units, whichever
    is more, plus excess units) x the PO line's unit price, plus unexpected SKUs at ``unit_cost``.
    Lot corrections move no money. ``unit_cost`` (sku -> price) also prices lines whose PO has
    no unit price. Output order follows ``result``: lines, then findings.
    """
    prices = _Prices(pos, unit_cost)
    out: list[Proposal] = []
    pct = result.tolerance_pct
    for lm in result.lines:
        if not lm.classes:
            if lm.auto_close:
                out.append(_close(lm, pct, prices))
            continue
        out.append(_discrepancy(lm, prices))
    for finding in result.findings:
        out.append(_finding_proposal(finding, prices))
    return out


def _close(lm: LineMatch, pct: float, prices: _Prices) -> Proposal:
    price = prices.line(lm.po_id, lm.po_line, lm.sku)
    diff = lm.received_good - lm.ordered
    tol = lm.ordered * pct / 100
    reason = (
        f"received {_n(lm.received_good)} of {_n(lm.ordered)} ordered ({signed(diff)}), "
        f"within the {_n(pct)}% tolerance (±{_n(tol)})"
    )
    written_off = abs(diff) * price
    if diff == 0:
        rationale = f"{lm.subject} ({lm.sku}): received exactly the {_n(lm.ordered)} ordered; closing the PO line."
    else:
        rationale = (
            f"{lm.subject} ({lm.sku}): {reason}; closing the PO line and accepting the difference "
            f"({_money(written_off)} at {_money(price)}/unit)."
        )
    return Proposal(
        workflow="reconciliation",
        subject=lm.subject,
        outcome="matched",
        confidence=1.0,
        cost_impact=written_off,
        rationale=rationale,
        evidence={"engine": ENGINE_VERSION, "classes": [], "reason": reason, **lm.evidence},
        actions=[
            Action(
                system="erp",
                type="close_po_line",
                payload={"po_id": lm.po_id, "line": lm.po_line, "reason": reason},
            )
        ],
    )


def _expected_lot(lm: LineMatch) -> str | None:
    lot = lm.evidence.get("po_lot") or lm.evidence.get("asn_lot")
    return str(lot) if lot else None


LABELS = {
    SHORT: "Short shipment",
    OVER: "Over shipment",
    LOT: "Lot mismatch",
    DAMAGED: "Damaged goods",
    UNEXPECTED: "Unexpected SKU",
    DUPLICATE: "Duplicate receipt",
    NO_ASN: "Receipt without ASN",
    OVERDUE: "Overdue ASN",
}


def _describe(lm: LineMatch, cls: str, price: float) -> str:
    """What a class means for this line, with its numbers."""
    ev = lm.evidence
    tol = float(ev.get("tolerance_qty", 0.0))
    diff = lm.received_good - lm.ordered
    if not lm.on_po:
        skus = ", ".join(s["sku"] for s in ev.get("unexpected", []))
        return f"{ev.get('reason', 'no such PO line')}; SKU {skus} received {_n(lm.received)}" + (
            f", announced {_n(lm.announced)}" if lm.announced is not None else ""
        )
    if cls == SHORT:
        return (
            f"received {_n(lm.received_good)} good of {_n(lm.ordered)} ordered, "
            f"{_n(-diff)} short (tolerance ±{_n(tol)})"
        )
    if cls == OVER:
        return (
            f"received {_n(lm.received_good)} good of {_n(lm.ordered)} ordered, {_n(diff)} over (tolerance ±{_n(tol)})"
        )
    if cls == LOT:
        got = sorted({str(x["lot"] or "(none)") for x in ev.get("received_lots", [])})
        return f"lot {', '.join(got) or 'none'} received where lot {_expected_lot(lm)} was expected"
    if cls == DAMAGED:
        return (
            f"{_n(lm.damaged)} of {_n(lm.received)} received units damaged "
            f"({_money(lm.damaged * price)} at {_money(price)}/unit)"
        )
    items = ev.get("unexpected", [])
    named = ", ".join(f"{x['sku']} ({_n(float(x['qty']))}, {x['source']} {x['doc']})" for x in items)
    return f"other SKU booked against this line, which orders {lm.sku}: {named}"


def _discrepancy(lm: LineMatch, prices: _Prices) -> Proposal:
    price = prices.line(lm.po_id, lm.po_line, lm.sku) if lm.on_po else 0.0
    diff = lm.received_good - lm.ordered
    short_qty = max(-diff, 0.0) if SHORT in lm.classes else 0.0
    over_qty = max(diff, 0.0) if OVER in lm.classes else 0.0
    damaged_qty = lm.damaged if DAMAGED in lm.classes else 0.0
    at_stake_qty = max(short_qty, damaged_qty) + over_qty
    unexpected_value = 0.0
    if lm.on_po:
        for item in lm.evidence.get("unexpected", []):
            if item["source"] == "receipt":
                unexpected_value += float(item["qty"]) * prices.sku(str(item["sku"]))
    else:
        skus = [str(x["sku"]) for x in lm.evidence.get("unexpected", [])]
        unexpected_value = lm.received * (prices.sku(skus[0]) if len(skus) == 1 else 0.0)
    cost = at_stake_qty * price + unexpected_value
    breakdown = {
        "unit_price": price,
        "short_qty": short_qty,
        "over_qty": over_qty,
        "damaged_qty": damaged_qty,
        "qty_at_stake": at_stake_qty,
        "unexpected_value": unexpected_value,
    }
    descriptions = [_describe(lm, c, price) for c in lm.classes]
    evidence = {"engine": ENGINE_VERSION, "classes": list(lm.classes), **lm.evidence, "cost_breakdown": breakdown}
    docs = [*lm.evidence.get("receipts", []), *lm.evidence.get("asns", [])]
    docs += [str(x["doc"]) for x in lm.evidence.get("unexpected", []) if "doc" in x]
    refs = [lm.po_id, lm.subject, *dict.fromkeys(docs)]
    actions: list[Action] = []
    todo: list[str] = []
    for cls, text in zip(lm.classes, descriptions, strict=True):
        team, code, ask = RESOLUTIONS[cls]
        todo.append(ask)
        action = ticket(
            team,
            f"{LABELS[cls]} on {lm.subject} ({lm.sku})",
            f"{lm.subject} ({lm.sku}): {text}. Please {ask}.",
            refs,
        )
        action.payload["resolution"] = code
        action.payload["evidence"] = dict(evidence)
        actions.append(action)
    awaiting = " More goods are still expected on it." if lm.awaiting else ""
    rationale = (
        f"{lm.subject} ({lm.sku}): {'; '.join(descriptions)}. "
        f"The line stays open for review: {'; '.join(todo)}"
        + (f" (at stake {_money(cost)})." if cost > 0 else ".")
        + awaiting
    )
    return Proposal(
        workflow="reconciliation",
        subject=lm.subject,
        outcome="discrepancy",
        confidence=1.0,
        cost_impact=cost,
        rationale=rationale,
        evidence=evidence,
        actions=actions,
        review_required=True,
        review_reason="; ".join(f"{LABELS[c].lower()}: {d}" for c, d in zip(lm.classes, descriptions, strict=True)),
    )


def _finding_proposal(f: DocFinding, prices: _Prices) -> Proposal:
    lines = f.evidence.get("lines", [])
    qty = sum(float(x["qty"]) for x in lines)
    value = sum(float(x["qty"]) * prices.line(f.po_id, int(x["po_line"]), str(x["sku"])) for x in lines)
    team, code, ask = RESOLUTIONS[f.kind]
    if f.kind == DUPLICATE:
        again = (
            "was posted a second time under the same id"
            if f.evidence["duplicate_of"] == f.doc_id
            else f"repeats receipt {f.evidence['duplicate_of']} ({f.evidence['how']})"
        )
        what = (
            f"receipt {f.doc_id} for {f.po_id} {again}; its {len(lines)} line(s), "
            f"{_n(qty)} units worth {_money(value)}, were not counted again"
        )
        title = f"Duplicate receipt {f.doc_id}"
    elif f.kind == NO_ASN:
        what = (
            f"receipt {f.doc_id} for {f.po_id} has no matching ASN ({f.evidence['reason']}); its "
            f"{len(lines)} line(s), {_n(qty)} units worth {_money(value)}, were matched against the PO alone"
        )
        title = f"Receipt {f.doc_id} without ASN"
    else:
        what = (
            f"ASN {f.doc_id} for {f.po_id} was expected on {f.evidence['expected']} and nothing has been "
            f"received {_n(float(f.evidence['hours_overdue']))} h after it fell due; it announces "
            f"{_n(qty)} units worth {_money(value)}"
        )
        title = f"ASN {f.doc_id} overdue"
    evidence = {"engine": ENGINE_VERSION, "finding": f.kind, **f.evidence, "qty": qty, "value": value}
    action = ticket(team, title, f"{what[0].upper()}{what[1:]}. Please {ask}.", list(f.refs))
    action.payload["resolution"] = code
    action.payload["evidence"] = dict(evidence)
    return Proposal(
        workflow="reconciliation",
        subject=f.doc_id,
        outcome="discrepancy",
        confidence=1.0,
        cost_impact=value,
        rationale=f"{what[0].upper()}{what[1:]}. Proposed: {ask}.",
        evidence=evidence,
        actions=[action],
        review_required=True,
        review_reason=f"{LABELS[f.kind].lower()}: {ask}",
    )
