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
:meth:`Store.verify_audit`. Every append also writes a seal of the new head, an HMAC keyed outside
the database (``runtime/audit_seal.py``), so that a rewrite by someone who can write to the
database (and recompute the hashes) is detected too.

Writes that belong together share one transaction through :meth:`Store.batch` (a unit of work):
inside it every write of this thread (decisions, transitions, the action log, audit appends and
their seals) goes to one transaction, opened at the first write and committed when the batch
ends, so an order decision costs a few transactions instead of one per row. The batch's audit
appends take consecutive seqs under one hold of the chain's head; their seals reach the seal file
after the commit, in order.

The schema is made and upgraded by the Alembic revisions in ``runtime/migrations``
(:meth:`Store.create_schema`, ``crossdock db upgrade``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import BaseModel
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.pool import StaticPool

from domain.decisions import LIVE_STATUSES, Decision
from domain.engines.clock import as_utc
from domain.models import Policy
from runtime.audit_seal import AuditSealer, Seal, SealFileError

if TYPE_CHECKING:
    from runtime.settings import Settings as RuntimeSettings

log = structlog.get_logger("crossdock.store")

GENESIS_HASH = "0" * 64
_AUDIT_PAGE = 1000
# Key of the PostgreSQL advisory lock that serialises schema creation across processes.
_SCHEMA_LOCK_KEY = 0x43524F5353444F43  # "CROSSDOC"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The revision that ``create_all`` made before there were migrations: such a store is stamped there.
FIRST_REVISION = "0001"


def normalise_url(url: str) -> str:
    """Rewrite ``postgres://`` and ``postgresql://`` URLs to the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _journal_mode_wal(cur: Any, patience_s: float = 30.0) -> None:
    """Switch a SQLite file to WAL. The switch needs the file to itself and SQLite does not wait on the busy
    handler for it, so two processes opening a new store together would see "database is locked": retry."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


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
    """The result of recomputing the audit chain and checking its seals."""

    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str | None = None
    # The newest entry whose seal was checked (None: no seal seen).
    sealed_seq: int | None = None


class SchemaRevision(BaseModel):
    """Where a store's schema stands: its Alembic revision and the newest one shipped."""

    current: str | None
    head: str
    # Tables made before there were migrations (no alembic_version): the next upgrade stamps them.
    unversioned: bool = False

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


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
    audit_seals = sa.Table(
        "audit_seals",
        md,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
    )
    # Accepted events with the reads their decisions stood on (``tools.recording``), for the engine
    # replay (``runtime.shadow``); one row per event key, written once.
    event_records = sa.Table(
        "event_records",
        md,
        sa.Column("key", sa.String(600), primary_key=True),
        sa.Column("event_id", sa.String(256), nullable=False, index=True),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("accepted_at", UTCDateTime, nullable=False, index=True),
        sa.Column("event", _JSON, nullable=False),
        sa.Column("reads", _JSON, nullable=False),
        # {"proposed": [the decision id of each engine proposal], "decided": [the ids recorded]}
        sa.Column("decisions", _JSON, nullable=False),
        sa.Column("engine_version", sa.String(128), nullable=False),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
    )
    tables = {t.name: t for t in (decisions, action_log, policy, audit_log, audit_head, audit_seals, event_records)}
    return md, tables


@dataclass
class Batch:
    """One unit of work (:meth:`Store.batch`): the transaction its writes share, opened lazily."""

    conn: Connection | None = None
    opener: AbstractContextManager[Connection] | None = None
    # The chain's head as this transaction moved it (read once, under its lock, when it opened);
    # written back, with the seal rows, once before the commit (``Store._flush``).
    head: tuple[int, str] | None = None
    seals: list[Seal] = field(default_factory=list)
    unwritten: list[Seal] = field(default_factory=list)
    # Audit appends made first thing when the transaction opens (or at the end, if nothing wrote).
    leading: list[dict[str, Any]] = field(default_factory=list)

    def audit_when_open(
        self, kind: str, subject: str, actor: str, payload: dict[str, Any], dedup_key: str | None = None
    ) -> None:
        """Append this audit entry as the first write of the batch's transaction: no transaction is
        opened for it alone while the batch still reads (an order's reads happen before its write)."""
        self.leading.append(
            {"kind": kind, "subject": subject, "actor": actor, "payload": payload, "dedup_key": dedup_key}
        )


def _alembic_config(conn: Connection) -> Config:
    """Alembic's configuration for the shipped revisions, running on ``conn`` (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = conn
    return config


class Store:
    """Decisions, action log, policy and audit log in one SQL database."""

    def __init__(self, url: str, *, sealer: AuditSealer | None = None) -> None:
        """Open (lazily) the database at ``url``; call :meth:`create_schema` once before use.

        ``sealer`` seals the audit chain; without one, the seal settings are read from the
        environment (``runtime.settings``) the first time one is needed."""
        self.url = normalise_url(url)
        self._sealer = sealer
        self._sealer_lock = threading.Lock()
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
            # A read of one statement (``_read``) needs no BEGIN: the statement sees one state alone.
            self._read_engine: Engine = self.engine.execution_options(sqlite_begin="")
        elif self.dialect == "postgresql":
            self.engine = sa.create_engine(sa_url, pool_pre_ping=True)
            self._write_engine = self.engine
            self._read_engine = self.engine
        else:
            raise ValueError(f"unsupported database URL scheme: {sa_url.drivername}")
        self._md, t = _metadata(self.dialect)
        self.decisions = t["decisions"]
        self.action_log = t["action_log"]
        self.policy = t["policy"]
        self.audit_log = t["audit_log"]
        self.audit_head = t["audit_head"]
        self.audit_seals = t["audit_seals"]
        self.event_records = t["event_records"]
        # Audit appends: an entry without a dedup key; one with (nothing inserted if its key is known,
        # so that the insert is also the dedup check: no look-up before it).
        self._audit_insert = sa.insert(self.audit_log)
        self._audit_insert_once = (
            self._insert(self.audit_log)
            .on_conflict_do_nothing(index_elements=["dedup_key"])
            .execution_options(preserve_rowcount=True)
        )
        # Whether the pipeline keeps each decided event with its reads (``record_event``).
        self.record_reads = True
        # The unit of work of each thread (``batch``), if one is open.
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: RuntimeSettings) -> Store:
        """The store of ``settings``: its database, its audit seal key and file, and whether decided
        events are kept with their reads (``CROSSDOCK_RECORD_READS``)."""
        store = cls(settings.store_url(), sealer=AuditSealer.from_settings(settings))
        store.record_reads = settings.record_reads
        return store

    @property
    def sealer(self) -> AuditSealer:
        """The audit sealer (from the environment's settings if none was given)."""
        with self._sealer_lock:
            if self._sealer is None:
                from runtime.settings import Settings as RuntimeSettings

                self._sealer = AuditSealer.from_settings(RuntimeSettings())
            return self._sealer

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
                    _journal_mode_wal(cur)
                cur.execute("PRAGMA foreign_keys=ON")
            finally:
                cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            begin = conn.get_execution_options().get("sqlite_begin", "BEGIN")
            if begin:
                conn.exec_driver_sql(begin)

    # ------------------------------------------------------------------ plumbing

    def _current_batch(self) -> Batch | None:
        batch: Batch | None = getattr(self._local, "batch", None)
        return batch

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        """A unit of work: this thread's writes inside it share one transaction, committed when the
        block ends (rolled back, all of them, if it raises). The transaction opens at the first
        write, so reads before it take no lock; once open, reads go through it too and see its
        writes. Audit seals reach the seal file after the commit. A batch inside a batch joins it.

        Hold no lock the batch's writes could wait for and call no other system inside it once it
        has written: on SQLite the open transaction holds the database's write lock, on PostgreSQL
        the chain's head."""
        outer = self._current_batch()
        if outer is not None:
            yield outer
            return
        batch = Batch()
        self._local.batch = batch
        try:
            yield batch
            if batch.leading and batch.conn is None:
                self._open(batch)
            if batch.conn is not None:
                self._flush(batch.conn, batch)
        except BaseException as exc:
            self._local.batch = None
            if batch.opener is not None:
                batch.opener.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._local.batch = None
        if batch.opener is not None:
            batch.opener.__exit__(None, None, None)  # the commit
        if batch.seals:
            self.sealer.append_to_file(batch.seals)

    def _open(self, batch: Batch) -> Connection:
        """Open the batch's transaction: take the chain's head first (the lock order of every batch:
        the head, then rows), then make the appends it leads with."""
        batch.opener = self._write_engine.begin()
        batch.conn = conn = batch.opener.__enter__()
        head = self.audit_head.c
        row = conn.execute(sa.select(head.seq, head.hash).where(head.id == 1).with_for_update()).one()
        batch.head = (int(row.seq), str(row.hash))
        leading, batch.leading = batch.leading, []
        for entry in leading:
            self._append(conn, batch, **entry)
        return conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), committed on success; inside a batch,
        the batch's transaction (committed when the batch ends)."""
        batch = self._current_batch()
        if batch is not None:
            yield batch.conn if batch.conn is not None else self._open(batch)
            return
        with self._write_engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for one read statement (on SQLite no BEGIN is sent: one statement sees one
        state of the database; reads of several statements that must agree use ``_snapshot``);
        inside a batch that has written, the batch's transaction (so that its reads see its writes)."""
        batch = self._current_batch()
        if batch is not None and batch.conn is not None:
            yield batch.conn
            return
        with self._read_engine.connect() as conn:
            yield conn

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A read-only transaction that sees one state of the database throughout (REPEATABLE READ
        on PostgreSQL; on SQLite in WAL mode every read transaction does)."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            yield conn

    def _insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table) if self.dialect == "postgresql" else sqlite.insert(table)

    def create_schema(self) -> None:
        """Create or upgrade the schema to the newest revision (idempotent, multi-process safe).

        Also checks that the audit seal key can be had, so that a missing key stops start-up
        rather than the first append."""
        self.upgrade("head")
        _ = self.sealer

    def upgrade(self, revision: str = "head") -> list[str]:
        """Run the migrations up to ``revision`` in one transaction that holds the schema lock (an
        advisory lock on PostgreSQL, the write lock on SQLite), so that processes starting together
        upgrade once. A store made before there were migrations (its tables but no
        ``alembic_version``) is stamped at the first revision first. Returns the revisions run."""
        sealed: Seal | None = None
        with self._write() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
            config = _alembic_config(conn)
            inspector = sa.inspect(conn)
            if not inspector.has_table("alembic_version") and inspector.has_table("audit_log"):
                log.warning("store made before migrations: stamping it at the first revision", revision=FIRST_REVISION)
                command.stamp(config, FIRST_REVISION)
            before = MigrationContext.configure(conn).get_current_revision()
            command.upgrade(config, revision)
            after = MigrationContext.configure(conn).get_current_revision()
            if sa.inspect(conn).has_table("audit_seals"):
                sealed = self._seal_unsealed_chain(conn)
        if sealed is not None:
            self.sealer.append_to_file([sealed])
        script = ScriptDirectory.from_config(config)
        if before == after:
            return []
        ran = [r.revision for r in script.iterate_revisions(after, before)]
        return list(reversed(ran))

    def schema_revision(self) -> SchemaRevision:
        """The schema's current revision and the newest shipped one."""
        with self._snapshot() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            unversioned = current is None and sa.inspect(conn).has_table("audit_log")
            head = ScriptDirectory.from_config(_alembic_config(conn)).get_current_head()
        return SchemaRevision(current=current, head=head or "", unversioned=unversioned)

    def _seal_unsealed_chain(self, conn: Connection) -> Seal | None:
        """Seal the head of a chain that has entries but no seal at all (one written before there
        were seals), unless the seal file holds seals: then seals were removed, and
        :meth:`verify_audit` must say so rather than this hide it."""
        head = conn.execute(
            sa.select(self.audit_head.c.seq, self.audit_head.c.hash).where(self.audit_head.c.id == 1)
        ).first()
        if head is None or int(head.seq) == 0:
            return None
        if conn.execute(sa.select(self.audit_seals.c.seq).limit(1)).first() is not None:
            return None
        if next(self.sealer.file_seals(), None) is not None:
            return None
        seal = self._insert_seal(conn, int(head.seq), str(head.hash), utcnow())
        log.warning("audit chain sealed at its head on adoption", seq=seal.seq, key_id=seal.key_id)
        return seal

    def _insert_seal(self, conn: Connection, seq: int, digest: str, at: datetime) -> Seal:
        seal = self.sealer.seal(seq, digest, at)
        conn.execute(sa.insert(self.audit_seals).values(seq=seq, hash=digest, mac=seal.mac, key_id=seal.key_id, at=at))
        return seal

    def ping(self) -> bool:
        """True if the database answers."""
        try:
            with self._read() as conn:
                return conn.execute(sa.text("SELECT 1")).scalar() == 1
        except sa.exc.SQLAlchemyError:
            return False

    def close(self) -> None:
        """Dispose of the engine's connection pool (and close the seal file)."""
        self.engine.dispose()
        if self._sealer is not None:
            self._sealer.close()

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
            # It returns the row's data, which the second UPDATE rewrites.
            data = conn.execute(
                sa.update(self.decisions)
                .where(c.id == id, c.status.in_(sorted(from_)))
                .values(status=to, updated_at=now)
                .returning(c.data)
            ).scalar()
            if data is None:
                return None
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

    def record_actions(self, actions: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        """Record executed actions, each (key, decision id, action name, result), once per key, in
        one statement; their ``at`` increases in list order (``actions_of`` lists them so)."""
        if not actions:
            return
        rows: list[dict[str, Any]] = []
        at = utcnow()
        for key, decision_id, action_name, result in actions:
            if rows and at <= rows[-1]["at"]:
                at = rows[-1]["at"] + timedelta(microseconds=1)
            rows.append(
                {"idempotency_key": key, "decision_id": decision_id, "action": action_name, "result": result, "at": at}
            )
            at = utcnow()
        stmt = self._insert(self.action_log).on_conflict_do_nothing(index_elements=["idempotency_key"])
        with self._write() as conn:
            conn.execute(stmt, rows)

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

    # ------------------------------------------------------------------ event records

    def record_event(
        self,
        *,
        key: str,
        event_id: str,
        type: str,
        accepted_at: datetime,
        event: dict[str, Any],
        reads: dict[str, Any],
        decisions: dict[str, Any],
        engine_version: str,
    ) -> bool:
        """Keep an accepted event with the reads its decisions used, once per event key (a
        redelivery keeps the first); True if this call inserted it. Inside a batch, a failure leaves
        the batch's transaction usable (the caller may carry on without the record): on PostgreSQL
        the insert runs in a savepoint; on SQLite a failed statement undoes only itself."""
        stmt = (
            self._insert(self.event_records)
            .values(
                key=key,
                event_id=event_id,
                type=type,
                accepted_at=as_utc(accepted_at),
                event=event,
                reads=reads,
                decisions=decisions,
                engine_version=engine_version,
                recorded_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["key"])
            .execution_options(preserve_rowcount=True)
        )
        with self._write() as conn:
            if self._current_batch() is not None and self.dialect == "postgresql":
                with conn.begin_nested():
                    return conn.execute(stmt).rowcount == 1
            return conn.execute(stmt).rowcount == 1

    def event_records_between(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """The event records accepted in [since, until), in (accepted_at, event id) order."""
        c = self.event_records.c
        stmt = (
            sa.select(c.key, c.event_id, c.type, c.accepted_at, c.event, c.reads, c.decisions, c.engine_version)
            .where(c.accepted_at >= as_utc(since), c.accepted_at < as_utc(until))
            .order_by(c.accepted_at, c.event_id, c.key)
        )
        with self._read() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]

    def event_record_keys(self, event_ids: Iterable[str]) -> set[str]:
        """Which of ``event_ids`` have an event record."""
        ids = sorted(set(event_ids))
        if not ids:
            return set()
        c = self.event_records.c
        with self._read() as conn:
            return set(conn.execute(sa.select(c.event_id).where(c.event_id.in_(ids))).scalars())

    # ------------------------------------------------------------------ policy

    def get_policy(self) -> Policy:
        """The governance policy in force (defaults if none was set)."""
        with self._read() as conn:
            data = conn.execute(sa.select(self.policy.c.data).where(self.policy.c.id == 1)).scalar()
        return Policy() if data is None else Policy.model_validate(data)

    def set_policy(self, s: Policy) -> None:
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
        """Append an entry to the hash chain (once per dedup_key) and return it.

        The same transaction seals the new head (one more row, in ``audit_seals``); the seal goes
        to the seal file, if one is set, after the commit (so the file never seals an entry that
        was rolled back; a crash in between leaves the file one seal behind, which is harmless).
        Inside a :meth:`batch` the entry joins the batch's transaction and its seal reaches the
        file when the batch commits."""
        batch = self._current_batch()
        if batch is not None and batch.conn is not None:  # the batch holds the head: check once, in it
            with self._write() as conn:
                return self._append(conn, batch, kind, subject, actor, payload, dedup_key)
        if dedup_key is not None:
            with self._read() as conn:
                existing = self._by_dedup_key(conn, dedup_key)
            if existing is not None:
                return existing
        if batch is not None:
            with self._write() as conn:
                return self._append(conn, batch, kind, subject, actor, payload, dedup_key)
        alone = Batch()
        with self._write() as conn:
            entry = self._append(conn, alone, kind, subject, actor, payload, dedup_key)
            self._flush(conn, alone)
        self.sealer.append_to_file(alone.seals)
        return entry

    def _flush(self, conn: Connection, batch: Batch) -> None:
        """Write the head a batch moved and the seals of its entries (one statement each)."""
        if not batch.unwritten or batch.head is None:
            return
        seq, digest = batch.head
        conn.execute(
            sa.insert(self.audit_seals),
            [{"seq": x.seq, "hash": x.hash, "mac": x.mac, "key_id": x.key_id, "at": x.at} for x in batch.unwritten],
        )
        conn.execute(sa.update(self.audit_head).where(self.audit_head.c.id == 1).values(seq=seq, hash=digest))
        batch.unwritten = []

    def append_audits(self, entries: list[dict[str, Any]]) -> list[AuditEntry]:
        """Append several entries to the chain, in order, in one transaction (the caller's batch, if
        one is open): each as :meth:`append_audit` would (``kind``, ``subject``, ``actor``,
        ``payload`` and an optional ``dedup_key``; an entry whose key is known already, in the
        chain or earlier in ``entries``, is returned instead of appended). Their dedup keys are
        looked up in one query and the new rows inserted in one statement."""
        if not entries:
            return []
        with self.batch() as batch, self._write() as conn:
            keys = sorted({str(e["dedup_key"]) for e in entries if e.get("dedup_key") is not None})
            known: dict[str, AuditEntry] = {}
            if keys:
                c = self.audit_log.c
                rows = conn.execute(sa.select(*self._audit_columns(), c.dedup_key).where(c.dedup_key.in_(keys)))
                known = {str(row.dedup_key): self._entry(row) for row in rows}
            out: list[AuditEntry] = []
            new: list[AuditEntry] = []
            new_rows: list[dict[str, Any]] = []
            assert batch.head is not None
            head = batch.head
            for e in entries:
                key = e.get("dedup_key")
                if key is not None and key in known:
                    out.append(known[key])
                    continue
                entry, row = self._link(head, e["kind"], e["subject"], e["actor"], e["payload"], key)
                head = (entry.seq, entry.hash)
                new.append(entry)
                new_rows.append(row)
                out.append(entry)
                if key is not None:
                    known[key] = entry
            if new_rows:
                conn.execute(self._audit_insert, new_rows)
            for entry in new:  # the batch's head moves once the rows are in
                self._linked(batch, entry)
        return out

    def _append(
        self,
        conn: Connection,
        batch: Batch,
        kind: str,
        subject: str,
        actor: str,
        payload: dict[str, Any],
        dedup_key: str | None,
    ) -> AuditEntry:
        """Append one entry in ``conn``'s transaction (an entry of this dedup_key already there is
        returned instead). Its seal is kept in ``batch`` (for the table, written by ``_flush``
        before the commit, and for the file, after it) and the batch's head moves on."""
        if batch.head is None:
            # The lock that serialises appends: a row lock on PostgreSQL (held to the commit, so a
            # batch's entries are consecutive); on SQLite the transaction already holds the
            # database's write lock (BEGIN IMMEDIATE). A batch took it when it opened.
            head = self.audit_head.c
            row = conn.execute(sa.select(head.seq, head.hash).where(head.id == 1).with_for_update()).one()
            batch.head = (int(row.seq), str(row.hash))
        entry, values = self._link(batch.head, kind, subject, actor, payload, dedup_key)
        if dedup_key is None:
            conn.execute(self._audit_insert, values)
        elif conn.execute(self._audit_insert_once, values).rowcount != 1:
            # The key is in the chain already (the head's lock keeps it from appearing meanwhile).
            existing = self._by_dedup_key(conn, dedup_key)
            if existing is None:
                raise RuntimeError(f"audit entry {dedup_key!r} was neither inserted nor found")
            return existing
        self._linked(batch, entry)
        return entry

    @staticmethod
    def _link(
        head: tuple[int, str],
        kind: str,
        subject: str,
        actor: str,
        payload: dict[str, Any],
        dedup_key: str | None,
    ) -> tuple[AuditEntry, dict[str, Any]]:
        """The entry that would follow ``head`` (seq, hash), and its row (nothing written, nothing moved)."""
        payload_text = canonical_json(payload)
        normalised: dict[str, Any] = json.loads(payload_text)
        seq, prev_hash, at = head[0] + 1, head[1], utcnow()
        digest = audit_hash(prev_hash, seq, at, kind, subject, actor, normalised)
        row = {
            "seq": seq,
            "at": at,
            "kind": kind,
            "subject": subject,
            "actor": actor,
            "payload": payload_text,
            "dedup_key": dedup_key,
            "prev_hash": prev_hash,
            "hash": digest,
        }
        entry = AuditEntry(
            seq=seq,
            at=at,
            kind=kind,
            subject=subject,
            actor=actor,
            payload=normalised,
            prev_hash=prev_hash,
            hash=digest,
        )
        return entry, row

    def _linked(self, batch: Batch, entry: AuditEntry) -> None:
        """Move the batch's head to ``entry`` (written in its transaction) and keep its seal."""
        batch.head = (entry.seq, entry.hash)
        seal = self.sealer.seal(entry.seq, entry.hash, entry.at)
        batch.seals.append(seal)
        batch.unwritten.append(seal)

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
        """Recompute the whole hash chain, page by page, check every seal against it (and the seal
        file's, if one is set), and report the first bad entry.

        Fails when an entry's hash or link does not match its content, when an entry no longer
        matches its seal (the chain was rewritten from there, hashes and head included), when a
        seal's MAC is wrong (a forged seal), when a seal lies beyond the end of the chain or the
        chain ends before its recorded head (entries were removed), and when entries after the
        newest seal are not sealed (seals were removed). The database is read in one snapshot, so
        appends made meanwhile do not disturb the check (they are checked next time)."""
        c, s = self.audit_log.c, self.audit_seals.c
        expected_seq, prev_hash, count, sealed = 1, GENESIS_HASH, 0, None
        sealer = self.sealer

        def bad(seq: int | None, reason: str) -> AuditVerification:
            return AuditVerification(ok=False, entries=count, first_bad_seq=seq, reason=reason, sealed_seq=sealed)

        with self._snapshot() as conn:
            while True:
                rows = conn.execute(
                    sa.select(*self._audit_columns()).where(c.seq >= expected_seq).order_by(c.seq).limit(_AUDIT_PAGE)
                ).all()
                if not rows:
                    break
                seal_rows = conn.execute(
                    sa.select(s.seq, s.hash, s.mac, s.key_id).where(s.seq >= rows[0].seq, s.seq <= rows[-1].seq)
                )
                seals = {int(r.seq): r for r in seal_rows}
                for row in rows:
                    seq = int(row.seq)
                    if seq != expected_seq:
                        return bad(expected_seq, f"entry {expected_seq} is missing")
                    if row.prev_hash != prev_hash:
                        return bad(seq, "prev_hash does not match the previous entry's hash")
                    try:
                        payload = json.loads(row.payload)
                    except ValueError:
                        return bad(seq, "payload is not valid JSON")
                    digest = audit_hash(prev_hash, seq, row.at, row.kind, row.subject, row.actor, payload)
                    if digest != row.hash:
                        return bad(seq, "hash does not match the entry's content")
                    seal = seals.get(seq)
                    if seal is not None:
                        problem = sealer.problem(seq, seal.hash, seal.mac, seal.key_id)
                        if problem is not None:
                            return bad(seq, problem)
                        if seal.hash != row.hash:
                            return bad(seq, f"entry {seq} does not match its seal: the chain was rewritten from here")
                        sealed = seq
                    prev_hash, expected_seq, count = row.hash, seq + 1, count + 1
            head = conn.execute(
                sa.select(self.audit_head.c.seq, self.audit_head.c.hash).where(self.audit_head.c.id == 1)
            ).first()
            beyond = conn.execute(sa.select(sa.func.min(s.seq)).where(s.seq > count)).scalar()
        if head is not None and (int(head.seq) != count or head.hash != prev_hash):
            return bad(count + 1, "the chain ends before the recorded head")
        if beyond is not None:
            return bad(
                count + 1, f"the chain ends at entry {count} but entry {beyond} was sealed: entries were removed"
            )
        if count > (sealed or 0):
            return bad((sealed or 0) + 1, f"entries after {sealed or 0} are not sealed: seals were removed")
        if sealer.file is not None:
            file_problem = self._verify_seal_file(sealer)
            if file_problem is not None:
                return bad(*file_problem)
        return AuditVerification(ok=True, entries=count, sealed_seq=sealed)

    def _verify_seal_file(self, sealer: AuditSealer) -> tuple[int | None, str] | None:
        """Check each seal of the seal file against the stored chain (which the caller verified):
        the lowest bad seq and why, or None. Catches a rewrite of the database that also rewrote
        the seals table, and a chain cut shorter than the file's seals. Read afresh, not in the
        caller's snapshot: a seal reaches the file only after its entry is committed, so an entry
        appended since is found."""
        c = self.audit_log.c
        worst: tuple[int, str] | None = None

        def note(seq: int, reason: str) -> None:
            nonlocal worst
            if worst is None or seq < worst[0]:
                worst = (seq, reason)

        def check(batch: list[Seal]) -> None:
            with self._read() as conn:
                rows = conn.execute(sa.select(c.seq, c.hash).where(c.seq.in_(sorted({x.seq for x in batch}))))
                stored = {int(r.seq): str(r.hash) for r in rows}
            for seal in batch:
                problem = sealer.problem(seal.seq, seal.hash, seal.mac, seal.key_id)
                if problem is not None:
                    note(seal.seq, f"seal file: {problem}")
                elif seal.seq not in stored:
                    note(
                        seal.seq,
                        f"seal file: entry {seal.seq} was sealed but is not in the chain: entries were removed",
                    )
                elif stored[seal.seq] != seal.hash:
                    note(seal.seq, f"seal file: entry {seal.seq} does not match its seal: the chain was rewritten")

        batch: list[Seal] = []
        try:
            for seal in sealer.file_seals():
                batch.append(seal)
                if len(batch) == _AUDIT_PAGE:
                    check(batch)
                    batch = []
        except SealFileError as exc:
            return None, str(exc)
        if batch:
            check(batch)
        return worst
