"""Sparse BM25 vectors with no model: term frequencies here, IDF in Qdrant (``Modifier.IDF``).

A document's weight for a term is BM25's saturated term frequency,
``tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))``; Qdrant multiplies it by the term's
inverse document frequency at query time, over the collection as it is then. A query's weight
for each of its distinct terms is 1, so the dot product is the BM25 score. Terms are lower-cased
words (letters, digits, and inner ``-``/``.``/``%`` so SKUs like ``SKU-0042`` stay one term),
with English stop words removed and a light suffix stemmer; each term maps to a stable 31-bit
index (blake2b), so indices do not depend on the order documents arrive in.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

K1 = 1.2
B = 0.75
AVG_LEN = 80.0  # typical chunk length in terms; fixed so a document's weights never change

_TOKEN = re.compile(r"[a-z0-9]+(?:[-._/][a-z0-9]+)*%?")
_STOP_TEXT = """
a an and are as at be been but by can could do does for from had has have if in into is it its may must
no not of on or our shall should so such than that the their them then there these they this those to
was we were what when where which while who will with within without would you your i me my how any
all each per via also only
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())


@dataclass(frozen=True)
class SparseVec:
    indices: list[int]
    values: list[float]


def _stem(word: str) -> str:
    """A deliberately small suffix stripper: enough to join 'picks'/'picking'/'picked'."""
    if len(word) <= 4 or not word.isalpha():
        return word
    for suffix, repl in (
        ("ies", "y"),
        ("ied", "y"),
        ("ing", ""),
        ("ed", ""),
        ("es", ""),
        ("s", ""),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith("ss"):
                return word
            if suffix == "es" and not word.endswith(("ches", "shes", "sses", "xes")):
                continue
            return word[: -len(suffix)] + repl
    return word


def terms(text: str) -> list[str]:
    """The BM25 terms of a text, in order, with repeats."""
    out = []
    for raw in _TOKEN.findall(text.lower()):
        if raw in STOP_WORDS:
            continue
        out.append(_stem(raw))
    return out


@lru_cache(maxsize=65536)
def term_index(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "big") & 0x7FFFFFFF


def document_vector(text: str, *, k1: float = K1, b: float = B, avg_len: float = AVG_LEN) -> SparseVec:
    """The BM25 term-frequency part of a document's weights."""
    counts = Counter(terms(text))
    length = sum(counts.values())
    norm = k1 * (1 - b + b * length / avg_len)
    weights: dict[int, float] = {}
    for term, tf in counts.items():
        i = term_index(term)
        weights[i] = weights.get(i, 0.0) + tf * (k1 + 1) / (tf + norm)
    ordered = sorted(weights)
    return SparseVec(ordered, [weights[i] for i in ordered])


def query_vector(text: str) -> SparseVec:
    """Weight 1 for each distinct query term; Qdrant supplies the IDF."""
    ordered = sorted({term_index(t) for t in terms(text)})
    return SparseVec(ordered, [1.0] * len(ordered))
