"""``crossdock`` command line: demo, serve, worker, scenario generate/run, bench, twin."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from domain.extras import MissingExtra

app = typer.Typer(
    help="Crossdock: orchestration between WMS, ERP and OMS. Agents propose, engines decide, policy gates, "
    "connectors execute.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
scenario_app = typer.Typer(
    help="Generate scenario files and replay them through the whole pipeline.", no_args_is_help=True
)
bench_app = typer.Typer(
    help="Benchmarks: measured numbers, each beside a baseline measured in the same run.", no_args_is_help=True
)
twin_app = typer.Typer(help="The digital twin: a simulated WMS, ERP and OMS over HTTP.", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")
app.add_typer(bench_app, name="bench")
app.add_typer(twin_app, name="twin")
knowledge_app = typer.Typer(help="The knowledge base: SOPs and decision history in Qdrant.", no_args_is_help=True)
triage_app = typer.Typer(help="Exception triage: the planner-override model.", no_args_is_help=True)
app.add_typer(knowledge_app, name="knowledge")
app.add_typer(triage_app, name="triage")
connect_app = typer.Typer(
    help="Connect a live system: follow its changes and post them to Crossdock's intake.", no_args_is_help=True
)
app.add_typer(connect_app, name="connect")
console = Console(stderr=True)
out = Console()

Size = Literal["small", "medium", "large"]
Systems = Literal["twin", "tryton"]
Policy = Literal["crossdock", "baseline", "rules"]
# The order the policies run and appear in, side by side: the naive yardstick, the honest rule-based
# router, then crossdock.
POLICIES: tuple[Policy, ...] = ("baseline", "rules", "crossdock")


def configure_logging(verbose: bool) -> None:
    """One event per line on stderr; JSON lines with CROSSDOCK_LOG_JSON=1 (for log shippers)."""
    from runtime.logs import configure_logging as configure

    name = "INFO" if verbose else os.environ.get("CROSSDOCK_LOG_LEVEL", "WARNING").upper()
    level = logging.getLevelNamesMapping().get(name, logging.WARNING)
    configure(level, json_lines=os.environ.get("CROSSDOCK_LOG_JSON", "").lower() in ("1", "true", "yes"))


def fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@contextmanager
def _knowledge_errors() -> Iterator[None]:
    """A knowledge base another process holds (Qdrant local mode) is a clear error, not a traceback;
    so is searching an empty one (one line saying how to fill it)."""
    from knowledge.base import KnowledgeBaseBusy, KnowledgeBaseEmpty

    try:
        yield
    except KnowledgeBaseBusy as exc:
        fail(str(exc))
    except KnowledgeBaseEmpty as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every event, job and decision.")] = False,
) -> None:
    configure_logging(verbose)


# --- scenario --------------------------------------------------------------------------


@scenario_app.command("generate")
def scenario_generate(
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same file.")] = 7,
    size: Annotated[Size, typer.Option(help="small ≈ 30 orders, medium ≈ 300, large ≈ 3000.")] = "small",
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Write a realistic scenario: Pareto SKU demand, several nodes, planted discrepancies and exceptions."""
    from twin.generator import generate

    data = generate(seed, size)
    text = json.dumps(data, indent=1)
    if out_file is None:
        out.print(text, highlight=False, soft_wrap=True)
    else:
        out_file.write_text(text)
        console.print(f"wrote {out_file} ({len(data.get('events', []))} events)")


@scenario_app.command("run")
def scenario_run(
    file: Annotated[Path, typer.Argument(help="Scenario JSON (see shared/contracts/scenario.md).")],
    policy: Annotated[
        Policy,
        typer.Option(
            help="crossdock; rules, a rule-based router (WMS stock, nearest node, split only when no node can "
            "fill); or baseline, the naive yardstick (ERP book stock)."
        ),
    ] = "crossdock",
    report: Annotated[Path | None, typer.Option(help="Write the report JSON here.")] = None,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Worker threads consuming the queue.")] = 1,
    systems: Annotated[
        Systems,
        typer.Option(
            help="twin: the digital twin plays WMS, ERP and OMS. tryton: a local trytond (template cached "
            "under .cache/tryton) seeded from FILE."
        ),
    ] = "twin",
    tick_every: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="Also tick every N simulated minutes, as the built-in clock would (default: only "
            "the scenario's own ticks).",
        ),
    ] = None,
    planner_lag: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="A simulated planner approves each proposal after it waited N events; the report "
            "counts how the approvals ended (executed, stale, failed).",
        ),
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Replay FILE under all three policies and print the KPIs side by side (baseline | rules | "
            "crossdock); with --report, the other policies' reports go beside it as <name>-<policy>.json.",
        ),
    ] = False,
) -> None:
    """Replay FILE through HTTP intake → Redis → worker → twin (or Tryton) and write the report.

    The report's KPIs include superseded proposals, stale approvals and the most live proposals one
    subject had at any moment (``max_live_per_subject``, 1 at most by design)."""
    applied: dict[str, dict[str, Any]] = {}
    kpis: dict[str, dict[str, Any]] = {}
    for name in POLICIES if compare else (policy,):
        report_data = _run(
            file, name, workers, systems, tick_every=tick_every, planner_lag=planner_lag, applied=applied
        )
        if report is not None:
            path = report if name == policy else report.with_name(f"{report.stem}-{name}{report.suffix}")
            path.write_text(json.dumps(report_data, indent=1, default=str))
            console.print(f"wrote {path}")
        kpis[name] = report_data["kpis"]
    _policy_table(applied)
    _kpi_table(kpis)


def _run(
    file: Path | dict[str, Any],
    policy: str,
    workers: int = 1,
    systems: str = "twin",
    tick_every: float | None = None,
    planner_lag: int | None = None,
    applied: dict[str, dict[str, Any]] | None = None,
    keep: list[Any] | None = None,
) -> dict[str, Any]:
    """Replay ``file``; ``applied[policy]`` gets the governance policy the replay put in force."""
    from bench.replay import RunOptions, ScenarioError, load_scenario, run_scenario, run_scenario_live, with_ticks

    try:
        _, events = load_scenario(file)
    except ScenarioError as exc:
        fail(str(exc))
    events = with_ticks(events, tick_every)
    with _progress() as progress:
        label = f"{policy}: replaying events" + (" against Tryton" if systems == "tryton" else "")
        task = progress.add_task(label, total=len(events))
        options = RunOptions(
            policy=policy,
            workers=workers,
            redis_url=os.environ.get("REDIS_URL") or None,
            database_url=os.environ.get("DATABASE_URL") or None,
            progress=lambda done, total: progress.update(task, completed=done),
            tick_every_min=tick_every,
            planner_lag=planner_lag,
            on_policy=None if applied is None else lambda body: applied.__setitem__(policy, body),
        )
        try:
            if systems == "tryton":
                from bench.replay_tryton import run_scenario_tryton
                from bench.tryton_server import TrytonServerError

                try:
                    return run_scenario_tryton(file, options)
                except TrytonServerError as exc:
                    fail(f"Tryton: {exc}")
            if keep is not None:  # demo --console: the stack stays up
                report, live = run_scenario_live(file, options)
                keep.append(live)
                return report
            return run_scenario(file, options)
        except ScenarioError as exc:
            fail(str(exc))
    raise AssertionError("unreachable")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _policy_table(columns: dict[str, dict[str, Any]]) -> None:
    """The governance policy each run put in force: every workflow's mode (a workflow the policy
    does not name observes), the review thresholds and any four-eyes amounts."""
    from domain.governance import WORKFLOWS, mode_of
    from domain.models import Policy

    if not columns:
        return
    policies = {name: Policy.model_validate(body) for name, body in columns.items()}
    table = Table(title="Governance policy")
    table.add_column("setting")
    for name in policies:
        table.add_column(name, justify="right")
    for workflow in WORKFLOWS:
        cells = [mode_of(p, workflow) + ("" if workflow in p.modes else " (default)") for p in policies.values()]
        table.add_row(f"mode: {workflow}", *cells)
    for field in ("review_cost_above", "review_confidence_below", "receipt_tolerance_pct", "wave_window_hours"):
        table.add_row(field, *(f"{getattr(p, field):g}" for p in policies.values()))
    if any(p.four_eyes_cost_above for p in policies.values()):
        table.add_row(
            "four_eyes_cost_above",
            *(", ".join(f"{w} {v:g}" for w, v in p.four_eyes_cost_above.items()) or "off" for p in policies.values()),
        )
    out.print(table)


def _kpi_table(columns: dict[str, dict[str, Any]]) -> None:
    table = Table(title="Scenario KPIs")
    table.add_column("KPI")
    for name in columns:
        table.add_column(name, justify="right")
    first = next(iter(columns.values()))
    for key in first:
        cells = []
        for kpis in columns.values():
            value = kpis[key]
            if isinstance(value, dict):
                value = " / ".join(f"{k} {v:g}" for k, v in value.items())
            elif isinstance(value, float):
                value = f"{value:.4g}"
            cells.append(str(value))
        table.add_row(key, *cells)
    out.print(table)


# --- demo ------------------------------------------------------------------------------


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Scenario seed.")] = 7,
    size: Annotated[Size, typer.Option(help="Scenario size.")] = "small",
    report_dir: Annotated[Path, typer.Option(help="Where the scenario and the reports are written.")] = Path("out"),
    with_console: Annotated[
        bool,
        typer.Option(
            "--console",
            help="Keep the crossdock run's stack up after the KPI table and print the console's URL with a "
            "sign-in key per role (Ctrl+C stops it).",
        ),
    ] = False,
) -> None:
    """Generate a network, replay a day of events under each policy (baseline, rules, crossdock), print
    the governance policy each run set and the KPIs side by side."""
    from twin.generator import generate

    report_dir.mkdir(parents=True, exist_ok=True)
    scenario_file = report_dir / f"scenario-{size}-{seed}.json"
    scenario_file.write_text(json.dumps(generate(seed, size), indent=1))
    console.print(f"scenario: {scenario_file}")
    results = {}
    applied: dict[str, dict[str, Any]] = {}
    kept: list[Any] = []  # --console: the crossdock run's stack, left running
    for policy in POLICIES:
        results[policy] = _run(
            scenario_file, policy, applied=applied, keep=kept if with_console and policy == "crossdock" else None
        )
        path = report_dir / f"report-{policy}.json"
        path.write_text(json.dumps(results[policy], indent=1, default=str))
        console.print(f"report: {path}")
    _policy_table(applied)
    _kpi_table({p: r["kpis"] for p, r in results.items()})
    if kept:
        _keep_console(kept[0])


def _keep_console(live: Any) -> None:
    """Print the console's address and a sign-in key per role, then serve until Ctrl+C (or SIGTERM)."""
    table = Table(title="Console (the crossdock run, still running)")
    table.add_column("role")
    table.add_column("sign in with this key")
    for role in ("planner", "cs_rep", "admin"):
        table.add_row(role, live.keys[role])
    console.print(table)
    console.print(f"console: {live.api_url}/console  (API: {live.api_url}/v1, Ctrl+C stops it)", soft_wrap=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        live.stop()


# --- serve / worker --------------------------------------------------------------------


SERVE_HELP = (
    "API and worker(s) in one process; settings from the environment (CROSSDOCK_*, REDIS_URL, DATABASE_URL).\n\n"
    "Also runs the built-in clock: crossdock.tick every CROSSDOCK_TICK_S seconds (default 60, 0: off; one "
    "instance ticks, under a Redis lease). Workers resume decisions left executing after CROSSDOCK_RESUME_AFTER_S "
    "and undo them after CROSSDOCK_GIVE_UP_S. With CROSSDOCK_ERP=tryton and CROSSDOCK_TRYTON_FOLLOW=true it also "
    "follows Tryton's changes (the connect tryton follower, every CROSSDOCK_TRYTON_FOLLOW_S seconds; one instance "
    "follows, under a Redis lease; a bad TRYTON_* login stops it at start). Decisions follow the lifecycle in "
    "the README: one live proposal per subject, approvals re-check their facts, a failed step undoes the applied "
    "ones, a rejection needs a reason and leads to a new plan or to awaiting_planner."
)


@app.command(help=SERVE_HELP)
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default CROSSDOCK_HOST or 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default CROSSDOCK_PORT or 8000).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker threads in this process (default CROSSDOCK_WORKERS).")
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every HTTP request (metrics count them anyway).")] = False,
) -> None:
    """API and worker(s) in one process; settings from the environment (CROSSDOCK_*, REDIS_URL, DATABASE_URL)."""
    settings = _settings()
    _preflight(settings)  # before the heavy imports: a dead server or a bad URL is reported at once
    follow = _tryton_login_check() if settings.tryton_follow else None

    import uvicorn

    from api.main import create_app
    from runtime.bootstrap import bootstrap, make_worker
    from runtime.clock import Clock
    from runtime.queue import BACKGROUND, DECISIONS, LANES

    if not settings.key_hashes:
        fail("no API keys: set CROSSDOCK_API_KEYS='key:role,...' (roles: gateway, planner, cs_rep, admin)")
    container = _start(settings, bootstrap)
    stop = threading.Event()
    threads = []
    # Decisions-only workers, and the background lane's own (ticks, crews and agent judgements
    # never stand in front of an order); with no background worker, each takes both, orders first.
    background = settings.background_workers
    roles = [(DECISIONS,) if background else LANES] * (workers if workers is not None else settings.workers)
    for n, lanes in enumerate(roles + [(BACKGROUND,)] * background):
        worker = make_worker(container, lanes=lanes)
        worker.name = f"{worker.name}-{lanes[0] if len(lanes) == 1 else 'all'}-{n}"
        threads.append(threading.Thread(target=worker.run, args=(stop,), daemon=True))
        threads[-1].start()
    if settings.tick_s > 0:  # the built-in clock (one instance ticks: a Redis lease)
        threads.append(Clock(container.redis, container.queue, settings.stream_prefix, settings.tick_s).start(stop))
    if follow is not None:  # CROSSDOCK_TRYTON_FOLLOW: one instance follows Tryton (a Redis lease)
        from runtime.tryton_follow import FollowerRole

        threads.append(FollowerRole(container, follow, settings.tryton_follow_s).start(stop))
    api = create_app(container)
    # The knowledge base opens beside the API (a new one is seeded with the shipped SOPs first), so
    # serving starts at once; chat and agents get the base once it holds the SOPs, never empty.
    knowledge_threads: list[threading.Thread] = []
    knowledge_threads.append(
        threading.Thread(
            target=_attach_knowledge,
            args=(api, container, settings, stop, knowledge_threads),
            name="kb-open",
            daemon=True,
        )
    )
    knowledge_threads[0].start()
    try:
        uvicorn.run(
            api,
            host=host or settings.host,
            port=port or settings.port,
            log_level="info",
            access_log=access_log,
        )
    finally:
        stop.set()
        for thread in threads:  # a worker waiting on the queue sees `stop` within block_ms
            thread.join(settings.block_ms / 1000 + 5)
        # Seeding and the history sync embed with onnxruntime, whose threads abort the process
        # ("terminate called without an active exception") if it exits while they run: both
        # check `stop` between batches, so this waits for one batch at most.
        joined = 0
        while joined < len(knowledge_threads):  # kb-open may add the history thread meanwhile
            knowledge_threads[joined].join(30)
            joined += 1
        container.close()


@app.command()
def replay(
    since: Annotated[str, typer.Option(help="Start of the period (ISO 8601; UTC if no zone).")],
    until: Annotated[str, typer.Option(help="End of the period, excluded (ISO 8601).")],
    policy: Annotated[Path, typer.Option(help="Candidate policy (JSON): merged over the policy in force.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as JSON.")] = False,
    engines: Annotated[
        bool,
        typer.Option(
            "--engines/--regate",
            help="--engines: decide each recorded event again with the engines on the reads it was decided "
            "on (kept while CROSSDOCK_RECORD_READS is on), gate with the candidate and diff the decisions. "
            "--regate (default): gate the recorded proposals again.",
        ),
    ] = False,
) -> None:
    """Shadow replay: gate the decisions recorded in [since, until) again with a candidate policy (or,
    with --engines, decide the period's events again on their recorded reads) and show what it would
    have changed, by workflow and outcome. Reads the store; writes nothing anywhere."""
    from datetime import UTC, datetime

    from runtime.shadow import candidate_policy, engine_replay
    from runtime.shadow import replay as shadow_replay
    from runtime.store import Store
    from tools.recording import ReadOnlyViolation

    def when(raw: str, name: str) -> datetime:
        try:
            at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--{name}: not an ISO 8601 time: {raw!r}")
        return at if at.tzinfo else at.replace(tzinfo=UTC)

    start, end = when(since, "since"), when(until, "until")
    if end <= start:
        fail("--until must be after --since")
    try:
        body = json.loads(policy.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        fail(f"--policy {policy}: {exc}")
    if not isinstance(body, dict):
        fail(f"--policy {policy}: a policy is a JSON object")
    body.pop("reason", None)
    store = Store(_settings().store_url())
    try:
        try:
            candidate = candidate_policy(store.get_policy(), body)
        except ValueError as exc:
            fail(f"--policy {policy}: {exc}")
        try:
            report = (engine_replay if engines else shadow_replay)(store, start, end, candidate)
        except ReadOnlyViolation as exc:
            fail(str(exc))
    finally:
        store.close()
    if as_json:
        out.print_json(data=report)
        return
    if engines:
        _print_engine_replay(report, start, end)
        return
    table = Table(title=f"shadow replay: {report['decisions']} decisions, {start.isoformat()} to {end.isoformat()}")
    for column in ("workflow/outcome", "decisions", "changed", "reviews", "executed", "observed", "cost executed"):
        table.add_column(column, justify="left" if column == "workflow/outcome" else "right")

    def cell(row: dict[str, Any], key: str) -> str:
        b, a, d = row["before"][key], row["after"][key], row["delta"][key]
        return f"{b:g} → {a:g} ({d:+g})"

    for name, row in [*report["pairs"].items(), ("total", {**report["total"], "decisions": report["decisions"]})]:
        keys = ("reviews_needed", "executed", "observed", "cost_executed")
        table.add_row(name, str(row["decisions"]), str(row["changed"]), *[cell(row, k) for k in keys])
    out.print(table)


def _print_engine_replay(report: dict[str, Any], start: Any, end: Any) -> None:
    nr, total = report["not_replayable"], report["total"]
    title = (
        f"engine replay: {report['replayed']} of {report['events']} events decided again, "
        f"{report['decisions']} decisions, {total['changed']} changed"
    )
    kpis = Table(title=title, caption=f"{start.isoformat()} to {end.isoformat()}")
    for column in ("KPI", "before", "after", "delta"):
        kpis.add_column(column, justify="left" if column == "KPI" else "right")
    for key in ("cost", "splits", "on_time", "reviews_needed", "oversells", "executed", "cost_executed"):
        kpis.add_row(
            key.replace("_", " "), f"{total['before'][key]:g}", f"{total['after'][key]:g}", f"{total['delta'][key]:+g}"
        )
    out.print(kpis)
    pairs = Table(title="changed, by workflow and outcome")
    for column in ("workflow/outcome", "decisions", "changed", "moves"):
        pairs.add_column(column, justify="right" if column in ("decisions", "changed") else "left")
    for name, row in report["pairs"].items():
        if row["changed"]:
            moves = ", ".join(f"{m} {n}" for m, n in {**row["moves"], **row["outcome_moves"]}.items())
            pairs.add_row(name, str(row["decisions"]), str(row["changed"]), moves)
    if pairs.row_count:
        out.print(pairs)
    for c in report["changed"][:20]:
        before, after = c["before"] or {}, c["after"] or {}
        out.print(
            f"{c['id']} {c['subject']}: {before.get('outcome', '-')}/{before.get('route', '-')}"
            f" → {after.get('outcome', '-')}/{after.get('route', '-')}"
        )
    if len(report["changed"]) > 20:
        out.print(f"… {len(report['changed']) - 20} more changed decisions (--json lists them all)")
    if nr["count"]:
        reasons = ", ".join(f"{why}: {n}" for why, n in nr["reasons"].items())
        out.print(f"not replayable: {nr['count']} event(s) ({reasons})")


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="Drain the queue, then exit (deterministic runs and tests).")] = False,
    name: Annotated[str | None, typer.Option(help="Consumer name in the group (default host-pid).")] = None,
    lane: Annotated[
        Literal["all", "decisions", "background"],
        typer.Option(
            help="Which lane to consume: decisions (source events: orders, receipts, exceptions), "
            "background (ticks, triage crews, agent judgements), or all (decisions first)."
        ),
    ] = "all",
) -> None:
    """Worker only: consume the queue (scale out by running more of these)."""
    from runtime.bootstrap import bootstrap, make_worker
    from runtime.queue import LANES

    container = bootstrap(_settings())
    if container.pipeline.agents is not None and os.environ.get("QDRANT_URL"):
        # A Qdrant server is shared by every process; local mode belongs to `crossdock serve`.
        from knowledge.base import KnowledgeBase, seed_if_empty

        container.pipeline.agents.knowledge = KnowledgeBase()
        seed_if_empty(container.pipeline.agents.knowledge)
    stop = threading.Event()
    # SIGTERM finishes the job in hand, then exits; anything unacknowledged is re-claimed by a peer.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        worker = make_worker(container, name=name, lanes=LANES if lane == "all" else (lane,))
        processed = worker.run(stop, burst=burst)
        console.print(f"processed {processed} job(s)")
    finally:
        container.close()


def _settings() -> Any:
    """Settings from the environment; a bad value is one line naming the variable, exit code 2."""
    from pydantic import ValidationError

    from runtime.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        _startup_fail(_settings_error(exc))


# Values never echoed in an error: keys, secrets, and URLs that may carry a password.
_SECRET_FIELDS = {"api_keys", "source_secrets", "audit_seal_key", "REDIS_URL", "DATABASE_URL"}


def _settings_error(exc: Any) -> str:
    """``CROSSDOCK_PORT: Input should be a valid integer ... (got 'abc')``, plus how many more."""
    errors = exc.errors(include_url=False)
    named = []
    for err in errors:
        field = str(err["loc"][0]) if err["loc"] else ""
        variable = field if field.isupper() else f"CROSSDOCK_{field.upper()}" if field else "settings"
        message = str(err["msg"]).removeprefix("Value error, ")
        got = err.get("input")
        if field and field not in _SECRET_FIELDS and isinstance(got, str | int | float):
            message += f" (got {str(got)[:60]!r})"
        named.append((variable, message))
    variable, message = named[0]
    more = f" (and {len(named) - 1} more: {', '.join(v for v, _ in named[1:])})" if len(named) > 1 else ""
    return f"{variable}: {message}{more}"


def _startup_fail(message: str) -> NoReturn:
    """One line on stderr, never wrapped, and exit code 2: what an operator needs to fix it."""
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def _where(url: str) -> str:
    """host:port/database of a server URL, without credentials."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return f"{parts.hostname or 'localhost'}:{parts.port or '-'}{parts.path or ''}"
    except ValueError:
        return "(unparsable URL)"


def _preflight(settings: Any) -> None:
    """Redis and the database answer (REDIS_URL, DATABASE_URL), each checked in a second or two
    with light imports; anything wrong is one line naming the variable."""
    if settings.redis_url:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        try:
            client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1.5, retry=Retry(NoBackoff(), 0))
        except ValueError as exc:
            _startup_fail(f"REDIS_URL is not a Redis URL: {exc}")
        try:
            client.ping()
        except redis.RedisError as exc:
            _startup_fail(f"REDIS_URL: cannot reach redis at {_where(settings.redis_url)}: {exc}")
        finally:
            client.close()
    url = settings.database_url
    if url:
        scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
        if scheme == "sqlite":
            return
        if scheme not in ("postgresql", "postgres"):
            _startup_fail(f"DATABASE_URL: unsupported scheme {scheme!r}: use postgresql://… or sqlite:///…")
        import psycopg

        conninfo = "postgresql:" + url.split(":", 1)[1] if ":" in url else url
        try:
            psycopg.connect(conninfo, connect_timeout=2).close()
        except (psycopg.Error, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            _startup_fail(f"DATABASE_URL: cannot connect to PostgreSQL at {_where(url)}: {first}")


def _tryton_login_check() -> Any:
    """With ``CROSSDOCK_TRYTON_FOLLOW``: Tryton's login (``TRYTON_*``) works, else one line and exit
    code 2 before anything starts. The config, for the follower."""
    from connectors.tryton.follower import logged_in
    from connectors.tryton.rpc import TrytonConfig
    from domain.errors import ConnectorError

    try:
        config = TrytonConfig.from_env()
        logged_in(config).close()
    except (ConnectorError, OSError) as exc:
        _startup_fail(f"CROSSDOCK_TRYTON_FOLLOW: {exc}")
    return config


def _start(settings: Any, bootstrap: Callable[[Any], Any]) -> Any:
    """``bootstrap`` with its start-up refusals as one line (a volatile Redis in production, a
    claim-idle time too short for the agents, a store that cannot be opened)."""
    import redis
    import sqlalchemy as sa

    from runtime.bootstrap import StartupError, TimingError

    try:
        return bootstrap(settings)
    except (StartupError, TimingError) as exc:
        _startup_fail(str(exc))
    except redis.RedisError as exc:
        _startup_fail(f"REDIS_URL: {type(exc).__name__}: {exc}")
    except sa.exc.SQLAlchemyError as exc:
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
        _startup_fail(f"DATABASE_URL: {type(exc).__name__}: {first}")


# --- connect ---------------------------------------------------------------------------

CONNECT_TRYTON_HELP = (
    "Follow a live Tryton and post its changes to Crossdock's intake (POST /v1/events) as CloudEvents: a "
    "confirmed sale is oms.order.created, a cancelled one oms.order.cancelled, a confirmed purchase "
    "erp.po.created, a done supplier shipment wms.receipt.posted, a done inventory wms.inventory.adjusted per "
    "changed line. Tryton is polled over JSON-RPC by write_date/create_date per model; the watermarks and the "
    "ids already accepted live in Redis (REDIS_URL, under CROSSDOCK_STREAM_PREFIX), so a restart continues "
    "where the last run stopped and never posts an event twice (ids are derived from the record and the state "
    "it reached; the intake also drops a repeated id).\n\n"
    "Tryton's login: TRYTON_URL (or --url), TRYTON_DATABASE, TRYTON_USER, TRYTON_PASSWORD or "
    "TRYTON_PASSWORD_FILE. The API key (role gateway): CROSSDOCK_CONNECT_API_KEY or --api-key-file. An "
    "order's region comes from CROSSDOCK_NETWORK_FILE's regions when the sale does not carry one.\n\n"
    "Or let `crossdock serve` follow Tryton itself: CROSSDOCK_TRYTON_FOLLOW=true (same follower, same state). "
    "One follower runs at a time: both take the same lease in Redis, and this command refuses to start (exit 2) "
    "while another holds it."
)


@connect_app.command("tryton", help=CONNECT_TRYTON_HELP)
def connect_tryton(
    url: Annotated[str | None, typer.Option(help="Tryton's base URL (default TRYTON_URL).")] = None,
    api: Annotated[str, typer.Option(help="Crossdock's API base URL.")] = "http://127.0.0.1:8000",
    api_key_file: Annotated[
        Path | None, typer.Option(help="File whose first line is the API key (else CROSSDOCK_CONNECT_API_KEY).")
    ] = None,
    once: Annotated[bool, typer.Option(help="Poll once, post what changed, then exit.")] = False,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between polls.")] = 2.0,
    since: Annotated[
        str, typer.Option(help="With no watermark yet: 'now' (Tryton's newest change), 'all', or an ISO time.")
    ] = "now",
    overlap: Annotated[float, typer.Option(min=0, help="Seconds re-read before each watermark.")] = 1.0,
    source: Annotated[str | None, typer.Option(help="CloudEvent source (default tryton/<database>).")] = None,
) -> None:
    import contextlib
    import datetime as dt
    import time

    import httpx
    import redis

    from connectors.tryton.follower import (
        FollowState,
        Intake,
        IntakeError,
        IntakeUnavailable,
        TrytonFollower,
        logged_in,
        source_of,
    )
    from connectors.tryton.network_file import NetworkFileError, load
    from connectors.tryton.rpc import TrytonConfig
    from domain.errors import ConnectorError
    from runtime.bootstrap import StartupError, connect_redis, stop_embedded
    from runtime.tryton_follow import FollowLease

    if since not in ("now", "all"):
        try:
            dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--since: 'now', 'all' or an ISO 8601 time, not {since!r}")
    key = os.environ.get("CROSSDOCK_CONNECT_API_KEY", "")
    if api_key_file is not None:
        try:
            key = api_key_file.read_text().splitlines()[0].strip() if api_key_file.read_text() else ""
        except OSError as exc:
            fail(f"--api-key-file {api_key_file}: {exc.strerror or exc}")
    if not key:
        fail("no API key: set CROSSDOCK_CONNECT_API_KEY or pass --api-key-file (a key with the gateway role)")
    env = dict(os.environ)
    if url:
        env["TRYTON_URL"] = url
    try:
        config = TrytonConfig.from_env(env)
    except (ConnectorError, OSError) as exc:
        fail(str(exc))
    settings = _settings()
    network = None
    if settings.network_file is not None:
        try:
            network = load(settings.network_file)
        except NetworkFileError as exc:
            fail(str(exc))
    try:
        with httpx.Client(trust_env=False, timeout=3.0) as probe:
            probe.get(f"{api.rstrip('/')}/healthz")
    except httpx.HTTPError as exc:
        fail(f"Crossdock API at {api} unreachable ({type(exc).__name__}); start `crossdock serve` or pass --api")
    try:
        redis_client, embedded = connect_redis(settings)
    except StartupError as exc:
        _startup_fail(str(exc))
    # One follower at a time: the lease `serve`'s follower takes (CROSSDOCK_TRYTON_FOLLOW), taken before login.
    lease = FollowLease(redis_client, settings.stream_prefix, interval)
    stop = threading.Event()
    try:
        holder = lease.take()
        if holder is not None:
            fail(
                f"another follower ({holder}) follows Tryton into this Redis ({settings.stream_prefix}): one runs at a "
                "time; stop it (or unset CROSSDOCK_TRYTON_FOLLOW on `crossdock serve`) and run this again"
            )
        lease.keep(stop)
        try:
            client = logged_in(config)
        except ConnectorError as exc:
            fail(str(exc))
    except BaseException:
        stop.set()
        lease.release()
        redis_client.close()
        if embedded is not None:
            stop_embedded(embedded)
        raise
    intake = Intake(api, key)
    source = source or source_of(config)
    follower = TrytonFollower(
        client,
        intake,
        FollowState(redis_client, settings.stream_prefix, source),
        source=source,
        network=network,
        since=since,
        overlap_s=overlap,
    )
    console.print(f"following Tryton {config.url} ({config.database}) into {api}", soft_wrap=True)

    def progress(result: Any) -> None:
        with contextlib.suppress(redis.RedisError):
            lease.beat(last_poll=time.time())
        if result.posted or result.invalid or once:
            console.print(result.line(), soft_wrap=True, markup=False)
        for bad in result.invalid:
            console.print(f"not posted: {bad}", soft_wrap=True, markup=False)

    try:
        if once:
            progress(follower.poll_once())
        else:
            follower.run(stop, interval, progress, lambda msg: console.print(f"retrying: {msg}", soft_wrap=True))
            if lease.lost.is_set():
                fail("lost the follower's lease (Redis unreachable, or paused past it): stopped; run this again")
    except (IntakeError, IntakeUnavailable, ConnectorError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        lease.release()
        intake.close()
        client.close()
        redis_client.close()
        if embedded is not None:
            stop_embedded(embedded)


# --- twin ------------------------------------------------------------------------------


@twin_app.command("serve")
def twin_serve(
    file: Annotated[Path, typer.Argument(help="Scenario whose network the twin loads.")],
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8100,
) -> None:
    """Serve the simulated WMS, ERP and OMS of a scenario (for `crossdock serve` to talk to)."""
    import uvicorn

    from bench.replay import ScenarioError, load_scenario
    from twin.server import create_twin_app
    from twin.state import TwinState

    try:
        scenario, _ = load_scenario(file)
    except ScenarioError as exc:
        fail(str(exc))
    uvicorn.run(create_twin_app(TwinState(scenario)), host=host, port=port, log_level="info", access_log=False)


# --- bench -----------------------------------------------------------------------------


@bench_app.command("intake")
def bench_intake(
    events: Annotated[int, typer.Option(min=100, help="Events to post.")] = 5000,
    batch: Annotated[int, typer.Option(min=1, max=1000, help="Events per request (1 = one event per request).")] = 1,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Concurrent client connections.")] = 16,
    latency_orders: Annotated[int, typer.Option(min=10, help="Orders replayed for the end-to-end latency.")] = 200,
    seconds: Annotated[int, typer.Option(min=2, max=120, help="Load duration when wrk drives the load.")] = 10,
) -> None:
    """Events/s accepted by POST /v1/events (one API process) and event→decision latency p50/p99.

    The load comes from wrk when it is installed (apt-get install wrk) and --batch is 1; otherwise from an
    asyncio httpx client in this process, which is slower than the server and caps the number it can show.
    """
    from bench.intake import run_intake_bench

    with _progress() as progress:
        task = progress.add_task("bench intake", total=None)
        result = run_intake_bench(
            events, batch, concurrency, latency_orders, lambda msg: progress.update(task, description=msg), seconds
        )
    _print_bench("Intake benchmark (measured in this run)", result)


@bench_app.command("tryton-follow")
def bench_tryton_follow(
    sales: Annotated[int, typer.Option(min=2, help="Sales confirmed one by one for the latency.")] = 20,
    restart_sales: Annotated[int, typer.Option(min=1, help="Sales confirmed while the follower restarts.")] = 10,
    interval: Annotated[float, typer.Option(min=0.05, help="The follower's seconds between polls.")] = 0.2,
) -> None:
    """Change → decision latency p50/p95 against a live trytond (sales confirmed through its JSON-RPC,
    followed by `crossdock connect tryton`'s follower), and sales missed or duplicated across a restart
    of the follower. Needs the tryton extra; uses REDIS_URL when set."""
    from bench.tryton_follow import run_tryton_follow_bench

    with _progress() as progress:
        task = progress.add_task("bench tryton-follow", total=None)
        result = run_tryton_follow_bench(
            sales, restart_sales, interval, lambda msg: progress.update(task, description=msg)
        )
    _print_bench("Tryton follower (measured in this run)", result)


@bench_app.command("allocation")
def bench_allocation(
    lines: Annotated[int, typer.Option(min=10, help="Order lines in the batch.")] = 10_000,
    nodes: Annotated[int, typer.Option(min=2, help="Nodes in the network.")] = 50,
    seed: Annotated[int, typer.Option(help="Random network seed.")] = 1,
    exact: Annotated[
        bool,
        typer.Option(
            "--exact",
            help="Instead: the plan's true gap to the exact MIP (split rules included) on small, medium and "
            "sampled components of 10,000 × 50, beside the repair before issue 19 (a few minutes).",
        ),
    ] = False,
    components: Annotated[int, typer.Option(min=1, help="With --exact: components of 10,000 × 50 to prove.")] = 5,
    time_limit: Annotated[float, typer.Option(min=1, help="With --exact: MIP seconds per instance.")] = 60.0,
) -> None:
    """Batch optimiser wall time and cost beside a second solver's optimum; greedy path p50/p99 and cost gap."""
    if exact:
        from bench.allocation import run_exact_bench

        _bench(
            "allocation --exact",
            "Allocation plan vs the exact optimum (measured in this run)",
            lambda: run_exact_bench(seed=seed, samples=components, time_limit_s=time_limit),
        )
        return
    from bench.allocation import run_allocation_bench

    _bench(
        "allocation",
        "Allocation benchmark (measured in this run)",
        lambda: run_allocation_bench(lines=lines, nodes=nodes, seed=seed),
    )


@bench_app.command("release")
def bench_release(
    orders: Annotated[int, typer.Option(min=10, help="Orders arriving over the simulated day.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random day seed.")] = 3,
) -> None:
    """A simulated day of wave planning: crossdock scoring vs static 2-hour FIFO waves, side by side."""
    from bench.release import run_release_bench

    _bench("release", "Release benchmark (measured in this run)", lambda: run_release_bench(orders=orders, seed=seed))


@bench_app.command("writes")
def bench_writes(
    decisions: Annotated[int, typer.Option(min=4, help="Order decisions written per mode and backend.")] = 300,
    threads: Annotated[int, typer.Option(min=1, help="Writers at once (workers share the audit chain's head).")] = 4,
    database_url: Annotated[
        str | None, typer.Option(help="A PostgreSQL server URL to measure too (a temporary database is made).")
    ] = None,
) -> None:
    """Order decisions/s through the store: one transaction per write vs batched, SQLite (and PostgreSQL)."""
    from bench.writes import BenchWritesError, run_writes_bench

    try:
        _bench(
            "writes",
            "Write path (measured in this run)",
            lambda: run_writes_bench(decisions=decisions, threads=threads, database_url=database_url),
        )
    except BenchWritesError as exc:
        fail(str(exc))


@bench_app.command("autonomy")
def bench_autonomy(
    scenario: Annotated[Path, typer.Argument(help="A scenario file (crossdock scenario generate).")],
    planner_lag: Annotated[int, typer.Option(min=0, help="The simulated planner answers after this many events.")] = 3,
    reject: Annotated[
        list[str] | None, typer.Option(help="workflow/outcome the simulated planner rejects (repeatable).")
    ] = None,
    candidate: Annotated[str, typer.Option(help="The policy change to replay (JSON).")] = '{"review_cost_above": 250}',
    mode: Annotated[list[str] | None, typer.Option(help="workflow=mode over the scenario's (repeatable).")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the whole result as JSON here.")] = None,
) -> None:
    """Guarded autonomy on a scenario: trust per pair (eligible, demoted) with a simulated planner, then
    the shadow replay of one policy change by both methods (re-gate; engines, with KPI deltas)."""
    from bench.autonomy import AutonomyBenchError, parse_args, print_result, run

    try:
        source, rejects, body, modes = parse_args(scenario, reject or [], candidate, mode or [])
    except AutonomyBenchError as exc:
        fail(str(exc))
    with _progress() as progress:
        progress.add_task("bench autonomy", total=None)
        result = run(
            source,
            planner_lag=planner_lag,
            rejects=rejects,
            candidate=body,
            modes=modes,
            redis_url=os.environ.get("REDIS_URL"),
        )
    if out_file:
        out_file.write_text(json.dumps(result, indent=1, default=str))
    print_result(result)


@bench_app.command("reconciliation")
def bench_reconciliation(
    lines: Annotated[int, typer.Option(min=100, help="PO lines to generate (with ASNs and receipts).")] = 200_000,
    seed: Annotated[int, typer.Option(help="Random document seed.")] = 1,
    runs: Annotated[int, typer.Option(min=1, help="Timed runs of the matcher (the median is reported).")] = 5,
) -> None:
    """Three-way match on documents with planted differences: precision/recall per class, auto-close share, lines/s."""
    from bench.reconciliation import run_reconciliation_bench

    _bench(
        "reconciliation",
        "Reconciliation benchmark (measured in this run)",
        lambda: run_reconciliation_bench(lines=lines, seed=seed, runs=runs),
    )


@bench_app.command("sweep")
def bench_sweep(
    pairs: Annotated[int, typer.Option(min=100, help="SKU@node in the twin.")] = 50_000,
    nodes: Annotated[int, typer.Option(min=1, help="Nodes they are spread over.")] = 10,
    planted: Annotated[int, typer.Option(min=1, help="Standing variances planted with no event.")] = 20,
    tryton_pairs: Annotated[
        int, typer.Option(min=0, help="Also a full pass against a real trytond seeded with this many (0: no).")
    ] = 0,
) -> None:
    """Continuous reconciliation against the twin over HTTP: full-pass time (and the bulk-read floor), raise-once,
    planted discrepancy → decision latency with the default tick and full-pass intervals; optionally Tryton."""
    from bench.sweep import run_sweep_bench, run_tryton_sweep_bench

    def run() -> dict[str, Any]:
        result = run_sweep_bench(pairs=pairs, nodes=nodes, planted=planted)
        if tryton_pairs:
            result.update(run_tryton_sweep_bench(pairs=tryton_pairs, nodes=min(nodes, tryton_pairs)))
        return result

    _bench("sweep", "Continuous reconciliation benchmark (measured in this run)", run)


@bench_app.command("knowledge")
def bench_knowledge(
    rounds: Annotated[int, typer.Option(min=1, help="Passes over the labelled query set.")] = 2,
) -> None:
    """Knowledge retrieval: top-3 hit rate on the labelled SOP queries, p50/p95 at 1k and 20k chunks, embeddings/s."""
    from bench.knowledge import run_knowledge_bench

    _bench(
        "knowledge",
        "Knowledge benchmark (measured in this run; BM25-only is the baseline)",
        lambda: run_knowledge_bench(rounds=rounds),
    )


@bench_app.command("chat")
def bench_chat(
    seed: Annotated[int, typer.Option(help="Scenario seed.")] = 7,
    size: Annotated[str, typer.Option(help="Scenario size: small, medium or large.")] = "small",
    rounds: Annotated[int, typer.Option(min=1, help="Times the evaluation set is asked.")] = 1,
) -> None:
    """Customer-service chat (deterministic): accuracy, leaks, unsupported claims, p50/p95 over the evaluation set."""
    from bench.chat import run_chat_bench

    _bench("chat", "Chat benchmark (measured in this run)", lambda: run_chat_bench(seed=seed, size=size, rounds=rounds))


@bench_app.command("triage")
def bench_triage(
    seed: Annotated[int, typer.Option(help="Scenario seed.")] = 7,
    cases: Annotated[int, typer.Option(min=10, help="Planted exception situations.")] = 300,
) -> None:
    """Exception triage on planted cases: auto-resolved share, wrong actions, grouped vs ungrouped tickets."""
    from bench.triage import run_triage_bench

    _bench(
        "triage",
        "Triage benchmark (measured in this run; the baseline tickets everything)",
        lambda: run_triage_bench(seed=seed, cases=cases),
    )


@bench_app.command("backorders")
def bench_backorders(
    seed: Annotated[int, typer.Option(help="Scenario seed.")] = 7,
    pairs: Annotated[int, typer.Option(min=10, help="SKU@node pairs with a hidden future.")] = 200,
) -> None:
    """Stockout prevention: planted stockouts prevented or announced >= 2 days ahead, transfer cost, vs reactive."""
    from bench.backorders import run_backorder_bench

    _bench(
        "backorders",
        "Backorder-prevention benchmark (measured in this run)",
        lambda: run_backorder_bench(seed=seed, pairs=pairs),
    )


@bench_app.command("load")
def bench_load(
    rate: Annotated[
        float, typer.Option(min=0.1, max=5000, help="Events per second, sent on a fixed schedule.")
    ] = 100.0,
    duration: Annotated[float, typer.Option(min=0.5, max=3600, help="Seconds of load per worker count.")] = 60.0,
    workers: Annotated[str, typer.Option(help="Worker process counts, one run each (comma-separated).")] = "1,2,4",
    tick_s: Annotated[float, typer.Option("--tick-s", min=1, help="The built-in clock's tick interval.")] = 60.0,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for load.json and load.svg.")] = Path("out/bench-load"),
    noop: Annotated[
        bool, typer.Option(help="Instead: no-op jobs/s per worker process (ack included) beside the XADD floor.")
    ] = False,
    noop_jobs: Annotated[int, typer.Option(min=100, help="Jobs queued for each --noop run.")] = 20_000,
    medium_day: Annotated[
        bool, typer.Option(help="Also replay the medium scenario's day and report its decision latency.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Scenario seed (the event mix).")] = 7,
    drain_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait after the last send for the queue to drain.")
    ] = 300.0,
) -> None:
    """Open-loop load through real processes (twin, API with its clock, N workers, Redis): event→decision
    latency from each event's scheduled send time, p50/p95/p99/max by kind, queue depth over time, errors,
    and the floors (bare /healthz, bare XADD, the twin's reads) measured in the same run."""
    from bench.load import LoadOptions, run_load_bench, run_noop_bench, summary_rows

    try:
        counts = tuple(int(w) for w in workers.split(","))
    except ValueError:
        fail(f"--workers: comma-separated whole numbers, got {workers!r}")
    if not counts or min(counts) < 1:
        fail("--workers: each count must be at least 1")
    if noop:
        with _progress() as progress:
            task = progress.add_task("bench load --noop", total=None)
            noop_result = run_noop_bench(noop_jobs, counts, lambda msg: progress.update(task, description=msg))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "noop.json").write_text(json.dumps(noop_result, indent=1))
        rows = summary_rows({"loadavg_at_end": Path("/proc/loadavg").read_text().strip(), "noop": noop_result})
    else:
        with _progress() as progress:
            task = progress.add_task("bench load", total=int(rate * duration))

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            result = run_load_bench(
                LoadOptions(
                    rate=rate,
                    duration_s=duration,
                    workers=counts,
                    tick_s=tick_s,
                    seed=seed,
                    out=out_dir,
                    medium_day=medium_day,
                    drain_timeout_s=drain_timeout,
                    say=lambda msg: progress.update(task, description=msg),
                    progress=advance,
                )
            )
        rows = summary_rows(result)
    table = Table(title=f"Load benchmark (measured in this run; written to {out_dir})")
    table.add_column("measure")
    table.add_column("value")
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


@bench_app.command("startup")
def bench_startup() -> None:
    """`crossdock serve` from launch to /readyz ready (first start and restart), and a bad setting to its error."""
    from bench.startup import run_startup_bench

    _bench("startup", "Start-up benchmark (measured in this run)", run_startup_bench)


@bench_app.command("knowledge-engines")
def bench_knowledge_engines(
    size: Annotated[int, typer.Option(min=200, help="Chunks in the corpus (the SOPs plus filler history).")] = 20_000,
    rounds: Annotated[int, typer.Option(min=1, help="Passes over the labelled query set.")] = 2,
) -> None:
    """The embedded knowledge engines side by side: qdrant-client local mode vs Qdrant Edge, hybrid p50/p95."""
    from bench.knowledge import run_engine_bench

    _bench(
        "knowledge-engines",
        "Knowledge engines (measured in this run; CROSSDOCK_KNOWLEDGE_ENGINE picks one)",
        lambda: run_engine_bench(size=size, rounds=rounds),
    )


@knowledge_app.command("ingest")
def knowledge_ingest(
    path: Annotated[Path | None, typer.Argument(help="A markdown file or folder (default: the shipped SOPs).")] = None,
) -> None:
    """Chunk markdown SOPs by section, embed them (dense + BM25) and upsert them into the knowledge base."""
    from knowledge.commands import ingest_command

    if path is not None and not path.exists():
        fail(f"{path}: no such file or folder")
    with _progress() as progress:
        progress.add_task("ingest", total=None)
        with _knowledge_errors():
            result = ingest_command(path)
    out.print(result)


@knowledge_app.command("sync-history")
def knowledge_sync_history(
    full: Annotated[bool, typer.Option("--full", help="Forget the watermark and re-read every decision.")] = False,
) -> None:
    """Copy executed, failed and planner-rejected decisions from the store into the knowledge base
    (`crossdock serve` does this every CROSSDOCK_KNOWLEDGE_SYNC_S seconds by itself)."""
    import redis

    from knowledge.commands import open_base
    from knowledge.history import HistorySync
    from runtime.store import Store

    settings = _settings()
    store = Store(settings.store_url())
    kv = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None
    if kv is None:
        fail("sync-history keeps its watermark in Redis: set REDIS_URL")
    try:
        with _knowledge_errors(), open_base() as kb, _progress() as progress:
            progress.add_task("sync decision history", total=None)
            sync = HistorySync.for_base(kb, store, kv, settings.stream_prefix)
            if full:
                sync.reset()
            written = sync.run_once()
            total = kb.count("history")
    finally:
        store.close()
        kv.close()
    out.print({"written": written, "history_points": total})


@knowledge_app.command("search")
def knowledge_search(
    query: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    k: Annotated[int, typer.Option(min=1, max=50, help="How many hits.")] = 5,
    doc_type: Annotated[str | None, typer.Option(help="Only this doc type: sop or history.")] = None,
) -> None:
    """Hybrid search (dense + BM25, fused with RRF) over SOPs and decision history."""
    from knowledge.commands import search_command

    with _knowledge_errors():
        hits = search_command(query, k, {"doc_type": doc_type} if doc_type else None)
    table = Table(title=f"knowledge: {query}")
    for col in ("score", "citation", "title", "text"):
        table.add_column(col)
    for h in hits:
        table.add_row(
            f"{h.get('score', 0):.3f}",
            str(h.get("citation", h.get("id"))),
            str(h.get("title")),
            str(h.get("text"))[:100],
        )
    out.print(table)


@triage_app.command("retrain")
def triage_retrain() -> None:
    """Retrain the override model from the audit log (approved / rejected / changed triage decisions)."""
    from runtime.learning import retrain_from_store
    from runtime.store import Store

    settings = _settings()
    store = Store(settings.store_url())
    try:
        report = retrain_from_store(store, settings.data_dir / "triage_model.json")
    finally:
        store.close()
    out.print(report)


# --- db: the store's schema ------------------------------------------------------------

eval_app = typer.Typer(help="Evaluate the LLM path against a model.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("agents")
def eval_agents(
    model: Annotated[str, typer.Option(help="A litellm model string, e.g. openai/smollm2.")],
    api_base: Annotated[str | None, typer.Option(help="The model server's base URL (OpenAI-compatible).")] = None,
    triage: Annotated[int, typer.Option(min=0, help="Planted triage cases (known right play).")] = 5,
    chat: Annotated[int, typer.Option(min=0, help="Chat questions the model rewrites.")] = 5,
    injections: Annotated[int, typer.Option(min=0, help="Prompt-injection corpus cases.")] = 5,
    context_tokens: Annotated[int | None, typer.Option(help="The model's context window (tokens).")] = None,
    token_ratio: Annotated[float | None, typer.Option(help="Model tokens per litellm-counted token.")] = None,
) -> None:
    """The labelled sets (triage, chat, injections) against a model: agreement, validated/rejected,
    fallbacks, claims caught, injections that changed anything, latency, tokens and cost per decision."""
    from bench.agents_eval import markdown, run_eval

    rows = run_eval(
        model,
        api_base,
        triage=triage,
        chat=chat,
        injections=injections,
        context_tokens=context_tokens,
        token_ratio=token_ratio,
    )
    typer.echo(markdown(rows))


db_app = typer.Typer(help="The store's schema: Alembic migrations shipped in runtime/migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _db_store() -> Any:
    from runtime.store import Store

    try:
        return Store.from_settings(_settings())
    except ValueError as exc:
        fail(str(exc))


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision (default: the newest).")] = "head",
) -> None:
    """Create or upgrade the store's schema (DATABASE_URL, else SQLite in CROSSDOCK_DATA_DIR).

    A store made before there were migrations is stamped at the first revision first. Safe to run
    while other processes use the store; `crossdock serve` and `crossdock worker` do it at start."""
    store = _db_store()
    try:
        before = store.schema_revision()
        ran = store.upgrade(revision)
        now = store.schema_revision()
    finally:
        store.close()
    if ran:
        start = before.current or ("the schema made before migrations" if before.unversioned else "an empty database")
        out.print(f"upgraded {start} -> {now.current} (ran {', '.join(ran)})")
    else:
        out.print(f"already at {now.current}" + (" (head)" if now.up_to_date else ""))


@db_app.command("current")
def db_current() -> None:
    """Print the store's schema revision and the newest shipped one; exit code 1 when behind."""
    store = _db_store()
    try:
        rev = store.schema_revision()
    finally:
        store.close()
    if rev.up_to_date:
        out.print(f"{rev.current} (head)")
        return
    if rev.unversioned:
        where = "none: tables made before migrations (an upgrade stamps them at the first revision)"
    else:
        where = rev.current or "none: an empty database"
    out.print(f"{where}; head is {rev.head}: run `crossdock db upgrade`")
    raise typer.Exit(1)


def _attach_knowledge(
    api: Any, container: Any, settings: Any, stop: threading.Event, threads: list[threading.Thread]
) -> None:
    """Open the knowledge base (seeding a new one), give it to chat and the in-process workers'
    agents, and start copying settled decisions into it (a thread added to ``threads``, which
    ``serve`` joins on the way out). A base that cannot open is one warning."""
    try:
        kb = _open_knowledge(stop)
    except Exception as exc:  # e.g. another process holds the local base: serve without one
        console.print(f"[yellow]warning:[/] no knowledge base: {escape(str(exc))}", soft_wrap=True)
        return
    if kb is None or stop.is_set():
        return
    api.state.knowledge = kb
    # The base lives as long as the process: out of the cyclic collector's way, as the app's startup
    # objects are (api.main); its ~60k objects otherwise made full collections stall intake 30-100 ms.
    gc.freeze()
    if container.pipeline.agents is not None:  # the in-process workers' agents search it too
        container.pipeline.agents.knowledge = kb
    if settings.knowledge_sync_s > 0:
        from knowledge.history import HistorySync

        sync = HistorySync.for_base(kb, container.store, container.redis, settings.stream_prefix)
        history = threading.Thread(
            target=sync.run_forever, args=(stop, settings.knowledge_sync_s), name="kb-history", daemon=True
        )
        threads.append(history)
        history.start()


def _open_knowledge(stop: threading.Event | None = None) -> Any:
    """The knowledge base for chat and agents, when the knowledge extra is installed; a new one is
    seeded with the shipped SOPs on first start (``knowledge.seed_if_empty``, logged)."""
    from domain.extras import installed

    if not installed("knowledge"):
        return None
    from knowledge.base import KnowledgeBase, seed_if_empty

    kb = KnowledgeBase()
    seed_if_empty(kb, stop)
    return kb


def _bench(name: str, title: str, run: Callable[[], dict[str, Any]]) -> None:
    """Run one benchmark under a spinner, then print its table."""
    with _progress() as progress:
        progress.add_task(f"bench {name}", total=None)
        result = run()
    _print_bench(title, result)


def _print_bench(title: str, result: dict[str, Any]) -> None:
    """Scalars as rows; a crossdock/baseline pair of dicts as two columns side by side."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.1f}"
        if isinstance(value, dict):
            return ", ".join(f"{k} {fmt(v)}" for k, v in value.items())
        return str(value)

    pair = [k for k in ("baseline", "crossdock") if isinstance(result.get(k), dict)]
    table = Table(title=title)
    table.add_column("measure")
    if len(pair) == 2:
        table.add_column("baseline", justify="right")
        table.add_column("crossdock", justify="right")
        base, ours = result["baseline"], result["crossdock"]
        for key in ours:
            if key in base and not isinstance(ours[key], dict):
                table.add_row(str(key), fmt(base[key]), fmt(ours[key]))
    else:
        table.add_column("value", justify="right")
    for key, value in result.items():
        if key in pair:
            continue
        table.add_row(str(key), *([fmt(value)] if len(pair) != 2 else ["", fmt(value)]))
    out.print(table)


def main() -> None:
    from runtime.processes import OWNER, exit_on_signals

    # Every process a command starts is stopped on the way out, even on SIGTERM/SIGHUP (they unwind
    # like an error here; SIGINT already does) and even if the code that started it did not adopt it.
    exit_on_signals()
    OWNER.own_children()
    try:
        app()
    except MissingExtra as exc:  # an optional feature used without its extra: one line, no traceback
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
