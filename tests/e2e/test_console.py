"""The console in a real browser: sign-in per role, the review queue with live updates, approving,
approving with changes, rejecting, a stale approval, bulk approve, the order timeline, a rep's chat.

Screenshots of the main pages are taken as they go; ``CROSSDOCK_SCREENSHOTS=1`` saves them to
docs/screenshots/ (the README shows them)."""

from __future__ import annotations

import re
import time

import httpx
from playwright.sync_api import Page, expect

from tests.e2e.conftest import Console, shot

PLANNER_PAGES = ["Review queue", "KPIs", "Audit", "Policy", "Autonomy", "Replay"]
SERVICE_PAGES = ["Customer chat", "At-risk orders"]


def nav_links(page: Page) -> list[str]:
    return [
        t.strip() for t in page.get_by_role("navigation", name="Console pages").get_by_role("link").all_inner_texts()
    ]


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
    refused = page.request.post(
        f"{base}/console/queue/bulk", form={"csrf": token or "", "action": "approve", "ids": "x"}
    )
    assert refused.status == 403
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


# ---------------------------------------------------------------------------- the review queue and decisions


def test_a_planner_reviews_the_queue_live_and_approves_a_decision(console: Console, page: Page) -> None:
    console.propose("order_release")
    console.order("SO-41", [("SKU-100", 3)], ship_by="2026-03-22T14:00:00Z")
    console.sign_in(page, "alice")
    expect(page.locator("#live-status")).to_have_text(re.compile("Live updates: on"))
    row = page.locator("tr", has=page.get_by_role("link", name="SO-41", exact=True))
    expect(row).to_contain_text("order release")
    expect(row).to_contain_text("released")
    expect(row).to_contain_text("2026-03-22 14:00 UTC")  # ship-by, read from the OMS, with its zone

    # A new proposal arrives while the page is open: it appears without a reload (Server-Sent Events).
    console.order("SO-42", [("SKU-100", 1)])
    expect(page.get_by_role("link", name="SO-42", exact=True)).to_be_visible(timeout=10_000)
    expect(page.locator(".summary")).to_contain_text("2 decisions waiting")

    # Filters: by subject, by value; the URL keeps them.
    page.get_by_label("Subject contains").fill("SO-42")
    expect(page.get_by_role("link", name="SO-41", exact=True)).to_have_count(0)
    expect(page).to_have_url(re.compile(r"q=SO-42"))
    page.get_by_label("Subject contains").fill("")
    page.get_by_label("Value from").fill("100000")
    expect(page.get_by_text("No decision matches these filters")).to_be_visible()
    page.get_by_role("link", name="Clear the filters").click()
    expect(page.get_by_role("link", name="SO-41", exact=True)).to_be_visible()
    shot(page, "queue")

    page.get_by_role("link", name="SO-41", exact=True).click()
    expect(page.get_by_role("heading", name=re.compile("SO-41"))).to_be_visible()
    changes = page.get_by_role("table", name="Changes in OMS (orders)")
    expect(changes).to_contain_text("nothing reserved")
    expect(changes).to_contain_text("3 at DC-EAST")
    expect(changes).to_contain_text("open")  # status before → released after
    expect(page.locator(".sop figcaption")).to_contain_text("SOP-")
    expect(page.locator(".binding")).to_contain_text("Binding")
    expect(page.locator("#summary-facts")).to_contain_text("propose")  # the gate's reason
    shot(page, "decision")
    page.get_by_role("button", name="Approve", exact=True).click()
    expect(page.locator("#verdict")).to_contain_text("Approved and executed")
    page.reload()  # sends nothing again: the decision, as it is now
    expect(page.get_by_text("Approved by planner:alice")).to_be_visible()
    expect(page.get_by_role("heading", name="What changed")).to_be_visible()
    stored = console.stack.container.store.get_decision(console.pending_id_of("SO-41"))
    assert stored is not None and stored.status == "executed" and stored.review is not None
    assert stored.review["by"] == "planner:alice"
    [approved] = console.stack.container.store.audit(subject="SO-41", kind="decision.approved")
    assert approved.actor == "planner:alice"


def test_approve_with_changes_shows_the_engines_refusal_then_executes_the_change(console: Console, page: Page) -> None:
    console.propose("order_release")
    console.order("SO-43", [("SKU-100", 3)])
    decision = console.pending("SO-43")
    console.sign_in(page, "alice")
    page.goto(f"{console.url}/console/decisions/{decision['id']}")
    page.locator("summary", has_text="Approve with changes").click()
    page.get_by_label("Quantity").fill("50")
    page.get_by_role("button", name="Approve with changes").click()
    expect(page.locator("#verdict")).to_contain_text("Change refused")
    expect(page.locator("#verdict")).to_contain_text("cannot allocate 50")
    assert console.pending("SO-43")["status"] == "pending_review"  # nothing ran
    page.get_by_label("Quantity").fill("2")
    page.get_by_role("button", name="Approve with changes").click()
    expect(page.locator("#verdict")).to_contain_text("Approved and executed")
    stored = console.stack.container.store.get_decision(decision["id"])
    assert stored is not None and stored.review is not None
    assert stored.review["kind"] == "approved_with_changes" and stored.review["changes"] == [{"action": 0, "qty": 2.0}]
    expect(page.get_by_text("The actions as first proposed")).to_be_visible()


def test_rejecting_needs_a_reason_and_leads_to_the_next_proposal(console: Console, page: Page) -> None:
    console.propose("order_release")
    console.order("SO-44", [("SKU-100", 3)])
    decision = console.pending("SO-44")
    console.sign_in(page, "bob")
    page.goto(f"{console.url}/console/decisions/{decision['id']}")
    reason = page.get_by_label("Reason (required)")
    expect(reason).to_have_attribute("required", "")
    # Without the browser's own check, the server refuses an empty reason too.
    token = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    resp = page.request.post(
        f"{console.url}/console/decisions/{decision['id']}/reject", form={"csrf": token, "reason": "  "}
    )
    assert resp.status == 422 and "needs a reason" in resp.text()
    reason.fill("DC-EAST stock is promised to a key account")
    page.get_by_role("button", name="Reject", exact=True).click()
    expect(page.locator("#verdict")).to_contain_text("Rejected")
    stored = console.stack.container.store.get_decision(decision["id"])
    assert stored is not None and stored.status == "rejected"
    assert stored.review is not None
    assert (stored.review["by"], stored.review["reason"]) == (
        "planner:bob",
        "DC-EAST stock is promised to a key account",
    )
    nxt = page.get_by_role("link", name=re.compile("Review the fresh proposal"))
    expect(nxt).to_be_visible()
    nxt.click()
    expect(page.locator("#summary-facts")).to_contain_text(decision["id"])  # "Replaces" the rejected one


def test_a_stale_approval_says_so_and_links_the_fresh_proposal(console: Console, page: Page) -> None:
    console.propose("order_release")
    console.order("SO-45", [("SKU-100", 20)])
    decision = console.pending("SO-45")
    console.sign_in(page, "alice")
    page.goto(f"{console.url}/console/decisions/{decision['id']}")
    # Meanwhile, the WMS loses most of the stock the plan consumes.
    adjust_stock(console, "SKU-100", "DC-EAST", "A-01-01", -24, "adj-stale")
    page.get_by_role("button", name="Approve", exact=True).click()
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text("Stale: nothing was executed")
    expect(verdict).to_contain_text("SKU-100@DC-EAST")
    shot(page, "stale")
    verdict.get_by_role("link", name=re.compile("Review the fresh proposal")).click()
    expect(page).not_to_have_url(re.compile(decision["id"]))
    # The stale one now says what happened and where the fresh one is.
    page.goto(f"{console.url}/console/decisions/{decision['id']}")
    expect(page.get_by_text("This approval was stale.")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("Open the fresh proposal"))).to_be_visible()


def test_bulk_approve_rechecks_each_decision(console: Console, page: Page) -> None:
    console.propose("order_release")
    for n in (46, 47, 48):
        console.order(f"SO-{n}", [("SKU-100", 2)])
    console.sign_in(page, "alice")
    expect(page.locator(".summary")).to_contain_text("3 decisions waiting")
    page.get_by_label("Select every decision on this page").check()
    page.get_by_role("button", name="Approve selected").click()
    results = page.locator("#bulk-result")
    expect(results).to_contain_text("Approved: 3 of 3")
    expect(results.locator("tr.ok")).to_have_count(3)
    expect(page.get_by_text("Nothing is waiting for review")).to_be_visible()
    statuses = {d.subject: d.status for d in console.stack.container.store.list_decisions(limit=100)}
    assert [statuses[f"SO-{n}"] for n in (46, 47, 48)] == ["executed"] * 3
    # Rejecting in bulk needs a reason: the page says so and does nothing.
    console.order("SO-49", [("SKU-100", 1)])
    page.reload()
    page.get_by_label("Select SO-49 (released)").check()
    page.get_by_role("button", name="Reject selected").click()
    expect(results).to_contain_text("needs a reason")
    assert console.pending("SO-49")["status"] == "pending_review"


# ---------------------------------------------------------------------------- orders, service, the other pages


def test_the_order_timeline_puts_every_decision_audit_entry_and_wave_in_time_order(
    console: Console, page: Page
) -> None:
    console.propose("order_release")
    console.order("SO-50", [("SKU-100", 4)], customer="CUST-1")
    decision = console.pending("SO-50")
    console.sign_in(page, "alice")
    page.goto(f"{console.url}/console/decisions/{decision['id']}")
    page.get_by_role("button", name="Approve", exact=True).click()
    expect(page.locator("#verdict")).to_contain_text("Approved and executed")
    page.get_by_role("link", name="SO-50 timeline").click()
    expect(page.get_by_role("heading", name="Order SO-50")).to_be_visible()
    oms = page.get_by_role("region", name="In the OMS now")
    expect(oms).to_contain_text("released")
    expect(oms.get_by_role("table", name="Lines")).to_contain_text("4 at DC-EAST")
    expect(page.get_by_role("region", name="Waves")).to_contain_text("WV-SO-50-DC-EAST")
    items = page.locator("ol.timeline li")
    kinds = items.locator(".kind").all_text_contents()
    for kind in ("order", "decision", "review", "audit", "wave"):
        assert kind in kinds, kinds
    expect(page.locator("ol.timeline")).to_contain_text("Approved by planner:alice")
    expect(page.locator("ol.timeline")).to_contain_text("decision.approved")
    times = [t for t in items.locator("time").evaluate_all("els => els.map(e => e.getAttribute('datetime'))")]
    assert times == sorted(times)  # in time order
    shot(page, "order")

    # A rep sees the order and its waves, not the decisions or the audit trail (as in the API).
    page.get_by_role("button", name="Sign out").click()
    console.sign_in(page, "carol")
    page.goto(f"{console.url}/console/orders/SO-50")
    expect(page.get_by_text("Decisions and the audit trail are for planners")).to_be_visible()
    assert "decision" not in page.locator("ol.timeline .kind").all_text_contents()
    resp = page.goto(f"{console.url}/console/orders/SO-NOPE")
    assert resp is not None and resp.status == 404
    expect(page.get_by_role("alert")).to_contain_text("no order SO-NOPE")


def test_a_rep_chats_about_an_order_and_sees_the_at_risk_list(console: Console, page: Page) -> None:
    console.order("SO-51", [("SKU-100", 4), ("SKU-200", 1)], customer="CUST-1")
    console.order("SO-52", [("SKU-300", 5)], region="US-W", allow_split=False)  # held: 3 pickable
    console.sign_in(page, "carol")
    expect(page.get_by_text("No messages yet")).to_be_visible()
    page.get_by_label("Customer id").fill("CUST-1")
    page.get_by_label("Message").fill("Where is my order SO-51?")
    page.get_by_label("Message").press("Tab")
    page.keyboard.press("Enter")  # the Send button, reached by keyboard
    answer = page.locator("#chat-log .turn.bot").last
    expect(answer).to_contain_text("SO-51 is released")
    expect(answer.locator(".citations")).to_contain_text("order SO-51")
    expect(page.get_by_label("Message")).to_have_value("")
    page.get_by_label("Message").fill("what about line 1?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#chat-log .turn.bot")).to_have_count(2)
    expect(page.locator("#chat-log .turn.bot").last).to_contain_text("Line 1:")
    shot(page, "chat")
    # The conversation is the rep's: reloading shows it again.
    page.reload()
    expect(page.locator("#chat-log .turn.bot")).to_have_count(2)

    page.get_by_role("link", name="At-risk orders").click()
    row = page.locator("tr", has=page.get_by_role("link", name="SO-52"))
    expect(row).to_contain_text("held")
    expect(row.get_by_role("textbox")).to_have_value(re.compile(r"^Dear Bolt Hardware,.*on hold"))
    shot(page, "at-risk")


def test_kpis_audit_and_policy_pages(console: Console, page: Page) -> None:
    console.propose("order_release")
    console.order("SO-53", [("SKU-100", 1)])
    console.order("SO-54", [("SKU-100", 1)])
    first = console.pending("SO-53")
    console.stack.container.pipeline.decisions.reject(first["id"], "planner:alice", "not today")
    console.sign_in(page, "admin")
    page.get_by_role("link", name="KPIs").click()
    expect(page.get_by_role("heading", name="KPIs")).to_be_visible()
    expect(page.locator(".stat", has_text="Review queue").locator(".big")).not_to_have_text("0")
    expect(page.locator(".stat", has_text="Override rate")).to_contain_text("100.0 %")
    expect(page.get_by_role("img", name=re.compile("order_release: \\d+ decisions"))).to_be_visible()
    shot(page, "kpis")

    page.get_by_role("link", name="Audit").click()
    page.get_by_label("Subject").fill("SO-53")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("table.audit")).to_contain_text("decision.rejected")
    expect(page.locator("table.audit")).to_contain_text("planner:alice")
    page.get_by_role("link", name="Verify the chain").click()
    expect(page.locator("#verify-ok")).to_contain_text("The chain is intact")
    shot(page, "audit")

    # An admin changes the policy (PATCH semantics: only what changed), recorded as a version.
    page.get_by_role("link", name="Policy").click()
    expect(page.get_by_label("Mode of order release")).to_have_value("propose")
    page.get_by_label("Mode of order release").select_option("autonomous")
    page.get_by_label("Reason (recorded with the version)").fill("pilot went well")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#policy-message")).to_contain_text("Saved as version")
    history = page.get_by_role("region", name="History")
    expect(history.locator("tbody tr").first).to_contain_text("admin:admin")
    expect(history.locator("tbody tr").first).to_contain_text("pilot went well")
    expect(history.locator("tbody tr").first).to_contain_text("modes.order_release: propose → autonomous")
    policy = console.stack.container.store.get_policy()
    assert policy.modes["order_release"] == "autonomous"
    assert policy.modes.get("discrepancy") is None  # a workflow left at its default stays unset
    shot(page, "policy")
    # A planner reads it, and cannot change it.
    page.get_by_role("button", name="Sign out").click()
    console.sign_in(page, "alice")
    page.goto(f"{console.url}/console/policy")
    modes = page.get_by_role("region", name="Modes")
    expect(modes.locator("tr", has_text="order release")).to_contain_text("autonomous")
    expect(page.get_by_role("combobox")).to_have_count(0)
    token = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    refused = page.request.post(f"{console.url}/console/policy", form={"csrf": token, "mode.order_release": "observe"})
    assert refused.status == 403
    assert console.stack.container.store.get_policy().modes["order_release"] == "autonomous"


def test_tablet_width_keyboard_and_labels(console: Console, page: Page) -> None:
    console.propose("order_release")
    console.order("SO-55", [("SKU-100", 1)])
    console.sign_in(page, "alice")
    page.set_viewport_size({"width": 820, "height": 1180})
    page.reload()
    # Nothing wider than the screen but tables (which scroll in their own box).
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, overflow
    shot(page, "queue-tablet")
    # The first Tab reaches "Skip to content"; it moves focus to the main content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    # Every control on the main pages has a label.
    for path in (
        "/console/queue",
        f"/console/decisions/{console.pending('SO-55')['id']}",
        "/console/chat",
        "/console/audit",
        "/console/at-risk",
        "/console/orders/SO-55",
        "/console/kpis",
    ):
        page.goto(f"{console.url}{path}")
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
                 .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
                 .map(e => e.outerHTML.slice(0, 80))"""
        )
        assert unlabelled == [], (path, unlabelled)
    # Keyboard only: tab to a row's checkbox, tick it, reach Approve selected.
    page.goto(f"{console.url}/console/queue")
    page.get_by_label("Select SO-55 (released)").focus()
    page.keyboard.press("Space")
    expect(page.get_by_label("Select SO-55 (released)")).to_be_checked()
