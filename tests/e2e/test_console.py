"""The console in a real browser: sign-in per role, the review queue with live updates, approving,
approving with changes, rejecting, a stale approval, bulk approve, the order timeline, a rep's chat.

Screenshots of the main pages are saved to docs/screenshots/ (the README shows them)."""

from __future__ import annotations

import re
import time

import httpx
from playwright.sync_api import Page, expect

from tests.e2e.conftest import Console, shot

PLANNER_PAGES = ["Review queue", "KPIs", "Audit", "Policy"]
SERVICE_PAGES = ["Customer chat", "At-risk orders"]


def nav_links(page: Page) -> list[str]:
    return [t.strip() for t in page.get_by_role("navigation", name="Console pages").get_by_role("link").all_inner_texts()]


def adjust_stock(console: Console, sku: str, node: str, location: str, delta: float, event_id: str) -> None:
    """The WMS counts differently: its stock moves (no event to Crossdock: the facts just moved)."""
    console.stack.state.apply_event(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "wms/test",
            "type": "wms.inventory.adjusted",
            "time": "2026-03-21T08:20:00Z",
            "data": {"node": node, "location": location, "sku": sku, "qty_delta": delta, "reason": "damage"},
        }
    )


# ---------------------------------------------------------------------------- sign-in and roles


def test_sign_in_per_role_shows_only_what_the_role_may_do(console: Console, page: Page) -> None:
    base = console.url
    page.goto(f"{base}/console/queue")
    expect(page).to_have_url(re.compile(r"/console/signin"))
    expect(page.get_by_label("API key")).to_be_focused()
    shot(page, "signin")

    # An unknown key, then a gateway key: refused, with what to do.
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not known")
    page.get_by_label("API key").fill(console.keys["gateway"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("cannot use the console")

    # A rep: chat and at-risk orders, nothing of the planner's.
    console.sign_in(page, "carol")
    expect(page).to_have_url(re.compile(r"/console/chat$"))
    expect(page.locator(".who .badge")).to_have_text("cs_rep:carol")
    assert nav_links(page) == SERVICE_PAGES
    cookie = next(c for c in page.context.cookies() if c["name"] == "crossdock_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    for path in ("/console/queue", "/console/kpis", "/console/audit", "/console/dead-letters"):
        resp = page.goto(f"{base}{path}")
        assert resp is not None and resp.status == 403, path
        expect(page.get_by_role("heading", name="Not for your role")).to_be_visible()
    # The console refuses the action too, even with the page's own token (and the API refuses the key).
    page.goto(f"{base}/console/chat")
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    resp = page.request.post(f"{base}/console/queue/bulk", form={"csrf": token or "", "action": "approve", "ids": "x"})
    assert resp.status == 403
    api = httpx.get(f"{base}/v1/decisions", headers={"Authorization": f"Bearer {console.keys['carol']}"})
    assert api.status_code == 403
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_contain_text("signed out")

    # A planner: the review pages, no dead letters.
    console.sign_in(page, "alice")
    expect(page).to_have_url(re.compile(r"/console/queue"))
    assert nav_links(page) == PLANNER_PAGES + SERVICE_PAGES
    expect(page.get_by_text("Nothing is waiting for review")).to_be_visible()
    resp = page.goto(f"{base}/console/dead-letters")
    assert resp is not None and resp.status == 403
    page.get_by_role("button", name="Sign out").click()

    # An admin sees everything.
    console.sign_in(page, "admin")
    assert nav_links(page) == [*PLANNER_PAGES, *SERVICE_PAGES, "Dead letters"]
    page.get_by_role("link", name="Dead letters").click()
    expect(page.get_by_text("No dead letters")).to_be_visible()


def test_a_post_without_the_csrf_token_does_nothing_and_sessions_expire(console: Console, page: Page) -> None:
    console.propose("order_release")
    console.order("SO-40", [("SKU-100", 2)])
    decision = console.pending("SO-40")
    console.app.state.console_config.idle_s = 2
    console.sign_in(page, "alice")
    resp = page.request.post(f"{console.url}/console/decisions/{decision['id']}/approve", form={"note": "x"})
    assert resp.status == 403 and "security token" in resp.text()
    assert console.pending("SO-40")["status"] == "pending_review"
    time.sleep(3)  # idle longer than the session's idle expiry (a Redis TTL)
    page.goto(f"{console.url}/console/decisions/{decision['id']}")
    expect(page).to_have_url(re.compile(r"/console/signin\?expired=1"))
    expect(page.get_by_role("status")).to_contain_text("session has ended")
