"""The schema of the first release (as ``Store.create_schema`` made it with ``create_all`` up to
commit 63e5326): decisions, action_log, policy, the audit log with its head, and the triggers that
make the audit log append-only.

Revision ID: 0001
Revises:
Create Date: 2025-06-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

GENESIS_HASH = "0" * 64
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_AT = sa.DateTime(timezone=True)

SQLITE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
]

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION crossdock_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING MESSAGE = 'audit_log is append-only (' || TG_OP || ' rejected)';
END $$
"""


def _pg_trigger(name: str, when: str, level: str) -> str:
    return f"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgname = '{name}' AND tgrelid = 'audit_log'::regclass) THEN
        CREATE TRIGGER {name} {when} ON audit_log
        FOR EACH {level} EXECUTE FUNCTION crossdock_audit_append_only();
    END IF;
END $$
"""


PG_TRIGGERS = [
    PG_FUNCTION,
    _pg_trigger("audit_log_no_update", "BEFORE UPDATE", "ROW"),
    _pg_trigger("audit_log_no_delete", "BEFORE DELETE", "ROW"),
    _pg_trigger("audit_log_no_truncate", "BEFORE TRUNCATE", "STATEMENT"),
]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    # Insertion order: an identity column on PostgreSQL; SQLite (no identity) orders by rowid.
    order_column = []
    if dialect == "postgresql":
        order_column.append(sa.Column("ins_seq", sa.BigInteger, sa.Identity(), nullable=False))
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(128), primary_key=True),
        *order_column,
        sa.Column("event_id", sa.String(256), index=True),
        sa.Column("job_id", sa.String(256), index=True),
        sa.Column("workflow", sa.String(64), nullable=False, index=True),
        sa.Column("subject", sa.String(256), nullable=False, index=True),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("cost_impact", sa.Float, nullable=False),
        sa.Column("human_review_required", sa.Boolean, nullable=False),
        sa.Column("created_at", _AT, nullable=False, index=True),
        sa.Column("updated_at", _AT, nullable=False, index=True),
        sa.Column("data", _JSON, nullable=False),
    )
    op.create_table(
        "action_log",
        sa.Column("idempotency_key", sa.String(256), primary_key=True),
        sa.Column("decision_id", sa.String(128), index=True),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("result", _JSON, nullable=False),
        sa.Column("at", _AT, nullable=False),
    )
    op.create_table(
        "policy",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", _JSON, nullable=False),
        sa.Column("updated_at", _AT, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("at", _AT, nullable=False),
        sa.Column("kind", sa.String(128), nullable=False, index=True),
        sa.Column("subject", sa.String(256), nullable=False, index=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("dedup_key", sa.String(256), unique=True, nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    audit_head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    for ddl in PG_TRIGGERS if dialect == "postgresql" else SQLITE_TRIGGERS:
        op.execute(ddl)
    op.bulk_insert(audit_head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])


def downgrade() -> None:
    for table in ("audit_head", "audit_log", "policy", "action_log", "decisions"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS crossdock_audit_append_only()")
