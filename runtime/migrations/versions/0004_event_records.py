"""Event records: each accepted event with the reads its decisions used (``tools.recording``),
once per event key, for the engine replay (``runtime.shadow``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        "event_records",
        sa.Column("key", sa.String(600), primary_key=True),
        sa.Column("event_id", sa.String(256), nullable=False, index=True),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("event", json_type, nullable=False),
        sa.Column("reads", json_type, nullable=False),
        sa.Column("decisions", json_type, nullable=False),
        sa.Column("engine_version", sa.String(128), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("event_records")
