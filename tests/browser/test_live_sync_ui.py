"""Live sync in a real browser: bills created, changed, paid and voided in the Clio sandbox shows on
the Invoices page without anyone pressing Sync.

The running system polls Clio once an hour (tests/e2e), so only the webhooks can bring these
changes in: sync registered them with the sandbox at connect, the sandbox posts each change to
the gateway's /webhooks/clio/<key>, and sync fetches and publishes the bill.
"""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page

from devtools.stack import wait_for_webhooks
from tests.browser.ui import ROWS, eventually, inbox, logged_in, token

pytestmark = pytest.mark.browser


def cells(page: Page, number: str) -> list[str] | None:
    """The Invoices row of bill `number` (all states), as the page shows it after a reload."""
    page.goto(f"/invoices?q={number}&state=all&kind=all")
    found = page.eval_on_selector_all(
        ROWS, "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))"
    )
    mine = [r for r in found if r[3] == number]
    return mine[0] if mine else None


def test_a_change_in_clio_shows_without_pressing_sync(page: Page, system) -> None:
    state = wait_for_webhooks(system.cfg, timeout=60)
    assert state.get("mode") == "webhooks", f"webhooks are not active: {state}"
    clio = f"http://127.0.0.1:{system.cfg.ports.clio}"
    tag = token()
    contact = httpx.post(
        f"{clio}/sandbox/contacts",
        json={
            "type": "Company",
            "name": f"Livesync {tag} LLC",
            "primary_email_address": inbox(tag),
        },
        timeout=10,
    )
    assert contact.status_code == 201, contact.text
    number = f"LIVE-{tag}"
    made = httpx.post(
        f"{clio}/sandbox/bills",
        json={
            "client_id": contact.json()["data"]["id"],
            "number": number,
            "total": "321.00",
            "due_at": "2031-01-15",
        },
        timeout=10,
    )
    assert made.status_code == 201, made.text
    bill_id = made.json()["data"]["id"]

    logged_in(page)
    assert page.get_by_role("button", name="Sync", exact=True).count() <= 1
    created = eventually(lambda: cells(page, number), timeout=20, what="the new bill")
    assert created[1] == f"Livesync {tag} LLC"
    assert created[6].startswith("Jan 15, 2031") and "321.00" in created[7]

    changed = httpx.patch(
        f"{clio}/sandbox/bills/{bill_id}", json={"due_at": "2031-03-09"}, timeout=10
    )
    assert changed.status_code == 200, changed.text
    eventually(
        lambda: (row := cells(page, number)) and row[6].startswith("Mar 9, 2031"),
        timeout=20,
        what="the new due date",
    )

    paid = httpx.patch(f"{clio}/sandbox/bills/{bill_id}", json={"state": "paid"}, timeout=10)
    assert paid.status_code == 200, paid.text
    eventually(
        lambda: (row := cells(page, number)) and row[9] == "Paid",
        timeout=20,
        what="the bill to show as paid",
    )

    # A second bill voided in Clio leaves the unpaid list.
    other = httpx.post(
        f"{clio}/sandbox/bills",
        json={"client_id": contact.json()["data"]["id"], "number": f"{number}-V", "total": "5.00"},
        timeout=10,
    )
    assert other.status_code == 201, other.text
    eventually(lambda: cells(page, f"{number}-V"), timeout=20, what="the second bill")
    voided = httpx.patch(
        f"{clio}/sandbox/bills/{other.json()['data']['id']}", json={"state": "void"}, timeout=10
    )
    assert voided.status_code == 200, voided.text
    eventually(
        lambda: (row := cells(page, f"{number}-V")) is None or row[9] == "Void",
        timeout=20,
        what="the voided bill to show as void",
    )
