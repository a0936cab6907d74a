"""Write-path benchmark: order decisions/s through the store, one transaction per write vs batched.

Each decision is the store's share of one autonomous order release of four actions, as the
pipeline writes it: the ``event.accepted`` audit entry, the decision and its ``decision.recorded``
entry, four action-log rows with their ``action.executed`` entries, the final transition and the
``decision.executed`` entry (thirteen writes, twelve rows appended to the sealed chain counting
the seals). ``one_per_write`` gives every write its own transaction (the path before
``Store.batch``); ``batched`` groups them into the pipeline's two transactions (the event, the
decision and its entry in one; the execution's log, transition and entries in another), though it
still writes row by row where the pipeline now writes an execution's action log and its audit
entries in one statement each (``Store.record_actions``, ``Store.append_audits``). Both run in
the same process on the same database, with ``threads`` writers at once (workers share the chain's
head). No connector is called: this is the store's cost alone.

SQLite is a temporary file; PostgreSQL (``--database-url``) gets a temporary database, dropped
afterwards.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from domain.decisions import Action, Decision
from runtime.audit_seal import AuditSealer
from runtime.store import Store, normalise_url

MODES = ("one_per_write", "batched")
_KEY = b"bench-writes-seal-key-0123456789"


def _decision(tag: str) -> Decision:
    actions = [
        Action(system="oms", type="allocate", payload={"order_id": tag, "line": 1, "node": "DC-EAST", "qty": 1.0}),
        Action(system="oms", type="allocate", payload={"order_id": tag, "line": 2, "node": "DC-EAST", "qty": 2.0}),
        Action(system="wms", type="create_wave", payload={"waveId": f"W-{tag}", "orders": [tag]}),
        Action(system="oms", type="update_order_status", payload={"order_id": tag, "status": "released"}),
    ]
    keyed = [a.model_copy(update={"idempotency_key": f"dec-{tag}-{i}"}) for i, a in enumerate(actions)]
    return Decision(
        id=f"dec-{tag}",
        event_id=f"evt-{tag}",
        job_id=f"job-{tag}",
        workflow="order_release",
        subject=tag,
        outcome="released",
        confidence=0.95,
        cost_impact=12.0,
        human_review_required=False,
        status="executing",
        rationale="bench",
        evidence={"governance": "autonomous"},
        actions=keyed,
        engine_version="bench",
        actor="crossdock-engine",
        created_at=datetime.now(UTC),
        decided_at=datetime.now(UTC),
    )


def one_decision(store: Store, tag: str, batched: bool) -> None:
    """The store's writes of one autonomous order release (see the module docstring)."""
    decision = _decision(tag)
    accepted = {"event_id": decision.event_id, "source": "oms/bench", "type": "oms.order.created"}

    @contextmanager
    def unit() -> Iterator[None]:
        if batched:
            with store.batch():
                yield
        else:
            yield

    with unit():
        store.append_audit("event.accepted", tag, "source:oms/bench", accepted, dedup_key=f"event:{tag}")
        store.record_decision(decision)
        store.append_audit(
            "decision.recorded", tag, decision.actor, {"decision": decision.id}, dedup_key=f"decision:{decision.id}"
        )
    with unit():
        for action in decision.actions:
            store.record_action(action.idempotency_key, decision.id, action.name, {"ok": True})
            store.append_audit(
                "action.executed",
                tag,
                decision.actor,
                {"decision": decision.id, "action": action.name, "idempotency_key": action.idempotency_key},
                dedup_key=f"action:{action.idempotency_key}",
            )
        store.transition(decision.id, to="executed", from_={"executing"}, actor=decision.actor)
        store.append_audit(
            "decision.executed", tag, decision.actor, {"decision": decision.id}, dedup_key=f"executed:{decision.id}"
        )


def _measure(store: Store, mode: str, decisions: int, threads: int) -> dict[str, Any]:
    commits = [0]

    def on_commit(_conn: Any) -> None:
        commits[0] += 1

    run = uuid.uuid4().hex[:8]
    per = max(1, decisions // threads)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(per):
                one_decision(store, f"SO-{mode}-{run}-{n}-{i}", batched=mode == "batched")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    sa.event.listen(store._write_engine, "commit", on_commit)
    try:
        t0 = time.perf_counter()
        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t0
    finally:
        sa.event.remove(store._write_engine, "commit", on_commit)
    if errors:
        raise errors[0]
    done = per * threads
    return {
        "decisions": done,
        "decisions_per_s": round(done / elapsed, 1),
        "ms_per_decision": round(1000 * elapsed / done, 2),
        "transactions_per_decision": round(commits[0] / done, 2),
    }


class BenchWritesError(RuntimeError):
    """The benchmark cannot run (the message says why, in one line)."""


@contextmanager
def _temporary_pg(url: str) -> Iterator[str]:
    admin_url = normalise_url(url)
    if not admin_url.startswith("postgresql+psycopg://"):
        raise BenchWritesError(f"--database-url must be a postgresql:// URL, not {url!r}")
    name = f"crossdock_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.SQLAlchemyError as exc:
        admin.dispose()
        reason = str(exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc).strip().splitlines()[0]
        raise BenchWritesError(f"cannot create a temporary database at {admin.url!r}: {reason}") from None
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _backend(name: str, url: str, decisions: int, threads: int, seals: Path) -> dict[str, Any]:
    """``{"<name> <mode>": {...}, "<name> speedup": x, "<name> audit chain": "ok, n entries"}``."""
    store = Store(url, sealer=AuditSealer(_KEY, file=seals))
    store.create_schema()
    try:
        out: dict[str, Any] = {}
        for mode in MODES:
            out[f"{name} {mode}"] = _measure(store, mode, decisions, threads)
        rates = [out[f"{name} {mode}"]["decisions_per_s"] for mode in MODES]
        out[f"{name} speedup"] = round(rates[1] / rates[0], 2)
        verified = store.verify_audit()
        out[f"{name} audit chain"] = f"ok, {verified.entries} entries" if verified.ok else f"BAD: {verified.reason}"
        return out
    finally:
        store.close()


def run_writes_bench(
    decisions: int = 300,
    threads: int = 4,
    database_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Decisions/s through the store, per backend and mode; PostgreSQL only with ``database_url``."""
    result: dict[str, Any] = {"threads": threads}
    with tempfile.TemporaryDirectory(prefix="crossdock-bench-writes-") as tmp:
        if progress:
            progress("sqlite")
        result |= _backend("sqlite", f"sqlite:///{Path(tmp) / 'store.db'}", decisions, threads, Path(tmp) / "s1")
        if database_url:
            if progress:
                progress("postgresql")
            with _temporary_pg(database_url) as url:
                result |= _backend("postgresql", url, decisions, threads, Path(tmp) / "s2")
    return result
