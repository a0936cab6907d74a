"""Continuous reconciliation on ``crossdock.tick``: a standing discrepancy no event touches is raised.

Every tick compares SKU@node across the three systems (WMS on hand and locked, ERP book, OMS
reservations) through the bulk reads of ``connectors.ports`` (``StockSnapshotReader``,
``BookSnapshotReader``, ``AllocationSnapshotReader``):

* **Incremental pass, every tick.** Each system's change feed (a bulk read with ``since``) gives the
  SKU@node it changed since the watermark kept in Crossdock's memory (``Memo.value``/``put``). The
  watermark is the newest change time the feed reported, by the system's own clock, less
  ``OVERLAP_S`` (a row changed while the feed was being read is read again, never lost); the first
  one is the wall clock less ``OVERLAP_S``. Those SKUs are read per SKU (WMS stock with its
  reservations, ERP book) and compared; more than ``MAX_KEY_READS`` of them start a full pass instead.
* **Full pass, every ``recon_full_s``** (``CROSSDOCK_RECON_FULL_S``, default 900 s, by the tick's
  clock). The three systems are read a page at a time in key order and merged; a pass keeps its
  cursor in the memory and spans ticks: a tick spends at most ``TICK_BUDGET_S`` on it. A system
  without a change feed is covered by the full pass alone.

A SKU@node is *suspect* when the engine (``domain.engines.discrepancy``) would not call it in sync
on the read quantities alone: book ≠ physical, or more reserved than the WMS can pick. A suspect is
queued in the memory (so a crash between ticks does not lose it) and judged in ``judge_suspects``
on a fresh ``stock_picture`` with both sides' movements, so a gap explained by a posting in flight
is a timing difference and re-checked when the grace window ends (``crews.sweeps.schedule_recheck``),
as for an event. The tick's sweeps slice reads and judges with no lock (``crews.backlog``): what it
decides executes under its own locks, so no order waits for a pass.

Raise once: each judged state of a SKU@node (physical, locked, book, reserved and how many
movements each side recorded) has a fingerprint; whoever judges it first (an event, a re-check,
this sweep) marks it (``Memo.first_time``), and the sweep raises only states nobody judged. A
standing discrepancy therefore gives one decision, not one per pass; a new movement makes a new
state.

Inbound documents need no bulk read: ``crews.sweeps`` matches every open PO with its ASNs and
receipts on every tick already.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from connectors.ports import (
    SNAPSHOT_PAGE,
    AllocationSnapshotReader,
    BookSnapshotReader,
    SnapshotPage,
    SnapshotRow,
    StockSnapshotReader,
)
from crews.sweeps import fingerprint, schedule_recheck
from domain.context import BookPosition, NodeStock
from domain.decisions import Proposal
from domain.engines.clock import as_utc
from domain.engines.discrepancy import EPS, Reservation, StockPicture, decide_discrepancy
from domain.errors import ConnectorError
from tools.context import RESERVING, Systems, stock_picture

log = structlog.get_logger("crossdock.reconcile")
RECON_QUEUE = "recon"  # suspects found by a pass, judged in the tick's sweeps slice
STATE_KEY = "recon:state"
OVERLAP_S = 2.0
TICK_BUDGET_S = 5.0  # wall time one tick may spend on the full pass
FEED_PAGES = 50  # change-feed pages read per system per tick (more: a full pass is started)
MAX_KEY_READS = 500  # changed SKU@node judged by per-SKU reads in a tick (more: a full pass instead)

Reader = Callable[[datetime | None, str | None, int], SnapshotPage]


@dataclass
class ReconState:
    """What a pass keeps between ticks (JSON in the memory)."""

    marks: dict[str, str] = field(default_factory=dict)  # feed -> ISO watermark (the system's clock)
    cursor: str | None = None  # the full pass in progress: the last key judged
    running: bool = False
    started: str | None = None  # tick time the full pass in progress started
    last_full: str | None = None  # tick time the last full pass started that then finished
    passes: int = 0

    @classmethod
    def load(cls, raw: str | None) -> ReconState:
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError):
            return cls()  # an unreadable state starts over: a full pass, new watermarks

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


@dataclass
class PassReport:
    """What one call of ``reconcile_pass`` did (for logs, tests and the bench)."""

    suspects: list[tuple[str, str]] = field(default_factory=list)
    changed: int = 0  # SKU@node the change feeds reported
    full_rows: int = 0  # SKU@node the full pass compared this tick
    full_done: bool = False
    read_s: float = 0.0  # wall time in bulk reads
    error: str | None = None  # a system failed a bulk read: nothing advanced, the next tick tries again


def _feeds(systems: Systems) -> dict[str, Reader]:
    out: dict[str, Reader] = {}
    if isinstance(systems.wms, StockSnapshotReader):
        out["wms"] = systems.wms.stock_snapshot
    if isinstance(systems.erp, BookSnapshotReader):
        out["erp"] = systems.erp.book_snapshot
    if isinstance(systems.oms, AllocationSnapshotReader):
        out["oms"] = systems.oms.allocations_snapshot
    return out


def in_sync(sku: str, node: str, now: datetime, on_hand: float, locked: float, book: float, reserved: float) -> bool:
    """The engine's verdict on the read quantities alone (no movements): nothing to look at."""
    if abs(on_hand - book) <= EPS and reserved <= max(0.0, on_hand - locked) + EPS:
        return True  # the engine's in-sync case, without building its evidence
    picture = StockPicture(
        sku=sku,
        node=node,
        now=now,
        wms=NodeStock(node=node, sku=sku, on_hand=on_hand, locked=locked, allocated=reserved, pickable=0.0),
        book=BookPosition(node=node, sku=sku, qty=book, blocked=0.0),
        reservations=[Reservation(order_id="*", line=0, qty=reserved)] if reserved > EPS else [],
    )
    decided = decide_discrepancy(picture)
    return len(decided) == 1 and decided[0].outcome == "in_sync"


def _drain(read: Reader, since: datetime) -> tuple[list[SnapshotRow], bool]:
    """Every row a change feed reports since ``since`` (up to ``FEED_PAGES`` pages); True if all."""
    rows: list[SnapshotRow] = []
    after: str | None = None
    for _ in range(FEED_PAGES):
        page = read(since, after, SNAPSHOT_PAGE)
        rows.extend(page.rows)
        if page.next_after is None:
            return rows, True
        after = page.next_after
    return rows, False


def _incremental(state: ReconState, feeds: dict[str, Reader], report: PassReport) -> tuple[set[str], bool]:
    """The SKU@node the change feeds report; True as second value when a feed had more than a
    tick reads (then a full pass starts, which covers what was not read)."""
    changed: set[str] = set()
    overflow = False
    for name, read in feeds.items():
        mark = state.marks.get(name)
        if mark is None:
            # No watermark yet: changes from now on; what came before is the full pass's.
            state.marks[name] = (datetime.now(UTC) - timedelta(seconds=OVERLAP_S)).isoformat()
            continue
        since = datetime.fromisoformat(mark)
        rows, complete = _drain(read, since)
        changed.update(r.key for r in rows)
        stamps = [as_utc(r.changed_at) for r in rows if r.changed_at is not None]
        if stamps:
            newest = max(stamps) - timedelta(seconds=OVERLAP_S)
            state.marks[name] = max(newest, as_utc(since)).isoformat()
        overflow = overflow or not complete
    report.changed = len(changed)
    return changed, overflow


def _judge_keys(systems: Systems, keys: Iterable[str], now: datetime) -> list[tuple[str, str]]:
    """Per-SKU reads (WMS stock with its reservations, ERP book) for the keys a feed reported."""
    by_sku: dict[str, set[str]] = {}
    for key in keys:
        sku, _, node = key.rpartition("@")
        by_sku.setdefault(sku, set()).add(node)
    out = []
    for sku, nodes in sorted(by_sku.items()):
        stock = {s.node: s for s in systems.wms.stock(sku)}
        book = {b.node: b for b in systems.erp.book_stock(sku)}
        for node in sorted(nodes):
            s, b = stock.get(node), book.get(node)
            on_hand, locked, reserved = (s.on_hand, s.locked, s.allocated) if s else (0.0, 0.0, 0.0)
            if not in_sync(sku, node, now, on_hand, locked, b.qty if b else 0.0, reserved):
                out.append((sku, node))
    return out


def _full_chunk(
    feeds: dict[str, Reader], after: str | None, now: datetime, limit: int = SNAPSHOT_PAGE
) -> tuple[list[tuple[str, str]], str | None, int]:
    """One merged page of the three systems after ``after``: (suspects, cursor, rows compared).

    Each system's page ends at its own key; keys up to the smallest end of a full page are
    complete in every system, so they are compared and the rest is read again next chunk. The
    cursor is None when every system is exhausted (the pass is over).
    """
    pages = {name: read(None, after, limit) for name, read in feeds.items()}
    ends = [p.rows[-1].key for p in pages.values() if p.next_after is not None and p.rows]
    bound = min(ends) if ends else None
    merged: dict[str, dict[str, SnapshotRow]] = {}
    for name, page in pages.items():
        for row in page.rows:
            if bound is None or row.key <= bound:
                merged.setdefault(row.key, {})[name] = row
    suspects = []
    for key in sorted(merged):
        rows = merged[key]
        any_row = next(iter(rows.values()))
        w, e, o = rows.get("wms"), rows.get("erp"), rows.get("oms")
        on_hand, locked = (w.qty, w.held) if w else (0.0, 0.0)
        if not in_sync(any_row.sku, any_row.node, now, on_hand, locked, e.qty if e else 0.0, o.qty if o else 0.0):
            suspects.append((any_row.sku, any_row.node))
    return suspects, bound, len(merged)


def reconcile_pass(systems: Systems, now: datetime, budget_s: float = TICK_BUDGET_S) -> PassReport:
    """One tick's reconciliation reads: the change feeds, then the full pass while it is due and the
    budget lasts. Suspects are queued in the memory and returned (with any a crash left queued)."""
    report = PassReport()
    memo = systems.memo
    feeds = _feeds(systems)
    if memo is None or "wms" not in feeds or "erp" not in feeds:
        return report  # no memory or no bulk reads: only events and re-checks find discrepancies
    state = ReconState.load(memo.value(STATE_KEY))
    started = time.monotonic()
    found: set[tuple[str, str]] = set()
    try:
        _passes(systems, state, feeds, now, budget_s, started, found, report)
    except ConnectorError as exc:
        # A system without the bulk reads (a gateway answering 404) or down: the tick's other work
        # goes on; the pass resumes from the state kept before this tick.
        report.error = str(exc)
        log.warning("reconcile.read_failed", error=str(exc))
        report.suspects = queued_suspects(systems)
        return report
    report.read_s = time.monotonic() - started
    for sku, node in sorted(found):
        memo.schedule(RECON_QUEUE, f"{sku}@{node}", 0.0)
    memo.put(STATE_KEY, state.dump())
    report.suspects = queued_suspects(systems)
    return report


def _passes(
    systems: Systems,
    state: ReconState,
    feeds: dict[str, Reader],
    now: datetime,
    budget_s: float,
    started: float,
    found: set[tuple[str, str]],
    report: PassReport,
) -> None:
    changed, overflow = _incremental(state, feeds, report)
    if len(changed) > MAX_KEY_READS:
        overflow = True  # bulk reads are cheaper than this many per-SKU reads
    else:
        found.update(_judge_keys(systems, changed, now))
    tick = as_utc(now)
    last = datetime.fromisoformat(state.last_full) if state.last_full else None
    due = overflow or last is None or (tick - last).total_seconds() >= systems.recon_full_s
    if not state.running and due:
        state.running, state.cursor, state.started = True, None, tick.isoformat()
    while state.running:
        suspects, state.cursor, compared = _full_chunk(feeds, state.cursor, now)
        found.update(suspects)
        report.full_rows += compared
        if state.cursor is None:
            state.running, state.last_full, state.passes = False, state.started, state.passes + 1
            report.full_done = True
        if time.monotonic() - started >= budget_s:
            break


def queued_suspects(systems: Systems) -> list[tuple[str, str]]:
    if systems.memo is None:
        return []
    out = []
    for key in systems.memo.due(RECON_QUEUE, float("inf")):
        sku, _, node = key.rpartition("@")
        out.append((sku, node))
    return out


RAISED = ("discrepancy", "held")


def judge_suspects(
    systems: Systems, suspects: list[tuple[str, str]], now: datetime, grace_hours: float
) -> list[Proposal]:
    """Decide each suspect on a fresh picture (movements and reservations); raise a state once."""
    if systems.memo is None:
        return []
    proposals: list[Proposal] = []
    reserving = systems.oms.orders(RESERVING) if suspects else []  # read once for every suspect
    for sku, node in suspects:
        picture = stock_picture(systems, sku, node, now, grace_hours, reserving)
        if systems.memo.first_time(fingerprint(picture)):
            for p in decide_discrepancy(picture):
                if p.outcome in RAISED:
                    p.evidence["sweep"] = "continuous reconciliation: a standing difference no event raised"
                    proposals.append(p)
        schedule_recheck(systems, picture)  # in flight: judged again when the grace window ends
        systems.memo.done(RECON_QUEUE, [f"{sku}@{node}"])
    return proposals


def state_of(systems: Systems) -> dict[str, Any]:
    """The pass state as kept in the memory (for the bench and operators)."""
    return ReconState.load(systems.memo.value(STATE_KEY) if systems.memo else None).__dict__
