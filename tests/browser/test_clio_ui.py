"""Clio in a real browser: Settings' Clio card (region, account, health), the Sync button's
progress page, the Sync issues page with its link into Clio, and Disconnect then Connect again
through the sandbox's consent page. The test leaves the shared system connected, as it found it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import artifacts_dir
from tests.browser.ui import logged_in

pytestmark = pytest.mark.browser


def shot(page: Page, name: str, backend: str) -> None:
    shots = artifacts_dir() / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"clio-{name}-{backend}.png"), full_page=True)


def test_clio_card_sync_progress_issues_and_reconnect(page: Page, system) -> None:
    clio = f"http://127.0.0.1:{system.cfg.ports.clio}"
    broken = {
        "id": 5199077,
        "etag": "b77",
        "number": "INV-UI-BROKEN",
        "state": "awaiting_payment",
        "kind": "revenue_kind",
        "total": "not a number",
        "balance": 10,
        "updated_at": datetime.now(UTC).isoformat(),
        "client": {"id": 9100001, "name": "Acme Holdings Inc."},
        "currency": {"code": "USD"},
    }
    assert httpx.post(f"{clio}/sandbox/bills/raw", json=broken).status_code == 201
    logged_in(page)

    # Sync: the progress page, then the time of the last completed sync.
    page.get_by_role("button", name="Sync", exact=True).click()
    expect(page.get_by_role("heading", name="Sync with Clio")).to_be_visible()
    expect(page.locator("#sync-finished")).to_contain_text("Last completed sync", timeout=60_000)
    shot(page, "sync-progress", system.backend)

    # Settings: the connection's health, the issues count linking to Sync issues.
    page.goto("/settings")
    card = page.locator("#clio")
    expect(card.locator("#clio-region")).to_have_text("United States")
    expect(card.locator("#clio-account")).not_to_be_empty()
    expect(card.locator("#clio-issues a")).to_contain_text("held back")
    shot(page, "settings", system.backend)
    card.locator("#clio-issues a").click()
    expect(page.get_by_role("heading", name="Sync issues")).to_be_visible()
    row = page.locator('#sync-issues tr[data-source-id="5199077"]')
    expect(row).to_contain_text("total is not an amount")
    expect(row.get_by_role("link", name="Open in Clio")).to_have_attribute(
        "href", f"{clio}/nc/#/bills/5199077"
    )
    shot(page, "sync-issues", system.backend)

    # Disconnect: revoked at the sandbox, forgotten here.
    page.goto("/settings")
    page.get_by_role("button", name="Disconnect Clio").click()
    expect(page.locator("#revoked")).to_be_visible()
    shot(page, "disconnected", system.backend)
    page.goto("/settings")
    expect(page.get_by_role("button", name="Connect Clio")).to_be_visible()
    shot(page, "settings-disconnected", system.backend)

    # Connect again through the consent page, the region picked.
    page.locator('#clio-connect select[name="region"]').select_option("us")
    page.get_by_role("button", name="Connect Clio").click()
    expect(page.get_by_role("button", name="Allow access")).to_be_visible()
    page.get_by_role("button", name="Allow access").click()
    expect(page.get_by_role("heading", name="Invoices", exact=True)).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Clio is connected")
    page.goto("/settings")
    expect(page.locator("#clio-region")).to_have_text("United States")
