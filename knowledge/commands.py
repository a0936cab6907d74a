"""Functions behind ``crossdock knowledge ingest|search``: plain values in, JSON-ready values out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from knowledge.base import FILTER_FIELDS, KnowledgeBase, KnowledgeBaseEmpty
from knowledge.documents import SOP_DIR


def open_base(kb_path: str | Path | None = None, url: str | None = None) -> KnowledgeBase:
    if url is not None:
        return KnowledgeBase(url=url)
    return KnowledgeBase(kb_path)  # None: QDRANT_URL, else CROSSDOCK_KNOWLEDGE_PATH, else .cache/knowledge


def ingest_command(
    path: str | Path | None = None, kb_path: str | Path | None = None, *, url: str | None = None
) -> dict[str, Any]:
    """Ingest a markdown file or directory (default: the shipped SOPs); returns what was written."""
    source = Path(path) if path is not None else SOP_DIR
    with open_base(kb_path, url) as kb:
        chunks = kb.ingest_path(source)
        total = kb.count()
        location = kb.location
    return {"source": str(source), "chunks": chunks, "total_points": total, "knowledge_base": location}


def search_command(
    query: str,
    k: int = 5,
    filters: Mapping[str, str | None] | None = None,
    kb_path: str | Path | None = None,
    *,
    url: str | None = None,
) -> list[dict[str, Any]]:
    """Hybrid search; ``filters`` may hold doc_type, sku, node and workflow.

    Raises ``KnowledgeBaseEmpty`` (its message says how to fill it) when the base holds nothing."""
    given = {key: value for key, value in (filters or {}).items() if value is not None}
    unknown = sorted(set(given) - set(FILTER_FIELDS))
    if unknown:
        raise ValueError(f"unknown filter(s) {unknown}; allowed: {list(FILTER_FIELDS)}")
    with open_base(kb_path, url) as kb:
        if kb.count() == 0:
            raise KnowledgeBaseEmpty(kb.location)
        hits = kb.search(
            query,
            k=k,
            doc_type=given.get("doc_type"),
            sku=given.get("sku"),
            node=given.get("node"),
            workflow=given.get("workflow"),
        )
    return [h.as_dict() for h in hits]
