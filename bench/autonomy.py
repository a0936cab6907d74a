"""Guarded autonomy on a scenario: a replay with a simulated planner who approves after a lag and
rejects known classes, then the measured trust per pair (which are eligible, which were demoted)
and the shadow replay of one policy change over the whole run.

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
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.replay import RunOptions, run_scenario_live
from runtime import autonomy, policy_versions, shadow


def run(
    scenario: Path,
    *,
    planner_lag: int,
    rejects: frozenset[str],
    candidate: dict[str, Any],
    modes: dict[str, str] | None = None,
    redis_url: str | None = None,
) -> dict[str, Any]:
    source = json.loads(scenario.read_text())
    source["settings"]["modes"] = {**source["settings"].get("modes", {}), **(modes or {})}
    started = time.monotonic()
    report, live = run_scenario_live(
        source, RunOptions(planner_lag=planner_lag, planner_rejects=rejects, redis_url=redis_url)
    )
    try:
        store = live.stack.container.store
        pairs = [t.report() for t in autonomy.trust(store)]
        decisions = store.list_decisions(limit=1_000_000)
        stamps = [d.created_at for d in decisions if d.created_at is not None]
        since, until = min(stamps), max(stamps) + timedelta(seconds=1)
        policy = shadow.candidate_policy(store.get_policy(), candidate)
        diff = shadow.replay(store, since, until, policy)
        return {
            "seconds": round(time.monotonic() - started, 1),
            "planner": {"lag": planner_lag, "rejects": sorted(rejects), **report["kpis"]["planner_approvals"]},
            "eligible": [p["pair"] for p in pairs if p["eligible"]],
            "demoted": [
                {k: e.payload[k] for k in ("pair", "reason", "version")} for e in store.audit(kind="autonomy.demoted")
            ],
            "versions": [v.model_dump(mode="json", exclude={"policy"}) for v in policy_versions.history(store)],
            "pairs": pairs,
            "candidate": candidate,
            "replay": diff,
            "replay_deterministic": shadow.replay(store, since, until, policy) == diff,
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
    modes = dict(m.split("=", 1) for m in args.mode)
    result = run(
        args.scenario,
        planner_lag=args.planner_lag,
        rejects=frozenset(args.reject),
        candidate=json.loads(args.candidate),
        modes=modes,
        redis_url=os.environ.get("REDIS_URL"),
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str))
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
    total = result["replay"]["total"]
    print(f"replay of {result['candidate']}: {result['replay']['decisions']} decisions, {total['changed']} changed")
    for name, row in [*result["replay"]["pairs"].items(), ("total", total)]:
        if row["changed"]:
            print(f"  {name}: before {row['before']} after {row['after']} delta {row['delta']} {row['moves']}")
    print("deterministic:", result["replay_deterministic"])


if __name__ == "__main__":
    main()
