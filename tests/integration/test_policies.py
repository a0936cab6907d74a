"""The three policies side by side: `crossdock scenario run --compare` replays the contract's example
under baseline, rules and crossdock, writes a report for each and prints one KPI column per policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from domain.report import Report
from tests.integration.conftest import REPO
from twin.scenarios import EXAMPLE


def test_compare_prints_baseline_rules_and_crossdock_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "crossdock.cli", "scenario", "run", str(EXAMPLE), "--compare", "--report", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    header = next(line for line in proc.stdout.splitlines() if line.strip("┃│ ").startswith("KPI "))
    assert [c.strip() for c in header.strip("┃│ ").split("┃") if c.strip()][:4] == [
        "KPI",
        "baseline",
        "rules",
        "crossdock",
    ]
    reports = {
        p: json.loads((tmp_path / name).read_text())
        for p, name in (
            ("crossdock", "report.json"),
            ("baseline", "report-baseline.json"),
            ("rules", "report-rules.json"),
        )
    }
    for policy, report in reports.items():
        Report.model_validate(report)
        assert report["policy"] == policy
    # The baseline books SO-1002 against ERP stock that is not pickable; the rules router never oversells.
    assert reports["baseline"]["kpis"]["oversells"] >= 1
    assert reports["rules"]["kpis"]["oversells"] == 0
    rules = {d["subject"]: d["outcome"] for d in reports["rules"]["decisions"] if d["workflow"] == "order_release"}
    assert rules["SO-1003"] == "held"  # CUST-9 is on credit hold
    oversells_row = next(line for line in proc.stdout.splitlines() if line.strip("│ ").startswith("oversells "))
    assert [c.strip() for c in oversells_row.strip("│ ").split("│")][2] == "0"  # the rules column
