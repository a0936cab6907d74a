"""Audit seals: HMAC-SHA256 over (seq, hash) of the chain's head, keyed outside the store
(``runtime/audit_seal.py``), one per append; append-only like the audit log.

Revision ID: 0003
Revises: 0002
Create Date: 2025-06-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

SQLITE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS audit_seals_no_update BEFORE UPDATE ON audit_seals
       BEGIN SELECT RAISE(ABORT, 'audit_seals is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_seals_no_delete BEFORE DELETE ON audit_seals
       BEGIN SELECT RAISE(ABORT, 'audit_seals is append-only'); END""",
]

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION crossdock_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only (' || TG_OP || ' rejected)';
END $$
"""

PG_TRIGGERS = [
    PG_FUNCTION,
    """CREATE TRIGGER audit_seals_no_update BEFORE UPDATE ON audit_seals
       FOR EACH ROW EXECUTE FUNCTION crossdock_append_only()""",
    """CREATE TRIGGER audit_seals_no_delete BEFORE DELETE ON audit_seals
       FOR EACH ROW EXECUTE FUNCTION crossdock_append_only()""",
    """CREATE TRIGGER audit_seals_no_truncate BEFORE TRUNCATE ON audit_seals
       FOR EACH STATEMENT EXECUTE FUNCTION crossdock_append_only()""",
]


def upgrade() -> None:
    op.create_table(
        "audit_seals",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    for ddl in PG_TRIGGERS if op.get_bind().dialect.name == "postgresql" else SQLITE_TRIGGERS:
        op.execute(ddl)


def downgrade() -> None:
    op.drop_table("audit_seals")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS crossdock_append_only()")
