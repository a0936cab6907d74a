"""``crossdock scenario run --systems tryton`` and bootstrap with ``CROSSDOCK_ERP=tryton``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.tryton_server import TrytonTemplate
from connectors.tryton.adapters import NOT_MAPPED, TrytonErp, TrytonOms, TrytonWms
from domain.report import Report
from runtime.bootstrap import bootstrap
from runtime.settings import Settings

from .harness import EXAMPLE, Tryton

REPO = Path(__file__).resolve().parents[3]


def short_scenario() -> dict[str, Any]:
    """The example plus SO-2001: 10 × SKU-200, of which only 6 are left after SO-1001."""
    raw: dict[str, Any] = json.loads(EXAMPLE.read_text())
    short = json.loads(json.dumps(raw["events"][1]))
    short["id"], short["subject"] = "evt-short", "SO-2001"
    short["time"] = "2026-03-21T08:05:00Z"
    short["data"].update(id="SO-2001", created="2026-03-21T08:05:00Z", lines=[{"line": 1, "sku": "SKU-200", "qty": 10}])
    raw["events"].insert(4, short)
    return raw


def test_bootstrap_with_crossdock_erp_tryton_builds_tryton_adapters(
    tryton: Tryton, tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tryton.server.config()
    monkeypatch.setenv("CROSSDOCK_ERP", "tryton")
    monkeypatch.setenv("TRYTON_URL", config.url)
    monkeypatch.setenv("TRYTON_DATABASE", config.database)
    monkeypatch.setenv("TRYTON_USER", config.user)
    secret = tmp_path / "tryton.pass"
    secret.write_text(config.password + "\n")
    monkeypatch.setenv("TRYTON_PASSWORD_FILE", str(secret))
    settings = Settings(data_dir=tmp_path, redis_url=redis_url, stream_prefix="test-tryton-boot")
    assert settings.erp == "tryton"  # read from CROSSDOCK_ERP
    container = bootstrap(settings)
    try:
        systems = container.systems
        assert isinstance(systems.wms, TrytonWms)
        assert isinstance(systems.erp, TrytonErp)
        assert isinstance(systems.oms, TrytonOms)
        assert systems.erp.sku("SKU-100").id == "SKU-100"  # talks to the running trytond
        assert type(systems.notify).__name__ == "HttpNotify"
    finally:
        container.close()
    monkeypatch.delenv("CROSSDOCK_ERP")
    assert Settings(data_dir=tmp_path).erp == "twin"
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, erp="sap")


def test_scenario_run_systems_tryton(tryton_template: TrytonTemplate, tmp_path: Path) -> None:
    scenario_file = tmp_path / "scenario.json"
    scenario_file.write_text(json.dumps(short_scenario()))
    out = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k not in ("CROSSDOCK_ERP",) and not k.startswith("TRYTON_")}
    env["CROSSDOCK_TRYTON_CACHE"] = str(tryton_template.db_file.parent)
    env.pop("REDIS_URL", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "crossdock.cli",
            "scenario",
            "run",
            str(scenario_file),
            "--systems",
            "tryton",
            "--report",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "against Tryton" in proc.stderr and "oversells" in proc.stdout
    report = json.loads(out.read_text())
    Report.model_validate(report)
    assert report["systems"] == "tryton"
    orders = {o["id"]: o for o in report["final_state"]["oms"]["orders"]}
    assert orders["SO-1002"]["status"] == "released"
    assert orders["SO-1002"]["lines"][0]["allocations"] == [{"node": "DC-WEST", "qty": 30.0}]
    # Released: Tryton assigned the customer shipment at the node Crossdock chose.
    released = orders["SO-1002"]["tryton_shipments"]
    assert [(s["state"], s["warehouse"], s["qty"]) for s in released] == [("assigned", "DC-WEST", 30.0)]
    # Short (6 of 10 left): held, or partly assigned with the rest on a waiting backorder shipment.
    short = orders["SO-2001"]
    if short["status"] != "held":
        assert short["status"] in ("partially_released", "backordered"), short
        states = sorted((s["state"], s["qty"]) for s in short["tryton_shipments"])
        assert states == [("assigned", 6.0), ("waiting", 4.0)], short
        assert short["lines"][0]["allocations"] == [{"node": "DC-EAST", "qty": 6.0}]
        assert short["lines"][0]["backordered"] == 4.0
    # Actions Tryton cannot take (oms.substitute_line for SO-1004) fail cleanly, as decisions; every
    # failed decision carries one of them.
    failed = [d for d in report["decisions"] if d["status"] == "failed"]
    assert "SO-1004" in {d["subject"] for d in failed}
    for d in failed:
        assert {f"{a['system']}.{a['type']}" for a in d["actions"]} & set(NOT_MAPPED), d
    assert report["kpis"]["oversells"] == 0 and report["kpis"]["orders"] == 5
    assert report["source_errors"] == []
