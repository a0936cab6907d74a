"""CROSSDOCK_NETWORK_FILE: validation with one-line errors naming the field, the overlay it makes
for the Tryton adapters, and its versions in the audit chain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.tryton.adapters import Overlay
from connectors.tryton.network_file import NetworkFileError, from_scenario, load, validate
from runtime import network_versions
from runtime.bootstrap import StartupError, network_overlay
from runtime.store import Store
from twin.scenarios import EXAMPLE


@pytest.fixture
def scenario() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return data


def write(tmp_path: Path, body: Any, name: str = "network.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False))
    return path


def test_the_example_network_round_trips_to_the_scenario_overlay(tmp_path: Path, scenario: dict[str, Any]) -> None:
    path = write(tmp_path, from_scenario(scenario).dump())
    spec = load(path)
    overlay, expected = spec.overlay(), Overlay.from_scenario(scenario)  # serve sources as scenario runs do
    for name in ("lanes", "transfer_lanes", "nodes", "substitutes", "safety_stock"):
        assert getattr(overlay, name) == getattr(expected, name), name
    assert overlay.customer_regions == {"CUST-1": "US-NE", "CUST-2": "US-NE", "CUST-9": "US-W"}
    assert spec.region_of("CUST-2", None) == "US-NE"
    assert spec.region_of("CUST-404", None) == ""


def test_regions_by_customer_first_then_country() -> None:
    spec = validate({"regions": {"US-NE": {"customers": ["C1"]}, "US-W": {"countries": ["US"]}}})
    assert spec.region_of("C1", "US") == "US-NE"
    assert spec.region_of("C2", "US") == "US-W"
    assert spec.region_of("C2", "FR") == ""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"lanes": [{"from": "DC-EAST", "to_region": "US-NE", "cost_per_unit": 1, "transit_days": -1}]},
            "lanes.0.transit_days: Input should be greater than or equal to 0",
        ),
        (
            {"lanes": [{"from": "DC-EAST", "to_region": "US-NE", "transit_days": 1}]},
            "lanes.0.cost_per_unit: Field required",
        ),
        (
            {"nodes": {"DC-EAST": {"region": "US-NE", "carrier": []}}},
            "nodes.DC-EAST.carrier: Extra inputs are not permitted",
        ),
        (
            {"nodes": {"DC-EAST": {"carriers": [{"code": "UPS", "cutoff": "25:00"}]}}},
            "nodes.DC-EAST.carriers.0.cutoff: String should match pattern",
        ),
        ({"lane": []}, "lane: Extra inputs are not permitted"),
        (
            {
                "lanes": [
                    {"from": "A", "to_region": "R", "cost_per_unit": 1, "transit_days": 1},
                    {"from": "A", "to_region": "R", "cost_per_unit": 2, "transit_days": 1},
                ]
            },
            "lanes.1: lane A -> R is already lanes.0",
        ),
        ({"substitutes": {"SKU-1": ["SKU-1"]}}, "substitutes.SKU-1: SKU-1 cannot substitute itself"),
        (
            {"regions": {"R1": {"customers": ["C"]}, "R2": {"customers": ["C"]}}},
            "regions.R2.customers: C is already in region R1",
        ),
        ({"safety_stock": {"SKU-1": {"A": "5"}}}, "safety_stock.SKU-1.A: Input should be a valid number"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_a_bad_network_file_is_one_line_naming_the_field(tmp_path: Path, body: Any, message: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(NetworkFileError) as err:
        load(path)
    text = str(err.value)
    assert text.startswith(f"CROSSDOCK_NETWORK_FILE {path}: ") and message in text
    assert "\n" not in text


def test_unreadable_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(NetworkFileError, match="No such file"):
        load(tmp_path / "missing.yaml")
    with pytest.raises(NetworkFileError, match="not valid YAML"):
        load(write(tmp_path, "lanes: [\n"))


def test_each_change_of_the_file_is_a_version_in_the_audit_chain(tmp_path: Path, scenario: dict[str, Any]) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    try:
        assert network_in_force_overlay(store, None) is None  # no file, no version: no overlay
        body = from_scenario(scenario).dump()
        path = write(tmp_path, body)
        overlay = network_overlay(store, path)
        assert overlay is not None and overlay.lanes
        network_overlay(store, path)  # unchanged: no new version
        assert [v.version for v in network_versions.history(store)] == [1]
        body["lanes"][0]["transit_days"] = 4
        write(tmp_path, body)
        assert network_overlay(store, path).lanes[0].transit_days == 4
        versions = network_versions.history(store)
        assert [v.version for v in versions] == [1, 2] and versions[1].source == f"file:{path.resolve()}"
        # A later version from elsewhere stays in force while the file is unchanged...
        api_spec = validate({**body, "substitutes": {}})
        network_versions.record(store, api_spec, "admin:ann", "no substitutes for now", "api")
        assert network_overlay(store, path).substitutes == {}
        # ...and with no file at all.
        assert network_overlay(store, None).substitutes == {}
        entries = store.audit(kind="network.changed", subject="network")
        assert [e.actor for e in entries] == ["system:network-file", "system:network-file", "admin:ann"]
        write(tmp_path, {"lanes": [{"from": "A", "to_region": "R", "cost_per_unit": -1, "transit_days": 1}]})
        with pytest.raises(StartupError, match=r"lanes\.0\.cost_per_unit"):
            network_overlay(store, path)
    finally:
        store.close()


def network_in_force_overlay(store: Store, path: Path | None) -> Overlay | None:
    result: Overlay | None = network_overlay(store, path)
    return result
