"""Seed a Tryton database from a scenario file (``shared/contracts/scenario.md``).

What goes where (every write is a plain JSON-RPC call, so the loader sends what the Tryton client
would otherwise fill in through on-change: units, prices, addresses, warehouse locations):

- company: ``currency.currency`` (USD unless told), ``party.party`` + ``company.company``; the
  user gets it as its current company; sale and purchase invoice methods are set to ``manual``.
- ``nodes[]``: a ``stock.location`` of type ``warehouse`` (code = node id) with input ``<node>/IN``,
  output ``<node>/OUT`` and storage ``<node>/STO`` locations, and a quarantine ``<node>/LOCK``
  beside the storage zone. ``zones[]``: storage locations under ``<node>/STO`` (code = zone id).
- ``wms.stock[]``: a bin (code = location) under its zone. ``on_hand - locked`` units arrive there
  by a done move from lost-and-found; ``locked`` units go to the mirror bin
  ``<node>/LOCK/<zone>/<location>``. Tryton never assigns from outside the storage zone, so locked
  units stay on the books but are not pickable.
- ``skus[]``: ``product.template`` (goods, unit, list price = cost price = ``unit_cost``) with one
  ``product.product`` whose code is the SKU; its ``safety_stock`` per node is a purchase
  ``stock.order_point`` (stock_supply) at the node's warehouse (``ensure_order_point``).
- ``oms.customers[]``: ``party.party`` (code = customer id) with one address; tier ``gold`` is the
  party category ``gold``. ``erp.credit_holds[]``: the party's ``credit_limit_amount``
  (account_credit_limit, per company) is set to 0, so any credit exposure reaches it
  (``TrytonErp.credit_hold`` compares it with the module's ``credit_amount``). Held customers'
  sales are still confirmed: sale_credit_limit checks the limit only for sales shipped on order
  (``Sale.must_check_credit_limit``), and ``create_sale`` uses shipment method ``manual``;
  Crossdock holds the order itself (``oms.hold_order``). A sale Tryton refuses for its credit
  limit stays a quotation (``_confirm_sale``).
- ``erp.purchase_orders[]``: ``purchase.purchase`` (reference = PO id, delivery date =
  ``expected``, line sequence = PO line), quoted and confirmed, so its incoming moves exist
  (planned supply, ``forecast_quantity``). A PO line's ``lot`` is a ``stock.lot`` (number = lot,
  product = the line's) set on the line's pending incoming moves; as a purchase line has no lot
  field and a receipt writes the lot that arrived onto those moves, the lot the line expects is
  also kept in an ``ir.note`` on the ``purchase.line`` (key ``po-lot:<PO>/<line>``, body
  ``{"expected_lot": ...}``), which ``TrytonErp.purchase_order`` reads back as ``PoLine.lot``.
- ``erp.in_transit[]``: a waiting ``stock.shipment.internal`` (reference = transfer id) between
  the two warehouses' storage zones, through Tryton's transit location.
- ``asns[]``: a draft ``stock.shipment.in`` (reference = ASN id) holding the PO's pending moves,
  each move's ``lot`` = the ASN line's; ``receipts[]``: the same document received and done, each
  incoming move's ``lot`` = the receipt line's (the lot that arrived, none if none), which
  Tryton's receive step copies onto the inventory moves (see ``create_asn``, ``post_receipt``).
- ``oms.orders[]``: ``sale.sale`` (see ``create_sale``).

Not representable, reported in ``LoadResult.skipped``: ERP book quantities that differ from the
WMS (Tryton keeps one stock ledger, so its book stock *is* the physical stock), ERP ``blocked``
without a WMS lock, lanes, carriers, substitutes, demand history and OMS allocations. Lots of the
opening stock (``wms.stock[].lot``) are not loaded: the stock views are per location, not per lot.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from connectors.tryton.rpc import TrytonClient
from domain.errors import PermanentConnectorError
from domain.models import Asn, Node, Order, PurchaseOrder, Receipt, Scenario

GOLD_CATEGORY = "gold"
# The credit limit a customer on credit hold gets (account_credit_limit's credit_limit_amount).
CREDIT_HOLD_LIMIT = Decimal(0)
# The tag that starts every ir.note Crossdock writes: "crossdock key=<key>\n<json body>".
NOTE_TAG = "crossdock"
# The prefix of sale.description holding the order fields a Tryton sale has no column for.
ORDER_EXTRAS_PREFIX = "crossdock "
# Products created per product.template.create call. On SQLite trytond checks product.product's
# code constraint in Python with one nested OR per record: 85 records pass, 86 overflow SQLite's
# parser stack (measured on trytond 8.2); PostgreSQL checks it in the database.
PRODUCT_CREATE_BATCH = 80
# Done moves per stock.move create / do call when opening stock is received: trytond validates
# every move's domains in Python (~20-30 ms a move on 2 busy cores), so a call stays within minutes.
STOCK_MOVE_BATCH = 2000


def input_code(node: str) -> str:
    return f"{node}/IN"


def output_code(node: str) -> str:
    return f"{node}/OUT"


def storage_code(node: str) -> str:
    return f"{node}/STO"


def lock_code(node: str) -> str:
    return f"{node}/LOCK"


def _money(value: float) -> Decimal:
    return Decimal(str(round(float(value), 4)))


def note_message(key: str, body: dict[str, Any]) -> str:
    """The text of a Crossdock ``ir.note``: the tag and key on the first line, the JSON body after."""
    return f"{NOTE_TAG} key={key}\n{json.dumps(body, separators=(',', ':'), sort_keys=True, default=str)}"


def _has_note(client: TrytonClient, resource: str, key: str) -> bool:
    domain = [("resource", "=", resource), ("message", "like", f"{NOTE_TAG} key={key}\n%")]
    return bool(client.search("ir.note", domain, limit=1))


def set_credit_limit(client: TrytonClient, party: int, limit: Decimal) -> None:
    """Write ``credit_limit_amount`` (account_credit_limit; a per-company value, stored for the
    session's company) unless it already has that value."""
    (row,) = client.read("party.party", [party], ["credit_limit_amount"])
    if row["credit_limit_amount"] is None or Decimal(row["credit_limit_amount"]) != limit:
        client.write("party.party", [party], {"credit_limit_amount": limit})


def ensure_lot(client: TrytonClient, number: str, product: int) -> int:
    """The ``stock.lot`` with ``number`` for ``product`` (stock_lot), created where missing."""
    found = client.search("stock.lot", [("number", "=", number), ("product", "=", product)], limit=1)
    if found:
        return found[0]
    (lot,) = client.create("stock.lot", [{"number": number, "product": product}])
    return lot


def expected_lot_key(po_id: str, line: int) -> str:
    return f"po-lot:{po_id}/{line}"


def expect_lot(client: TrytonClient, po_id: str, line_id: int, line_no: int, lot: str) -> bool:
    """Note ``lot`` as the lot purchase line ``line_id`` (``po_id``/``line_no``) expects, unless a
    lot is noted already; ``True`` when this call wrote the note."""
    resource, key = f"purchase.line,{line_id}", expected_lot_key(po_id, line_no)
    if _has_note(client, resource, key):
        return False
    client.create("ir.note", [{"resource": resource, "message": note_message(key, {"expected_lot": lot})}])
    return True


def expect_lots(client: TrytonClient, po: PurchaseOrder, purchase: int, products: dict[str, int]) -> None:
    """The lots ``po``'s lines expect: a ``stock.lot`` set on each lotted line's pending incoming
    moves (not yet in a supplier shipment), and noted on the ``purchase.line``; a line noted
    already is left as it is, so a retry changes nothing."""
    lotted = [ln for ln in po.lines if ln.lot]
    if not lotted:
        return
    lines = {
        int(r["sequence"] or 0): int(r["id"])
        for r in client.search_read("purchase.line", [("purchase", "=", purchase), ("type", "=", "line")], ["sequence"])
    }
    for ln in lotted:
        assert ln.lot is not None
        line_id = lines.get(ln.line)
        if line_id is None or _has_note(client, f"purchase.line,{line_id}", expected_lot_key(po.id, ln.line)):
            continue
        lot = ensure_lot(client, ln.lot, products[ln.sku])
        pending = client.search(
            "stock.move",
            [("origin", "=", f"purchase.line,{line_id}"), ("state", "=", "draft"), ("shipment", "=", None)],
        )
        client.write("stock.move", pending, {"lot": lot})
        expect_lot(client, po.id, line_id, ln.line, ln.lot)


@dataclass
class LoadResult:
    company: int
    currency: int
    unit: int
    warehouses: dict[str, int] = field(default_factory=dict)
    products: dict[str, int] = field(default_factory=dict)
    parties: dict[str, int] = field(default_factory=dict)
    purchases: dict[str, int] = field(default_factory=dict)
    transfers: dict[str, int] = field(default_factory=dict)
    sales: dict[str, int] = field(default_factory=dict)
    asns: dict[str, int] = field(default_factory=dict)
    receipts: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


class Loader:
    """Creates records through one client; looks each one up first, so a second run adds nothing."""

    def __init__(self, client: TrytonClient) -> None:
        self.client = client
        self._locations: dict[tuple[int | None, str], int] = {}

    # -- master data ---------------------------------------------------------------------------

    def ensure_company(self, name: str, currency_code: str = "USD") -> tuple[int, int]:
        c = self.client
        currency = c.search("currency.currency", [("code", "=", currency_code)], limit=1)
        if currency:
            currency_id = currency[0]
        else:
            (currency_id,) = c.create(
                "currency.currency",
                [
                    {
                        "name": currency_code,
                        "code": currency_code,
                        "symbol": currency_code,
                        "rounding": Decimal("0.01"),
                        "digits": 2,
                    }
                ],
            )
        companies = c.search("company.company", [], limit=1)
        if companies:
            company_id = companies[0]
        else:
            (party_id,) = c.create("party.party", [{"name": name, "addresses": [("create", [{}])]}])
            (company_id,) = c.create("company.company", [{"party": party_id, "currency": currency_id}])
        assert c.user_id is not None
        c.write("res.user", [c.user_id], {"companies": [("add", [company_id])], "company": company_id})
        c.login()  # the session's context now carries the company
        # Invoicing needs a chart of accounts; without one, sale and purchase processing would fail
        # in the queue. Crossdock never invoices: invoices are created by hand, if ever.
        c.write("sale.configuration", [1], {"sale_invoice_method": "manual", "sale_shipment_method": "manual"})
        c.write("purchase.configuration", [1], {"purchase_invoice_method": "manual"})
        return company_id, currency_id

    def unit_id(self) -> int:
        found = self.client.search("product.uom", [("symbol", "=", "u")], limit=1)
        if not found:
            raise PermanentConnectorError("Tryton has no unit of measure with symbol 'u'")
        return found[0]

    def _location(self, code: str, name: str, type_: str, parent: int | None) -> int:
        key = (parent, code)
        if key in self._locations:
            return self._locations[key]
        domain: list[Any] = [("code", "=", code), ("parent", "=", parent)]
        found = self.client.search("stock.location", domain, limit=1)
        if found:
            loc = found[0]
        else:
            (loc,) = self.client.create(
                "stock.location", [{"code": code, "name": name, "type": type_, "parent": parent}]
            )
        self._locations[key] = loc
        return loc

    def ensure_warehouse(self, node: Node) -> int:
        c = self.client
        found = c.search("stock.location", [("type", "=", "warehouse"), ("code", "=", node.id)], limit=1)
        if found:
            wh = found[0]
        else:
            # The input, output and storage locations must exist before the warehouse; Tryton
            # then makes them its children (stock.location._set_warehouse_parent).
            inp = self._location(input_code(node.id), f"{node.id} input", "storage", None)
            out = self._location(output_code(node.id), f"{node.id} output", "storage", None)
            sto = self._location(storage_code(node.id), f"{node.id} storage", "storage", None)
            lost = c.search("stock.location", [("type", "=", "lost_found")], limit=1)
            (wh,) = c.create(
                "stock.location",
                [
                    {
                        "code": node.id,
                        "name": node.id,
                        "type": "warehouse",
                        "input_location": inp,
                        "output_location": out,
                        "storage_location": sto,
                        "lost_found_location": lost[0] if lost else None,
                    }
                ],
            )
        (rec,) = c.read("stock.location", [wh], ["storage_location"])
        sto = int(rec["storage_location"])
        self._locations[(wh, storage_code(node.id))] = sto
        self._location(lock_code(node.id), f"{node.id} quarantine", "storage", wh)
        for zone in node.zones:
            self._location(zone.id, zone.id, "storage", sto)
        return wh

    def retire_default_warehouse(self) -> None:
        """Deactivate the demo warehouse ``WH`` the stock module ships, so only scenario nodes remain."""
        c = self.client
        found = c.search_read(
            "stock.location",
            [("type", "=", "warehouse"), ("code", "=", "WH")],
            ["input_location", "output_location", "storage_location"],
        )
        for wh in found:
            children = [wh[k] for k in ("input_location", "output_location", "storage_location") if wh[k]]
            c.write("stock.location", [wh["id"], *children], {"active": False})

    def bin_location(self, node: str, warehouse: int, zone: str, location: str, *, locked: bool = False) -> int:
        root_code = lock_code(node) if locked else storage_code(node)
        root = self._locations.get((warehouse, root_code)) or self._location(root_code, root_code, "storage", warehouse)
        zone_id = self._location(zone, zone, "storage", root)
        if location == zone:
            return zone_id
        return self._location(location, location, "storage", zone_id)

    def ensure_products(self, skus: list[tuple[str, str, float]], unit: int) -> dict[str, int]:
        """``(sku, description, unit_cost)`` → product.product id, created where missing
        (``PRODUCT_CREATE_BATCH`` per call)."""
        out: dict[str, int] = {}
        for i in range(0, len(skus), PRODUCT_CREATE_BATCH):
            out.update(self._ensure_products(skus[i : i + PRODUCT_CREATE_BATCH], unit))
        return out

    def _ensure_products(self, skus: list[tuple[str, str, float]], unit: int) -> dict[str, int]:
        c = self.client
        codes = [s for s, _, _ in skus]
        existing = {r["code"]: r["id"] for r in c.search_read("product.product", [("code", "in", codes)], ["code"])}
        values = []
        for sku, description, cost in skus:
            if sku in existing:
                continue
            values.append(
                {
                    "name": description or sku,
                    "type": "goods",
                    "default_uom": unit,
                    "sale_uom": unit,
                    "purchase_uom": unit,
                    "salable": True,
                    "purchasable": True,
                    "list_price": _money(cost),
                    "products": [("create", [{"suffix_code": sku, "cost_price": _money(cost)}])],
                }
            )
        if values:
            c.create("product.template", values)
            existing = {r["code"]: r["id"] for r in c.search_read("product.product", [("code", "in", codes)], ["code"])}
        missing = [s for s in codes if s not in existing]
        if missing:
            raise PermanentConnectorError(f"Tryton did not create products {', '.join(missing)}")
        return existing

    def _category(self, name: str) -> int:
        found = self.client.search("party.category", [("name", "=", name)], limit=1)
        if found:
            return found[0]
        (cat,) = self.client.create("party.category", [{"name": name}])
        return cat

    def ensure_party(
        self, code: str, name: str, categories: list[str] | None = None, *, credit_limit: Decimal | None = None
    ) -> int:
        """The party with ``code``, created with one address where missing. ``credit_limit``, when
        given, is written as its ``credit_limit_amount`` for the session's company."""
        c = self.client
        found = c.search("party.party", [("code", "=", code)], limit=1)
        cats = [self._category(n) for n in categories or []]
        if found:
            if cats:
                c.write("party.party", found, {"categories": [("add", cats)]})
            party = found[0]
        else:
            values: dict[str, Any] = {
                "code": code,
                "name": name or code,
                "addresses": [("create", [{"party_name": name or code}])],
            }
            if cats:
                values["categories"] = [("add", cats)]
            (party,) = c.create("party.party", [values])
        if credit_limit is not None:
            set_credit_limit(c, party, credit_limit)
        return party

    def address_of(self, party: int) -> int:
        found = self.client.search("party.address", [("party", "=", party)], limit=1)
        if found:
            return found[0]
        (addr,) = self.client.create("party.address", [{"party": party}])
        return addr

    # -- documents ----------------------------------------------------------------------------

    def receive_stock(self, moves: list[dict[str, Any]], company: int, date: dt.date) -> None:
        """Done moves from lost-and-found: what an inventory count would post, created and done
        ``STOCK_MOVE_BATCH`` at a time (a confirmed ``stock.inventory`` posts the same moves, and
        measured slower: 700 lines took 21 s against 14.5 s)."""
        if not moves:
            return
        lost = self.client.search("stock.location", [("type", "=", "lost_found")], limit=1)
        if not lost:
            raise PermanentConnectorError("Tryton has no lost-and-found location")
        values = [
            {**m, "from_location": lost[0], "company": company, "effective_date": date, "planned_date": date}
            for m in moves
        ]
        for i in range(0, len(values), STOCK_MOVE_BATCH):
            ids = self.client.create("stock.move", values[i : i + STOCK_MOVE_BATCH])
            self.client.button("stock.move", "do", ids)

    def create_purchase(
        self, po: PurchaseOrder, *, supplier: int, warehouse: int, products: dict[str, int], unit: int, currency: int
    ) -> int:
        c = self.client
        found = c.search("purchase.purchase", [("reference", "=", po.id)], limit=1)
        if found:
            expect_lots(c, po, found[0], products)
            return found[0]
        address = self.address_of(supplier)
        lines = [
            {
                "type": "line",
                "sequence": ln.line,
                "product": products[ln.sku],
                "quantity": float(ln.qty),
                "unit": unit,
                "unit_price": _money(ln.unit_price),
                "description": ln.sku,
            }
            for ln in po.lines
        ]
        (pid,) = c.create(
            "purchase.purchase",
            [
                {
                    "reference": po.id,
                    "party": supplier,
                    "invoice_address": address,
                    "warehouse": warehouse,
                    "currency": currency,
                    "invoice_method": "manual",
                    "delivery_date": po.expected,
                    "lines": [("create", lines)],
                }
            ],
        )
        c.button("purchase.purchase", "quote", [pid])
        # Confirming queues purchase.process, which trytond runs right after the commit (no
        # worker): it creates the incoming moves from the supplier to the warehouse input.
        c.button("purchase.purchase", "confirm", [pid])
        expect_lots(c, po, pid, products)
        return pid

    def create_transfer(
        self,
        transfer_id: str,
        *,
        from_wh: int,
        to_wh: int,
        product: int,
        qty: float,
        unit: int,
        eta: dt.date,
        company: int,
    ) -> int:
        c = self.client
        found = c.search("stock.shipment.internal", [("reference", "=", transfer_id)], limit=1)
        if found:
            return found[0]
        src, dst = c.read("stock.location", [from_wh, to_wh], ["storage_location"])
        (sid,) = c.create(
            "stock.shipment.internal",
            [
                {
                    "reference": transfer_id,
                    "company": company,
                    "planned_date": eta,
                    "planned_start_date": eta,
                    "from_location": src["storage_location"],
                    "to_location": dst["storage_location"],
                    "moves": [
                        (
                            "create",
                            [
                                {
                                    "product": product,
                                    "unit": unit,
                                    "quantity": float(qty),
                                    "company": company,
                                    "from_location": src["storage_location"],
                                    "to_location": dst["storage_location"],
                                    "planned_date": eta,
                                }
                            ],
                        )
                    ],
                }
            ],
        )
        c.button("stock.shipment.internal", "wait", [sid])
        return sid


def order_extras(order: Order) -> str:
    """The order fields a Tryton sale has no column for, kept in ``sale.description``."""
    extras = {
        "region": order.region,
        "priority": order.priority,
        "created": order.created.isoformat() if order.created else None,
        "ship_by": order.ship_by.isoformat() if order.ship_by else None,
        "carrier": order.carrier,
        "allow_split": order.allow_split,
        "allow_substitution": order.allow_substitution,
    }
    return ORDER_EXTRAS_PREFIX + json.dumps(extras, separators=(",", ":"), sort_keys=True)


def create_sale(client: TrytonClient, order: Order, *, warehouse: int | None = None) -> int:
    """Create, quote and confirm the ``sale.sale`` for ``order`` (reference = order id); idempotent.

    The sale uses shipment method ``manual``: Tryton creates no shipment by itself, Crossdock
    decides the node (``oms.allocate`` creates the customer shipment there). Line sequence = order
    line number, unit price = the product's list price (``list_price_used``: the variant's, else the
    template's).
    """
    c = client
    found = c.search("sale.sale", [("reference", "=", order.id)], limit=1)
    if found:
        return _confirm_sale(c, found[0])
    party = c.search("party.party", [("code", "=", order.customer)], limit=1)
    if not party:
        raise PermanentConnectorError(f"customer {order.customer} is not a party in Tryton")
    address = Loader(c).address_of(party[0])
    skus = sorted({ln.sku for ln in order.lines})
    products = {
        r["code"]: r
        for r in c.search_read("product.product", [("code", "in", skus)], ["code", "list_price_used", "default_uom"])
    }
    missing = [s for s in skus if s not in products]
    if missing:
        raise PermanentConnectorError(f"order {order.id}: {', '.join(missing)} not in Tryton's products")
    sale_date = order.created.date() if order.created else None
    shipping_date = order.ship_by.date() if order.ship_by else None
    if sale_date and shipping_date and shipping_date < sale_date:
        shipping_date = sale_date
    values: dict[str, Any] = {
        "reference": order.id,
        "party": party[0],
        "invoice_address": address,
        "shipment_address": address,
        "description": order_extras(order),
        "comment": order.note,
        "sale_date": sale_date,
        "shipping_date": shipping_date,
        "shipment_method": "manual",
        "invoice_method": "manual",
        "lines": [
            (
                "create",
                [
                    {
                        "type": "line",
                        "sequence": ln.line,
                        "product": products[ln.sku]["id"],
                        "quantity": float(ln.qty),
                        "unit": products[ln.sku]["default_uom"],
                        "unit_price": products[ln.sku]["list_price_used"] or Decimal(0),
                    }
                    for ln in order.lines
                ],
            )
        ],
    }
    if warehouse is None:
        # Tryton needs a warehouse on the sale to quote it; the customer shipments Crossdock creates
        # name their own warehouse, so this is only the sale's home.
        warehouses = c.search("stock.location", [("type", "=", "warehouse")], limit=1, order=[("code", "ASC")])
        if not warehouses:
            raise PermanentConnectorError("Tryton has no warehouse")
        warehouse = warehouses[0]
    values["warehouse"] = warehouse
    (sid,) = c.create("sale.sale", [values])
    return _confirm_sale(c, sid)


def _confirm_sale(c: TrytonClient, sid: int) -> int:
    """Quote and confirm the sale. A sale shipped on order over its party's credit limit is refused
    by sale_credit_limit (a CreditLimitError, or a CreditLimitWarning for an administrator): it
    stays a quotation, the order still exists, and Crossdock holds it for credit."""
    (sale,) = c.read("sale.sale", [sid], ["state"])
    if sale["state"] == "draft":
        c.button("sale.sale", "quote", [sid])
        sale["state"] = "quotation"
    if sale["state"] == "quotation":
        try:
            c.button("sale.sale", "confirm", [sid])
        except PermanentConnectorError as exc:
            if "credit limit" not in str(exc):
                raise
    return sid


def _lot_value(client: TrytonClient, lot: str | None, product: int) -> int | None:
    return ensure_lot(client, lot, product) if lot else None


def _supplier_shipment(
    client: TrytonClient, reference: str, po_id: str, lines: list[tuple[int, float, str | None]]
) -> tuple[int, str]:
    """The ``stock.shipment.in`` with ``reference``, created in draft holding the purchase's pending
    moves of ``lines`` ((po line, qty, lot)); each move's quantity and lot are set to the document's."""
    c = client
    found = c.search_read("stock.shipment.in", [("reference", "=", reference)], ["state"], limit=1)
    if found:
        return int(found[0]["id"]), str(found[0]["state"])
    purchases = c.search_read(
        "purchase.purchase", [("reference", "=", po_id)], ["party", "warehouse", "company"], limit=1
    )
    if not purchases:
        raise PermanentConnectorError(f"purchase order {po_id} is not known to Tryton")
    po = purchases[0]
    (wh,) = c.read("stock.location", [po["warehouse"]], ["input_location", "storage_location"])
    moves: list[int] = []
    for line_no, qty, lot in lines:
        pending = c.search_read(
            "stock.move",
            [
                ("origin.purchase", "=", po["id"], "purchase.line"),
                ("origin.sequence", "=", line_no, "purchase.line"),
                ("state", "=", "draft"),
                ("shipment", "=", None),
            ],
            ["product"],
            limit=1,
        )
        if not pending:
            raise PermanentConnectorError(f"purchase order {po_id} line {line_no} has nothing left to receive")
        ids = [int(pending[0]["id"])]
        c.write("stock.move", ids, {"quantity": float(qty), "lot": _lot_value(c, lot, int(pending[0]["product"]))})
        moves.extend(ids)
    (sid,) = c.create(
        "stock.shipment.in",
        [
            {
                "reference": reference,
                "supplier": po["party"],
                "company": po["company"],
                "warehouse": po["warehouse"],
                "warehouse_input": wh["input_location"],
                "warehouse_storage": wh["storage_location"],
                "incoming_moves": [("add", moves)],
            }
        ],
    )
    return sid, "draft"


def create_asn(client: TrytonClient, asn: Asn) -> int:
    """An advance shipping notice: a draft supplier shipment (reference = ASN id) holding the
    purchase's pending moves at the announced quantities and lots; idempotent."""
    sid, _ = _supplier_shipment(client, asn.id, asn.po_id, [(ln.po_line, ln.qty, ln.lot) for ln in asn.lines])
    return sid


def post_receipt(client: TrytonClient, receipt: Receipt) -> int:
    """A goods receipt: the ASN's supplier shipment (or a new one, reference = receipt id) at the
    good quantities received (qty − damaged) with the lots that arrived, received and done;
    idempotent. Where the lot that arrived differs from the one the ASN announced on a line whose
    purchase line expects none, the announced lot is noted as the expected one first (see
    ``expect_lot``), so the mismatch stays visible once the document holds the received lot."""
    reference = receipt.asn_id or receipt.id
    lines = [(ln.po_line, max(0.0, ln.qty - ln.damaged), ln.lot) for ln in receipt.lines]
    sid, state = _supplier_shipment(client, reference, receipt.po_id, lines)
    if state == "draft":
        if receipt.asn_id:  # what arrived, not what was announced
            moves = client.search_read(
                "stock.move",
                [("shipment", "=", f"stock.shipment.in,{sid}"), ("origin", "like", "purchase.line,%")],
                ["origin", "origin.sequence", "product", "lot.number"],
            )
            wanted = {line_no: (qty, lot) for line_no, qty, lot in lines}
            for m in moves:
                seq = int((m.get("origin.") or {}).get("sequence") or 0)
                if seq not in wanted:
                    continue
                qty, lot = wanted[seq]
                announced = (m.get("lot.") or {}).get("number")
                if announced and announced != lot:
                    line_id = int(str(m["origin"]).split(",")[1])
                    expect_lot(client, receipt.po_id, line_id, seq, str(announced))
                lot_id = _lot_value(client, lot, int(m["product"]))
                client.write("stock.move", [m["id"]], {"quantity": qty, "lot": lot_id})
        client.button("stock.shipment.in", "receive", [sid])
        state = "received"
    if state == "received":
        client.button("stock.shipment.in", "do", [sid])
    return sid


def ensure_order_point(client: TrytonClient, product: int, warehouse: int, qty: float, company: int) -> int:
    """The warehouse's purchase ``stock.order_point`` for ``product`` (stock_supply) with minimum and
    target ``qty``: a safety stock Tryton's supply wizard replenishes to. Written, not added to, so a
    retry leaves the same record with the same values."""
    found = client.search_read(
        "stock.order_point",
        [("product", "=", product), ("location", "=", warehouse), ("type", "=", "purchase")],
        ["min_quantity", "target_quantity", "max_quantity"],
        limit=1,
    )
    if not found:
        values = {"product": product, "location": warehouse, "type": "purchase", "company": company}
        (op,) = client.create("stock.order_point", [{**values, "min_quantity": qty, "target_quantity": qty}])
        return op
    row = found[0]
    if row["min_quantity"] != qty or row["target_quantity"] != qty or row["max_quantity"] is not None:
        client.write(
            "stock.order_point",
            [int(row["id"])],
            {"min_quantity": qty, "target_quantity": qty, "max_quantity": None},
        )
    return int(row["id"])


def load_scenario(client: TrytonClient, scenario: dict[str, Any] | Scenario, *, currency: str = "USD") -> LoadResult:
    """Seed an empty Tryton database (with ``bench.tryton_server.MODULES`` activated) from ``scenario``;
    a SKU's safety stock becomes a purchase ``stock.order_point`` at the node's warehouse."""
    sc = scenario if isinstance(scenario, Scenario) else Scenario.model_validate(scenario)
    loader = Loader(client)
    company, currency_id = loader.ensure_company(sc.scenario, currency)
    unit = loader.unit_id()
    result = LoadResult(company=company, currency=currency_id, unit=unit)
    today = sc.start.date()

    loader.retire_default_warehouse()
    for node in sc.nodes:
        result.warehouses[node.id] = loader.ensure_warehouse(node)

    skus = {s.id: (s.id, s.description, s.unit_cost) for s in sc.skus}
    for rec in sc.wms.stock:
        skus.setdefault(rec.sku, (rec.sku, rec.sku, 0.0))
    for po in sc.erp.purchase_orders:
        for ln in po.lines:
            skus.setdefault(ln.sku, (ln.sku, ln.sku, ln.unit_price))
    for order in sc.oms.orders:
        for oln in order.lines:
            skus.setdefault(oln.sku, (oln.sku, oln.sku, 0.0))
    for t in sc.erp.in_transit:
        skus.setdefault(t.sku, (t.sku, t.sku, 0.0))
    result.products = loader.ensure_products(list(skus.values()), unit)
    if any(s.substitutes for s in sc.skus):
        result.skipped.append("skus[].substitutes: Tryton's product has no substitute list")
    for s in sc.skus:
        for node_id, qty in sorted(s.safety_stock.items()):
            if node_id in result.warehouses:
                ensure_order_point(client, result.products[s.id], result.warehouses[node_id], float(qty), company)
            else:
                result.skipped.append(f"skus[].safety_stock at unknown node {node_id}")

    # Parties.
    holds = set(sc.erp.credit_holds)
    for cust in sc.oms.customers:
        cats = [GOLD_CATEGORY] if cust.tier == "gold" else []
        limit = CREDIT_HOLD_LIMIT if cust.id in holds else None
        result.parties[cust.id] = loader.ensure_party(cust.id, cust.name, cats, credit_limit=limit)
    for held in sorted(holds - set(result.parties)):
        result.parties[held] = loader.ensure_party(held, held, credit_limit=CREDIT_HOLD_LIMIT)
    for supplier in sorted({po.supplier for po in sc.erp.purchase_orders}):
        result.parties.setdefault(supplier, loader.ensure_party(supplier, supplier))

    # Physical stock: done moves in batches (skipped when the database already holds stock).
    existing = client.call("stock.move", "search_count", [("state", "=", "done")])
    moves: list[dict[str, Any]] = []
    for rec in sc.wms.stock:
        wh = result.warehouses.get(rec.node)
        if wh is None:
            result.skipped.append(f"wms.stock at unknown node {rec.node}")
            continue
        free, locked = rec.on_hand - min(rec.locked, rec.on_hand), min(rec.locked, rec.on_hand)
        base = {"product": result.products[rec.sku], "unit": unit}
        if free > 0:
            loc = loader.bin_location(rec.node, wh, rec.zone, rec.location)
            moves.append({**base, "to_location": loc, "quantity": float(free)})
        if locked > 0:
            loc = loader.bin_location(rec.node, wh, rec.zone, rec.location, locked=True)
            moves.append({**base, "to_location": loc, "quantity": float(locked)})
    if not existing:
        loader.receive_stock(moves, company, today)

    physical: dict[tuple[str, str], float] = defaultdict(float)
    locks: dict[tuple[str, str], float] = defaultdict(float)
    for rec in sc.wms.stock:
        physical[(rec.node, rec.sku)] += rec.on_hand
        locks[(rec.node, rec.sku)] += rec.locked
    for book in sc.erp.book_stock:
        key = (book.node, book.sku)
        if abs(book.qty - physical.get(key, 0.0)) > 1e-9:
            result.skipped.append(
                f"erp.book_stock {book.sku}@{book.node}: book {book.qty:g} vs physical {physical.get(key, 0.0):g} "
                "(Tryton's book stock is its physical stock)"
            )
        if book.blocked > locks.get(key, 0.0) + 1e-9:
            result.skipped.append(f"erp.book_stock {book.sku}@{book.node}: blocked {book.blocked:g} without a WMS lock")

    # Purchase orders and transfers in transit.
    for po in sc.erp.purchase_orders:
        wh = result.warehouses.get(po.node)
        if wh is None:
            result.skipped.append(f"purchase order {po.id} for unknown node {po.node}")
            continue
        result.purchases[po.id] = loader.create_purchase(
            po,
            supplier=result.parties[po.supplier],
            warehouse=wh,
            products=result.products,
            unit=unit,
            currency=currency_id,
        )
    for t in sc.erp.in_transit:
        src, dst = result.warehouses.get(t.from_node), result.warehouses.get(t.to_node)
        if src is None or dst is None:
            result.skipped.append(f"transfer {t.id} between unknown nodes")
            continue
        result.transfers[t.id] = loader.create_transfer(
            t.id,
            from_wh=src,
            to_wh=dst,
            product=result.products[t.sku],
            qty=t.qty,
            unit=unit,
            eta=t.eta,
            company=company,
        )

    for asn in sc.asns:
        result.asns[asn.id] = create_asn(client, asn)
    for receipt in sc.receipts:
        result.receipts[receipt.id] = post_receipt(client, receipt)
    for order in sc.oms.orders:
        result.sales[order.id] = create_sale(client, order)
    for what, present in (
        ("lanes and transfer_lanes (no Tryton model; see TrytonOms overlay)", sc.lanes or sc.transfer_lanes),
        ("nodes[].carriers (needs the carrier module)", any(n.carriers for n in sc.nodes)),
        ("erp.demand_history", sc.erp.demand_history),
        ("oms.allocations", sc.oms.allocations),
    ):
        if present:
            result.skipped.append(what)
    return result
