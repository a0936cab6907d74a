"""Throughput with a model on (issue 18.5): a burst of orders through the real stack in LLM mode.

``python -m bench.llm_burst [--orders 100] [--notes 10] [--workers 2] [--budget 1500] [--json PATH]``

The engines decide, record and execute an order under the SKU locks; the agent's judgement is a
job of its own on the background lane (``runtime/pipeline.py``, ``runtime/queue.py``), taken by a
background worker as ``serve`` runs one. So a slow or failing model must not delay the engines'
decisions. This bench shows it: it starts the local model server the way ``make test-llm``
does (``tests/llm/conftest.py``: ``scripts/llm_server.sh``, adopted by ``runtime.processes.OWNER``),
a real stack (``tests/integration/conftest.py``'s ``make_stack``: HTTP intake, Redis from
``REDIS_URL`` else an embedded one, a SQLite store, the twin on ``twin/scenarios/example.json``)
with ``--workers`` decisions-lane worker threads and one background-lane thread, posts a burst of
orders (every ``orders/notes``-th one with a free-text note, so the agent judge is asked) as fast
as intake takes them, and measures:

- per order, accepted → the engine's decision recorded (p50/p95/max), and that every order has one;
- engine decisions/s over the burst (first accepted → last engine decision);
- the agent judgements: how many, accepted → judgement recorded (p50/p95), validated / rejected /
  of which fallbacks (``agent.fallback`` audited);
- the same burst in deterministic mode (no model), in the same run, as the floor.

It prints a table and writes it as JSON (``--json``, default ``.cache/llm_burst.json``). The model
server, the stack and the embedded Redis are stopped at the end, on an error and on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from runtime.processes import exit_on_signals
from runtime.queue import BACKGROUND, DECISIONS
from runtime.worker import Worker
from tests import services
from tests.integration.conftest import Stack, close_stack, make_stack, order_event
from tests.llm import conftest as llm
from twin.scenarios import EXAMPLE

NOTE = "Deliver between 9 and 11 please, dock door 3; call ahead."
SKUS = ("SKU-100", "SKU-301")  # small quantities: most orders release, the last of SKU-301 wait


def _fixture(fn: Any) -> Any:
    """The plain function behind a pytest fixture (the test-llm helpers, reused as they are)."""
    return getattr(fn, "__wrapped__", None) or fn._get_wrapped_function()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@contextmanager
def model_server() -> Iterator[str]:
    """The local model's base URL: ``tests/llm/conftest.py``'s session fixture (or the server that
    ``CROSSDOCK_TEST_LLM_BASE_URL`` names); stopped when the block ends."""
    gen = _fixture(llm.llm_url)()
    url = next(gen)
    try:
        yield url
    finally:
        gen.close()


def burst(redis_url: str, mode: str, orders: int, notes: int, workers: int, budget_s: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"crossdock-llm-burst-{mode}-"))
    stack: Stack = make_stack(tmp, redis_url, json.loads(EXAMPLE.read_text()), claim_idle_ms=900_000)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        pipeline = stack.container.pipeline
        assert (pipeline.judge is not None) == (mode == "llm"), f"{mode} mode: judge is {pipeline.judge!r}"
        c = stack.container
        lanes = [(DECISIONS,)] * workers + [(BACKGROUND,)]
        for n, lane in enumerate(lanes):
            w = Worker(c.queue, pipeline.handle, c.settings, name=f"burst-{mode}-{lane[0]}-{n}", lanes=lane)
            t = threading.Thread(target=w.run, args=(stop,), daemon=True)
            t.start()
            threads.append(t)
        every = max(1, orders // notes) if notes else 0
        jobs: dict[str, str] = {}  # order id -> job id
        noted: set[str] = set()
        started = time.time()
        for i in range(orders):
            oid = f"SO-B{i:04d}"
            extra: dict[str, Any] = {"note": NOTE} if every and i % every == 0 and len(noted) < notes else {}
            if extra:
                noted.add(oid)
            resp = stack.publish(order_event(oid, [(SKUS[i % len(SKUS)], 1)], event_id=f"evt-{oid}", **extra))
            assert resp.status_code == 202, resp.text
            body = resp.json()
            jobs[oid] = body["job_id"] if isinstance(body, dict) else body[0]["job_id"]
        posted = time.time() - started
        # Wait until every job is finished (the engine's decision and, with a note, the agent's).
        deadline = time.monotonic() + budget_s
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            for oid, job_id in jobs.items():
                if status.get(oid) not in ("done", "failed", "dead"):
                    got = stack.client.get(f"/v1/jobs/{job_id}", headers=stack.headers("planner")).json()
                    status[oid] = str(got.get("status"))
            # ... and the agent judgements they asked for (background jobs) are finished too.
            if all(s in ("done", "failed", "dead") for s in status.values()) and c.queue.idle():
                break
            time.sleep(1.0)
        waited = time.time() - started
        return measure(stack, mode, jobs, noted, status, posted, waited, workers)
    finally:
        stop.set()
        for t in threads:
            t.join(200)  # a worker inside a model call finishes it (bounded by the agent's time limit)
        close_stack(stack)
        shutil.rmtree(tmp, ignore_errors=True)


def measure(
    stack: Stack,
    mode: str,
    jobs: dict[str, str],
    noted: set[str],
    status: dict[str, str],
    posted_s: float,
    waited_s: float,
    workers: int,
) -> dict[str, Any]:
    store = stack.container.store
    decisions = store.list_decisions(limit=1_000_000)
    by_job: dict[str, list[Any]] = {}
    for d in decisions:
        by_job.setdefault(d.job_id or "", []).append(d)

    def audited(kind: str) -> set[str]:  # the orders (by subject or event) an audit kind names
        out: set[str] = set()
        for e in store.audit(kind=kind, limit=100_000):
            out.add(e.subject)
            out.add(str((e.payload or {}).get("event_id", "")).removeprefix("evt-"))
        return out

    fallback_orders, bound_orders = audited("agent.fallback"), audited("agent.bound_exceeded")
    reasons: dict[str, int] = {}
    engine_lat: list[float] = []
    engine_done: list[float] = []
    first_accepted = None
    missing: list[str] = []
    agent_lat: list[float] = []
    validated = rejected = fallback = bound = no_record = 0
    for oid, job_id in jobs.items():
        ds = by_job.get(job_id, [])
        engine = [d for d in ds if not d.actor.startswith("agent:")]
        agent = [d for d in ds if d.actor.startswith("agent:")]
        if not engine:
            missing.append(f"{oid} (job {job_id}, status {status.get(oid)})")
        else:
            first = min(engine, key=lambda d: d.decided_at or d.created_at)
            at = (first.decided_at or first.created_at).timestamp()
            acc = first.accepted_at.timestamp() if first.accepted_at else at
            engine_lat.append(at - acc)
            engine_done.append(at)
            first_accepted = acc if first_accepted is None else min(first_accepted, acc)
        if oid in noted:
            if not agent:
                no_record += 1
                continue
            last = max((d.created_at or d.decided_at) for d in agent).timestamp()
            acc = (engine[0].accepted_at.timestamp() if engine and engine[0].accepted_at else None) or last
            agent_lat.append(last - acc)
            if any(d.status != "rejected" for d in agent):
                validated += 1
            else:
                rejected += 1
                fallback += oid in fallback_orders
                bound += oid in bound_orders
                for d in agent:
                    why = (d.error or d.rationale or "?")[:80]
                    reasons[why] = reasons.get(why, 0) + 1
    span = (max(engine_done) - first_accepted) if engine_done and first_accepted is not None else None
    statuses: dict[str, int] = {}
    for s in status.values():
        statuses[s] = statuses.get(s, 0) + 1
    return {
        "mode": mode,
        "workers": workers,
        "orders": len(jobs),
        "posted_s": round(posted_s, 2),
        "waited_s": round(waited_s, 1),
        "jobs": statuses,
        "engine_decided": len(engine_lat),
        "engine_missing": missing,
        "engine_p50_s": _r(pct(engine_lat, 50)),
        "engine_p95_s": _r(pct(engine_lat, 95)),
        "engine_max_s": _r(max(engine_lat) if engine_lat else None),
        "decisions_per_s": round(len(engine_lat) / span, 1) if span else None,
        "engine_span_s": _r(span),
        "notes": len(noted),
        "judgements": len(agent_lat),
        "judgement_p50_s": _r(pct(agent_lat, 50)),
        "judgement_p95_s": _r(pct(agent_lat, 95)),
        "validated": validated,
        "rejected": rejected,
        "fallback": fallback,
        "bound_exceeded": bound,
        "rejected_because": reasons,
        "no_judgement_record": no_record,
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


COLUMNS = [
    ("mode", "mode"),
    ("orders", "orders"),
    ("notes", "notes"),
    ("engine decided", "engine_decided"),
    ("engine p50 s", "engine_p50_s"),
    ("engine p95 s", "engine_p95_s"),
    ("engine max s", "engine_max_s"),
    ("decisions/s", "decisions_per_s"),
    ("judgements", "judgements"),
    ("judgement p50 s", "judgement_p50_s"),
    ("judgement p95 s", "judgement_p95_s"),
    ("validated", "validated"),
    ("rejected", "rejected"),
    ("of which fallback", "fallback"),
    ("of which bound hit", "bound_exceeded"),
    ("burst done in s", "waited_s"),
]


def table(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(k)) for _, k in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.llm_burst", description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=100)
    ap.add_argument("--notes", type=int, default=10, help="orders carrying a free-text note (the agent is asked)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--budget", type=float, default=1500.0, help="seconds to wait for the LLM burst's jobs")
    ap.add_argument("--json", type=Path, default=llm.REPO / ".cache" / "llm_burst.json")
    args = ap.parse_args(argv)
    exit_on_signals()
    t0 = time.monotonic()
    rows: list[dict[str, Any]] = []
    try:
        redis_url = services.redis_url()
        # The floor: the same burst with no model (deterministic mode: no CROSSDOCK_LLM_MODEL).
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("CROSSDOCK_LLM_MODEL", raising=False)
            mp.delenv("CROSSDOCK_LLM_MODELS", raising=False)
            rows.append(burst(redis_url, "deterministic", args.orders, args.notes, args.workers, 300.0))
        print(table(rows), flush=True)
        with model_server() as url, pytest.MonkeyPatch.context() as mp:
            print(f"model server on {url}", flush=True)
            env = _fixture(llm.llm_env)(url, mp)  # the test-llm settings: model, context, bounds, token ratio
            rows.append(burst(redis_url, "llm", args.orders, args.notes, args.workers, args.budget))
            rows[-1]["model"] = env["CROSSDOCK_LLM_MODEL"]
            rows[-1]["settings"] = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
    finally:
        services.stop()
    elapsed = time.monotonic() - t0
    print(table(rows))
    for row in rows:
        if row["engine_missing"]:
            print(f"{row['mode']}: orders without an engine decision: {row['engine_missing']}", file=sys.stderr)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "elapsed_s": round(elapsed, 1), "table": table(rows)}, indent=2))
    print(f"wrote {args.json} ({elapsed:.0f} s)")
    return 1 if any(row["engine_missing"] for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
