"""The network a Tryton database cannot hold: ``CROSSDOCK_NETWORK_FILE`` (YAML or JSON).

Tryton holds warehouses, products, stock, purchases and sales; it has no place for customer lanes
(cost per unit and transit days to a region), carriers and their cutoffs, the region a node
serves, substitutes or safety stock. This file holds them, validated with the domain's own types
(``domain.models.Lane``, ``TransferLane``, ``Carrier``, ``Zone``), and becomes the Tryton adapters'
``Overlay``: ``TrytonOms.network()`` merges it over the warehouses Tryton has, as a
``scenario run --systems tryton`` merges the scenario's network.

```yaml
nodes:                     # keyed by the warehouse code in Tryton
  DC-EAST:
    region: US-NE
    type: warehouse        # or store
    carriers: [{code: FEDX_GROUND, cutoff: "16:00"}]
    zones: [{id: PICK-ZONE-A, pick_capacity_per_hour: 120}]
lanes:                     # node -> customer region
  - {from: DC-EAST, to_region: US-NE, cost_per_unit: 1.1, transit_days: 1}
transfer_lanes:            # node -> node
  - {from: DC-WEST, to: DC-EAST, cost_per_unit: 0.4, transit_days: 2}
regions:                   # where an order ships to, for a sale that does not say
  US-NE: {customers: [CUST-1], countries: [US]}
substitutes: {SKU-100: [SKU-101]}
safety_stock: {SKU-100: {DC-EAST: 5}}
```

Unknown keys are refused (a typo is named, not ignored). A bad file is one line naming the file
and the field: ``network.yaml: lanes.0.transit_days: Input should be greater than or equal to 0``.

Versions: ``runtime.network_versions`` records each network put in force in the audit chain
(``network.changed``), as policy changes are.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors.tryton.adapters import Overlay
from domain.models import Carrier, Lane, Node, Qty, Scenario, TransferLane, Zone


class NetworkFileError(ValueError):
    """A network file that cannot be used; the message is one line naming the file and the field."""


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region: str = ""
    type: Literal["warehouse", "store"] = "warehouse"
    carriers: list[Carrier] = []
    zones: list[Zone] = []


class RegionSpec(BaseModel):
    """How an order's region is found when the sale does not carry one: its customer's code, else
    the country of its shipment address."""

    model_config = ConfigDict(extra="forbid")

    customers: list[str] = []
    countries: list[str] = []


class NetworkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    nodes: dict[str, NodeSpec] = {}
    lanes: list[Lane] = []
    transfer_lanes: list[TransferLane] = []
    regions: dict[str, RegionSpec] = {}
    substitutes: dict[str, list[str]] = {}
    safety_stock: dict[str, dict[str, Qty]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> NetworkSpec:
        seen: dict[tuple[str, str], int] = {}
        for i, lane in enumerate(self.lanes):
            key = (lane.from_node, lane.to_region)
            if key in seen:
                raise ValueError(f"lanes.{i}: lane {key[0]} -> {key[1]} is already lanes.{seen[key]}")
            seen[key] = i
        pairs: dict[tuple[str, str], int] = {}
        for i, t in enumerate(self.transfer_lanes):
            key = (t.from_node, t.to_node)
            if t.from_node == t.to_node:
                raise ValueError(f"transfer_lanes.{i}: a transfer lane from {t.from_node} to itself")
            if key in pairs:
                raise ValueError(
                    f"transfer_lanes.{i}: lane {key[0]} -> {key[1]} is already transfer_lanes.{pairs[key]}"
                )
            pairs[key] = i
        for sku, subs in self.substitutes.items():
            if sku in subs:
                raise ValueError(f"substitutes.{sku}: {sku} cannot substitute itself")
        owner: dict[tuple[str, str], str] = {}
        for region, spec in self.regions.items():
            for kind, names in (("customers", spec.customers), ("countries", spec.countries)):
                for name in names:
                    if (kind, name) in owner:
                        raise ValueError(f"regions.{region}.{kind}: {name} is already in region {owner[(kind, name)]}")
                    owner[(kind, name)] = region
        for sku, per_node in self.safety_stock.items():
            for node, qty in per_node.items():
                if qty < 0:
                    raise ValueError(f"safety_stock.{sku}.{node}: must be >= 0")
        return self

    # -- what the adapters and the follower use -------------------------------------------------

    def overlay(self) -> Overlay:
        return Overlay(
            lanes=list(self.lanes),
            transfer_lanes=list(self.transfer_lanes),
            nodes={
                code: Node(id=code, type=n.type, region=n.region, zones=list(n.zones), carriers=list(n.carriers))
                for code, n in self.nodes.items()
            },
            substitutes={k: list(v) for k, v in self.substitutes.items() if v},
            safety_stock={k: dict(v) for k, v in self.safety_stock.items() if v},
            customer_regions={c: region for region, spec in self.regions.items() for c in spec.customers},
            country_regions={c: region for region, spec in self.regions.items() for c in spec.countries},
        )

    def region_of(self, customer: str | None, country: str | None) -> str:
        """The region an order ships to: the region naming its customer, else its country; ''
        (the Tryton OMS adapter reads sales the same way: ``Overlay.region_of``)."""
        return self.overlay().region_of(customer or "", country)

    def dump(self) -> dict[str, Any]:
        """The JSON form (aliases: ``from``/``to``), as written to the audit chain."""
        return self.model_dump(mode="json", by_alias=True)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.dump(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def validate(raw: Any, origin: str = "network") -> NetworkSpec:
    """A network from parsed YAML/JSON; ``NetworkFileError`` naming the first bad field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise NetworkFileError(f"{origin}: expected a mapping with nodes, lanes, transfer_lanes, regions, ...")
    try:
        return NetworkSpec.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        where = _where(first["loc"])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise NetworkFileError(f"{origin}: {where + ': ' if where else ''}{message}{more}") from None


def load(path: Path) -> NetworkSpec:
    """Read and validate ``path`` (YAML; JSON is YAML too)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise NetworkFileError(f"CROSSDOCK_NETWORK_FILE {path}: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise NetworkFileError(f"CROSSDOCK_NETWORK_FILE {path}: not valid YAML ({first[:160]})") from None
    return validate(raw, f"CROSSDOCK_NETWORK_FILE {path}")


def from_scenario(scenario: dict[str, Any] | Scenario) -> NetworkSpec:
    """The network file a scenario's network makes (what ``Overlay.from_scenario`` carries, plus
    each customer's first region in the scenario's orders)."""
    sc = scenario if isinstance(scenario, Scenario) else Scenario.model_validate(scenario)
    regions: dict[str, RegionSpec] = {}
    placed: set[str] = set()
    orders = [(o.customer, o.region) for o in sc.oms.orders]
    for event in sc.events:
        data = event.get("data")
        if event.get("type") == "oms.order.created" and isinstance(data, dict):
            orders.append((str(data.get("customer") or ""), str(data.get("region") or "")))
    for customer, region in orders:  # a customer's first region
        if customer and region and customer not in placed:
            regions.setdefault(region, RegionSpec()).customers.append(customer)
            placed.add(customer)
    return NetworkSpec(
        nodes={
            n.id: NodeSpec(region=n.region, type=n.type, carriers=list(n.carriers), zones=list(n.zones))
            for n in sc.nodes
        },
        lanes=list(sc.lanes),
        transfer_lanes=list(sc.transfer_lanes),
        regions=regions,
        substitutes={s.id: list(s.substitutes) for s in sc.skus if s.substitutes},
        safety_stock={s.id: dict(s.safety_stock) for s in sc.skus if s.safety_stock},
    )
