"""Alembic's environment for the store: runs the revisions on the connection that
``runtime.store`` puts in ``config.attributes["connection"]``, inside that connection's
transaction (which holds the schema lock: an advisory lock on PostgreSQL, the write lock on SQLite)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "Crossdock's migrations run through the store: Store.create_schema() or `crossdock db upgrade`"
        )
    context.configure(
        connection=connection,
        target_metadata=None,
        # SQLite alters most tables by copying them; batch mode does that where a revision needs it.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) mode is not supported: the revisions inspect the database")
run_migrations()
