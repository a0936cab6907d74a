"""The deterministic chat service: message → intent → facts → templated, cited answer.

Actions never execute here: a request becomes a ``Proposal`` handed to ``submit`` (the API
wires it to the governance gate, the store and the executor), and the answer reports what the
gate did with it.

LLM mode: an optional ``writer`` (:func:`chat_writer`, ``crews.chat_writer.ChatWriter``) may
reword a factual answer; it keeps the template answer whenever its draft fails the claim check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from agents.settings import AgentSettings
from domain.decisions import Decision, Proposal
from domain.errors import ConnectorError, UnknownOrder, UnknownSku
from domain.models import Settings as Policy
from tools.chat.answers import (
    action_answer,
    availability_answer,
    policy_answer,
    quoted_facts,
    sop_answer,
    status_answer,
    why_answer,
    why_held_answer,
    why_late_answer,
    why_split_answer,
)
from tools.chat.conversations import Conversation, Turn
from tools.chat.facts import (
    OPEN_STATUSES,
    Citation,
    DecisionReader,
    Facts,
    KnowledgeSearch,
    OrderFacts,
    owned_by,
    read_availability,
    read_order_facts,
)
from tools.chat.intents import Parsed, extract
from tools.chat.policy import ChatAction, build_proposal, change_verdict
from tools.context import Systems

Submit = Callable[[Proposal, str], Decision]
log = logging.getLogger("crossdock.chat")
ORDER_INTENTS = frozenset({"status", "why_split", "why_held", "why_late", "why", "change", "cancel", "address_change"})
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


Writer = Callable[[Outcome, str], Outcome]


def chat_writer(settings: AgentSettings | None = None, model: Any = None, audit: Any = None) -> Writer | None:
    """The LLM-mode writer for ``ChatService.writer``, or None in deterministic mode (no
    ``CROSSDOCK_LLM_MODEL`` and no ``model`` given). CrewAI is imported only when a writer is
    built (``model``: a CrewAI ``BaseLLM``, e.g. a scripted one in tests; ``audit``: an
    ``AuditSink`` such as the store, which records ``chat.llm_fallback``)."""
    settings = settings or AgentSettings()
    if model is None and not settings.llm_enabled:
        return None
    from crews.chat_writer import ChatWriter

    return ChatWriter(settings, model=model, audit=audit)


@dataclass
class ChatService:
    systems: Systems
    decisions: DecisionReader
    knowledge: KnowledgeSearch | None = None
    submit: Submit | None = None
    policy: Callable[[], Policy] = Policy
    # LLM mode: rewrites a factual answer (never a refusal or an action's answer); None: templates only.
    writer: Writer | None = None

    def respond(self, conv: Conversation, message: str, role: str) -> Outcome:
        parsed = extract(message)
        out = self._dispatch(conv, parsed, message, role)
        if self.writer is not None and not out.refused and out.decision is None:
            try:
                out = self.writer(out, message)
            except Exception:  # noqa: BLE001 - the template answer stands whatever the writer did
                log.exception("chat writer failed; keeping the template answer")
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
            return Outcome(
                self._reply(
                    conv, intent, "Hello! Ask me about an order (e.g. SO-100001), a SKU's availability, or a policy."
                )
            )
        if intent == "sop":
            return self._sop(conv, message)
        if intent == "availability":
            return self._availability(conv, p)
        if intent == "unknown" and not p.order_ids:
            return Outcome(
                self._reply(
                    conv,
                    intent,
                    "I can help with order status, why an order was split, held "
                    "or is late, changes and cancellations, stock availability and SOPs.",
                )
            )
        if intent == "unknown":
            intent = "status"
        if len(p.order_ids) > 1:
            named = " or ".join(p.order_ids)
            return Outcome(self._reply(conv, intent, f"You mentioned {named}: which order do you mean?"))
        order_id = p.order_ids[0] if p.order_ids else conv.order_id
        if order_id is None:
            if intent == "ticket":
                return self._act(conv, "ticket", None, p, message, role)
            return self._no_order(conv, intent)
        view = owned_by(self.systems, order_id, conv.customer_id)
        if view is None:
            whose = " for this customer" if conv.customer_id else ""
            return Outcome(self._reply(conv, intent, f"I can't find an order {order_id}{whose}."), refused=True)
        of = read_order_facts(self.systems, self.decisions, order_id)
        if p.order_ids and p.order_ids[0] != conv.order_id:
            conv.lines = []
        conv.order_id = order_id
        facts = of.facts()
        if intent == "status":
            only = self._lines_in_focus(conv, of, p)
            text, cites = status_answer(of, only)
            conv.lines = only or [ln.line for ln in of.view.lines]
            return Outcome(self._reply(conv, intent, text, cites, self._order_actions(of)), facts)
        if intent in ("why_held", "why_split", "why_late", "why"):
            if intent == "why":
                resolved, text, cites = why_answer(of)
            else:
                fn = {"why_held": why_held_answer, "why_split": why_split_answer, "why_late": why_late_answer}[intent]
                resolved, (text, cites) = intent, fn(of)
            return Outcome(self._reply(conv, resolved, text, cites, self._order_actions(of)), facts)
        action: ChatAction = intent  # type: ignore[assignment]
        if p.question and intent in ("cancel", "change"):
            verdict = change_verdict(of)
            text = policy_answer(of, verdict, intent)
            cites = [Citation(kind="order", id=of.order_id, field="status")]
            cites += [Citation(kind="wave", id=w.wave_id) for w in of.waves]
            return Outcome(self._reply(conv, intent, text, cites, self._order_actions(of)), facts)
        return self._act(conv, action, of, p, message, role)

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

    # ------------------------------------------------------------------ handlers

    def _act(
        self, conv: Conversation, action: ChatAction, of: OrderFacts | None, p: Parsed, message: str, role: str
    ) -> Outcome:
        facts = of.facts() if of is not None else Facts()
        if self.submit is None:
            return Outcome(self._reply(conv, action, "I can't record requests here (no decision pipeline)."), facts)
        proposal = build_proposal(
            action,
            of,
            role=role,
            policy=self.policy(),
            conversation_id=conv.id,
            detail=message[:500],
            line=p.lines[0] if p.lines else None,
            qty=p.qty,
        )
        if not proposal.actions:
            text = proposal.rationale
            cites = [Citation(kind="order", id=of.order_id, field="status")] if of else []
            return Outcome(self._reply(conv, action, text, cites), facts)
        decision = self.submit(proposal, f"chat:{conv.id}:{conv.turn_count}")
        facts.statuses |= {decision.status, decision.outcome}
        if decision.status == "executed" and action == "cancel" and decision.outcome == "cancel":
            facts.statuses.add("cancelled")
        text = action_answer(of, decision, action)
        cites = [Citation(kind="decision", id=decision.id, field="status")]
        if of is not None:
            cites.insert(0, Citation(kind="order", id=of.order_id, field="status"))
        acts = [{"action": "review", "decision_id": decision.id, "status": decision.status}]
        return Outcome(self._reply(conv, action, text, cites, acts), facts, decision=decision)

    def _sop(self, conv: Conversation, message: str) -> Outcome:
        if self.knowledge is None:
            return Outcome(self._reply(conv, "sop", KB_NOT_LOADED))
        hits = self.knowledge.search(message, k=3, doc_type="sop")
        text, cites = sop_answer(list(hits))
        return Outcome(self._reply(conv, "sop", text, cites), quoted_facts(text))

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
