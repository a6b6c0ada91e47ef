"""Browser tests: Debian's Chromium driven by Playwright against the whole system.

The stack is the `system` fixture of tests/conftest.py (tests/e2e's running system: one per
backend, started once per session and shared with the end-to-end tests);
each test gets a fresh browser context and leaves a screenshot behind as a test artifact.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def artifacts_dir() -> Path:
    return Path(os.environ.get("TEST_ARTIFACTS_DIR", "test-artifacts"))


@pytest.fixture(scope="module")
def browser(system) -> Iterator[Browser]:
    """Chromium for this module's tests on one backend. Playwright's sync API keeps an event
    loop running in this thread while it is started, so it must not outlive the module (async
    tests elsewhere run their own loop), and it depends on `system` so that it is closed before
    the stack is torn down or set up for the next backend (both call asyncio.run)."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Browser, system) -> Iterator[Page]:
    """A page in a context of its own, not logged in; its last state is kept as a screenshot
    in $TEST_ARTIFACTS_DIR/screenshots/<test>-<backend>.png, passed or failed."""
    context = browser.new_context(base_url=system.gateway, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        shots = artifacts_dir() / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        name = f"{request.node.originalname}-{system.backend}.png"
        try:
            page.screenshot(path=str(shots / name), full_page=True)
        except Exception as exc:  # a screenshot must never hide the test's own outcome
            print(f"no screenshot for {name}: {exc}")
        context.close()
