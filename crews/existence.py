"""Check that what a proposal's actions name exists before it is proposed.

An action may name a node, a SKU, an order and a location (a bin). Each is looked up in the
system that owns it: the node in the OMS network, the SKU in the ERP material master (or WMS
stock), the order in the OMS, the location among the WMS location records of the SKU at the
node. A proposal naming anything the systems do not know becomes an escalation: no action but
one ticket to the warehouse desk saying what is unknown, so nobody is sent to count a bin that
does not exist.

The engines check their own inputs (``domain.engines.triage.unknown_refs``); this is for what an
agent writes, whose references come from a model.
"""

from __future__ import annotations

from domain.decisions import Action, Proposal, ticket
from domain.errors import PermanentConnectorError, UnknownOrder, UnknownSku
from tools.context import Systems

# Payload fields naming a node (a transfer names two).
NODE_KEYS = ("node", "from", "to")


class _Lookups:
    """Each record looked up once per proposal."""

    def __init__(self, systems: Systems) -> None:
        self.systems = systems
        self._nodes: set[str] | None = None
        self._skus: dict[str, bool] = {}
        self._orders: dict[str, bool] = {}
        self._bins: dict[tuple[str, str], set[str]] = {}

    def node(self, node: str) -> bool:
        if self._nodes is None:
            self._nodes = {n.id for n in self.systems.oms.network().nodes}
        return node in self._nodes

    def sku(self, sku: str) -> bool:
        if sku not in self._skus:
            try:
                self.systems.erp.sku(sku)
                self._skus[sku] = True
            except UnknownSku:
                self._skus[sku] = bool(self.systems.wms.stock(sku))
        return self._skus[sku]

    def order(self, order_id: str) -> bool:
        if order_id not in self._orders:
            try:
                self.systems.oms.order(order_id)
                self._orders[order_id] = True
            except (UnknownOrder, PermanentConnectorError):
                self._orders[order_id] = False
        return self._orders[order_id]

    def locations(self, sku: str, node: str) -> set[str]:
        if (sku, node) not in self._bins:
            for s in self.systems.wms.stock(sku):
                self._bins[(sku, s.node)] = {lo.location for lo in s.locations}
            self._bins.setdefault((sku, node), set())
        return self._bins[(sku, node)]


def unknown_refs(actions: list[Action], systems: Systems) -> list[str]:
    """What the actions name that the systems do not know, one line each (empty: all exist)."""
    look = _Lookups(systems)
    out: list[str] = []
    for a in actions:
        if a.system == "notify":
            continue  # a ticket's refs are free text for people
        p = a.payload
        for key in NODE_KEYS:
            value = p.get(key)
            if isinstance(value, str) and value and not look.node(value):
                out.append(f"{a.name}: node {value} is not in the network")
        sku = p.get("sku")
        if isinstance(sku, str) and sku and not look.sku(sku):
            out.append(f"{a.name}: SKU {sku} is not in the ERP material master nor in WMS stock")
        order_id = p.get("order_id")
        if isinstance(order_id, str) and order_id and not look.order(order_id):
            out.append(f"{a.name}: order {order_id} is not in the OMS")
        location, node = p.get("location"), p.get("node")
        named = isinstance(location, str) and location and isinstance(sku, str) and isinstance(node, str)
        if named and look.node(str(node)) and location not in look.locations(str(sku), str(node)):
            out.append(f"{a.name}: location {location} holds no {sku} at {node} in the WMS")
    return list(dict.fromkeys(out))


def escalate_unknown(proposal: Proposal, missing: list[str]) -> Proposal:
    """The proposal as an escalation: its actions dropped, one ticket saying what does not exist."""
    what = "; ".join(missing)
    planned = ", ".join(dict.fromkeys(a.name for a in proposal.actions)) or "no action"
    summary = (
        f"A proposal on {proposal.subject} ({planned}) names what the systems do not know: {what}. "
        "Nothing was sent; check the references."
    )
    return Proposal(
        workflow=proposal.workflow,
        subject=proposal.subject,
        outcome="escalated",
        confidence=proposal.confidence,
        rationale=f"Escalated instead of proposed: {summary}",
        evidence={
            **proposal.evidence,
            "play": "escalate",
            "unknown": missing,
            "withdrawn": {"outcome": proposal.outcome, "actions": [a.model_dump() for a in proposal.actions]},
        },
        actions=[ticket("warehouse", f"{proposal.subject}: unknown references", summary, [proposal.subject])],
        review_required=True,
        review_reason="the proposal named records the systems do not know",
    )


def checked(proposal: Proposal, systems: Systems) -> Proposal:
    """The proposal itself when everything it names exists, else its escalation."""
    missing = unknown_refs(proposal.actions, systems)
    return escalate_unknown(proposal, missing) if missing else proposal
