"""Delivery tracking in the browser, against the whole system: a sent envelope's bill shows
its latest email state on Invoices, which leads to the envelope's timeline (queued, sent);
the email's links, tracked, lead to the pay page and nowhere else; the pixel is an image.

The links are the ones the mailer wrote into the recipient's copy; only the pixel's URL is
built here with shared.tracking (the email id is the Message-ID's local part)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect

from shared.tracking import DEV_TRACKING_SECRET, pixel_url
from tests.browser.conftest import artifacts_dir
from tests.browser.ui import (
    ROWS,
    checkbox,
    eventually,
    filter_invoices,
    inbox,
    logged_in,
    mails,
    message,
    review_selected,
)

pytestmark = pytest.mark.browser

TO, SUBJECT = 'input[name="to"]', 'input[name="subject"]'


def test_a_sent_envelope_s_timeline_and_its_tracked_links(page: Page, system) -> None:
    logged_in(page)
    bill = filter_invoices(page, client="Okafor", state="Unpaid", kind="Invoices")[0]
    checkbox(page, bill.invoice_id).check()
    review_selected(page)
    to = inbox("timeline")
    page.locator(TO).fill(to)
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Send Envelope Now").click()
    expect(page.locator(".notice")).to_contain_text("sent")
    (got,) = eventually(lambda: mails(system.mail_api, to), what="the email at the sink")
    mail = message(system.mail_api, got["id"])
    email_id = got["message_id"].strip("<>").split("@", 1)[0]

    # The Email column: the latest state with its time, leading to the timeline.
    cell = page.locator(f'{ROWS}[data-invoice="{bill.invoice_id}"] td.email-state')

    def leads_to_this_email() -> bool:
        # The bill may have gone out before (another test): wait for this email's report.
        page.goto(f"/invoices?q={bill.number}&state=all")
        if cell.inner_text().strip() != "Sent":  # its time is Last Sent's, beside it
            return False
        cell.get_by_role("link").click()
        return f"Sent to {to}" in page.locator("#timeline").inner_text()

    eventually(leads_to_this_email, what="the Email column to lead to this email's timeline")
    expect(page).to_have_url(re.compile(r"/envelopes/[0-9a-f-]+/timeline$"))
    timeline_url = page.url
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text(f"Queued for {to}")
    expect(timeline).to_contain_text(f"Sent to {to} (accepted by the mail server)")
    expect(page.locator("#email-state")).to_contain_text("Sent")
    shots = artifacts_dir() / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"timeline-{system.backend}.png"), full_page=True)

    # The email's Pay Online, as the mailer wrote it: tracked, and to the pay page, this
    # system's own. The click and the page it led to reach the timeline.
    tracked = re.findall(r"https?://[^\s\"'<>]+/t/c/[^\s\"'<>]+", mail["text"])
    assert tracked, mail["text"]
    targets = {u: unquote(parse_qs(urlsplit(u).query)["u"][0]) for u in tracked}
    assert all(t.startswith(("/pay/", "/v/")) for t in targets.values()), targets
    pay_link = next(u for u, t in targets.items() if t.startswith("/pay/"))
    assert pay_link.startswith(f"{system.gateway}/t/c/{email_id}.0.")
    page.goto(pay_link)
    expect(page).to_have_url(system.gateway + targets[pay_link])
    expect(page.get_by_role("button", name=re.compile(r"^Pay"))).to_have_count(1)

    def clicked_and_viewed() -> bool:
        page.goto(timeline_url)
        text = page.locator("#timeline").inner_text()
        # Headless Chromium says so in its user agent: the mailer takes it for a link
        # scanner, and the timeline says the click was not a person's.
        clicked = f"{to} clicked Pay Online" in text or (
            f"Pay Online followed by a link scanner for {to} (not counted)" in text
        )
        return clicked and f"{to} viewed" in text

    eventually(clicked_and_viewed, what="the click and the view on the timeline")

    # A link that leads elsewhere, or was tampered with: a page saying so, never a redirect.
    forged = f"/t/c/{email_id}.0.{'A' * 22}?u=" + "https%3A%2F%2Fevil.example%2F"
    page.goto(forged)
    expect(page.get_by_role("heading", name="This link cannot be followed")).to_be_visible()
    assert page.url.startswith(system.gateway)

    pixel = httpx.get(pixel_url(system.gateway, DEV_TRACKING_SECRET, email_id, 0), timeout=10)
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    assert pixel.headers["cache-control"] == "no-store, private"
