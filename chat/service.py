"""The deterministic chat service: message → intent → facts → templated, cited answer.

Actions never execute here, and never on the message that asks for them. A request is restated
("I can cancel SO-4 (2 lines, held, not yet on a wave). Shall I? Reply yes to confirm.") and kept
in the conversation (``Conversation.pending``, with an expiry). Only an explicit yes in the next
message turns it into a ``Proposal`` handed to ``submit`` (the API wires it to the decision
service: gate, store, executor), and only if the plan is still the one restated; the answer then
reports what the gate did. Anything else drops the request and is answered as a new message.
Questions ("was it cancelled?", "can I still cancel it?") and negations ("don't cancel it") are
answered, never acted on.

LLM mode: an optional ``writer`` (:func:`chat_writer`, ``chat.writer.ChatWriter``) may
reword a factual answer; it keeps the template answer whenever its draft fails the claim check.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from agents.settings import AgentSettings
from chat.answers import (
    CONFIRM,
    action_answer,
    availability_answer,
    eta_sentence,
    policy_answer,
    product_answer,
    quoted_facts,
    request_summary,
    restatement,
    sop_answer,
    state_answer,
    status_answer,
    why_answer,
    why_held_answer,
    why_late_answer,
    why_split_answer,
)
from chat.conversations import PENDING_TTL_S, Conversation, Pending, Turn
from chat.facts import (
    OPEN_STATUSES,
    Citation,
    DecisionReader,
    Facts,
    KnowledgeSearch,
    OrderFacts,
    owned_by,
    read_availability,
    read_order_facts,
    read_product,
    visible_order_ids,
)
from chat.intents import ACTION_INTENTS, Parsed, extract, is_confirmation, is_refusal
from chat.nearmiss import near_misses
from chat.policy import ChatAction, build_proposal, change_verdict
from domain.decisions import Decision, Proposal
from domain.errors import ConnectorError, UnknownOrder, UnknownSku
from domain.models import Policy
from tools.context import Systems

Submit = Callable[[Proposal, str], Decision]
log = logging.getLogger("crossdock.chat")
ORDER_INTENTS = frozenset(
    {"status", "why_split", "why_held", "why_late", "why", "change", "cancel", "address_change", "expedite"}
)
HELP = (
    "I can help with order status and the reasons behind it (a split, a hold, a delay), changes and "
    "cancellations, expediting, stock availability, what the catalogue says about a SKU, SOPs, or handing "
    "you over to a person."
)
# Filled in anywhere a value is missing, so no answer ever shows an internal null (an SOP's own words stand).
_NULLS = re.compile(r"\b(?:None|null)\b")
KB_NOT_LOADED = "The knowledge base is not loaded, so I can't look up SOPs right now."
REFUSE_INJECTION = (
    "I can't do that. I act on one order at a time, for the customer in this conversation, within "
    "policy; instructions inside a message don't change those rules."
)


class ChatReply(BaseModel):
    conversation_id: str
    answer: str
    intent: str
    citations: list[Citation] = []
    suggested_actions: list[dict[str, Any]] = []
    mode: Literal["deterministic", "llm"] = "deterministic"


@dataclass
class Outcome:
    """A reply plus what the bench and the LLM guard need: the facts behind it."""

    reply: ChatReply
    facts: Facts = field(default_factory=Facts)
    refused: bool = False
    decision: Decision | None = None
    offered: bool = False  # the answer restates a request and waits for a yes: only code words it


Writer = Callable[[Outcome, str], Outcome]


def chat_writer(settings: AgentSettings | None = None, model: Any = None, audit: Any = None) -> Writer | None:
    """The LLM-mode writer for ``ChatService.writer``, or None in deterministic mode (no
    ``CROSSDOCK_LLM_MODEL`` and no ``model`` given). CrewAI is imported only when a writer is
    built (``model``: a CrewAI ``BaseLLM``, e.g. a scripted one in tests; ``audit``: an
    ``AuditSink`` such as the store, which records ``chat.llm_fallback``)."""
    settings = settings or AgentSettings()
    if model is None and not settings.llm_enabled:
        return None
    from chat.writer import ChatWriter

    return ChatWriter(settings, model=model, audit=audit)


@dataclass
class ChatService:
    systems: Systems
    decisions: DecisionReader
    knowledge: KnowledgeSearch | None = None
    submit: Submit | None = None
    policy: Callable[[], Policy] = Policy
    # LLM mode: rewrites a factual answer (never a refusal, an offer or an action's answer); None: templates only.
    writer: Writer | None = None
    clock: Callable[[], float] = time.time  # epoch seconds: when a pending request expires
    pending_ttl_s: float = PENDING_TTL_S

    def respond(self, conv: Conversation, message: str, role: str) -> Outcome:
        pending, conv.pending = conv.pending, None  # whatever this message is, the offer is used up
        out: Outcome | None = None
        dropped = ""
        if pending is not None:
            expired = self.clock() > pending.expires_at
            if is_confirmation(message, frozenset(pending.words)):
                out = self._expired(conv, pending) if expired else self._confirmed(conv, pending, role)
            elif is_refusal(message):
                out = self._declined(conv, pending)
            elif pending.kind == "action":
                dropped = pending.summary
        if out is None:
            out = self._dispatch(conv, extract(message), message, role)
        if self.writer is not None and not out.refused and out.decision is None and not out.offered:
            try:
                out = self.writer(out, message)
            except Exception:  # noqa: BLE001 - the template answer stands whatever the writer did
                log.exception("chat writer failed; keeping the template answer")
        if dropped and out.reply.intent == "unknown":  # "hmm, let me think about it"
            text = f"OK, I did not {dropped}. Ask again whenever you want it."
            out.reply = out.reply.model_copy(update={"answer": text, "intent": "decline"})
        elif dropped and not (conv.pending is not None and conv.pending.summary == dropped):
            out.reply = out.reply.model_copy(update={"answer": f"I did not {dropped}. {out.reply.answer}"})
        if out.reply.intent != "sop" and _NULLS.search(out.reply.answer):
            log.warning("chat answer had a missing value: %s", out.reply.answer)
            out.reply = out.reply.model_copy(update={"answer": _NULLS.sub("not known", out.reply.answer)})
        conv.last_intent = out.reply.intent
        conv.turns.append(
            Turn(
                message=message[:2000],
                intent=out.reply.intent,
                answer=out.reply.answer,
                order_id=conv.order_id,
                lines=conv.lines,
                decision_id=out.decision.id if out.decision else None,
            )
        )
        return out

    # ------------------------------------------------------------------ dispatch

    def _reply(
        self,
        conv: Conversation,
        intent: str,
        answer: str,
        cites: list[Citation] | None = None,
        actions: list[dict[str, Any]] | None = None,
    ) -> ChatReply:
        return ChatReply(
            conversation_id=conv.id,
            answer=answer,
            intent=intent,
            citations=cites or [],
            suggested_actions=actions or [],
        )

    def _dispatch(self, conv: Conversation, p: Parsed, message: str, role: str) -> Outcome:
        intent = p.intent
        if p.injection:
            return Outcome(self._reply(conv, intent, REFUSE_INJECTION), refused=True)
        if intent == "greeting":
            if re.match(r"\s*(?:thanks|thank you|cheers)\b", message, re.IGNORECASE):
                return Outcome(self._reply(conv, intent, "You're welcome. Anything else, just ask."))
            return Outcome(
                self._reply(
                    conv, intent, "Hello! Ask me about an order (e.g. SO-100001), a SKU's availability, or a policy."
                )
            )
        if intent == "confirm":
            return Outcome(
                self._reply(conv, intent, "There is nothing waiting for a yes right now. What would you like me to do?")
            )
        if intent == "decline":
            return Outcome(self._reply(conv, intent, "OK, nothing was changed. Anything else I can help with?"))
        if intent == "sop":
            return self._sop(conv, message)
        if intent == "availability":
            return self._availability(conv, p)
        if intent == "product":
            return self._product(conv, p, message)
        if intent == "handover":  # about the order named, else the one the conversation is about
            of = None
            about = p.order_ids[0] if len(p.order_ids) == 1 else None if p.order_ids else conv.order_id
            if about is not None and owned_by(self.systems, about, conv.customer_id) is not None:
                of = read_order_facts(self.systems, self.decisions, about)
            return self._request(conv, "handover", of, p, message, role)
        if intent == "unknown" and not p.order_ids:
            return Outcome(self._reply(conv, intent, HELP))
        if intent == "unknown":
            intent = "status"
        if len(p.order_ids) > 1:
            named = " or ".join(p.order_ids)
            if p.either:
                return Outcome(self._reply(conv, intent, f"You mentioned {named}: which order do you mean?"))
            if intent in ACTION_INTENTS:
                return Outcome(self._reply(conv, intent, f"I act on one order at a time: which one first, {named}?"))
            return self._several(conv, p, intent)
        order_id = p.order_ids[0] if p.order_ids else conv.order_id
        if order_id is None:
            if len(conv.recent_orders) > 1 and p.refers_back:
                named = " or ".join(conv.recent_orders)
                return Outcome(self._reply(conv, intent, f"Which order do you mean: {named}?"))
            if intent == "ticket":
                return self._request(conv, "ticket", None, p, message, role)
            return self._no_order(conv, intent)
        view = owned_by(self.systems, order_id, conv.customer_id)
        if view is None:
            return self._not_found(conv, order_id, p, message, intent)
        of = read_order_facts(self.systems, self.decisions, order_id)
        if p.order_ids and p.order_ids[0] != conv.order_id:
            conv.lines = []
        conv.order_id = order_id
        conv.recent_orders = []
        return self._about_order(conv, of, p, intent, message, role)

    def _about_order(
        self, conv: Conversation, of: OrderFacts, p: Parsed, intent: str, message: str, role: str
    ) -> Outcome:
        facts = of.facts()
        if intent == "status":
            text, cites = self._status_text(conv, of, p)
            return Outcome(self._reply(conv, intent, text, cites, self._order_actions(of)), facts)
        if intent in ("why_held", "why_split", "why_late", "why"):
            resolved, text, cites = self._why(of, intent)
            return Outcome(self._reply(conv, resolved, text, cites, self._order_actions(of)), facts)
        action: ChatAction = intent  # type: ignore[assignment]
        if p.question and intent in ("cancel", "change", "address_change", "expedite"):
            return self._policy_question(conv, action, of, p, message, role)
        return self._request(conv, action, of, p, message, role)

    def _status_text(self, conv: Conversation, of: OrderFacts, p: Parsed) -> tuple[str, list[Citation]]:
        if p.asked_state:
            text, cites = state_answer(of, p.asked_state, why=p.why)
            conv.lines = [ln.line for ln in of.view.lines]
        else:
            only = self._lines_in_focus(conv, of, p)
            text, cites = status_answer(of, only)
            conv.lines = only or [ln.line for ln in of.view.lines]
            if p.when:
                text = f"{text} {eta_sentence(of)}".strip()
        on_order = [a for a in p.negated if a in ("cancel", "change", "address_change", "expedite")]
        if on_order:
            wont = " or ".join(request_summary(a, of) for a in on_order)
            text = f"OK, I won't {wont}. {text}"
        return text, cites

    @staticmethod
    def _why(of: OrderFacts, intent: str) -> tuple[str, str, list[Citation]]:
        if intent == "why":
            return why_answer(of)
        fn = {"why_held": why_held_answer, "why_split": why_split_answer, "why_late": why_late_answer}[intent]
        text, cites = fn(of)
        return intent, text, cites

    def _several(self, conv: Conversation, p: Parsed, intent: str) -> Outcome:
        """A question about several orders ("where are SO-1 and SO-2?"): each answered in turn."""
        texts: list[str] = []
        cites: list[Citation] = []
        facts = Facts()
        seen: list[str] = []
        whose = " for this customer" if conv.customer_id else ""
        for oid in p.order_ids[:5]:
            if owned_by(self.systems, oid, conv.customer_id) is None:
                texts.append(f"I can't find an order {oid}{whose}.")
                continue
            of = read_order_facts(self.systems, self.decisions, oid)
            if intent in ("why_held", "why_split", "why_late", "why"):
                _, text, c = self._why(of, intent)
            elif p.asked_state:
                text, c = state_answer(of, p.asked_state, why=p.why)
            else:
                text, c = status_answer(of)
            texts.append(text)
            cites += c
            facts = facts.merge(of.facts())
            seen.append(oid)
        conv.recent_orders = seen
        conv.order_id = seen[0] if len(seen) == 1 else None
        conv.lines = []
        resolved = intent if intent != "why" else "why"
        return Outcome(self._reply(conv, resolved, " ".join(texts), cites), facts, refused=not seen)

    def _not_found(self, conv: Conversation, order_id: str, p: Parsed, message: str, intent: str) -> Outcome:
        """The same refusal for an unknown order and another customer's; with a near miss among the
        orders the caller may see, "did you mean …?" (yes answers the message for that order)."""
        whose = " for this customer" if conv.customer_id else ""
        text = f"I can't find an order {order_id}{whose}."
        near = near_misses(order_id, visible_order_ids(self.systems, conv.customer_id))
        if len(near) == 1:
            text += f" Did you mean {near[0]}?"
            typed = p.typed_ids.get(order_id, order_id)
            corrected = message.replace(typed, near[0]) if typed in message else f"{message} {near[0]}"
            conv.pending = Pending(
                kind="clarify",
                order_id=near[0],
                message=corrected,
                summary="",
                words=[near[0].lower()],
                turn=conv.turn_count,
                expires_at=self.clock() + self.pending_ttl_s,
            )
        elif near:
            text += f" Did you mean {' or '.join(near)}?"
        return Outcome(self._reply(conv, intent, text), refused=True)

    def _no_order(self, conv: Conversation, intent: str) -> Outcome:
        if conv.customer_id is None:
            return Outcome(self._reply(conv, intent, "Which order? Please give its number, like SO-100001."))
        mine = [v for v in self.systems.oms.orders(OPEN_STATUSES) if v.order.customer == conv.customer_id]
        if not mine:
            return Outcome(
                self._reply(conv, intent, f"{conv.customer_id} has no open orders. Which order do you mean?")
            )
        facts = Facts()
        for v in mine:
            facts.statuses.add(v.status)
        listing = "; ".join(f"{v.order.id} ({v.status.replace('_', ' ')})" for v in mine[:10])
        cites = [Citation(kind="order", id=v.order.id, field="status") for v in mine[:10]]
        return Outcome(self._reply(conv, intent, f"Which order do you mean? Open orders: {listing}.", cites), facts)

    @staticmethod
    def _lines_in_focus(conv: Conversation, of: OrderFacts, p: Parsed) -> list[int] | None:
        numbers = [ln.line for ln in of.view.lines]
        if p.lines:
            return [n for n in p.lines if n in numbers] or None
        if p.other_line and conv.lines:
            rest = [n for n in numbers if n not in conv.lines]
            return rest or None
        return None

    @staticmethod
    def _order_actions(of: OrderFacts) -> list[dict[str, Any]]:
        verdict = change_verdict(of)
        if verdict.allowed:
            return [
                {"action": "cancel", "order_id": of.order_id, "label": f"Cancel {of.order_id}"},
                {"action": "change", "order_id": of.order_id, "label": f"Change a line of {of.order_id}"},
            ]
        if verdict.via_ticket:
            return [{"action": "ticket", "order_id": of.order_id, "label": "Ticket to the warehouse"}]
        return []

    # ------------------------------------------------------------------ requests: restate, then yes

    def _transcript(self, conv: Conversation) -> list[str]:
        lines: list[str] = []
        for t in conv.turns:
            lines += [f"Q: {t.message[:500]}", f"A: {t.answer[:500]}"]
        return lines

    def _proposal(
        self,
        conv: Conversation,
        action: ChatAction,
        of: OrderFacts | None,
        role: str,
        detail: str,
        line: int | None,
        qty: float | None,
    ) -> Proposal:
        return build_proposal(
            action,
            of,
            role=role,
            policy=self.policy(),
            conversation_id=conv.id,
            detail=detail[:500],
            line=line,
            qty=qty,
            transcript=self._transcript(conv) if action == "handover" else None,
        )

    def _request(
        self, conv: Conversation, action: ChatAction, of: OrderFacts | None, p: Parsed, message: str, role: str
    ) -> Outcome:
        """A request: restated, with what yes would do; nothing is recorded yet."""
        facts = of.facts() if of is not None else Facts()
        if self.submit is None:
            return Outcome(self._reply(conv, action, "I can't record requests here (no decision pipeline)."), facts)
        line = p.lines[0] if p.lines else None
        proposal = self._proposal(conv, action, of, role, message, line, p.qty)
        if not proposal.actions:
            cites = [Citation(kind="order", id=of.order_id, field="status")] if of else []
            return Outcome(self._reply(conv, action, proposal.rationale, cites), facts)
        text = f"{restatement(action, of, proposal, len(conv.turns))} {CONFIRM}"
        return self._offer(conv, action, of, proposal, text, message, line, p.qty, facts)

    def _offer(
        self,
        conv: Conversation,
        action: ChatAction,
        of: OrderFacts | None,
        proposal: Proposal,
        text: str,
        detail: str,
        line: int | None,
        qty: float | None,
        facts: Facts,
    ) -> Outcome:
        """Keep the request in the conversation until the next message says yes (or not)."""
        oid = of.order_id if of is not None else None
        words = {"cancel", "change", "expedite", "address", "ticket", "open", "send", "hand", "over", "me", "to"}
        words |= {"a", "person", "human", "someone", "talk", "speak", "with", "line", "please", "them", "him", "her"}
        words |= {oid.lower()} if oid else set()
        words |= {str(line)} if line is not None else set()
        conv.pending = Pending(
            kind="action",
            action=action,
            order_id=oid,
            line=line,
            qty=qty,
            detail=detail[:500],
            summary=request_summary(action, of, line, qty),
            plan=plan_of(proposal),
            words=sorted(words),
            turn=conv.turn_count,
            expires_at=self.clock() + self.pending_ttl_s,
        )
        cites = [Citation(kind="order", id=of.order_id, field="status")] if of is not None else []
        cites += [Citation(kind="wave", id=w.wave_id) for w in (of.waves if of is not None else [])]
        return Outcome(self._reply(conv, action, text, cites), facts, offered=True)

    def _policy_question(
        self, conv: Conversation, action: ChatAction, of: OrderFacts, p: Parsed, message: str, role: str
    ) -> Outcome:
        """ "Can I still cancel it?": the answer, and when something can be done, the offer to do it."""
        facts = of.facts()
        verdict = change_verdict(of)
        cites = [Citation(kind="order", id=of.order_id, field="status")]
        cites += [Citation(kind="wave", id=w.wave_id) for w in of.waves]
        line = p.lines[0] if p.lines else None
        proposal = None
        if self.submit is not None:
            proposal = self._proposal(conv, action, of, role, message, line, p.qty)
        direct = (
            proposal is not None and proposal.actions and (action != "change" or proposal.outcome != "ticket_opened")
        )
        if proposal is None or not direct:
            text = policy_answer(of, verdict, action)
            if action == "change" and verdict.allowed:
                text += f" Tell me the line and the new quantity, like “change line 1 of {of.order_id} to 2”."
            return Outcome(self._reply(conv, action, text, cites, self._order_actions(of)), facts)
        team = str(proposal.actions[0].payload.get("team", ""))
        summary = request_summary(action, of, line, p.qty)
        ask = "Shall I send the warehouse that ticket?" if team == "warehouse" else f"Shall I {summary}?"
        review = "A planner reviews it before it takes effect. " if proposal.review_required else ""
        text = policy_answer(of, verdict, action, offer=f"{review}{ask} Reply yes to confirm.")
        return self._offer(conv, action, of, proposal, text, message, line, p.qty, facts)

    def _confirmed(self, conv: Conversation, pending: Pending, role: str) -> Outcome:
        """The yes: the restated request goes to the gate if it is still the same plan."""
        if pending.kind == "clarify":
            message = pending.message or ""
            return self._dispatch(conv, extract(message), message, role)
        action: ChatAction = pending.action  # type: ignore[assignment]
        of: OrderFacts | None = None
        if pending.order_id is not None:
            if owned_by(self.systems, pending.order_id, conv.customer_id) is None:
                text = f"I can't find an order {pending.order_id} any more; nothing was done."
                return Outcome(self._reply(conv, action, text), refused=True)
            of = read_order_facts(self.systems, self.decisions, pending.order_id)
        facts = of.facts() if of is not None else Facts()
        if self.submit is None:
            return Outcome(self._reply(conv, action, "I can't record requests here (no decision pipeline)."), facts)
        proposal = self._proposal(conv, action, of, role, pending.detail, pending.line, pending.qty)
        if not proposal.actions:
            cites = [Citation(kind="order", id=of.order_id, field="status")] if of else []
            text = f"Nothing was done: {proposal.rationale}"
            return Outcome(self._reply(conv, action, text, cites), facts)
        if plan_of(proposal) != pending.plan:
            # The order moved since the restatement (e.g. it joined a wave): ask again, with the new plan.
            text = f"Things changed since I asked. {restatement(action, of, proposal, len(conv.turns))} {CONFIRM}"
            return self._offer(conv, action, of, proposal, text, pending.detail, pending.line, pending.qty, facts)
        decision = self.submit(proposal, f"chat:{conv.id}:{conv.turn_count}")
        facts.statuses |= {decision.status, decision.outcome}
        if decision.status == "executed" and action == "cancel" and decision.outcome == "cancel":
            facts.statuses.add("cancelled")
        text = action_answer(of if action != "handover" else None, decision, action)
        cites = [Citation(kind="decision", id=decision.id, field="status")]
        if of is not None:
            cites.insert(0, Citation(kind="order", id=of.order_id, field="status"))
        acts = [{"action": "review", "decision_id": decision.id, "status": decision.status}]
        return Outcome(self._reply(conv, action, text, cites, acts), facts, decision=decision)

    def _declined(self, conv: Conversation, pending: Pending) -> Outcome:
        if pending.kind == "clarify":
            text = "OK. Which order do you mean? Please check its number."
        else:
            text = f"OK, I won't {pending.summary}. Nothing was changed."
        return Outcome(self._reply(conv, "decline", text))

    def _expired(self, conv: Conversation, pending: Pending) -> Outcome:
        minutes = round(self.pending_ttl_s / 60)
        what = f": I did not {pending.summary}" if pending.kind == "action" else ""
        text = (
            f"That was more than {minutes} minutes ago, so the request has lapsed{what}. "
            "Ask again if you still want it."
        )
        return Outcome(self._reply(conv, "confirm", text))

    # ------------------------------------------------------------------ other handlers

    def _sop(self, conv: Conversation, message: str) -> Outcome:
        if self.knowledge is None:
            return Outcome(self._reply(conv, "sop", KB_NOT_LOADED))
        hits = self.knowledge.search(message, k=3, doc_type="sop")
        text, cites = sop_answer(list(hits))
        return Outcome(self._reply(conv, "sop", text, cites), quoted_facts(text))

    def _product(self, conv: Conversation, p: Parsed, message: str) -> Outcome:
        """What the catalogue says about a SKU; anything it does not hold is refused as such."""
        texts: list[str] = []
        facts = Facts()
        for sku in p.skus[:3]:
            try:
                pf = read_product(self.systems, sku)
            except UnknownSku:
                texts.append(f"{sku} is not in the material master.")
                continue
            texts.append(product_answer(pf, message))
            facts = facts.merge(pf.facts())
        return Outcome(self._reply(conv, "product", " ".join(texts)), facts)

    def _availability(self, conv: Conversation, p: Parsed) -> Outcome:
        if not p.skus:
            return Outcome(self._reply(conv, "availability", "Which SKU? Please give its id, like SKU-1001."))
        region = p.region
        if region is None and conv.customer_id is not None and conv.order_id is not None:
            try:
                region = self.systems.oms.order(conv.order_id).order.region or None
            except (UnknownOrder, ConnectorError):
                region = None
        texts, cites = [], []
        facts = Facts()
        for sku in p.skus[:3]:
            try:
                av = read_availability(self.systems, sku, region)
            except UnknownSku:
                texts.append(f"{sku} is not in the material master.")
                continue
            text, c = availability_answer(av)
            texts.append(text)
            cites += c
            facts = facts.merge(av.facts())
        return Outcome(self._reply(conv, "availability", " ".join(texts), cites), facts)


def plan_of(proposal: Proposal) -> str:
    """What a proposal would do, without its wording: outcome, each action's system, type, team and
    the fields that name what changes. A yes executes a request only if this is still the same."""
    parts = [proposal.outcome]
    for a in proposal.actions:
        keys = {k: a.payload[k] for k in ("order_id", "line", "qty", "status", "team") if k in a.payload}
        parts.append(f"{a.name}:{sorted(keys.items())}")
    return "|".join(parts)
