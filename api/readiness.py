"""What ``/readyz`` reports besides Redis and the store: the queue and each connected system."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from fastapi.concurrency import run_in_threadpool

CONNECTORS = ("wms", "erp", "oms", "notify")


def _endpoint(adapter: Any) -> str | None:
    """Where a connector's system answers: the HTTP adapters' base URL, Tryton's server URL."""
    url = getattr(adapter, "base_url", None)
    if isinstance(url, str):
        return url
    config = getattr(getattr(getattr(adapter, "b", None), "client", None), "config", None)
    url = getattr(config, "url", None)
    return url if isinstance(url, str) else None


async def connector_reachability(container: Any) -> dict[str, dict[str, Any]]:
    """Each connected system: ``reachable`` (it answered HTTP below 500 within
    ``CROSSDOCK_READY_TIMEOUT_S``), the ``status`` it answered and the ``ms`` taken, or the
    ``error``. One GET of the system's base URL, all in parallel: cheap, and any answer (a 404 too)
    shows the system is up and routed."""
    timeout = float(container.settings.ready_timeout_s)
    urls = {name: _endpoint(getattr(container.systems, name, None)) for name in CONNECTORS}

    async def probe(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            answer = await client.get(url)
        except httpx.HTTPError as exc:
            return {"reachable": False, "url": url, "error": f"{type(exc).__name__}: {exc}"[:200]}
        ms = round((time.perf_counter() - started) * 1000, 1)
        return {"reachable": answer.status_code < 500, "url": url, "status": answer.status_code, "ms": ms}

    out: dict[str, dict[str, Any]] = {}
    names = [name for name, url in urls.items() if url]
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), trust_env=False) as client:
        results = await asyncio.gather(*(probe(client, str(urls[name])) for name in names))
    out.update(zip(names, results, strict=True))
    for name, url in urls.items():
        if not url:
            out[name] = {"reachable": None, "error": "not checked: no HTTP endpoint known for this connector"}
    return out


async def queue_status(container: Any) -> dict[str, Any]:
    """Jobs waiting (``depth``, ``retrying``), ``dead`` letters and the oldest job's age in seconds."""
    try:
        stats: dict[str, Any] = await run_in_threadpool(container.queue.stats)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal: Redis's own check says ready or not
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    return stats


async def follower_status(container: Any) -> dict[str, Any]:
    """The Tryton follower inside ``serve`` (``runtime.tryton_follow.status``); ``enabled: false``
    when ``CROSSDOCK_TRYTON_FOLLOW`` is off."""
    if not getattr(container.settings, "tryton_follow", False):
        return {"enabled": False}
    from runtime.tryton_follow import status

    try:
        out: dict[str, Any] = await run_in_threadpool(status, container.redis, container.settings.stream_prefix)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal, as the queue's
        return {"enabled": True, "error": f"{type(exc).__name__}: {exc}"[:200]}
    return out


async def report(container: Any) -> dict[str, Any]:
    """The queue, the connectors and the Tryton follower, read concurrently."""
    queue, connectors, follower = await asyncio.gather(
        queue_status(container), connector_reachability(container), follower_status(container)
    )
    return {"queue": queue, "connectors": connectors, "follower": follower}
