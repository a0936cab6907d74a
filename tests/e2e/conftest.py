"""Browser tests of the console: Playwright drives Debian's Chromium (/usr/bin/chromium) against a real
stack (the API with the console, Redis, the store and the twin, in threads: ``make_stack``).

Without /usr/bin/chromium (``apt-get install -y chromium``) or the ``playwright`` package the tests
are skipped with that reason; nothing is downloaded."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.console.auth import ConsoleConfig
from domain.models import Policy
from runtime.settings import hash_key
from tests.integration.conftest import (  # noqa: F401  (fixtures, shared with the integration tests)
    Stack,
    close_stack,
    example,
    make_stack,
    order_event,
    redis_url,
)

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
SCRATCH = Path(tempfile.gettempdir()) / "crossdock-console-screenshots"

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]


def _skip_reason() -> str | None:
    if sync_playwright is None:
        return "playwright is not installed (pip install playwright==1.65.2, the test extra)"
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)"
    return None


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    # Package scope, not session: while sync_playwright is open its event loop is the thread's running loop,
    # and tests after tests/e2e that run a loop of their own (asyncio.run, run_until_complete) would fail.
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield chromium
        finally:
            chromium.close()


class Console:
    """The stack under test, plus named keys for the console: planner alice and bob, rep carol."""

    def __init__(self, stack: Stack, keys: dict[str, str]) -> None:
        self.stack = stack
        self.keys = keys  # alice, bob, carol, plus the stack's per-role keys
        self.url = stack.api.url

    @property
    def app(self) -> Any:
        return self.stack.api.server.config.app

    def propose(self, *workflows: str) -> None:
        """Put workflows in propose mode (a planner reviews each decision)."""
        store = self.stack.container.store
        policy = store.get_policy()
        store.set_policy(policy.model_copy(update={"modes": {**policy.modes, **dict.fromkeys(workflows, "propose")}}))

    def order(self, order_id: str, lines: list[tuple[str, float]], **kw: Any) -> list[dict[str, Any]]:
        """An order arrives; the worker decides it. The decisions recorded about it."""
        resp = self.stack.publish(order_event(order_id, lines, **kw))
        resp.raise_for_status()
        self.stack.drain()
        return [d.model_dump(mode="json") for d in self.stack.container.store.list_decisions(subject=order_id)]

    def pending(self, order_id: str) -> dict[str, Any]:
        [d] = self.stack.container.store.list_decisions(subject=order_id, status="pending_review")
        return d.model_dump(mode="json")

    def pending_id_of(self, order_id: str) -> str:
        """The id of the order's release decision (whatever its status now)."""
        found = self.stack.container.store.list_decisions(subject=order_id, workflow="order_release")
        return found[0].id

    def sign_in(self, page: Page, who: str) -> None:
        page.goto(f"{self.url}/console/signin")
        page.get_by_label("API key").fill(self.keys[who])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda u: "/signin" not in u)


@pytest.fixture
def console(tmp_path: Path, redis_url: str, example: dict[str, Any]) -> Iterator[Console]:  # noqa: F811
    named = {who: secrets.token_urlsafe(18) for who in ("alice", "bob", "carol")}
    roles = {"alice": "planner", "bob": "planner", "carol": "cs_rep"}
    api_keys = ",".join(f"{key}:{roles[who]}:{who}" for who, key in named.items())
    stack = make_stack(tmp_path, redis_url, example, api_keys=api_keys)
    # Every workflow autonomous unless a test puts one in propose mode (as after a finished rollout).
    store = stack.container.store
    store.set_policy(Policy.model_validate({**example["settings"], "modes": {**example["settings"]["modes"]}}))
    keys = {**stack.keys, **named}
    c = Console(stack, keys)
    c.app.state.console_config = ConsoleConfig()
    assert stack.container.settings.key_hashes.get(hash_key(named["alice"])) == "planner"
    try:
        yield c
    finally:
        close_stack(stack)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB", timezone_id="UTC")
    context.set_default_timeout(15_000)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    """Take a screenshot of the page as it is: into docs/screenshots/<name>.png (the README's) with
    ``CROSSDOCK_SCREENSHOTS=1``, else into the temporary folder, so a test run leaves the tree clean."""
    folder = SCREENSHOTS if os.environ.get("CROSSDOCK_SCREENSHOTS") == "1" else SCRATCH
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=False)
