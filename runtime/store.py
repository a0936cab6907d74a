"""The persistent store: decisions, action log, policy and the hash-chained audit log.

SQLAlchemy Core over SQLite (default, embedded) or PostgreSQL (``DATABASE_URL``). Several
processes (the API and several workers) use the same store at once, so every write is a
short transaction that is safe under concurrency:

* SQLite runs in WAL mode with a 30 s busy timeout, and every write transaction starts with
  ``BEGIN IMMEDIATE`` so a reader never has to upgrade its lock (no "database is locked").
* PostgreSQL relies on row locks: compare-and-set updates, ``INSERT ... ON CONFLICT`` and a
  ``SELECT ... FOR UPDATE`` on the one-row ``audit_head`` table to serialise audit appends.

The audit log is append-only (database triggers reject UPDATE and DELETE) and hash-chained:
each entry's hash covers the previous entry's hash, so any tampering is detected by
:meth:`Store.verify_audit`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.pool import StaticPool

from domain.decisions import LIVE_STATUSES, Decision
from domain.engines.clock import as_utc
from domain.models import Settings

GENESIS_HASH = "0" * 64
_AUDIT_PAGE = 1000
# Key of the PostgreSQL advisory lock that serialises schema creation across processes.
_SCHEMA_LOCK_KEY = 0x43524F5353444F43  # "CROSSDOC"


def normalise_url(url: str) -> str:
    """Rewrite ``postgres://`` and ``postgresql://`` URLs to the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the form that is hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware (also on SQLite)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class AuditEntry(BaseModel):
    """One entry of the hash-chained audit log."""

    seq: int
    at: datetime
    kind: str
    subject: str
    actor: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class AuditVerification(BaseModel):
    """The result of recomputing the audit chain."""

    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str | None = None


def audit_hash(
    prev_hash: str, seq: int, at: datetime, kind: str, subject: str, actor: str, payload: dict[str, Any]
) -> str:
    """The chained hash of one audit entry."""
    body = {
        "seq": seq,
        "at": as_utc(at).isoformat(),
        "kind": kind,
        "subject": subject,
        "actor": actor,
        "payload": payload,
    }
    return hashlib.sha256((prev_hash + canonical_json(body)).encode()).hexdigest()


def _metadata(dialect: str) -> tuple[sa.MetaData, dict[str, sa.Table]]:
    md = sa.MetaData()
    # Insertion order: an identity column on PostgreSQL; SQLite (no identity) orders by rowid.
    order_column = []
    if dialect == "postgresql":
        order_column.append(sa.Column("ins_seq", sa.BigInteger, sa.Identity(), nullable=False))
    decisions = sa.Table(
        "decisions",
        md,
        sa.Column("id", sa.String(128), primary_key=True),
        *order_column,
        sa.Column("event_id", sa.String(256), index=True),
        sa.Column("job_id", sa.String(256), index=True),
        sa.Column("workflow", sa.String(64), nullable=False, index=True),
        sa.Column("subject", sa.String(256), nullable=False, index=True),
        # (workflow family, subject): at most one live proposal per key (the partial unique index).
        sa.Column("live_key", sa.String(330), nullable=True, index=True),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("cost_impact", sa.Float, nullable=False),
        sa.Column("human_review_required", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False, index=True),
        sa.Column("updated_at", UTCDateTime, nullable=False, index=True),
        sa.Column("data", _JSON, nullable=False),
    )
    live = ["pending_review", "awaiting_planner"]
    sa.Index(
        "uq_decisions_live",
        decisions.c.live_key,
        unique=True,
        sqlite_where=decisions.c.status.in_(live),
        postgresql_where=decisions.c.status.in_(live),
    )
    action_log = sa.Table(
        "action_log",
        md,
        sa.Column("idempotency_key", sa.String(256), primary_key=True),
        sa.Column("decision_id", sa.String(128), index=True),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("result", _JSON, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
    )
    policy = sa.Table(
        "policy",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", _JSON, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    audit_log = sa.Table(
        "audit_log",
        md,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("kind", sa.String(128), nullable=False, index=True),
        sa.Column("subject", sa.String(256), nullable=False, index=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("dedup_key", sa.String(256), unique=True, nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    audit_head = sa.Table(
        "audit_head",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    tables = {t.name: t for t in (decisions, action_log, policy, audit_log, audit_head)}
    return md, tables


_SQLITE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
]

_PG_FUNCTION = """
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


_PG_TRIGGERS = [
    _PG_FUNCTION,
    _pg_trigger("audit_log_no_update", "BEFORE UPDATE", "ROW"),
    _pg_trigger("audit_log_no_delete", "BEFORE DELETE", "ROW"),
    _pg_trigger("audit_log_no_truncate", "BEFORE TRUNCATE", "STATEMENT"),
]


class Store:
    """Decisions, action log, policy and audit log in one SQL database."""

    def __init__(self, url: str) -> None:
        """Open (lazily) the database at ``url``; call :meth:`create_schema` once before use."""
        self.url = normalise_url(url)
        sa_url = sa.make_url(self.url)
        self.dialect = sa_url.get_backend_name()
        if self.dialect == "sqlite":
            database = sa_url.database or ""
            memory = database in ("", ":memory:")
            if not memory:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs: dict[str, Any] = {"connect_args": {"timeout": 30, "check_same_thread": False}}
            if memory:
                kwargs["poolclass"] = StaticPool
            self.engine: Engine = sa.create_engine(sa_url, **kwargs)
            self._install_sqlite_events(self.engine, wal=not memory)
            # Write transactions start with BEGIN IMMEDIATE (see the "begin" event).
            self._write_engine: Engine = self.engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")
        elif self.dialect == "postgresql":
            self.engine = sa.create_engine(sa_url, pool_pre_ping=True)
            self._write_engine = self.engine
        else:
            raise ValueError(f"unsupported database URL scheme: {sa_url.drivername}")
        self._md, t = _metadata(self.dialect)
        self.decisions = t["decisions"]
        self.action_log = t["action_log"]
        self.policy = t["policy"]
        self.audit_log = t["audit_log"]
        self.audit_head = t["audit_head"]

    @staticmethod
    def _install_sqlite_events(engine: Engine, *, wal: bool) -> None:
        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy (not pysqlite) emit BEGIN, so that we choose its kind.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            try:
                cur.execute("PRAGMA busy_timeout=30000")
                if wal:
                    cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA foreign_keys=ON")
            finally:
                cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), committed on success."""
        with self._write_engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read-only transaction, rolled back at the end."""
        with self.engine.connect() as conn:
            yield conn

    def _insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table) if self.dialect == "postgresql" else sqlite.insert(table)

    def create_schema(self) -> None:
        """Create tables, triggers and the audit head if missing (idempotent, multi-process safe)."""
        with self._write() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
            self._md.create_all(conn, checkfirst=True)
            for ddl in _PG_TRIGGERS if self.dialect == "postgresql" else _SQLITE_TRIGGERS:
                conn.exec_driver_sql(ddl)
            conn.execute(
                self._insert(self.audit_head)
                .values(id=1, seq=0, hash=GENESIS_HASH)
                .on_conflict_do_nothing(index_elements=["id"])
            )

    def ping(self) -> bool:
        """True if the database answers."""
        try:
            with self._read() as conn:
                return conn.execute(sa.text("SELECT 1")).scalar() == 1
        except sa.exc.SQLAlchemyError:
            return False

    def close(self) -> None:
        """Dispose of the engine's connection pool."""
        self.engine.dispose()

    # ------------------------------------------------------------------ decisions

    def _decision_row(self, d: Decision, now: datetime) -> dict[str, Any]:
        return {
            "id": d.id,
            "event_id": d.event_id,
            "job_id": d.job_id,
            "workflow": d.workflow,
            "subject": d.subject,
            "live_key": d.live_key,
            "outcome": d.outcome,
            "status": d.status,
            "confidence": d.confidence,
            "cost_impact": d.cost_impact,
            "human_review_required": d.human_review_required,
            "created_at": d.created_at or now,
            "updated_at": now,
            "data": d.model_dump(mode="json"),
        }

    def save_decision(self, d: Decision) -> bool:
        """Insert a decision; if its id exists already, change nothing and return False."""
        return self.record_decision(d)[0]

    def record_decision(self, d: Decision) -> tuple[bool, Decision, list[Decision]]:
        """Insert a decision once, keeping one live proposal per (workflow, subject).

        A decision that may act (pending review, or executing now) supersedes the live proposal of
        its key in the same transaction: the old one becomes ``superseded`` and both are linked.
        Returns (inserted, the decision as stored, the proposals it superseded); a known id changes
        nothing (a redelivery).
        """
        now = utcnow()
        d = d.model_copy(update={"created_at": as_utc(d.created_at) if d.created_at else now})
        c = self.decisions.c
        superseded: list[Decision] = []
        with self._write() as conn:
            if self.dialect == "postgresql":
                # Writers of one key queue here, so two of them never both see "no live proposal".
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(d.live_key))))
            known = conn.execute(sa.select(c.data).where(c.id == d.id)).scalar()
            if known is not None:
                return False, Decision.model_validate(known), []
            if d.actions and d.status in ("pending_review", "executing", "awaiting_planner"):
                rows = conn.execute(
                    sa.select(c.data).where(c.live_key == d.live_key, c.status.in_(sorted(LIVE_STATUSES)))
                ).scalars()
                for data in rows:
                    old = Decision.model_validate({**data, "status": "superseded", "superseded_by": d.id})
                    conn.execute(
                        sa.update(self.decisions)
                        .where(c.id == old.id)
                        .values(status="superseded", updated_at=now, data=old.model_dump(mode="json"))
                    )
                    superseded.append(old)
                if superseded and d.supersedes is None:
                    d = d.model_copy(update={"supersedes": superseded[-1].id})
            conn.execute(sa.insert(self.decisions).values(**self._decision_row(d, now)))
        return True, d, superseded

    def get_decision(self, id: str) -> Decision | None:
        """The decision with this id, or None."""
        with self._read() as conn:
            data = conn.execute(sa.select(self.decisions.c.data).where(self.decisions.c.id == id)).scalar()
        return None if data is None else Decision.model_validate(data)

    def list_decisions(
        self,
        *,
        status: str | None = None,
        job_id: str | None = None,
        event_id: str | None = None,
        workflow: str | None = None,
        subject: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Decision]:
        """Decisions matching all given filters, oldest first (created_at, then insertion order)."""
        c = self.decisions.c
        order = sa.literal_column("decisions.rowid") if self.dialect == "sqlite" else c.ins_seq
        stmt = sa.select(c.data).order_by(c.created_at, order).limit(limit).offset(offset)
        for col, value in (
            (c.status, status),
            (c.job_id, job_id),
            (c.event_id, event_id),
            (c.workflow, workflow),
            (c.subject, subject),
        ):
            if value is not None:
                stmt = stmt.where(col == value)
        with self._read() as conn:
            return [Decision.model_validate(row) for row in conn.execute(stmt).scalars()]

    def decisions_updated_since(
        self, after: tuple[datetime, str] | None, statuses: Iterable[str], limit: int = 200
    ) -> list[tuple[Decision, datetime]]:
        """Decisions in ``statuses`` changed after ``after`` = (updated_at, id), oldest change first,
        each with its ``updated_at``: a keyset page for followers such as the knowledge base's
        history sync (pass the last row's (updated_at, id) to get the next page)."""
        c = self.decisions.c
        stmt = (
            sa.select(c.data, c.updated_at, c.id)
            .where(c.status.in_(sorted(set(statuses))))
            .order_by(c.updated_at, c.id)
            .limit(limit)
        )
        if after is not None:
            at, last_id = as_utc(after[0]), after[1]
            stmt = stmt.where(sa.or_(c.updated_at > at, sa.and_(c.updated_at == at, c.id > last_id)))
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [(Decision.model_validate(data), as_utc(updated)) for data, updated, _ in rows]

    def transition(
        self, id: str, *, to: str, from_: set[str], actor: str, error: str | None = None, **changes: Any
    ) -> Decision | None:
        """Compare-and-set a decision's status (and data fields such as ``review``); the updated
        decision, or None if it was not in ``from_``. ``to`` may equal the status (a touch)."""
        if not from_:
            return None
        c = self.decisions.c
        now = utcnow()
        with self._write() as conn:
            # The compare-and-set: one UPDATE guarded by the current status. Concurrent callers
            # serialise on the row lock (PostgreSQL) or the write lock (SQLite); one wins.
            moved = conn.execute(
                sa.update(self.decisions)
                .where(c.id == id, c.status.in_(sorted(from_)))
                .values(status=to, updated_at=now)
            ).rowcount
            if moved != 1:
                return None
            data = conn.execute(sa.select(c.data).where(c.id == id)).scalar_one()
            update = {"status": to, "actor": actor, "error": error, **changes}
            decision = Decision.model_validate({**data, **update})
            conn.execute(sa.update(self.decisions).where(c.id == id).values(data=decision.model_dump(mode="json")))
        return decision

    def live_decision(self, key: str) -> Decision | None:
        """The live proposal (pending review or awaiting a planner) of a (workflow, subject) key."""
        c = self.decisions.c
        stmt = sa.select(c.data).where(c.live_key == key, c.status.in_(sorted(LIVE_STATUSES)))
        with self._read() as conn:
            data = conn.execute(stmt).scalar()
        return None if data is None else Decision.model_validate(data)

    def latest(self, key: str, status: str) -> Decision | None:
        """The newest decision of a key in ``status`` (for example the last plan a planner rejected)."""
        c = self.decisions.c
        stmt = sa.select(c.data).where(c.live_key == key, c.status == status).order_by(c.updated_at.desc()).limit(1)
        with self._read() as conn:
            data = conn.execute(stmt).scalar()
        return None if data is None else Decision.model_validate(data)

    def executing_since(self, before: datetime, limit: int = 50) -> list[Decision]:
        """Decisions left ``executing`` since before ``before`` (a crash or a system that failed)."""
        c = self.decisions.c
        stmt = (
            sa.select(c.data)
            .where(c.status == "executing", c.updated_at < as_utc(before))
            .order_by(c.updated_at)
            .limit(limit)
        )
        with self._read() as conn:
            return [Decision.model_validate(row) for row in conn.execute(stmt).scalars()]

    def actions_of(self, decision_id: str) -> list[dict[str, Any]]:
        """The actions of a decision recorded as applied, in the order they were applied."""
        c = self.action_log.c
        stmt = sa.select(c.idempotency_key, c.action, c.result).where(c.decision_id == decision_id).order_by(c.at)
        with self._read() as conn:
            return [{"idempotency_key": k, "action": a, "result": r} for k, a, r in conn.execute(stmt)]

    # ------------------------------------------------------------------ action log

    def action_done(self, key: str) -> bool:
        """True if an action with this idempotency key has been recorded."""
        c = self.action_log.c
        stmt = sa.select(c.idempotency_key).where(c.idempotency_key == key)
        with self._read() as conn:
            return conn.execute(stmt).first() is not None

    def record_action(self, key: str, decision_id: str, action_name: str, result: dict[str, Any]) -> bool:
        """Record an executed action once; True if it was not recorded before."""
        stmt = (
            self._insert(self.action_log)
            .values(idempotency_key=key, decision_id=decision_id, action=action_name, result=result, at=utcnow())
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .execution_options(preserve_rowcount=True)
        )
        with self._write() as conn:
            return conn.execute(stmt).rowcount == 1

    # ------------------------------------------------------------------ policy

    def get_policy(self) -> Settings:
        """The governance policy in force (defaults if none was set)."""
        with self._read() as conn:
            data = conn.execute(sa.select(self.policy.c.data).where(self.policy.c.id == 1)).scalar()
        return Settings() if data is None else Settings.model_validate(data)

    def set_policy(self, s: Settings) -> None:
        """Replace the governance policy."""
        data, now = s.model_dump(mode="json"), utcnow()
        stmt = self._insert(self.policy).values(id=1, data=data, updated_at=now)
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={"data": data, "updated_at": now})
        with self._write() as conn:
            conn.execute(stmt)

    # ------------------------------------------------------------------ audit log

    @staticmethod
    def _entry(row: Any) -> AuditEntry:
        return AuditEntry(
            seq=row.seq,
            at=row.at,
            kind=row.kind,
            subject=row.subject,
            actor=row.actor,
            payload=json.loads(row.payload),
            prev_hash=row.prev_hash,
            hash=row.hash,
        )

    def _audit_columns(self) -> list[sa.Column[Any]]:
        c = self.audit_log.c
        return [c.seq, c.at, c.kind, c.subject, c.actor, c.payload, c.prev_hash, c.hash]

    def _by_dedup_key(self, conn: Connection, dedup_key: str) -> AuditEntry | None:
        row = conn.execute(sa.select(*self._audit_columns()).where(self.audit_log.c.dedup_key == dedup_key)).first()
        return None if row is None else self._entry(row)

    def append_audit(
        self, kind: str, subject: str, actor: str, payload: dict[str, Any], dedup_key: str | None = None
    ) -> AuditEntry:
        """Append an entry to the hash chain (once per dedup_key) and return it."""
        if dedup_key is not None:
            with self._read() as conn:
                existing = self._by_dedup_key(conn, dedup_key)
            if existing is not None:
                return existing
        payload_text = canonical_json(payload)
        normalised: dict[str, Any] = json.loads(payload_text)
        head = self.audit_head.c
        with self._write() as conn:
            # The lock that serialises appends: a row lock on PostgreSQL; on SQLite the
            # transaction already holds the database's write lock (BEGIN IMMEDIATE).
            row = conn.execute(sa.select(head.seq, head.hash).where(head.id == 1).with_for_update()).one()
            if dedup_key is not None:
                existing = self._by_dedup_key(conn, dedup_key)
                if existing is not None:
                    return existing
            seq, prev_hash, at = int(row.seq) + 1, str(row.hash), utcnow()
            digest = audit_hash(prev_hash, seq, at, kind, subject, actor, normalised)
            conn.execute(
                sa.insert(self.audit_log).values(
                    seq=seq,
                    at=at,
                    kind=kind,
                    subject=subject,
                    actor=actor,
                    payload=payload_text,
                    dedup_key=dedup_key,
                    prev_hash=prev_hash,
                    hash=digest,
                )
            )
            conn.execute(sa.update(self.audit_head).where(head.id == 1).values(seq=seq, hash=digest))
        return AuditEntry(
            seq=seq,
            at=at,
            kind=kind,
            subject=subject,
            actor=actor,
            payload=normalised,
            prev_hash=prev_hash,
            hash=digest,
        )

    def audit(
        self, *, subject: str | None = None, kind: str | None = None, limit: int = 500, after_seq: int = 0
    ) -> list[AuditEntry]:
        """Audit entries after ``after_seq``, ascending, optionally filtered by subject and kind."""
        c = self.audit_log.c
        stmt = sa.select(*self._audit_columns()).where(c.seq > after_seq).order_by(c.seq).limit(limit)
        if subject is not None:
            stmt = stmt.where(c.subject == subject)
        if kind is not None:
            stmt = stmt.where(c.kind == kind)
        with self._read() as conn:
            return [self._entry(row) for row in conn.execute(stmt)]

    def verify_audit(self) -> AuditVerification:
        """Recompute the whole hash chain, page by page, and report the first broken entry."""
        c = self.audit_log.c
        expected_seq, prev_hash, count = 1, GENESIS_HASH, 0
        while True:
            stmt = sa.select(*self._audit_columns()).where(c.seq >= expected_seq).order_by(c.seq).limit(_AUDIT_PAGE)
            with self._read() as conn:
                rows = conn.execute(stmt).all()
            if not rows:
                break
            for row in rows:
                seq = int(row.seq)
                if seq != expected_seq:
                    return AuditVerification(
                        ok=False, entries=count, first_bad_seq=expected_seq, reason=f"entry {expected_seq} is missing"
                    )
                if row.prev_hash != prev_hash:
                    return AuditVerification(
                        ok=False,
                        entries=count,
                        first_bad_seq=seq,
                        reason="prev_hash does not match the previous entry's hash",
                    )
                try:
                    payload = json.loads(row.payload)
                except ValueError:
                    return AuditVerification(
                        ok=False, entries=count, first_bad_seq=seq, reason="payload is not valid JSON"
                    )
                digest = audit_hash(prev_hash, seq, row.at, row.kind, row.subject, row.actor, payload)
                if digest != row.hash:
                    return AuditVerification(
                        ok=False, entries=count, first_bad_seq=seq, reason="hash does not match the entry's content"
                    )
                prev_hash, expected_seq, count = row.hash, seq + 1, count + 1
        with self._read() as conn:
            head = conn.execute(
                sa.select(self.audit_head.c.seq, self.audit_head.c.hash).where(self.audit_head.c.id == 1)
            ).first()
        if head is not None and (int(head.seq) != count or head.hash != prev_hash):
            return AuditVerification(
                ok=False, entries=count, first_bad_seq=count + 1, reason="the chain ends before the recorded head"
            )
        return AuditVerification(ok=True, entries=count)
