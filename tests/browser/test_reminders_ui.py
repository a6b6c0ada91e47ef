"""Automated bill reminders in a real browser, on the whole system: the firm turns reminders on
in Settings > Reminders, runs the scheduler "as of" a later date with the development control
on the Reminders page, sees the reminder in the mail viewer and on its envelope's timeline; the
client pays from the reminder; the next run sends that client nothing more.

Two clients of the test's own: one who pays, and one who does not, whose second reminder shows
that the second run really ran before the test says "nothing for the one who paid". Every
other client of the demo firm is paused first (and resumed after), so the runs never mail the
addresses other tests count; and reminders are switched off again at the end.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_pay_ui import pay_by_card
from tests.browser.ui import (
    eventually,
    filter_invoices,
    inbox,
    logged_in,
    mails,
    message,
    token,
)

pytestmark = pytest.mark.browser

BOTH = "Invoices and trust requests"
BALANCE_ROWS = "#balances tbody tr[data-client]"


@dataclass
class Client:
    name: str
    email: str
    invoice_id: str
    number: str


def new_client(page: Page, system, issued: date) -> Client:
    """A client of the test's own in the Clio sandbox with one unpaid bill issued on `issued`,
    synced into EnvelopePay; `page` is logged in as the firm."""
    clio = f"http://127.0.0.1:{system.cfg.ports.clio}"
    tag = token()
    name = f"Remindtest {tag} LLC"
    email = inbox(f"remind-{tag}")
    made = httpx.post(
        f"{clio}/sandbox/contacts",
        json={"type": "Company", "name": name, "primary_email_address": email},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    bill = httpx.post(
        f"{clio}/sandbox/bills",
        json={
            "client_id": made.json()["data"]["id"],
            "kind": "revenue_kind",
            "total": "640.00",
            "issued_at": issued.isoformat(),
        },
        timeout=10,
    )
    assert bill.status_code == 201, bill.text

    def synced() -> list | None:
        page.goto("/invoices")
        page.get_by_role("button", name="Sync", exact=True).click()
        found = filter_invoices(page, client=name, state="Unpaid", kind=BOTH)
        return found if len(found) == 1 else None

    (row,) = eventually(synced, timeout=30, what=f"{name}'s bill to sync")
    return Client(name, email, row.invoice_id, row.number)


def balance_row(page: Page, name: str):
    """The Outstanding Balances row whose client is exactly `name`."""
    exact = page.locator("td:first-child", has_text=re.compile(rf"^\s*{re.escape(name)}\s*$"))
    return page.locator(BALANCE_ROWS).filter(has=exact)


def pause_everyone_but(page: Page, keep: list[str], paused: list[str]) -> None:
    """Turn reminders off on Outstanding Balances for every client not in `keep`, adding each
    to `paused` as it goes (to resume them afterwards, whatever happens)."""
    page.goto("/balances")
    names = page.eval_on_selector_all(
        BALANCE_ROWS,
        """rows => rows
            .filter(r => r.querySelector('td.reminders button[value="off"]'))
            .map(r => r.cells[0].innerText.trim())""",
    )
    for name in names:
        if name in keep:
            continue
        balance_row(page, name).get_by_role("button", name="Turn reminders off").click()
        page.wait_for_url(re.compile(r"/balances$"))
        paused.append(name)


def resume(page: Page, names: list[str]) -> None:
    page.goto("/balances")
    for name in names:
        button = balance_row(page, name).get_by_role("button", name="Turn reminders on")
        if button.count():
            button.click()
            page.wait_for_url(re.compile(r"/balances$"))


def reminder_settings(page: Page, on: bool) -> None:
    page.goto("/settings")
    page.get_by_role("link", name="Reminder settings").click()
    expect(page.get_by_role("heading", name="Reminders", exact=True)).to_be_visible()
    enabled = page.get_by_label("Send automated reminders to clients with unpaid bills")
    if on:
        enabled.check()
        page.get_by_label("First reminder, days after the issue date").fill("15")
        page.get_by_label("Every (days)").fill("15")
        page.get_by_label("Also remind before a due date").uncheck()
        page.get_by_label("Quiet days after a send").fill("3")
    else:
        enabled.uncheck()
    page.get_by_role("button", name="Save reminder settings").click()
    expect(page.get_by_role("status")).to_contain_text("Reminder settings saved.")


def run_as_of(page: Page, moment: datetime) -> None:
    """The development control on the Reminders page: one scheduler pass as of `moment` (the
    firm's local date and time)."""
    page.goto("/reminders")
    control = page.locator("#run-reminders")
    control.get_by_label("Date and time").fill(moment.strftime("%Y-%m-%dT%H:%M"))
    control.get_by_role("button", name="Run reminders").click()
    expect(page.locator("#run-result")).to_contain_text("Reminders run:")


def history_rows(page: Page, client: Client):
    return page.locator("#history tbody tr[data-client]").filter(has_text=client.name)


@dataclass
class Firm:
    page: Page
    paused: list[str]  # the clients this test paused, resumed when it ends


@pytest.fixture
def firm(page: Page) -> Iterator[Firm]:
    """The demo firm, logged in; reminders are off again when the test ends."""
    logged_in(page)
    firm = Firm(page, [])
    try:
        yield firm
    finally:
        reminder_settings(page, on=False)
        resume(page, firm.paused)


def noon(day: date) -> datetime:
    """Midday of `day`, where the firm is: inside its business hours."""
    return datetime(day.year, day.month, day.day, 12, 0)


def test_reminders_go_out_as_of_a_later_date_and_stop_once_paid(firm: Firm, system) -> None:
    page = firm.page
    issued = datetime.now(UTC).date() - timedelta(days=1)
    payer = new_client(page, system, issued)
    control = new_client(page, system, issued)
    pause_everyone_but(page, [payer.name, control.name], firm.paused)

    # Both clients have reminders on; nothing was mailed to them yet.
    page.goto("/balances")
    for client in (payer, control):
        expect(balance_row(page, client.name).locator("td.reminders")).to_contain_text("On")
        assert mails(system.mail_api, client.email) == []

    reminder_settings(page, on=True)
    page.goto("/reminders")
    expect(page.locator("#reminders-off")).to_have_count(0)
    upcoming = page.locator("#upcoming tbody tr[data-client]").filter(has_text=payer.name)
    expect(upcoming).to_contain_text(payer.number)
    expect(upcoming).to_contain_text(payer.email)

    # 16 days after the issue date, at noon where the firm is: the first reminder is due.
    run_as_of(page, noon(issued + timedelta(days=16)))
    got = eventually(lambda: mails(system.mail_api, payer.email), what="the reminder")
    assert len(got) == 1
    eventually(lambda: mails(system.mail_api, control.email), what="the control's reminder")

    # In the mail viewer, as a person would look at it.
    viewer = f"http://127.0.0.1:{system.cfg.ports.mailview}"
    page.goto(f"{viewer}/?to={payer.email}")
    page.get_by_role("link", name=got[0]["subject"]).first.click()
    expect(page.get_by_text(payer.email).first).to_be_visible()
    mail = message(system.mail_api, got[0]["id"])
    assert mail["attachments"] == [], "a reminder carries secure links, never attachments"
    assert payer.number in (mail["text"] or "") + (mail["html"] or "")

    # The history lists it, with its envelope's timeline.
    def sent_in_history() -> bool:
        page.goto("/reminders")
        return history_rows(page, payer).filter(has_text="Sent").count() == 1

    eventually(sent_in_history, what="the reminder in the history as Sent")
    history_rows(page, payer).get_by_role("link", name="Timeline").click()
    page.wait_for_url(re.compile(r"/envelopes/[^/]+/timeline$"))
    expect(page.locator("main")).to_contain_text(payer.email)

    # The client pays from the reminder's secure link.
    page.set_content(mail["html"])
    page.get_by_role("link", name=re.compile(r"^Pay")).first.click()
    page.wait_for_url(re.compile(r"/pay/"))
    page.get_by_role("button", name=re.compile(r"^Pay")).first.click()
    pay_by_card(page)
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible()

    # The firm sees it paid before running again.
    def paid() -> bool:
        page.goto("/invoices")
        rows = filter_invoices(page, client=payer.name, state="All", kind=BOTH)
        return len(rows) == 1 and rows[0].state.startswith("Paid")

    eventually(paid, timeout=30, what="the bill to show as paid")

    # A month later: the control gets its next reminder; the client who paid gets nothing.
    run_as_of(page, noon(issued + timedelta(days=46)))
    eventually(
        lambda: len(mails(system.mail_api, control.email)) == 2, what="the control's next reminder"
    )
    assert len(mails(system.mail_api, payer.email)) == 1
    page.goto("/reminders")
    expect(history_rows(page, payer)).to_have_count(1)
    expect(
        page.locator("#upcoming tbody tr[data-client]").filter(has_text=payer.name)
    ).to_have_count(0)
