"""Answer templates over facts, and the guard an LLM-written answer must pass.

Templates state only what a cited record says. :func:`check_answer` finds statuses, dates and
quantities in any text that the facts do not support; the LLM layer calls it on its draft and
falls back to the template answer when it returns anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

from domain.decisions import Decision
from knowledge.citations import engine_rationale
from tools.chat.facts import AvailabilityFacts, Citation, Facts, OrderFacts, as_date
from tools.chat.policy import Verdict

# ---------------------------------------------------------------------------- check_answer

_STATUS_WORDS: dict[str, str] = {
    "partially released": "partially_released",
    "partially_released": "partially_released",
    "pending review": "pending_review",
    "pending_review": "pending_review",
    "back-ordered": "backordered",
    "back ordered": "backordered",
    "backordered": "backordered",
    "on hold": "held",
    "held": "held",
    "released": "released",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "shipped": "shipped",
    "delivered": "delivered",
    "in transit": "in_transit",
    "out for delivery": "out_for_delivery",
    "picked": "picked",
    "packed": "packed",
    "executed": "executed",
    "rejected": "rejected",
}


def words_re(words: Iterable[str]) -> re.Pattern[str]:
    """Any of these words or phrases as a whole, longest first, case-insensitive."""
    return re.compile(
        r"\b(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b", re.IGNORECASE
    )


_STATUS_RE = words_re(_STATUS_WORDS)


def unsupported_statuses(text: str, regex: re.Pattern[str], vocab: dict[str, str], known: set[str]) -> list[str]:
    """Each status word of ``vocab`` that ``text`` asserts (not negated or hypothetical) beyond ``known``."""
    problems = []
    for m in regex.finditer(text):
        if vocab[m.group(1).lower()] in known or _NEGATION.search(text[: m.start()]):
            continue
        problems.append(f"unsupported status {m.group(1)!r}")
    return problems


_NEGATION = re.compile(
    r"\b(?:not|no|never|isn't|wasn't|aren't|cannot|can't|won't|before|until|unless|once|if|after|yet|whether"
    r"|can|could|may|might|would|will|to be)\W+"
    r"(?:\w+\W+){0,3}$",
    re.IGNORECASE,
)
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october"]
        + ["november", "december"]
    )
}
_MONTH_DATE = re.compile(
    r"\b(?:(\d{1,2})(?:st|nd|rd|th)?\s+(" + "|".join(_MONTHS) + r")|(" + "|".join(_MONTHS) + r")\s+(\d{1,2})"
    r"(?:st|nd|rd|th)?)(?:,?\s+(\d{4}))?\b",
    re.IGNORECASE,
)
_IDS = re.compile(r"\b(?:[A-Za-z]{2,}-[\w-]*\d[\w-]*|dec-[0-9a-f]+|conv-[0-9a-f]+)\b|\bline\s*#?\s*\d+\b", re.I)
_TIME = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b")
_QTY = re.compile(
    r"\b(\d+(?:\.\d+)?)\s*(?:×|x\b|units?\b|pcs\b|pieces\b|items?\b|days?\b|backordered\b|pickable\b|allocated\b)"
    r"|\b(?:qty|quantity)\s*(?:of\s*)?(\d+(?:\.\d+)?)",
    re.IGNORECASE,
)


def quoted_facts(text: str) -> Facts:
    """Everything a quoted passage (an SOP) states counts as supported when the answer quotes it."""
    f = Facts()
    plain = _IDS.sub(" ", text)
    for m in _ISO_DATE.finditer(plain):
        f.dates.add(m.group(0))
    for m in _STATUS_RE.finditer(plain):
        f.statuses.add(_STATUS_WORDS[m.group(1).lower()])
    for m in _QTY.finditer(plain):
        f.add_qty(float(m.group(1) or m.group(2)))
    return f


def check_answer(answer_text: str, facts: Facts) -> list[str]:
    """Statuses, dates and quantities ``answer_text`` states that ``facts`` does not support."""
    problems: list[str] = []
    text = _IDS.sub(" ", answer_text)
    for m in _ISO_DATE.finditer(text):
        if m.group(0) not in facts.dates:
            problems.append(f"unsupported date {m.group(0)}")
    for m in _MONTH_DATE.finditer(text):
        day = int(m.group(1) or m.group(4))
        month = _MONTHS[(m.group(2) or m.group(3)).lower()]
        year = m.group(5)
        ok = any(
            (d.month, d.day) == (month, day) and (year is None or d.year == int(year))
            for d in (as_date(x) for x in facts.dates)
            if d is not None
        )
        if not ok:
            problems.append(f"unsupported date {m.group(0)}")
    text = _TIME.sub(" ", _ISO_DATE.sub(" ", text))
    problems += unsupported_statuses(text, _STATUS_RE, _STATUS_WORDS, facts.statuses)
    for m in _QTY.finditer(text):
        qty = round(float(m.group(1) or m.group(2)), 3)
        if qty not in facts.quantities:
            problems.append(f"unsupported quantity {m.group(0).strip()!r}")
    return problems


# ---------------------------------------------------------------------------- templates


def words(status: str) -> str:
    return status.replace("_", " ")


def days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def qty(value: float) -> str:
    return f"{value:g}"


def _promised(d: Decision) -> dict[str, object]:
    found = d.evidence.get("promise_dates")
    return found if isinstance(found, dict) else {}


def _backorder_decision(of: OrderFacts) -> Decision | None:
    return of.latest("backordered")


def line_sentences(of: OrderFacts, only: list[int] | None = None) -> tuple[list[str], list[Citation]]:
    """One sentence per line: where it is allocated, on which wave, what is backordered and until when."""
    out: list[str] = []
    cites: list[Citation] = []
    backorder = _backorder_decision(of)
    for ln in of.view.lines:
        if only and ln.line not in only:
            continue
        sku = ln.substituted_by or ln.sku
        sub = f" (substitute for {ln.sku})" if ln.substituted_by else ""
        parts: list[str] = []
        for a in ln.allocations:
            wave = of.wave_of(a.node)
            if wave is not None:
                cut = f", truck cutoff {wave.cutoff:%Y-%m-%d %H:%M} UTC" if wave.cutoff else ""
                parts.append(f"{qty(a.qty)} allocated at {a.node} on wave {wave.wave_id}{cut}")
                cites.append(Citation(kind="wave", id=wave.wave_id, field="cutoff" if wave.cutoff else None))
            else:
                parts.append(f"{qty(a.qty)} allocated at {a.node}, not yet on a wave")
        if ln.backordered > 0:
            bo = f"{qty(ln.backordered)} backordered"
            if ln.promise_date is not None:
                bo += f", promised for {ln.promise_date.isoformat()}"
                cites.append(Citation(kind="order", id=of.order_id, field=f"lines[{ln.line}].promise_date"))
            elif backorder is not None and str(ln.line) in _promised(backorder):
                proposed = _promised(backorder)[str(ln.line)]
                state = "awaiting review" if backorder.status == "pending_review" else words(backorder.status)
                bo += f", proposed promise date {proposed} ({state})"
                cites.append(Citation(kind="decision", id=backorder.id, field="evidence.promise_dates"))
            parts.append(bo)
        if not parts:
            parts.append("not allocated yet")
        out.append(f"Line {ln.line}: {qty(ln.qty)} × {sku}{sub}: " + "; ".join(parts) + ".")
        cites.append(Citation(kind="order", id=of.order_id, field=f"lines[{ln.line}]"))
    return out, cites


def status_answer(of: OrderFacts, only: list[int] | None = None) -> tuple[str, list[Citation]]:
    v = of.view
    head = f"{of.order_id} is {words(v.status)}"
    if v.status == "held" and v.hold_reason:
        head += f" ({words(v.hold_reason)})"
    if v.order.ship_by is not None:
        head += f", ship by {v.order.ship_by:%Y-%m-%d}"
    lines, cites = line_sentences(of, only)
    return " ".join([head + ".", *lines]), [Citation(kind="order", id=of.order_id, field="status"), *cites]


def _rationale(d: Decision) -> tuple[str, list[Citation]]:
    """The engine's reason, and the SOP section it followed named (cited apart, not quoted)."""
    text = engine_rationale(d.rationale, d.evidence)
    cites = [Citation(kind="decision", id=d.id, field="rationale")]
    ref = d.evidence.get("sop")
    if isinstance(ref, str) and " §" in ref:
        doc, section = ref.split(" §", 1)
        text = f"{text.rstrip()} (policy {ref})"
        cites.append(Citation(kind="sop", id=f"{doc}#{section}", field="section"))
    return text, cites


def why_held_answer(of: OrderFacts) -> tuple[str, list[Citation]]:
    v = of.view
    cites = [Citation(kind="order", id=of.order_id, field="status")]
    if v.status != "held":
        return f"{of.order_id} is not on hold; it is {words(v.status)}.", cites
    d = of.latest("held")
    head = f"{of.order_id} is held ({words(v.hold_reason or 'no reason given')})."
    if d is None:
        return head + " No recorded decision explains it yet.", cites
    text, more = _rationale(d)
    return f"{head} Decision {d.id}: {text}", [*cites, *more]


def why_split_answer(of: OrderFacts) -> tuple[str, list[Citation]]:
    v = of.view
    cites = [Citation(kind="order", id=of.order_id, field="status")]
    short = [ln for ln in v.lines if ln.backordered > 0]
    nodes = {a.node for ln in v.lines for a in ln.allocations}
    if not short and len(nodes) < 2:
        return f"{of.order_id} was not split: it is {words(v.status)} with every line from one place.", cites
    parts = []
    release = of.latest("partially_released", "released")
    if release is not None:
        text, more = _rationale(release)
        parts.append(f"Decision {release.id}: {text}")
        cites += more
    backorder = _backorder_decision(of)
    if backorder is not None:
        text, more = _rationale(backorder)
        state = "awaiting review" if backorder.status == "pending_review" else words(backorder.status)
        parts.append(f"Decision {backorder.id} ({state}): {text}")
        cites += more
    lines, line_cites = line_sentences(of, [ln.line for ln in short] or None)
    head = f"{of.order_id} is {words(v.status)} and ships in parts."
    return " ".join([head, *parts, *lines]), cites + line_cites


def why_late_answer(of: OrderFacts) -> tuple[str, list[Citation]]:
    v = of.view
    if v.status == "held":
        return why_held_answer(of)
    if any(ln.backordered > 0 for ln in v.lines):
        return why_split_answer(of)
    ship_by = v.order.ship_by
    cites = [Citation(kind="order", id=of.order_id, field="status")]
    late_waves = [w for w in of.waves if w.cutoff and ship_by and w.cutoff > ship_by]
    if late_waves:
        w = late_waves[0]
        cites.append(Citation(kind="wave", id=w.wave_id, field="cutoff"))
        return (
            f"{of.order_id} is on wave {w.wave_id}, whose truck leaves {w.cutoff:%Y-%m-%d %H:%M} UTC, "
            f"after its ship-by of {ship_by:%Y-%m-%d %H:%M} UTC.",
            cites,
        )
    by = f" and due to ship by {ship_by:%Y-%m-%d}" if ship_by else ""
    return f"{of.order_id} is {words(v.status)}{by}; nothing recorded says it is late.", cites


def why_answer(of: OrderFacts) -> tuple[str, str, list[Citation]]:
    """A bare "why?": explain what is unusual about the order."""
    v = of.view
    if v.status == "held":
        return ("why_held", *why_held_answer(of))
    if any(ln.backordered > 0 for ln in v.lines) or len({a.node for ln in v.lines for a in ln.allocations}) > 1:
        return ("why_split", *why_split_answer(of))
    return ("why_late", *why_late_answer(of))


def policy_answer(of: OrderFacts, verdict: Verdict, action: str) -> str:
    verb = "cancelled" if action == "cancel" else "changed"
    if verdict.allowed:
        return (
            f"Yes: {of.order_id} is {words(of.view.status)} and not yet on a wave, so it can still be {verb}. "
            f"Ask me to {'cancel' if action == 'cancel' else 'change'} it and I will record the request."
        )
    if verdict.via_ticket:
        waves = ", ".join(w.wave_id for w in of.waves)
        return (
            f"{of.order_id} is already on wave {waves}, so it can't be {verb} directly; "
            "I can open a ticket for the warehouse to stop the pick."
        )
    return f"No: {of.order_id} is {words(of.view.status)}, so it can no longer be {verb}."


def action_answer(of: OrderFacts | None, decision: Decision, action: str) -> str:
    what = {
        "cancel": "Cancellation",
        "change": "Change request",
        "address_change": "Address change request",
        "ticket": "Ticket",
    }[action]
    subject = of.order_id if of is not None else decision.subject
    if decision.outcome == "ticket_opened" and action in ("cancel", "change", "address_change"):
        what = f"{what} for {subject} went to a ticket ({engine_rationale(decision.rationale, decision.evidence)})"
    else:
        what = f"{what} for {subject}"
    if decision.status == "executed":
        done = "done" if decision.outcome != "ticket_opened" else "ticket sent"
        return f"{what}: {done}, recorded as decision {decision.id}."
    if decision.status == "pending_review":
        why = decision.evidence.get("governance", "policy")
        return f"{what}: recorded as decision {decision.id}, waiting for review ({why})."
    if decision.status == "observed":
        return f"{what}: recorded as decision {decision.id}; it is only observed, nothing was changed."
    return (
        f"{what}: decision {decision.id} is {words(decision.status)}{': ' + decision.error if decision.error else ''}."
    )


def availability_answer(av: AvailabilityFacts) -> tuple[str, list[Citation]]:
    where = f" near {av.region}" if av.region else ""
    name = f"{av.sku}" + (f" ({av.description})" if av.description else "")
    cites: list[Citation] = []
    stocked = [n for n in av.nodes if n.pickable > 0]
    if stocked:
        per = ", ".join(
            f"{n.node} {qty(n.pickable)}"
            + (f" ({days(n.transit_days)} to {av.region})" if n.transit_days is not None else "")
            for n in stocked
        )
        text = f"{name}: {qty(av.pickable)} units pickable now — {per}."
        nearest = av.nearest
        if av.region and nearest is not None:
            text += f" Fastest{where}: {nearest.node}, {days(nearest.transit_days or 0)} on the road once shipped."
        elif av.region:
            text += f" No node with stock has a lane to {av.region}."
        return text, cites
    text = f"{name}: no pickable stock anywhere right now."
    first = av.earliest_supply
    if first is not None:
        s = first.supply
        kind = "po" if s.kind == "purchase_order" else "shipment"
        cites.append(Citation(kind=kind, id=s.id, field="date"))
        what = "purchase order" if s.kind == "purchase_order" else "transfer"
        text += f" Earliest supply: {what} {s.id} brings {qty(s.qty)} units to {s.node} on {s.date}"
        if av.region and first.arrives is not None:
            text += f", reaching {av.region} by {first.arrives.isoformat()}"
        text += "."
    else:
        text += " No supply is planned."
    return text, cites


def sop_answer(hits: list[object]) -> tuple[str, list[Citation]]:
    if not hits:
        return "I found nothing in the SOPs on that; I can open a ticket for the team.", []
    parts = []
    cites = []
    for hit in hits[:2]:
        title = str(getattr(hit, "title", "") or getattr(hit, "doc_id", "SOP"))
        section = getattr(hit, "section", None)
        body = " ".join(str(getattr(hit, "text", "")).split())
        if len(body) > 320:
            body = body[:320].rsplit(" ", 1)[0] + " …"
        parts.append(f"{title}{' — ' + str(section) if section else ''}: {body}")
        cites.append(Citation(kind="sop", id=str(getattr(hit, "id", "")), field=str(section) if section else None))
    return " ".join(parts), cites


def today_iso(d: date) -> str:
    return d.isoformat()
