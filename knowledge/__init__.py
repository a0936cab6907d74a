"""Crossdock's knowledge base: SOPs and decision history in Qdrant, searched hybrid (dense + BM25, RRF).

Usage::

    kb = KnowledgeBase(":memory:")   # a path (local mode), url=... (server); default .cache/knowledge
    kb.ingest_path(SOP_DIR)          # markdown SOPs, one chunk per ## section -> chunk count
    kb.ingest_decisions(decisions)   # executed/reviewed decisions as doc_type "history"
    kb.search("lot mismatch on receipt", k=3, doc_type="sop")[0].citation  # 'SOP-RCV-001 §5'

Importing this package is cheap: qdrant-client (about 1.5 s to import) and onnxruntime load only
when ``KnowledgeBase``, the commands or the embedder are first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from knowledge.documents import SOP_DIR, Chunk, Document, DocumentError, chunk_document, load_documents, parse_document

if TYPE_CHECKING:
    from knowledge.base import Hit, KnowledgeBase, build_filter, decision_chunk, ingest_sops, seed_if_empty
    from knowledge.commands import ingest_command, search_command
    from knowledge.embedder import Embedder, OnnxMiniLMEmbedder, default_embedder

_LAZY = {
    "Hit": "knowledge.base",
    "KnowledgeBase": "knowledge.base",
    "build_filter": "knowledge.base",
    "decision_chunk": "knowledge.base",
    "ingest_sops": "knowledge.base",
    "seed_if_empty": "knowledge.base",
    "ingest_command": "knowledge.commands",
    "search_command": "knowledge.commands",
    "Embedder": "knowledge.embedder",
    "OnnxMiniLMEmbedder": "knowledge.embedder",
    "default_embedder": "knowledge.embedder",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'knowledge' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "SOP_DIR",
    "Chunk",
    "Document",
    "DocumentError",
    "Embedder",
    "Hit",
    "KnowledgeBase",
    "OnnxMiniLMEmbedder",
    "build_filter",
    "chunk_document",
    "decision_chunk",
    "default_embedder",
    "ingest_command",
    "ingest_sops",
    "load_documents",
    "parse_document",
    "search_command",
    "seed_if_empty",
]
