"""The Reminders page, the per-client (Outstanding Balances) and per-bill (Invoices) switches,
Send now and the development-only "Run reminders as of", against a fake envelope that speaks
shared/api/reminders.py. Another firm's ids come back from envelope as 404: the user reads a
clear page, never a 500; production has no run control and refuses the route."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from services.gateway.deps import get_settings
from shared.api.reminders import ReminderSwitch, RunRequest
from tests.gateway.conftest import FIRM_ID, Gateway, row
from tests.gateway.test_reminders_settings import GOOD, PROFILE, envelope_answers, invoice

pytestmark = pytest.mark.timeout(60)

BASE = f"/internal/firms/{FIRM_ID}"
REMINDERS = f"{BASE}/reminders"
PAUSED = f"{REMINDERS}/paused"
PAUSED_BODY = {"clients": ["c2"], "invoices": ["i2"]}
ENVELOPE_ID = "3f0c9a2e-1b7d-4c55-9e0a-6d2b8f1a7c34"


def upcoming(client_id: str, name: str, paused: bool = False, blocked: str | None = None):
    return {
        "client_id": client_id,
        "client_name": name,
        "due_on": "2027-01-16",
        "slot": "every:2027-01-16",
        "reason": "every 15 days",
        "invoice_ids": ["i1", "i2"],
        "numbers": ["INV-0001", "INV-0002"],
        "currency": "USD",
        "amount_minor": 123_456,
        "to": ["priya@example.com"],
        "paused": paused,
        "blocked": blocked,
    }


def sent(client_id: str, name: str, status: str = "sent", envelope_id: str | None = ENVELOPE_ID):
    return {
        "client_id": client_id,
        "client_name": name,
        "slot": "first:2027-01-01",
        "due_on": "2027-01-01",
        "sent_at": "2027-01-01T14:05:00Z" if status == "sent" else None,
        "envelope_id": envelope_id,
        "invoice_ids": ["i1"],
        "currency": "USD",
        "amount_minor": 50_000,
        "to": ["priya@example.com"],
        "status": status,
        "note": "address bounced" if status == "skipped" else None,
    }


def overview(**changes: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "time_zone": "UTC",
        "upcoming": [
            upcoming("c1", "Priya Shah"),
            upcoming("c2", "Amorim Partners", paused=True),
            upcoming("c3", "Lee & Co", blocked="suppressed address"),
        ],
        "history": [sent("c1", "Priya Shah"), sent("c3", "Lee & Co", "skipped", None)],
        "paused_clients": ["c2"],
        "paused_invoices": ["i2"],
    } | changes


async def turn_on(gateway: Gateway, **fields: str) -> None:
    envelope_answers(gateway)
    await gateway.client.get("/settings/reminders")
    resp = await gateway.client.post("/settings/reminders", GOOD | fields)
    assert resp.status_code == 303, resp.text


def production(gateway: Gateway) -> None:
    assert gateway.app is not None
    settings = gateway.app.state.service.settings.model_copy(update={"environment": "production"})
    gateway.app.dependency_overrides[get_settings] = lambda: settings


# --- the page ----------------------------------------------------------------------------------


async def test_the_page_lists_upcoming_and_sent_reminders(gateway: Gateway) -> None:
    gateway.envelope.on("GET", REMINDERS, body=overview())
    await gateway.login()
    await turn_on(gateway)
    page = await gateway.client.get("/reminders")
    assert page.status_code == 200, page.text
    (asked,) = gateway.envelope.sent("GET", REMINDERS)
    assert asked.url.params["days"] == "60"
    assert 'href="/reminders" class="active">Reminders</a>' in page.text  # the nav link
    assert "reminders-off" not in page.text

    upcoming_rows = page.text.split('id="upcoming"')[1].split("</table>")[0]
    priya = row(upcoming_rows, "client", "c1")
    for shown in ("Priya Shah", "Jan 16, 2027", "INV-0001, INV-0002", "$1,234.56"):
        assert shown in priya
    assert "priya@example.com" in priya
    assert ">Pause</button>" in priya and ">Send now</button>" in priya
    assert 'action="/reminders/clients/c1/send-now"' in priya
    paused = row(upcoming_rows, "client", "c2")
    assert ">Resume</button>" in paused and "Send now" not in paused
    assert "Will not go: suppressed address" in row(upcoming_rows, "client", "c3")

    history = page.text.split('id="history"')[1].split("</table>")[0]
    first = row(history, "client", "c1")
    assert f'href="/envelopes/{ENVELOPE_ID}/timeline"' in first
    assert "Jan 1, 2027 2:05 PM" in first and ">Sent</span>" in first
    skipped = row(history, "client", "c3")
    assert "Skipped" in skipped and "address bounced" in skipped and "timeline" not in skipped

    # Not production: the development tool is offered.
    assert 'action="/reminders/run"' in page.text


async def test_a_banner_says_when_reminders_are_off(gateway: Gateway) -> None:
    gateway.envelope.on("GET", REMINDERS, body=overview(enabled=False, upcoming=[], history=[]))
    await gateway.login()
    page = await gateway.client.get("/reminders")
    assert page.status_code == 200
    assert 'id="reminders-off"' in page.text
    assert 'href="/settings/reminders"' in page.text
    assert "No reminder is due in the next 60 days." in page.text
    assert "No reminder has been sent yet." in page.text


async def test_envelope_without_an_answer_leaves_a_readable_page(gateway: Gateway) -> None:
    gateway.envelope.on("GET", REMINDERS, status=500, body={"detail": "boom"})
    await gateway.login()
    page = await gateway.client.get("/reminders")
    assert page.status_code == 200
    assert "The reminders cannot be listed right now." in page.text


# --- switches ----------------------------------------------------------------------------------


async def test_pause_and_resume_a_client(gateway: Gateway) -> None:
    gateway.envelope.on("GET", REMINDERS, body=overview())
    gateway.envelope.on("POST", f"{REMINDERS}/clients/c1", status=204)
    await gateway.login()
    await gateway.client.get("/reminders")
    paused = await gateway.client.post(
        "/reminders/clients/c1", {"enabled": "off", "next": "/reminders"}
    )
    assert paused.status_code == 303 and paused.headers["location"] == "/reminders"
    resumed = await gateway.client.post(
        "/reminders/clients/c1", {"enabled": "on", "next": "/balances"}
    )
    assert resumed.headers["location"] == "/balances"
    bodies = gateway.envelope.json_sent("POST", f"{REMINDERS}/clients/c1")
    assert [ReminderSwitch.model_validate(b).enabled for b in bodies] == [False, True]


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "/logout",
        "",
        "/invoices\n",
        "/invoices?q=\r\nSet-Cookie: x=1",
        "/invoices?q=Żółw",
    ],
)
async def test_a_switch_only_returns_to_this_apps_pages(gateway: Gateway, target: str) -> None:
    gateway.envelope.on("POST", f"{REMINDERS}/clients/c1", status=204)
    await gateway.login()
    await gateway.client.get("/reminders")
    resp = await gateway.client.post("/reminders/clients/c1", {"enabled": "on", "next": target})
    assert resp.status_code == 303 and resp.headers["location"] == "/reminders"


async def test_another_firms_client_or_bill_is_a_clear_404(gateway: Gateway) -> None:
    """envelope answers 404 for ids that are not the firm's: the page says so, nothing else."""
    gateway.envelope.on("GET", REMINDERS, body=overview())
    gateway.envelope.on("POST", f"{REMINDERS}/clients/theirs", 404, {"detail": "no such client"})
    gateway.envelope.on("POST", f"{REMINDERS}/invoices/theirs", 404, {"detail": "no such bill"})
    gateway.envelope.on(
        "POST", f"{REMINDERS}/clients/theirs/send-now", 404, {"detail": "no such client"}
    )
    await gateway.login()
    await gateway.client.get("/reminders")
    client = await gateway.client.post("/reminders/clients/theirs", {"enabled": "off"})
    assert client.status_code == 404
    assert "No such client in your firm." in client.text
    bill = await gateway.client.post("/reminders/invoices/theirs", {"enabled": "off"})
    assert bill.status_code == 404 and "No such bill in your firm." in bill.text
    now = await gateway.client.post("/reminders/clients/theirs/send-now", {})
    assert now.status_code == 404 and "No such client in your firm." in now.text
    # Every call went to this firm's API, never another's.
    assert all(r.url.path.startswith(BASE) for r in gateway.envelope.requests)


async def test_malformed_switches_are_refused_before_envelope(gateway: Gateway) -> None:
    await gateway.login()
    await gateway.client.get("/reminders")
    for url, data, status in [
        ("/reminders/clients/c1", {"enabled": "maybe"}, 400),
        ("/reminders/clients/c1", {}, 400),
        ("/reminders/clients/..", {"enabled": "on"}, 405),  # resolved to /reminders
        ("/reminders/clients/" + "a" * 300, {"enabled": "on"}, 404),
        ("/reminders/invoices/%2e%2e", {"enabled": "on"}, 404),
        ("/reminders/clients/c1%3Fx=1", {"enabled": "on"}, 404),
        ("/reminders/clients/c1%0A", {"enabled": "on"}, 404),
    ]:
        resp = await gateway.client.post(url, data)
        assert resp.status_code == status, (url, resp.status_code)
        assert "Internal Server Error" not in resp.text
    assert [r for r in gateway.envelope.requests if r.method == "POST"] == []


async def test_switches_need_the_csrf_token(gateway: Gateway) -> None:
    await gateway.login()
    for url in (
        "/reminders/clients/c1",
        "/reminders/invoices/i1",
        "/reminders/clients/c1/send-now",
    ):
        resp = await gateway.client.post(url, {"enabled": "off"}, csrf=False)
        assert resp.status_code == 403
    assert gateway.envelope.requests == []


# --- Send now ----------------------------------------------------------------------------------


async def test_send_now_queues_or_says_why_not(gateway: Gateway) -> None:
    gateway.envelope.on("GET", REMINDERS, body=overview())
    gateway.envelope.on(
        "POST", f"{REMINDERS}/clients/c1/send-now", body={"queued": True, "envelope_id": "e1"}
    )
    gateway.envelope.on(
        "POST",
        f"{REMINDERS}/clients/c3/send-now",
        body={"queued": False, "reason": "the address bounced"},
    )
    await gateway.login()
    await gateway.client.get("/reminders")
    queued = await gateway.client.post("/reminders/clients/c1/send-now", {})
    assert queued.status_code == 303
    assert queued.headers["location"] == "/reminders?notice=reminder_sent"
    page = await gateway.client.get(queued.headers["location"])
    assert "Reminder queued." in page.text

    refused = await gateway.client.post("/reminders/clients/c3/send-now", {})
    assert refused.status_code == 409
    assert "No reminder was sent: the address bounced." in refused.text
    assert 'id="upcoming"' in refused.text  # the page itself, with the reason on top


# --- Run reminders as of (development only) ------------------------------------------------------


async def test_run_as_of_the_firms_local_time(gateway: Gateway) -> None:
    envelope_answers(gateway)
    gateway.envelope.on("GET", REMINDERS, body=overview())
    gateway.envelope.on(
        "POST",
        f"{REMINDERS}/run",
        body={"as_of": "2027-01-20T15:00:00Z", "queued": 2, "skipped": 1},
    )
    await gateway.login()
    await gateway.client.get("/settings")
    await gateway.client.post("/settings", PROFILE | {"time_zone": "America/New_York"})
    await gateway.client.get("/reminders")
    ran = await gateway.client.post("/reminders/run", {"as_of": "2027-01-20T10:00"})
    assert ran.status_code == 303 and ran.headers["location"] == "/reminders?ran=2-1"
    (body,) = gateway.envelope.json_sent("POST", f"{REMINDERS}/run")
    asked = RunRequest.model_validate(body).as_of
    assert asked.utcoffset() is not None
    assert asked.isoformat().replace("+00:00", "Z") == "2027-01-20T15:00:00Z"  # 10:00 in New York
    page = await gateway.client.get(ran.headers["location"])
    assert "Reminders run: 2 queued, 1 skipped." in page.text
    # Times shown are the firm's: 14:05 UTC is 9:05 AM in New York.
    assert "Jan 1, 2027 9:05 AM" in page.text and "2:05 PM" not in page.text


@pytest.mark.parametrize("as_of", ["", "tomorrow", "2027-13-01T10:00", "2027-01-20", "9" * 999])
async def test_run_needs_a_date_and_time(gateway: Gateway, as_of: str) -> None:
    gateway.envelope.on("GET", REMINDERS, body=overview())
    await gateway.login()
    await gateway.client.get("/reminders")
    resp = await gateway.client.post("/reminders/run", {"as_of": as_of})
    assert resp.status_code == 422
    assert "enter a date and time" in resp.text
    assert gateway.envelope.sent("POST", f"{REMINDERS}/run") == []


async def test_envelope_refusing_the_run_is_shown_not_a_500(gateway: Gateway) -> None:
    gateway.envelope.on("POST", f"{REMINDERS}/run", 403, {"detail": "refused in production"})
    await gateway.login()
    await gateway.client.get("/reminders")
    resp = await gateway.client.post("/reminders/run", {"as_of": "2027-01-20T10:00"})
    assert resp.status_code == 403 and "Not allowed." in resp.text


async def test_production_has_no_run_control_and_refuses_the_route(gateway: Gateway) -> None:
    gateway.envelope.on("GET", REMINDERS, body=overview())
    gateway.envelope.on("POST", f"{REMINDERS}/run", body={"as_of": "x", "queued": 0, "skipped": 0})
    production(gateway)
    await gateway.login()
    page = await gateway.client.get("/reminders")
    assert page.status_code == 200
    assert "/reminders/run" not in page.text and "Run reminders" not in page.text
    resp = await gateway.client.post("/reminders/run", {"as_of": "2027-01-20T10:00"})
    assert resp.status_code == 404
    assert gateway.envelope.sent("POST", f"{REMINDERS}/run") == []


# --- Outstanding Balances and Invoices -----------------------------------------------------------


def balance(client_id: str, name: str) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "client_name": name,
        "email": "x@example.com",
        "currency": "USD",
        "outstanding_minor": 10_000,
        "unpaid_items": 1,
        "oldest_due": "2026-06-30",
        "last_sent_at": None,
    }


async def test_balances_show_each_clients_switch(gateway: Gateway) -> None:
    gateway.envelope.on(
        "GET", f"{BASE}/balances", body=[balance("c1", "Priya"), balance("c2", "Amorim")]
    )
    gateway.envelope.on("GET", PAUSED, body=PAUSED_BODY)
    await gateway.login()
    page = await gateway.client.get("/balances")
    assert page.status_code == 200
    on, off = row(page.text, "client", "c1"), row(page.text, "client", "c2")
    assert ">On</span>" in on and 'name="enabled" value="off"' in on
    assert 'action="/reminders/clients/c1"' in on and 'name="next" value="/balances"' in on
    assert ">Off</span>" in off and 'name="enabled" value="on"' in off
    assert 'id="reminders-off"' in page.text  # the firm has not turned reminders on
    # Only what is paused is asked for, never the upcoming list (computed for every client).
    assert len(gateway.envelope.sent("GET", PAUSED)) == 1
    assert gateway.envelope.sent("GET", REMINDERS) == []


async def test_balances_without_envelopes_reminders_show_no_switch(gateway: Gateway) -> None:
    gateway.envelope.on("GET", f"{BASE}/balances", body=[balance("c1", "Priya")])
    await gateway.login()  # envelope answers 404 for the reminders API
    page = await gateway.client.get("/balances")
    assert page.status_code == 200
    assert "Priya" in row(page.text, "client", "c1")
    assert "/reminders/clients/" not in page.text


async def test_invoices_show_a_switch_per_unpaid_bill(gateway: Gateway) -> None:
    due = date(2026, 6, 30)
    gateway.envelope.on(
        "GET",
        f"{BASE}/invoices",
        body={
            "items": [
                invoice("i1", due),
                invoice("i2", due),
                invoice("i3", due) | {"state": "paid"},
            ],
            "total": 3,
            "page": 1,
            "per_page": 25,
        },
    )
    gateway.envelope.on("GET", PAUSED, body=PAUSED_BODY)
    gateway.envelope.on("POST", f"{REMINDERS}/invoices/i1", status=204)
    await gateway.login()
    page = await gateway.client.get("/invoices?q=Priya&state=unpaid")
    assert page.status_code == 200
    on, off = row(page.text, "invoice", "i1"), row(page.text, "invoice", "i2")
    assert 'formaction="/reminders/invoices/i1"' in on and 'value="off"' in on
    assert 'form="reminder-switch"' in on
    assert 'formaction="/reminders/invoices/i2"' in off and 'value="on"' in off
    assert "formaction" not in row(page.text, "invoice", "i3")  # paid: nothing to remind
    # The switch form is its own, outside the Review & Send form, with a way back here.
    switch = page.text.split('id="reminder-switch"')[1].split("</form>")[0]
    assert 'name="csrf_token"' in switch
    assert 'name="next" value="/invoices?q=Priya&amp;state=unpaid' in switch
    review = page.text.split('id="invoice-form"')[1].split("</form>")[0]
    assert 'id="reminder-switch"' not in review

    resp = await gateway.client.post(
        "/reminders/invoices/i1", {"enabled": "off", "next": "/invoices?q=Priya&state=unpaid"}
    )
    assert resp.status_code == 303
    assert resp.headers["location"] == "/invoices?q=Priya&state=unpaid"
    assert gateway.envelope.json_sent("POST", f"{REMINDERS}/invoices/i1") == [{"enabled": False}]
