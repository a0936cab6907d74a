"""The knowledge base: documents, chunking, BM25 terms, filters, RRF fusion, history, retrieval quality.

Everything runs on Qdrant local mode (in memory or a temporary path) and the real embedder
(all-MiniLM-L6-v2 int8 ONNX from a PyPI package); nothing reaches the network.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from qdrant_client.hybrid.fusion import DEFAULT_RANKING_CONSTANT_K

from bench.knowledge import STAFF_QUERIES, load_queries, run_knowledge_bench
from domain.decisions import Action, Decision
from knowledge import (
    SOP_DIR,
    DocumentError,
    Hit,
    KnowledgeBase,
    chunk_document,
    decision_chunk,
    default_embedder,
    ingest_command,
    load_documents,
    parse_document,
    search_command,
)
from knowledge.sparse import document_vector, query_vector, terms

DOC = """---
id: SOP-TST-001
title: Test procedure
doc_type: sop
workflow: [reconciliation, discrepancy]
owner: receiving
version: 2
---
# Test procedure

Applies to every node.

## 1. Purpose
Why this exists.

## 2. Tolerance
Receipts within 2 % auto-close.

## Appendix
Forms and contacts.
"""


# --- documents and chunking -------------------------------------------------------------


def test_front_matter_is_parsed() -> None:
    doc = parse_document(DOC, "t.md")
    assert (doc.id, doc.title, doc.doc_type) == ("SOP-TST-001", "Test procedure", "sop")
    assert doc.workflows == ["reconciliation", "discrepancy"]
    assert doc.meta["owner"] == "receiving"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("# no front matter\n", "front matter"),
        ("---\nid: bad id\ntitle: T\n---\n", "'id'"),
        ("---\nid: SOP-X-001\n---\n", "'title'"),
        ("---\nid: SOP-X-001\ntitle: T\nworkflow: [shipping]\n---\n", "'workflow'"),
        ("---\nid: SOP-X-001\ntitle: T\ndoc_type: memo\n---\n", "'doc_type'"),
        ("---\nid: [unclosed\n---\n", "YAML"),
    ],
)
def test_bad_front_matter_names_the_field(text: str, field: str) -> None:
    with pytest.raises(DocumentError, match=field):
        parse_document(text, "bad.md")


def test_chunks_follow_numbered_sections() -> None:
    chunks = chunk_document(parse_document(DOC, "t.md"))
    assert [c.section for c in chunks] == ["0", "1", "2", "appendix"]
    tolerance = chunks[2]
    assert tolerance.id == "SOP-TST-001#2"
    assert tolerance.heading == "Tolerance"
    assert tolerance.citation == "SOP-TST-001 §2"
    assert tolerance.text == "Receipts within 2 % auto-close."
    assert tolerance.embed_text.startswith("Test procedure — Tolerance\n")
    assert tolerance.payload["workflow"] == ["reconciliation", "discrepancy"]
    assert tolerance.payload["doc_type"] == "sop"
    assert chunks[0].citation == "SOP-TST-001"


def test_long_section_is_split_at_paragraphs() -> None:
    para = " ".join(["word"] * 60)
    text = DOC.replace("Why this exists.", "\n\n".join([para] * 5))
    chunks = [c for c in chunk_document(parse_document(text), max_words=130) if c.section == "1"]
    assert [c.id for c in chunks] == ["SOP-TST-001#1.p1", "SOP-TST-001#1.p2", "SOP-TST-001#1.p3"]
    assert all(len(c.text.split()) <= 130 for c in chunks)


def test_shipped_sops_are_well_formed() -> None:
    docs = load_documents(SOP_DIR)
    assert 20 <= len(docs) <= 25
    assert len({d.id for d in docs}) == len(docs)
    for d in docs:
        assert d.doc_type == "sop" and d.workflows, d.id
        sections = [c.section for c in chunk_document(d) if "passage" not in c.payload]  # not keyword chunks
        assert len(sections) >= 4, d.id
        assert sections[:2] == ["1", "2"], d.id
    ids = {d.id for d in docs}
    for q in load_queries():
        assert q["expect"] in ids, q
    assert len(load_queries()) >= 40


def test_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(DOC)
    (tmp_path / "b.md").write_text(DOC)
    with pytest.raises(DocumentError, match="already used"):
        load_documents(tmp_path)


# --- BM25 terms -------------------------------------------------------------------------


def test_bm25_terms_and_weights() -> None:
    assert terms("The picker picked 3 picks of SKU-0042 at DC-EAST, 2% short") == [
        "picker",
        "pick",
        "3",
        "pick",
        "sku-0042",
        "dc-east",
        "2%",
        "short",
    ]
    doc = document_vector("lot lot lot pallet")
    assert doc.indices == sorted(doc.indices)
    weights = dict(zip(doc.indices, doc.values, strict=True))
    lot, pallet = query_vector("lot").indices[0], query_vector("pallet").indices[0]
    assert weights[lot] > weights[pallet] > 0  # saturating in tf
    assert query_vector("the lot of the lot").values == [1.0]


# --- a tiny corpus with a table embedder: RRF order and filters -------------------------


class TableEmbedder:
    """Vectors looked up by a marker in the text, so the dense ranking is known exactly."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    @property
    def dim(self) -> int:
        return 3

    @property
    def model_id(self) -> str:
        return "table"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for t in texts:
            key = next((k for k in self.table if k in t), "default")
            out.append(self.table[key])
        return out


def _tiny_doc(doc_id: str, marker: str, body: str) -> str:
    return f"---\nid: {doc_id}\ntitle: Note {marker}\ndoc_type: sop\nworkflow: allocation\n---\n## 1. Body\n{body}\n"


def test_rrf_fuses_dense_and_bm25_rankings(tmp_path: Path) -> None:
    docs = {
        "SOP-A-001": ("mkA", "pallet handling rules"),  # dense 1st, BM25 3rd
        "SOP-B-001": ("mkB", "pallet quarantine rules"),  # dense 2nd, BM25 2nd
        "SOP-C-001": ("mkC", "pallet quarantine lot rules"),  # dense 4th, BM25 1st
        "SOP-D-001": ("mkD", "invoice rules"),  # dense 3rd, no query term
    }
    for doc_id, (marker, body) in docs.items():
        (tmp_path / f"{doc_id}.md").write_text(_tiny_doc(doc_id, marker, body))
    table = {
        "mkA": [1.0, 0.0, 0.0],
        "mkB": [0.8, 0.6, 0.0],
        "mkD": [0.5, 0.0, 0.866],
        "mkC": [0.1, 0.995, 0.0],
        "default": [1.0, 0.0, 0.0],  # the query
    }
    with KnowledgeBase(":memory:", embedder=TableEmbedder(table)) as kb:
        assert kb.ingest_path(tmp_path) == 4
        query = "pallet quarantine lot"
        dense = [h.doc_id for h in kb.search(query, k=4, mode="dense")]
        sparse = [h.doc_id for h in kb.search(query, k=4, mode="sparse")]
        hybrid = kb.search(query, k=4)
    assert dense == ["SOP-A-001", "SOP-B-001", "SOP-D-001", "SOP-C-001"]
    assert sparse == ["SOP-C-001", "SOP-B-001", "SOP-A-001"]

    k = DEFAULT_RANKING_CONSTANT_K
    fused: dict[str, float] = {}
    for ranking in (dense, sparse):
        for i, doc_id in enumerate(ranking):
            fused[doc_id] = fused.get(doc_id, 0.0) + 1 / (i + k)
    expected = sorted(fused, key=lambda d: -fused[d])
    assert [h.doc_id for h in hybrid] == expected
    for h in hybrid:
        assert h.score == pytest.approx(fused[h.doc_id])
    if k == 2:  # Qdrant's default constant: the compromise beats both single rankings' order
        assert expected == ["SOP-A-001", "SOP-C-001", "SOP-B-001", "SOP-D-001"]


def test_reingest_replaces_a_document(tmp_path: Path) -> None:
    src = tmp_path / "doc.md"
    src.write_text(DOC)
    emb = TableEmbedder({"default": [1.0, 0.0, 0.0]})
    with KnowledgeBase(tmp_path / "kb", embedder=emb) as kb:
        assert kb.ingest_path(src) == 4
        assert kb.ingest_path(src) == 4
        assert kb.count() == 4
        src.write_text(DOC.split("## Appendix")[0])
        assert kb.ingest_path(src) == 3
        assert kb.count() == 3
    with KnowledgeBase(tmp_path / "kb", embedder=emb) as kb:  # persisted on disk
        assert kb.count() == 3


def test_empty_query_and_dimension_mismatch(tmp_path: Path) -> None:
    with KnowledgeBase(tmp_path, embedder=TableEmbedder({"default": [1.0, 0.0, 0.0]})) as kb:
        assert kb.search("   ") == []
        assert kb.search("the of", mode="sparse") == []
    with pytest.raises(ValueError, match="3-d vectors, the embedder makes 384-d"):
        KnowledgeBase(tmp_path, embedder=default_embedder())


# --- the real embedder on the real SOPs -------------------------------------------------


@pytest.fixture(scope="module")
def sop_kb() -> Iterator[KnowledgeBase]:
    kb = KnowledgeBase(":memory:", embedder=default_embedder())
    kb.ingest_path(SOP_DIR)
    yield kb
    kb.close()


def test_embedder_is_normalised_and_semantic() -> None:
    emb = default_embedder()
    a, b, c = emb.embed(["A man is eating food.", "A man is eating a piece of bread.", "The girl carries a baby."])
    assert len(a) == emb.dim == 384
    assert sum(x * x for x in a) == pytest.approx(1.0, abs=1e-4)

    def cos(u: list[float], v: list[float]) -> float:
        return sum(x * y for x, y in zip(u, v, strict=True))

    assert cos(a, b) > 0.6 > 0.2 > cos(a, c)
    assert emb.embed([]) == []


def test_labelled_queries_hit_rate(sop_kb: KnowledgeBase) -> None:
    queries = load_queries()
    found = [q["expect"] in [h.doc_id for h in sop_kb.search(q["q"], k=3)] for q in queries]
    rate = sum(found) / len(found)
    assert rate >= 0.9, [q["q"] for q, ok in zip(queries, found, strict=True) if not ok]


# Top-3 accuracy on the held-out staff questions (knowledge/eval/staff_queries.yaml) as measured when
# the set was written: 102 of 109 (0.936). The goal is 0.95; see the README's knowledge section.
STAFF_HELD_OUT_FLOOR = 0.93


def test_held_out_staff_questions_find_their_sop_in_the_top_3(sop_kb: KnowledgeBase) -> None:
    queries = load_queries(STAFF_QUERIES)
    missed = [q["q"] for q in queries if q["expect"] not in [h.doc_id for h in sop_kb.search(q["q"], k=3)]]
    assert len(queries) >= 100
    assert 1 - len(missed) / len(queries) >= STAFF_HELD_OUT_FLOOR, missed


def test_a_missed_truck_is_the_carrier_cutoff_sop_not_the_short_pick_one(sop_kb: KnowledgeBase) -> None:
    hits = sop_kb.search("order will miss the truck pickup time", k=3)
    assert hits[0].doc_id == "SOP-SHP-001"


def test_a_keyword_chunk_shows_and_cites_its_sections_own_text(sop_kb: KnowledgeBase) -> None:
    hits = sop_kb.search("driver or truck already left without it", k=5)
    assert hits[0].citation == "SOP-SHP-001 §3"
    assert hits[0].text.startswith("When an order misses its cutoff")  # the passage, not the phrases
    passages = [h.payload.get("passage") or h.id for h in hits]
    assert len(passages) == len(set(passages))  # a section's text and its keywords come back once


def test_hits_carry_citations_and_filters_apply(sop_kb: KnowledgeBase) -> None:
    hits = sop_kb.search("received lot differs from the purchase order lot", k=3, doc_type="sop")
    assert isinstance(hits[0], Hit)
    assert hits[0].citation == "SOP-RCV-001 §5"
    assert hits[0].title == "Receiving tolerance and receipt close-out"
    assert "lot" in hits[0].text.lower()
    assert hits[0].payload["workflow"] == ["reconciliation"]
    only_release = sop_kb.search("lot mismatch", k=5, workflow="order_release")
    assert only_release and all("order_release" in h.payload["workflow"] for h in only_release)
    assert sop_kb.search("lot mismatch", doc_type="history") == []
    assert hits[0].source == "SOP-RCV-001 §5"
    with pytest.raises(TypeError, match="unknown search filter"):
        sop_kb.search("lot mismatch", colour="red")


def _decision(i: int, workflow: Any, subject: str, outcome: str, rationale: str, **kw: Any) -> Decision:
    return Decision(
        id=f"dec-{i:04d}",
        event_id=f"evt-{i}",
        workflow=workflow,
        subject=subject,
        outcome=outcome,
        confidence=0.9,
        cost_impact=0.0,
        human_review_required=False,
        status=kw.pop("status", "executed"),
        rationale=rationale,
        evidence=kw.pop("evidence", {}),
        actions=kw.pop("actions", []),
        actor=kw.pop("actor", "engine"),
        created_at=datetime(2026, 3, 1, tzinfo=UTC),
    )


def test_history_ingestion_and_similar_cases() -> None:
    decisions = [
        _decision(
            1,
            "discrepancy",
            "SKU-0042@DC-EAST",
            "cycle_count",
            "WMS has 40, the ERP books 52: the residual exceeds max(5, 10% of on-hand); count before booking.",
            evidence={"engine": "discrepancy/1.0.0", "wms_on_hand": 40, "erp_book": 52},
        ),
        _decision(
            2,
            "exception_triage",
            "task T-9 short pick",
            "reallocate",
            "Short pick at DC-WEST; DC-EAST had stock and met the cutoff.",
            evidence={"case": {"sku": "SKU-0007", "node": "DC-WEST"}},
            status="pending_review",
            actions=[Action(system="wms", type="create_task", payload={"sku": "SKU-0007", "node": "DC-WEST"})],
        ),
        _decision(
            3,
            "order_release",
            "ORD-1 held: credit hold",
            "hold",
            "Customer account on credit hold.",
            status="rejected",
            actor="planner:ana",
        ),
    ]
    chunk = decision_chunk(decisions[0])
    assert chunk.payload["sku"] == "SKU-0042" and chunk.payload["node"] == "DC-EAST"
    assert "wms_on_hand=40" in chunk.text and "engine=" not in chunk.text
    with KnowledgeBase(":memory:", embedder=default_embedder()) as kb:
        kb.ingest_path(SOP_DIR / "SOP-INV-001-cycle-count-triggers.md")
        assert kb.ingest_decisions(decisions) == 3
        assert kb.ingest_decisions(decisions) == 3  # idempotent
        assert kb.count(doc_type="history") == 3

        similar = kb.search("WMS and ERP disagree on stock, count needed", k=2, doc_type="history")
        assert similar[0].doc_id == "dec-0001"
        p = similar[0].payload
        assert (p["workflow"], p["subject"], p["outcome"], p["status"]) == (
            "discrepancy",
            "SKU-0042@DC-EAST",
            "cycle_count",
            "executed",
        )
        triage = kb.search("short pick", sku="SKU-0007", node="DC-WEST")
        assert [h.doc_id for h in triage] == ["dec-0002"]
        assert triage[0].payload["status"] == "pending_review"
        assert triage[0].payload["actions"] == ["wms.create_task"]
        rejected = kb.search("credit hold", workflow="order_release", doc_type="history")
        assert rejected[0].payload["actor"] == "planner:ana"
        assert kb.search("short pick", sku="SKU-0007", node="DC-EAST") == []


# --- CLI functions and the benchmark ----------------------------------------------------


def test_ingest_and_search_commands(tmp_path: Path) -> None:
    src = tmp_path / "sops"
    src.mkdir()
    for name in ("SOP-CS-001-cancellation.md", "SOP-CS-002-address-changes.md"):
        (src / name).write_text((SOP_DIR / name).read_text())
    kb_path = tmp_path / "kb"
    result = ingest_command(src, kb_path)
    # 5 + 4 sections, and a keyword chunk for each (the staff phrases in the SOPs' front matter)
    assert result["chunks"] == 18 and result["total_points"] == 18
    rows = search_command("cancel after the wave was released", 2, {"doc_type": "sop"}, kb_path=kb_path)
    assert rows[0]["citation"] == "SOP-CS-001 §2"
    assert set(rows[0]) >= {"id", "doc_id", "title", "section", "text", "score", "payload"}
    with pytest.raises(ValueError, match="unknown filter"):
        search_command("x", 1, {"colour": "red"}, kb_path=kb_path)


def test_bench_smoke() -> None:
    emb = TableEmbedder({"default": [1.0, 0.0, 0.0], "RCV": [0.0, 1.0, 0.0]})
    result = run_knowledge_bench(
        sizes=(150, 300), rounds=1, filler_embedded=8, embedder=emb, max_queries=5, history_decisions=30, history_new=5
    )
    assert result["points_at_end"] == 300
    assert set(result["baseline"]) >= {"hit_rate_top3_sops_only", "hit_rate_top3_staff", "p50_ms_300", "p95_ms_150"}
    assert result["staff_queries_held_out"] == result["tuning_queries"] == 5
    assert result["crossdock"]["mode"] == "hybrid" and result["baseline"]["mode"] == "sparse"
    assert result["embedding_chunks_per_s"] > 0
    history = result["history_sync"]
    assert history["decisions_in_store"] == 35 and 0 < history["settled_first_pass"] <= 30
    assert 0 <= history["new_settled"] <= 5
