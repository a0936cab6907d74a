"""The store's schema migrations (``runtime/migrations``), on SQLite and on PostgreSQL.

A store made by the code before migrations (``create_all`` plus the trigger DDL; the schema of
commit 63e5326, and the one of the lifecycle change with ``live_key`` already in it) is stamped and
upgraded by ``Store.create_schema``: its data stays, its audit chain still verifies (and gets
sealed), the triggers still hold, and the partial unique index is there.
"""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql
from typer.testing import CliRunner

from runtime.audit_seal import AuditSealer
from runtime.store import GENESIS_HASH, Store, audit_hash, canonical_json, normalise_url
from tests.integration.conftest import fresh_pg_database

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]
KEY = b"test-seal-key-0123456789abcdef!!"


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a fresh schema in the module's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    database_url: str = request.getfixturevalue("pg_database")
    schema = f"m_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine.dispose()
    return f"{database_url}?options=-csearch_path%3D{schema}"


# ------------------------------------------------------------------ the store before migrations
# A frozen copy of what ``Store.create_schema`` did before there were migrations: ``create_all`` of
# these tables, then the triggers, then the audit head's row.


def _legacy_metadata(dialect: str, *, live_key: bool) -> sa.MetaData:
    md = sa.MetaData()
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    at = sa.DateTime(timezone=True)
    order = [sa.Column("ins_seq", sa.BigInteger, sa.Identity(), nullable=False)] if dialect == "postgresql" else []
    key = [sa.Column("live_key", sa.String(330), nullable=True, index=True)] if live_key else []
    decisions = sa.Table(
        "decisions",
        md,
        sa.Column("id", sa.String(128), primary_key=True),
        *order,
        sa.Column("event_id", sa.String(256), index=True),
        sa.Column("job_id", sa.String(256), index=True),
        sa.Column("workflow", sa.String(64), nullable=False, index=True),
        sa.Column("subject", sa.String(256), nullable=False, index=True),
        *key,
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("cost_impact", sa.Float, nullable=False),
        sa.Column("human_review_required", sa.Boolean, nullable=False),
        sa.Column("created_at", at, nullable=False, index=True),
        sa.Column("updated_at", at, nullable=False, index=True),
        sa.Column("data", json_type, nullable=False),
    )
    if live_key:
        live = ["pending_review", "awaiting_planner"]
        sa.Index(
            "uq_decisions_live",
            decisions.c.live_key,
            unique=True,
            sqlite_where=decisions.c.status.in_(live),
            postgresql_where=decisions.c.status.in_(live),
        )
    sa.Table(
        "action_log",
        md,
        sa.Column("idempotency_key", sa.String(256), primary_key=True),
        sa.Column("decision_id", sa.String(128), index=True),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("result", json_type, nullable=False),
        sa.Column("at", at, nullable=False),
    )
    sa.Table(
        "policy",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", json_type, nullable=False),
        sa.Column("updated_at", at, nullable=False),
    )
    sa.Table(
        "audit_log",
        md,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("at", at, nullable=False),
        sa.Column("kind", sa.String(128), nullable=False, index=True),
        sa.Column("subject", sa.String(256), nullable=False, index=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("dedup_key", sa.String(256), unique=True, nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    sa.Table(
        "audit_head",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    return md


_LEGACY_SQLITE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
]
_LEGACY_PG_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION crossdock_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
           RAISE EXCEPTION USING MESSAGE = 'audit_log is append-only (' || TG_OP || ' rejected)';
       END $$""",
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
       FOR EACH ROW EXECUTE FUNCTION crossdock_audit_append_only()""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
       FOR EACH ROW EXECUTE FUNCTION crossdock_audit_append_only()""",
    """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
       FOR EACH STATEMENT EXECUTE FUNCTION crossdock_audit_append_only()""",
]

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def _decision_row(id: str, subject: str, status: str, created: datetime, **extra: Any) -> dict[str, Any]:
    data = {
        "id": id,
        "event_id": f"evt-{id}",
        "job_id": "job-1",
        "workflow": extra.get("workflow", "order_release"),
        "subject": subject,
        "outcome": extra.get("outcome", "released"),
        "confidence": 0.9,
        "cost_impact": 10.0,
        "human_review_required": status == "pending_review",
        "status": status,
        "rationale": "legacy",
        "evidence": {},
        "actions": [],
        "engine_version": "release-1.0",
        "created_at": created.isoformat(),
    }
    row = {k: data[k] for k in ("id", "event_id", "job_id", "workflow", "subject", "outcome", "status")}
    row |= {
        "confidence": 0.9,
        "cost_impact": 10.0,
        "human_review_required": status == "pending_review",
        "created_at": created if "postgresql" in extra.get("dialect", "") else created.replace(tzinfo=None),
        "updated_at": created if "postgresql" in extra.get("dialect", "") else created.replace(tzinfo=None),
        "data": data,
    }
    return row


# The decisions of the legacy store: two live proposals for SO-1 (allowed before the lifecycle
# change), a settled one, a live one for SO-2 and the backorder half of SO-3 beside its release.
LEGACY_DECISIONS = [
    ("dec-1", "SO-1", "pending_review", T0, {}),
    ("dec-2", "SO-1", "pending_review", T0 + timedelta(minutes=5), {"workflow": "allocation"}),
    ("dec-3", "SO-1", "executed", T0 + timedelta(minutes=1), {}),
    ("dec-4", "SO-2", "pending_review", T0, {}),
    ("dec-5", "SO-3", "pending_review", T0, {}),
    ("dec-6", "SO-3", "pending_review", T0, {"outcome": "backordered"}),
]


def make_legacy_store(url: str, *, live_key: bool = False, entries: int = 6) -> list[str]:
    """Create the pre-migration schema at ``url`` and fill it as the old code did; the chain's hashes."""
    engine = sa.create_engine(normalise_url(url))
    dialect = engine.dialect.name
    md = _legacy_metadata(dialect, live_key=live_key)
    hashes = []
    with engine.begin() as conn:
        md.create_all(conn)
        for ddl in _LEGACY_PG_TRIGGERS if dialect == "postgresql" else _LEGACY_SQLITE_TRIGGERS:
            conn.exec_driver_sql(ddl)
        conn.execute(sa.insert(md.tables["audit_head"]).values(id=1, seq=0, hash=GENESIS_HASH))
        for id, subject, status, created, extra in LEGACY_DECISIONS:
            if live_key and (id, status) == ("dec-1", "pending_review"):
                status = "superseded"  # the lifecycle code kept one live proposal per key already
            row = _decision_row(id, subject, status, created, dialect=dialect, **extra)
            if live_key:
                family = "order_release"
                row["live_key"] = f"{family}:{subject}" + (":backorder" if row["outcome"] == "backordered" else "")
            conn.execute(sa.insert(md.tables["decisions"]).values(**row))
        conn.execute(
            sa.insert(md.tables["action_log"]).values(
                idempotency_key="dec-3-0", decision_id="dec-3", action="oms.allocate", result={"ok": True}, at=T0
            )
        )
        prev = GENESIS_HASH
        for seq in range(1, entries + 1):
            at = T0 + timedelta(seconds=seq)
            payload = {"i": seq, "note": "legacy é"}
            digest = audit_hash(prev, seq, at, "decision.recorded", f"SO-{seq % 3}", "engine", payload)
            conn.execute(
                sa.insert(md.tables["audit_log"]).values(
                    seq=seq,
                    at=at if dialect == "postgresql" else at.replace(tzinfo=None),
                    kind="decision.recorded",
                    subject=f"SO-{seq % 3}",
                    actor="engine",
                    payload=canonical_json(payload),
                    dedup_key=f"legacy-{seq}",
                    prev_hash=prev,
                    hash=digest,
                )
            )
            conn.execute(sa.update(md.tables["audit_head"]).values(seq=seq, hash=digest))
            hashes.append(digest)
            prev = digest
    engine.dispose()
    return hashes


def _open(url: str, seal_file: Path | None = None) -> Store:
    return Store(url, sealer=AuditSealer(KEY, file=seal_file))


def _index(store: Store, name: str) -> Any:
    with store.engine.connect() as conn:
        return next((i for i in sa.inspect(conn).get_indexes("decisions") if i["name"] == name), None)


def _insert_decision(store: Store, id: str, subject: str, status: str) -> None:
    row = _decision_row(id, subject, status, T0 + timedelta(hours=1), dialect=store.dialect)
    row["live_key"] = f"order_release:{subject}"
    with store._write() as conn:  # noqa: SLF001 - a writer that bypasses record_decision
        conn.execute(sa.insert(store.decisions).values(**row))


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("live_key", [False, True], ids=["schema-63e5326", "schema-8c62604"])
def test_a_store_made_before_migrations_is_stamped_and_upgraded_keeping_its_data(
    store_url: str, live_key: bool
) -> None:
    hashes = make_legacy_store(store_url, live_key=live_key)
    store = _open(store_url)
    try:
        before = store.schema_revision()
        assert before.current is None and before.unversioned and not before.up_to_date
        store.create_schema()
        after = store.schema_revision()
        assert after.current == after.head == "0004" and after.up_to_date and not after.unversioned

        # Data kept: the chain, the decisions, the action log.
        assert [e.hash for e in store.audit()] == hashes
        assert [e.payload["note"] for e in store.audit()] == ["legacy é"] * len(hashes)
        assert {d.id for d in store.list_decisions()} == {f"dec-{n}" for n in range(1, 7)}
        assert store.action_done("dec-3-0")
        # Each decision has its live key; of SO-1's two live proposals the newest stays live.
        assert store.live_decision("order_release:SO-1").id == "dec-2"  # type: ignore[union-attr]
        old = store.get_decision("dec-1")
        assert old is not None and old.status == "superseded"
        if not live_key:
            assert old.superseded_by == "dec-2"
            assert store.get_decision("dec-2").supersedes == "dec-1"  # type: ignore[union-attr]
        assert store.live_decision("order_release:SO-3").id == "dec-5"  # type: ignore[union-attr]
        assert store.live_decision("order_release:SO-3:backorder").id == "dec-6"  # type: ignore[union-attr]

        # The chain verifies, and was sealed at its head on adoption.
        result = store.verify_audit()
        assert result.ok and result.entries == len(hashes) and result.sealed_seq == len(hashes)

        # The triggers still hold.
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE audit_log SET payload = '{}' WHERE seq = 1"))
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM audit_log WHERE seq = 2"))
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM audit_seals"))

        # The partial unique index: one live proposal per key; settled ones may repeat.
        index = _index(store, "uq_decisions_live")
        assert index is not None and index["unique"] and index["column_names"] == ["live_key"]
        with pytest.raises(sa.exc.IntegrityError):
            _insert_decision(store, "dec-9", "SO-2", "pending_review")
        _insert_decision(store, "dec-10", "SO-2", "executed")
        _insert_decision(store, "dec-11", "SO-2", "rejected")
        assert _index(store, "ix_decisions_live_key") is not None

        # The upgraded store works on: appends chain on from the legacy head and are sealed.
        entry = store.append_audit("decision.recorded", "SO-9", "engine", {"after": "upgrade"})
        assert entry.seq == len(hashes) + 1 and entry.prev_hash == hashes[-1]
        assert store.verify_audit().model_dump() == {
            "ok": True,
            "entries": len(hashes) + 1,
            "first_bad_seq": None,
            "reason": None,
            "sealed_seq": len(hashes) + 1,
        }
        store.create_schema()  # idempotent
        assert store.verify_audit().ok and store.upgrade() == []
    finally:
        store.close()


def test_an_empty_database_is_built_by_the_revisions_and_matches_the_store_tables(store_url: str) -> None:
    store = _open(store_url)
    try:
        assert store.schema_revision().current is None and not store.schema_revision().unversioned
        assert store.upgrade("0001") == ["0001"]
        assert store.upgrade() == ["0002", "0003", "0004"]
        store.create_schema()
        assert store.schema_revision().up_to_date
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, store._md) == []  # noqa: SLF001 - no drift from the tables in code
        assert store.verify_audit().model_dump() == {
            "ok": True,
            "entries": 0,
            "first_bad_seq": None,
            "reason": None,
            "sealed_seq": None,
        }
    finally:
        store.close()


def test_an_old_schema_from_the_first_revision_upgrades_with_its_data(store_url: str) -> None:
    """The other way to an old store: the first revision alone, filled, then upgraded to head."""
    store = _open(store_url)
    try:
        store.upgrade("0001")
        engine = sa.create_engine(normalise_url(store_url))
        md = _legacy_metadata(store.dialect, live_key=False)
        with engine.begin() as conn:
            for id, subject, status, created, extra in LEGACY_DECISIONS:
                row = _decision_row(id, subject, status, created, dialect=store.dialect, **extra)
                conn.execute(sa.insert(md.tables["decisions"]).values(**row))
        engine.dispose()
        store.create_schema()
        assert len(store.list_decisions()) == len(LEGACY_DECISIONS)
        assert store.live_decision("order_release:SO-1").id == "dec-2"  # type: ignore[union-attr]
        assert _index(store, "uq_decisions_live") is not None
    finally:
        store.close()


def _create_schema_in_process(url: str) -> None:
    s = Store(url, sealer=AuditSealer(KEY))
    s.create_schema()
    s.append_audit("test.append", "s", "a", {"pid": multiprocessing.current_process().name})
    s.close()


def test_processes_starting_together_upgrade_a_legacy_store_once(store_url: str) -> None:
    make_legacy_store(store_url)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_create_schema_in_process, args=(store_url,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
    assert [p.exitcode for p in procs] == [0, 0]
    store = _open(store_url)
    try:
        assert store.schema_revision().up_to_date
        result = store.verify_audit()
        assert result.ok and result.entries == 8 and result.sealed_seq == 8
    finally:
        store.close()


def test_the_db_commands_upgrade_and_report_the_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crossdock.cli import app

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    make_legacy_store(url, entries=2)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("CROSSDOCK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CROSSDOCK_AUDIT_SEAL_KEY", KEY.decode())
    runner = CliRunner()

    current = runner.invoke(app, ["db", "current"])
    assert current.exit_code == 1, current.output
    assert "made before migrations" in current.output and "crossdock db upgrade" in current.output

    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert "upgraded the schema made before migrations -> 0004 (ran 0002, 0003, 0004)" in upgraded.output

    current = runner.invoke(app, ["db", "current"])
    assert current.exit_code == 0, current.output
    assert "0004 (head)" in current.output
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0  # nothing to do, still fine

    store = _open(url)
    try:
        assert store.verify_audit().ok
    finally:
        store.close()
