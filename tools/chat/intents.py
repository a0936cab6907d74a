"""Rule-based intent and entity extraction for customer-service messages."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, get_args

Intent = Literal[
    "status",
    "why_split",
    "why_held",
    "why_late",
    "why",
    "change",
    "cancel",
    "address_change",
    "availability",
    "sop",
    "ticket",
    "greeting",
    "unknown",
]
INTENTS: tuple[Intent, ...] = get_args(Intent)
ACTION_INTENTS = frozenset({"cancel", "change", "address_change", "ticket"})

_ORDER = re.compile(r"\bSO[-_ ]?(\d{1,12})\b", re.IGNORECASE)
_BARE_ORDER = re.compile(r"\border\s*(?:no\.?|number|#)?\s*#?\s*(\d{3,12})\b", re.IGNORECASE)
_SKU = re.compile(r"\bSKU[-_ ]?(\d{1,12})\b", re.IGNORECASE)
_LINE = re.compile(r"\bline\s*#?\s*(\d{1,4})\b", re.IGNORECASE)
_QTY = re.compile(r"\b(?:to|into|make it|only|qty|quantity(?: of)?)\s+(\d{1,7})(?:\s*(?:units?|pcs|pieces|x))?\b", re.I)
_REGION = re.compile(r"\b([A-Z]{2}-[A-Z]{1,3})\b")
_OTHER_LINE = re.compile(r"\b(other|second|remaining|rest of the)\s+(line|item|lines|items)\b", re.IGNORECASE)

# Text that tries to change the rules rather than ask a question. Matching it never widens
# anything (code decides what executes); it only makes the answer a refusal.
_INJECTION = re.compile(
    r"ignore (?:all |your |any |the |previous |prior |above )*(?:rules|instructions|policy|policies|guidelines)"
    r"|disregard (?:all |your |the |previous )*(?:rules|instructions|policy)"
    r"|system prompt|you are now|act as (?:an? )?admin|developer mode|jailbreak"
    r"|for (?:every ?one|everybody|all customers|all orders)|\ball (?:the )?orders\b|every order"
    r"|override (?:the )?(?:policy|gate|review)|without (?:review|approval)",
    re.IGNORECASE,
)
_QUESTION = re.compile(
    r"^\s*(?:can|could|may|is it possible|am i able|are we able|would it be possible)\b"
    r"|\b(?:can|could) (?:i|we|you|it|the customer|they)\b.*\?\s*$"
    r"|\bis it (?:still )?(?:possible|too late)\b",
    re.IGNORECASE,
)
_GREETING = re.compile(
    r"^\s*(?:hi|hello|hey|good (?:morning|afternoon|evening)|thanks|thank you|cheers)\b[\s!.,a-z]*$", re.IGNORECASE
)
_SOP_WORDS = re.compile(
    r"\b(?:policy|policies|procedure|sop|guideline|process for|what do we do|how do we|how should we|"
    r"damaged|damage|refund|return|returns|warranty|lost (?:parcel|package|shipment))\b",
    re.IGNORECASE,
)


@dataclass
class Parsed:
    """What a message asks and the entities it names."""

    intent: Intent
    order_ids: list[str] = field(default_factory=list)
    skus: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    qty: float | None = None
    region: str | None = None
    other_line: bool = False
    question: bool = False  # "can I cancel it?" asks about policy; "cancel it" asks for the action
    injection: bool = False
    refers_back: bool = False  # "it", "that order", "why?", "and the other line?"


def _unique(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def extract(message: str) -> Parsed:
    """Intent and entities of one message, by rules only."""
    text = " ".join(message.split())
    low = text.lower()
    orders = _unique([f"SO-{m}" for m in _ORDER.findall(text)] + [f"SO-{m}" for m in _BARE_ORDER.findall(text)])
    skus = _unique([f"SKU-{m}" for m in _SKU.findall(text)])
    lines = [int(n) for n in _LINE.findall(text)]
    qty_m = _QTY.search(text)
    region_m = next((m for m in _REGION.findall(text) if not m.startswith(("SO-", "SK"))), None)
    parsed = Parsed(
        intent="unknown",
        order_ids=orders,
        skus=skus,
        lines=lines,
        qty=float(qty_m.group(1)) if qty_m else None,
        region=region_m,
        other_line=bool(_OTHER_LINE.search(text)),
        question=bool(_QUESTION.search(text)),
        injection=bool(_INJECTION.search(text)),
    )
    parsed.refers_back = not orders and (
        bool(re.search(r"\b(it|this order|that order|the order|my order|its|this one|that one)\b", low))
        or parsed.other_line
        or bool(re.fullmatch(r"\s*(and )?why\??\s*", low))
        or bool(lines)
    )
    parsed.intent = _intent(low, parsed)
    return parsed


def _intent(low: str, p: Parsed) -> Intent:
    has_why = bool(re.search(r"\bwhy\b|\bhow come\b|\breason\b|\bexplain\b", low))
    if not p.order_ids and not p.skus and _GREETING.match(low):
        return "greeting"
    if re.search(r"\bcancel", low):
        return "cancel"
    if re.search(r"\baddress\b|\bdeliver (?:it )?to (?:a )?(?:different|new|another)\b|\bship (?:it )?to\b", low):
        return "address_change"
    changing = re.search(r"\b(?:change|modify|reduce|increase|lower|raise|amend|adjust)\b", low) or re.search(
        r"\bupdate (?:the |my |its )?(?:qty|quantity|line|units)\b", low
    )
    if changing and (p.order_ids or p.refers_back or re.search(r"\b(?:qty|quantity|units|line)\b", low)):
        return "change"
    if not p.order_ids and _SOP_WORDS.search(low) and not re.search(r"\bticket\b", low):
        return "sop"
    if re.search(r"\bticket\b|\bcomplain|\bescalat|\bopen a case\b|\bspeak to\b|\bcall me back\b", low):
        return "ticket"
    if has_why or re.search(r"\blate\b|\bdelay", low):
        if re.search(r"\bheld\b|\bhold\b|\bstuck\b|\bblocked\b", low):
            return "why_held"
        split_words = (
            r"\bsplit\b|\bpartial|\bpart of\b|\bonly (?:got|get|received)\b"
            r"|\btwo (?:shipments|parcels|boxes)\b|\bbackorder|\bmissing\b"
        )
        if re.search(split_words, low):
            return "why_split"
        if re.search(r"\blate\b|\bdelay|\bpromise|\btaking so long\b|\bnot (?:yet )?(?:shipped|arrived)\b", low):
            return "why_late"
        return "why"
    if p.skus and not p.order_ids:
        return "availability"
    if re.search(r"\b(?:in stock|availab|stock of|how many .* have)\b", low):
        return "availability"
    if p.order_ids or p.other_line or p.lines:
        return "status"
    if re.search(r"\b(?:status|where|track|when|update on|what'?s happening|eta)\b", low):
        return "status"
    if _SOP_WORDS.search(low):
        return "sop"
    return "unknown"
