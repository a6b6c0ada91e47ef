"""Settings > Reminders and the firm's Time zone: every bad field shown beside it with nothing
saved, a good form saved into the gateway's Firm and published in firm.updated
(FirmProfile.time_zone, FirmProfile.reminders); the migration on both backends; Overdue by the
firm's local date."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from services.gateway.app import MIGRATIONS as GATEWAY_MIGRATIONS
from services.gateway.firms import firm_today
from services.gateway.models import Firm, outbox
from services.gateway.pages import overdue
from shared.db import make_engine
from shared.events import FirmProfile, ReminderSettings
from shared.migrations import upgrade_async
from tests.gateway.conftest import FIRM_ID, Gateway, label_of

pytestmark = pytest.mark.timeout(60)

BASE = f"/internal/firms/{FIRM_ID}"
AUTOFILL = {"client_name": "Client name", "balance": "Balance due", "pay_link": "Pay Online link"}
TEMPLATES = {
    "items": [],
    "default_id": None,
    "builtin": {"name": "Built-in", "subject": "Your bills from {{ firm_name }}", "body": "Hi"},
    "autofill_fields": AUTOFILL,
}
GOOD = {
    "enabled": "on",
    "first_after_days": "20",
    "every_days": "7",
    "before_due": "on",
    "before_due_days": "5",
    "quiet_after_send_days": "4",
    "business_hours_start": "8",
    "business_hours_end": "18",
    "subject": "A reminder from {{ firm_name }}",
    "body": "Dear {{ client_name }}, {{ balance }} is still open: {{ pay_link }}",
}


def envelope_answers(gateway: Gateway) -> None:
    gateway.envelope.on("GET", f"{BASE}/templates", body=TEMPLATES)
    gateway.envelope.on(
        "POST", f"{BASE}/templates/preview", body={"subject": "s", "html": "<p>h</p>", "text": "t"}
    )


async def firm_row(gateway: Gateway) -> Firm:
    assert gateway.app is not None
    async with gateway.app.state.service.sessionmaker() as s:
        firm = await s.get(Firm, FIRM_ID)
        assert firm is not None
        return firm


async def published(gateway: Gateway) -> list[dict[str, Any]]:
    """The firm.updated payloads in the gateway's outbox, oldest first."""
    assert gateway.app is not None
    async with gateway.app.state.service.sessionmaker() as s:
        rows = await s.execute(
            sa.select(outbox.c.payload)
            .where(outbox.c.routing_key == "firm.updated")
            .order_by(outbox.c.id)
        )
        return [json.loads(payload) for (payload,) in rows]


async def test_the_page_shows_the_defaults_and_the_autofill_fields(gateway: Gateway) -> None:
    envelope_answers(gateway)
    await gateway.login()
    page = await gateway.client.get("/settings/reminders")
    assert page.status_code == 200, page.text
    assert 'name="first_after_days" value="15"' in page.text
    assert 'name="every_days" value="15"' in page.text
    assert 'name="quiet_after_send_days" value="3"' in page.text
    assert 'name="enabled" >' in page.text  # off until the firm turns it on
    assert "{{ pay_link }}" in page.text and "Pay Online link" in page.text
    assert '<option value="9" selected>09:00</option>' in page.text
    assert '<option value="17" selected>17:00</option>' in page.text
    # Reached from Settings.
    settings = await gateway.client.get("/settings")
    assert 'href="/settings/reminders"' in settings.text
    assert "No automated reminders go out." in settings.text


async def test_saving_stores_the_firm_and_publishes_firm_updated(gateway: Gateway) -> None:
    envelope_answers(gateway)
    await gateway.login()
    await gateway.client.get("/settings/reminders")
    before = len(await published(gateway))
    saved = await gateway.client.post("/settings/reminders", GOOD)
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == "/settings/reminders?notice=reminders_saved"

    firm = await firm_row(gateway)
    assert firm.reminders == ReminderSettings(
        enabled=True,
        first_after_days=20,
        every_days=7,
        before_due_days=5,
        quiet_after_send_days=4,
        business_hours_start=8,
        business_hours_end=18,
        subject="A reminder from {{ firm_name }}",
        body="Dear {{ client_name }}, {{ balance }} is still open: {{ pay_link }}",
    )
    events = await published(gateway)
    assert len(events) == before + 1
    profile = FirmProfile.model_validate(events[-1]["firm"])
    assert profile.reminders == firm.reminders
    assert profile.name == "Hartwell & Moreno" and profile.time_zone == "UTC"
    # The template was checked the way envelope renders sends.
    (checked,) = gateway.envelope.json_sent("POST", f"{BASE}/templates/preview")
    assert checked == {"subject": GOOD["subject"], "body": GOOD["body"]}

    page = await gateway.client.get("/settings/reminders?notice=reminders_saved")
    assert "Reminder settings saved." in page.text
    assert 'name="every_days" value="7"' in page.text
    settings = await gateway.client.get("/settings")
    assert "First 20 days after issue, then every 7 days, and 5 days before a due date" in (
        settings.text
    )

    # Before-due off and a blank template: None in the profile (the built-in reminder).
    off = GOOD | {"before_due": "", "subject": "  ", "body": ""}
    assert (await gateway.client.post("/settings/reminders", off)).status_code == 303
    profile = FirmProfile.model_validate((await published(gateway))[-1]["firm"])
    assert profile.reminders.before_due_days is None
    assert profile.reminders.subject is None and profile.reminders.body is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("every_days", "6", "Every must be between 7 and 365 days."),
        ("every_days", "366", "Every must be between 7 and 365 days."),
        ("every_days", "7.5", "Every: enter a whole number of days, 7 to 365."),
        ("first_after_days", "0", "The first reminder must be between 1 and 365 days."),
        ("first_after_days", "", "The first reminder: enter a whole number of days, 1 to 365."),
        ("first_after_days", "9" * 5000, "enter a whole number of days"),
        ("first_after_days", "١٥", "enter a whole number of days"),  # Arabic-Indic digits
        ("before_due_days", "61", "Before the due date must be between 1 and 60 days."),
        ("quiet_after_send_days", "-1", "Quiet days after a send: enter a whole number"),
        ("business_hours_end", "8", "Business hours must end after they start."),
        ("business_hours_start", "24", "Choose the hour business starts."),
        ("subject", "x" * 301, "The subject is too long"),
        ("subject", "Hi\r\nBcc: all@example.com", "The subject must be one line."),
        ("body", "x" * 20_001, "The message is too long"),
    ],
)
async def test_a_bad_field_is_shown_beside_it_and_nothing_is_saved(
    gateway: Gateway, field: str, value: str, message: str
) -> None:
    envelope_answers(gateway)
    await gateway.login()
    await gateway.client.get("/settings/reminders")
    before = len(await published(gateway))
    page = await gateway.client.post("/settings/reminders", GOOD | {field: value})
    assert page.status_code == 422, page.text[:500]
    assert message in label_of(page.text, field)
    assert 'aria-invalid="true"' in label_of(page.text, field)
    assert "were not saved" in page.text
    # What was typed stays in the form, the other fields too.
    assert 'name="before_due_days" value="5"' in page.text or field == "before_due_days"
    assert len(await published(gateway)) == before
    assert (await firm_row(gateway)).reminders == ReminderSettings()


async def test_several_bad_fields_are_each_marked(gateway: Gateway) -> None:
    envelope_answers(gateway)
    await gateway.login()
    await gateway.client.get("/settings/reminders")
    bad = GOOD | {"every_days": "3", "first_after_days": "abc", "quiet_after_send_days": "99"}
    page = await gateway.client.post("/settings/reminders", bad)
    assert page.status_code == 422
    assert "Every must be between 7 and 365 days." in label_of(page.text, "every_days")
    assert "whole number" in label_of(page.text, "first_after_days")
    assert "between 0 and 60" in label_of(page.text, "quiet_after_send_days")
    assert 'value="abc"' in page.text
    # Nothing reached envelope's template check while the numbers are wrong.
    assert gateway.envelope.sent("POST", f"{BASE}/templates/preview") == []


async def test_a_template_envelope_refuses_is_shown_beside_the_message(gateway: Gateway) -> None:
    envelope_answers(gateway)
    gateway.envelope.on(
        "POST",
        f"{BASE}/templates/preview",
        status=422,
        body={
            "detail": {
                "field": "body",
                "message": "Unknown autofill field {{ nope }}",
                "errors": [{"field": "body", "message": "Unknown autofill field {{ nope }}"}],
            }
        },
    )
    await gateway.login()
    await gateway.client.get("/settings/reminders")
    page = await gateway.client.post("/settings/reminders", GOOD | {"body": "Hi {{ nope }}"})
    assert page.status_code == 422
    assert "Unknown autofill field {{ nope }}" in label_of(page.text, "body")
    assert (await firm_row(gateway)).reminders == ReminderSettings()


async def test_the_form_needs_its_csrf_token(gateway: Gateway) -> None:
    envelope_answers(gateway)
    await gateway.login()
    await gateway.client.get("/settings/reminders")
    forged = await gateway.client.post("/settings/reminders", GOOD | {"csrf_token": "x"}, False)
    assert forged.status_code == 403
    missing = await gateway.client.post("/settings/reminders", GOOD, csrf=False)
    assert missing.status_code == 403
    assert (await firm_row(gateway)).reminders == ReminderSettings()


async def test_logged_out_users_see_no_settings(gateway: Gateway) -> None:
    page = await gateway.client.get("/settings/reminders")
    assert page.status_code == 303 and page.headers["location"] == "/login"
    saved = await gateway.client.post("/settings/reminders", GOOD, csrf=False)
    assert saved.status_code in (303, 403)
    assert (await firm_row(gateway)).reminders == ReminderSettings()


# --- the firm's time zone ----------------------------------------------------------------------

PROFILE = {
    "name": "Hartwell & Moreno",
    "email": "billing@hartwell.test",
    "phone": "",
    "address": "",
    "website": "",
    "default_delivery": "link",
}


async def test_the_time_zone_is_chosen_from_the_list_and_published(gateway: Gateway) -> None:
    envelope_answers(gateway)
    await gateway.login()
    page = await gateway.client.get("/settings")
    assert page.status_code == 200
    common = page.text.index('<optgroup label="Common">')
    assert page.text.index('value="America/New_York"', common) < page.text.index(
        '<optgroup label="All time zones">'
    )
    assert 'value="Africa/Abidjan"' in page.text  # and every other zone after them
    assert '<option value="UTC" selected>' in page.text

    saved = await gateway.client.post("/settings", PROFILE | {"time_zone": "America/Chicago"})
    assert saved.status_code == 303, saved.text
    assert (await firm_row(gateway)).time_zone == "America/Chicago"
    profile = FirmProfile.model_validate((await published(gateway))[-1]["firm"])
    assert profile.time_zone == "America/Chicago"
    page = await gateway.client.get("/settings")
    assert '<option value="America/Chicago" selected>' in page.text

    # A form without the field (an older page) keeps the zone.
    assert (await gateway.client.post("/settings", PROFILE)).status_code == 303
    assert (await firm_row(gateway)).time_zone == "America/Chicago"


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "../../etc/passwd", "america/chicago", "", "x" * 5000, "EST5EDT "]
)
async def test_a_zone_not_in_the_list_is_refused(gateway: Gateway, zone: str) -> None:
    envelope_answers(gateway)
    await gateway.login()
    await gateway.client.get("/settings")
    before = len(await published(gateway))
    page = await gateway.client.post("/settings", PROFILE | {"time_zone": zone})
    if zone.strip() == "EST5EDT":  # a real zone, once its spaces are trimmed
        assert page.status_code == 303
        return
    assert page.status_code == 422
    assert "Choose a time zone from the list." in label_of(page.text, "time_zone")
    assert len(await published(gateway)) == before
    assert (await firm_row(gateway)).time_zone == "UTC"


# --- Overdue by the firm's local date ------------------------------------------------------------


def test_the_firms_date_is_the_date_where_the_firm_is() -> None:
    firm = Firm(id="f", name="F", time_zone="America/Los_Angeles")
    late_evening = datetime(2027, 1, 10, 5, 30, tzinfo=UTC)  # Jan 9, 21:30 in Los Angeles
    assert firm_today(firm, late_evening) == date(2027, 1, 9)
    firm.time_zone = "Pacific/Kiritimati"  # UTC+14
    assert firm_today(firm, late_evening) == date(2027, 1, 10)
    firm.time_zone = "Gone/Zone"  # a name this system no longer knows: UTC, not a crash
    assert firm_today(firm, late_evening) == date(2027, 1, 10)
    bill = {"state": "awaiting_payment", "balance_minor": 100, "due_at": "2027-01-09"}
    assert overdue(bill, date(2027, 1, 10)) and not overdue(bill, date(2027, 1, 9))


def invoice(invoice_id: str, due: date) -> dict[str, Any]:
    return {
        "invoice_id": invoice_id,
        "number": f"N-{invoice_id}",
        "kind": "invoice",
        "state": "awaiting_payment",
        "client_id": "c1",
        "client_name": "Priya Shah",
        "matter": None,
        "issued_at": "2026-01-01",
        "due_at": due.isoformat(),
        "currency": "USD",
        "total_minor": 10_000,
        "balance_minor": 10_000,
        "paid_online_minor": 0,
        "payment_status": None,
        "last_sent_at": None,
        "email_status": None,
    }


async def test_overdue_on_invoices_uses_the_firms_date(gateway: Gateway) -> None:
    """Kiritimati (UTC+14) and Pago Pago (UTC-11) are 25 hours apart: a bill due the day
    before Kiritimati's today is overdue there and never in Pago Pago, whatever the hour."""
    envelope_answers(gateway)
    due = datetime.now(UTC).astimezone(ZoneInfo("Pacific/Kiritimati")).date() - timedelta(days=1)
    gateway.envelope.on(
        "GET",
        f"{BASE}/invoices",
        body={"items": [invoice("i1", due)], "total": 1, "page": 1, "per_page": 25},
    )
    await gateway.login()
    await gateway.client.get("/settings")
    shown = {}
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):
        assert (await gateway.client.post("/settings", PROFILE | {"time_zone": zone})).status_code
        page = await gateway.client.get("/invoices")
        assert page.status_code == 200
        shown[zone] = "badge overdue" in page.text
    assert shown == {"Pacific/Kiritimati": True, "Pacific/Pago_Pago": False}


# --- the migration -------------------------------------------------------------------------------


async def test_the_migration_adds_the_columns_with_their_defaults(database_url: str) -> None:
    await upgrade_async(GATEWAY_MIGRATIONS, database_url)
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO firms (id, name, combine_envelopes, default_delivery, created_at)"
                    " VALUES ('f1', 'Old firm', false, 'link', CURRENT_TIMESTAMP)"
                )
            )
        from sqlalchemy.ext.asyncio import async_sessionmaker

        async with async_sessionmaker(engine)() as s:
            firm = await s.get(Firm, "f1")
            assert firm is not None
            assert firm.time_zone == "UTC"
            assert firm.reminders == ReminderSettings()
    finally:
        await engine.dispose()
