"""The firm's side of tracking: the Invoices page's Email column (the latest state and its
time, to the envelope's timeline), the bounce alert with Clear (POST, CSRF, the firm's own),
and the timeline page (another firm's envelope: 404). envelope answers as its contract says."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx

from tests.gateway.conftest import FIRM_ID, Gateway, label_of, row

# Times of this year: the pages show the year only for other years'.
YEAR = datetime.now(UTC).year
ENV = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"


def invoice(invoice_id: str, number: str, email_status: str | None) -> dict:
    return {
        "invoice_id": invoice_id,
        "number": number,
        "kind": "invoice",
        "state": "awaiting_payment",
        "client_id": "77",
        "client_name": "Priya Shah",
        "matter": None,
        "issued_at": "2026-11-01",
        "due_at": "2026-12-01",
        "currency": "USD",
        "total_minor": 50_000,
        "balance_minor": 50_000,
        "paid_online_minor": 0,
        "payment_status": None,
        "last_sent_at": f"{YEAR}-12-07T13:00:00Z" if email_status else None,
        "email_status": email_status,
    }


SUPPRESSED = [
    {
        "address": "priya@example.com",
        "reason": "user unknown",
        "status": "5.1.1",
        "envelope_id": ENV,
        "created_at": f"{YEAR}-12-07T14:05:00Z",
        "message": "priya@example.com bounced (5.1.1 user unknown), so no email goes to it.",
    },
    {
        "address": "old@example.com",
        "reason": "mailbox disabled",
        "status": None,
        "envelope_id": None,
        "created_at": f"{YEAR}-12-06T09:00:00Z",
        "message": "old@example.com bounced (mailbox disabled), so no email goes to it.",
    },
]


def invoices_page(gw: Gateway, suppressed: list[dict]) -> None:
    base = f"/internal/firms/{FIRM_ID}"
    gw.sync.on("GET", f"{base}/clio", body={"connected": True})
    gw.envelope.on(
        "GET",
        f"{base}/invoices",
        body={
            "items": [
                invoice("clio:1", "INV-1", "sent"),
                invoice("clio:2", "INV-2", "sent"),
                invoice("clio:3", "INV-3", "queued"),
                invoice("clio:4", "INV-4", None),
            ],
            "total": 4,
            "page": 1,
            "per_page": 25,
        },
    )
    gw.envelope.on(
        "POST",
        f"{base}/invoices/email-states",
        body={
            "clio:1": {"envelope_id": ENV, "event": "opened", "at": f"{YEAR}-12-07T14:02:00Z"},
            "clio:2": {"envelope_id": ENV, "event": "bounced", "at": f"{YEAR}-12-07T14:05:00Z"},
            "clio:3": {"envelope_id": None, "event": None, "at": None},
        },
    )
    gw.envelope.on("GET", f"{base}/suppressions", body=suppressed)


async def test_the_email_column_shows_the_latest_state_and_leads_to_the_timeline(
    gateway: Gateway,
) -> None:
    invoices_page(gateway, [])
    await gateway.login()
    resp = await gateway.client.get("/invoices")
    assert resp.status_code == 200, resp.text
    opened = row(resp.text, "invoice", "clio:1")
    assert f'href="/envelopes/{ENV}/timeline"' in opened
    assert ">Opened<" in opened and "Dec 7, 14:02" in opened
    bounced = row(resp.text, "invoice", "clio:2")
    assert ">Bounced<" in bounced and 'class="badge void"' in bounced
    queued = row(resp.text, "invoice", "clio:3")
    assert ">Queued<" in queued and "/timeline" not in queued
    assert "badge" not in row(resp.text, "invoice", "clio:4").split("email-state")[1]
    assert 'id="bounce-alert"' not in resp.text
    asked = gateway.envelope.json_sent("POST", f"/internal/firms/{FIRM_ID}/invoices/email-states")
    assert asked == [{"invoice_ids": ["clio:1", "clio:2", "clio:3", "clio:4"]}]


async def test_the_page_shows_without_tracking_when_envelope_cannot_answer_it(
    gateway: Gateway,
) -> None:
    invoices_page(gateway, [])
    base = f"/internal/firms/{FIRM_ID}"
    gateway.envelope.on("POST", f"{base}/invoices/email-states", status=500, body={})
    gateway.envelope.on("GET", f"{base}/suppressions", status=404, body={})
    await gateway.login()
    resp = await gateway.client.get("/invoices")
    assert resp.status_code == 200
    assert ">Sent<" in row(resp.text, "invoice", "clio:1")  # the send status, as before


async def test_the_bounce_alert_and_clear(gateway: Gateway) -> None:
    invoices_page(gateway, SUPPRESSED)
    cleared: list[str] = []

    def clear(request: httpx.Request) -> httpx.Response:
        cleared.append(request.url.raw_path.decode())
        return httpx.Response(204)

    base = f"/internal/firms/{FIRM_ID}/suppressions"
    gateway.envelope.handle("DELETE", f"{base}/priya@example.com", clear)
    await gateway.login()
    resp = await gateway.client.get("/invoices")
    alert = resp.text.split('id="bounce-alert"')[1].split("</div>")[0]
    assert "2 addresses bounced" in alert
    assert "priya@example.com" in alert and "5.1.1 user unknown" in alert
    assert "old@example.com" in alert and "mailbox disabled" in alert
    assert f'href="/envelopes/{ENV}/timeline"' in alert
    assert alert.count('action="/suppressions/clear"') == 2

    # Without the form's token: refused, nothing cleared.
    no_csrf = await gateway.client.post(
        "/suppressions/clear", {"address": "priya@example.com"}, csrf=False
    )
    assert no_csrf.status_code == 403 and cleared == []
    ok = await gateway.client.post("/suppressions/clear", {"address": "priya@example.com"})
    assert ok.status_code == 303 and ok.headers["location"] == "/invoices"
    assert cleared == [f"/internal/firms/{FIRM_ID}/suppressions/priya%40example.com"]
    # An address the firm has not suppressed (envelope answers 404): a 404 page.
    unknown = await gateway.client.post("/suppressions/clear", {"address": "x@example.com"})
    assert unknown.status_code == 404
    assert (await gateway.client.post("/suppressions/clear", {"address": ""})).status_code == 404
    huge = await gateway.client.post("/suppressions/clear", {"address": "a" * 5000})
    assert huge.status_code in (404, 422)
    assert cleared == [f"/internal/firms/{FIRM_ID}/suppressions/priya%40example.com"]


async def test_clear_needs_a_login(gateway: Gateway) -> None:
    resp = await gateway.client.http.post(
        "/suppressions/clear", data={"address": "priya@example.com", "csrf_token": "x"}
    )
    assert resp.status_code == 303 and resp.headers["location"] == "/login"


TIMELINE = {
    "envelope_id": ENV,
    "client_name": "Priya Shah",
    "subject": "Invoice INV-1 from Hartwell & Moreno",
    "to": ["priya@example.com", "ap@northgate.test"],
    "invoice_ids": ["clio:1"],
    "numbers": {"clio:1": "INV-1"},
    "status": "sent",
    "state": "viewed",
    "state_at": f"{YEAR}-12-07T14:03:10Z",
    "lines": [
        {
            "at": f"{YEAR}-12-07T13:59:58Z",
            "kind": "queued",
            "recipient": "priya@example.com, ap@northgate.test",
            "email_id": "s1",
            "detail": "Invoice INV-1",
            "machine": False,
        },
        {
            "at": f"{YEAR}-12-07T14:00:00Z",
            "kind": "sent",
            "recipient": "priya@example.com",
            "email_id": "s1",
            "detail": None,
            "machine": False,
        },
        {
            "at": f"{YEAR}-12-07T14:00:00Z",
            "kind": "refused",
            "recipient": "ap@northgate.test",
            "email_id": "s1",
            "detail": "550 5.1.1 Recipient address rejected",
            "machine": False,
        },
        {
            "at": f"{YEAR}-12-07T14:00:01Z",
            "kind": "delivered",
            "recipient": "priya@example.com",
            "email_id": "s1",
            "detail": None,
            "machine": False,
        },
        {
            "at": f"{YEAR}-12-07T14:00:02Z",
            "kind": "opened",
            "recipient": "priya@example.com",
            "email_id": "s1",
            "detail": "Mozilla/5.0",
            "machine": True,
        },
        {
            "at": f"{YEAR}-12-07T14:02:00Z",
            "kind": "opened",
            "recipient": "priya@example.com",
            "email_id": "s1",
            "detail": None,
            "machine": False,
        },
        {
            "at": f"{YEAR}-12-07T14:03:00Z",
            "kind": "clicked",
            "recipient": "priya@example.com",
            "email_id": "s1",
            "detail": "pay_online|pay_online:clio:1",
            "machine": False,
        },
        {
            "at": f"{YEAR}-12-07T14:03:10Z",
            "kind": "viewed",
            "recipient": "priya@example.com",
            "email_id": "s1",
            "detail": "pay_online:clio:1",
            "machine": False,
        },
        {
            "at": f"{YEAR}-12-07T14:09:00Z",
            "kind": "paid",
            "recipient": None,
            "email_id": None,
            "detail": "INV-1 $500.00, paid by Priya Shah by card",
            "machine": False,
        },
    ],
}


async def test_the_timeline_page_tells_the_envelope_s_story(gateway: Gateway) -> None:
    gateway.envelope.on("GET", f"/internal/firms/{FIRM_ID}/envelopes/{ENV}/timeline", body=TIMELINE)
    await gateway.login()
    resp = await gateway.client.get(f"/envelopes/{ENV}/timeline")
    assert resp.status_code == 200, resp.text
    page = resp.text
    assert "Viewed · Dec 7, 14:03" in page
    for text in (
        "Queued for priya@example.com, ap@northgate.test",
        "Sent to priya@example.com",
        "Refused for ap@northgate.test: 550 5.1.1 Recipient address rejected",
        "Delivered to priya@example.com",
        "Opened by a mail privacy proxy or scanner for priya@example.com (not counted as read)",
        "Opened by priya@example.com",
        "priya@example.com clicked Pay Online (the pay page for INV-1)",
        "priya@example.com viewed the pay page for INV-1",
        "Paid: INV-1 $500.00, paid by Priya Shah by card",
    ):
        assert text in page, text
    # Newest first; the machine's open is marked as such.
    assert page.index("Paid: INV-1") < page.index("Queued for")
    assert 'data-kind="opened" data-machine="true"' in page
    opened_by = page.split('id="opened-by"')[1].split("</dd>")[0]
    assert "priya@example.com" in opened_by and "1 fetch by a mail privacy proxy" in opened_by


async def test_another_firm_s_envelope_is_not_found(gateway: Gateway) -> None:
    # envelope answers 404 for an envelope of another firm (or none): so does the page.
    await gateway.login()
    resp = await gateway.client.get(f"/envelopes/{ENV}/timeline")
    assert resp.status_code == 404
    asked = gateway.envelope.sent("GET", f"/internal/firms/{FIRM_ID}/envelopes/{ENV}/timeline")
    assert len(asked) == 1  # asked for the logged-in user's firm, never another's
    assert (await gateway.client.get(f"/envelopes/{'x' * 300}/timeline")).status_code == 404


async def test_the_timeline_needs_a_login(gateway: Gateway) -> None:
    resp = await gateway.client.http.get(f"/envelopes/{ENV}/timeline")
    assert resp.status_code == 303 and resp.headers["location"] == "/login"


# --- the review window refuses a suppressed recipient ---------------------------------------

DRAFT = {
    "id": ENV,
    "client_id": "77",
    "client_name": "Priya Shah",
    "invoice_ids": ["clio:1"],
    "to": ["priya@example.com"],
    "cc": [],
    "subject": "Invoice {{ invoice_numbers }}",
    "body": "Hello",
    "delivery": "link",
    "status": "draft",
    "last_sent_at": None,
    "preview": {"subject": "Invoice INV-1", "html": "<p>Hello</p>", "text": "Hello"},
    "sends": [],
}


async def test_the_review_window_refuses_a_suppressed_recipient(gateway: Gateway) -> None:
    base = f"/internal/firms/{FIRM_ID}"
    invoices_page(gateway, SUPPRESSED)
    gateway.envelope.on("POST", f"{base}/envelopes/drafts", body=[DRAFT])
    gateway.envelope.on("GET", f"{base}/envelopes/{ENV}", body=DRAFT)
    gateway.envelope.on("POST", f"{base}/envelopes/{ENV}/preview", body=DRAFT["preview"])
    gateway.envelope.on(
        "GET",
        f"{base}/templates",
        body={
            "items": [],
            "default_id": None,
            "builtin": {"name": "Standard", "subject": "s", "body": "b"},
            "autofill_fields": {},
        },
    )

    def check(request: httpx.Request) -> httpx.Response:
        asked = {a.lower() for a in json.loads(request.content)["addresses"]}
        return httpx.Response(200, json=[x for x in SUPPRESSED if x["address"] in asked])

    gateway.envelope.handle("POST", f"{base}/suppressions/check", check)
    await gateway.login()
    await gateway.client.get("/invoices")
    resp = await gateway.client.post("/envelopes/review", {"invoice_ids": "clio:1"})
    assert resp.status_code == 303
    review = resp.headers["location"]
    await gateway.client.get(review)
    form = {"to": "Priya@Example.com", "subject": "Invoice", "body": "Hello", "delivery": "link"}
    refused = await gateway.client.post(f"{review}/continue", form)
    assert refused.status_code == 422
    to_field = label_of(refused.text, "to")
    assert "priya@example.com bounced (5.1.1 user unknown)" in to_field
    # Another address: on to the confirmation.
    ok = await gateway.client.post(f"{review}/continue", form | {"to": "priya.shah@example.com"})
    assert ok.status_code == 200 and "bounced" not in ok.text
    asked = gateway.envelope.json_sent("POST", f"{base}/suppressions/check")
    assert asked == [
        {"addresses": ["Priya@Example.com"]},
        {"addresses": ["priya.shah@example.com"]},
    ]
