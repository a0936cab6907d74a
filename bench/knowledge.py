"""Knowledge-base benchmark: hybrid retrieval (dense + BM25, RRF) against BM25-only and dense-only.

Measured in one run, on this machine, with the real embedder (all-MiniLM-L6-v2 int8 ONNX):

* **Hit rate** — share of the labelled queries in ``knowledge/eval/queries.yaml`` whose SOP is in
  the top 3 (and MRR over the top 3): over the SOPs alone, then at each corpus size with the SOPs
  among filler history chunks, unfiltered and with ``doc_type="sop"`` (``*_filtered``). Over the
  SOPs alone also for the staff-style sets: ``staff_queries.yaml`` (held out: questions as floor
  staff and service reps ask them, never tuned on) and ``tuning_queries.yaml`` (what the SOPs'
  ``keywords`` were written against).
* **Retrieval latency** — p50/p95 of end-to-end ``KnowledgeBase.search`` calls (k=5, query
  embedding included) at each corpus size (default 1k and 20k chunks), unfiltered (``rounds``
  passes over the queries) and with the ``doc_type`` payload filter (one pass).
* **Embedding throughput** — chunks per second for the SOP chunks, embedded in batches.
* **History sync** — ``knowledge.history.HistorySync`` over a SQLite decision store: the first
  pass over ``history_decisions`` settled decisions (decisions/s), then an incremental pass after
  ``history_new`` more settle, beside the naive alternative of re-ingesting every decision.

The corpus is the shipped SOPs plus synthetic filler: history-like chunks about random orders,
SKUs and nodes, written from templates in the warehouse's own vocabulary so they compete with the
SOPs for both BM25 and dense scores. Embedding 20k filler chunks would take minutes, so only
``filler_embedded`` of them are embedded with the model; each other filler chunk takes the
vector of an embedded chunk of the same template plus small Gaussian noise (renormalised). Its
sparse vector is always computed from its own text. The baseline is BM25-only (the stronger of
the two single retrievers here); dense-only is reported beside it.
"""

from __future__ import annotations

import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.report import percentile
from knowledge.base import ENGINES, KnowledgeBase, SearchMode, default_engine, silence_local_mode_size_warning
from knowledge.documents import SOP_DIR, Chunk, chunk_document, load_documents
from knowledge.embedder import Embedder, default_embedder

QUERIES = Path(__file__).resolve().parent.parent / "knowledge" / "eval" / "queries.yaml"
# Staff-style questions: held out (measured only) and the set the SOPs' keywords were tuned on.
STAFF_QUERIES = QUERIES.with_name("staff_queries.yaml")
TUNING_QUERIES = QUERIES.with_name("tuning_queries.yaml")
TOP = 3

_NODES = ["DC-EAST", "DC-WEST", "DC-NORTH", "STORE-12", "STORE-31", "DC-SOUTH"]
_CARRIERS = ["UPS", "FEDX_GROUND", "USPS", "DHL", "LOCAL"]
_TEAMS = ["planning", "receiving", "customer_service", "finance"]
_TEMPLATES = [
    "allocation decision on {order}: reallocated line {line} of {sku} from {node} to {node2} (executed, by engine). "
    "{node} had {a} available against {b} ordered; {node2} met the {carrier} cutoff at lane cost {cost}.",
    "order release decision on {order}: released to wave W-{n} at {node}, score {score}, carrier {carrier}, "
    "ship-by in {h} hours. Fully allocated, no holds.",
    "order release decision on {order}: held, {reason}. Customer tier {tier}, service {service}; "
    "ticket to {team} with priority {prio}.",
    "reconciliation decision on PO-{po} line {line}: {sku} ordered {b}, received good {a} at {node}; "
    "{rclass}. Ticket to {team}.",
    "discrepancy decision on {sku}@{node}: WMS on hand {a}, ERP book {b}, {f} in flight; booked the ERP "
    "to the WMS quantity (executed, by {actor}).",
    "exception triage decision on task T-{n} at {node}: {preason} for {sku} on {order}; play {play}, "
    "confidence 0.{conf} (reviewed by {actor}).",
    "backorder prevention decision on {sku}@{node}: projected stock {a} against demand {b} over {h} days; "
    "proposed transfer of {f} from {node2} arriving in {d} days.",
    "customer service answer for {order}: shipped from {node} with {carrier}, tracking {track}; promised "
    "date kept. Customer asked about {topic}.",
    "Shift note {node} zone {zone}: {n} lines picked, {a} short picks, {f} locations flagged for count, "
    "dock {d} congested until {h}:00, {carrier} collection late by {b} minutes.",
    "Supplier scorecard SUP-{po}: on-time ASN share {score} %, {a} lot mismatches and {f} damaged cartons "
    "this quarter; lead time {h} days; expedite requests {d}.",
]
_REASONS = ["credit hold on the account", "payment declined", "address not verified", "waiting for stock"]
_RCLASS = [
    "short shipment, rest backordered",
    "over shipment, excess returned",
    "auto-closed within tolerance",
    "lot mismatch, lot corrected",
    "damaged units, debit note raised",
    "duplicate receipt reversed",
]
_PREASON = ["short pick", "damaged goods", "location locked", "item not found"]
_PLAYS = ["repick", "reallocate", "substitute", "backorder", "escalate"]
_TOPICS = ["delivery date", "a missing item", "an invoice copy", "changing the address", "a return label"]


def load_queries(path: Path = QUERIES) -> list[dict[str, str]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [
        {"q": str(q["q"]), "expect": str(q["expect"]), "section": str(q.get("section", ""))} for q in data["queries"]
    ]


def filler_chunks(count: int, seed: int) -> list[tuple[int, Chunk]]:
    """``count`` synthetic history chunks: (template index, chunk)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        t = rng.randrange(len(_TEMPLATES))
        node, node2 = rng.sample(_NODES, 2)
        text = _TEMPLATES[t].format(
            order=f"ORD-{rng.randrange(10**6):06d}",
            line=rng.randint(1, 12),
            sku=f"SKU-{rng.randrange(5000):04d}",
            node=node,
            node2=node2,
            carrier=rng.choice(_CARRIERS),
            a=rng.randint(0, 400),
            b=rng.randint(1, 400),
            f=rng.randint(0, 60),
            n=rng.randint(1, 9999),
            h=rng.randint(1, 23),
            d=rng.randint(1, 9),
            cost=round(rng.uniform(2, 90), 2),
            score=rng.randint(10, 99),
            reason=rng.choice(_REASONS),
            tier=rng.choice(["gold", "silver", "bronze"]),
            service=rng.choice(["express", "standard", "economy"]),
            team=rng.choice(_TEAMS),
            prio=rng.choice(["high", "normal", "low"]),
            po=rng.randrange(10**5),
            rclass=rng.choice(_RCLASS),
            actor=rng.choice(["engine", "planner:ana", "planner:joe", "lead:kim"]),
            preason=rng.choice(_PREASON),
            play=rng.choice(_PLAYS),
            conf=rng.randint(50, 99),
            track=f"1Z{rng.randrange(10**9):09d}",
            topic=rng.choice(_TOPICS),
            zone=rng.choice("ABCS"),
        )
        cid = f"filler:{seed}:{i}"
        payload = {"doc_type": "history", "doc_id": cid, "title": "", "section": "", "workflow": "exception_triage"}
        out.append((t, Chunk(cid, cid, "", "", "", text, payload)))
    return out


def _filler_vectors(
    fillers: list[tuple[int, Chunk]], embedder: Embedder, embedded: int, seed: int, noise: float = 0.02
) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    n = min(embedded, len(fillers))
    real = embedder.embed([c.embed_text for _, c in fillers[:n]]) if n else []
    by_template: dict[int, list[int]] = {}
    for i in range(n):
        by_template.setdefault(fillers[i][0], []).append(i)
    vectors = list(real)
    for t, _ in fillers[n:]:
        pool = by_template.get(t) or list(range(n))
        if not pool:
            v = rng.normal(size=embedder.dim)
        else:
            v = np.asarray(real[pool[int(rng.integers(len(pool)))]]) + rng.normal(scale=noise, size=embedder.dim)
        vectors.append((v / np.linalg.norm(v)).tolist())
    return vectors


def _run_queries(
    kb: KnowledgeBase, queries: list[dict[str, str]], mode: SearchMode, rounds: int, doc_type: str | None = None
) -> dict[str, float]:
    """Latency p50/p95 of every call (k=5), and hit rate / MRR of the top 3 from the first round."""
    times: list[float] = []
    hits = 0
    reciprocal = 0.0
    for r in range(rounds):
        for q in queries:
            t0 = time.perf_counter()
            found = kb.search(q["q"], k=5, doc_type=doc_type, mode=mode)
            times.append((time.perf_counter() - t0) * 1000)
            ids = [h.doc_id for h in found[:TOP]]
            if r == 0 and q["expect"] in ids:
                hits += 1
                reciprocal += 1 / (ids.index(q["expect"]) + 1)
    return {
        "p50_ms": round(percentile(times, 50), 2),
        "p95_ms": round(percentile(times, 95), 2),
        "hit_rate_top3": round(hits / len(queries), 4),
        "mrr_top3": round(reciprocal / len(queries), 4),
    }


class _DictKV:
    """The watermark store for the bench (Redis in the product)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, name: str) -> Any:
        return self.data.get(name)

    def set(self, name: str, value: str) -> Any:
        self.data[name] = value


def _bench_decision(n: int, seed: int) -> Any:
    from domain.decisions import Decision

    rng = random.Random(seed * 100_003 + n)
    _, chunk = filler_chunks(1, seed * 7919 + n)[0]
    return Decision.model_validate(
        {
            "id": f"dec-bench-{n:06d}",
            "event_id": f"evt-{n}",
            "workflow": rng.choice(["order_release", "exception_triage", "discrepancy", "reconciliation"]),
            "subject": f"SKU-{rng.randint(1, 500):04d}@{rng.choice(_NODES)}",
            "outcome": rng.choice(["released", "held", "adjust", "count", "ticket"]),
            "status": rng.choice(["executed", "executed", "executed", "rejected", "failed"]),
            "confidence": round(rng.uniform(0.5, 1.0), 2),
            "cost_impact": 0.0,
            "human_review_required": False,
            "rationale": chunk.text,
            "evidence": {"engine": "bench"},
            "actions": [],
            "actor": "crossdock-engine",
        }
    )


def run_history_sync_bench(decisions: int, new: int, emb: Embedder, seed: int = 7) -> dict[str, Any]:
    """Time the history sync: a first pass, an incremental pass, and a full re-ingest (the baseline)."""
    from knowledge.history import HistorySync
    from runtime.store import Store

    with tempfile.TemporaryDirectory(prefix="kb-history-bench-") as tmp:
        store = Store(f"sqlite:///{tmp}/store.db")
        store.create_schema()
        kb = KnowledgeBase(":memory:", embedder=emb, collection="bench_history")
        try:
            for n in range(decisions):
                store.save_decision(_bench_decision(n, seed))
            sync = HistorySync(kb, store, _DictKV(), "bench", lag_s=0)
            t0 = time.perf_counter()
            first = sync.run_once()
            first_s = time.perf_counter() - t0
            for n in range(decisions, decisions + new):
                store.save_decision(_bench_decision(n, seed))
            t0 = time.perf_counter()
            incremental = sync.run_once()
            incremental_s = time.perf_counter() - t0
            everything = [d for d, _ in store.decisions_updated_since(None, ("executed", "failed", "rejected"), 10**9)]
            t0 = time.perf_counter()
            kb.ingest_decisions(everything)
            full_s = time.perf_counter() - t0
        finally:
            kb.close()
            store.close()
    return {
        "decisions_in_store": decisions + new,
        "settled_first_pass": first,
        "first_pass_s": round(first_s, 2),
        "first_pass_decisions_per_s": round(first / first_s, 1) if first_s else 0.0,
        "new_settled": incremental,
        "incremental_pass_ms": round(incremental_s * 1000, 1),
        "baseline_full_reingest_ms": round(full_s * 1000, 1),
    }


def run_knowledge_bench(
    sizes: tuple[int, ...] = (1000, 20000),
    rounds: int = 2,
    filler_embedded: int = 512,
    seed: int = 7,
    path: str | Path | None = None,
    embedder: Embedder | None = None,
    max_queries: int | None = None,
    history_decisions: int = 2000,
    history_new: int = 20,
) -> dict[str, Any]:
    """Measure hit rate, latency and embedding throughput; see the module docstring.

    ``path`` may be a local directory or a Qdrant server URL (default: local, in memory);
    ``max_queries`` trims the labelled set (for a quick smoke run).
    """
    silence_local_mode_size_warning()
    emb = embedder if embedder is not None else default_embedder()
    queries = load_queries()[:max_queries]
    staff = load_queries(STAFF_QUERIES)[:max_queries]
    tuning = load_queries(TUNING_QUERIES)[:max_queries]
    sop_chunks = [c for d in load_documents(SOP_DIR) for c in chunk_document(d)]

    emb.embed([c.embed_text for c in sop_chunks[:8]])  # warm-up: the first run allocates
    t0 = time.perf_counter()
    emb.embed([c.embed_text for c in sop_chunks])
    embed_s = time.perf_counter() - t0
    single = []
    for q in queries:
        t1 = time.perf_counter()
        emb.embed([q["q"]])
        single.append((time.perf_counter() - t1) * 1000)

    modes: dict[str, SearchMode] = {"baseline": "sparse", "crossdock": "hybrid", "dense_only": "dense"}
    result: dict[str, Any] = {name: {"mode": mode} for name, mode in modes.items()}
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as tmp:
        # The SOPs go once into an on-disk local collection (the default set-up) to time ingestion.
        disk = KnowledgeBase(tmp, embedder=emb, collection="bench_knowledge")
        t0 = time.perf_counter()
        disk.ingest_path(SOP_DIR)
        ingest_s = time.perf_counter() - t0
        disk.close()
    # Local mode searches in memory whether or not it persists to a path, so the latency runs use
    # ":memory:" (or the given path / server URL) and skip writing 20k points to SQLite.
    kb = KnowledgeBase(path or ":memory:", embedder=emb, collection="bench_knowledge")
    try:
        kb.clear()
        kb.ingest_path(SOP_DIR)
        for name, mode in modes.items():
            r = _run_queries(kb, queries, mode, 1)
            result[name].update({f"{k}_sops_only": r[k] for k in ("hit_rate_top3", "mrr_top3")})
            for label, extra in (("staff", staff), ("tuning", tuning)):
                result[name][f"hit_rate_top3_{label}"] = _run_queries(kb, extra, mode, 1)["hit_rate_top3"]

        total_filler = max(0, max(sizes) - len(sop_chunks))
        fillers = filler_chunks(total_filler, seed)
        t0 = time.perf_counter()
        vectors = _filler_vectors(fillers, emb, filler_embedded, seed)
        filler_embed_s = time.perf_counter() - t0
        loaded = 0
        upsert_s = 0.0
        for size in sorted(sizes):
            want = max(0, size - len(sop_chunks))
            t0 = time.perf_counter()
            kb.ingest_chunks([c for _, c in fillers[loaded:want]], vectors=vectors[loaded:want])
            upsert_s += time.perf_counter() - t0
            loaded = want
            label = f"{size // 1000}k" if size % 1000 == 0 else str(size)
            for name, mode in modes.items():
                plain = _run_queries(kb, queries, mode, rounds)
                sop_only = _run_queries(kb, queries, mode, 1, doc_type="sop")
                for key in ("p50_ms", "p95_ms"):
                    result[name][f"{key}_{label}"] = plain[key]
                    result[name][f"{key}_{label}_filtered"] = sop_only[key]
                for key in ("hit_rate_top3", "mrr_top3"):
                    result[name][f"{key}_{label}"] = plain[key]
                    result[name][f"{key}_{label}_filtered"] = sop_only[key]
        points = kb.count()
    finally:
        kb.close()

    return {
        "bench": "knowledge",
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "model": emb.model_id,
        "store": "qdrant server" if not kb.local else f"embedded qdrant ({kb.engine})",
        "sops": len({c.doc_id for c in sop_chunks}),
        "sop_chunks": len(sop_chunks),
        "queries": len(queries),
        "staff_queries_held_out": len(staff),
        "tuning_queries": len(tuning),
        "corpus_sizes": list(sizes),
        "points_at_end": points,
        "filler_embedded_with_model": min(filler_embedded, total_filler),
        "embedding_chunks_per_s": round(len(sop_chunks) / embed_s, 1),
        "filler_embedding_chunks_per_s": round(min(filler_embedded, total_filler) / filler_embed_s, 1)
        if filler_embedded and total_filler
        else 0.0,
        "query_embedding_p50_ms": round(percentile(single, 50), 2),
        "sop_ingest_s_on_disk": round(ingest_s, 2),
        "filler_upsert_s": round(upsert_s, 2),
        "rounds": rounds,
        "history_sync": run_history_sync_bench(history_decisions, history_new, emb, seed),
        "baseline": result["baseline"],
        "crossdock": result["crossdock"],
        "dense_only": result["dense_only"],
        "delta": {
            "hit_rate_points_sops_only": round(
                100 * (result["crossdock"]["hit_rate_top3_sops_only"] - result["baseline"]["hit_rate_top3_sops_only"]),
                2,
            ),
            "hit_rate_points_staff_held_out": round(
                100 * (result["crossdock"]["hit_rate_top3_staff"] - result["baseline"]["hit_rate_top3_staff"]), 2
            ),
        },
    }


def run_engine_bench(
    size: int = 20_000, rounds: int = 2, filler_embedded: int = 512, seed: int = 7, engines: tuple[str, ...] = ENGINES
) -> dict[str, Any]:
    """The embedded engines side by side at ``size`` chunks: qdrant-client's local mode against
    Qdrant Edge (``qdrant-edge-py``), the same SOPs, filler, vectors and queries in each.

    Per engine: the time to upsert the filler, hybrid search p50/p95 (query embedding included, k=5)
    unfiltered over ``rounds`` passes and with the ``doc_type="sop"`` filter over one, and the top-3
    hit rate (both engines should find the same passages).
    """
    silence_local_mode_size_warning()
    emb = default_embedder()
    queries = load_queries()
    sop_chunks = [c for d in load_documents(SOP_DIR) for c in chunk_document(d)]
    fillers = filler_chunks(max(0, size - len(sop_chunks)), seed)
    vectors = _filler_vectors(fillers, emb, filler_embedded, seed)
    emb.embed([q["q"] for q in queries[:8]])  # warm-up
    out: dict[str, Any] = {}
    for engine in engines:
        kb = KnowledgeBase(":memory:", embedder=emb, collection="bench_engines", engine=engine)  # type: ignore[arg-type]
        try:
            kb.ingest_path(SOP_DIR)
            t0 = time.perf_counter()
            kb.ingest_chunks([c for _, c in fillers], vectors=vectors)
            upsert_s = time.perf_counter() - t0
            plain = _run_queries(kb, queries, "hybrid", rounds)
            filtered = _run_queries(kb, queries, "hybrid", 1, doc_type="sop")
            out[engine] = {
                "points": kb.count(),
                "filler_upsert_s": round(upsert_s, 2),
                "hybrid_p50_ms": plain["p50_ms"],
                "hybrid_p95_ms": plain["p95_ms"],
                "hybrid_filtered_p50_ms": filtered["p50_ms"],
                "hybrid_filtered_p95_ms": filtered["p95_ms"],
                "hit_rate_top3": plain["hit_rate_top3"],
            }
        finally:
            kb.close()
    return {
        "bench": "knowledge engines",
        "corpus_chunks": size,
        "queries": len(queries),
        "rounds": rounds,
        "loadavg": Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "",
        **{f"{engine} (default)" if engine == default_engine() else engine: r for engine, r in out.items()},
    }
