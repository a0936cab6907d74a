"""Guarded autonomy on a scenario: a replay with a simulated planner who approves after a lag and
rejects known classes, then the measured trust per pair (which are eligible, which were demoted)
and the shadow replay of one policy change over the whole run, by both methods of
``runtime.shadow``: ``regate`` (the recorded proposals gated again) and ``engines`` (each recorded
event decided again on its recorded reads, with the KPI deltas: cost, splits, on-time, reviews
needed, oversells).

    crossdock bench autonomy /tmp/m.json --planner-lag 3 --reject ...   (the same)
    python -m bench.autonomy /tmp/m.json --planner-lag 3 \\
        --reject backorder_prevention/transfer_proposed --reject order_release/backordered \\
        --candidate '{"review_cost_above": 250}'

Uses the scenario's own policy (``settings``); ``--mode workflow=mode`` overrides a workflow's
mode. Redis is ``REDIS_URL`` (else an embedded one); the store is a temporary SQLite file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.replay import RunOptions, ScenarioError, load_scenario, run_scenario_live
from domain.models import Policy
from runtime import autonomy, policy_versions, shadow


class AutonomyBenchError(ValueError):
    """A user error in the arguments (one line, said before the run starts)."""


def parse_args(
    scenario: Path, rejects: list[str], candidate: str, modes: list[str]
) -> tuple[dict[str, Any], frozenset[str], dict[str, Any], dict[str, str]]:
    """Check the arguments before minutes of replay: the scenario, ``workflow/outcome`` rejects, the
    candidate (JSON, valid as a partial policy) and ``workflow=mode`` overrides."""
    try:
        load_scenario(scenario)
    except ScenarioError as exc:
        raise AutonomyBenchError(str(exc)) from None
    bad = [r for r in rejects if r.count("/") != 1 or not all(r.split("/"))]
    if bad:
        raise AutonomyBenchError(f"--reject: workflow/outcome, got {bad[0]!r}")
    try:
        body = json.loads(candidate)
    except json.JSONDecodeError as exc:
        raise AutonomyBenchError(f"--candidate: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise AutonomyBenchError("--candidate: a JSON object of policy fields, e.g. '{\"review_cost_above\": 250}'")
    try:
        shadow.candidate_policy(Policy(), body)
    except ValueError as exc:
        raise AutonomyBenchError(f"--candidate: {exc}") from None
    bad = [m for m in modes if "=" not in m]
    if bad:
        raise AutonomyBenchError(f"--mode: workflow=mode, got {bad[0]!r}")
    return json.loads(scenario.read_text()), frozenset(rejects), body, dict(m.split("=", 1) for m in modes)


def run(
    scenario: Path | dict[str, Any],
    *,
    planner_lag: int,
    rejects: frozenset[str],
    candidate: dict[str, Any],
    modes: dict[str, str] | None = None,
    redis_url: str | None = None,
) -> dict[str, Any]:
    source = json.loads(scenario.read_text()) if isinstance(scenario, Path) else json.loads(json.dumps(scenario))
    source["settings"]["modes"] = {**source["settings"].get("modes", {}), **(modes or {})}
    started, since = time.monotonic(), datetime.now(UTC)
    report, live = run_scenario_live(
        source, RunOptions(planner_lag=planner_lag, planner_rejects=rejects, redis_url=redis_url)
    )
    try:
        store = live.stack.container.store
        pairs = [t.report() for t in autonomy.trust(store)]
        # The store is this run's own: the whole run is the period (decisions and event records).
        until = datetime.now(UTC) + timedelta(seconds=1)
        run_seconds = round(time.monotonic() - started, 1)
        policy = shadow.candidate_policy(store.get_policy(), candidate)
        replays: dict[str, Any] = {}
        for method, fn in (("regate", shadow.replay), ("engines", shadow.engine_replay)):
            t0 = time.monotonic()
            diff = fn(store, since, until, policy)
            seconds = round(time.monotonic() - t0, 2)
            diff["seconds"] = seconds
            again = fn(store, since, until, policy)
            again["seconds"] = seconds
            diff["deterministic"] = again == diff
            replays[method] = diff
        return {
            "seconds": round(time.monotonic() - started, 1),
            "run_seconds": run_seconds,
            "planner": {"lag": planner_lag, "rejects": sorted(rejects), **report["kpis"]["planner_approvals"]},
            "eligible": [p["pair"] for p in pairs if p["eligible"]],
            "demoted": [
                {k: e.payload[k] for k in ("pair", "reason", "version")} for e in store.audit(kind="autonomy.demoted")
            ],
            "versions": [v.model_dump(mode="json", exclude={"policy"}) for v in policy_versions.history(store)],
            "pairs": pairs,
            "candidate": candidate,
            "replay": replays,
        }
    finally:
        live.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--planner-lag", type=int, default=3)
    parser.add_argument("--reject", action="append", default=[], help="workflow/outcome the planner rejects")
    parser.add_argument("--candidate", default='{"review_cost_above": 250}', help="policy changes (JSON)")
    parser.add_argument("--mode", action="append", default=[], help="workflow=mode over the scenario's")
    parser.add_argument("--out", type=Path, help="write the whole result as JSON here")
    args = parser.parse_args()
    try:
        source, rejects, candidate, modes = parse_args(args.scenario, args.reject, args.candidate, args.mode)
    except AutonomyBenchError as exc:
        parser.exit(2, f"error: {exc}\n")
    result = run(
        source,
        planner_lag=args.planner_lag,
        rejects=rejects,
        candidate=candidate,
        modes=modes,
        redis_url=os.environ.get("REDIS_URL"),
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str))
    print_result(result)


def print_result(result: dict[str, Any]) -> None:
    """The trust per pair, the eligible and demoted pairs, then both replays of the candidate."""
    print(f"{result['seconds']} s; planner: {result['planner']}")
    print("pair                                        mode        reviews  overrides  failures  upper95  eligible")
    for p in result["pairs"]:
        w = p["window"]
        print(
            f"{p['pair']:43} {p['mode']:11} {w['reviews']:7} {w['overrides']:10} {w['failures']:9} "
            f"{w['override_wilson'][1]:8.4f}  {'yes' if p['eligible'] else 'no'}"
        )
    print("eligible:", result["eligible"] or "none")
    for d in result["demoted"]:
        print(f"demoted: {d['pair']} (policy version {d['version']}): {d['reason']}")
    print_replays(result)


_KPIS = ("cost", "splits", "on_time", "reviews_needed", "oversells", "executed", "cost_executed")


def print_replays(result: dict[str, Any]) -> None:
    """Both replays of the candidate as tables: the re-gate's moves, the engines' KPIs before/after."""
    regate, engines = result["replay"]["regate"], result["replay"]["engines"]
    print(f"\ncandidate {result['candidate']}")
    t = regate["total"]
    print(
        f"regate ({regate['seconds']} s, deterministic {regate['deterministic']}): {regate['decisions']} decisions, "
        f"{t['changed']} changed"
    )
    for name, row in [*regate["pairs"].items(), ("total", t)]:
        if row["changed"]:
            print(f"  {name}: before {row['before']} after {row['after']} delta {row['delta']} {row['moves']}")
    nr = engines["not_replayable"]
    print(
        f"engines ({engines['seconds']} s, deterministic {engines['deterministic']}): {engines['events']} events, "
        f"{engines['replayed']} replayed, {nr['count']} not replayable {nr['reasons'] or ''}, "
        f"{engines['not_compared']} not compared, {engines['decisions']} decisions, "
        f"{engines['total']['changed']} changed"
    )
    print(f"  {'pair':43} {'changed':>7}  " + "  ".join(f"{k:>22}" for k in _KPIS))
    for name, row in [*engines["pairs"].items(), ("total", engines["total"])]:
        if name != "total" and not row["changed"]:
            continue
        cells = [f"{row['before'][k]:g}->{row['after'][k]:g} ({row['delta'][k]:+g})" for k in _KPIS]
        print(f"  {name:43} {row['changed']:7}  " + "  ".join(f"{c:>22}" for c in cells))
        if row["moves"] or row["outcome_moves"]:
            print(f"  {'':43} moves {row['moves']} outcomes {row['outcome_moves']}")


if __name__ == "__main__":
    main()
