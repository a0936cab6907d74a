"""Rationales that match the facts: number formatting for the engines, and a checker.

A rationale is what a planner reads before approving, so it must say what the evidence says and
say it cleanly. ``problems`` reads a proposal or a decision (or its report dict) and lists what is
wrong with its rationale:

* a ``None``, ``null`` or ``nan`` leaked from a missing field (``DC-NE-1/None``);
* an unformatted float: more than two decimals (``0.291062 short``) or scientific notation;
* the same clause twice (clauses split on ``. ``, ``;`` and ``: ``);
* a statement the evidence contradicts: "cheapest on-time" or "released" for an order the
  evidence says ships late or is held, "no node ships by ship-by" with no late line, a quantity
  "short" or "over" on a receipt line whose classes say otherwise;
* a cited SOP sentence (``evidence["sop_quote"]``, see ``knowledge.citations``) that is about
  another class than the one the decision is about (an over-shipment quoting the sentence on
  short shipments).

``num``, ``signed`` and ``money`` are the formats the engines write numbers in: a quantity as an integer when
it is whole, else with at most two decimals; money with two decimals.

Pure: no I/O, imports nothing outside ``domain``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from domain.decisions import Decision, Proposal

EPS = 1e-9


def num(value: float) -> str:
    """A quantity as people write it: ``12`` when whole, else at most two decimals (``0.29``)."""
    rounded = round(float(value), 2)
    if abs(rounded - round(rounded)) < EPS:
        return str(int(round(rounded)))
    return f"{rounded:.2f}".rstrip("0").rstrip(".")


def signed(value: float) -> str:
    """A change in quantity with its sign: ``+3``, ``-0.5``, ``0``."""
    text = num(value)
    return text if text.startswith("-") or text == "0" else f"+{text}"


def money(value: float) -> str:
    """Money with two decimals and thousands separators (``51,788.00``)."""
    return f"{float(value):,.2f}"


def where(node: str | None, location: str | None) -> str:
    """``node/location``, or the node alone when the location is not known (never ``/None``)."""
    if node and location:
        return f"{node}/{location}"
    return node or location or "an unknown place"


_MISSING = re.compile(r"\b(?:None|null|NaN|nan|undefined)\b")
# A decimal with three or more places that is not part of a dotted version, an IP or a date.
_LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{3,}(?![\w.])")
_SCIENTIFIC = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?[eE][-+]?\d+(?![\w.])")
_CLAUSE_SPLIT = re.compile(r"\.\s+|;\s*|:\s+")
# The shortest clause worth calling a repetition (shorter ones, "closing", may recur naturally).
_MIN_CLAUSE_WORDS = 3

# What the SOP sentence quoted for a class must talk about (any of these words, as words).
CLASS_TERMS: dict[str, tuple[str, ...]] = {
    "short_shipment": ("short",),
    "over_shipment": ("over",),
    "lot_mismatch": ("lot",),
    "damaged": ("damage", "damaged"),
    "duplicate_receipt": ("duplicate", "twice", "again"),
    "receipt_without_asn": ("asn",),
    "asn_overdue": ("asn", "overdue"),
    "credit_hold": ("credit",),
    "payment_failed": ("payment",),
}
# The classes a quote must not be about instead (a sentence on short shipments is not one on over).
_EXCLUSIVE = {"short_shipment": "over_shipment", "over_shipment": "short_shipment"}


def _fields(item: Proposal | Decision | Mapping[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    if isinstance(item, Proposal | Decision):
        return item.workflow, item.outcome, item.rationale, dict(item.evidence)
    return (
        str(item.get("workflow", "")),
        str(item.get("outcome", "")),
        str(item.get("rationale", "")),
        dict(item.get("evidence") or {}),
    )


def _clauses(text: str) -> list[str]:
    out = []
    for part in _CLAUSE_SPLIT.split(text):
        norm = " ".join(part.strip().strip(".;:\"'").lower().split())
        if len(norm.split()) >= _MIN_CLAUSE_WORDS:
            out.append(norm)
    return out


def _has_word(text: str, words: tuple[str, ...]) -> bool:
    return any(re.search(rf"\b{re.escape(w)}\b", text, re.IGNORECASE) for w in words)


def _class_of(evidence: Mapping[str, Any]) -> str | None:
    """The class a citation was chosen for (as ``knowledge.citations.qualifier`` reads it)."""
    for key in ("hold_reason", "play", "finding"):
        value = evidence.get(key)
        if isinstance(value, str) and value:
            return value
    classes = evidence.get("classes")
    if isinstance(classes, list) and classes and isinstance(classes[0], str):
        return classes[0]
    return None


def _late_lines(evidence: Mapping[str, Any]) -> bool:
    sourcing = evidence.get("sourcing")
    return isinstance(sourcing, Mapping) and bool(sourcing.get("late_lines"))


def _contradictions(workflow: str, outcome: str, text: str, evidence: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    low = text.lower()
    late = _late_lines(evidence)
    says_late = "ships by ship-by" in low and ("no node" in low or "not" in low)
    if "on-time" in low and "cheapest on-time" in low and (late or says_late):
        out.append("says 'cheapest on-time' but the evidence has lines that ship late")
    if says_late and not late and "sourcing" in evidence:
        out.append("says no node ships by ship-by but the evidence has no late line")
    if outcome in ("held", "backordered", "escalated") and re.search(r"\breleased (?:from|what)\b", low):
        out.append(f"says 'released' but the outcome is {outcome}")
    if outcome in ("released", "partially_released", "substituted") and low.startswith("held"):
        out.append(f"says 'held' but the outcome is {outcome}")
    classes = evidence.get("classes")
    if workflow == "reconciliation" and isinstance(classes, list):
        body = low.split(" per sop-")[0]  # the engine's words, not the SOP's
        if re.search(r"\d short\b", body) and "short_shipment" not in classes:
            out.append("says units are short but the line is not classed a short shipment")
        if re.search(r"\d over\b", body) and "over_shipment" not in classes:
            out.append("says units are over but the line is not classed an over shipment")
    return out


def _citation(evidence: Mapping[str, Any]) -> list[str]:
    ref, said = evidence.get("sop"), evidence.get("sop_quote")
    if not isinstance(ref, str) or not isinstance(said, str):
        return []
    cls = _class_of(evidence)
    terms = CLASS_TERMS.get(cls or "")
    if cls is None or terms is None:
        return []
    if _has_word(said, terms):
        return []
    other = _EXCLUSIVE.get(cls)
    about = other if other and _has_word(said, CLASS_TERMS[other]) else f"not {cls}"
    return [f"cites {ref} for {cls}, but the quoted sentence is about {about.replace('_', ' ')}"]


def problems(item: Proposal | Decision | Mapping[str, Any]) -> list[str]:
    """What is wrong with a rationale, one line each; an empty list when nothing is."""
    workflow, outcome, text, evidence = _fields(item)
    out: list[str] = []
    if not text.strip():
        return ["the rationale is empty"]
    for m in _MISSING.finditer(text):
        out.append(f"a missing value shows as {m.group(0)!r}: …{text[max(0, m.start() - 30) : m.end() + 10]}…")
    for m in _LONG_FLOAT.finditer(text):
        out.append(f"an unformatted number: {m.group(0)}")
    for m in _SCIENTIFIC.finditer(text):
        out.append(f"a number in scientific notation: {m.group(0)}")
    seen: set[str] = set()
    for clause in _clauses(text):
        if clause in seen:
            out.append(f"a clause is repeated: {clause!r}")
        seen.add(clause)
    out += _contradictions(workflow, outcome, text, evidence)
    out += _citation(evidence)
    return out
