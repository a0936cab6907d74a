"""The decisions' live key: at most one live proposal per (workflow family, subject).

Adds ``decisions.live_key`` with its index and the partial unique index ``uq_decisions_live``
(``live_key`` where the status is ``pending_review`` or ``awaiting_planner``). Existing decisions
get their key, computed as ``domain.decisions.live_key`` did at this revision; where several of
them were live for one key, the newest stays live and the older ones become ``superseded``, linked
both ways, so that the unique index can be built.

A store made by ``create_all`` after the lifecycle change (commit 8c62604) has the column and the
indexes already and is stamped at 0001 like an older one: each step here is skipped when it is done.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-02
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

LIVE = ("pending_review", "awaiting_planner")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

_DECISIONS = sa.table(
    "decisions",
    sa.column("id", sa.String),
    sa.column("workflow", sa.String),
    sa.column("subject", sa.String),
    sa.column("outcome", sa.String),
    sa.column("live_key", sa.String),
    sa.column("status", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
    sa.column("data", _JSON),
)


def _backfill(bind: sa.Connection) -> None:
    """Give each decision without one its key: ``domain.decisions.live_key`` at this revision (the
    workflow's family, the subject, and a suffix for the backorder half of a short release)."""
    c = _DECISIONS.c
    family = sa.case((c.workflow == "allocation", sa.literal("order_release")), else_=c.workflow)
    suffix = sa.case((c.outcome == "backordered", sa.literal(":backorder")), else_=sa.literal(""))
    key = family + sa.literal(":") + c.subject + suffix
    bind.execute(sa.update(_DECISIONS).where(c.live_key.is_(None)).values(live_key=key))


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    columns = {c["name"] for c in inspector.get_columns("decisions")}
    indexes = {i["name"] for i in inspector.get_indexes("decisions")}
    if "live_key" not in columns:
        with op.batch_alter_table("decisions") as batch:
            batch.add_column(sa.Column("live_key", sa.String(330), nullable=True))
    _backfill(bind)
    _supersede_duplicates(bind)
    if "ix_decisions_live_key" not in indexes:
        op.create_index("ix_decisions_live_key", "decisions", ["live_key"])
    if "uq_decisions_live" not in indexes:
        where = sa.text("status IN ('pending_review', 'awaiting_planner')")
        op.create_index(
            "uq_decisions_live",
            "decisions",
            ["live_key"],
            unique=True,
            sqlite_where=where,
            postgresql_where=where,
        )


def _supersede_duplicates(bind: sa.Connection) -> None:
    """Keep the newest live decision of each key live; supersede the older ones, linked both ways."""
    sqlite = bind.dialect.name == "sqlite"
    decisions = _DECISIONS
    c = decisions.c
    insertion: sa.ColumnElement[Any] = sa.literal_column("rowid" if sqlite else "ins_seq")
    duplicated = (
        sa.select(c.live_key).where(c.status.in_(LIVE)).group_by(c.live_key).having(sa.func.count() > 1)
    ).subquery()
    rows = bind.execute(
        sa.select(c.id, c.live_key, c.data)
        .where(c.status.in_(LIVE), c.live_key.in_(sa.select(duplicated.c.live_key)))
        .order_by(c.live_key, c.created_at, insertion)
    ).all()
    now = datetime.now(UTC)
    updated_at = now.replace(tzinfo=None) if sqlite else now
    by_key: dict[str, list[Any]] = {}
    for row in rows:
        by_key.setdefault(row.live_key, []).append(row)
    for group in by_key.values():
        *older, newest = group
        for old in older:
            data = {**old.data, "status": "superseded", "superseded_by": newest.id}
            bind.execute(
                sa.update(decisions).where(c.id == old.id).values(status="superseded", updated_at=updated_at, data=data)
            )
        if newest.data.get("supersedes") is None:
            data = {**newest.data, "supersedes": older[-1].id}
            bind.execute(sa.update(decisions).where(c.id == newest.id).values(data=data))


def downgrade() -> None:
    op.drop_index("uq_decisions_live", table_name="decisions")
    op.drop_index("ix_decisions_live_key", table_name="decisions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("live_key")
