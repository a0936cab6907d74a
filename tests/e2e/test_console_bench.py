"""The console's server time over 10,000 decisions, beside the bare API (printed; README "Console").

The goal is p95 <= 300 ms for the queue page and the order timeline. On a shared 2-core machine the
test only fails at five times that, so noise from other work does not fail it; the numbers are printed.
A speed goal: it runs with ``CROSSDOCK_TEST_BENCH=1`` (or ``python -m api.console.bench``), not in the
default suite, which keeps its time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from api.console.bench import TARGET_P95_MS, bench_stack, run_bench, table


@pytest.mark.skipif(not os.environ.get("CROSSDOCK_TEST_BENCH"), reason="a speed goal: CROSSDOCK_TEST_BENCH=1")
@pytest.mark.timeout(600)  # seeding 10,000 decisions and 400 timed requests: about a minute
def test_queue_and_timeline_server_time_with_10000_decisions(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with bench_stack(redis_url, None, tmp_path) as (container, url, timer, key, state):
        rows = run_bench(container, url, timer, key, state, decisions=10_000, requests=100)
    with capsys.disabled():
        print("\n" + table(rows, 10_000))
    by_page = {r["page"]: r for r in rows}
    assert len(by_page) == 4
    for name, row in by_page.items():
        if name.startswith("console"):
            assert row["p95_ms"] <= 5 * TARGET_P95_MS, row
