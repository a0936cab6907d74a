"""The SOP section each decision follows, and the sentence of it the rationale quotes.

Every engine's proposal is mapped to the section of the shipped SOPs (``knowledge/sops``) that
governs it, by workflow, outcome and, where one outcome covers several rules, a qualifier read
from its evidence (the hold reason, the triage play, the reconciliation finding). The quote is
the section's first sentence, read from the SOP file itself, so a rationale can never cite words
the SOP no longer says; a rule pointing at a section that does not exist fails the test suite.

No Qdrant and no model here: the SOP markdown is parsed directly, once per process.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from domain.decisions import Proposal
from knowledge.documents import SOP_DIR, chunk_document, load_documents

# (workflow, outcome, qualifier) -> (SOP id, section). A qualifier of None matches any.
RULES: dict[tuple[str, str | None, str | None], tuple[str, str]] = {
    ("order_release", "released", None): ("SOP-WAV-001", "2"),
    ("order_release", "partially_released", None): ("SOP-WAV-001", "2"),
    ("order_release", "substituted", None): ("SOP-ALC-001", "1"),
    ("order_release", "held", "credit_hold"): ("SOP-FIN-001", "1"),
    ("order_release", "held", "payment_failed"): ("SOP-FIN-002", "2"),
    ("order_release", "held", None): ("SOP-WAV-001", "2"),
    ("order_release", "backordered", None): ("SOP-CS-003", "3"),
    ("order_release", "waves_planned", None): ("SOP-WAV-001", "3"),
    ("order_release", "escalated", None): ("SOP-ESC-001", "4"),
    ("allocation", "reoptimised", None): ("SOP-PCK-001", "3"),
    ("exception_triage", None, "repick"): ("SOP-PCK-001", "2"),
    ("exception_triage", None, "reallocate"): ("SOP-PCK-001", "3"),
    ("exception_triage", None, "substitute"): ("SOP-PCK-001", "4"),
    ("exception_triage", None, "backorder"): ("SOP-PCK-001", "5"),
    ("exception_triage", None, "escalate"): ("SOP-ESC-001", "4"),
    ("exception_triage", None, "correct"): ("SOP-INV-002", "1"),
    ("exception_triage", None, "count"): ("SOP-INV-001", "2"),
    ("exception_triage", None, "hold_payment"): ("SOP-FIN-002", "3"),
    ("exception_triage", None, "cancel"): ("SOP-CS-001", "2"),
    ("discrepancy", "discrepancy", None): ("SOP-INV-003", "3"),
    ("discrepancy", "timing_difference", None): ("SOP-INV-003", "2"),
    ("discrepancy", "held", None): ("SOP-INV-003", "4"),
    ("reconciliation", "matched", None): ("SOP-RCV-001", "3"),
    ("reconciliation", "discrepancy", "short_shipment"): ("SOP-RCV-001", "4"),
    ("reconciliation", "discrepancy", "over_shipment"): ("SOP-RCV-001", "4"),
    ("reconciliation", "discrepancy", "lot_mismatch"): ("SOP-RCV-001", "5"),
    ("reconciliation", "discrepancy", "damaged"): ("SOP-RCV-001", "6"),
    ("reconciliation", "discrepancy", "duplicate_receipt"): ("SOP-RCV-002", "1"),
    ("reconciliation", "discrepancy", "receipt_without_asn"): ("SOP-RCV-003", "4"),
    ("reconciliation", "discrepancy", "asn_overdue"): ("SOP-RCV-003", "1"),
    ("reconciliation", "discrepancy", None): ("SOP-RCV-001", "2"),
    ("reconciliation", "escalated", None): ("SOP-ESC-001", "4"),
    ("backorder_prevention", "transfer_proposed", None): ("SOP-ALC-003", "1"),
    ("backorder_prevention", "expedite_proposed", None): ("SOP-PLN-001", "1"),
    ("backorder_prevention", "safety_stock_proposed", None): ("SOP-ALC-002", "3"),
    ("backorder_prevention", "stockout_announced", None): ("SOP-PLN-002", "2"),
    ("customer_service", "cancel", None): ("SOP-CS-001", "1"),
    ("customer_service", "change_line_qty", None): ("SOP-CS-001", "5"),
    ("customer_service", "ticket_opened", None): ("SOP-ESC-001", "4"),
}

# Where one section covers several classes, the sentence quoted is the one about the decision's
# class (the first sentence containing these words), not the section's first sentence.
FOCUS: dict[tuple[str, str | None, str | None], str] = {
    ("reconciliation", "discrepancy", "over_shipment"): "over shipment",
}

# Outcomes that decide nothing cite nothing.
SILENT = frozenset({"no_action", "in_sync", "rejected_agent_output"})
_QUALIFIER_KEYS = ("hold_reason", "play", "finding")


def qualifier(evidence: dict[str, Any]) -> str | None:
    """What distinguishes rules within one outcome: the hold reason, the play, or the finding."""
    for key in _QUALIFIER_KEYS:
        value = evidence.get(key)
        if isinstance(value, str) and value:
            return value
    classes = evidence.get("classes")
    if isinstance(classes, list) and classes and isinstance(classes[0], str):
        return classes[0]
    return None


def _rule_key(workflow: str, outcome: str, evidence: dict[str, Any]) -> tuple[str, str | None, str | None] | None:
    if outcome in SILENT:
        return None
    q = qualifier(evidence)
    for key in ((workflow, outcome, q), (workflow, outcome, None), (workflow, None, q)):
        if key in RULES:
            return key
    return None


def rule_for(workflow: str, outcome: str, evidence: dict[str, Any]) -> tuple[str, str] | None:
    """The (SOP id, section) a decision follows, or None when no SOP governs it."""
    key = _rule_key(workflow, outcome, evidence)
    return RULES[key] if key is not None else None


@cache
def sections() -> dict[tuple[str, str], str]:
    """Every shipped SOP section's text, by (SOP id, section number)."""
    out: dict[tuple[str, str], str] = {}
    for doc in load_documents(SOP_DIR):
        for chunk in chunk_document(doc, max_words=10_000):
            out[(chunk.doc_id, chunk.section)] = chunk.text
    return out


def first_sentence(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    m = re.match(r"(.+?[.!?])(?:\s|$)", flat)
    sentence = m.group(1) if m else flat
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + "…"


def quote(doc_id: str, section: str, about: str | None = None) -> str:
    """The first sentence of an SOP section, or with ``about`` its first sentence containing those
    words (the first sentence when none does); KeyError if the section does not exist."""
    text = sections()[(doc_id, section)]
    if about:
        flat = " ".join(text.split())
        for sentence in re.split(r"(?<=[.!?])\s+", flat):
            if about.lower() in sentence.lower():
                return first_sentence(sentence)
    return first_sentence(text)


def engine_rationale(rationale: str, evidence: dict[str, Any]) -> str:
    """A rationale without the SOP quote ``cite_sop`` appended (for answers that cite the SOP apart)."""
    ref, said = evidence.get("sop"), evidence.get("sop_quote")
    suffix = f' Per {ref}: "{said}"'
    return rationale[: -len(suffix)] if ref and said and rationale.endswith(suffix) else rationale


def cite_sop(proposal: Proposal) -> Proposal:
    """The proposal with the SOP it follows in its evidence (``sop``, ``sop_quote``) and the
    quote at the end of its rationale; unchanged when no SOP governs it or it already cites one."""
    if "sop" in proposal.evidence:
        return proposal
    key = _rule_key(proposal.workflow, proposal.outcome, proposal.evidence)
    if key is None:
        return proposal
    rule = RULES[key]
    ref = f"{rule[0]} §{rule[1]}"
    said = quote(*rule, about=FOCUS.get(key))
    return proposal.model_copy(
        update={
            "evidence": {**proposal.evidence, "sop": ref, "sop_quote": said},
            "rationale": f'{proposal.rationale.rstrip()} Per {ref}: "{said}"',
        }
    )
