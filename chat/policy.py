"""What a rep may do to an order from chat, and the proposals that carry it through the gate.

Policy: an order may be cancelled or changed until a wave holding it is released; after that
the warehouse is already picking it, so the request becomes a ticket to the warehouse. A line's
quantity may be lowered directly (``oms.update_line_qty``); an increase needs stock, so it goes
to order management as a ticket. A change that runs later (after review) is checked again
against the waves (``waved_since``). Nothing
here executes: it builds a ``Proposal`` (workflow ``customer_service``) that the caller stores
and sends through ``domain.governance.gate`` like every other decision. The rep's role, not the
message, decides whether an order-changing proposal needs review.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from chat.facts import OrderFacts
from connectors.ports import WmsPort
from domain.decisions import Action, Decision, Proposal, ticket
from domain.models import Policy

FINAL = frozenset({"cancelled", "shipped"})
ChatAction = Literal["cancel", "change", "address_change", "ticket", "expedite", "handover"]
# Roles whose order-changing requests may execute without a second person.
TRUSTED_ROLES = frozenset({"planner", "admin"})


@dataclass(frozen=True)
class Verdict:
    allowed: bool  # the change may be made in the OMS (before release to a wave)
    via_ticket: bool  # the request goes to a team instead
    reason: str


def change_verdict(of: OrderFacts) -> Verdict:
    """May this order still be cancelled or changed directly?"""
    status = of.view.status
    if status in FINAL:
        return Verdict(False, False, f"{of.order_id} is already {status}")
    if of.on_wave:
        waves = ", ".join(w.wave_id for w in of.waves)
        return Verdict(False, True, f"{of.order_id} is on released wave {waves}; the warehouse must stop the pick")
    return Verdict(True, False, f"{of.order_id} is {status} and not yet on a released wave")


def expedite_state(of: OrderFacts) -> str:
    """Where the order stands, for an expedite request: status, waves, backordered lines."""
    parts = [of.view.status.replace("_", " ")]
    if of.waves:
        parts.append("on wave " + ", ".join(w.wave_id for w in of.waves))
    short = [ln.line for ln in of.view.lines if ln.backordered > 0]
    if short:
        parts.append("backordered line " + ", ".join(str(n) for n in short))
    return "; ".join(parts)


@dataclass(frozen=True)
class LineChange:
    """What a line-quantity request becomes: a direct OMS change (``action``) or a ticket (``reason``)."""

    action: Action | None
    reason: str
    current: float | None = None


def line_change(of: OrderFacts, line: int | None, qty: float | None) -> LineChange:
    """A decrease of one named line is a direct change (its excess reservation is given back);
    anything else (no line or quantity, an unknown line, an increase, zero) is not."""
    if line is None or qty is None:
        return LineChange(None, "which line and which quantity were not both given")
    found = next((ln for ln in of.view.lines if ln.line == line), None)
    if found is None:
        return LineChange(None, f"{of.order_id} has no line {line}")
    current = found.qty
    if qty <= 0:
        return LineChange(None, f"a quantity of {qty:g} removes line {line}; cancel the order to drop it all", current)
    if qty > current + 1e-9:
        return LineChange(None, f"line {line} is {current:g}; an increase to {qty:g} needs stock re-sourced", current)
    if abs(qty - current) <= 1e-9:
        return LineChange(None, f"line {line} is already {current:g}", current)
    payload: dict[str, object] = {"order_id": of.order_id, "line": line, "qty": qty}
    action = Action(system="oms", type="update_line_qty", payload=payload)
    return LineChange(action, f"line {line} is {current:g}; the reservation above {qty:g} is given back", current)


def changes_order(action: Action) -> bool:
    """An order change the chat policy allows only before release to a wave."""
    return action.name == "oms.update_line_qty" or (
        action.name == "oms.update_order_status" and action.payload.get("status") == "cancelled"
    )


def order_change_locks(decision: Decision) -> list[str]:
    """The SKU lock keys an order change runs under: the order's SKUs, from the proposal's evidence."""
    if decision.workflow != "customer_service" or not any(changes_order(a) for a in decision.actions):
        return []
    return sorted({f"sku:{s}" for s in decision.evidence.get("skus", []) if isinstance(s, str)})


def waved_since(wms: WmsPort, decision: Decision) -> str | None:
    """Why a chat order change may no longer run: the order joined a released wave since the
    proposal (call it under ``order_change_locks``, which wave releases take too), or None."""
    if decision.workflow != "customer_service" or not any(changes_order(a) for a in decision.actions):
        return None
    waves = [w.wave_id for w in wms.waves() if decision.subject in w.orders]
    if not waves:
        return None
    return f"{decision.subject} joined wave {', '.join(waves)} before the change ran; ask again for a warehouse ticket"


def needs_review(role: str, action: ChatAction, policy: Policy) -> str | None:
    """Why a proposal from this role needs a human, or None.

    A cs_rep's request that changes an order (or, for an expedite, spends money on it) waits for
    review unless the operator set the customer_service workflow to autonomous explicitly;
    tickets and hand-overs change no order."""
    if action in ("ticket", "handover") or role in TRUSTED_ROLES:
        return None
    if policy.modes.get("customer_service") == "autonomous":
        return None
    return f"a {role} request to {action.replace('_', ' ')} an order needs review"


def build_proposal(
    action: ChatAction,
    of: OrderFacts | None,
    *,
    role: str,
    policy: Policy,
    conversation_id: str,
    detail: str = "",
    line: int | None = None,
    qty: float | None = None,
    transcript: list[str] | None = None,
) -> Proposal:
    """The proposal for one chat request; the verdict decides OMS change or ticket. A hand-over
    is a ticket to customer service carrying ``transcript`` (the conversation so far)."""
    refs = [conversation_id]
    subject = conversation_id
    evidence: dict[str, object] = {"engine": "chat/1.0.0", "conversation": conversation_id, "role": role}
    actions: list[Action]
    if of is not None:
        subject = of.order_id
        refs = [of.order_id, of.view.order.customer, conversation_id]
        verdict = change_verdict(of)
        evidence.update(
            order_status=of.view.status,
            waves=[w.wave_id for w in of.waves],
            policy=verdict.reason,
            skus=sorted({ln.substituted_by or ln.sku for ln in of.view.lines}),
        )
    else:
        verdict = Verdict(False, True, "no order named")
    if action == "handover":
        subject = conversation_id  # a hand-over is about the conversation: it replaces no request on the order
    if action == "cancel" and verdict.allowed:
        assert of is not None
        actions = [
            Action(system="oms", type="update_order_status", payload={"order_id": of.order_id, "status": "cancelled"})
        ]
        outcome, rationale = "cancel", f"Cancel {of.order_id} at the customer's request: {verdict.reason}."
    elif action == "change" and verdict.allowed and of is not None:
        what = f"line {line}" if line is not None else "the order"
        to = f" to {qty:g}" if qty is not None else ""
        change = line_change(of, line, qty)
        evidence.update(line=line, qty=qty, current_qty=change.current)
        if change.action is not None:
            actions = [change.action]
            outcome = "change_line_qty"
            rationale = f"Change {what} of {of.order_id}{to} ({change.reason}): {verdict.reason}."
        else:
            # Order management makes the change (or answers the customer) in the OMS.
            actions = [
                ticket(
                    "customer_service",
                    f"{of.order_id}: change {what}{to}",
                    f"Customer asks to change {what} of {of.order_id}{to} before release; "
                    f"not changed directly: {change.reason}. {detail}".strip(),
                    refs,
                )
            ]
            outcome = "ticket_opened"
            rationale = f"Change {what} of {of.order_id}{to} not made directly: {change.reason}"
    elif action in ("cancel", "change", "address_change") and of is not None and verdict.via_ticket:
        summary = f"Customer asks to {action.replace('_', ' ')} {of.order_id}; {verdict.reason}. {detail}".strip()
        actions = [ticket("warehouse", f"{of.order_id}: {action.replace('_', ' ')} after wave release", summary, refs)]
        outcome, rationale = "ticket_opened", f"{verdict.reason}: ticket to the warehouse."
    elif action == "address_change" and of is not None and verdict.allowed:
        summary = f"Customer asks for a new delivery address on {of.order_id}. {detail}".strip()
        actions = [ticket("customer_service", f"{of.order_id}: address change", summary, refs)]
        outcome, rationale = "ticket_opened", f"Address change for {of.order_id}: {verdict.reason}."
    elif action == "expedite" and of is not None and of.view.status not in FINAL:
        state = expedite_state(of)
        summary = f"Customer asks to expedite {of.order_id} ({state}). {detail}".strip()
        actions = [ticket("planning", f"{of.order_id}: expedite", summary, refs, priority="high")]
        outcome, rationale = "expedite", f"Expedite {of.order_id} at the customer's request: {state}."
    elif action == "handover":
        about = f" about {of.order_id}" if of is not None else ""
        lines = transcript or [f"Q: {detail}"]
        body = f"The customer asks to talk to a person{about}. Conversation {conversation_id}:\n" + "\n".join(lines)
        actions = [ticket("customer_service", f"Hand-over from chat{about}", body[:6000], refs, priority="high")]
        evidence.update(request="handover", transcript=lines)
        outcome, rationale = "ticket_opened", f"Hand-over to customer service{about} at the customer's request."
    elif action == "ticket":
        about = of.order_id if of is not None else "a customer request"
        actions = [ticket("customer_service", f"Customer request about {about}", detail or "Chat request.", refs)]
        outcome, rationale = "ticket_opened", f"Ticket for {about} opened from chat."
    else:
        actions = []
        outcome, rationale = "no_action", f"Nothing to do: {verdict.reason}."
    kind: ChatAction = "ticket" if outcome == "ticket_opened" and action != "cancel" else action
    reason = needs_review(role, kind, policy) if actions and actions[0].system == "oms" else None
    if outcome == "expedite":
        # Expediting spends money (faster freight, a supplier's premium): a rep's request is reviewed.
        reason = needs_review(role, "expedite", policy)
    if action == "change" and outcome == "ticket_opened" and verdict.allowed:
        # A change request order management makes by hand waits for review like a direct one.
        reason = needs_review(role, "change", policy)
    return Proposal(
        workflow="customer_service",
        subject=subject,
        outcome=outcome,
        confidence=1.0,
        rationale=rationale,
        evidence=evidence,
        actions=actions,
        review_required=reason is not None,
        review_reason=reason,
    )
