"""Decisions cite the SOP section they follow and quote it, from the shipped SOP files."""

from __future__ import annotations

from typing import Any

import pytest

from domain.decisions import Proposal
from domain.governance import gated_decision
from domain.models import Policy
from knowledge.citations import RULES, cite_sop, quote, rule_for, sections
from knowledge.documents import SOP_DIR


def proposal(workflow: str, outcome: str, **evidence: Any) -> Proposal:
    return Proposal(
        workflow=workflow,  # type: ignore[arg-type]
        subject="SO-1",
        outcome=outcome,
        confidence=0.9,
        rationale="Engine text.",
        evidence={"engine": "test/1", **evidence},
        actions=[],
    )


@pytest.mark.parametrize(("key", "target"), sorted(RULES.items(), key=str))
def test_every_rule_points_at_a_real_section_and_quotes_its_words(key: Any, target: tuple[str, str]) -> None:
    said = quote(*target)
    assert said and said.endswith((".", "…"))
    source = next(SOP_DIR.glob(f"{target[0]}-*.md")).read_text()
    assert said.rstrip("…")[:60] in " ".join(source.split())


@pytest.mark.parametrize(
    ("workflow", "outcome", "evidence", "ref"),
    [
        ("order_release", "held", {"hold_reason": "credit_hold"}, "SOP-FIN-001 §1"),
        ("order_release", "held", {"hold_reason": "no_stock"}, "SOP-WAV-001 §2"),
        ("exception_triage", "auto_resolved", {"play": "reallocate"}, "SOP-PCK-001 §3"),
        ("exception_triage", "cycle_count", {"play": "count"}, "SOP-INV-001 §2"),
        ("reconciliation", "discrepancy", {"classes": ["lot_mismatch", "short_shipment"]}, "SOP-RCV-001 §5"),
        ("reconciliation", "discrepancy", {"finding": "duplicate_receipt"}, "SOP-RCV-002 §1"),
        ("customer_service", "change_line_qty", {}, "SOP-CS-001 §5"),
    ],
)
def test_the_qualifier_in_the_evidence_picks_the_rule(
    workflow: str, outcome: str, evidence: dict[str, Any], ref: str
) -> None:
    cited = cite_sop(proposal(workflow, outcome, **evidence))
    assert cited.evidence["sop"] == ref
    assert cited.rationale.startswith("Engine text. Per " + ref + ': "')
    assert cited.evidence["sop_quote"] in cited.rationale


def test_a_no_op_or_an_unmapped_outcome_cites_nothing_and_a_citation_is_never_doubled() -> None:
    assert rule_for("order_release", "no_action", {}) is None
    assert rule_for("order_release", "something_new", {}) is None
    untouched = proposal("order_release", "no_action")
    assert cite_sop(untouched) == untouched
    once = cite_sop(proposal("order_release", "released"))
    assert cite_sop(once) == once


def test_every_recorded_decision_is_built_with_its_citation() -> None:
    decision = gated_decision(
        cite_sop(proposal("discrepancy", "timing_difference")),
        Policy(),
        "dec-1",
        actor="crossdock-engine",
        default_engine="x",
    )
    assert decision.evidence["sop"] == "SOP-INV-003 §2" and "Per SOP-INV-003 §2" in decision.rationale


def test_sections_cover_every_shipped_sop() -> None:
    ids = {doc for doc, _ in sections()}
    assert len(ids) == len(list(SOP_DIR.glob("SOP-*.md")))
