"""The knowledge base: one Qdrant collection of SOP sections and past decisions, searched hybrid.

Each point carries two named vectors: ``dense`` (all-MiniLM-L6-v2, cosine) and ``bm25`` (sparse
term frequencies; Qdrant applies IDF through ``Modifier.IDF``). A search runs both as prefetches
of one Query API call, with the same payload filter in each, and fuses them with reciprocal rank
fusion (``FusionQuery(fusion=RRF)``). Qdrant local mode (an on-disk path) is the default;
``url`` (or ``QDRANT_URL``) points at a server.

The embedded engine is a choice (``engine=``, or ``CROSSDOCK_KNOWLEDGE_ENGINE``): ``edge``, the
default, is Qdrant Edge (``qdrant-edge-py``, Qdrant's own engine in-process: one shard per
collection, a folder under the path); ``local`` is qdrant-client's local mode (pure Python). Both
store the same points and answer the same queries; ``crossdock bench knowledge-engines`` measures
them side by side (at 20k chunks Edge answered a hybrid search 17 times faster).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from domain.decisions import Decision
from domain.extras import needs
from knowledge.documents import Chunk, chunk_document, load_documents
from knowledge.embedder import Embedder, default_embedder
from knowledge.sparse import SparseVec, document_vector, query_vector

with needs("knowledge"):
    from qdrant_client import QdrantClient, models

COLLECTION = "crossdock_knowledge"
DEFAULT_PATH = ".cache/knowledge"
DENSE = "dense"
SPARSE = "bm25"
FILTER_FIELDS = ("doc_type", "sku", "node", "workflow")
SearchMode = Literal["hybrid", "dense", "sparse"]
Engine = Literal["local", "edge"]
ENGINES: tuple[Engine, ...] = ("local", "edge")
RRF_K = 2  # Qdrant's default ranking constant (local mode and the server use it; Edge is told)
_NAMESPACE = uuid.UUID("4f6c1b0e-8a63-4d0b-9a52-6f1d2b7c9e10")
_SUBJECT_AT = re.compile(r"^([A-Za-z0-9][\w.-]*)@([A-Za-z0-9][\w.-]*)$")


@dataclass(frozen=True)
class Hit:
    """One search result. ``section`` is the SOP section number (cite as ``doc_id §section``)."""

    id: str
    doc_id: str
    title: str
    section: str
    text: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def citation(self) -> str:
        return f"{self.doc_id} §{self.section}" if self.section and self.section != "0" else self.doc_id

    @property
    def source(self) -> str:
        """Where the passage comes from, as an agent should cite it."""
        return self.citation

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "doc_id": self.doc_id,
            "title": self.title,
            "section": self.section,
            "citation": self.citation,
            "text": self.text,
            "score": round(self.score, 6),
            "payload": self.payload,
        }


def point_id(chunk_id: str) -> str:
    """A stable point id, so re-ingesting a chunk overwrites it instead of duplicating it."""
    return str(uuid.uuid5(_NAMESPACE, chunk_id))


def default_location() -> tuple[str | None, str | None]:
    """(url, path): ``QDRANT_URL`` if set, else ``CROSSDOCK_KNOWLEDGE_PATH`` or ``.cache/knowledge``."""
    url = os.environ.get("QDRANT_URL") or None
    if url:
        return url, None
    return None, os.environ.get("CROSSDOCK_KNOWLEDGE_PATH") or DEFAULT_PATH


def build_filter(
    doc_type: str | None = None,
    sku: str | None = None,
    node: str | None = None,
    workflow: str | None = None,
) -> models.Filter | None:
    """All given fields must match (a list-valued payload field matches if any element does)."""
    given = {"doc_type": doc_type, "sku": sku, "node": node, "workflow": workflow}
    must: list[models.Condition] = [
        models.FieldCondition(key=k, match=models.MatchValue(value=v)) for k, v in given.items() if v is not None
    ]
    return models.Filter(must=must) if must else None


def _sparse(v: SparseVec) -> models.SparseVector:
    return models.SparseVector(indices=v.indices, values=v.values)


log = structlog.get_logger("crossdock.knowledge")


class KnowledgeBaseEmpty(RuntimeError):
    """A search of a knowledge base that holds nothing; ``str()`` says how to fill it."""

    def __init__(self, location: str) -> None:
        super().__init__(
            f"the knowledge base at {location} is empty: run `crossdock knowledge ingest` to load the shipped "
            "SOPs (or `crossdock knowledge ingest PATH` for your own markdown)"
        )


class KnowledgeBaseBusy(RuntimeError):
    """Qdrant local mode is one process at a time, and another process has this base open."""


class KnowledgeBase:
    """SOPs and decision history in one Qdrant collection, shared by all agents.

    ``KnowledgeBase()`` opens the default location (see :func:`default_location`); a path opens
    Qdrant local mode there, an ``http(s)://`` path or ``url=`` a Qdrant server, and
    ``KnowledgeBase(":memory:")`` an in-process collection that vanishes on close.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        url: str | None = None,
        embedder: Embedder | None = None,
        collection: str = COLLECTION,
        api_key: str | None = None,
        engine: Engine | None = None,
    ) -> None:
        if path is None and url is None:
            url, default_path = default_location()
            path = default_path
        elif url is None and str(path).startswith(("http://", "https://")):
            url, path = str(path), None
        self.embedder: Embedder = embedder if embedder is not None else default_embedder()
        self.collection = collection
        self.local = url is None
        self.location = url if url is not None else str(path)
        # Local mode is plain Python over shared dicts and SQLite: one call at a time. (Embedding
        # happens outside the lock; a server needs none.)
        self._lock: threading.RLock | contextlib.nullcontext[None] = (
            threading.RLock() if self.local else contextlib.nullcontext()
        )
        self.engine: Engine | Literal["server"] = "server" if url is not None else (engine or default_engine())
        self.edge: _EdgeShard | None = None
        if url is not None:
            self.client = QdrantClient(url=url, api_key=api_key or os.environ.get("QDRANT_API_KEY"))
        elif self.engine == "edge":
            self.edge = _EdgeShard(None if str(path) == ":memory:" else Path(str(path)), collection, self.embedder.dim)
            return
        elif str(path) == ":memory:":
            self.client = QdrantClient(location=":memory:")
        else:
            Path(str(path)).mkdir(parents=True, exist_ok=True)
            try:
                self.client = QdrantClient(path=str(path))
            except RuntimeError as exc:
                if "already accessed" not in str(exc):
                    raise
                raise KnowledgeBaseBusy(
                    f"the knowledge base at {path} is open in another process (a running `crossdock serve`?); "
                    "Qdrant local mode allows one: stop it, or run a Qdrant server and set QDRANT_URL"
                ) from None
        self._ensure_collection()

    # --- lifecycle -------------------------------------------------------------------------

    def _ensure_collection(self) -> None:
        if self.client.collection_exists(self.collection):
            info = self.client.get_collection(self.collection)
            params = info.config.params.vectors
            size = params[DENSE].size if isinstance(params, dict) and DENSE in params else None
            if size != self.embedder.dim:
                raise ValueError(
                    f"collection {self.collection!r} holds {size}-d vectors, the embedder makes {self.embedder.dim}-d"
                )
            return
        self.client.create_collection(
            self.collection,
            vectors_config={DENSE: models.VectorParams(size=self.embedder.dim, distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
        if not self.local:  # payload indexes only exist on a server; local mode scans
            for key in (*FILTER_FIELDS, "doc_id"):
                self.client.create_payload_index(self.collection, key, models.PayloadSchemaType.KEYWORD)

    def clear(self) -> None:
        """Drop every point: the collection is deleted and created anew."""
        with self._lock:
            if self.edge is not None:
                self.edge.clear()
                return
            self.client.delete_collection(self.collection)
            self._ensure_collection()

    def close(self) -> None:
        if self.edge is not None:
            self.edge.close()
            return
        self.client.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self, doc_type: str | None = None) -> int:
        with self._lock:
            if self.edge is not None:
                return self.edge.count(doc_type)
            return self.client.count(self.collection, count_filter=build_filter(doc_type=doc_type), exact=True).count

    # --- ingestion -------------------------------------------------------------------------

    def ingest_chunks(
        self,
        chunks: Sequence[Chunk],
        *,
        vectors: Sequence[list[float]] | None = None,
        batch_size: int = 256,
        stop: threading.Event | None = None,
    ) -> int:
        """Embed and upsert chunks (idempotent by chunk id); returns how many were written.

        With ``stop``, it is checked before each batch: once set, nothing more is embedded (a
        server shutting down must not exit while the embedding runtime's threads are working).

        ``vectors`` supplies precomputed dense vectors (one per chunk) instead of embedding.
        """
        if vectors is not None and len(vectors) != len(chunks):
            raise ValueError(f"{len(vectors)} vectors for {len(chunks)} chunks")
        written = 0
        for start in range(0, len(chunks), batch_size):
            if stop is not None and stop.is_set():
                return written
            batch = chunks[start : start + batch_size]
            if vectors is None:
                dense = self.embedder.embed([c.embed_text for c in batch])
            else:
                dense = list(vectors[start : start + batch_size])
            points = [
                models.PointStruct(
                    id=point_id(c.id),
                    vector={DENSE: vec, SPARSE: _sparse(document_vector(c.embed_text))},
                    payload={**c.payload, "chunk_id": c.id, "doc_id": c.doc_id, "title": c.title, "text": c.text},
                )
                for c, vec in zip(batch, dense, strict=True)
            ]
            with self._lock:
                if self.edge is not None:
                    self.edge.upsert(points)
                else:
                    self.client.upsert(self.collection, points=points, wait=True)
            written += len(batch)
        return written

    def ingest_path(self, path: str | Path, *, stop: threading.Event | None = None, batch_size: int = 256) -> int:
        """Ingest a markdown file or every ``*.md`` under a directory; returns the chunk count.

        A document's earlier chunks are deleted first, so a section removed from the file does
        not linger in the index.
        """
        docs = load_documents(path)
        chunks: list[Chunk] = []
        for doc in docs:
            chunks.extend(chunk_document(doc))
        ids = [d.id for d in docs]
        if ids and self.edge is not None:
            with self._lock:
                self.edge.delete_documents(ids)
        elif ids:
            with self._lock:
                self.client.delete(
                    self.collection,
                    points_selector=models.FilterSelector(
                        filter=models.Filter(must=[models.FieldCondition(key="doc_id", match=models.MatchAny(any=ids))])
                    ),
                    wait=True,
                )
        return self.ingest_chunks(chunks, stop=stop, batch_size=batch_size)

    def ingest_decisions(self, decisions: Iterable[Decision]) -> int:
        """Ingest decisions as ``history`` chunks so 'similar past cases' can be retrieved."""
        return self.ingest_chunks([decision_chunk(d) for d in decisions])

    # --- retrieval -------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 5,
        doc_type: str | None = None,
        sku: str | None = None,
        node: str | None = None,
        workflow: str | None = None,
        *,
        mode: SearchMode = "hybrid",
        candidates: int | None = None,
        **unknown: Any,
    ) -> list[Hit]:
        """The k best chunks for a query; ``mode`` picks hybrid (RRF), dense-only or BM25-only.

        Filters are exact matches on payload fields; a list-valued field (an SOP's workflows)
        matches if any element does. Any other keyword is an error, never silently ignored.
        """
        if unknown:
            raise TypeError(f"unknown search filter(s) {sorted(unknown)}; allowed: {list(FILTER_FIELDS)}")
        if k <= 0 or not query.strip():
            return []
        flt = build_filter(doc_type, sku, node, workflow)
        limit = candidates or max(4 * k, 20)
        sparse = query_vector(query)
        dense: list[float] | None = None
        if mode != "sparse":
            dense = self.embedder.embed([query])[0]
        request: dict[str, Any]
        if mode == "dense" or (mode == "hybrid" and not sparse.indices):
            request = {"query": dense, "using": DENSE, "query_filter": flt}
        elif mode == "sparse":
            if not sparse.indices:
                return []
            request = {"query": _sparse(sparse), "using": SPARSE, "query_filter": flt}
        else:
            request = {
                "prefetch": [
                    models.Prefetch(query=dense, using=DENSE, filter=flt, limit=limit),
                    models.Prefetch(query=_sparse(sparse), using=SPARSE, filter=flt, limit=limit),
                ],
                "query": models.FusionQuery(fusion=models.Fusion.RRF),  # candidates are already filtered
            }
        with self._lock:
            if self.edge is not None:
                found = self.edge.query(2 * k, limit, dense, sparse, mode, (doc_type, sku, node, workflow))
                return distinct_passages([_hit(p) for p in found], k)
            # 2k: a keyworded SOP section is two points (its text, its staff phrases) showing one passage.
            resp = self.client.query_points(self.collection, limit=2 * k, with_payload=True, **request)
        return distinct_passages([_hit(p) for p in resp.points], k)


def default_engine() -> Engine:
    """``CROSSDOCK_KNOWLEDGE_ENGINE`` (edge or local), else edge."""
    raw = (os.environ.get("CROSSDOCK_KNOWLEDGE_ENGINE") or "edge").strip().lower()
    if raw not in ENGINES:
        raise ValueError(f"CROSSDOCK_KNOWLEDGE_ENGINE: {raw!r} is not one of {', '.join(ENGINES)}")
    return raw


class _EdgeShard:
    """One collection as a Qdrant Edge shard in ``root/collection`` (a temporary folder for ":memory:").

    Qdrant Edge keeps no collection metadata of ours, so the dense size is written beside the shard
    (``crossdock.json``) and checked on open, as local mode checks its collection's config.
    """

    def __init__(self, root: Path | None, collection: str, dim: int) -> None:
        with needs("knowledge"):
            import qdrant_edge
        self.qe: Any = qdrant_edge
        self.dim = dim
        self._temp = None if root is not None else tempfile.mkdtemp(prefix="crossdock-edge-")
        self.path = (Path(self._temp) if self._temp else Path(str(root))) / collection
        self.shard: Any = self._open()

    def _config(self) -> Any:
        qe = self.qe
        return qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )

    def _open(self) -> Any:
        meta = self.path / "crossdock.json"
        if meta.exists():
            size = json.loads(meta.read_text()).get("dense_size")
            if size != self.dim:
                raise ValueError(
                    f"collection {self.path.name!r} holds {size}-d vectors, the embedder makes {self.dim}-d"
                )
            try:
                return self.qe.EdgeShard.load(str(self.path), self._config())
            except Exception as exc:  # the bindings raise a bare Exception; its text names the cause
                if "WouldBlock" not in str(exc):
                    raise
                raise KnowledgeBaseBusy(
                    f"the knowledge base at {self.path.parent} is open in another process (a running `crossdock "
                    "serve`?); Qdrant Edge allows one: stop it, or run a Qdrant server and set QDRANT_URL"
                ) from None
        self.path.mkdir(parents=True, exist_ok=True)
        shard = self.qe.EdgeShard.create(str(self.path), self._config())
        for key in (*FILTER_FIELDS, "doc_id"):  # as on a server: filtered searches use the index
            shard.update(self.qe.UpdateOperation.create_field_index(key, self.qe.PayloadSchemaType.Keyword))
        meta.write_text(json.dumps({"dense_size": self.dim}))
        return shard

    def clear(self) -> None:
        self.shard.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.shard = self._open()

    def close(self) -> None:
        self.shard.close()
        if self._temp:
            shutil.rmtree(self._temp, ignore_errors=True)

    def _filter(self, doc_type: str | None, sku: str | None, node: str | None, workflow: str | None) -> Any:
        qe = self.qe
        given = {"doc_type": doc_type, "sku": sku, "node": node, "workflow": workflow}
        must = [qe.FieldCondition(key=k, match=qe.MatchValue(v)) for k, v in given.items() if v is not None]
        return qe.Filter(must=must) if must else None

    def count(self, doc_type: str | None) -> int:
        return int(self.shard.count(self.qe.CountRequest(exact=True, filter=self._filter(doc_type, None, None, None))))

    def upsert(self, points: list[models.PointStruct]) -> None:
        qe = self.qe
        edge_points = []
        for p in points:
            vec: dict[str, Any] = dict(p.vector)  # type: ignore[arg-type]
            sparse = vec[SPARSE]
            vec[SPARSE] = qe.SparseVector(indices=list(sparse.indices), values=list(sparse.values))
            edge_points.append(qe.Point(id=str(p.id), vector=vec, payload=p.payload))
        self.shard.update(qe.UpdateOperation.upsert_points(edge_points))

    def delete_documents(self, doc_ids: list[str]) -> None:
        qe = self.qe
        flt = qe.Filter(must=[qe.FieldCondition(key="doc_id", match=qe.MatchAny(any=doc_ids))])
        self.shard.update(qe.UpdateOperation.delete_points_by_filter(flt))

    def query(
        self,
        k: int,
        limit: int,
        dense: list[float] | None,
        sparse: SparseVec,
        mode: SearchMode,
        filters: tuple[str | None, str | None, str | None, str | None],
    ) -> list[Any]:
        qe = self.qe
        flt = self._filter(*filters)
        by_dense = qe.Query.Nearest(dense, using=DENSE) if dense is not None else None
        by_sparse = qe.Query.Nearest(qe.SparseVector(indices=sparse.indices, values=sparse.values), using=SPARSE)
        if mode == "dense" or (mode == "hybrid" and not sparse.indices):
            request = qe.QueryRequest(limit=k, query=by_dense, filter=flt, with_payload=True)
        elif mode == "sparse":
            if not sparse.indices:
                return []
            request = qe.QueryRequest(limit=k, query=by_sparse, filter=flt, with_payload=True)
        else:
            request = qe.QueryRequest(
                limit=k,
                prefetches=[
                    qe.Prefetch(limit=limit, query=by_dense, filter=flt),
                    qe.Prefetch(limit=limit, query=by_sparse, filter=flt),
                ],
                query=qe.Fusion.Rrf(k=RRF_K),
                with_payload=True,
            )
        return list(self.shard.query(request))


def distinct_passages(hits: list[Hit], k: int) -> list[Hit]:
    """The first ``k`` hits that show different passages (a keyword chunk shows its section's text)."""
    seen: set[str] = set()
    out: list[Hit] = []
    for h in hits:
        passage = str(h.payload.get("passage") or h.id)
        if passage in seen:
            continue
        seen.add(passage)
        out.append(h)
        if len(out) == k:
            break
    return out


def _hit(p: models.ScoredPoint) -> Hit:
    payload = dict(p.payload or {})
    return Hit(
        id=str(payload.get("chunk_id", p.id)),
        doc_id=str(payload.get("doc_id", "")),
        title=str(payload.get("title", "")),
        section=str(payload.get("section", "")),
        text=str(payload.get("text", "")),
        score=float(p.score),
        payload=payload,
    )


def _find(evidence: Any, key: str) -> str | None:
    """A string value for ``key`` at the top of the evidence, or one level down."""
    if not isinstance(evidence, dict):
        return None
    value = evidence.get(key)
    if isinstance(value, str) and value:
        return value
    for inner in evidence.values():
        if isinstance(inner, dict):
            v = inner.get(key)
            if isinstance(v, str) and v:
                return v
    return None


def _scalars(evidence: dict[str, Any], limit: int = 12) -> str:
    parts = []
    for key, value in evidence.items():
        if isinstance(value, str | int | float | bool) and key not in ("engine",):
            parts.append(f"{key}={value}")
        if len(parts) >= limit:
            break
    return ", ".join(parts)


def review_of(d: Decision) -> Literal["rejected", "approved", "automatic"]:
    """How a settled decision was reviewed: a planner rejected it (an override), approved it, or no one had to."""
    if d.status == "rejected" and not d.actor.startswith("agent:"):
        return "rejected"
    if (d.review or {}).get("kind") in ("approved", "approved_with_changes"):
        return "approved"
    return "automatic"


def decision_chunk(d: Decision) -> Chunk:
    """A decision as a history chunk: what was decided, on what, why, and how it ended."""
    sku = _find(d.evidence, "sku")
    node = _find(d.evidence, "node")
    at = _SUBJECT_AT.match(d.subject)
    if at:
        sku, node = sku or at.group(1), node or at.group(2)
    if sku is None or node is None:
        for a in d.actions:
            sku = sku or (a.payload.get("sku") if isinstance(a.payload.get("sku"), str) else None)
            node = node or (a.payload.get("node") if isinstance(a.payload.get("node"), str) else None)
    action_names = sorted({a.name for a in d.actions})
    review = review_of(d)
    said = {
        "rejected": f"rejected by {d.actor}, a planner override" + (f": {d.error}" if d.error else ""),
        "approved": f"approved by {d.actor} after review, then {d.status}",
        "automatic": f"{d.status}, by {d.actor}",
    }[review]
    lines = [
        f"{d.workflow.replace('_', ' ')} decision on {d.subject}: {d.outcome} ({said}).",
        d.rationale,
    ]
    facts = _scalars(d.evidence)
    if facts:
        lines.append(f"Evidence: {facts}.")
    if action_names:
        lines.append(f"Actions: {', '.join(action_names)}.")
    if d.error and review != "rejected":
        lines.append(f"Error: {d.error}")
    text = "\n".join(line for line in lines if line)
    title = f"Past decision {d.id}"
    payload: dict[str, Any] = {
        "doc_type": "history",
        "doc_id": d.id,
        "title": title,
        "section": "",
        "heading": "",
        "workflow": d.workflow,
        "subject": d.subject,
        "outcome": d.outcome,
        "status": d.status,
        "actor": d.actor,
        "review": review,
        "confidence": d.confidence,
        "actions": action_names,
    }
    if d.event_id:
        payload["event_id"] = d.event_id
    if d.created_at is not None:
        payload["created_at"] = d.created_at.isoformat()
    if sku:
        payload["sku"] = sku
    if node:
        payload["node"] = node
    return Chunk(f"history:{d.id}", d.id, title, "", "", text, payload)


def ingest_sops(kb: KnowledgeBase) -> int:
    """Ingest the SOPs shipped in ``knowledge/sops``."""
    from knowledge.documents import SOP_DIR

    return kb.ingest_path(SOP_DIR)


def seed_if_empty(kb: KnowledgeBase, stop: threading.Event | None = None) -> int:
    """A knowledge base with fewer SOP chunks than the shipped SOPs make gets them, so chat and
    agents never meet an empty (or half-seeded) one.

    Run on every start (``crossdock serve``, a worker on a Qdrant server); it writes the first time,
    after the SOPs were removed, or after a seeding that ``stop`` (a shutdown) or a crash cut short.
    Embeds in small batches, checking ``stop`` between them. Returns the chunks written (0: the
    base already had them)."""
    from knowledge.documents import SOP_DIR

    shipped = sum(len(chunk_document(doc)) for doc in load_documents(SOP_DIR))
    if kb.count("sop") >= shipped:
        return 0
    written = kb.ingest_path(SOP_DIR, stop=stop, batch_size=32)
    if written < shipped:
        log.info("knowledge.seeding_stopped", chunks=written, of=shipped, knowledge_base=kb.location)
        return written
    log.info("knowledge.seeded", chunks=written, source=str(SOP_DIR), knowledge_base=kb.location)
    return written


def silence_local_mode_size_warning() -> None:
    """Qdrant local mode warns above 20,000 points; the benchmark goes there on purpose."""
    warnings.filterwarnings("ignore", message=".*[Ll]ocal mode is not recommended.*")
