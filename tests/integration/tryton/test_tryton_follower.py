"""Events from a live Tryton: changes made through Tryton's own JSON-RPC, as a Tryton user makes
them, reach Crossdock through ``connectors.tryton.follower`` (no scenario driver), are decided, and
the decisions write back into Tryton. A restarted follower (new objects, same Redis) posts nothing
twice and misses nothing; with its Redis state lost, the intake's dedup still queues nothing twice.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from typer.testing import CliRunner

from api.main import create_app
from bench.replay_tryton import customer_shipments
from bench.tryton_follow import confirm_sale
from bench.tryton_server import TrytonTemplate
from connectors.tryton.follower import FollowState, Intake, TrytonFollower
from connectors.tryton.loader import post_receipt
from connectors.tryton.network_file import from_scenario
from connectors.tryton.rpc import TrytonClient
from crossdock.cli import app
from domain.governance import WORKFLOWS
from domain.models import Policy, Receipt, Scenario
from runtime import network_versions
from runtime.bootstrap import Container, bootstrap
from runtime.servers import ThreadedServer, serve_in_thread
from runtime.settings import Settings, hash_key
from runtime.worker import Worker
from twin.server import create_twin_app
from twin.state import TwinState

from .harness import Tryton

SOURCE = "tryton/test"

if os.environ.get("CROSSDOCK_TRYTON_CACHE"):
    # The template a `scenario run --systems tryton` keeps (about 20 s to build, minutes on a busy
    # machine), reused when the environment names it; otherwise the session's own (the harness).
    @pytest.fixture(scope="session")
    def tryton_template() -> TrytonTemplate:
        return TrytonTemplate.load_or_create(Path(os.environ["CROSSDOCK_TRYTON_CACHE"]))


@dataclass
class Live:
    container: Container
    api: ThreadedServer
    key: str
    admin: str
    redis: redis.Redis
    prefix: str

    def follower(self, tryton: Tryton, since: str = "now") -> TrytonFollower:
        """A new follower, as a new process would build it: its own Tryton session and HTTP client."""
        client = TrytonClient(tryton.server.config())
        spec = network_versions.history(self.container.store)[-1].spec()
        return TrytonFollower(
            client,
            Intake(self.api.url, self.key),
            FollowState(self.redis, self.prefix, SOURCE),
            source=SOURCE,
            network=spec,
            since=since,
        )

    def drain(self) -> int:
        c = self.container
        return Worker(c.queue, c.pipeline.handle, c.settings, name="t-follow").run(burst=True)

    def event_ids(self, subject: str) -> set[str]:
        return {str(d.event_id) for d in self.container.store.list_decisions(subject=subject, limit=1000)}


@pytest.fixture(scope="module")
def live(tryton: Tryton, tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("follow")
    network = tmp / "network.yaml"
    network.write_text(yaml.safe_dump(from_scenario(tryton.scenario).dump(), sort_keys=False))
    key, admin, prefix = secrets.token_urlsafe(18), secrets.token_urlsafe(18), f"test-follow-{secrets.token_hex(4)}"
    settings = Settings(
        env="test",
        data_dir=tmp,
        redis_url=redis_url,
        database_url=f"sqlite:///{tmp / 'store.db'}",
        stream_prefix=prefix,
        erp="tryton",
        network_file=network,
        notify_url="http://127.0.0.1:9/notify",
        key_hashes={hash_key(key): "gateway", hash_key(admin): "admin"},
        block_ms=100,
        retry_base_s=0.01,
        retry_max_s=0.05,
        max_attempts=2,
    )
    notify = serve_in_thread(create_twin_app(TwinState(Scenario.model_validate(tryton.scenario))))  # its /notify
    settings = settings.model_copy(update={"notify_url": f"{notify.url}/notify"})
    container = bootstrap(settings, tryton_config=tryton.server.config())
    container.store.set_policy(Policy(modes=dict.fromkeys(WORKFLOWS, "autonomous")))
    api = serve_in_thread(create_app(container))
    client = redis.Redis.from_url(redis_url)
    try:
        yield Live(container, api, key, admin, client, prefix)
    finally:
        api.stop()
        notify.stop()
        for k in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(k)
        client.close()
        container.close()


def count_inventory(c: TrytonClient, bin_code: str, sku: str, delta: float) -> int:
    """A stock count at one bin that finds ``delta`` units more than the books say."""
    (location,) = c.search("stock.location", [("code", "=", bin_code)], limit=1)
    (product,) = c.search("product.product", [("code", "=", sku)], limit=1)
    (inv,) = c.create(
        "stock.inventory",
        [{"location": location, "company": c.context.get("company"), "lines": [("create", [{"product": product}])]}],
    )
    (line,) = c.search_read("stock.inventory.line", [("inventory", "=", inv)], ["expected_quantity"])
    c.write("stock.inventory.line", [line["id"]], {"quantity": float(line["expected_quantity"] or 0) + delta})
    c.button("stock.inventory", "confirm", [inv])
    return inv


def test_serve_against_tryton_sources_from_the_network_file(tryton: Tryton, live: Live) -> None:
    network = live.container.systems.oms.network()
    assert {(ln.from_node, ln.to_region) for ln in network.lanes} == {
        (ln["from"], ln["to_region"]) for ln in tryton.scenario["lanes"]
    }
    east = next(n for n in network.nodes if n.id == "DC-EAST")
    assert east.region == "US-NE" and [c.code for c in east.carriers] == ["FEDX_GROUND", "UPS_GROUND"]
    erp = live.container.systems.erp
    assert erp.sku("SKU-300").substitutes == ["SKU-301"] and erp.sku("SKU-100").safety_stock == {"DC-EAST": 5}
    (version,) = network_versions.history(live.container.store)
    assert version.version == 1 and version.source.startswith("file:") and version.network["lanes"]


def test_a_sale_confirmed_in_tryton_is_decided_and_written_back(tryton: Tryton, live: Live) -> None:
    first = live.follower(tryton)
    assert first.poll_once().posted == 0  # what Tryton held before the follower started is not news
    confirm_sale(tryton.client, "SO-F1", "CUST-2", [("SKU-100", 2)])
    result = first.poll_once()
    assert (result.posted, result.accepted, result.invalid) == (1, 1, [])
    assert result.event_ids == [
        f"tryton:sale.sale:{tryton.client.search('sale.sale', [('reference', '=', 'SO-F1')])[0]}:confirmed"
    ]
    live.drain()
    decisions = live.container.store.list_decisions(subject="SO-F1")
    assert decisions and decisions[0].workflow == "order_release"
    assert decisions[0].status == "executed", decisions[0].model_dump_json()[:3000]
    shipments = customer_shipments(tryton.client, "SO-F1")  # the decision, written back into Tryton
    assert shipments and sum(s["qty"] for s in shipments) == 2, decisions[0].model_dump_json()[:4000]
    again = first.poll_once()  # Crossdock's write touched the sale: same id, not posted again
    assert again.posted == 0
    first.client.close()


def test_a_restarted_follower_posts_nothing_twice_and_misses_nothing(tryton: Tryton, live: Live) -> None:
    c = tryton.client
    before = live.follower(tryton)
    before.poll_once()
    before.client.close()  # the follower stops; Tryton's users carry on
    sale_ids = [confirm_sale(c, f"SO-F2{n}", "CUST-1", [("SKU-100", 1)]) for n in range(2)]
    unkeyed = confirm_sale(c, None, "CUST-9", [("SKU-100", 1)])  # no reference: keyed by its number
    count_inventory(c, "A-01-01", "SKU-100", -1)
    post_receipt(
        c,
        Receipt.model_validate(
            {
                "id": "GR-F1",
                "po_id": "PO-9001",
                "node": "DC-EAST",
                "lines": [{"po_line": 10, "sku": "SKU-100", "qty": 40}],
            }
        ),
    )
    marks: dict[str | bytes, str | bytes] = dict(live.redis.hgetall(f"{live.prefix}:tryton-follow:{SOURCE}:watermark"))

    after = live.follower(tryton)  # a new process: new session, same Redis
    result = after.poll_once()
    assert result.invalid == []
    kinds = sorted(e.split(":")[1] for e in result.event_ids)
    assert kinds == ["sale.sale"] * 3 + ["stock.inventory", "stock.shipment.in"]
    assert result.accepted == 5 and result.duplicates == 0
    (number,) = [
        r["number"] for r in c.read("sale.sale", [unkeyed], ["number", "reference"]) if r["reference"] == r["number"]
    ]
    live.drain()
    for order_id in [f"SO-F2{n}" for n in range(2)] + [number]:
        assert len(live.event_ids(order_id)) == 1, order_id  # decided once: not missed, not twice
    for eid in result.event_ids:  # the receipt and the count were decided too
        assert live.container.store.list_decisions(event_id=eid), eid

    third = live.follower(tryton)
    assert third.poll_once().posted == 0  # and again: nothing new, nothing twice

    # A follower that died after the intake accepted but before Redis recorded it: the same ids
    # are posted again, and the intake answers duplicate for each: nothing is queued twice.
    live.redis.delete(f"{live.prefix}:tryton-follow:{SOURCE}:posted")
    for model, mark in marks.items():
        live.redis.hset(f"{live.prefix}:tryton-follow:{SOURCE}:watermark", model, mark)
    crashed = live.follower(tryton)
    replay = crashed.poll_once()
    assert set(result.event_ids) <= set(replay.duplicate_ids) and len(result.event_ids) == 5
    # (What the lost set had held back since the first start, PO-9001 changed by its receipt, now
    # looks new and is accepted once: that is the cost of losing Redis, and nothing is doubled.)
    assert replay.accepted == len(set(replay.event_ids) - set(replay.duplicate_ids))
    assert live.drain() == replay.accepted
    for order_id in [f"SO-F2{n}" for n in range(2)] + [number]:
        assert len(live.event_ids(order_id)) == 1, order_id
    assert all(s > 0 for s in sale_ids)
    for f in (after, third, crashed):
        f.client.close()


def _unreachable_tryton(monkeypatch: pytest.MonkeyPatch, live: Live, redis_url: str, **extra: str) -> None:
    """`connect tryton`'s environment, with a Tryton that does not answer (port 9)."""
    for name in [k for k in os.environ if k.startswith(("TRYTON_", "CROSSDOCK_"))]:
        monkeypatch.delenv(name)
    for name, value in {
        "TRYTON_URL": "http://127.0.0.1:9",
        "TRYTON_DATABASE": "x",
        "TRYTON_USER": "admin",
        "TRYTON_PASSWORD": "not-used",
        "CROSSDOCK_CONNECT_API_KEY": live.key,
        "REDIS_URL": redis_url,
        **extra,
    }.items():
        monkeypatch.setenv(name, value)


def test_connect_tryton_says_clearly_when_tryton_is_unreachable(
    live: Live, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unreachable_tryton(monkeypatch, live, redis_url)
    done = CliRunner().invoke(app, ["connect", "tryton", "--api", live.api.url, "--once"])
    assert done.exit_code == 2, done.output
    assert "Tryton at http://127.0.0.1:9 unreachable during login" in done.output
    assert done.exception is None or isinstance(done.exception, SystemExit)  # one line, no traceback
    missing = CliRunner().invoke(app, ["connect", "tryton", "--api", "http://127.0.0.1:9", "--once"])
    assert missing.exit_code == 2 and "Crossdock API at http://127.0.0.1:9 unreachable" in missing.output
    assert httpx.get(f"{live.api.url}/healthz").status_code == 200


def test_connect_tryton_refuses_to_start_while_another_follower_holds_the_lease(
    live: Live, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.clock import Lease
    from runtime.tryton_follow import lease_key, status_key

    prefix = f"crossdock-lease-{secrets.token_hex(4)}"
    _unreachable_tryton(monkeypatch, live, redis_url, CROSSDOCK_STREAM_PREFIX=prefix)
    r = redis.Redis.from_url(redis_url)
    serving = Lease(r, lease_key(prefix), 15_000)  # `serve`'s follower (CROSSDOCK_TRYTON_FOLLOW) holds it
    assert serving.hold()
    r.hset(status_key(prefix), "holder", "dc-east-4242")
    try:
        refused = CliRunner().invoke(app, ["connect", "tryton", "--api", live.api.url, "--once"])
        assert refused.exit_code == 2, refused.output
        assert "another follower (dc-east-4242)" in refused.output and "login" not in refused.output
        assert r.get(lease_key(prefix)) == serving.token.encode()  # still serve's
        serving.release()
        # Free: it takes the lease, gets as far as the login (Tryton is away here), and gives the lease up.
        failed = CliRunner().invoke(app, ["connect", "tryton", "--api", live.api.url, "--once"])
        assert failed.exit_code == 2 and "unreachable during login" in failed.output, failed.output
        assert r.exists(lease_key(prefix)) == 0
        assert serving.hold()  # so `serve` takes over at once
    finally:
        serving.release()
        r.delete(status_key(prefix))
        r.close()


def test_the_network_is_read_and_replaced_through_the_api_as_a_new_version(live: Live) -> None:
    with httpx.Client(base_url=live.api.url, trust_env=False, timeout=30) as http:
        admin = {"Authorization": f"Bearer {live.admin}"}
        current = http.get("/v1/network", headers=admin).json()
        assert current["version"] == 1 and current["source"].startswith("file:")
        body = current["network"]
        body["lanes"] = [{**body["lanes"][0], "transit_days": 9}, *body["lanes"][1:]]
        refused = http.put("/v1/network", json=body, headers={"Authorization": f"Bearer {live.key}"})
        assert refused.status_code == 403  # a gateway key may not
        bad = http.put("/v1/network", json={**body, "lanes": [{**body["lanes"][0], "transit_days": -1}]}, headers=admin)
        assert bad.status_code == 422 and "lanes" in bad.text and "transit_days" in bad.text
        done = http.put("/v1/network", json={**body, "reason": "DC-EAST lane slower"}, headers=admin)
        assert done.status_code == 200 and done.headers["X-Crossdock-Network-Version"] == "2"
        assert done.json()["in_force"] is True
        first = next(
            ln for ln in live.container.systems.oms.network().lanes if ln.from_node == body["lanes"][0]["from"]
        )
        assert first.transit_days == 9  # in force for this process's workers at once
        history = http.get("/v1/network/history", headers=admin).json()
        assert [(v["version"], v["actor"], v["reason"]) for v in history][1:] == [
            (2, "admin:admin", "DC-EAST lane slower")
        ]
        again = http.put("/v1/network", json=body, headers=admin)
        assert again.status_code == 200 and "X-Crossdock-Network-Version" not in again.headers  # no change
