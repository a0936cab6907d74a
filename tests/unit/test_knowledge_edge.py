"""The knowledge base on Qdrant Edge (``engine="edge"``, ``CROSSDOCK_KNOWLEDGE_ENGINE=edge``): the same
points and the same answers as local mode, persisted in a folder one process holds at a time.

Dense vectors come from a table (so both rankings are known), the sparse ones from the real BM25
terms; nothing reaches the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from knowledge.base import KnowledgeBase, KnowledgeBaseBusy, default_engine

pytest.importorskip("qdrant_edge")


class _Table:
    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    @property
    def dim(self) -> int:
        return 3

    @property
    def model_id(self) -> str:
        return "table"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.table[next((k for k in self.table if k in t), "default")] for t in texts]


TABLE = {
    "mkA": [1.0, 0.0, 0.0],
    "mkB": [0.8, 0.6, 0.0],
    "mkD": [0.5, 0.0, 0.866],
    "mkC": [0.1, 0.995, 0.0],
    "default": [1.0, 0.0, 0.0],
}
DOCS = {
    "SOP-A-001": ("mkA", "pallet handling rules", "allocation"),
    "SOP-B-001": ("mkB", "pallet quarantine rules", "allocation"),
    "SOP-C-001": ("mkC", "pallet quarantine lot rules", "reconciliation"),
    "SOP-D-001": ("mkD", "invoice rules", "allocation"),
}


def _write(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for doc_id, (marker, body, workflow) in DOCS.items():
        (folder / f"{doc_id}.md").write_text(
            f"---\nid: {doc_id}\ntitle: Note {marker}\ndoc_type: sop\nworkflow: {workflow}\n---\n## 1. Body\n{body}\n"
        )
    return folder


def _answers(kb: KnowledgeBase) -> list[list[tuple[str, float]]]:
    query = "pallet quarantine lot"
    return [
        [(h.doc_id, round(h.score, 6)) for h in kb.search(query, k=4, mode=mode)]
        for mode in ("dense", "sparse", "hybrid")
    ] + [[(h.doc_id, round(h.score, 6)) for h in kb.search(query, k=4, workflow="reconciliation")]]


def test_edge_answers_as_local_mode_does(tmp_path: Path) -> None:
    docs = _write(tmp_path / "docs")
    with KnowledgeBase(":memory:", embedder=_Table(TABLE), engine="local") as local:
        local.ingest_path(docs)
        expected = _answers(local)
    with KnowledgeBase(tmp_path / "edge", embedder=_Table(TABLE), engine="edge") as edge:
        assert edge.engine == "edge" and edge.ingest_path(docs) == 4
        assert edge.count() == 4 and edge.count("sop") == 4 and edge.count("history") == 0
        got = _answers(edge)
    assert got == expected
    assert [d for d, _ in got[2]] == ["SOP-A-001", "SOP-C-001", "SOP-B-001", "SOP-D-001"]  # RRF, k = 2
    assert [d for d, _ in got[3]] == ["SOP-C-001"]  # the payload filter


def test_edge_persists_replaces_and_checks_the_vector_size(tmp_path: Path) -> None:
    docs = _write(tmp_path / "docs")
    with KnowledgeBase(tmp_path / "kb", embedder=_Table(TABLE), engine="edge") as kb:
        kb.ingest_path(docs)
        (docs / "SOP-D-001.md").unlink()
        (docs / "SOP-B-001.md").write_text(
            "---\nid: SOP-B-001\ntitle: B\ndoc_type: sop\nworkflow: allocation\n---\n"
            "## 1. One\nmkB a\n## 2. Two\nmkB b\n"
        )
        kb.ingest_path(docs / "SOP-B-001.md")  # the document's old chunk goes, its two new ones come
        assert kb.count() == 5
    with KnowledgeBase(tmp_path / "kb", embedder=_Table(TABLE), engine="edge") as kb:  # from disk
        assert kb.count() == 5
        kb.clear()
        assert kb.count() == 0

    class Wide(_Table):
        @property
        def dim(self) -> int:
            return 4

    with pytest.raises(ValueError, match="3-d vectors, the embedder makes 4-d"):
        KnowledgeBase(tmp_path / "kb", embedder=Wide(TABLE), engine="edge")


def test_edge_is_one_holder_at_a_time(tmp_path: Path) -> None:
    holder = KnowledgeBase(tmp_path / "kb", embedder=_Table(TABLE), engine="edge")
    with pytest.raises(KnowledgeBaseBusy, match="open in another process"):
        KnowledgeBase(tmp_path / "kb", embedder=_Table(TABLE), engine="edge")
    holder.close()
    with KnowledgeBase(tmp_path / "kb", embedder=_Table(TABLE), engine="edge") as kb:  # released on close
        assert kb.count() == 0


def test_engine_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CROSSDOCK_KNOWLEDGE_ENGINE", raising=False)
    assert default_engine() == "edge"  # the default: measured faster (crossdock bench knowledge-engines)
    monkeypatch.setenv("CROSSDOCK_KNOWLEDGE_ENGINE", " Edge ")
    assert default_engine() == "edge"
    monkeypatch.setenv("CROSSDOCK_KNOWLEDGE_ENGINE", "faiss")
    with pytest.raises(ValueError, match="CROSSDOCK_KNOWLEDGE_ENGINE: 'faiss' is not one of local, edge"):
        default_engine()
