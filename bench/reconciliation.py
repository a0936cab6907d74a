"""Reconciliation benchmark: the three-way matcher against planted differences of every class.

``generate_documents`` builds POs, ASNs and receipts with ``random.Random(seed)`` and plants, at
known rates, every difference class of ``domain.engines.matching``: short and over shipments
outside tolerance, lot mismatches (against the PO lot, against the ASN lot, lot missing), damaged
units, unexpected SKUs (wrong SKU received, wrong SKU announced, a line the PO does not have),
duplicate receipts (same id; same ASN with identical lines), receipts without ASN (none named;
an unknown one) and overdue ASNs. Around them sit exact matches, in-tolerance noise (a quarter
of it exactly at the tolerance), ASNs that announce another quantity than ordered, split
deliveries (two ASNs, two receipts), partial receipts against one ASN and ASNs not yet due.
The ground truth of each line is computed by the generator from what it planted, in exact
integer arithmetic, never from the matcher.

``run_reconciliation_bench`` runs ``match`` on the documents a few times, scores it against
the ground truth (precision and recall per class, wrong auto-closes, share of in-tolerance
lines closed without a human) and scores the baseline (every line escalated to a person) on
the same documents. Throughput times ``match`` only: not the generation, not the scoring, not
``reconcile_proposals`` (which is timed once, separately). Every number is measured in the run.
"""

from __future__ import annotations

import platform
import random
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.engines.matching import (
    DAMAGED,
    DOCUMENT_CLASSES,
    DUPLICATE,
    LINE_CLASSES,
    LOT,
    NO_ASN,
    OVER,
    OVERDUE,
    SHORT,
    UNEXPECTED,
    match,
    reconcile_proposals,
)
from domain.models import Asn, AsnLine, PoLine, PurchaseOrder, Receipt, ReceiptLine

NOW = datetime(2026, 3, 21, 8, 0, tzinfo=UTC)
TOLERANCE_PCT = 2  # an integer, so the generator's ground truth is exact integer arithmetic

# Per purchase order: how its documents arrive (the rest are "normal": one ASN, one receipt).
PO_SCENARIOS: tuple[tuple[str, float], ...] = (
    ("overdue", 0.015),  # ASN expected days ago, nothing received
    ("pending", 0.015),  # ASN due today or later, nothing received yet (not overdue)
    ("no_asn", 0.015),  # received with no ASN named, or an unknown one
    ("dup_id", 0.010),  # the receipt is posted twice under the same id
    ("dup_asn", 0.010),  # a second receipt for the same ASN with identical lines
    ("split", 0.030),  # two ASNs, two receipts, each with part of every line
    ("partial", 0.010),  # one ASN, two receipts with different lines (not duplicates)
)
# Per received PO line: what is planted (the rest are exact matches).
LINE_KINDS: tuple[tuple[str, float], ...] = (
    ("noise", 0.30),  # within tolerance, a quarter of it exactly at the tolerance
    ("short", 0.05),
    ("missing", 0.01),  # the line is not on the receipt at all: short
    ("over", 0.04),
    ("lot", 0.04),
    ("damaged", 0.04),
    ("unexpected", 0.04),
    ("combo", 0.03),  # two classes at once
)
Key = tuple[str, int]


@dataclass
class ReconInstance:
    pos: list[PurchaseOrder]
    asns: list[Asn]
    receipts: list[Receipt]
    now: datetime
    tolerance_pct: float
    # Every PO line (and every planted line the PO does not have): its true classes.
    truth_lines: dict[Key, frozenset[str]]
    # Lines that are received, within tolerance and have no class: the ones to auto-close.
    should_close: set[Key]
    truth_docs: set[tuple[str, str]]
    planted: dict[str, int] = field(default_factory=dict)


def _draw(rng: random.Random, table: tuple[tuple[str, float], ...], default: str) -> str:
    u = rng.random()
    for name, p in table:
        if u < p:
            return name
        u -= p
    return default


@dataclass
class _Part:
    """One receipt line to post for a PO line."""

    sku: str
    qty: int
    lot: str | None
    damaged: int = 0


def _within(diff: int, qty: int) -> bool:
    return abs(diff) * 100 <= qty * TOLERANCE_PCT


def generate_documents(lines: int = 200_000, seed: int = 1) -> ReconInstance:
    """POs with ``lines`` lines in all, their ASNs and receipts, and the planted ground truth."""
    rng = random.Random(seed)
    skus = [f"SKU{k:05d}" for k in range(max(50, lines // 20))]
    pos: list[PurchaseOrder] = []
    asns: list[Asn] = []
    receipts: list[Receipt] = []
    truth: dict[Key, frozenset[str]] = {}
    should_close: set[Key] = set()
    truth_docs: set[tuple[str, str]] = set()
    planted: dict[str, int] = dict.fromkeys((*LINE_CLASSES, *DOCUMENT_CLASSES, "in_tolerance_noise", "exact"), 0)
    today = NOW.date()
    made = 0
    po_no = 0
    while made < lines:
        po_no += 1
        po_id = f"PO-{po_no:07d}"
        n_lines = min(lines - made, rng.randint(1, 8))
        made += n_lines
        scenario = _draw(rng, PO_SCENARIOS, "normal")
        if scenario == "partial" and n_lines < 2:
            scenario = "normal"
        has_asn = scenario != "no_asn"
        received = scenario not in ("overdue", "pending")
        po_lines: list[PoLine] = []
        asn_lines: list[AsnLine] = []
        second_asn_lines: list[AsnLine] = []
        parts: list[list[_Part]] = []  # per PO line: first receipt part(s)
        extra_lines: list[ReceiptLine] = []  # lines the PO does not have
        for ln_no, sku in enumerate(rng.sample(skus, n_lines), start=1):
            qty = rng.randrange(50, 1001)
            price = round(rng.uniform(0.5, 250.0), 2)
            lot: str | None = f"LOT-{rng.randint(1000, 9999)}" if rng.random() < 0.6 else None
            kind = _draw(rng, LINE_KINDS, "exact") if received else "exact"
            if kind == "missing" and scenario == "split":
                kind = "short"  # a split line always has its first part; keep the second ASN received
            combo = rng.choice(("short+lot", "over+damaged", "short+damaged")) if kind == "combo" else ""
            tol_int = qty * TOLERANCE_PCT // 100
            asn_qty, asn_sku, asn_lot = qty, sku, lot
            if rng.random() < 0.15:  # the ASN announces another quantity (evidence only)
                asn_qty = max(1, qty + rng.randint(-qty // 5, qty // 5))
            rec_sku, rec_lot, damaged = sku, lot, 0
            if lot is None and rng.random() < 0.2:
                rec_lot = f"LOT-{rng.randint(1000, 9999)}"  # a lot captured where none is expected: fine
            diff = 0
            include = True
            classes: set[str] = set()
            if kind == "noise" and tol_int >= 1:
                if rng.random() < 0.25:
                    diff = rng.choice((-tol_int, tol_int))
                else:
                    diff = rng.choice([d for d in range(-tol_int, tol_int + 1) if d != 0])
                planted["in_tolerance_noise"] += 1
            elif kind in ("short", "missing") or combo.startswith("short"):
                diff = -(tol_int + 1 + rng.randint(0, qty // 5))
                include = kind != "missing"
            elif kind == "over" or combo.startswith("over"):
                diff = tol_int + 1 + rng.randint(0, qty // 10)
            if kind == "lot" or combo == "short+lot":
                variant = rng.random()
                if lot is None and (not has_asn or variant < 0.5):
                    lot = asn_lot = f"LOT-{rng.randint(1000, 9999)}"  # the PO names the lot
                elif lot is None:
                    asn_lot = f"LOT-{rng.randint(1000, 9999)}"  # only the ASN names it
                rec_lot = None if variant > 0.85 else f"LOT-X{rng.randint(100, 999)}"
                classes.add(LOT)
            if kind == "damaged" or combo.endswith("damaged"):
                damaged = rng.randint(1, max(1, qty // 10))
            unexpected_variant = ""
            if kind == "unexpected":
                unexpected_variant = rng.choice(("wrong_sku", "extra_line") + (("asn_sku",) if has_asn else ()))
                other = rng.choice(skus)
                while other == sku:
                    other = rng.choice(skus)
                if unexpected_variant == "wrong_sku":
                    rec_sku = other
                    classes.add(UNEXPECTED)
                elif unexpected_variant == "asn_sku":
                    asn_sku = other
                    classes.add(UNEXPECTED)
                else:
                    extra_no = 900 + ln_no
                    extra_lines.append(ReceiptLine(po_line=extra_no, sku=other, qty=rng.randint(1, 50), lot=None))
                    truth[(po_id, extra_no)] = frozenset({UNEXPECTED})
            if kind == "exact":
                planted["exact"] += 1
            po_lines.append(PoLine(line=ln_no, sku=sku, qty=qty, unit_price=price, lot=lot))
            rec_qty = qty + diff
            if scenario == "split":
                first = qty // 2
                asn_lines.append(AsnLine(po_line=ln_no, sku=sku, qty=first, lot=lot))
                second_asn_lines.append(AsnLine(po_line=ln_no, sku=asn_sku, qty=max(0, asn_qty - first), lot=asn_lot))
                line_parts = [_Part(sku, first, lot)]
                if include:
                    line_parts.append(_Part(rec_sku, max(0, rec_qty - first), rec_lot, damaged))
            else:
                asn_lines.append(AsnLine(po_line=ln_no, sku=asn_sku, qty=asn_qty, lot=asn_lot))
                line_parts = [_Part(rec_sku, rec_qty, rec_lot, damaged)] if include else []
            parts.append(line_parts)
            key = (po_id, ln_no)
            if not received:
                truth[key] = frozenset()
                continue
            good = sum(max(p.qty - p.damaged, 0) for p in line_parts if p.sku == sku)
            if good < qty and not _within(good - qty, qty):
                classes.add(SHORT)
            if good > qty and not _within(good - qty, qty):
                classes.add(OVER)
            if any(p.damaged > 0 for p in line_parts if p.sku == sku):
                classes.add(DAMAGED)
            truth[key] = frozenset(classes)
            if not classes:
                should_close.add(key)

        node = f"DC-{rng.randint(1, 4)}"
        pos.append(
            PurchaseOrder(
                id=po_id,
                supplier=f"SUP-{rng.randint(1, 200):03d}",
                node=node,
                expected=today - timedelta(days=1),
                lines=po_lines,
            )
        )
        asn_id = f"ASN-{po_no:07d}"
        if has_asn:
            if scenario == "overdue":
                expected = today - timedelta(days=rng.randint(2, 6))
                truth_docs.add((OVERDUE, asn_id))
            elif scenario == "pending":
                expected = today + timedelta(days=rng.randint(0, 3))
            else:
                expected = today - timedelta(days=1)
            asns.append(Asn(id=asn_id, po_id=po_id, supplier=pos[-1].supplier, expected=expected, lines=asn_lines))
            if second_asn_lines:
                asns.append(
                    Asn(
                        id=f"{asn_id}-2",
                        po_id=po_id,
                        supplier=pos[-1].supplier,
                        expected=expected,
                        lines=second_asn_lines,
                    )
                )
        if not received:
            continue
        at = NOW - timedelta(hours=rng.uniform(1, 40))
        gr_id = f"GR-{po_no:07d}"
        rec_asn: str | None = asn_id
        if scenario == "no_asn":
            rec_asn = None if rng.random() < 0.5 else f"ASN-UNKNOWN-{po_no}"
            truth_docs.add((NO_ASN, gr_id))
        first_lines: list[ReceiptLine] = []
        second_lines: list[ReceiptLine] = []
        for ln_no, line_parts in enumerate(parts, start=1):
            for i, p in enumerate(line_parts):
                rl = ReceiptLine(po_line=ln_no, sku=p.sku, qty=p.qty, lot=p.lot, damaged=p.damaged)
                if scenario == "split" and i == 1 or scenario == "partial" and ln_no > len(parts) // 2:
                    second_lines.append(rl)
                else:
                    first_lines.append(rl)
        if scenario in ("split", "partial"):
            second_lines.extend(extra_lines)
        else:
            first_lines.extend(extra_lines)
        if not first_lines:  # every line of the first receipt is missing: it still counts one line of 0
            first_lines.append(ReceiptLine(po_line=1, sku=po_lines[0].sku, qty=0, lot=po_lines[0].lot))
        receipt = Receipt(id=gr_id, po_id=po_id, asn_id=rec_asn, node=node, received_at=at, lines=first_lines)
        receipts.append(receipt)
        if second_lines:
            receipts.append(
                Receipt(
                    id=f"{gr_id}-2",
                    po_id=po_id,
                    asn_id=f"{asn_id}-2" if scenario == "split" else asn_id,
                    node=node,
                    received_at=at + timedelta(hours=2),
                    lines=second_lines,
                )
            )
        if scenario == "dup_id":
            receipts.append(receipt.model_copy())
            truth_docs.add((DUPLICATE, gr_id))
        elif scenario == "dup_asn":
            copy = receipt.model_copy(update={"id": f"{gr_id}-D", "received_at": at + timedelta(minutes=5)})
            receipts.append(copy)
            truth_docs.add((DUPLICATE, copy.id))

    for true_classes in truth.values():
        for cls in true_classes:
            planted[cls] += 1
    for kind, _ in truth_docs:
        planted[kind] += 1
    return ReconInstance(
        pos=pos,
        asns=asns,
        receipts=receipts,
        now=NOW,
        tolerance_pct=float(TOLERANCE_PCT),
        truth_lines=truth,
        should_close=should_close,
        truth_docs=truth_docs,
        planted=planted,
    )


def _ratio(num: int, den: int) -> float:
    return round(num / den, 4) if den else 1.0


def _score(
    inst: ReconInstance,
    predicted: dict[Key, frozenset[str]],
    closed: set[Key],
    docs: set[tuple[str, str]],
) -> dict[str, Any]:
    """Precision/recall per class, auto-closes, against the generator's ground truth."""
    out: dict[str, Any] = {}
    keys = set(inst.truth_lines) | set(predicted)
    for cls in LINE_CLASSES:
        true = {k for k in keys if cls in inst.truth_lines.get(k, frozenset())}
        said = {k for k in keys if cls in predicted.get(k, frozenset())}
        out[f"{cls}_precision"] = _ratio(len(true & said), len(said))
        out[f"{cls}_recall"] = _ratio(len(true & said), len(true))
    for cls in DOCUMENT_CLASSES:
        true_docs = {d for d in inst.truth_docs if d[0] == cls}
        said_docs = {d for d in docs if d[0] == cls}
        out[f"{cls}_precision"] = _ratio(len(true_docs & said_docs), len(said_docs))
        out[f"{cls}_recall"] = _ratio(len(true_docs & said_docs), len(true_docs))
    differ = {k for k in keys if inst.truth_lines.get(k)}
    flagged = {k for k in keys if predicted.get(k)}
    out["lines_differing_precision"] = _ratio(len(differ & flagged), len(flagged))
    out["lines_differing_recall"] = _ratio(len(differ & flagged), len(differ))
    out["lines_to_review"] = len(flagged)
    out["documents_to_review"] = len(docs)
    out["auto_closed"] = len(closed)
    out["auto_closed_share_of_in_tolerance"] = _ratio(len(closed & inst.should_close), len(inst.should_close))
    out["wrong_auto_closes"] = len(closed - inst.should_close)
    out["auto_closed_with_planted_difference"] = len({k for k in closed if inst.truth_lines.get(k)})
    return out


def _baseline(inst: ReconInstance) -> dict[str, Any]:
    """Everything escalated: every line and every document goes to a person, for every class.

    Recall is 1 by construction; precision is the share of lines (receipts, ASNs) that really
    carry the class. A duplicate posted under its original's id is the same document id.
    """
    everything = frozenset(LINE_CLASSES)
    predicted = dict.fromkeys(inst.truth_lines, everything)
    receipt_ids = set(r.id for r in inst.receipts)
    docs = {(DUPLICATE, d) for d in receipt_ids} | {(NO_ASN, d) for d in receipt_ids}
    docs |= {(OVERDUE, a.id) for a in inst.asns}
    return _score(inst, predicted, set(), docs)


def run_reconciliation_bench(lines: int = 200_000, seed: int = 1, runs: int = 5) -> dict[str, Any]:
    """Generate, match ``runs`` times (timed), score crossdock and the all-escalated baseline."""
    started = time.perf_counter()
    inst = generate_documents(lines, seed)
    generate_ms = (time.perf_counter() - started) * 1000

    walls: list[float] = []
    result = None
    for _ in range(max(1, runs)):
        started = time.perf_counter()
        result = match(inst.pos, inst.asns, inst.receipts, inst.tolerance_pct, inst.now)
        walls.append(time.perf_counter() - started)
    assert result is not None

    predicted = {(lm.po_id, lm.po_line): frozenset(lm.classes) for lm in result.lines}
    closed = {(lm.po_id, lm.po_line) for lm in result.lines if lm.auto_close}
    docs = {(f.kind, f.doc_id) for f in result.findings}
    crossdock = _score(inst, predicted, closed, docs)
    baseline = _baseline(inst)

    po_map = {po.id: po for po in inst.pos}
    started = time.perf_counter()
    proposals = reconcile_proposals(result, po_map)
    proposals_s = time.perf_counter() - started

    n_po_lines = sum(len(po.lines) for po in inst.pos)
    doc_lines = n_po_lines + sum(len(a.lines) for a in inst.asns) + sum(len(r.lines) for r in inst.receipts)
    best, median = min(walls), statistics.median(walls)
    recall_all = all(crossdock[f"{c}_recall"] == 1.0 for c in (*LINE_CLASSES, *DOCUMENT_CLASSES))
    return {
        "bench": "reconciliation",
        "seed": seed,
        "po_lines": n_po_lines,
        "purchase_orders": len(inst.pos),
        "asns": len(inst.asns),
        "receipts": len(inst.receipts),
        "document_lines": doc_lines,
        "tolerance_pct": inst.tolerance_pct,
        "planted": dict(inst.planted),
        "in_tolerance_lines": len(inst.should_close),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "generate_ms": round(generate_ms, 1),
        "timed": "match() only, best and median of the runs",
        "match_runs": len(walls),
        "match_ms_best": round(best * 1000, 1),
        "match_ms_median": round(median * 1000, 1),
        "po_lines_per_s_best": round(n_po_lines / best),
        "po_lines_per_s_median": round(n_po_lines / median),
        "document_lines_per_s_best": round(doc_lines / best),
        "proposals": len(proposals),
        "proposals_ms": round(proposals_s * 1000, 1),
        "goals": {
            "recall_100pct": recall_all,
            "zero_wrong_auto_closes": crossdock["wrong_auto_closes"] == 0,
            "auto_close_ge_90pct": crossdock["auto_closed_share_of_in_tolerance"] >= 0.9,
            "throughput_ge_50k_lines_s": n_po_lines / median >= 50_000,
        },
        "baseline": baseline,
        "crossdock": crossdock,
    }
