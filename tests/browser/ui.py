"""What the browser tests do over and over: log in, filter, select, read rows, ask the sink."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import httpx
from playwright.sync_api import Locator, Page, expect

from devtools.stack import DEMO_EMAIL, DEMO_PASSWORD

T = TypeVar("T")

ROWS = "#invoices tbody tr[data-invoice]"


def eventually(check: Callable[[], T | None], timeout: float = 20, what: str = "it") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def token() -> str:
    return uuid.uuid4().hex[:10]


def inbox(tag: str) -> str:
    """A recipient address of the test's own, so the sink can be asked for just its mail."""
    return f"browser-{tag}-{token()}@example.com"


def login(page: Page, email: str = DEMO_EMAIL, password: str = DEMO_PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def logged_in(page: Page) -> Page:
    login(page)
    expect(page.get_by_role("heading", name="Invoices", exact=True)).to_be_visible()
    return page


@dataclass
class Row:
    invoice_id: str
    client: str
    number: str
    kind: str
    balance: str
    state: str
    last_sent: str
    unpaid: bool


def rows(page: Page) -> list[Row]:
    page.wait_for_selector("#invoices tbody tr")
    found = page.eval_on_selector_all(
        ROWS,
        """rows => rows.map(r => ({
            id: r.dataset.invoice,
            unpaid: r.dataset.unpaid === "true",
            cells: Array.from(r.cells).map(c => c.innerText.trim()),
        }))""",
    )
    return [
        Row(
            invoice_id=r["id"],
            client=r["cells"][1],
            number=r["cells"][3],
            kind=r["cells"][4],
            balance=r["cells"][8],
            state=r["cells"][9],
            last_sent=r["cells"][10],
            unpaid=r["unpaid"],
        )
        for r in found
    ]


def filter_invoices(
    page: Page, client: str | None = None, state: str | None = None, kind: str | None = None
) -> list[Row]:
    """Set the filters the way a user does (type, choose, click Filter); returns the rows."""
    form = page.locator("form.filters")
    if not form.count():
        page.goto("/invoices")
    if client is not None:
        form.get_by_label("Client").fill(client)
    if state is not None:
        form.get_by_label("State").select_option(label=state)
    if kind is not None:
        form.get_by_label("Kind").select_option(label=kind)
    with page.expect_navigation():
        form.get_by_role("button", name="Filter").click()
    return rows(page)


def checkbox(page: Page, invoice_id: str) -> Locator:
    return page.locator(f'{ROWS}[data-invoice="{invoice_id}"] input[name="invoice_ids"]')


def review_selected(page: Page) -> None:
    page.get_by_role("button", name="Review & Send Selected").click()
    expect(
        page.get_by_role("heading", name=re.compile(r"^Review envelope 1 of \d+$"))
    ).to_be_visible()


def envelope_count(page: Page) -> int:
    heading = page.get_by_role("heading", name=re.compile(r"^Review envelope \d+ of \d+$"))
    return int(heading.inner_text().rsplit(" ", 1)[1])


def total_of(page: Page) -> int:
    """The count in the pager: "41 invoices · page 1 of 2"."""
    text = page.locator(".pager").inner_text()
    return int(re.search(r"(\d+) invoices?", text).group(1))  # type: ignore[union-attr]


def cents(money: str) -> int:
    return round(float(re.sub(r"[^\d.\-]", "", money)) * 100)


def sent_at(text: str) -> datetime:
    """Last Sent as shown: "May 17, 2025 3:04 PM"."""
    return datetime.strptime(text, "%b %d, %Y %I:%M %p")


def sent_today(text: str) -> str | None:
    """The text if it is a time within the last day (the page shows UTC), else None."""
    try:
        shown = sent_at(text)
    except ValueError:
        return None
    now = datetime.now(UTC).replace(tzinfo=None)
    return text if now - timedelta(days=1) < shown <= now + timedelta(minutes=1) else None


# --- the mail sink --------------------------------------------------------------------------


def mails(mail_api: str, to: str | None = None) -> list[dict]:
    params = {"to": to} if to else {}
    return httpx.get(mail_api, params=params, timeout=10).json()


def mails_with_subject(mail_api: str, needle: str) -> list[dict]:
    return [m for m in mails(mail_api) if needle in m["subject"]]


def message(mail_api: str, message_id: str) -> dict:
    return httpx.get(f"{mail_api}/{message_id}", timeout=10).json()
