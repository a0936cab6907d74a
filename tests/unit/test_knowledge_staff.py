"""Knowledge for staff: the held-out question set is kept apart, SOP keywords, a base that is never
empty (seeded on first start) and a search of an empty base that says how to fill it.

The retrieval checks that need the real embedder (held-out top-3, the missed-truck query, keyword
chunks) are in test_knowledge.py, on its one embedded copy of the SOPs."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from bench.knowledge import QUERIES, STAFF_QUERIES, TUNING_QUERIES, load_queries
from knowledge.base import KnowledgeBase, KnowledgeBaseEmpty, seed_if_empty
from knowledge.commands import search_command
from knowledge.documents import SOP_DIR, DocumentError, chunk_document, load_documents, parse_document

REPO = Path(__file__).resolve().parents[2]


class FlatEmbedder:
    """A fake at the embedder port: every text gets the same vector (seeding is about counts)."""

    dim = 2
    model_id = "flat"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]


def test_the_held_out_set_is_kept_apart_and_not_in_the_sops_words() -> None:
    staff = {q["q"].lower() for q in load_queries(STAFF_QUERIES)}
    assert not staff & {q["q"].lower() for q in load_queries(TUNING_QUERIES)}
    assert not staff & {q["q"].lower() for q in load_queries(QUERIES)}
    sop_text = {d.id: re.sub(r"\s+", " ", d.body.lower()) for d in load_documents(SOP_DIR)}
    for q in load_queries(STAFF_QUERIES):
        words = re.findall(r"[a-z0-9']+", q["q"].lower())
        copied = [" ".join(words[i : i + 5]) for i in range(len(words) - 4)]
        assert not [c for c in copied if c in sop_text[q["expect"]]], q["q"]


def test_keywords_must_name_a_section_that_exists() -> None:
    text = '---\nid: SOP-TST-009\ntitle: T\nkeywords:\n  "7": [x]\n---\n# T\n## 1. One\nBody.\n'
    with pytest.raises(DocumentError, match="keywords.*'7'"):
        chunk_document(parse_document(text, "t.md"))
    ok = text.replace('"7"', '"1"')
    chunks = chunk_document(parse_document(ok, "t.md"))
    assert [c.id for c in chunks] == ["SOP-TST-009#1", "SOP-TST-009#1.keywords"]
    assert chunks[1].embed_text.endswith("\nx") and chunks[1].text == "Body."


def test_a_new_base_is_seeded_once(tmp_path: Path) -> None:
    with KnowledgeBase(tmp_path / "kb", embedder=FlatEmbedder()) as base:
        first = seed_if_empty(base)
        assert first == base.count("sop") > 0
        assert seed_if_empty(base) == 0  # already seeded: nothing written again
        assert base.count() == first


class StoppingEmbedder(FlatEmbedder):
    """Sets ``stop`` once it has embedded ``after`` batches, as a shutdown would during seeding."""

    def __init__(self, stop: threading.Event, after: int) -> None:
        self.stop, self.after = stop, after

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.after -= 1
        if self.after <= 0:
            self.stop.set()
        return super().embed(texts)


def test_a_seeding_cut_short_by_a_shutdown_stops_between_batches_and_is_finished_next_start(tmp_path: Path) -> None:
    shipped = sum(len(chunk_document(d)) for d in load_documents(SOP_DIR))
    stop = threading.Event()
    with KnowledgeBase(tmp_path / "kb", embedder=StoppingEmbedder(stop, after=2)) as base:
        written = seed_if_empty(base, stop)
        assert 0 < written < shipped and base.count("sop") == written  # two batches, then no more
    with KnowledgeBase(tmp_path / "kb", embedder=FlatEmbedder()) as base:  # the next start
        assert seed_if_empty(base) == shipped and base.count("sop") == shipped
        assert seed_if_empty(base) == 0


def test_searching_an_empty_base_says_how_to_fill_it(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseEmpty, match="crossdock knowledge ingest"):
        search_command("lot mismatch", kb_path=tmp_path / "empty")
    done = subprocess.run(
        [sys.executable, "-m", "crossdock.cli", "knowledge", "search", "lot mismatch"],
        env={"PATH": "/usr/bin:/bin", "CROSSDOCK_KNOWLEDGE_PATH": str(tmp_path / "empty2"), "COLUMNS": "60"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is empty: run `crossdock knowledge ingest`" in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
