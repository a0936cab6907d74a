"""Ship-by dates for the review queue. The store does not hold them (the OMS does), so they are read
from the OMS for the orders on the page shown, a few at a time, and kept in Redis for ten minutes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from domain.errors import ConnectorError, UnknownOrder
from runtime.bootstrap import Container

TTL_S = 600
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="console-shipby")


def _read(container: Container, order_id: str) -> str | None:
    """The order's ship-by as ISO text ("" when it has none or the OMS does not know it); None
    when the OMS could not be reached (not cached: asked again next time)."""
    try:
        ship_by = container.systems.oms.order(order_id).order.ship_by
    except (UnknownOrder, LookupError):
        return ""
    except ConnectorError:
        return None
    return ship_by.isoformat() if ship_by is not None else ""


def ship_by(container: Container, order_ids: list[str]) -> tuple[dict[str, datetime | None], bool]:
    """Ship-by per order id, and whether the OMS answered for all of them (call in a worker thread)."""
    if not order_ids:
        return {}, True
    prefix = f"{container.settings.stream_prefix}:console:ship-by:"
    ids = sorted(set(order_ids))
    cached = container.redis.mget([prefix + oid for oid in ids])
    found: dict[str, str | None] = {}
    missing = []
    for oid, raw in zip(ids, cached, strict=True):
        if raw is None:
            missing.append(oid)
        else:
            found[oid] = raw.decode() if isinstance(raw, bytes) else str(raw)
    complete = True
    if missing:
        fresh = dict(zip(missing, _POOL.map(lambda oid: _read(container, oid), missing), strict=True))
        store = {oid: value for oid, value in fresh.items() if value is not None}
        complete = len(store) == len(fresh)
        if store:
            pipe = container.redis.pipeline(transaction=False)
            for oid, value in store.items():
                pipe.set(prefix + oid, value, ex=TTL_S)
            pipe.execute()
        found.update(fresh)
    out: dict[str, datetime | None] = {}
    for oid, text in found.items():
        out[oid] = datetime.fromisoformat(text) if text else None
    return out, complete
