"""Markdown SOPs: YAML front matter, then numbered ``##`` sections, chunked one section a chunk.

A document looks like::

    ---
    id: SOP-RCV-001
    title: Receiving tolerance and receipt close-out
    doc_type: sop
    workflow: [reconciliation, discrepancy]
    owner: receiving
    ---
    # Receiving tolerance and receipt close-out
    ## 1. Purpose and scope
    ...
    ## 2. Tolerance
    ...

Section ``## 2. Tolerance`` becomes section ``"2"``, so a playbook can cite ``SOP-RCV-001 §2``.
A section longer than ``max_words`` is split at paragraph boundaries into several chunks that
share its section number. Text between the title and the first ``##`` heading is section ``"0"``.

Front matter may also carry ``keywords``: per section, the words staff use for it when they do not
use the SOP's own ("the truck left without it" for a missed carrier cutoff)::

    keywords:
      "3": [missed the truck, driver left without it]

Each keyworded section gets one more chunk, indexed (dense and BM25) on the title, heading and
those phrases, that shows and cites the section's own text (``passage`` names the section chunk it
stands for, so a search returns that passage once).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml

from domain.decisions import Workflow

WORKFLOWS = frozenset(get_args(Workflow))
DOC_TYPES = frozenset({"sop", "history", "note"})
MAX_WORDS = 180

_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.DOTALL)
_HEADING = re.compile(r"^##\s+(.+?)\s*$", re.MULTILINE)
_NUMBERED = re.compile(r"^(?:§\s*)?(\d+(?:\.\d+)*)[.)]?\s+(.*)$")
_ID = re.compile(r"^[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+$")


class DocumentError(ValueError):
    """A knowledge document is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Chunk:
    """One retrievable unit: a section (or part of one) of a document."""

    id: str
    doc_id: str
    title: str
    section: str
    heading: str
    text: str
    payload: dict[str, Any] = field(default_factory=dict)
    # Indexed instead of ``text`` when set (a keyword chunk: the phrases, not the passage it shows).
    index_text: str = ""

    @property
    def embed_text(self) -> str:
        """What is embedded and indexed: the document title and heading give the body context."""
        head = f"{self.title} — {self.heading}" if self.heading else self.title
        return f"{head}\n{self.index_text or self.text}"

    @property
    def citation(self) -> str:
        return f"{self.doc_id} §{self.section}" if self.section and self.section != "0" else self.doc_id


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    doc_type: str
    workflows: list[str]
    meta: dict[str, Any]
    body: str
    source: str = ""


def parse_document(text: str, source: str = "<string>") -> Document:
    """Front matter and body of one markdown document."""
    m = _FRONT.match(text)
    if not m:
        raise DocumentError(f"{source}: missing YAML front matter (--- ... ---)")
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as exc:
        raise DocumentError(f"{source}: front matter is not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise DocumentError(f"{source}: front matter must be a mapping")
    doc_id = str(meta.get("id", "")).strip()
    if not _ID.match(doc_id):
        raise DocumentError(f"{source}: front matter field 'id' must look like SOP-RCV-001, got {doc_id!r}")
    title = str(meta.get("title", "")).strip()
    if not title:
        raise DocumentError(f"{source}: front matter field 'title' is required")
    doc_type = str(meta.get("doc_type", "sop"))
    if doc_type not in DOC_TYPES:
        raise DocumentError(f"{source}: front matter field 'doc_type' must be one of {sorted(DOC_TYPES)}")
    raw_wf = meta.get("workflow", [])
    workflows = [raw_wf] if isinstance(raw_wf, str) else list(raw_wf or [])
    unknown = [w for w in workflows if w not in WORKFLOWS]
    if unknown:
        raise DocumentError(f"{source}: front matter field 'workflow' has unknown values {unknown}")
    return Document(doc_id, title, doc_type, [str(w) for w in workflows], meta, text[m.end() :], source)


def _split_long(body: str, max_words: int) -> list[str]:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
    parts: list[str] = []
    current: list[str] = []
    words = 0
    for p in paragraphs:
        n = len(p.split())
        if current and words + n > max_words:
            parts.append("\n\n".join(current))
            current, words = [], 0
        current.append(p)
        words += n
    if current:
        parts.append("\n\n".join(current))
    return parts


def chunk_document(doc: Document, *, max_words: int = MAX_WORDS) -> list[Chunk]:
    """One chunk per ``##`` section (long sections split at paragraphs)."""
    body = re.sub(r"^#\s+.*$", "", doc.body, count=1, flags=re.MULTILINE)  # the H1 repeats the title
    matches = list(_HEADING.finditer(body))
    sections: list[tuple[str, str, str]] = []
    preamble = body[: matches[0].start()] if matches else body
    if preamble.strip():
        sections.append(("0", "", preamble.strip()))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        heading = m.group(1).strip()
        numbered = _NUMBERED.match(heading)
        if numbered:
            number, heading = numbered.group(1), numbered.group(2).strip()
        else:
            number = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-") or str(i + 1)
        text = body[m.end() : end].strip()
        if text:
            sections.append((number, heading, text))
    base = {
        "doc_type": doc.doc_type,
        "doc_id": doc.id,
        "title": doc.title,
        "workflow": doc.workflows,
        "source": doc.source,
    }
    for key in ("owner", "version", "effective"):
        if key in doc.meta:
            base[key] = str(doc.meta[key])
    for key in ("sku", "node"):
        if key in doc.meta:
            base[key] = doc.meta[key]
    keywords = _keywords(doc, {number for number, _, _ in sections})
    chunks: list[Chunk] = []
    for number, heading, text in sections:
        parts = _split_long(text, max_words)
        for j, part in enumerate(parts):
            cid = f"{doc.id}#{number}" + (f".p{j + 1}" if len(parts) > 1 else "")
            payload = {**base, "section": number, "heading": heading, "text": part, "chunk_id": cid}
            chunks.append(Chunk(cid, doc.id, doc.title, number, heading, part, payload))
        if number in keywords:
            first = f"{doc.id}#{number}" + (".p1" if len(parts) > 1 else "")
            kid = f"{doc.id}#{number}.keywords"
            payload = {
                **base,
                "section": number,
                "heading": heading,
                "text": parts[0],
                "chunk_id": kid,
                "passage": first,
                "keywords": keywords[number],
            }
            chunks.append(
                Chunk(kid, doc.id, doc.title, number, heading, parts[0], payload, "; ".join(keywords[number]))
            )
    return chunks


def _keywords(doc: Document, sections: set[str]) -> dict[str, list[str]]:
    """The front matter's ``keywords``: section number -> staff phrases for it."""
    raw = doc.meta.get("keywords")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DocumentError(f"{doc.source}: front matter field 'keywords' must map section numbers to phrases")
    out: dict[str, list[str]] = {}
    for key, phrases in raw.items():
        number = str(key)
        if number not in sections:
            raise DocumentError(
                f"{doc.source}: front matter field 'keywords' names section {number!r}, which has no text"
            )
        items = [phrases] if isinstance(phrases, str) else list(phrases or [])
        cleaned = [str(p).strip() for p in items if str(p).strip()]
        if cleaned:
            out[number] = cleaned
    return out


def load_documents(path: str | Path) -> list[Document]:
    """Every ``*.md`` under a directory (sorted), or the one file given."""
    root = Path(path)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*.md") if p.is_file())
    else:
        raise FileNotFoundError(f"no such file or directory: {root}")
    docs = [parse_document(f.read_text(encoding="utf-8"), str(f)) for f in files]
    seen: dict[str, str] = {}
    for d in docs:
        if d.id in seen:
            raise DocumentError(f"{d.source}: id {d.id} is already used by {seen[d.id]}")
        seen[d.id] = d.source
    return docs


SOP_DIR = Path(__file__).parent / "sops"
