"""Answer templates over facts, and the guard an LLM-written answer must pass.

Templates state only what a cited record says. :func:`check_answer` finds statuses, dates and
quantities in any text that the facts do not support; the LLM layer calls it on its draft and
falls back to the template answer when it returns anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

from chat.facts import AvailabilityFacts, Citation, Facts, OrderFacts, ProductFacts, as_date
from chat.intents import asked_words, product_topic
from chat.policy import Verdict
from domain.decisions import Decision, Proposal
from knowledge.citations import engine_rationale

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
        if of.view.status == "cancelled":  # nothing is reserved or promised any more
            out.append(f"Line {ln.line}: {qty(ln.qty)} × {sku}{sub}.")
            cites.append(Citation(kind="order", id=of.order_id, field=f"lines[{ln.line}]"))
            continue
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
            proposed = as_date(_promised(backorder).get(str(ln.line))) if backorder is not None else None
            if ln.promise_date is not None:
                bo += f", promised for {ln.promise_date.isoformat()}"
                cites.append(Citation(kind="order", id=of.order_id, field=f"lines[{ln.line}].promise_date"))
            elif backorder is not None and proposed is not None:
                state = "awaiting review" if backorder.status == "pending_review" else words(backorder.status)
                bo += f", proposed promise date {proposed.isoformat()} ({state})"
                cites.append(Citation(kind="decision", id=backorder.id, field="evidence.promise_dates"))
            else:
                bo += ", no promise date yet"
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
    if v.order.ship_by is not None and v.status != "cancelled":
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


def policy_answer(of: OrderFacts, verdict: Verdict, action: str, offer: str | None = None) -> str:
    """Whether the order may still be cancelled, changed, re-addressed or expedited; with
    ``offer`` (what yes would do), the question that asks for it."""
    verb = {"cancel": "cancelled", "address_change": "re-addressed", "expedite": "expedited"}.get(action, "changed")
    ask = f" {offer}" if offer else ""
    if action == "expedite":
        if of.view.status in ("cancelled", "shipped"):
            return f"No: {of.order_id} is {words(of.view.status)}, so it can no longer be expedited."
        return f"Yes: {of.order_id} is {words(of.view.status)}; planning can expedite it.{ask}"
    if verdict.allowed:
        return f"Yes: {of.order_id} is {words(of.view.status)} and not yet on a wave, so it can still be {verb}.{ask}"
    if verdict.via_ticket:
        waves = ", ".join(w.wave_id for w in of.waves)
        return (
            f"{of.order_id} is already on wave {waves}, so it can't be {verb} directly; "
            f"I can open a ticket for the warehouse {WAREHOUSE_ASKS.get(action, WAREHOUSE_ASKS['cancel'])}.{ask}"
        )
    return f"No: {of.order_id} is {words(of.view.status)}, so it can no longer be {verb}."


CONFIRM = "Shall I? Reply yes to confirm."
# What a warehouse ticket asks for, once the order is on a released wave (SOP-CS-001 §2, SOP-CS-002 §2).
WAREHOUSE_ASKS = {
    "cancel": "to stop the pick and pull the order before packing",
    "change": "to change the pick before packing",
    "address_change": "to reprint the shipping label with the new address",
}


def _lines(n: int) -> str:
    return f"{n} line" if n == 1 else f"{n} lines"


def restatement(action: str, of: OrderFacts | None, proposal: Proposal, transcript_turns: int = 0) -> str:
    """What yes would do, in words: the request restated from the proposal built for it."""
    team = str(proposal.actions[0].payload.get("team", "")) if proposal.actions else ""
    review = " A planner reviews it before it takes effect." if proposal.review_required else ""
    if action == "handover":
        about = f" about {of.order_id}" if of is not None else ""
        n = transcript_turns
        so_far = f" ({n} message{'s' if n != 1 else ''} so far)" if n else ""
        return (
            f"I can hand this conversation over to a person in customer service{about}: they get a ticket "
            f"with the transcript{so_far} and contact you."
        )
    if of is None:
        return "I can open a ticket to customer service with your message."
    oid, status = of.order_id, words(of.view.status)
    if team == "warehouse":
        waves = ", ".join(w.wave_id for w in of.waves)
        what = {"cancel": "cancel it", "change": "change it", "address_change": "change its address"}.get(
            action, "change it"
        )
        asks = WAREHOUSE_ASKS.get(action, WAREHOUSE_ASKS["change"])
        return (
            f"{oid} is already on wave {waves}, so I can't {what} directly. "
            f"I can send a ticket to the warehouse {asks}.{review}"
        )
    if proposal.outcome == "cancel":
        return f"I can cancel {oid} ({_lines(len(of.view.lines))}, {status}, not yet on a wave).{review}"
    if proposal.outcome == "change_line_qty":
        payload = proposal.actions[0].payload
        cur = proposal.evidence.get("current_qty")
        was = f" from {qty(float(cur))}" if isinstance(cur, int | float) else ""
        return (
            f"I can change line {payload['line']} of {oid}{was} to {qty(float(payload['qty']))} (not yet on a "
            f"wave; the reservation above the new quantity is given back).{review}"
        )
    if proposal.outcome == "expedite":
        return f"I can ask planning to expedite {oid} ({_lines(len(of.view.lines))}, {status}).{review}"
    if action == "change":
        reason = str(proposal.rationale).split("not made directly: ", 1)[-1].rstrip(".")
        hint = ""
        if "which line and which quantity" in reason:
            hint = f" (Or tell me the line and the new quantity, like “change line 1 of {oid} to 2”.)"
        return (
            f"I can't make that change to {oid} directly: {reason}. I can send it to customer service as a "
            f"ticket.{review}{hint}"
        )
    if action == "address_change":
        return f"I can send an address change for {oid} ({status}, not yet on a wave) to customer service as a ticket."
    return f"I can open a ticket to customer service about {oid} with your message."


def request_summary(action: str, of: OrderFacts | None, line: int | None = None, new_qty: float | None = None) -> str:
    """The request in a few words, for "OK, I won't …"."""
    oid = of.order_id if of is not None else None
    if action == "handover":
        return "hand this conversation over"
    if oid is None:
        return "open that ticket"
    if action == "change" and line is not None and new_qty is not None:
        return f"change line {line} of {oid} to {qty(new_qty)}"
    return {
        "cancel": f"cancel {oid}",
        "change": f"change {oid}",
        "address_change": f"change the address of {oid}",
        "expedite": f"expedite {oid}",
    }.get(action, f"open a ticket about {oid}")


_REQUEST_LABELS = {"cancel": "cancellation", "change_line_qty": "line change", "expedite": "expedite request"}


def request_label(d: Decision) -> str:
    if d.outcome in _REQUEST_LABELS:
        return _REQUEST_LABELS[d.outcome]
    subject = d.actions[0].payload.get("subject") if d.actions else None
    return f"ticket “{subject}”" if subject else "ticket"


def request_state(d: Decision) -> str:
    return {
        "pending_review": "waiting for review",
        "awaiting_planner": "waiting for a planner",
        "executing": "under way",
        "executed": "sent" if d.outcome == "ticket_opened" else "done",
        "observed": "recorded only (nothing was changed)",
        "rejected": "rejected by a planner",
        "superseded": "replaced by a later request",
        "failed": f"failed ({d.error})" if d.error else "failed",
    }.get(d.status, words(d.status))


def requests_sentence(of: OrderFacts, about: str | None = None) -> tuple[str, list[Citation]]:
    """The chat requests recorded for the order (those ``about`` one kind: cancel, change, expedite, ticket)."""
    wanted = {
        "cancelled": ("cancel",),
        "changed": ("change",),
        "expedited": ("expedite",),
        "ticket": ("ticket",),
    }.get(about or "", ())
    found = [
        d for d in of.requests if not wanted or any(w in (d.outcome + " " + request_label(d)).lower() for w in wanted)
    ]
    if not found:
        if about == "cancelled" and of.view.status != "cancelled":
            return f"No cancellation request is recorded for {of.order_id}.", []
        if about == "expedited":
            return f"No expedite request is recorded for {of.order_id}.", []
        if about == "changed":
            return f"No change request is recorded for {of.order_id}.", []
        if about == "ticket":
            return f"No ticket from chat is recorded for {of.order_id}.", []
        return "", []
    parts = [f"{request_label(d)}: {request_state(d)} (decision {d.id})" for d in found[-3:]]
    cites = [Citation(kind="decision", id=d.id, field="status") for d in found[-3:]]
    return "Requests recorded from chat: " + "; ".join(parts) + ".", cites


def state_answer(of: OrderFacts, asked: str, why: bool = False) -> tuple[str, list[Citation]]:
    """A yes/no question about the order's state, answered from the order, then its status; "why
    was it cancelled?" (``why``) with the decision that cancelled it."""
    v, oid = of.view, of.order_id
    status = v.status
    if why and asked == "cancelled" and status == "cancelled":
        text, cites = status_answer(of)
        d = of.latest("cancelled", "cancel") or next(
            (r for r in reversed(of.requests) if r.outcome == "cancel" and r.status == "executed"), None
        )
        if d is None:
            return f"{text} No recorded decision says why.", cites
        reason, more = _rationale(d)
        return f"{text} Decision {d.id}: {reason}", cites + more
    yes = {
        "cancelled": status == "cancelled",
        "shipped": status == "shipped",
        "held": status == "held",
        "released": status in ("released", "partially_released"),
        "backordered": status == "backordered" or any(ln.backordered > 0 for ln in v.lines),
    }
    no = {
        "cancelled": f"No: {oid} is not cancelled.",
        "shipped": f"No: {oid} has not shipped yet.",
        "held": f"No: {oid} is not on hold.",
        "released": f"No: {oid} is not released yet.",
        "backordered": f"No: nothing on {oid} is backordered.",
    }
    if asked in yes:
        lead = ("" if why else "Yes.") if yes[asked] else no[asked]
    elif asked == "delivered":
        lead = (
            f"{oid} has shipped, but I can't see carrier deliveries, so I can't tell whether it has arrived."
            if status == "shipped"
            else f"No: {oid} has not shipped yet, so it has not been delivered."
        )
    elif asked == "address":
        region = f" (the region {v.order.region})" if v.order.region else ""
        lead = (
            f"I don't have the delivery address of {oid}: the order records hold only where it ships to{region}. "
            "I can send an address change to customer service if it needs to change."
        )
    else:
        lead = ""
    text, cites = status_answer(of)
    requests, more = requests_sentence(of, asked if asked in ("cancelled", "changed", "expedited", "ticket") else None)
    return " ".join(p for p in (lead, text, requests) if p), cites + more


def eta_sentence(of: OrderFacts) -> str:
    """What can be said about when an order arrives: the records hold shipping, not delivery."""
    v = of.view
    if v.status == "cancelled":
        return ""
    if v.status == "shipped":
        return "It has shipped; I can't see the carrier's delivery date."
    if v.order.ship_by is None:
        return "I can't see a delivery date, and no ship-by date is set yet."
    return "I can't see a delivery date; the records hold when it ships, not when it arrives."


def action_answer(of: OrderFacts | None, decision: Decision, action: str) -> str:
    what = {
        "cancel": "Cancellation",
        "change": "Change request",
        "address_change": "Address change request",
        "ticket": "Ticket",
        "expedite": "Expedite request",
        "handover": "Hand-over",
    }[action]
    if of is not None:
        subject = f" for {of.order_id}"
    elif action == "handover":
        subject = " to customer service (a ticket with this conversation)"
    else:
        subject = " to customer service"
    if decision.outcome == "ticket_opened" and action in ("cancel", "change", "address_change"):
        what = f"{what}{subject} went to a ticket ({engine_rationale(decision.rationale, decision.evidence)})"
    else:
        what = f"{what}{subject}"
    if decision.status == "executed":
        done = "done" if decision.outcome != "ticket_opened" else "ticket sent"
        if action == "handover":
            done = "ticket sent; a person in customer service will pick it up"
        elif action == "expedite":
            done = "sent to planning as a high-priority ticket"
        return f"{what}: {done}, recorded as decision {decision.id}."
    if decision.status == "pending_review":
        why = decision.evidence.get("governance", "policy")
        return f"{what}: recorded as decision {decision.id}, waiting for review ({why})."
    if decision.status == "observed":
        return f"{what}: recorded as decision {decision.id}; it is only observed, nothing was changed."
    return (
        f"{what}: decision {decision.id} is {words(decision.status)}{': ' + decision.error if decision.error else ''}."
    )


def product_answer(pf: ProductFacts, message: str) -> str:
    """A product question answered from the catalogue record only; anything else is refused."""
    desc = pf.description.strip()
    subs = ", ".join(f"{s} ({d})" if d else s for s, d in pf.substitutes)
    sub_text = (
        f"The catalogue lists {subs} as {'a substitute' if len(pf.substitutes) == 1 else 'substitutes'}."
        if pf.substitutes
        else f"The catalogue lists no substitute for {pf.sku}."
    )
    described = (
        f"The catalogue describes {pf.sku} as “{desc}”." if desc else f"The catalogue has no description of {pf.sku}."
    )
    topic = product_topic(message)
    if topic == "substitutes":
        return f"{described} {sub_text}"
    if topic == "description":
        return f"{described} {sub_text}"
    known = set(re.findall(r"[a-z0-9][a-z0-9-]*", desc.lower()))
    hits = [w for w in asked_words(message) if w in known]
    if hits:
        return f"{described} That is all it says about {', '.join(dict.fromkeys(hits))}."
    holds = f"its description (“{desc}”)" if desc else "no description"
    return (
        f"I don't have that information about {pf.sku}. The catalogue holds only {holds} and its substitutes "
        f"({subs or 'none'})."
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
