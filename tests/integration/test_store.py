"""The persistent store, on SQLite and on PostgreSQL (the ``postgres`` marker).

The PostgreSQL tests need the server on 127.0.0.1:5432 and fail (not skip) without it. Each
test module gets a fresh database, and each test a fresh schema inside it.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from domain.decisions import Action, Decision
from domain.models import Policy
from runtime.audit_seal import AuditSealer
from runtime.store import GENESIS_HASH, Store, audit_hash, canonical_json, normalise_url
from tests.integration.conftest import fresh_pg_database

# The audit seal key of these tests (held outside the store, as in production).
SEAL_KEY = b"test-seal-key-0123456789abcdef!!"
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this module, dropped at the end."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty store: a SQLite file, or a fresh schema in the module's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    database_url: str = request.getfixturevalue("pg_database")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine.dispose()
    return f"{database_url}?options=-csearch_path%3D{schema}"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url, sealer=AuditSealer(SEAL_KEY))
    s.create_schema()
    yield s
    s.close()


def make_decision(id: str, **overrides: object) -> Decision:
    fields: dict[str, object] = {
        "id": id,
        "event_id": "evt-1",
        "job_id": "job-1",
        "workflow": "order_release",
        "subject": "SO-1",
        "outcome": "released",
        "confidence": 0.92,
        "cost_impact": 120.5,
        "human_review_required": True,
        "status": "pending_review",
        "rationale": "Credit cleared and stock is pickable.",
        "evidence": {"pickable": 12, "rules": ["credit_ok"]},
        "actions": [
            Action(
                system="oms", type="update_order_status", payload={"status": "released"}, idempotency_key=f"{id}-0-abc"
            )
        ],
        "engine_version": "release-1.0",
    }
    fields.update(overrides)
    return Decision.model_validate(fields)


def drop_update_trigger(store: Store) -> None:
    sql = (
        "DROP TRIGGER audit_log_no_update ON audit_log"
        if store.dialect == "postgresql"
        else "DROP TRIGGER audit_log_no_update"
    )
    with store.engine.begin() as conn:
        conn.exec_driver_sql(sql)


def _append_from_process(url: str, tag: str, count: int) -> None:
    """Runs in a child process: open the store on its own and append ``count`` entries."""
    s = Store(url, sealer=AuditSealer(SEAL_KEY))
    s.create_schema()
    for i in range(count):
        s.append_audit("test.append", f"{tag}-{i}", tag, {"i": i})
    s.close()


# ---------------------------------------------------------------------------- decisions


@pytest.mark.parametrize("url", ["postgres://u@h/db", "postgresql://u@h/db"])
def test_postgres_urls_are_rewritten_to_the_psycopg_driver(url: str) -> None:
    assert normalise_url(url) == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_a_sqlite_store_opens_while_another_process_writes_to_the_file(tmp_path: Path) -> None:
    # Switching a file to WAL while another connection holds a write lock fails at once ("database is
    # locked": SQLite skips the busy handler there); two processes starting on one legacy file hit it.
    import sqlite3

    path = tmp_path / "store.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE legacy (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO legacy VALUES (1)")
    threading.Timer(0.5, lambda: writer.execute("COMMIT")).start()
    store = Store(f"sqlite:///{path}")
    try:
        assert store.ping() is True
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        store.engine.dispose()
        writer.close()


def test_the_schema_can_be_created_again_and_the_store_answers_pings(store: Store) -> None:
    store.create_schema()
    assert store.ping() is True


def test_saving_a_decision_inserts_it_once_and_never_overwrites(store: Store) -> None:
    first = make_decision("dec-1")
    assert store.save_decision(first) is True
    assert store.save_decision(first.model_copy(update={"outcome": "held", "status": "executed"})) is False

    got = store.get_decision("dec-1")
    assert got is not None
    assert got.outcome == "released" and got.status == "pending_review"
    assert got.actions == first.actions and got.evidence == first.evidence
    assert got.created_at is not None and got.created_at.tzinfo is not None
    assert got.created_at.utcoffset() == timedelta(0)
    assert store.get_decision("dec-missing") is None


def test_listing_decisions_filters_by_each_field_in_creation_then_insertion_order(store: Store) -> None:
    t0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    # Distinct subjects: one live proposal per subject (see the supersede tests below).
    store.save_decision(make_decision("dec-c", created_at=t0 + timedelta(minutes=5), subject="SO-3"))
    store.save_decision(make_decision("dec-b", created_at=t0, status="executed", subject="SO-2"))
    store.save_decision(make_decision("dec-a", created_at=t0, job_id="job-2", event_id="evt-2", subject="SO-4"))
    store.save_decision(
        make_decision("dec-d", created_at=t0 + timedelta(minutes=1), workflow="allocation", subject="SO-5")
    )

    def ids(**filters: object) -> list[str]:
        return [d.id for d in store.list_decisions(**filters)]  # type: ignore[arg-type]

    assert ids() == ["dec-b", "dec-a", "dec-d", "dec-c"]
    assert ids(status="executed") == ["dec-b"]
    assert ids(status="pending_review") == ["dec-a", "dec-d", "dec-c"]
    assert ids(job_id="job-2") == ["dec-a"]
    assert ids(event_id="evt-1") == ["dec-b", "dec-d", "dec-c"]
    assert ids(workflow="allocation") == ["dec-d"]
    assert ids(subject="SO-2") == ["dec-b"]
    assert ids(status="pending_review", workflow="order_release") == ["dec-a", "dec-c"]
    assert ids(limit=2, offset=1) == ["dec-a", "dec-d"]
    assert ids(subject="nobody") == []


def test_a_newer_proposal_for_the_same_subject_supersedes_the_live_one_linked_both_ways(store: Store) -> None:
    store.save_decision(make_decision("dec-1", subject="SO-7"))
    # Re-sourcing on a tick (workflow allocation) decides the same thing about the order.
    inserted, newer, superseded = store.record_decision(make_decision("dec-2", subject="SO-7", workflow="allocation"))
    assert inserted and newer.supersedes == "dec-1" and [d.id for d in superseded] == ["dec-1"]
    old = store.get_decision("dec-1")
    assert old is not None and (old.status, old.superseded_by) == ("superseded", "dec-2")
    assert [d.id for d in store.list_decisions(status="pending_review")] == ["dec-2"]
    # Another subject, or a redelivery of a known id, supersedes nothing.
    assert store.record_decision(make_decision("dec-3", subject="SO-8"))[2] == []
    assert store.record_decision(make_decision("dec-2", subject="SO-7"))[:1] == (False,)
    assert store.live_decision("order_release:SO-7") is not None


def test_the_database_refuses_two_live_proposals_for_one_subject(store: Store) -> None:
    store.save_decision(make_decision("dec-1", subject="SO-7"))
    row = store._decision_row(make_decision("dec-9", subject="SO-7"), datetime.now(UTC))  # noqa: SLF001
    with pytest.raises(sa.exc.IntegrityError), store._write() as conn:  # noqa: SLF001 - bypasses record_decision
        conn.execute(sa.insert(store.decisions).values(**row))


def test_concurrent_proposals_for_one_subject_leave_exactly_one_live(store: Store) -> None:
    def record(n: int) -> None:
        store.record_decision(make_decision(f"dec-{n}", subject="SO-9"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(record, range(16)))
    live = store.list_decisions(status="pending_review", subject="SO-9")
    assert len(live) == 1
    assert len(store.list_decisions(status="superseded", subject="SO-9")) == 15


def test_a_transition_happens_only_from_an_allowed_status_and_keeps_the_json_in_sync(store: Store) -> None:
    store.save_decision(make_decision("dec-1"))

    assert store.transition("dec-1", to="executed", from_={"observed"}, actor="planner:ann") is None
    moved = store.transition("dec-1", to="failed", from_={"pending_review"}, actor="planner:ann", error="wms timeout")
    assert moved is not None
    assert (moved.status, moved.actor, moved.error) == ("failed", "planner:ann", "wms timeout")

    stored = store.get_decision("dec-1")
    assert stored == moved
    assert store.list_decisions(status="failed")[0].id == "dec-1"
    assert store.list_decisions(status="pending_review") == []
    assert store.transition("dec-1", to="executed", from_={"pending_review"}, actor="planner:bob") is None
    assert store.transition("dec-missing", to="executed", from_={"pending_review"}, actor="x") is None


def test_two_threads_racing_to_approve_the_same_decision_produce_exactly_one_winner(store: Store) -> None:
    def approve(id: str, actor: str, barrier: threading.Barrier, results: dict[str, Decision | None]) -> None:
        barrier.wait()
        results[actor] = store.transition(id, to="executed", from_={"pending_review"}, actor=actor)

    for round_ in range(5):
        store.save_decision(make_decision(f"dec-{round_}"))
        barrier = threading.Barrier(2)
        results: dict[str, Decision | None] = {}
        threads = [
            threading.Thread(target=approve, args=(f"dec-{round_}", actor, barrier, results))
            for actor in ("ann", "bob")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)

        winners = [actor for actor, d in results.items() if d is not None]
        assert len(results) == 2 and len(winners) == 1
        stored = store.get_decision(f"dec-{round_}")
        assert stored is not None and stored.status == "executed" and stored.actor == winners[0]


# ---------------------------------------------------------------------------- action log, policy


def test_an_action_is_recorded_once_per_idempotency_key(store: Store) -> None:
    assert store.action_done("key-1") is False
    assert store.record_action("key-1", "dec-1", "oms.allocate", {"ok": True, "qty": 3}) is True
    assert store.record_action("key-1", "dec-1", "oms.allocate", {"ok": False}) is False
    assert store.action_done("key-1") is True
    assert store.action_done("key-2") is False


def test_the_policy_defaults_when_unset_and_round_trips(store: Store) -> None:
    assert store.get_policy() == Policy()
    policy = Policy(
        review_cost_above=250.0,
        review_confidence_below=0.8,
        modes={"order_release": "autonomous", "allocation": "observe"},
    )
    store.set_policy(policy)
    assert store.get_policy() == policy
    changed = policy.model_copy(update={"receipt_tolerance_pct": 5.0})
    store.set_policy(changed)
    assert store.get_policy() == changed


# ---------------------------------------------------------------------------- audit log


def test_the_audit_chain_links_entries_and_verifies(store: Store) -> None:
    assert store.verify_audit().ok is True
    entries = [
        store.append_audit("decision.recorded", f"SO-{i % 3}", "engine", {"i": i, "note": "é", "x": [1.5]})
        for i in range(7)
    ]
    assert [e.seq for e in entries] == list(range(1, 8))
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in zip(entries, entries[1:], strict=False))
    assert all(e.at.utcoffset() == timedelta(0) for e in entries)

    assert store.audit() == entries
    assert [e.seq for e in store.audit(subject="SO-1")] == [2, 5]
    assert [e.seq for e in store.audit(after_seq=5)] == [6, 7]
    assert [e.seq for e in store.audit(limit=2)] == [1, 2]
    assert store.audit(kind="other") == []
    assert store.verify_audit().model_dump() == {
        "ok": True,
        "entries": 7,
        "first_bad_seq": None,
        "reason": None,
        "sealed_seq": 7,
    }


def test_an_audit_entry_with_a_dedup_key_is_appended_once(store: Store) -> None:
    first = store.append_audit("decision.approved", "dec-1", "ann", {"n": 1}, dedup_key="approve:dec-1")
    again = store.append_audit("decision.approved", "dec-1", "bob", {"n": 2}, dedup_key="approve:dec-1")
    other = store.append_audit("decision.approved", "dec-2", "ann", {"n": 3}, dedup_key="approve:dec-2")
    assert again == first
    assert other.seq == 2
    assert len(store.audit()) == 2 and store.verify_audit().ok


def test_the_database_rejects_updates_and_deletes_on_the_audit_log(store: Store) -> None:
    store.append_audit("k", "s", "a", {"v": 1})
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET payload = :p WHERE seq = 1"), {"p": '{"v":2}'})
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_log"))
    assert store.audit()[0].payload == {"v": 1}
    assert store.verify_audit().ok


def test_tampering_after_dropping_the_trigger_is_detected_at_the_first_bad_seq(store: Store) -> None:
    for i in range(5):
        store.append_audit("k", "s", "a", {"v": i})
    drop_update_trigger(store)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET payload = :p WHERE seq = 3"), {"p": '{"v":99}'})

    result = store.verify_audit()
    assert result.ok is False
    assert result.first_bad_seq == 3
    assert result.entries == 2
    assert result.reason


def test_appends_from_four_threads_form_a_gapless_chain_that_verifies(store: Store) -> None:
    per_thread = 25
    errors: list[BaseException] = []

    def append(tag: str) -> None:
        try:
            for i in range(per_thread):
                store.append_audit("test.append", f"{tag}-{i}", tag, {"i": i})
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(f"t{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert errors == []
    assert [e.seq for e in store.audit(limit=1000)] == list(range(1, 4 * per_thread + 1))
    assert store.verify_audit().model_dump() == {
        "ok": True,
        "entries": 4 * per_thread,
        "first_bad_seq": None,
        "reason": None,
        "sealed_seq": 4 * per_thread,
    }


def test_appends_from_two_processes_form_a_gapless_chain_that_verifies(store_url: str) -> None:
    per_process = 40
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_from_process, args=(store_url, f"p{n}", per_process)) for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]

    s = Store(store_url, sealer=AuditSealer(SEAL_KEY))
    try:
        entries = s.audit(limit=1000)
        assert [e.seq for e in entries] == list(range(1, 2 * per_process + 1))
        assert {e.actor for e in entries} == {"p0", "p1"}
        assert s.verify_audit().ok is True
    finally:
        s.close()


# ---------------------------------------------------------------------------- audit seals
# An attacker with write access to the database (but not the seal key) may drop the triggers,
# rewrite entries with correct hashes, move audit_head, and touch the seals table.


def drop_audit_triggers(store: Store) -> None:
    """What an attacker with database access does first."""
    triggers = {
        "audit_log": ["audit_log_no_update", "audit_log_no_delete"],
        "audit_seals": ["audit_seals_no_update", "audit_seals_no_delete"],
    }
    with store.engine.begin() as conn:
        for table, names in triggers.items():
            for name in names:
                on = f" ON {table}" if store.dialect == "postgresql" else ""
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}{on}")


def rewrite_tail(store: Store, from_seq: int) -> None:
    """Change every entry from ``from_seq`` on, recompute their hashes and move audit_head."""
    entries = store.audit(limit=10_000)
    prev = GENESIS_HASH if from_seq == 1 else entries[from_seq - 2].hash
    with store.engine.begin() as conn:
        for e in entries[from_seq - 1 :]:
            payload = {**e.payload, "qty": 999}
            digest = audit_hash(prev, e.seq, e.at, e.kind, e.subject, e.actor, payload)
            conn.execute(
                sa.text("UPDATE audit_log SET payload = :p, prev_hash = :prev, hash = :h WHERE seq = :s"),
                {"p": canonical_json(payload), "prev": prev, "h": digest, "s": e.seq},
            )
            prev = digest
        conn.execute(
            sa.text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"), {"s": entries[-1].seq, "h": prev}
        )


def cut_tail(store: Store, after_seq: int, *, seals_too: bool = False) -> None:
    """Delete the entries after ``after_seq`` and move audit_head back (and the seals, if asked)."""
    last = store.audit(limit=10_000)[after_seq - 1]
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_log WHERE seq > :s"), {"s": after_seq})
        if seals_too:
            conn.execute(sa.text("DELETE FROM audit_seals WHERE seq > :s"), {"s": after_seq})
        conn.execute(sa.text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"), {"s": last.seq, "h": last.hash})


def chain_is_consistent(store: Store) -> bool:
    """The hash chain alone (what verify checked before seals): each hash matches its entry and link."""
    prev = GENESIS_HASH
    for e in store.audit(limit=10_000):
        if e.prev_hash != prev or audit_hash(prev, e.seq, e.at, e.kind, e.subject, e.actor, e.payload) != e.hash:
            return False
        prev = e.hash
    return True


@pytest.fixture
def sealed_store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    """A store whose seals also go to a seal file, with six entries."""
    s = Store(store_url, sealer=AuditSealer(SEAL_KEY, file=tmp_path / "seals" / "audit.seals"))
    s.create_schema()
    for i in range(6):
        s.append_audit("action.executed", f"SO-{i}", "engine", {"i": i, "qty": i + 1})
    yield s
    s.close()


def test_every_append_is_sealed_in_the_table_and_the_seal_file(sealed_store: Store) -> None:
    result = sealed_store.verify_audit()
    assert (result.ok, result.entries, result.sealed_seq) == (True, 6, 6)
    with sealed_store.engine.connect() as conn:
        seals = conn.execute(sa.text("SELECT seq, hash, mac, key_id FROM audit_seals ORDER BY seq")).all()
    hashes = [e.hash for e in sealed_store.audit()]
    sealer = sealed_store.sealer
    assert [(s.seq, s.hash) for s in seals] == list(enumerate(hashes, start=1))
    assert all(sealer.problem(s.seq, s.hash, s.mac, s.key_id) is None for s in seals)
    assert sealer.file is not None
    lines = [json.loads(line) for line in sealer.file.read_text().splitlines()]
    assert [(x["seq"], x["hash"], x["mac"]) for x in lines] == [(s.seq, s.hash, s.mac) for s in seals]
    assert sealer.file.stat().st_mode & 0o777 == 0o600


def test_a_rewritten_tail_with_recomputed_hashes_and_head_fails_at_the_first_rewritten_seq(
    sealed_store: Store,
) -> None:
    drop_audit_triggers(sealed_store)
    rewrite_tail(sealed_store, 4)
    assert chain_is_consistent(sealed_store)  # the hash chain alone no longer shows it
    result = sealed_store.verify_audit()
    assert (result.ok, result.first_bad_seq, result.entries, result.sealed_seq) == (False, 4, 3, 3)
    assert result.reason is not None and "does not match its seal" in result.reason


def test_a_truncated_tail_fails_after_the_last_entry_left(sealed_store: Store) -> None:
    drop_audit_triggers(sealed_store)
    cut_tail(sealed_store, 3)
    result = sealed_store.verify_audit()
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 4, 3)
    assert result.reason is not None and "entries were removed" in result.reason


def test_seals_the_attacker_changed_fail_their_mac(sealed_store: Store) -> None:
    drop_audit_triggers(sealed_store)
    rewrite_tail(sealed_store, 5)
    new_hashes = {e.seq: e.hash for e in sealed_store.audit()}
    with sealed_store.engine.begin() as conn:  # the seals now name the new hashes, with the old MACs
        for seq in (5, 6):
            conn.execute(sa.text("UPDATE audit_seals SET hash = :h WHERE seq = :s"), {"h": new_hashes[seq], "s": seq})
    result = sealed_store.verify_audit()
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert result.reason is not None and "bad MAC" in result.reason

    other = AuditSealer(b"another-key-that-is-not-the-real-one")
    seal = other.seal(5, new_hashes[5], datetime.now(UTC))
    with sealed_store.engine.begin() as conn:  # sealed with a key of the attacker's own
        conn.execute(
            sa.text("UPDATE audit_seals SET mac = :m, key_id = :k WHERE seq = 5"), {"m": seal.mac, "k": seal.key_id}
        )
    result = sealed_store.verify_audit()
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert result.reason is not None and "another key" in result.reason


def test_removing_the_seals_of_a_rewritten_tail_leaves_it_unsealed(sealed_store: Store) -> None:
    drop_audit_triggers(sealed_store)
    rewrite_tail(sealed_store, 4)
    with sealed_store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_seals WHERE seq >= 4"))
    result = sealed_store.verify_audit()
    assert (result.ok, result.first_bad_seq, result.sealed_seq) == (False, 4, 3)
    assert result.reason is not None and "not sealed" in result.reason


def test_the_seal_file_catches_a_rewrite_that_left_the_database_consistent(sealed_store: Store, store_url: str) -> None:
    # Cut the chain and its seals back to 3, then let the service append again: every row in the
    # database is genuine and sealed with the real key; only the seal file remembers entries 4-6.
    drop_audit_triggers(sealed_store)
    cut_tail(sealed_store, 3, seals_too=True)
    for i in range(3):
        sealed_store.append_audit("action.executed", f"SO-{i}", "engine", {"i": i, "qty": 0})

    without_file = Store(store_url, sealer=AuditSealer(SEAL_KEY))
    try:
        assert without_file.verify_audit().ok  # the database alone cannot tell
    finally:
        without_file.close()
    result = sealed_store.verify_audit()
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 4, 6)
    assert result.reason is not None and result.reason.startswith("seal file: entry 4 does not match its seal")


def test_the_seal_file_catches_a_cut_that_also_removed_the_seals(sealed_store: Store) -> None:
    drop_audit_triggers(sealed_store)
    cut_tail(sealed_store, 2, seals_too=True)
    result = sealed_store.verify_audit()
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert result.reason is not None and "sealed but is not in the chain" in result.reason


def test_the_seal_file_skips_a_torn_last_line_and_rejects_a_bad_one(sealed_store: Store) -> None:
    seal_file = sealed_store.sealer.file
    assert seal_file is not None
    with seal_file.open("ab") as fh:
        fh.write(b'{"seq": 7, "hash": "ab')  # a crash in the middle of a write
    assert sealed_store.verify_audit().ok
    seal_file.write_text(seal_file.read_text().replace("\n", "\nnot a seal\n", 1))
    result = sealed_store.verify_audit()
    assert result.ok is False and result.reason is not None and result.reason.startswith("seal file line 2")


def test_sealing_adds_one_write_per_append(store: Store) -> None:
    store.append_audit("k", "s", "a", {"v": 0})
    writes: list[str] = []

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            writes.append(statement)

    for i in range(5):
        store.append_audit("k", "s", "a", {"v": i})
    sa.event.remove(store.engine, "before_cursor_execute", count)
    # Per append: the entry, the head, and the seal (the one extra write).
    assert len(writes) == 15
    assert sum("audit_seals" in w for w in writes) == 5


def test_verifying_while_appends_go_on_never_reports_tampering(store_url: str, tmp_path: Path) -> None:
    s = Store(store_url, sealer=AuditSealer(SEAL_KEY, file=tmp_path / "audit.seals"))
    s.create_schema()
    for i in range(20):
        s.append_audit("k", "s", "a", {"i": i})
    done = threading.Event()

    def append() -> None:
        for i in range(150):
            s.append_audit("k", "s", "a", {"i": i})
        done.set()

    writer = threading.Thread(target=append)
    writer.start()
    results = []
    try:
        while not done.is_set():
            results.append(s.verify_audit())
    finally:
        writer.join(60)
    results.append(s.verify_audit())
    assert [r.reason for r in results if not r.ok] == []
    assert len(results) > 1 and results[-1].entries == 170
    s.close()
