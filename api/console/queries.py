"""The console's reads of the store: the review queue (filters, sort, paging), a cheap change mark for
live updates, the KPIs, and what the store knows about one order.

SQLAlchemy Core over ``store.engine`` and the store's own tables (``store.decisions``,
``store.action_log``, ``store.audit_log``); nothing here writes. The queue is read in two steps: the
page's ids first (sorted and paged on indexed columns), then those rows' details, so that JSON is
read for one page, never for the 10,000 rows behind it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import sqlalchemy as sa

from domain.decisions import LIVE_STATUSES, Decision, Workflow
from domain.engines.clock import as_utc
from runtime.store import Store

QUEUE_STATUSES: tuple[str, ...] = tuple(sorted(LIVE_STATUSES))  # awaiting_planner, pending_review
PAGE_SIZES = (25, 50, 100, 200)
MAX_BULK = 200


def _sort_columns(store: Store) -> dict[str, sa.ColumnElement[Any]]:
    c = store.decisions.c
    return {
        "age": c.created_at,
        "value": c.cost_impact,
        "confidence": c.confidence,
        "workflow": c.workflow,
        "subject": c.subject,
        "outcome": c.outcome,
        "status": c.status,
        "updated": c.updated_at,
    }


SORTS = ("age", "value", "confidence", "workflow", "subject", "outcome", "status", "updated")


@dataclass(frozen=True)
class QueueFilter:
    """What the planner asked the queue for. ``sort=age`` ascending shows the oldest first (the
    longest waiting); ``value`` filters on the absolute cost impact."""

    status: str | None = None  # None: both live statuses
    workflow: str | None = None
    q: str | None = None  # subject contains (case-insensitive)
    min_value: float | None = None
    max_value: float | None = None
    min_age_h: float | None = None
    max_age_h: float | None = None
    sort: str = "age"
    desc: bool = False
    page: int = 1
    size: int = 50

    def statuses(self) -> tuple[str, ...]:
        return (self.status,) if self.status in QUEUE_STATUSES else QUEUE_STATUSES


@dataclass(frozen=True)
class QueueRow:
    id: str
    workflow: str
    subject: str
    outcome: str
    status: str
    cost_impact: float
    confidence: float
    created_at: datetime
    updated_at: datetime
    gate: str | None
    actions: int


@dataclass(frozen=True)
class QueuePage:
    rows: list[QueueRow]
    total: int
    page: int
    size: int
    workflows: list[str] = field(default_factory=list)

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(store: Store, f: QueueFilter, now: datetime) -> list[sa.ColumnElement[bool]]:
    c = store.decisions.c
    where: list[sa.ColumnElement[bool]] = [c.status.in_(f.statuses())]
    if f.workflow:
        # coalesce(): keep the (unselective) workflow index out of the plan, so the status index,
        # which narrows 10,000 decisions to the live few, leads.
        where.append(sa.func.coalesce(c.workflow, "") == f.workflow)
    if f.q:
        where.append(c.subject.ilike(_like(f.q.strip()), escape="\\"))
    value = sa.func.abs(c.cost_impact)
    if f.min_value is not None:
        where.append(value >= f.min_value)
    if f.max_value is not None:
        where.append(value <= f.max_value)
    if f.min_age_h is not None:
        where.append(c.created_at <= now - timedelta(hours=f.min_age_h))
    if f.max_age_h is not None:
        where.append(c.created_at >= now - timedelta(hours=f.max_age_h))
    return where


def review_queue(store: Store, f: QueueFilter, now: datetime | None = None) -> QueuePage:
    """One page of the live decisions (pending review and awaiting a planner) that match ``f``."""
    now = now or datetime.now(UTC)
    c = store.decisions.c
    where = _where(store, f, now)
    column = _sort_columns(store).get(f.sort, c.created_at)
    order = [column.desc() if f.desc else column.asc(), c.id.desc() if f.desc else c.id.asc()]
    size = f.size if f.size in PAGE_SIZES else 50
    with store.engine.connect() as conn:
        total = int(conn.execute(sa.select(sa.func.count()).select_from(store.decisions).where(*where)).scalar_one())
        pages = max(1, math.ceil(total / size))
        page = min(max(1, f.page), pages)
        ids = list(
            conn.execute(sa.select(c.id).where(*where).order_by(*order).limit(size).offset((page - 1) * size)).scalars()
        )
        details = {}
        if ids:
            gate = c.data[("evidence", "governance")].as_string()
            rows = conn.execute(
                sa.select(
                    c.id,
                    c.workflow,
                    c.subject,
                    c.outcome,
                    c.status,
                    c.cost_impact,
                    c.confidence,
                    c.created_at,
                    c.updated_at,
                    gate,
                    sa.func.json_array_length(c.data, "$.actions")
                    if store.dialect == "sqlite"
                    else sa.func.jsonb_array_length(c.data["actions"]),
                ).where(c.id.in_(ids))
            ).all()
            for r in rows:
                details[r[0]] = QueueRow(
                    id=r[0],
                    workflow=r[1],
                    subject=r[2],
                    outcome=r[3],
                    status=r[4],
                    cost_impact=float(r[5]),
                    confidence=float(r[6]),
                    created_at=as_utc(r[7]),
                    updated_at=as_utc(r[8]),
                    gate=r[9],
                    actions=int(r[10] or 0),
                )
        workflows = list(
            conn.execute(
                sa.select(c.workflow).where(c.status.in_(QUEUE_STATUSES)).group_by(c.workflow).order_by(c.workflow)
            ).scalars()
        )
    return QueuePage([details[i] for i in ids if i in details], total, page, size, workflows)


def change_mark(store: Store) -> tuple[str, int]:
    """A cheap mark that moves whenever any decision is recorded or changes status (the newest
    ``updated_at``, from its index) and the size of the live queue: what live updates poll."""
    c = store.decisions.c
    with store.engine.connect() as conn:
        latest = conn.execute(sa.select(sa.func.max(c.updated_at))).scalar()
        live = int(
            conn.execute(
                sa.select(sa.func.count()).select_from(store.decisions).where(c.status.in_(QUEUE_STATUSES))
            ).scalar_one()
        )
    return (str(latest) if latest is not None else "", live)


# ---------------------------------------------------------------------------------------- KPIs


@dataclass
class Kpis:
    total: int
    by_workflow: dict[str, dict[str, int]]  # workflow -> outcome -> count
    by_status: dict[str, int]
    queue_size: int
    queue_oldest_h: float | None
    queue_median_h: float | None
    queue_by_workflow: dict[str, int]
    auto_resolved: int
    settled: int
    reviewed: dict[str, int]  # review kind -> count

    @property
    def auto_resolved_share(self) -> float | None:
        return self.auto_resolved / self.settled if self.settled else None

    @property
    def overrides(self) -> int:
        return self.reviewed.get("approved_with_changes", 0) + self.reviewed.get("rejected", 0)

    @property
    def reviews(self) -> int:
        return sum(self.reviewed.get(k, 0) for k in ("approved", "approved_with_changes", "rejected"))

    @property
    def override_rate(self) -> float | None:
        return self.overrides / self.reviews if self.reviews else None


def kpis(store: Store, now: datetime | None = None) -> Kpis:
    """Decisions per workflow and outcome, the review queue's size and age, the share resolved with
    no person involved (executed with no review, of executed + failed + rejected) and the override
    rate (approved with changes or rejected, of every planner verdict)."""
    now = now or datetime.now(UTC)
    c = store.decisions.c
    kind = c.data[("review", "kind")].as_string()
    with store.engine.connect() as conn:
        by_workflow: dict[str, dict[str, int]] = {}
        for wf, outcome, n in conn.execute(
            sa.select(c.workflow, c.outcome, sa.func.count()).group_by(c.workflow, c.outcome)
        ):
            by_workflow.setdefault(wf, {})[outcome] = int(n)
        by_status = {s: int(n) for s, n in conn.execute(sa.select(c.status, sa.func.count()).group_by(c.status))}
        waiting = [
            as_utc(t) for t in conn.execute(sa.select(c.created_at).where(c.status.in_(QUEUE_STATUSES))).scalars()
        ]
        queue_by_workflow = {
            wf: int(n)
            for wf, n in conn.execute(
                sa.select(c.workflow, sa.func.count()).where(c.status.in_(QUEUE_STATUSES)).group_by(c.workflow)
            )
        }
        reviewed: dict[str, int] = {}
        auto = 0
        for status, k, n in conn.execute(
            sa.select(c.status, kind, sa.func.count())
            .where(c.status.in_(["executed", "failed", "rejected", "superseded", "executing"]))
            .group_by(c.status, kind)
        ):
            if k:
                reviewed[k] = reviewed.get(k, 0) + int(n)
            elif status == "executed":
                auto += int(n)
    ages = sorted((now - t).total_seconds() / 3600 for t in waiting)
    settled = sum(by_status.get(s, 0) for s in ("executed", "failed", "rejected"))
    return Kpis(
        total=sum(by_status.values()),
        by_workflow=by_workflow,
        by_status=by_status,
        queue_size=len(waiting),
        queue_oldest_h=ages[-1] if ages else None,
        queue_median_h=ages[len(ages) // 2] if ages else None,
        queue_by_workflow=queue_by_workflow,
        auto_resolved=auto,
        settled=settled,
        reviewed=reviewed,
    )


# ---------------------------------------------------------------------------------------- orders


@dataclass(frozen=True)
class AppliedAction:
    key: str
    decision_id: str
    action: str
    result: dict[str, Any]
    at: datetime


# Decisions about one order are found by their subject; these also name orders in their actions and
# evidence: wave plans and re-sourcing summaries (subjects ``waves``, ``backlog``) and the workflows
# whose subject is a case, a SKU or a document rather than an order.
COLLECTIVE_SUBJECTS = ("waves", "backlog")
ORDER_SUBJECT_WORKFLOWS = ("order_release", "allocation", "customer_service")
OTHER_WORKFLOWS = tuple(sorted(set(get_args(Workflow)) - set(ORDER_SUBJECT_WORKFLOWS)))


def decisions_about(store: Store, order_id: str, limit: int = 500) -> list[Decision]:
    """Every decision about an order, oldest first: its own (by subject, from the index) and those
    that name it elsewhere (a wave plan, a re-sourcing, a triage case), searched among the decisions
    that can name another order only, so the store's other orders' decisions are never read."""
    c = store.decisions.c
    needle = _like(f'"{order_id}"')
    own = sa.select(c.id).where(c.subject == order_id)
    others = sa.select(c.id).where(
        sa.or_(c.subject.in_(COLLECTIVE_SUBJECTS), c.workflow.in_(OTHER_WORKFLOWS)),
        c.subject != order_id,
        sa.cast(c.data, sa.Text).like(needle, escape="\\"),
    )
    with store.engine.connect() as conn:
        ids = set(conn.execute(own).scalars()) | set(conn.execute(others).scalars())
        if not ids:
            return []
        stmt = sa.select(c.data).where(c.id.in_(sorted(ids))).order_by(c.created_at, c.id).limit(limit)
        return [Decision.model_validate(row) for row in conn.execute(stmt).scalars()]


def applied_actions(store: Store, decision_ids: list[str]) -> list[AppliedAction]:
    """The actions of these decisions that ran (the action log), with when."""
    if not decision_ids:
        return []
    c = store.action_log.c
    stmt = (
        sa.select(c.idempotency_key, c.decision_id, c.action, c.result, c.at)
        .where(c.decision_id.in_(decision_ids))
        .order_by(c.at)
    )
    with store.engine.connect() as conn:
        return [AppliedAction(k, d, a, dict(r or {}), as_utc(at)) for k, d, a, r, at in conn.execute(stmt)]


def audit_kinds(store: Store) -> list[str]:
    """The kinds of entry the audit trail holds (for the explorer's filter)."""
    c = store.audit_log.c
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(c.kind).group_by(c.kind).order_by(c.kind)).scalars())
