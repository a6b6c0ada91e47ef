"""The client's pay page and the firm's Payments tab in a real browser, on the whole system in
test mode: pay one bill by card, Pay All (an invoice and a trust request, split into operating
and trust with the fee off trust), a declined card, an expired link, a bank payment (ACH) that
shows Processing, and a card payment the firm refunds in part.

Every test bills a client of its own, created in the Clio sandbox and synced, so the bills the
other browser and end-to-end tests count are never paid here; it sends the email to an inbox of
its own and follows the link in it, as a client would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import artifacts_dir
from tests.browser.ui import (
    cents,
    checkbox,
    eventually,
    filter_invoices,
    inbox,
    logged_in,
    mails,
    message,
    review_selected,
    token,
)

pytestmark = pytest.mark.browser

TO = 'input[name="to"]'
BOTH = "Invoices and trust requests"


@dataclass
class Bill:
    invoice_id: str
    number: str
    balance: str  # as the Invoices page shows it: "$1,250.00"


@dataclass
class Client:
    name: str
    email: str
    bills: list[Bill]


def new_client(page: Page, system, bills: list[tuple[str, str]]) -> Client:
    """A client of the test's own in the Clio sandbox with `bills` ((kind, total) each),
    synced into EnvelopePay; `page` is logged in as the firm."""
    clio = f"http://127.0.0.1:{system.cfg.ports.clio}"
    tag = token()
    name = f"Paytest {tag} LLC"
    email = inbox(f"pay-{tag}")
    resp = httpx.post(
        f"{clio}/sandbox/contacts",
        json={"type": "Company", "name": name, "primary_email_address": email},
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    contact_id = resp.json()["data"]["id"]
    for kind, total in bills:
        made = httpx.post(
            f"{clio}/sandbox/bills",
            json={"client_id": contact_id, "kind": kind, "total": total},
            timeout=10,
        )
        assert made.status_code == 201, made.text

    def synced() -> list | None:
        page.goto("/invoices")
        page.get_by_role("button", name="Sync", exact=True).click()
        found = filter_invoices(page, client=name, state="Unpaid", kind=BOTH)
        return found if len(found) == len(bills) else None

    rows = eventually(synced, timeout=30, what=f"{name}'s bills to sync")
    return Client(name, email, [Bill(r.invoice_id, r.number, r.balance) for r in rows])


def send_selected(page: Page, system, client: Client, bills: list[Bill]) -> dict:
    """Review & Send the chosen bills to the client's inbox; returns the email."""
    page.goto(f"/invoices?q={client.name}&state=unpaid&kind=all")
    for bill in bills:
        checkbox(page, bill.invoice_id).check()
    review_selected(page)
    page.locator(TO).fill(client.email)
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Send Envelope Now").click()
    return the_email(system.mail_api, client)


def send_balance(page: Page, system, client: Client) -> dict:
    """Outstanding Balances > Send client balance: one email with every unpaid bill."""
    page.goto("/balances")
    row = page.locator("#balances tbody tr[data-client]").filter(has_text=client.name)
    row.get_by_role("button", name="Send client balance").click()
    page.locator(TO).fill(client.email)
    page.get_by_role("button", name="Continue").click()
    page.locator("#send-now").click()
    return the_email(system.mail_api, client)


def the_email(mail_api: str, client: Client) -> dict:
    got = eventually(lambda: mails(mail_api, client.email), what="the email")
    return message(mail_api, got[-1]["id"])


def open_link(page: Page, mail: dict, name: str | re.Pattern[str]) -> None:
    """The client clicks a button in the email (Pay Online, Pay All)."""
    page.set_content(mail["html"])
    page.get_by_role("link", name=name).first.click()
    page.wait_for_url(re.compile(r"/pay/"))


def bill_row(page: Page, bill: Bill):
    return page.locator(f'table.bills tbody tr[data-invoice="{bill.invoice_id}"]')


def pay_by_card(page: Page, number: str = "4242 4242 4242 4242", name: str = "Pat Payer") -> None:
    page.get_by_label("Email").fill("pat.payer@example.com")
    page.get_by_label("Card number").fill(number)
    page.get_by_label("Expiration").fill("12 / 34")
    page.get_by_label("CVC").fill("123")
    page.get_by_label("Name on card").fill(name)
    page.locator("#pay-button").click()


@pytest.fixture
def firm(page: Page) -> Page:
    """The page, logged in as the demo firm."""
    return logged_in(page)


def test_pay_one_item_by_card(firm: Page, system) -> None:
    page = firm
    client = new_client(page, system, [("revenue_kind", "420.00"), ("revenue_kind", "99.50")])
    first, second = client.bills
    mail = send_selected(page, system, client, [first])

    open_link(page, mail, "Pay Online")
    expect(page.get_by_role("heading", name=re.compile("^Bills from"))).to_be_visible()
    expect(page.locator("table.bills tbody tr")).to_have_count(1)
    expect(page.get_by_role("button", name=re.compile("^Pay All"))).to_have_count(0)
    bill_row(page, first).get_by_role("button", name="Pay").click()

    expect(page.locator(".checkout .amount")).to_have_text(first.balance)
    expect(page.locator(".testmode")).to_contain_text("4242 4242 4242 4242")
    pay_by_card(page)
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible()
    expect(page.locator(".receipt .amount")).to_have_text(first.balance)

    page.get_by_role("link", name="Back to your bills").click()
    expect(bill_row(page, first).locator(".badge")).to_have_text("Paid")
    expect(bill_row(page, first).get_by_role("button")).to_have_count(0)

    # The firm sees it: Paid, by card ending 4242, for this bill only.
    page.goto(f"/payments?q={client.name}")
    payment = page.locator("#payments tbody tr[data-payment]")
    expect(payment).to_have_count(1)
    expect(payment).to_contain_text("Card •••• 4242")
    expect(payment.locator(".badge")).to_have_text("Paid")
    expect(payment).to_contain_text(first.number)
    expect(payment).not_to_contain_text(second.number)


def test_pay_all_with_trust_split_into_two_deposits(firm: Page, system) -> None:
    page = firm
    client = new_client(page, system, [("revenue_kind", "1250.00"), ("trust_kind", "2500.00")])
    mail = send_balance(page, system, client)
    total = sum(cents(b.balance) for b in client.bills)

    open_link(page, mail, re.compile(r"^Pay All"))
    rows = page.locator("table.bills tbody tr")
    expect(rows).to_have_count(2)
    pay_all = page.get_by_role("button", name=re.compile(r"^Pay All"))
    assert cents(pay_all.inner_text()) == total
    pay_all.click()

    assert cents(page.locator(".checkout .amount").inner_text()) == total
    expect(page.locator(".checkout .items li")).to_have_count(2)
    expect(page.locator(".checkout")).to_contain_text("trust account")
    pay_by_card(page)
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible()
    page.get_by_role("link", name="Back to your bills").click()
    for bill in client.bills:
        expect(bill_row(page, bill).locator(".badge")).to_have_text("Paid")
    expect(page.get_by_role("button", name=re.compile(r"^Pay"))).to_have_count(0)

    # One payment for the client, two deposits for the firm; the fee is never taken from trust.
    page.goto(f"/payments?q={client.name}")
    payments = page.locator("#payments tbody tr[data-payment]")
    expect(payments).to_have_count(1)
    payments.get_by_role("link").first.click()
    expect(page.get_by_role("heading", name=re.compile(r"^Payment of"))).to_be_visible()
    trust = page.locator('#deposits tr[data-account="trust"] td')
    operating = page.locator('#deposits tr[data-account="operating"] td')

    def deposited() -> bool:
        page.reload()
        return operating.count() > 0 and trust.count() > 0

    eventually(deposited, what="the two deposits")
    assert cents(trust.nth(1).inner_text()) == cents("$2,500.00")
    assert cents(trust.nth(2).inner_text()) == 0, "no fee on trust"
    assert cents(operating.nth(1).inner_text()) == cents("$1,250.00")
    assert cents(operating.nth(2).inner_text()) > 0, "the fee is on operating"


def test_declined_card_shows_the_message(firm: Page, system) -> None:
    page = firm
    client = new_client(page, system, [("revenue_kind", "310.00")])
    (bill,) = client.bills
    mail = send_selected(page, system, client, [bill])
    open_link(page, mail, "Pay Online")
    bill_row(page, bill).get_by_role("button", name="Pay").click()

    pay_by_card(page, number="4000 0000 0000 0002", name="Dee Clined")
    error = page.locator("#card_number-error")
    expect(error).to_have_text("Your card was declined.")
    expect(page.get_by_label("Card number")).to_have_value("")
    expect(page.get_by_label("Name on card")).to_have_value("Dee Clined")
    expect(page.get_by_role("heading", name="Payment received")).to_have_count(0)
    shots = artifacts_dir() / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"declined-card-message-{system.backend}.png"), full_page=True)

    # The bill is still open; a good card pays it.
    pay_by_card(page)
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible()


def test_expired_link_shows_a_clear_page(page: Page, system) -> None:
    resp = page.goto(f"/pay/{'x' * 43}")
    assert resp is not None and resp.status == 404
    expect(page.get_by_role("heading", name="This link is no longer active")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Nothing was charged.")
    expect(page.get_by_role("button")).to_have_count(0)
    resp = page.goto("/checkout/no-such-session")
    assert resp is not None and resp.status == 404
    expect(page.get_by_role("heading", name="This link is no longer active")).to_be_visible()


def test_ach_payment_shows_processing(firm: Page, system) -> None:
    page = firm
    client = new_client(page, system, [("revenue_kind", "880.00")])
    (bill,) = client.bills
    mail = send_selected(page, system, client, [bill])
    open_link(page, mail, "Pay Online")
    bill_row(page, bill).get_by_role("button", name="Pay").click()

    page.get_by_label("Bank account (ACH)").check()
    expect(page.get_by_label("Card number")).to_be_hidden()
    page.get_by_label("Email").fill("ach.payer@example.com")
    page.get_by_label("Account holder name").fill("Ach Payer")
    page.get_by_label("Routing number").fill("110000000")
    page.get_by_label("Account number").fill("000123456789")
    page.locator("#pay-ach-button").click()

    expect(page.get_by_role("heading", name="Payment processing")).to_be_visible()
    expect(page.locator(".settle-note")).to_have_text(
        "Bank payments take up to 4 business days to settle; the bill stays open until then."
    )
    page.get_by_role("link", name="Back to your bills").click()
    expect(bill_row(page, bill).locator(".badge")).to_have_text("Processing (ACH)")
    expect(bill_row(page, bill).get_by_role("button")).to_have_count(0)

    page.goto(f"/payments?q={client.name}")
    payment = page.locator("#payments tbody tr[data-payment]")
    expect(payment.locator(".badge")).to_have_text("Processing (ACH)")
    expect(payment).to_contain_text("Bank •••• 6789")
    payment.get_by_role("link").first.click()
    expect(page.locator("#refund-blocked")).to_be_visible()


def test_firm_refunds_a_card_payment_in_part(firm: Page, system) -> None:
    page = firm
    client = new_client(page, system, [("revenue_kind", "600.00"), ("revenue_kind", "150.00")])
    mail = send_balance(page, system, client)
    open_link(page, mail, re.compile(r"^Pay All"))
    page.get_by_role("button", name=re.compile(r"^Pay All")).click()
    pay_by_card(page)
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible()

    page.goto(f"/payments?q={client.name}")
    page.locator("#payments tbody tr[data-payment]").get_by_role("link").first.click()
    expect(page.locator("#payment-status")).to_have_text("Paid")
    big, small = sorted(client.bills, key=lambda b: -cents(b.balance))
    # Prefilled with what is left on each bill; refund $100 of the big one only.
    expect(page.get_by_label(f"Refund amount for {big.number}")).to_have_value("600.00")
    page.get_by_label(f"Refund amount for {big.number}").fill("100.00")
    page.get_by_label(f"Refund amount for {small.number}").fill("")
    page.locator("#refund-button").click()
    expect(page.locator("#confirm-refund")).to_contain_text("Refund $100.00 to")
    page.locator("#confirm-refund-button").dblclick()

    expect(page.locator("#refund-notice")).to_be_visible()
    refunds = page.locator("#refunds tbody tr[data-refund]")
    expect(refunds).to_have_count(1)
    expect(refunds).to_contain_text("$100.00")
    expect(refunds).to_contain_text(big.number)

    def partially_refunded() -> bool:
        page.reload()
        return page.locator("#payment-status").inner_text() == "Partially refunded"

    eventually(partially_refunded, what="the payment to read Partially refunded")
    left = page.get_by_label(f"Refund amount for {big.number}")
    expect(left).to_have_value("500.00")
    big_row = page.locator(f'#allocations tr[data-invoice="{big.invoice_id}"] td')
    assert cents(big_row.nth(3).inner_text()) == 10_000
