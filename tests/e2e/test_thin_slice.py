"""One invoice from Clio to paid, over HTTP, as a firm user and a client would do it."""

from __future__ import annotations

import html
import io
import re
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import unquote

import httpx
from pypdf import PdfReader

from devtools.stack import csrf_of, login
from tests.e2e.conftest import SERVICES, RunningSystem

T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float = 30, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def rows(page: str) -> list[str]:
    return re.findall(r"<tr data-unpaid=.*?</tr>", page, re.S)


def field(page: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert m, f"no field {name}"
    return html.unescape(m.group(1))


def test_every_service_is_ready(system: RunningSystem) -> None:
    for service in SERVICES:
        port = getattr(system.cfg.ports, service)
        resp = httpx.get(f"http://127.0.0.1:{port}/health/ready")
        assert resp.status_code == 200, resp.text
        assert resp.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_invoice_from_clio_to_paid_online(system: RunningSystem) -> None:
    c = system.client()
    csrf = login(c)

    # sync pulled the sandbox's bills: the Invoices page lists them with their columns.
    all_rows = eventually(
        lambda: (
            (r := rows(c.get("/invoices", params={"state": "all", "per_page": 100}).text))
            and len(r) >= 30
            and r
        ),
        what="the synced invoices",
    )
    assert len(all_rows) >= 30
    page = c.get("/invoices", params={"q": "Priya Shah", "state": "unpaid"}).text
    priya = rows(page)
    assert priya, "Priya Shah has an unpaid invoice in the seed"
    row = priya[0]
    for text in ("Priya Shah", "INV-", "Invoice", "Unpaid", "$"):
        assert text in row
    invoice_id = re.search(r'data-invoice="([^"]+)"', row).group(1)  # type: ignore[union-attr]
    number = re.search(r">(INV-\d+)<", row).group(1)  # type: ignore[union-attr]

    # Review & Send Selected → Continue → Send Envelope Now (clicked twice).
    review = c.post("/envelopes/review", data={"csrf_token": csrf, "invoice_ids": [invoice_id]})
    assert review.status_code == 303
    batch = review.headers["location"]
    window = c.get(batch).text
    to = field(window, "to")
    assert to.endswith("@example.com")
    subject = "Your bill {{ invoice_numbers }} from {{ firm_name }}"
    body = "Dear {{ client_name }},\n\nYour bill is attached.\n\n{{ firm_name }}"
    confirm = c.post(
        f"{batch}/continue", data={"csrf_token": csrf, "to": to, "subject": subject, "body": body}
    )
    assert confirm.status_code == 200 and "Send Envelope Now" in confirm.text
    form = {
        "csrf_token": csrf,
        "send_id": field(confirm.text, "send_id"),
        "to": to,
        "subject": subject,
        "body": body,
    }
    first = c.post(f"{batch}/send", data=form)
    again = c.post(f"{batch}/send", data=form)  # a double click carries the same send id
    assert first.status_code == again.status_code == 303

    # The email reaches the SMTP sink once, with working links.
    def mail() -> list[dict]:
        return httpx.get(system.mail_api, params={"to": to}).json()

    messages = eventually(mail, what="the email at the SMTP sink")
    time.sleep(2)
    assert len(mail()) == 1, "a double click must not send twice"
    message = httpx.get(f"{system.mail_api}/{messages[0]['id']}").json()
    assert message["subject"] == f"Your bill invoice {number} from Demo Law LLP"
    assert "Dear Priya Shah," in message["text"]
    # Each link goes through the tracked redirect to one of the gateway's own pages.
    view = next(u for u in message["links"] if "/v/" in unquote(u))
    pay = next(u for u in message["links"] if "/pay/" in unquote(u))
    assert view.startswith(f"{system.gateway}/t/c/") and pay.startswith(f"{system.gateway}/t/c/")
    assert "View Invoice" in message["html"] and "Pay Online" in message["html"]

    # View Invoice shows the PDF.
    pdf = httpx.get(view, follow_redirects=True)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert number in text and "Priya Shah" in text

    # Pay Online → pay page → checkout → card 4242 succeeds.
    client = httpx.Client(timeout=30)
    pay_page = client.get(pay, follow_redirects=True)
    assert pay_page.status_code == 200 and number in pay_page.text
    token = pay_page.url.path.split("/pay/")[1]
    start = client.post(
        f"{system.gateway}/pay/{token}/checkout",
        data={"csrf_token": field(pay_page.text, "csrf_token"), "invoice_ids": invoice_id},
    )
    assert start.status_code == 303
    checkout_url = system.gateway + start.headers["location"]
    checkout = client.get(checkout_url)
    card = {
        "csrf_token": field(checkout.text, "csrf_token"),
        "name": "Priya Shah",
        "email": to,
        "exp": "12 / 34",
        "cvc": "123",
    }
    declined = client.post(checkout_url, data={**card, "card_number": "4000 0000 0000 0002"})
    assert declined.status_code == 402 and "Your card was declined." in declined.text
    paid = client.post(checkout_url, data={**card, "card_number": "4242 4242 4242 4242"})
    assert paid.status_code == 303 and paid.headers["location"].endswith("/done")
    assert "Payment received" in client.get(system.gateway + paid.headers["location"]).text

    # payment.succeeded reaches envelope: the Invoices page shows the invoice paid online.
    eventually(
        lambda: (
            "Paid online"
            in "".join(
                r
                for r in rows(c.get("/invoices", params={"q": number, "state": "all"}).text)
                if invoice_id in r
            )
        ),
        what="the invoice to show as paid online",
    )
    assert "Everything on this link is paid" in client.get(pay, follow_redirects=True).text

    # One trace follows the send from the gateway through envelope and mailer.
    def traced() -> set[str] | None:
        for trace_id in set(system.otlp.traces_with("gateway", "/send")):
            services = system.otlp.services_in_trace(trace_id)
            if {"gateway", "envelope", "mailer"} <= services:
                return services
        return None

    assert {"gateway", "envelope", "mailer"} <= eventually(
        traced, timeout=20, what="one trace across services"
    )


def test_bad_login_and_forged_form_are_refused(system: RunningSystem) -> None:
    c = system.client()
    page = c.get("/login")
    bad = c.post(
        "/login",
        data={
            "email": "demo@demolaw.example",
            "password": "wrong",
            "csrf_token": csrf_of(page.text),
        },
    )
    assert bad.status_code == 401 and "do not match" in bad.text
    login(c)
    forged = c.post("/invoices/sync", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    anonymous = httpx.get(f"{system.gateway}/invoices")
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login"


def test_malformed_bill_is_quarantined_with_its_reason(system: RunningSystem) -> None:
    from datetime import UTC, datetime

    clio = f"http://127.0.0.1:{system.cfg.ports.clio}"
    raw = {
        "id": 5199001,
        "etag": "x1",
        "number": "INV-BROKEN",
        "state": "awaiting_payment",
        "kind": "revenue_kind",
        "total": "not a number",
        "balance": 10,
        "updated_at": datetime.now(UTC).isoformat(),
        "client": {"id": 9100001, "name": "Acme Holdings Inc."},
        "currency": {"code": "USD"},
    }
    assert httpx.post(f"{clio}/sandbox/bills/raw", json=raw).status_code == 201
    c = system.client()
    csrf = login(c)
    assert c.post("/invoices/sync", data={"csrf_token": csrf}).status_code == 303
    # The sync runs behind the button (its page shows the progress): wait for its result.
    deadline = time.monotonic() + 30
    issues = c.get("/sync/issues").text
    while "5199001" not in issues and time.monotonic() < deadline:
        time.sleep(0.2)
        issues = c.get("/sync/issues").text
    assert "5199001" in issues and "total is not an amount" in issues
    assert "could not be read" in c.get("/invoices").text
    assert "INV-BROKEN" not in c.get("/invoices", params={"state": "all", "q": "BROKEN"}).text


def test_one_firm_never_sees_another_firms_data(system: RunningSystem) -> None:
    import subprocess
    import sys

    from devtools.stack import ROOT, service_env

    command = ["-m", "services.gateway", "create-user", "--email", "other@otherfirm.example"]
    command += ["--password", "other-password", "--firm", "Other Firm PC"]
    env = service_env(system.cfg, "gateway")
    subprocess.run([sys.executable, *command], cwd=ROOT, env=env, check=True, capture_output=True)
    demo = system.client()
    csrf = login(demo)
    unpaid = rows(demo.get("/invoices").text)
    invoice_id = re.search(r'data-invoice="([^"]+)"', unpaid[0]).group(1)  # type: ignore[union-attr]
    batch = demo.post("/envelopes/review", data={"csrf_token": csrf, "invoice_ids": [invoice_id]})
    other = system.client()
    login(other, "other@otherfirm.example", "other-password")
    assert rows(other.get("/invoices", params={"state": "all"}).text) == []
    assert other.get(batch.headers["location"]).status_code == 404
    assert other.get(f"/invoices/{invoice_id}/pdf").status_code == 404
